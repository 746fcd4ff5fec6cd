"""The joiner at live traffic: what writing its state costs, every step or when due.

    python bench/join_checkpoint.py --rate 50 --seconds 10 --json join_checkpoint.json

The news-feed pipeline (livelearn.sim.pipeline: a 10-minute window, 1 minute of
allowed lateness) over a SQLite log in a temporary folder. First a backlog: 11
minutes of event time at ``--rate`` predictions a second (a tenth of them
clicked), joined until caught up, so that the joiner holds the open windows of a
live system at that rate. Then, for ``--seconds`` of wall clock, traffic arrives
in real time, a poll's worth every 50 ms, and the joiner steps after each, as
``livelearn join`` does.

Two runs on the same traffic: ``every_step`` writes the state with every step
that read something (``write_pending()`` after each step: the joiner before it
waited for a write to be due), ``when_due`` as the joiner does (join.runner:
when the records since the last write are worth the state, or after
``CHECKPOINT_MS``, or ten times as long as the last write took). For each:
the joiner's CPU seconds per wall second of the live phase, its writes, the
state bytes written per second, and the samples it wrote (fewer where it falls
behind the traffic). ``x_cpu`` is every_step's CPU share over when_due's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from livelearn.join.runner import JoinRunner
from livelearn.log.sqlite import SQLiteLog
from livelearn.sim.pipeline import PIPELINE
from livelearn.spec import PREDICTIONS, SAMPLES

POLL_S = 0.05
BACKLOG_MS = 660_000  # the window and the allowed lateness


class Traffic:
    """Predictions at ``rate`` a second of event time, every tenth clicked 30 s later."""

    def __init__(self, log: SQLiteLog, rate: int, start_ms: int):
        self.log, self.rate, self.start_ms, self.sent = log, rate, start_ms, 0
        self._clicks: list[tuple[int, bytes]] = []

    def until(self, ts: int) -> None:
        """Append every prediction up to event time ``ts``, and the clicks due by then."""
        preds = []
        while self.start_ms + self.sent * 1000 // self.rate <= ts:
            i, t = self.sent, self.start_ms + self.sent * 1000 // self.rate
            preds.append((f"r{i}", orjson.dumps(_prediction(f"r{i}", t))))
            if i % 10 == 0:
                self._clicks.append((t + 30_000, orjson.dumps(
                    {"stream": "click", "key": "u", "id": f"c{i}", "ts": t + 30_000,
                     "payload": {"request_id": f"r{i}"}})))
            self.sent += 1
        due = [value for t, value in self._clicks if t <= ts]
        self._clicks = [(t, value) for t, value in self._clicks if t > ts]
        with self.log.atomic():
            self.log.append(PREDICTIONS, preds)
            self.log.append("click", [("u", value) for value in due])
            # reads keep their input of the watermark moving
            self.log.append("read", [("u", orjson.dumps(
                {"stream": "read", "key": "u", "id": f"x{ts}", "ts": ts,
                 "payload": {"request_id": "none", "seconds": 1.0}}))])


def _prediction(rid: str, ts: int) -> dict[str, Any]:
    n = int(rid[1:]) * 7919
    user, post, topic = f"u{n % 5000}", f"p{n % 20000}", f"t{n % 30}"
    features = {"user": user, "country": "FR", "age_group": "25-34", "post": post,
                "topic": topic, "author": f"a{n % 900}", "post_age_h": "4-7",
                "tenure_d": "64-127", "user_x_topic": f"{user}|{topic}",
                "country_x_topic": f"FR|{topic}", "age_x_topic": f"25-34|{topic}",
                "hour_x_topic": f"13|{topic}"}
    return {"request_id": rid, "ts": ts, "user": user, "item": post, "model_version": 1,
            "score": 0.25, "features": features}


def run(rate: int, seconds: float, every_step: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        log = SQLiteLog(Path(tmp) / "log.db")
        for topic in PIPELINE.topics:
            log.create_topic(topic)
        start = 1_704_067_200_000
        traffic = Traffic(log, rate, start)
        traffic.until(start + BACKLOG_MS)
        runner = JoinRunner(log, PIPELINE, idle_after_s=60)
        while runner.step():
            pass
        runner.write_pending()
        writes = state_bytes = 0
        cpu = 0.0
        began = time.monotonic()
        while (elapsed := time.monotonic() - began) < seconds:
            traffic.until(start + BACKLOG_MS + int(elapsed * 1000))
            writes_before = runner.writes
            c0 = time.process_time()
            runner.step()
            if every_step:
                runner.write_pending()
            cpu += time.process_time() - c0
            if runner.writes != writes_before:
                writes += 1
                state_bytes += runner.state_bytes
            time.sleep(POLL_S)
        wall = time.monotonic() - began
        runner.write_pending()
        return {"cpu_per_wall_s": round(cpu / wall, 4), "writes": writes,
                "writes_per_s": round(writes / wall, 1),
                "state_mb_per_s": round(state_bytes / wall / 1e6, 2),
                "state_kb": round(runner.state_bytes / 1e3, 1),
                "open_windows": len(runner.joiner.open),
                "samples": log.end_offset(SAMPLES, 0)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=int, default=50, help="predictions a second")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--json", type=Path, default=None, metavar="PATH")
    args = p.parse_args()
    every = run(args.rate, args.seconds, every_step=True)
    due = run(args.rate, args.seconds, every_step=False)
    result = {"rate": args.rate, "seconds": args.seconds, "every_step": every, "when_due": due,
              "x_cpu": round(every["cpu_per_wall_s"] / max(due["cpu_per_wall_s"], 1e-9), 1)}
    print(f"{'writes':<11} {'cpu/wall':>8} {'writes/s':>8} {'state MB/s':>10} {'samples':>7}")
    for name, r in (("every step", every), ("when due", due)):
        print(f"{name:<11} {r['cpu_per_wall_s']:>8.3f} {r['writes_per_s']:>8} "
              f"{r['state_mb_per_s']:>10} {r['samples']:>7}")
    print(f"{due['open_windows']:,} open windows, {due['state_kb'] / 1e3:.1f} MB of state; "
          f"x_cpu {result['x_cpu']}")
    if args.json is not None:
        args.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
