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
    per_s = report["events"] / wall
    return {"events": report["events"], "events_per_s": round(per_s, 1),
            "metric": report["metric"], "metric_value": report["metric_value"],
            "samples": report["samples"], "seconds": round(wall, 3),
            "cpu_seconds": round(cpu, 3), "events_per_cpu_s": round(report["events"] / cpu, 1),
            "pipeline": "examples/fraud/pipeline.py", "log": log_url,
            "direct": baseline, "x_direct": round(per_s / baseline["events_per_s"], 3),
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
