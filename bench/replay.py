"""Replay throughput: events per second end to end for a label-in-event stream.

The fraud example's pipeline (examples/fraud): each event is decoded and
checked against its schema, joined (window 0), enriched with two table lookups
as of its time (a card table with versions, a merchant table) and a windowed
counter, turned into features, hashed and learned, through the same code that
runs live: ``livelearn.replay.replay`` over a SQLite log in a temporary folder.

    python bench/replay.py --events 200000 --json replay.json

The JSON has ``events``, ``events_per_s`` (wall clock of the whole replay:
ingest into the log, join, train, gate), ``metric`` and ``metric_value``. The
example's events are spread over 14 days (a few a minute); ``dense`` replays as
many events, 3,000 a second of event time (``--dense-rate``), where the joiner's
hour of remembered ids and counts and the trainer's ten minutes of ids hold every
event: what a restartable role keeps then must not cost more per event.
``events_per_cpu_s`` divides by the process's CPU time instead, a number less
swayed by other load on the machine. ``--log memory://`` runs the same roles
over the in-memory log instead.

The baseline, run on the same events in the same run: the same work done
directly, in memory, as a hand-written loop would (each line parsed, the same
tables, counter and ``features``, hashed and learned by the same learner in
batches of 5,000), with no log, no joiner or trainer, no checks, dead letters
or checkpoints. ``x_direct`` is the replay's events/s over the baseline's: the
share of the floor that the replay's durability and exactly-once roles leave.

A second baseline, ``one_loop``, keeps the log: the events written into it and
read back, the samples written with a checkpoint, in one hand-written loop with
the least of each role (the schema's type checks, a watermark, the ids of the
last hour and ten minutes, no dead letters, rebuilds or ties). It bounds what
any Python implementation of the design (each role reading and writing the log)
can reach on this machine; ``x_one_loop`` is the replay's share of it.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "fraud"


def _module(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def direct(pipeline: Any, path: Path, data_dir: Path) -> dict[str, Any]:
    """The baseline: the replay's work without the log and the roles (see above)."""
    import numpy as np

    from livelearn.events import Event
    from livelearn.features.hashing import hash_rows
    from livelearn.join.enrich import Enricher
    from livelearn.train.metrics import make_metric

    started = time.perf_counter()
    enricher, model = Enricher(pipeline, data_dir), pipeline.learner()
    stream, target = pipeline.feedback.stream, pipeline.target
    metric = make_metric("auc")
    lines = path.read_bytes().splitlines()
    for start in range(0, len(lines), 5000):
        features, labels = [], []
        for line in lines[start:start + 5000]:
            obj = orjson.loads(line)
            event = Event(stream.name, obj[stream.key], obj[stream.id], obj[stream.ts], obj)
            enricher.observe(event)
            features.append(enricher.sample(event)["features"])
            labels.append(float(obj[target]))
        y = np.array(labels)
        metric.update(model.predict_then_learn(hash_rows(features, model.bits), y), y)
    seconds = time.perf_counter() - started
    return {"events": len(lines), "events_per_s": round(len(lines) / seconds, 1),
            "metric_value": metric.get(), "seconds": round(seconds, 3)}


def one_loop(pipeline: Any, path: Path, data_dir: Path, log_url: str) -> dict[str, Any]:
    """The floor with the log: what the replay writes and reads (the events into the log,
    read back, the samples into it with the joiner's checkpoint, the trainer's) with the
    least of each role, in one hand-written loop: type checks, the watermark, the ids
    of the last hour, the enricher and learner of ``direct``. Any implementation of the
    replay's design in Python is slower than this."""
    import heapq
    from collections import deque

    import numpy as np

    from livelearn.events import EventDecoder, plain_json
    from livelearn.features.hashing import hash_rows
    from livelearn.join.enrich import Enricher
    from livelearn.log import open_log
    from livelearn.log.base import Checkpoint
    from livelearn.train.metrics import make_metric

    started = time.perf_counter()
    stream, target = pipeline.feedback.stream, pipeline.target
    log = open_log(f"sqlite:///{data_dir / 'one_loop.db'}" if log_url == "sqlite" else log_url)
    for topic in (stream.name, "samples"):
        log.create_topic(topic, 1)
    decode = EventDecoder(pipeline.schemas, max_future_ms=None)
    lines = path.read_bytes().splitlines()
    _write_events(log, stream, decode, lines)
    enricher, model, metric = Enricher(pipeline, data_dir), pipeline.learner(), make_metric("auc")
    waiting: list[tuple[int, str, Any]] = []
    joined: dict[str, int] = {}
    joined_order: deque[tuple[int, str]] = deque()
    learned: dict[str, int] = {}
    learned_order: deque[tuple[int, str]] = deque()
    watermark, offset, written = -(2**63), 0, 0

    def emit(until: int, samples: list[dict[str, Any]]) -> None:
        while waiting and waiting[0][0] < until:
            ts, eid, ready = heapq.heappop(waiting)
            samples.append(enricher.sample(ready))
            joined[eid] = ts
            joined_order.append((ts, eid))

    def write_and_learn(samples: list[dict[str, Any]]) -> None:
        nonlocal written
        with log.atomic():
            log.append("samples", [(s["user"], plain_json(s)) for s in samples], samples)
            log.commit("joiner", Checkpoint({(stream.name, 0): offset},
                                            orjson.dumps([e for _, e, _ in waiting])))
        rows, labels = [], []
        for sample in samples:
            if sample["id"] not in learned:
                learned[sample["id"]] = sample["ts"]
                learned_order.append((sample["ts"], sample["id"]))
                rows.append(sample["features"])
                labels.append(sample["labels"][target])
        while learned_order and learned_order[0][0] < watermark - 600_000:
            del learned[learned_order.popleft()[1]]
        if rows:
            y = np.array(labels)
            metric.update(model.predict_then_learn(hash_rows(rows, model.bits), y), y)
        written += len(samples)
        log.commit("trainer", Checkpoint({("samples", 0): written}))

    while records := log.read(stream.name, 0, offset, 1000):
        offset = records[-1].offset + 1
        samples: list[dict[str, Any]] = []
        for record in records:
            event = decode(orjson.loads(record.value))
            if event.id in joined or event.ts < watermark:
                continue
            enricher.observe(event)
            heapq.heappush(waiting, (event.ts, event.id, event))
            if event.ts > watermark:
                watermark = event.ts
                emit(watermark, samples)
                while joined_order and joined_order[0][0] < watermark - 3_600_000:
                    del joined[joined_order.popleft()[1]]
        write_and_learn(samples)
    last: list[dict[str, Any]] = []
    emit(2**63 - 1, last)
    write_and_learn(last)
    seconds = time.perf_counter() - started
    return {"events": len(lines), "events_per_s": round(len(lines) / seconds, 1),
            "metric_value": metric.get(), "seconds": round(seconds, 3)}


def _write_events(log: Any, stream: Any, decode: Any, lines: list[bytes]) -> None:
    """``one_loop``'s ingest: each line parsed, checked and written as its envelope."""
    from livelearn.events import plain_json

    for start in range(0, len(lines), 5000):
        records = []
        for line in lines[start:start + 5000]:
            obj = orjson.loads(line)
            envelope = {"stream": stream.name, "key": obj[stream.key], "id": obj.pop(stream.id),
                        "ts": obj.pop(stream.ts), "payload": obj}
            event = decode(envelope)
            records.append((event.key, plain_json(envelope)))
        log.append(stream.name, records)


def run(events: int, seed: int = 1, log_url: str = "sqlite", dense_rate: float | None = None
        ) -> dict[str, Any]:
    from dataclasses import replace

    from livelearn.log import open_log
    from livelearn.loop import tune_gc
    from livelearn.registry import Registry
    from livelearn.replay import replay
    from livelearn.spec import Policies

    generate = _module(EXAMPLE / "generate_data.py", "_bench_fraud_data").generate
    pipeline = _module(EXAMPLE / "pipeline.py", "_bench_fraud_pipeline").PIPELINE
    # publish rarely: the benchmark measures the data path, not model files on disk
    pipeline = replace(pipeline, policies=Policies(publish_every_samples=events,
                                                   publish_every_ms=10**12))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        days = 14.0 if dense_rate is None else events / dense_rate / 86_400
        generate(work / "data", events, seed, days=days)
        tune_gc()  # as `livelearn replay` does
        started, cpu = time.perf_counter(), time.process_time()
        log = open_log(f"sqlite:///{work / 'log.db'}" if log_url == "sqlite" else log_url)
        report, _ = replay(log, Registry(work / "registry"), pipeline,
                           [("transactions", str(work / "data" / "transactions.jsonl"))],
                           data_dir=work)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        if dense_rate is not None:  # the figures of the dense replay alone
            return {"events_per_second_of_event_time": dense_rate,
                    "events_per_s": round(report["events"] / wall, 1),
                    "metric_value": report["metric_value"], "seconds": round(wall, 3)}
        baseline = direct(pipeline, work / "data" / "transactions.jsonl", work)
        floor = one_loop(pipeline, work / "data" / "transactions.jsonl", work, log_url)
    per_s = report["events"] / wall
    return {"events": report["events"], "events_per_s": round(per_s, 1),
            "metric": report["metric"], "metric_value": report["metric_value"],
            "samples": report["samples"], "seconds": round(wall, 3),
            "cpu_seconds": round(cpu, 3), "events_per_cpu_s": round(report["events"] / cpu, 1),
            "pipeline": "examples/fraud/pipeline.py", "log": log_url,
            "direct": baseline, "x_direct": round(per_s / baseline["events_per_s"], 3),
            "one_loop": floor, "x_one_loop": round(per_s / floor["events_per_s"], 3),
            "dense": None}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, default=None, metavar="PATH")
    p.add_argument("--dense-rate", type=float, default=3_000, metavar="N",
                   help="events a second of event time of the dense replay (0: none)")
    p.add_argument("--log", default="sqlite", metavar="URL",
                   help="sqlite (a file in a temporary folder: durable, the default of "
                        "`livelearn replay`) or memory:// (no durability)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    result = run(args.events, args.seed, args.log)
    if args.dense_rate > 0:
        result["dense"] = run(args.events, args.seed, args.log, args.dense_rate)
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2)
    if args.json is not None:
        args.json.write_bytes(text)
    print(text.decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
