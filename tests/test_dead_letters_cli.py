"""`livelearn dead-letters`: a user reads why their events were dead-lettered, on a real
SQLite log after a replay and on the Kafka broker after an ingest, and the command writes
nothing to the log."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest

from livelearn.cli import main
from livelearn.log import open_log
from livelearn.log.base import Log
from livelearn.spec import DEAD_LETTERS
from test_ingest import PIPELINE_FILE, T

GOOD = [f'{{"user": "u{i % 3}", "movie": "m{i % 4}", "stars": {i % 5}, "ts": {T + 1000 * i}}}'
        for i in range(30)]
#: ratings.jsonl: its bad lines (3: not JSON; 5: stars as text; 7: ts in seconds) and a
#: copy of line 1 (line 9: the same event, the joiner's duplicate)
LINES = [GOOD[0], GOOD[1], "not json", GOOD[2], '{"user": "u1", "movie": "m1", "stars": '
         f'"four", "ts": {T + 2500}}}', GOOD[3], '{"user": "u1", "movie": "m1", "stars": 4, '
         '"ts": 1704067200}', *GOOD[4:5], GOOD[4], *GOOD[5:]]


@pytest.fixture
def replayed(tmp_path: Path) -> tuple[Path, Path]:
    """The pipeline file and the work folder of a replay of ratings.jsonl (LINES)."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    (tmp_path / "ratings.jsonl").write_text("\n".join(LINES) + "\n")
    assert main(["-q", "replay", str(tmp_path / "p.py"), "--workdir", str(tmp_path / "w"),
                 "--events", f"ratings={tmp_path / 'ratings.jsonl'}"]) == 0
    return tmp_path / "p.py", tmp_path / "w"


def _dump(path: Path) -> list[str]:
    """Every row of every table of a SQLite file: what a command wrote, it changes."""
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def _command(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["dead-letters", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_reasons_and_lines_of_a_replays_bad_records_are_shown(
        replayed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    pipeline, workdir = replayed
    capsys.readouterr()
    before = _dump(workdir / "log.db")
    code, out, _ = _command(capsys, str(pipeline), "--workdir", str(workdir))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == (f"4 dead letters (duplicate 1, malformed 3) in "
                        f"{(workdir / 'log.db').resolve()}")
    assert lines[1] == "the newest 4, oldest first:"
    source = pipeline.parent / "ratings.jsonl"
    assert lines[2].startswith(f"malformed ratings {source}:3: stream 'ratings': the record is "
                             f"not valid JSON")
    assert lines[3] == "  not json"
    assert lines[4] == (f"malformed ratings {source}:5: stream 'ratings', field "
                        f"'stars': expected float, got 'four'")
    assert lines[5].startswith('  {"user": "u1", "movie": "m1", "stars": "four"')
    assert lines[6].startswith(f"malformed ratings {source}:7: stream 'ratings', field 'ts': "
                               f"expected milliseconds since the epoch, got 1704067200")
    assert lines[8].startswith("duplicate ratings ratings/0@5: ")
    assert '"payload":{"user":"u1","movie":"m0","stars":4.0}' in lines[9]
    assert len(lines) == 10
    assert _dump(workdir / "log.db") == before  # nothing written: no group, no topic, no id


def test_reason_stream_and_last_choose_the_letters(
        replayed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    pipeline, workdir = replayed
    capsys.readouterr()
    where = ["--workdir", str(workdir)]
    code, out, _ = _command(capsys, str(pipeline), *where, "--reason", "duplicate")
    assert code == 0
    assert out.splitlines()[1] == "the newest 1 of 1 with reason duplicate, oldest first:"
    assert out.splitlines()[2].startswith("duplicate ratings ratings/0@5: ")
    code, out, _ = _command(capsys, str(pipeline), *where, "--stream", "ratings", "--last", "2")
    assert out.splitlines()[1] == "the newest 2 of 4 with stream ratings, oldest first:"
    assert [line.split()[0] for line in out.splitlines()[2::2]] == ["malformed", "duplicate"]
    code, out, _ = _command(capsys, str(pipeline), *where, "--stream", "samples",
                            "--reason", "late")
    assert code == 0
    assert out.splitlines()[1:] == ["none with reason late and stream samples"]
    code, out, _ = _command(capsys, str(pipeline), *where, "--stream", "ratngs")
    assert out.splitlines()[1:] == ["none with stream ratngs (the pipeline's streams: "
                                    "predictions, ratings, samples)"]
    code, out, _ = _command(capsys, str(pipeline), *where, "--last", "0")
    assert out.splitlines() == [f"4 dead letters (duplicate 1, malformed 3) in "
                                f"{(workdir / 'log.db').resolve()}"]
    with pytest.raises(SystemExit):
        main(["dead-letters", str(pipeline), *where, "--reason", "lat"])
    assert "invalid choice: 'lat'" in capsys.readouterr().err


def test_json_gives_each_letter_as_stored_one_a_line(
        replayed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    pipeline, workdir = replayed
    capsys.readouterr()
    code, out, err = _command(capsys, str(pipeline), "--workdir", str(workdir), "--json",
                              "--reason", "malformed")
    assert code == 0
    log = open_log(f"sqlite:///{workdir / 'log.db'}")
    stored = [orjson.loads(r.value) for r in log.read(DEAD_LETTERS, 0, 0, 100)]
    log.close()
    assert [orjson.loads(line) for line in out.splitlines()] == \
        [letter for letter in stored if letter["reason"] == "malformed"]
    assert err.startswith("4 dead letters (duplicate 1, malformed 3) in ")


def test_a_log_without_dead_letters_says_so_and_a_folder_without_a_log_is_an_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    (tmp_path / "ratings.jsonl").write_text("\n".join(GOOD) + "\n")
    code, _, err = _command(capsys, str(tmp_path / "p.py"), "--workdir", str(tmp_path / "w"))
    assert code == 2 and not (tmp_path / "w").exists()
    assert err == (f"livelearn: dead-letters: no log in work folder {tmp_path / 'w'} (no "
                   f"log.db there): is it the --workdir of a replay, run or ingest of pipeline "
                   f"'movies'? Or give the log with --log URL\n")
    code, _, err = _command(capsys, str(tmp_path / "p.py"), "--log",
                            f"sqlite:///{tmp_path / 'none.db'}")
    assert code == 2 and "no log at" in err and not (tmp_path / "none.db").exists()
    code, _, err = _command(capsys, str(tmp_path / "p.py"), "--log", "memory://")
    assert code == 2 and "in-memory log" in err
    assert main(["ingest", str(tmp_path / "p.py"), "ratings", str(tmp_path / "ratings.jsonl"),
                 "--workdir", str(tmp_path / "w")]) == 0
    capsys.readouterr()
    code, out, _ = _command(capsys, str(tmp_path / "p.py"), "--workdir", str(tmp_path / "w"))
    assert (code, out) == (0, f"no dead letters in {(tmp_path / 'w' / 'log.db').resolve()}\n")


def test_replay_and_ingest_say_how_to_read_their_dead_letters(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    (tmp_path / "ratings.jsonl").write_text("\n".join(LINES) + "\n")
    assert main(["-q", "ingest", str(tmp_path / "p.py"), "ratings",
                 str(tmp_path / "ratings.jsonl"), "--workdir", str(tmp_path / "w")]) == 0
    _, err = capsys.readouterr()
    assert (f"  every dead letter with its reason: livelearn dead-letters {tmp_path / 'p.py'} "
            f"--workdir {tmp_path / 'w'}\n") in err
    assert main(["-q", "replay", str(tmp_path / "p.py"), "--workdir", str(tmp_path / "r"),
                 "--events", f"ratings={tmp_path / 'ratings.jsonl'}"]) == 0
    out, _ = capsys.readouterr()
    assert (f"\nevery dead letter with its reason: livelearn dead-letters {tmp_path / 'p.py'} "
            f"--workdir {tmp_path / 'r'}\n") in out
    assert main(["-q", "replay", str(tmp_path / "p.py"), "--log", "memory://", "--workdir",
                 str(tmp_path / "m"), "--events", f"ratings={tmp_path / 'ratings.jsonl'}"]) == 0
    assert "livelearn dead-letters" not in capsys.readouterr().out  # gone with the replay


def _kafka_state(log: Log) -> tuple[dict, dict]:
    ends = {tp: log.end_offset(*tp) for tp in log.topic_partitions(["ratings", DEAD_LETTERS])}
    groups = {g: log.committed(g).offsets for g in ("joiner", "trainer")}
    return ends, groups


def test_on_kafka_the_letters_are_read_and_nothing_is_written(
        tmp_path: Path, kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"kafka://{kafka_bootstrap}?prefix=d{uuid.uuid4().hex[:12]}.&timeout=10"
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    code, out, _ = _command(capsys, str(tmp_path / "p.py"), "--log", url)
    assert (code, out) == (0, f"no dead letters in {url} (it has no dead_letters topic)\n")
    (tmp_path / "ratings.jsonl").write_text("\n".join(LINES) + "\n")
    assert main(["-q", "ingest", str(tmp_path / "p.py"), "ratings",
                 str(tmp_path / "ratings.jsonl"), "--log", url]) == 0
    log = open_log(url)
    try:
        before = _kafka_state(log)
        capsys.readouterr()
        code, out, _ = _command(capsys, str(tmp_path / "p.py"), "--log", url)
        assert code == 0
        lines = out.splitlines()
        assert lines[:2] == [f"3 dead letters (malformed 3) in {url}",
                             "the newest 3, oldest first:"]
        assert [line.split(": ")[0] for line in lines[2::2]] == [
            f"malformed ratings {tmp_path / 'ratings.jsonl'}:{n}" for n in (3, 5, 7)]
        code, out, _ = _command(capsys, str(tmp_path / "p.py"), "--log", url, "--json")
        assert [orjson.loads(line)["source"] for line in out.splitlines()] == [
            f"{tmp_path / 'ratings.jsonl'}:{n}" for n in (3, 5, 7)]
        assert _kafka_state(log) == before
    finally:
        log.close()


def test_the_command_is_in_the_help() -> None:
    done = subprocess.run([sys.executable, "-m", "livelearn", "dead-letters", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--reason" in done.stdout
