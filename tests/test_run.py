"""`livelearn replay --then-live` and `livelearn run`: the same roles go on with live events."""

from __future__ import annotations

import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
import pytest

import livelearn.replay
from livelearn.demo import free_port
from livelearn.errors import LivelearnError
from livelearn.ingest import ingest
from livelearn.log.sqlite import SQLiteLog
from livelearn.prequential import PrequentialRecord
from livelearn.registry import Registry
from livelearn.replay import replay
from test_ingest import PIPELINE, PIPELINE_FILE

T = 1_704_067_200_000
ROOT = Path(__file__).resolve().parent.parent


def _ratings(path: Path, start: int, n: int) -> Path:
    path.write_bytes(b"".join(orjson.dumps({"user": f"u{i % 7}", "movie": f"m{i % 5}",
                                            "stars": float(i % 5), "ts": T + 1000 * i}) + b"\n"
                              for i in range(start, start + n)))
    return path


def _samples(log: SQLiteLog) -> list[dict]:
    return [orjson.loads(r.value) for r in log.read("samples", 0, 0, 100_000)]


def test_replay_then_live_goes_on_with_the_same_roles(tmp_path: Path) -> None:
    log = SQLiteLog(tmp_path / "log.db")
    history = _ratings(tmp_path / "a.jsonl", 0, 300)
    report, loop = replay(log, Registry(tmp_path / "reg"), PIPELINE, [("ratings", str(history))],
                          final=False)
    # the last sample waits for time (the watermark); the one before it for the next
    # window end (the trainer learns ties in id order once no more can come)
    assert report["metric"] == "mae" and report["samples"] == 298
    ingest(log, PIPELINE, "ratings", _ratings(tmp_path / "b.jsonl", 300, 50))
    loop.drain(final=False)
    assert [s["ts"] for s in _samples(log)] == [T + 1000 * i for i in range(349)]
    assert loop.trainer.samples == 348


def test_replay_then_live_keeps_no_record_of_the_samples_learned_live(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records: list[PrequentialRecord] = []

    class Kept(PrequentialRecord):
        def __init__(self, metric: str):
            super().__init__(metric)
            records.append(self)

    monkeypatch.setattr(livelearn.replay, "PrequentialRecord", Kept)
    log = SQLiteLog(tmp_path / "log.db")
    report, loop = replay(log, Registry(tmp_path / "reg"), PIPELINE,
                          [("ratings", str(_ratings(tmp_path / "a.jsonl", 0, 300)))],
                          final=False)
    for start in range(300, 3300, 500):  # live, as long as it runs
        ingest(log, PIPELINE, "ratings", _ratings(tmp_path / f"{start}.jsonl", start, 500))
        loop.drain(final=False)
    assert loop.trainer.samples == 3298
    assert len(records[0].arrays()[0]) == report["samples"] == 298


def test_a_bounded_replay_publishes_all_it_learned_as_the_roles_apart_do(tmp_path: Path
                                                                          ) -> None:
    """replay (every role in one process) ends as `join` then `train --until-idle` end:
    the same versions, the last holding every sample learned."""
    history = _ratings(tmp_path / "a.jsonl", 0, 2500)
    replay(SQLiteLog(tmp_path / "log.db"), Registry(tmp_path / "reg"), PIPELINE,
           [("ratings", str(history))])
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    apart = [str(tmp_path / "p.py"), "--log", f"sqlite:///{tmp_path / 'apart.db'}"]
    for argv in (["ingest", *apart[:1], "ratings", str(history), *apart[1:]],
                 ["join", *apart, "--until-idle"],
                 ["train", *apart, "--registry", str(tmp_path / "apart"), "--until-idle"]):
        done = subprocess.run([sys.executable, "-m", "livelearn", "-q", *argv], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr

    def versions(folder: str) -> list[tuple[int, int | None]]:
        return [(v.meta["samples"], v.meta["event_ts"]) for v in
                Registry(tmp_path / folder).versions()]

    assert versions("reg") == versions("apart")
    assert versions("reg")[-1][0] == 2500


@contextmanager
def _process(args: list[str], cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen([sys.executable, "-m", "livelearn", "-q", *args], cwd=cwd,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def _wait(condition: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_cli_replay_then_live(tmp_path: Path) -> None:
    """A label in the events is served as a feedback join is: /predict scores a rating
    without its stars, and the dashboard shows the regressor's MAE."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    _ratings(tmp_path / "a.jsonl", 0, 100)
    _ratings(tmp_path / "b.jsonl", 100, 20)
    args, port = ["p.py", "--workdir", "w"], free_port()
    url = f"http://127.0.0.1:{port}"
    with _process(["replay", *args, "--events", "ratings=a.jsonl", "--then-live", "--port",
                   str(port)], tmp_path) as p:
        assert p.stdout is not None
        assert p.stdout.readline() == b"ratings=a.jsonl: 100 events appended, 0 dead-lettered\n"
        assert b"100 events, 98 samples" in p.stdout.readline()
        assert p.stdout.readline() == f"serving on {url} (Ctrl-C to stop)\n".encode()
        log = SQLiteLog(tmp_path / "w" / "log.db")
        subprocess.run([sys.executable, "-m", "livelearn", "-q", "ingest", *args, "ratings",
                        "b.jsonl"], cwd=tmp_path, check=True, capture_output=True)
        _wait(lambda: len(_samples(log)) == 119, "the live events' samples")
        scored = httpx.post(f"{url}/predict", json={"events": [
            {"user": "u1", "movie": "m1", "ts": T + 200_000}]})
        assert scored.status_code == 200, scored.text
        assert scored.json()["scores"][0]["model_version"] >= 1
        data = httpx.get(f"{url}/dashboard/data").json()["data"]
        assert data["metric_by_version"]["metric"] == "mae"
        assert data["counters"]["events_scored"] == 1
        assert "MAE" in httpx.get(f"{url}/dashboard").text.upper()


def test_a_replay_then_live_killed_partway_and_run_again_says_it_cannot_go_on(
        tmp_path: Path) -> None:
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    _ratings(tmp_path / "a.jsonl", 0, 200_000)
    args = ["replay", "p.py", "--workdir", "w", "--events", "ratings=a.jsonl", "--then-live",
            "--no-serve"]
    def ingested() -> bool:
        try:
            return SQLiteLog(tmp_path / "w" / "log.db").end_offset("ratings", 0) > 0
        except (LivelearnError, sqlite3.Error):  # not made yet
            return False

    with _process(args, tmp_path) as first:
        _wait(ingested, "the first events in the log")
        first.send_signal(signal.SIGKILL)
        first.wait()
    again = subprocess.run([sys.executable, "-m", "livelearn", "-q", *args], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 2
    assert again.stderr.startswith("livelearn: the log already holds ")
    assert "events of stream 'ratings': an earlier replay, or one stopped partway. A " \
           "replay cannot go on from it (part of a file may be in, and its report would " \
           "miss what was learned before): to replay, delete the work folder (rm -r w) or " \
           "give another --workdir, and run the same command again" in again.stderr
    # what it says works: the replay runs whole and writes its report
    shutil.rmtree(tmp_path / "w")
    done = subprocess.run([sys.executable, "-m", "livelearn", "-q", *args[:-2]],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "200000 events" in done.stdout and (tmp_path / "w" / "replay.html").is_file()


def test_a_replay_then_live_stopped_by_ctrl_c_says_how_to_go_on(tmp_path: Path) -> None:
    """It ended without a word (`run` says which version is the newest), and the same
    command again is refused: now it says that `livelearn run` goes on."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    _ratings(tmp_path / "a.jsonl", 0, 300)
    with _process(["replay", "p.py", "--workdir", "w", "--events", "ratings=a.jsonl",
                   "--then-live", "--no-serve"], tmp_path) as first:
        assert first.stdout is not None
        while not first.stdout.readline().startswith(b"live: waiting for events"):
            pass
        first.send_signal(signal.SIGINT)
        assert first.wait(10) == 130
        said = first.stdout.read().decode()
    assert said.startswith("stopped; the newest version is v1 (what was learned since is "
                           "learned again): `livelearn run` with the same work folder (or "
                           "--log and --registry) resumes from it and from the joiner's "
                           "checkpoint, losing nothing\n"), said


def test_run_stopped_by_sigterm_stops_as_ctrl_c_does(tmp_path: Path) -> None:
    """A service manager's SIGTERM ended `run` at once (exit -15), without a word of where
    it resumes. Now it stops as Ctrl-C does, serving HTTP or not, and exits with 143."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    _ratings(tmp_path / "a.jsonl", 0, 300)
    args = ["p.py", "--workdir", "w"]
    subprocess.run([sys.executable, "-m", "livelearn", "-q", "ingest", *args, "ratings",
                    "a.jsonl"], cwd=tmp_path, check=True, capture_output=True)
    for serving, ready in ((["--no-serve"], b"live: waiting for events"),
                           (["--port", "0"], b"dashboard: ")):
        with _process(["run", *args, *serving], tmp_path) as first:
            assert first.stdout is not None
            while not first.stdout.readline().startswith(ready):
                pass
            first.send_signal(signal.SIGTERM)
            assert first.wait(20) == 143
            said = first.stdout.read().decode()
        assert said.startswith("stopped; the newest version is v"), said
        assert "Traceback" not in said


def test_run_stopped_by_ctrl_c_says_so_and_a_restart_says_what_it_resumes(
        tmp_path: Path) -> None:
    """Both were silent: Ctrl-C ended the command without a word, and a restart went on
    from its checkpoint and newest version without saying so."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    _ratings(tmp_path / "a.jsonl", 0, 300)
    args = ["p.py", "--workdir", "w"]
    subprocess.run([sys.executable, "-m", "livelearn", "-q", "ingest", *args, "ratings",
                    "a.jsonl"], cwd=tmp_path, check=True, capture_output=True)
    with _process(["run", *args, "--no-serve"], tmp_path) as first:
        assert first.stdout is not None
        assert first.stdout.readline() == b"live: waiting for events (Ctrl-C to stop)\n"
        _wait(lambda: len(_samples(SQLiteLog(tmp_path / "w" / "log.db"))) >= 298,
              "the samples")
        time.sleep(0.5)  # the trainer's turn after the joiner's
        first.send_signal(signal.SIGINT)
        assert first.wait(10) == 130
        said = first.stdout.read().decode()
    assert said.startswith("stopped; the newest version is v1 (what was learned since is "
                           "learned again): `livelearn run` again resumes from it and from "
                           "the joiner's checkpoint, losing nothing\n"), said
    again = subprocess.run([sys.executable, "-m", "livelearn", "-q", "run", *args,
                            "--until-idle"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=60, check=True)
    assert again.stdout.splitlines() == [
        "resuming: the joiner from its checkpoint (300 of the 300 input records in the log "
        "read), the trainer from v1 (0 samples learned)",
        "300 samples learned; latest version v2; this run wrote 0 dead letters"]


def _up(url: str) -> bool:
    try:
        return bool(httpx.get(f"{url}/healthz").json()["model_version"])
    except httpx.HTTPError:
        return False


def test_run_serves_joins_and_learns(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "examples/clicks/generate_data.py", "--out",
                    str(tmp_path / "data"), "--impressions", "100"], cwd=ROOT, check=True)
    port = free_port()
    with _process(["run", str(ROOT / "examples/clicks/pipeline.py"), "--workdir", "w",
                   "--data", ".", "--port", str(port)], tmp_path) as p:
        url = f"http://127.0.0.1:{port}"
        _wait(lambda: _up(url), "the server")
        assert p.stdout is not None
        assert p.stdout.readline() == f"serving on {url} (Ctrl-C to stop)\n".encode()
        assert p.stdout.readline() == f"dashboard: {url}/dashboard\n".encode()
        assert httpx.get(f"{url}/dashboard").status_code == 200
        shown = httpx.post(f"{url}/predict", json={"user_id": "u1", "items": ["i1", "i2"],
                                                   "ts": T}).json()["predictions"]
        clicked = shown[0]["request_id"]
        answer = httpx.post(f"{url}/feedback", json=[
            {"stream": "clicks", "key": "u1", "id": "c1", "ts": T + 5000,
             "payload": {"request_id": clicked}}]).json()
        assert answer == {"accepted": 1, "rejected": []}
        httpx.post(f"{url}/predict", json={"user_id": "u2", "items": ["i3"], "ts": T + 3600_000})
        httpx.post(f"{url}/feedback", json=[{"stream": "clicks", "key": "u2", "id": "c2",
                                             "ts": T + 3600_000, "payload": {"request_id": "x"}}])
        log = SQLiteLog(tmp_path / "w" / "log.db")
        _wait(lambda: len(_samples(log)) == 2, "the two samples")
        labels = {s["id"]: s["labels"]["clicked"] for s in _samples(log)}
        assert labels == {clicked: 1.0, shown[1]["request_id"]: 0.0}


def test_serve_first_on_a_new_relative_log_then_train(tmp_path: Path) -> None:
    """README's roles apart: `serve` started first makes the log (sqlite:///w/log.db is w/
    beside it) and its topics; once `train` has published, /predict answers and logs."""
    subprocess.run([sys.executable, "examples/clicks/generate_data.py", "--out",
                    str(tmp_path / "data"), "--impressions", "100"], cwd=ROOT, check=True)
    pipeline, port = str(ROOT / "examples/clicks/pipeline.py"), free_port()
    role = ["--log", "sqlite:///w/log.db", "--registry", "w/models"]
    with _process(["serve", pipeline, *role, "--data", ".", "--port", str(port)], tmp_path):
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{url}/healthz").status_code < 500
            except httpx.HTTPError:
                return False

        _wait(up, "the server")
        trained = subprocess.run([sys.executable, "-m", "livelearn", "-q", "train", pipeline,
                                  *role, "--until-idle"], cwd=tmp_path, capture_output=True,
                                 text=True, timeout=120)
        assert trained.returncode == 0, trained.stderr

        def answers() -> bool:
            return httpx.post(f"{url}/predict", json={"user_id": "u1", "items": ["i1"],
                                                      "ts": T}).status_code == 200

        _wait(answers, "a model version served")
    log = SQLiteLog(tmp_path / "w" / "log.db")
    assert log.end_offset("predictions", 0) >= 1


def test_serve_reads_the_tables_beside_the_pipeline_file_by_default(tmp_path: Path) -> None:
    """As join, run, replay and ingest do, `serve` without --data reads the pipeline's
    tables relative to the pipeline file's folder, wherever it is started from."""
    folder, elsewhere = tmp_path / "p", tmp_path / "elsewhere"
    subprocess.run([sys.executable, "examples/clicks/generate_data.py", "--out",
                    str(folder / "data"), "--impressions", "100"], cwd=ROOT, check=True)
    (folder / "pipeline.py").write_text((ROOT / "examples/clicks/pipeline.py").read_text())
    elsewhere.mkdir()
    role = [str(folder / "pipeline.py"), "--log", "sqlite:///w/log.db", "--registry", "w/models"]
    trained = subprocess.run([sys.executable, "-m", "livelearn", "-q", "train", *role,
                              "--until-idle"], cwd=elsewhere, capture_output=True, text=True,
                             timeout=120)
    assert trained.returncode == 0, trained.stderr
    port = free_port()
    with _process(["serve", *role, "--port", str(port)], elsewhere) as server:
        def answers() -> bool:
            assert server.poll() is None, server.stdout.read() if server.stdout else ""
            try:
                return httpx.post(f"http://127.0.0.1:{port}/predict",
                                  json={"user_id": "u1", "items": ["i1"]}).status_code == 200
            except httpx.HTTPError:
                return False

        _wait(answers, "the server, with the items table of the pipeline's folder")


def test_replay_then_live_serves_a_feedback_pipeline_as_run_does(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "examples/clicks/generate_data.py", "--out",
                    str(tmp_path / "data"), "--impressions", "100"], cwd=ROOT, check=True)
    port = free_port()
    with _process(["replay", str(ROOT / "examples/clicks/pipeline.py"), "--workdir", "w",
                   "--data", ".", "--port", str(port), "--then-live", "--events",
                   "predictions=data/impressions.jsonl", "clicks=data/clicks.jsonl"],
                  tmp_path) as p:
        url = f"http://127.0.0.1:{port}"
        _wait(lambda: _up(url), "the server")
        assert p.stdout is not None
        said = [p.stdout.readline() for _ in range(4)]
        assert said[0].startswith(b"clicks=data/clicks.jsonl: ")  # predictions go last
        assert said[1] == b"predictions=data/impressions.jsonl: 100 events appended, " \
                          b"0 dead-lettered\n"
        assert b" events, " in said[2] and said[2].endswith(b"report w/replay.html\n")
        assert said[3] == f"serving on {url} (Ctrl-C to stop)\n".encode()
        shown = httpx.post(f"{url}/predict", json={"user_id": "u1", "items": ["i1"],
                                                   "ts": T + 10 * 86_400_000}).json()
        assert len(shown["predictions"]) == 1


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    subprocess.run([sys.executable, "examples/clicks/generate_data.py", "--out",
                    str(tmp_path / "data"), "--impressions", "100"], cwd=ROOT, check=True)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "livelearn", "-q", "serve",
                               str(ROOT / "examples/clicks/pipeline.py"), "--log",
                               "sqlite:///w/log.db", "--registry", "w/models", "--data", ".",
                               "--port", str(port)], cwd=tmp_path, capture_output=True,
                              text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"livelearn: cannot serve on 127.0.0.1:{port}: ")


def test_a_damaged_model_file_stops_serve_with_a_line_saying_what_to_do(tmp_path: Path
                                                                         ) -> None:
    subprocess.run([sys.executable, "examples/clicks/generate_data.py", "--out",
                    str(tmp_path / "data"), "--impressions", "100"], cwd=ROOT, check=True)
    pipeline = str(ROOT / "examples/clicks/pipeline.py")
    role = [pipeline, "--log", "sqlite:///w/log.db", "--registry", "w/models"]

    def livelearn(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "livelearn", "-q", *argv], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)

    assert livelearn("train", *role, "--until-idle").returncode == 0
    (tmp_path / "w" / "models" / "v000001.npz").write_bytes(b"damaged")
    done = livelearn("serve", *role, "--data", ".", "--port", str(free_port()))
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("livelearn: model file") and "v000001.npz" in done.stderr
    assert "`livelearn models promote N` serves an earlier one" in done.stderr


def test_one_role_per_process_for_a_label_in_event_pipeline(tmp_path: Path) -> None:
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    _ratings(tmp_path / "a.jsonl", 0, 200)
    log_url = f"sqlite:///{tmp_path / 'log.db'}"
    role = [str(tmp_path / "p.py"), "--log", log_url]
    for argv in (["ingest", str(tmp_path / "p.py"), "ratings", str(tmp_path / "a.jsonl"),
                  "--log", log_url],
                 ["join", *role, "--until-idle"],
                 ["train", *role, "--registry", str(tmp_path / "reg"), "--until-idle"]):
        done = subprocess.run([sys.executable, "-m", "livelearn", "-q", *argv], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    log = SQLiteLog(tmp_path / "log.db")
    assert len(_samples(log)) == 200
    assert Registry(tmp_path / "reg").versions()[-1].meta["samples"] == 200


def test_duplicates_and_late_events_are_dead_lettered(tmp_path: Path) -> None:
    lines = [orjson.dumps({"user": "u", "movie": "m", "stars": 1.0, "ts": T + 1000 * i})
             for i in range(10)]
    late = orjson.dumps({"user": "u", "movie": "m", "stars": 2.0, "ts": T - 5})
    (tmp_path / "r.jsonl").write_bytes(b"\n".join([*lines[:6], lines[2], late, *lines[6:]]))
    log = SQLiteLog(tmp_path / "log.db")
    report, _ = replay(log, Registry(tmp_path / "reg"), PIPELINE,
                       [("ratings", str(tmp_path / "r.jsonl"))])
    assert report["samples"] == 10 and report["events"] == 12
    assert report["dead_letters"] == {"duplicate": 1, "late": 1}
    dead = [orjson.loads(r.value) for r in log.read("dead_letters", 0, 0, 100)]
    assert [d["source"] for d in dead] == ["ratings/0@6", "ratings/0@7"]


def test_the_servers_socket_says_tcp_so_responses_are_not_held_back() -> None:
    """asyncio turns Nagle off (TCP_NODELAY) only on sockets made with IPPROTO_TCP; a small
    response otherwise waits for the client's delayed ACK, ~40 ms each."""
    import socket

    from livelearn.cli_data import bound_socket

    with bound_socket("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP


def test_join_and_train_stopped_by_ctrl_c_say_what_they_did(tmp_path: Path) -> None:
    """`join` and `train` live, stopped with Ctrl-C, ended without a word: a joiner that had
    dead-lettered every event it read as late said so nowhere. Now each says, as its
    --until-idle does at its end, what this run did, and exits with 130."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    log_url = "sqlite:///log.db"
    for name, start in (("a.jsonl", 100), ("b.jsonl", 0)):  # b's are behind a's: late
        subprocess.run([sys.executable, "-m", "livelearn", "-q", "ingest", "p.py", "ratings",
                        str(_ratings(tmp_path / name, start, 50)), "--log", log_url],
                       cwd=tmp_path, check=True, capture_output=True)
    log = SQLiteLog(tmp_path / "log.db")
    with _process(["join", "p.py", "--log", log_url], tmp_path) as join, \
            _process(["train", "p.py", "--log", log_url, "--registry", "reg"],
                     tmp_path) as train:
        _wait(lambda: len(_samples(log)) >= 49, "the samples")
        _wait(lambda: (tmp_path / "reg" / "index.db").exists(), "the trainer")
        time.sleep(0.5)  # the trainer's turn after the joiner's
        said = []
        for process in (join, train):
            process.send_signal(signal.SIGINT)
            assert process.wait(10) == 130
            assert process.stdout is not None
            said.append(process.stdout.read().decode())
    assert said[0] == "stopped: 100 records read, 49 samples, 50 dead letters (late 50)\n", said
    assert re.fullmatch(r"stopped: \d+ samples learned; latest version v\d+; this run wrote "
                        r"0 dead letters\n", said[1]), said
