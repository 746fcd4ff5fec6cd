"""Events per second through ingest -> join -> train, by log backend and partition count.

    python bench/scale.py --json scale.json [--events 100000] [--kafka HOST:PORT]

For each setup (the embedded SQLite log and Kafka; 1, 2 and 4 partitions), the
same recorded news-feed traffic (predictions with their served features, clicks
and reads) is appended by P ingest processes (one per partition), joined by P
joiner processes
(`livelearn join --shard K/P`), and learned by one trainer process
(`livelearn train`; one model, so one trainer). The phases run one after the
other on a fresh log; events_per_s is all events over the three phases' wall
time. Every setup must end with the same model, bit for bit (its SHA-256 is
printed): the semantics do not depend on the log, the joiner (embedded, or the
Flink SQL job; --no-flink leaves it out) or the partition count.
Without --kafka a single-node broker is started (scripts/kafka/start.sh).
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from livelearn.events import Event, partition_key
from livelearn.log import open_log, partition_for
from livelearn.registry import Registry
from livelearn.sim.pipeline import PIPELINE
from livelearn.sim.world import NewsFeed
from livelearn.spec import PREDICTIONS

ROOT = Path(__file__).resolve().parents[1]
Records = dict[str, list[tuple[str, bytes]]]


def record_traffic(impressions: int, seed: int = 11) -> Records:
    """Predictions as a server logs them, and the feedback the world sends back."""
    world = NewsFeed(seed=seed, impressions=impressions, days=impressions / 100_000)
    users = {u["user_id"]: u for u in world.users}
    posts = {p["post_id"]: p for p in world.posts}
    out: Records = {PREDICTIONS: [], "click": [], "read": []}
    for n, request in enumerate(world.requests()):
        shown = []
        for i, item in enumerate(request.candidates):
            rid = f"r{n}.{i}"
            features = PIPELINE.features(users[request.user_id], posts[item], request.ts)
            out[PREDICTIONS].append((rid, orjson.dumps({
                "request_id": rid, "ts": request.ts, "user": request.user_id, "item": item,
                "model_version": 1, "score": 0.5, "features": features})))
            shown.append((rid, item))
        for e in world.feedback(request, shown):
            event = Event(e["stream"], e["key"], e["id"], e["ts"], e["payload"])
            out[event.stream].append((partition_key(event), event.to_json()))
    return out


def _ingest(url: str, records: Records, shard: int, shards: int) -> None:
    """Append the records of the partitions this writer owns, in their order (writers
    sharing a partition would interleave it out of event-time order)."""
    log = open_log(url)
    for topic, items in records.items():
        mine = [(k, v) for k, v in items if partition_for(k, shards) == shard]
        for start in range(0, len(mine), 2000):
            log.append(topic, mine[start:start + 2000])
    log.close()


def _pipeline_file(work: Path, partitions: int) -> str:
    """The news-feed pipeline with ``partitions`` partitions, as a file the roles load (a
    log keeps the partition count it was made with, and roles check theirs against it)."""
    work.mkdir(parents=True, exist_ok=True)
    path = work / "pipeline.py"
    path.write_text("from dataclasses import replace\n\n"
                    "from livelearn.sim.pipeline import PIPELINE as FEED\n\n"
                    f"PIPELINE = replace(FEED, partitions={partitions})\n")
    return str(path)


def _roles(name: str, ref: str, url: str, registry: Path, shards: int, joiner: str) -> None:
    """Run a role to the end of the log: P joiner shards (or one Flink job), one trainer."""
    if name == "train":
        commands = [["--registry", str(registry)]]
    elif joiner == "flink":
        commands = [["--engine", "flink"]]
    else:
        commands = [["--shard", f"{k}/{shards}"] for k in range(shards)]
    processes = [subprocess.Popen(
        [sys.executable, "-m", "livelearn", "-q", name, ref, "--log", url, "--until-idle",
         *extra], stderr=subprocess.PIPE) for extra in commands]
    for p in processes:
        _, err = p.communicate(timeout=1800)
        if p.returncode:
            raise SystemExit(f"livelearn {name} failed:\n{err.decode()}")


def run_setup(url: str, partitions: int, records: Records, work: Path,
              joiner: str = "embedded") -> dict[str, Any]:
    log = open_log(url)
    for topic in PIPELINE.topics:
        log.create_topic(topic, partitions)
    log.close()
    ctx = multiprocessing.get_context("spawn")
    phases: dict[str, float] = {}
    started = time.perf_counter()
    workers = [ctx.Process(target=_ingest, args=(url, records, k, partitions))
               for k in range(partitions)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
        if w.exitcode:
            raise SystemExit(f"an ingest process failed with {w.exitcode}")
    phases["ingest_s"] = time.perf_counter() - started
    ref = _pipeline_file(work, partitions)
    for name in ("join", "train"):
        t = time.perf_counter()
        _roles(name, ref, url, work / "registry", partitions, joiner)
        phases[f"{name}_s"] = time.perf_counter() - t
    wall = time.perf_counter() - started
    events = sum(len(v) for v in records.values())
    registry = Registry(work / "registry")
    final = registry.versions()[-1]
    state = registry.load(final.id).state()
    digest = hashlib.sha256(b"".join(state[k].tobytes() for k in sorted(state))).hexdigest()
    return {"events": events, "events_per_s": round(events / wall),
            **{k: round(v, 2) for k, v in phases.items()},
            "samples_learned": final.meta["samples"], "model_sha256": digest[:16]}


def start_kafka(work: Path) -> tuple[str, Path]:
    data = work / "kafka"
    out = subprocess.run([str(ROOT / "scripts" / "kafka" / "start.sh"), str(data)],
                         capture_output=True, text=True, check=True, timeout=600).stdout
    return out.strip().rpartition("KAFKA_BOOTSTRAP=")[2], data


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=100_000,
                   help="impressions to record (feedback comes on top; default 100000)")
    p.add_argument("--partitions", default="1,2,4", help="partition counts (default 1,2,4)")
    p.add_argument("--kafka", help="HOST:PORT of a broker (default: start one)")
    p.add_argument("--flink", action=argparse.BooleanOptionalAction, default=True,
                   help="also join with the Flink SQL job on Kafka (default: yes; "
                        "scripts/flink/setup.sh installs it)")
    p.add_argument("--json", type=Path, help="write the records as JSON here")
    args = p.parse_args(argv)
    records = record_traffic(args.events)
    results = []
    with tempfile.TemporaryDirectory(prefix="livelearn-scale-") as tmp:
        work = Path(tmp)
        kafka, kafka_data = (args.kafka, None) if args.kafka else start_kafka(work)
        try:
            setups = [("sqlite", "embedded"), ("kafka", "embedded")]
            setups += [("kafka", "flink")] if args.flink else []
            for partitions in (int(n) for n in args.partitions.split(",")):
                for log, joiner in setups:
                    setup = work / f"{log}-{joiner}-{partitions}"
                    url = (f"sqlite:///{setup / 'log.db'}" if log == "sqlite" else
                           f"kafka://{kafka}?prefix=b{uuid.uuid4().hex[:8]}.")
                    result = {"log": log, "joiner": joiner, "partitions": partitions,
                              **run_setup(url, partitions, records, setup, joiner)}
                    print(orjson.dumps(result).decode(), flush=True)
                    results.append(result)
        finally:
            if kafka_data is not None:
                subprocess.run([str(ROOT / "scripts" / "kafka" / "stop.sh"), str(kafka_data)],
                               timeout=60)
    _table(results)
    same = len({r["model_sha256"] for r in results}) == 1
    print(f"\nthe same model in every setup (log, joiner, partitions): {same}")
    if args.json:
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return results


def _table(results: list[dict[str, Any]]) -> None:
    base = {(r["log"], r["joiner"]): r["events_per_s"] for r in results if r["partitions"] == 1}
    print(f"\n{'log':8}{'joiner':10}{'partitions':>11}{'events/s':>11}{'vs 1':>7}"
          f"{'ingest s':>10}{'join s':>8}{'train s':>9}  model")
    for r in results:
        one = base.get((r["log"], r["joiner"]))
        ratio = r["events_per_s"] / one if one else float("nan")
        print(f"{r['log']:8}{r['joiner']:10}{r['partitions']:>11}{r['events_per_s']:>11,}"
              f"{ratio:>7.2f}{r['ingest_s']:>10}{r['join_s']:>8}{r['train_s']:>9}"
              f"  {r['model_sha256']}")


if __name__ == "__main__":
    main()
