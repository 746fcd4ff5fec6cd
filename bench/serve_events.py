"""Serving a label in the events: requests/s and latency of the fraud pipeline's /predict.

    python bench/serve_events.py --seconds 20 --json serve_events.json

Generates the fraud example's data (``--rows`` transactions) in a temporary
folder, replays it into a SQLite log and a registry (the versions approved),
starts ``livelearn serve examples/fraud/pipeline.py`` on 127.0.0.1 as a
subprocess (memory store: the cards and merchants tables and the hour's counter
loaded at start) and keeps ``--concurrency`` POST /predict requests in flight
for ``--seconds``, each scoring ``--events`` transactions without their label,
at the times of the history (so rows and counters vary). Each client speaks
HTTP/1.1 itself on one keep-alive connection (serve_swap.Connection). A request
fails unless it gets 200 and one score per event. Prints and writes JSON:
requests, failed, requests_per_s, events_per_s, p50_ms, p90_ms, p99_ms, max_ms
(from send to the whole response, measured by the client: at high concurrency
mostly queueing). Traffic stays on loopback; the run stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from livelearn.demo import free_port
from livelearn.log.sqlite import SQLiteLog
from livelearn.registry import Registry
from livelearn.replay import replay
from livelearn.spec import load_pipeline
from serve_swap import Connection, serving, stop_server

ROOT = Path(__file__).resolve().parent.parent
FRAUD = ROOT / "examples" / "fraud" / "pipeline.py"


def prepare(workdir: Path, rows: int) -> list[dict[str, Any]]:
    """The data, a replay of it, and the transactions (for the requests)."""
    subprocess.run([sys.executable, str(ROOT / "examples/fraud/generate_data.py"), "--out",
                    str(workdir / "data"), "--rows", str(rows)], check=True)
    replay(SQLiteLog(workdir / "log.db"), Registry(workdir / "registry"),
           load_pipeline(str(FRAUD)),
           [("transactions", str(workdir / "data/transactions.jsonl"))], workdir)
    return [orjson.loads(line) for line in
            (workdir / "data/transactions.jsonl").read_bytes().splitlines()]


def start_server(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "livelearn", "serve", str(FRAUD),
           "--log", f"sqlite:///{(workdir / 'log.db').resolve()}",
           "--registry", str(workdir / "registry"), "--data", str(workdir),
           "--store", "memory://?retention_ms=2592000000",  # the history's 30 days
           "--host", "127.0.0.1", "--port", str(port)]
    return serving(cmd, port, workdir / "server.log")


def bodies(history: list[dict[str, Any]], events: int, n: int = 1000) -> list[bytes]:
    rng = random.Random(2)
    out = []
    for _ in range(n):
        picked = rng.sample(history, events)
        out.append(orjson.dumps({"events": [
            {k: t[k] for k in ("card", "merchant", "amount", "ts")} for t in picked]}))
    return out


async def client(port: int, requests: list[bytes], stop_at: float, events: int,
                 latencies: list[float], failures: list[str], seed: int) -> None:
    rng, connection = random.Random(seed), Connection(port)
    while time.monotonic() < stop_at:
        start = time.perf_counter()
        try:
            status, answer = await connection.post("/predict", rng.choice(requests))
        except (OSError, EOFError, asyncio.IncompleteReadError) as e:
            failures.append(f"{type(e).__name__}: {e}")
            connection.close()
            continue
        latencies.append((time.perf_counter() - start) * 1000)
        if status != 200 or len(orjson.loads(answer)["scores"]) != events:
            failures.append(f"HTTP {status}: {answer[:200]!r}")
    connection.close()


async def load(url: str, requests: list[bytes], args: argparse.Namespace
               ) -> tuple[list[float], list[str], float]:
    port = int(url.rsplit(":", 1)[1])
    latencies: list[float] = []
    failures: list[str] = []
    start = time.monotonic()
    await asyncio.gather(*(client(port, requests, start + args.seconds, args.events, latencies,
                                  failures, i) for i in range(args.concurrency)))
    return latencies, failures, time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--events", type=int, default=1, help="events per request")
    p.add_argument("--rows", type=int, default=20_000, help="transactions of history")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="serve-events-") as tmp:
        workdir = Path(tmp)
        history = prepare(workdir, args.rows)
        process, url = start_server(workdir)
        try:
            latencies, failures, seconds = asyncio.run(load(url, bodies(history, args.events),
                                                            args))
        finally:
            stop_server(process)
    lat = np.array(latencies or [float("nan")])
    result = {"requests": len(latencies), "failed": len(failures),
              "requests_per_s": round(len(latencies) / seconds, 1),
              "events_per_s": round(len(latencies) * args.events / seconds, 1),
              **{f"p{q}_ms": round(float(np.percentile(lat, q)), 2) for q in (50, 90, 99)},
              "max_ms": round(float(lat.max()), 2), "concurrency": args.concurrency,
              "events_per_request": args.events, "errors": failures[:5]}
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    if args.json is not None:
        args.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
