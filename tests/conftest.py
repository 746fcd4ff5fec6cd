"""Shared fixtures: a real SQLite log in a temporary directory, a real server on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from livelearn.demo import free_port
from livelearn.log.sqlite import SQLiteLog


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
