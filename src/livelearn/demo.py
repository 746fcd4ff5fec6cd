"""`livelearn demo`: the whole loop on the simulated news feed, on this machine.

The server runs as its own process (uvicorn on 127.0.0.1, a free port); the
simulated users are its HTTP client; the joiner, trainer and gate run in a
thread of this process. They talk only through the SQLite log and the
Registry in the work directory, as separate processes would.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from livelearn.errors import ConfigError, LivelearnError, make_folder
from livelearn.files import check_writable
from livelearn.log.sqlite import SQLiteLog
from livelearn.loop import Loop
from livelearn.registry import Registry
from livelearn.sim.client import FeedClient
from livelearn.sim.history import write_tables
from livelearn.sim.pipeline import PIPELINE
from livelearn.sim.world import NewsFeed, check_in_past
from livelearn.study.outcome import Outcome

MARKER = ".livelearn-demo"


@dataclass
class DemoConfig:
    impressions: int = 200_000
    candidates: int = 10
    days: float = 2.0
    seed: int = 7
    faults: float = 0.002
    baseline_fraction: float = 0.1
    workdir: Path = Path("livelearn-demo")
    report: Path | None = None
    summary_json: Path | None = None
    progress: bool = True


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run the loop over the whole simulated stream; return the summary."""
    started = time.monotonic()
    check_in_past(cfg.days, int(time.time() * 1000))
    world = NewsFeed(seed=cfg.seed, impressions=cfg.impressions, candidates=cfg.candidates,
                     days=cfg.days)
    outputs = [(Path(p), what) for p, what in ((cfg.report, "report"),
                                                (cfg.summary_json, "summary")) if p is not None]
    inside = [(p, what) for p, what in outputs if _within(p, cfg.workdir)]
    for output, what in outputs:  # fail now, not after the demo, nor having cleared the
        if (output, what) not in inside:  # workdir of the last one
            check_writable(output, what)
    workdir = _fresh_workdir(cfg.workdir)
    for output, what in inside:  # a folder this makes is the new workdir's, no stranger's
        check_writable(output, what)
    write_tables(world, workdir / "tables")
    log = SQLiteLog(workdir / "log.db")
    for topic in PIPELINE.topics:
        log.create_topic(topic, PIPELINE.partitions)
    registry = Registry(workdir / "registry")
    outcome = Outcome(PIPELINE, int(cfg.baseline_fraction * cfg.impressions))
    loop = _Background(Loop(log, registry, PIPELINE, on_trained=outcome.add, turn=20_000))
    loop.loop.gate.step()  # the trainer's untrained first version, so the server can answer
    server = _start_server(workdir)
    try:
        client = FeedClient(world, server.url, faults=cfg.faults, seed=cfg.seed)
        loop.start()
        with _progress(cfg.progress, client, loop.loop, outcome, registry,
                       f"{server.url}/dashboard"):
            client.run()
            loop.finish()
        loop.raise_error()
    finally:
        loop.stop()
        server.stop()
    summary = outcome.summary(log, registry, client.stats, time.monotonic() - started)
    report = cfg.report or workdir / "report.html"
    outcome.write_report(report, summary, registry)
    summary["report"] = str(report)
    if cfg.summary_json is not None:
        outcome.write_json(cfg.summary_json, summary)
    return summary


class _Background:
    """A Loop turning in a thread of its own until told to finish."""

    def __init__(self, loop: Loop):
        self.loop = loop
        self._finish, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="loop", daemon=True)
        self._error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def finish(self) -> None:
        """The input is complete: drain it, flush every window, train and judge the rest."""
        self._finish.set()
        self._thread.join()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self._finish.is_set():
                    self.loop.drain(final=True)
                    return
                if not self.loop.turn():
                    time.sleep(0.02)
        except BaseException as e:  # surfaced by raise_error() in the main thread
            self._error = e


@dataclass
class _Server:
    process: subprocess.Popen[bytes]
    url: str

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _start_server(workdir: Path) -> _Server:
    port = free_port()
    cmd = [sys.executable, "-m", "livelearn", "serve", "livelearn.sim.pipeline:PIPELINE",
           "--log", f"sqlite:///{(workdir / 'log.db').resolve()}",
           "--registry", str(workdir / "registry"), "--data", str(workdir / "tables"),
           "--host", "127.0.0.1", "--port", str(port)]
    with open(workdir / "server.log", "wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    server = _Server(process, f"http://127.0.0.1:{port}")
    try:
        _wait_ready(server, workdir)
    except BaseException:  # Ctrl-C while it starts too: no server left behind
        server.stop()
        raise
    return server


def _wait_ready(server: _Server, workdir: Path) -> None:
    """Until the server answers with a version (60 s at most); LivelearnError if it exits
    or does not answer."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise LivelearnError(f"the server exited with {server.process.returncode}; "
                                 f"see {workdir / 'server.log'}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1).json().get("model_version"):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise LivelearnError(f"the server did not answer within 60 s; see {workdir / 'server.log'}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _within(path: Path, folder: Path) -> bool:
    """Whether ``path`` lies in ``folder`` (not ``folder`` itself)."""
    path, folder = path.resolve(), folder.resolve()
    return path != folder and path.is_relative_to(folder)


def _fresh_workdir(path: Path) -> Path:
    """An empty work directory; refuses to clear a directory the demo did not make."""
    if path.is_dir():
        if any(path.iterdir()) and not (path / MARKER).exists():
            raise ConfigError(f"--workdir {path}: exists and is not a livelearn demo "
                              f"directory; choose another")
        shutil.rmtree(path)
    make_folder(path, "work folder")
    (path / MARKER).touch()
    return path


def _progress(enabled: bool, client: FeedClient, loop: Loop, outcome: Outcome,
              registry: Registry, dashboard: str) -> Any:
    from livelearn.ui.progress import LiveProgress

    return LiveProgress(client.stats, loop.joiner, loop.trainer, outcome, registry,
                        enabled=enabled, dashboard=dashboard)
