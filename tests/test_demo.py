"""`livelearn demo` as a user runs it: a real server process, the summary, the report."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest

from livelearn.features.hashing import hash_rows
from livelearn.log.sqlite import SQLiteLog
from livelearn.models import FTRL
from livelearn.registry import Registry
from livelearn.sim.client import ClientStats
from livelearn.sim.pipeline import PIPELINE
from livelearn.study.outcome import Outcome
from livelearn.train.trainer import Trained

KEYS = {"impressions", "samples", "join_ratio", "dead_letters", "versions", "auc_live",
        "auc_frozen", "freshness_p50_s", "freshness_p95_s", "wall_seconds"}


def livelearn(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "livelearn", *args], capture_output=True,
                          text=True, timeout=300)


def test_the_demo_closes_the_loop_and_beats_the_frozen_baseline(tmp_path: Path) -> None:
    summary_path = tmp_path / "summary.json"
    done = livelearn("demo", "--impressions", "40000", "--workdir", str(tmp_path / "w"),
                     "--no-progress", "--faults", "0.01", "--summary-json", str(summary_path))
    assert done.returncode == 0, done.stderr
    summary = orjson.loads(summary_path.read_bytes())
    assert KEYS <= set(summary)
    assert summary["impressions"] == 40000
    assert summary["samples"] == summary["impressions"] and summary["join_ratio"] == 1.0
    assert set(summary["dead_letters"]) == {"duplicate", "late", "malformed", "orphan"}
    assert set(summary["versions"]) >= {"published", "approved", "rejected"}
    assert summary["versions"]["approved"] >= 3
    assert summary["auc_live"] > summary["auc_frozen"]
    assert 0 <= summary["freshness_p50_s"] <= summary["freshness_p95_s"]
    report = (tmp_path / "w" / "report.html").read_text()
    assert "<svg" in report and "http://" not in report and "https://" not in report
    assert "auc_live" in done.stdout


def test_the_summary_counts_each_version_by_its_last_verdict(tmp_path: Path) -> None:
    """A rollback approves its target again: the summary counted 3 versions approved of 2
    published. Now each version counts once, by its last verdict, as `models ls` shows."""
    registry = Registry(tmp_path / "reg")
    for i in range(2):
        v = registry.publish(FTRL(bits=8), {"samples": i}, None)
        registry.set_status(v.id, "approved", "gate")
        registry.mark_serving(v.id, 1000 + i)
    registry.rollback("rolled back")
    log = SQLiteLog(tmp_path / "log.db")
    for topic in PIPELINE.topics:
        log.create_topic(topic)
    summary = Outcome(PIPELINE, 10).summary(log, registry, ClientStats(), 1.0)
    assert summary["versions"] == {"published": 2, "approved": 1, "rejected": 1, "served": 2}


def test_the_freshness_of_a_rollbacks_target_counts_from_when_it_first_served(
        tmp_path: Path) -> None:
    """v1 learned 10 samples and served from 200 s of event time, v2 from 300 s, then v2 was
    rolled back and v1 served again from 400 s: v1's samples were counted fresh from 300 s
    (v2's time, since v1's own was its new one), not from 200 s, when they first served."""
    registry = Registry(tmp_path / "reg")
    for i, since in ((1, 200_000), (2, 300_000)):
        v = registry.publish(FTRL(bits=8), {"samples": 10 * i}, None)
        registry.set_status(v.id, "approved", "gate")
        registry.mark_serving(v.id, since)
    registry.rollback("rolled back")
    registry.mark_serving(1, 400_000)
    outcome = Outcome(PIPELINE, 0)
    samples = [{"ts": 50_000, "window_end": 100_000, "score": 0.5,
                "features": {"user": f"u{i}"}} for i in range(20)]
    outcome.add(Trained(samples, hash_rows([s["features"] for s in samples],
                                           outcome.frozen.bits),
                        np.zeros(20), np.full(20, 0.5)))
    _, fresh = outcome.freshness_s(registry)
    assert fresh.tolist() == [100.0] * 10 + [200.0] * 10


def test_the_demo_refuses_to_clear_a_directory_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    done = livelearn("demo", "--impressions", "1000", "--workdir", str(tmp_path))
    assert done.returncode == 2
    assert "not a livelearn demo directory" in done.stderr
    assert (tmp_path / "precious.txt").exists()


def test_days_that_would_run_into_the_future_are_refused_first(tmp_path: Path) -> None:
    """The server refuses a request's time past now: a feed ending after now is refused
    before the demo starts, not met as an HTTP 422 traceback once its time passes now."""
    done = livelearn("demo", "--impressions", "1000", "--days", "100000",
                     "--workdir", str(tmp_path / "w"))
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("livelearn: --days 100000: the simulated feed starts on "
                                  "2026-01-05 and would end after now (")
    assert "give at most --days " in done.stderr and done.stderr.count("\n") == 1
    assert not (tmp_path / "w").exists()


def test_more_candidates_than_predict_takes_are_refused_first(tmp_path: Path) -> None:
    """/predict scores at most 1,000 items: more was an HTTP 422 traceback, mid-demo."""
    for candidates in ("1001", "0"):
        done = livelearn("demo", "--impressions", "3000", "--candidates", candidates,
                         "--workdir", str(tmp_path / "w"))
        assert done.returncode == 2, done.stderr
        assert (f"argument --candidates: expected a whole number from 1 to 1000 (the most "
                f"items /predict takes), got '{candidates}'") in done.stderr
        assert not (tmp_path / "w").exists()
    assert livelearn("demo", "--impressions", "1000", "--candidates", "1000", "--no-progress",
                     "--workdir", str(tmp_path / "w")).returncode == 0


def _server_of(workdir: Path) -> int | None:
    """The pid of the demo's server process on ``workdir``, if one runs."""
    log = f"sqlite:///{(workdir / 'log.db').resolve()}".encode()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and log in (proc / "cmdline").read_bytes().split(b"\0"):
                return int(proc.name)
        except OSError:  # gone meanwhile
            pass
    return None


def _wait(what: Callable[[], object], seconds: float) -> object:
    deadline = time.monotonic() + seconds
    while not (found := what()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_demo_stopped_while_its_server_starts_stops_the_server(
        tmp_path: Path, sig: signal.Signals, code: int) -> None:
    """Ctrl-C (to the demo alone) or SIGTERM as the server starts: the demo exits and its
    server process with it; before, the server went on serving, with no demo."""
    workdir = tmp_path / "w"
    demo = subprocess.Popen([sys.executable, "-m", "livelearn", "demo", "--impressions",
                             "200000", "--workdir", str(workdir), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        server = _wait(lambda: _server_of(workdir), 120)
        assert isinstance(server, int) and demo.poll() is None
        time.sleep(0.5)  # the demo out of Popen, waiting for its server to answer (seconds)
        demo.send_signal(sig)
        assert demo.wait(30) == code
        assert _wait(lambda: _server_of(workdir) is None, 15)
    finally:
        demo.kill()
        if (left := _server_of(workdir)) is not None:
            os.kill(left, signal.SIGKILL)


def test_the_report_and_summary_may_go_in_folders_of_a_new_workdir(tmp_path: Path) -> None:
    """Before, checking the report's path first made its folder in the new workdir, and
    the demo then refused that workdir as not a demo directory."""
    workdir = tmp_path / "w"
    done = livelearn("demo", "--impressions", "1000", "--workdir", str(workdir), "--report",
                     str(workdir / "reports" / "r.html"), "--summary-json",
                     str(workdir / "out" / "s.json"), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert (workdir / "reports" / "r.html").read_text().startswith("<!DOCTYPE html>")
    assert orjson.loads((workdir / "out" / "s.json").read_bytes())["impressions"] == 1000
    refused = livelearn("demo", "--impressions", "1000", "--workdir", str(workdir),
                        "--report", str(tmp_path))
    assert refused.returncode == 2
    assert refused.stderr == f"livelearn: cannot write report '{tmp_path}': Is a directory\n"


def test_help_explains_every_option() -> None:
    top = livelearn("--help")
    assert top.returncode == 0
    for command in ("demo", "serve", "join", "train", "models", "ingest", "replay", "run",
                    "flink-sql"):
        assert command in top.stdout
    demo = livelearn("demo", "--help").stdout
    for option in ("--impressions", "--candidates", "--days", "--seed", "--faults",
                   "--workdir", "--report", "--summary-json", "--no-progress"):
        assert option in demo


def test_the_live_view_says_where_to_watch_the_dashboard(tmp_path: Path) -> None:
    done = livelearn("demo", "--impressions", "3000", "--workdir", str(tmp_path / "w"))
    assert done.returncode == 0, done.stderr
    assert re.search(r"dashboard \(while it runs\)\s+│ http://127\.0\.0\.1:\d+/dashboard",
                     done.stderr), done.stderr
