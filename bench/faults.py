"""Kill -9 the roles at random moments; nothing may be lost, learned twice, or differ.

    python bench/faults.py --kills 20 --seed 1 --json faults.json

1. Record an input log: the simulated feed against a real `livelearn serve`
   (predictions and their clicks and reads).
2. Reference: on a copy of that log, `livelearn join --until-idle` then
   `livelearn train --until-idle`, never interrupted.
3. Faults: on another copy, `livelearn join`, `livelearn train` and
   `livelearn serve` run as separate processes, live; a seeded schedule sends
   SIGKILL to a random one at random moments and restarts it at once (a joiner
   killed between its writes loses what it read since the last one, and reads
   it again). When the kills are done, `livelearn join --until-idle` and then
   `livelearn train --until-idle` finish the work. With ``--takeovers N``, N
   times (among the kills) a second `join` or `train` starts while the first
   still runs: the first must stop, fenced off (exit 2, "taken over"), at its next
   write, or be idle with nothing left to write (then it is stopped).
4. Compare the samples (ids, labels, features) and the final model, bit for bit, and
   what every version published says of its metrics (samples, event time,
   prequential and window metric): a restarted trainer goes on with the metrics
   of the version it resumes from.

With ``--partitions N`` the input log is copied into topics of N partitions (by each
record's key, as ingest places it) and joined by N joiner shards (`livelearn join
--shard K/N`), each killed on its own; ``--kafka HOST:PORT`` puts both copies on that
Kafka broker in place of SQLite.
"""

from __future__ import annotations

import argparse
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx
import numpy as np
import orjson

from livelearn.demo import _start_server, free_port
from livelearn.log import open_log
from livelearn.log.sqlite import SQLiteLog
from livelearn.registry import Registry
from livelearn.sim.client import FeedClient
from livelearn.sim.history import write_tables
from livelearn.sim.pipeline import PIPELINE
from livelearn.sim.world import NewsFeed
from livelearn.spec import SAMPLES
from livelearn.train.trainer import Trainer

REF = "livelearn.sim.pipeline:PIPELINE"


def record_input(workdir: Path, impressions: int, seed: int) -> Path:
    """A log holding predictions and feedback from the simulated feed, via a real server."""
    world = NewsFeed(seed=seed, impressions=impressions, days=impressions / 100_000)
    write_tables(world, workdir / "tables")
    log = SQLiteLog(workdir / "log.db")
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    registry = Registry(workdir / "registry")
    Trainer(log, registry, PIPELINE)  # publishes the untrained first version
    registry.set_status(1, "approved", "the input recorder's model")
    server = _start_server(workdir)
    try:
        FeedClient(world, server.url, faults=0.01, seed=seed).run()
    finally:
        server.stop()
    return workdir / "log.db"


def copy_log(source: Path, target: Path) -> str:
    """A copy of the input log (SQLite's backup API: consistent with its WAL)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    return f"sqlite:///{target.resolve()}"


def copy_partitioned(source: Path, url: str, partitions: int) -> str:
    """A copy of the input log's topics in ``url``, each of ``partitions`` partitions: every
    record goes by its key (the server and ingest key an event by its request_id), in order."""
    src, dst = SQLiteLog(source), open_log(url)
    for topic in PIPELINE.topics:
        dst.create_topic(topic, partitions)
        offset = 0
        while records := src.read(topic, 0, offset, 5000):
            dst.append(topic, [(r.key, r.value) for r in records])
            offset = records[-1].offset + 1
    src.close()
    dst.close()
    return url


def pipeline_ref(work: Path, partitions: int) -> str:
    """The news-feed pipeline with ``partitions`` partitions, as a file the roles load."""
    if partitions == 1:
        return REF
    path = work / "pipeline.py"
    path.write_text("from dataclasses import replace\n\n"
                    "from livelearn.sim.pipeline import PIPELINE as FEED\n\n"
                    f"PIPELINE = replace(FEED, partitions={partitions})\n")
    return str(path)


def role(name: str, url: str, registry: Path, *extra: str, ref: str = REF
         ) -> subprocess.Popen[bytes]:
    registry_args = [] if name == "join" else ["--registry", str(registry)]
    cmd = [sys.executable, "-m", "livelearn", "-q", name, ref, "--log", url, *registry_args,
           *extra]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish(process: subprocess.Popen[bytes]) -> None:
    _, err = process.communicate(timeout=600)
    if process.returncode != 0:
        raise SystemExit(f"{process.args} failed:\n{err.decode()}")


def joins(shards: int) -> dict[str, list[str]]:
    """The joiner processes by name, and their arguments: one, or one per shard."""
    if shards == 1:
        return {"join": []}
    return {f"join{k}": ["--shard", f"{k}/{shards}"] for k in range(shards)}


def finish_roles(url: str, registry: Path, ref: str = REF, shards: int = 1) -> None:
    """Join to the end of the log (every shard at once), then train to its end."""
    joiners = [role("join", url, registry, "--until-idle", *args, ref=ref)
               for args in joins(shards).values()]
    for process in joiners:
        finish(process)
    finish(role("train", url, registry, "--until-idle", ref=ref))


def faulty_run(url: str, registry: Path, tables: Path, kills: int, seed: int,
               takeovers: int = 0, ref: str = REF, shards: int = 1) -> dict[str, Any]:
    """Run the roles with SIGKILLs on a seeded schedule, and ``takeovers`` times start a
    second joiner or trainer while the first runs; return kills per role and what the
    superseded processes did."""
    rng = np.random.default_rng(seed)
    taking_over = set(np.random.default_rng(seed + 1).choice(kills + takeovers, takeovers,
                                                             replace=False).tolist())
    port = free_port()
    starts: dict[str, Any] = {
        name: (lambda args=args: role("join", url, registry, *args, ref=ref))
        for name, args in joins(shards).items()}
    starts["train"] = lambda: role("train", url, registry, ref=ref)
    starts["serve"] = lambda: role("serve", url, registry, "--data", str(tables),
                                   "--port", str(port), ref=ref)
    running = {name: start() for name, start in starts.items()}
    killed: Counter[str] = Counter()
    superseded: list[subprocess.Popen[bytes]] = []
    try:
        for event in range(kills + takeovers):
            time.sleep(float(rng.uniform(0.2, 1.2)))
            alive = sorted(n for n, p in running.items() if p.poll() is None)
            if event in taking_over:  # one group, two processes: the newer fences the older
                name = str(rng.choice([n for n in alive if n != "serve"] or [next(iter(starts))]))
                superseded.append(running[name])
            else:
                name = str(rng.choice(alive)) if alive else "train"
                running[name].send_signal(signal.SIGKILL)
                running[name].wait()
                killed[name] += 1
            running[name] = starts[name]()
        _check_serving(port)
        fenced = _superseded(superseded)
    finally:
        for process in [*running.values(), *superseded]:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()
    finish_roles(url, registry, ref, shards)
    return {"kills_by_role": dict(killed), "takeovers": takeovers, **fenced}


def _superseded(processes: list[subprocess.Popen[bytes]]) -> dict[str, int]:
    """Wait a while for each superseded role: one with something to write stops, fenced
    off (exit 2, 'taken over'); one that had nothing left to write is stopped here."""
    deadline = time.monotonic() + 10
    fenced = idle = 0
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.terminate()
            process.wait(30)
            idle += 1
            continue
        err = process.stderr.read().decode() if process.stderr else ""
        if process.returncode != 2 or "was taken over by another process" not in err:
            raise SystemExit(f"{process.args} exited with {process.returncode}:\n{err}")
        fenced += 1
    return {"superseded_fenced": fenced, "superseded_idle": idle}


def _check_serving(port: int) -> None:
    """The restarted server answers and serves a version."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).json()["model_version"]:
                return
        except (httpx.HTTPError, KeyError, ValueError):
            time.sleep(0.2)
    raise SystemExit("the restarted server never served a version")


def samples(url: str) -> list[bytes]:
    log = open_log(url)
    out = []
    for tp in log.topic_partitions([SAMPLES]):
        offset = 0
        while records := log.read(*tp, offset, 10_000):
            out += [r.value for r in records]
            offset = records[-1].offset + 1
    log.close()
    return out


def final_model(registry: Path) -> tuple[int, dict[str, np.ndarray]]:
    reg = Registry(registry)
    last = reg.versions()[-1]
    return int(last.meta["samples"]), reg.load(last.id).state()


def published(registry: Path) -> list[tuple[Any, ...]]:
    """What each version says of its metrics."""
    return [(v.meta["samples"], v.meta["event_ts"], v.meta["prequential"], v.meta["window"])
            for v in Registry(registry).versions()]


def compare(ref_url: str, ref_reg: Path, got_url: str, got_reg: Path) -> dict[str, Any]:
    expected, got = samples(ref_url), samples(got_url)
    ids = Counter(orjson.loads(v)["id"] for v in got)
    ref_ids = {orjson.loads(v)["id"] for v in expected}
    learned, state = final_model(got_reg)
    ref_learned, ref_state = final_model(ref_reg)
    return {
        "samples_expected": len(expected),
        "samples_got": len(ids),
        "samples_missing": len(ref_ids - set(ids)),
        "samples_duplicated": sum(n - 1 for n in ids.values()),
        "samples_identical": sorted(set(got)) == sorted(expected),
        "learned_twice": learned - len(ids),
        "learned": learned,
        "learned_reference": ref_learned,
        "model_identical": all(np.array_equal(state[k], ref_state[k]) for k in ref_state),
        "versions": len(published(got_reg)),
        "metrics_identical": published(got_reg) == published(ref_reg),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs to send (default: 20)")
    p.add_argument("--takeovers", type=int, default=0,
                   help="times to start a second joiner or trainer while one runs (the newer "
                        "fences the older off; default: 0)")
    p.add_argument("--seed", type=int, default=1, help="seed of the kill schedule and the feed")
    p.add_argument("--impressions", type=int, default=60_000,
                   help="impressions in the recorded input log (default: 60000)")
    p.add_argument("--partitions", type=int, default=1,
                   help="partitions of every topic, and joiner shards (default: 1)")
    p.add_argument("--kafka", metavar="HOST:PORT",
                   help="put the logs on this Kafka broker (default: SQLite files)")
    p.add_argument("--json", type=Path, help="write the result as JSON here")
    args = p.parse_args(argv)
    started = time.monotonic()
    with TemporaryDirectory(prefix="livelearn-faults-") as tmp:
        work = Path(tmp)
        source = record_input(work / "input", args.impressions, args.seed)
        ref, shards = pipeline_ref(work, args.partitions), args.partitions
        if args.kafka:
            prefix = f"faults{int(time.time() * 1000)}"
            ref_url, got_url = (copy_partitioned(source, f"kafka://{args.kafka}?prefix={prefix}"
                                                 f"{name}.", shards) for name in ("ref", "got"))
        elif shards > 1:
            ref_url, got_url = (copy_partitioned(source, f"sqlite:///{work / name}.db", shards)
                                for name in ("ref", "got"))
        else:
            ref_url, got_url = copy_log(source, work / "ref.db"), copy_log(source, work / "got.db")
        finish_roles(ref_url, work / "ref-registry", ref, shards)  # the reference run
        faults = faulty_run(got_url, work / "got-registry", work / "input" / "tables",
                            args.kills, args.seed, args.takeovers, ref, shards)
        result = {"kills": sum(faults["kills_by_role"].values()), **faults,
                  **compare(ref_url, work / "ref-registry", got_url, work / "got-registry"),
                  "wall_seconds": round(time.monotonic() - started, 1)}
    for key, value in result.items():
        print(f"{key:20} {value}")
    if args.json:
        args.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    ok = (result["samples_missing"] == result["samples_duplicated"] == result["learned_twice"]
          == 0 and result["model_identical"] and result["samples_identical"]
          and result["metrics_identical"])
    print("OK: nothing lost, nothing learned twice, same model and metrics" if ok else "FAILED")
    return result


if __name__ == "__main__":
    main()
