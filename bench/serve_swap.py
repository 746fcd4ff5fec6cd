"""Serving under hot swaps: does a new model version every second cost requests or latency?

    python bench/serve_swap.py --seconds 60 --json serve_swap.json

Starts ``livelearn serve`` on 127.0.0.1 as a subprocess (SQLite log, a fresh
registry whose first version is approved, the simulator's tables), then keeps
``--concurrency`` (default 128) POST /predict requests in flight, each scoring
``--candidates`` posts for one user, for two phases of ``--seconds`` each:

1. no swap: the served version never changes;
2. swap: a version is trained a little more, published and approved every
   ``--swap-every`` seconds (a thread of this process), and the server swaps
   each one in while requests keep coming.

A request fails if it gets anything but 200, if one of its predictions names
another version than the response's ``model_version``, or if that version was
never approved. Latency is measured by the client, from send to the whole
response, so at this concurrency it is mostly queueing: compare the phases.
Each client holds one keep-alive connection and speaks HTTP/1.1 on asyncio
streams itself: httpx.AsyncClient spends some 2.5 ms of CPU a request at 128
connections, more than the server, and this machine has 2 cores for both.
Prints a table and writes JSON: ``requests``, ``failed`` (both phases),
``swaps`` (versions the server swapped in during the swap phase, from its
/metrics), ``p50_ms``, ``p99_ms`` (swap phase), ``p50_ms_no_swap``,
``p99_ms_no_swap``, ``swap_lag_ms_p50`` and ``_max`` (from a version's approval
to the first response it scored), and per phase: requests, failed,
requests_per_s, latency percentiles, versions served. Traffic stays on
loopback, and the run stops by itself after its two phases.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from livelearn.demo import free_port
from livelearn.features.hashing import hash_rows
from livelearn.log.sqlite import SQLiteLog
from livelearn.models.base import Learner
from livelearn.registry import Registry
from livelearn.sim.history import write_tables
from livelearn.sim.pipeline import PIPELINE
from livelearn.sim.world import NewsFeed


@dataclass
class Phase:
    """What the clients saw during one phase."""

    name: str
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    failed: int = 0
    errors: list[str] = field(default_factory=list)  # the first few failures, for the reader
    versions: dict[int, float] = field(default_factory=dict)  # -> first seen (monotonic)
    swaps: int = 0
    started: float = 0.0  # monotonic
    client_cpu_s: float = 0.0  # CPU time of this process (the clients and the publisher)

    def fail(self, why: str) -> None:
        self.failed += 1
        if len(self.errors) < 5:
            self.errors.append(why)

    def swap_lags_ms(self, approved: dict[int, float]) -> list[float]:
        """From each approval to the first response that version scored, in this phase."""
        return [1000 * (seen - approved[v]) for v, seen in self.versions.items()
                if approved[v] > self.started]

    def summary(self, approved: dict[int, float]) -> dict[str, Any]:
        lat = np.array(self.latencies_ms or [float("nan")])
        lags = np.array(self.swap_lags_ms(approved) or [float("nan")])
        requests = len(self.latencies_ms)
        return {"requests": requests, "failed": self.failed,
                "requests_per_s": round(requests / self.seconds, 1) if self.seconds else 0.0,
                "p50_ms": _pct(lat, 50), "p90_ms": _pct(lat, 90), "p99_ms": _pct(lat, 99),
                "max_ms": _pct(lat, 100), "swaps": self.swaps,
                "client_cpu_ms_per_request": round(1000 * self.client_cpu_s / max(requests, 1), 3),
                "versions_served": sorted(self.versions),
                "swap_lag_ms_p50": _pct(lags, 50), "swap_lag_ms_max": _pct(lags, 100),
                "errors": self.errors}


class Publisher:
    """Trains a learner a little more, publishes and approves it: one new version per call."""

    def __init__(self, registry: Registry, world: NewsFeed):
        self.registry, self.world = registry, world
        self.learner: Learner = PIPELINE.learner()
        self.rng = random.Random(1)
        self.approved: dict[int, float] = {}  # version -> when it was approved (monotonic)
        self.last: int | None = None

    def publish(self) -> int:
        users, posts = self.world.users, self.world.posts
        rows = [PIPELINE.features(self.rng.choice(users), self.rng.choice(posts), _now_ms())
                for _ in range(64)]
        labels = np.array([float(self.rng.random() < 0.2) for _ in rows])
        self.learner.learn(hash_rows(rows, self.learner.bits), labels)  # type: ignore[attr-defined]
        version = self.registry.publish(self.learner, {"metric": "auc"}, parent=self.last).id
        self.approved[version] = time.monotonic()  # first, so a served version is in here
        self.registry.set_status(version, "approved", "bench/serve_swap.py")
        self.last = version
        return version


def prepare(workdir: Path, world: NewsFeed) -> Publisher:
    """Tables, topics and a registry with its first version approved."""
    write_tables(world, workdir / "tables")
    log = SQLiteLog(workdir / "log.db")
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    log.close()
    publisher = Publisher(Registry(workdir / "registry"), world)
    publisher.publish()
    return publisher


def start_server(workdir: Path, poll_s: float) -> tuple[subprocess.Popen[bytes], str]:
    """``livelearn serve`` on 127.0.0.1, once it serves the first version."""
    port = free_port()
    cmd = [sys.executable, "-m", "livelearn", "serve", "livelearn.sim.pipeline:PIPELINE",
           "--log", f"sqlite:///{(workdir / 'log.db').resolve()}",
           "--registry", str(workdir / "registry"), "--data", str(workdir / "tables"),
           "--host", "127.0.0.1", "--port", str(port), "--poll", str(poll_s)]
    return serving(cmd, port, workdir / "server.log")


def serving(cmd: list[str], port: int, output: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The server ``cmd`` started (its output to ``output``) once it serves a version."""
    with open(output, "wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).json().get("model_version"):
                return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    stop_server(process)
    sys.exit(f"the server did not start; see {output}:\n" + output.read_text()[-2000:])


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def request_bodies(world: NewsFeed, candidates: int, n: int = 1000) -> list[bytes]:
    rng = random.Random(2)
    users = [u["user_id"] for u in world.users]
    posts = [p["post_id"] for p in world.posts]
    return [orjson.dumps({"user_id": rng.choice(users), "items": rng.sample(posts, candidates)})
            for _ in range(n)]


class Connection:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1, one request at a time."""

    def __init__(self, port: int):
        self.port = port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """(status, body) of one POST with a JSON body; raises OSError or EOFError if broken."""
        if self.streams is None:
            self.streams = await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = self.streams
        writer.write(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                     b"\r\nContent-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body))
        head = await reader.readuntil(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), None)
        if length is None:
            raise EOFError(f"a response without Content-Length: {head[:200]!r}")
        return int(head[9:12]), await reader.readexactly(length)

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def client(port: int, bodies: list[bytes], stop_at: float, phase: Phase,
                 approved: dict[int, float], seed: int) -> None:
    """One request in flight at a time, back to back, until ``stop_at`` (monotonic)."""
    rng, connection = random.Random(seed), Connection(port)
    while time.monotonic() < stop_at:
        body = rng.choice(bodies)
        start = time.perf_counter()
        try:
            status, answer = await connection.post("/predict", body)
        except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
            phase.fail(f"{type(e).__name__}: {e}")
            connection.close()
            continue
        phase.latencies_ms.append((time.perf_counter() - start) * 1000)
        why = check_response(status, answer, len(orjson.loads(body)["items"]), approved)
        if why:
            phase.fail(why)
        else:
            phase.versions.setdefault(orjson.loads(answer)["model_version"], time.monotonic())
    connection.close()


def check_response(status: int, answer: bytes, items: int, approved: dict[int, float]
                   ) -> str | None:
    """Why a response is wrong, or None: 200, one version throughout, an approved one."""
    if status != 200:
        return f"HTTP {status}: {answer[:200]!r}"
    reply = orjson.loads(answer)
    version = reply["model_version"]
    if len(reply["predictions"]) != items:
        return f"{len(reply['predictions'])} predictions for {items} items"
    if any(p["model_version"] != version for p in reply["predictions"]):
        return f"a response of v{version} holds predictions of another version"
    if version not in approved:
        return f"v{version} was served but never approved"
    return None


async def run_phase(url: str, phase: Phase, seconds: float, concurrency: int,
                    bodies: list[bytes], approved: dict[int, float]) -> Phase:
    port = int(url.rsplit(":", 1)[1])
    swaps_before = _server_swaps(url)
    start, cpu = time.monotonic(), time.process_time()
    phase.started = start
    await asyncio.gather(*(client(port, bodies, start + seconds, phase, approved, i)
                           for i in range(concurrency)))
    phase.seconds = time.monotonic() - start
    phase.client_cpu_s = time.process_time() - cpu
    phase.swaps = _server_swaps(url) - swaps_before
    return phase


def swap_every(publisher: Publisher, every_s: float, stop: threading.Event) -> threading.Thread:
    """A thread that publishes and approves a new version every ``every_s`` seconds."""
    def loop() -> None:
        while not stop.wait(every_s):
            publisher.publish()

    thread = threading.Thread(target=loop, name="publisher", daemon=True)
    thread.start()
    return thread


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    world = NewsFeed(seed=7, impressions=2000, candidates=args.candidates, days=1.0,
                     users=500, new_users=50)
    publisher = prepare(workdir, world)
    bodies = request_bodies(world, args.candidates)
    process, url = start_server(workdir, args.poll)
    try:
        approved = publisher.approved
        asyncio.run(run_phase(url, Phase("warm-up"), 1.0, 8, bodies, approved))
        quiet = asyncio.run(run_phase(url, Phase("no swap"), args.seconds, args.concurrency,
                                      bodies, approved))
        stop = threading.Event()
        thread = swap_every(publisher, args.swap_every, stop)
        swapping = asyncio.run(run_phase(url, Phase("swap"), args.seconds, args.concurrency,
                                         bodies, approved))
        stop.set()
        thread.join()
    finally:
        stop_server(process)
    return report(quiet, swapping, args, publisher)


def report(quiet: Phase, swapping: Phase, args: argparse.Namespace, publisher: Publisher
           ) -> dict[str, Any]:
    a, b = quiet.summary(publisher.approved), swapping.summary(publisher.approved)
    return {"requests": a["requests"] + b["requests"], "failed": a["failed"] + b["failed"],
            "swaps": b["swaps"], "p50_ms": b["p50_ms"], "p99_ms": b["p99_ms"],
            "p50_ms_no_swap": a["p50_ms"], "p99_ms_no_swap": a["p99_ms"],
            "requests_per_s": b["requests_per_s"], "requests_per_s_no_swap": a["requests_per_s"],
            "swap_lag_ms_p50": b["swap_lag_ms_p50"], "swap_lag_ms_max": b["swap_lag_ms_max"],
            "versions_approved": len(publisher.approved), "seconds_per_phase": args.seconds,
            "concurrency": args.concurrency, "candidates": args.candidates,
            "swap_every_s": args.swap_every, "poll_s": args.poll,
            "phases": {"no_swap": a, "swap": b}}


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"POST /predict, {result['concurrency']} in flight, "
                        f"{result['seconds_per_phase']} s per phase")
    for column in ("phase", "requests", "failed", "req/s", "p50 ms", "p90 ms", "p99 ms",
                   "max ms", "swaps", "swap lag ms"):
        table.add_column(column, justify="left" if column == "phase" else "right", no_wrap=True)
    for name, p in result["phases"].items():
        lag = f"{p['swap_lag_ms_p50']:.0f} (max {p['swap_lag_ms_max']:.0f})" if p["swaps"] else "-"
        table.add_row(name.replace("_", " "), str(p["requests"]), str(p["failed"]),
                      f"{p['requests_per_s']:.0f}", f"{p['p50_ms']:.1f}", f"{p['p90_ms']:.1f}",
                      f"{p['p99_ms']:.1f}", f"{p['max_ms']:.1f}", str(p["swaps"]), lag)
    Console(width=120).print(table)
    for p in result["phases"].values():
        for error in p["errors"]:
            print("failure:", error)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="length of each phase (s)")
    p.add_argument("--concurrency", type=int, default=128, help="requests kept in flight")
    p.add_argument("--candidates", type=int, default=10, help="items scored per request")
    p.add_argument("--swap-every", type=float, default=1.0, help="seconds between versions")
    p.add_argument("--poll", type=float, default=0.1, help="the server's --poll (s)")
    p.add_argument("--json", type=Path, help="write the result as JSON to this path")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="serve_swap-") as tmp:
        result = measure(args, Path(tmp))
    print_table(result)
    if args.json:
        args.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 1 if result["failed"] else 0


def _server_swaps(url: str) -> int:
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith("livelearn_model_swaps_total "):
            return int(line.split()[1])
    raise RuntimeError("the server's /metrics has no livelearn_model_swaps_total")


def _pct(values: np.ndarray, q: float) -> float:
    return round(float(np.percentile(values, q)), 2)


def _now_ms() -> int:
    return int(time.time() * 1000)


if __name__ == "__main__":
    sys.exit(main())
