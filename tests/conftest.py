"""Shared fixtures: a real SQLite log in a temporary directory, a real server on 127.0.0.1,
a real Kafka broker (LIVELEARN_KAFKA, or one started for the session)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import uvicorn

from livelearn.demo import free_port
from livelearn.log.sqlite import SQLiteLog

if TYPE_CHECKING:
    from livelearn.log.kafka import KafkaLog

KAFKA_SCRIPTS = Path(__file__).resolve().parents[1] / "scripts" / "kafka"

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def log(tmp_path: Path) -> Iterator[SQLiteLog]:
    log = SQLiteLog(tmp_path / "log.db")
    yield log
    log.close()


class ServerThread:
    """uvicorn serving an app on 127.0.0.1 and a free port, in a thread of the test."""

    def __init__(self, app: object):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of a Kafka broker: LIVELEARN_KAFKA, or one that scripts/kafka/start.sh
    starts for this session on a free port (Maven gathers its jars the first time)."""
    if os.environ.get("LIVELEARN_KAFKA"):
        yield os.environ["LIVELEARN_KAFKA"]
        return
    data = tmp_path_factory.mktemp("kafka")
    started = subprocess.run([str(KAFKA_SCRIPTS / "start.sh"), str(data)], capture_output=True,
                             text=True, timeout=600)
    if started.returncode:
        pytest.fail(f"scripts/kafka/start.sh failed ({started.returncode}):\n{started.stderr}")
    try:
        yield started.stdout.strip().rpartition("KAFKA_BOOTSTRAP=")[2]
    finally:
        subprocess.run([str(KAFKA_SCRIPTS / "stop.sh"), str(data)], timeout=60, check=True)


@pytest.fixture(params=["sqlite", "kafka"])
def log_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty log of each backend in turn: SQLite in a temporary file, and
    Kafka with topics under a prefix of this test's own on the session's broker."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'log.db'}"
    bootstrap = request.getfixturevalue("kafka_bootstrap")
    return f"kafka://{bootstrap}?prefix=t{uuid.uuid4().hex[:12]}."


@pytest.fixture
def kafka(kafka_bootstrap: str) -> Iterator[KafkaLog]:
    """A KafkaLog with topics under a prefix of this test's own, the simulated pipeline's
    made."""
    from livelearn.log.kafka import KafkaLog
    from livelearn.sim.pipeline import PIPELINE

    log = KafkaLog(kafka_bootstrap, f"k{uuid.uuid4().hex[:12]}.", timeout_s=10)
    for topic in PIPELINE.topics:
        log.create_topic(topic, 1)
    yield log
    log.close()


@pytest.fixture(scope="session")
def redis_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of a Redis server: LIVELEARN_REDIS, or one started for this session."""
    if os.environ.get("LIVELEARN_REDIS"):
        yield os.environ["LIVELEARN_REDIS"]
        return
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: .ci/run installs Debian's package "
                    "redis-server (apt-get install -y redis-server), or set "
                    "LIVELEARN_REDIS=host:port to use a running server")
    data = tmp_path_factory.mktemp("redis")
    out = subprocess.run([str(ROOT / "scripts" / "redis" / "start.sh"), str(data)], check=True,
                         capture_output=True, text=True, timeout=30).stdout
    pid = int((data / "redis.pid").read_text())
    try:
        yield out.strip().rpartition("REDIS=")[2]
    finally:
        os.kill(pid, signal.SIGTERM)
