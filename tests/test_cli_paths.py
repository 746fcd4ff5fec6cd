"""A folder or file the CLI cannot create or write (a file in the way, no permission) is
named with the reason in one line, `livelearn: ...`, exit code 2: never a traceback."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import orjson
import pytest

from livelearn.cli import main
from test_ingest import PIPELINE_FILE, T


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A pipeline file, a ratings file, and a file where a folder is wanted."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    (tmp_path / "r.jsonl").write_bytes(b"".join(orjson.dumps(
        {"user": f"u{i % 3}", "movie": "m1", "stars": 3.0, "ts": T + i}) + b"\n"
        for i in range(20)))
    (tmp_path / "afile").write_text("in the way\n")
    return tmp_path / "p.py", tmp_path / "r.jsonl", tmp_path / "afile"


def _fails(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    assert main(["-q", *args]) == 2
    err = capsys.readouterr().err
    assert err == f"livelearn: {message}\n", err


def test_folders_that_cannot_be_created(setup: tuple[Path, Path, Path],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    pipeline, ratings, afile = (str(p) for p in setup)
    work = str(Path(afile).parent / "w")
    _fails(capsys, ["ingest", pipeline, "ratings", ratings, "--workdir", f"{afile}/w"],
           f"cannot create work folder '{afile}/w': Not a directory")
    _fails(capsys, ["ingest", pipeline, "ratings", ratings, "--workdir", work,
                    "--log", f"sqlite:///{afile}/log.db"],
           f"cannot create log folder '{afile}': File exists")
    _fails(capsys, ["run", pipeline, "--workdir", work, "--registry", f"{afile}/r"],
           f"cannot create registry folder '{afile}/r': Not a directory")
    _fails(capsys, ["train", pipeline, "--log", f"sqlite:///{work}/log.db",
                    "--registry", afile], f"cannot create registry folder '{afile}': File exists")
    _fails(capsys, ["demo", "--workdir", afile], f"cannot create work folder '{afile}': "
                                                 f"File exists")


def test_a_log_that_is_not_sqlite(setup: tuple[Path, Path, Path],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    pipeline, ratings, afile = (str(p) for p in setup)
    folder = str(Path(afile).parent)
    for path, why in ((folder, "unable to open database file"),
                      (afile, "file is not a database")):
        _fails(capsys, ["ingest", pipeline, "ratings", ratings, "--log", f"sqlite:///{path}"],
               f"log '{path}': cannot open it as SQLite ({why})")


def test_reports_that_cannot_be_written(setup: tuple[Path, Path, Path],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Each report path is checked before the replay, which then has not started: a
    folder that cannot be made, a folder that cannot be written in (/sys, even for root;
    a read-only one), a path that is a folder."""
    pipeline, ratings, afile = (str(p) for p in setup)
    work = Path(afile).parent / "w"
    replay = ["replay", pipeline, "--events", f"ratings={ratings}", "--workdir", str(work)]
    locked = Path(afile).parent / "locked"
    locked.mkdir(mode=0o500)
    for option in ("--report", "--report-json"):
        _fails(capsys, [*replay, option, f"{afile}/r.html"],
               f"cannot create report folder '{afile}': File exists")
        _fails(capsys, [*replay, option, "/sys/r.json"],
               "cannot write report '/sys/r.json': Permission denied")
        if os.geteuid() != 0:  # root writes in a read-only folder
            _fails(capsys, [*replay, option, f"{locked}/r.json"],
                   f"cannot write report '{locked}/r.json': Permission denied")
        _fails(capsys, [*replay, option, str(work.parent)],
               f"cannot write report '{work.parent}': Is a directory")
        assert not work.exists()
    assert list(locked.iterdir()) == [] and "r.json" not in os.listdir("/sys")
    # the demo's report and summary likewise, before the demo
    _fails(capsys, ["demo", "--workdir", str(work), "--summary-json", str(work.parent)],
           f"cannot write summary '{work.parent}': Is a directory")
    assert not work.exists()


def _zero_page(path: Path, page: int, size: int) -> None:
    with open(path, "r+b") as f:
        f.seek(page * size)
        f.write(b"\0" * size)


def test_a_damaged_log_file_is_named_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Pages of log.db overwritten (a disk fault): the roles name the damaged file, whether
    a statement or the reading of its rows meets it (the registry's index.db likewise:
    log.sqlite.Connection)."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    (tmp_path / "r.jsonl").write_bytes(b"".join(orjson.dumps(
        {"user": f"u{i % 97}", "movie": f"m{i % 13}", "stars": 3.0, "ts": T + i}) + b"\n"
        for i in range(30_000)))
    work, log = tmp_path / "w", f"sqlite:///{tmp_path / 'w' / 'log.db'}"
    assert main(["-q", "replay", str(tmp_path / "p.py"), "--workdir", str(work),
                 "--events", f"ratings={tmp_path / 'r.jsonl'}"]) == 0
    capsys.readouterr()
    with closing(sqlite3.connect(work / "log.db")) as db:  # the records in the file, not its WAL
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages = (work / "log.db").stat().st_size // 16384
    for page in range(pages // 4, pages - 2, 2):  # records' batches, events' and samples'
        _zero_page(work / "log.db", page, 16384)
    assert main(["-q", "train", str(tmp_path / "p.py"), "--log", log, "--registry",
                 str(tmp_path / "reg"), "--until-idle"]) == 2  # a new trainer reads them all
    assert capsys.readouterr().err.startswith(
        f"livelearn: SQLite file {work / 'log.db'} is damaged (database disk image is "
        f"malformed)")


def test_model_files_beside_an_emptied_index_are_not_written_over(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from livelearn.registry import Registry
    from livelearn.sim.pipeline import PIPELINE

    registry = Registry(tmp_path / "reg")
    for _ in range(2):
        registry.publish(PIPELINE.learner(), {"metric": "auc"}, None)
    for name in ("index.db", "index.db-wal", "index.db-shm"):
        (tmp_path / "reg" / name).unlink(missing_ok=True)
    (tmp_path / "reg" / "index.db").write_bytes(b"")
    assert main(["-q", "models", "--registry", str(tmp_path / "reg")]) == 2
    assert "its index.db knows no version, yet 1 model files are there (v000002.npz" in \
        capsys.readouterr().err
    (tmp_path / "reg" / "v000002.npz").unlink()  # v1 alone: a first publish killed midway
    assert main(["-q", "models", "--registry", str(tmp_path / "reg")]) == 0


def test_a_checkpoint_edited_into_text_is_corrupt_in_one_line(
        setup: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    """A checkpoint whose state a hand edit of log.db made TEXT (CAST(state AS TEXT)) is
    damaged as one whose checksum fails: the joiner resumes from the one before it, with a
    warning, and with every one so it stops with one line naming the group and the file."""
    pipeline, ratings, _ = (str(p) for p in setup)
    db = Path(ratings).parent / "log.db"
    join = ["join", pipeline, "--log", f"sqlite:///{db}", "--until-idle"]
    lines = Path(ratings).read_bytes().splitlines(keepends=True)
    for part in (lines[:10], lines[10:]):  # two joins: two checkpoints
        Path(ratings).write_bytes(b"".join(part))
        assert main(["-q", "ingest", pipeline, "ratings", ratings, "--log", f"sqlite:///{db}"]) == 0
        assert main(["-q", *join]) == 0
    for where, code in (("slot = 0", 0), ("1", 2)):  # of the joiner's group, not its others'
        with sqlite3.connect(db) as conn:
            conn.execute(f"UPDATE checkpoints SET state = CAST(state AS TEXT) "
                         f"WHERE grp = 'joiner' AND {where}")
        capsys.readouterr()
        assert main(["-q", *join]) == code
    assert capsys.readouterr().err == (f"livelearn: every checkpoint of group 'joiner' in {db} "
                                       f"is corrupt\n")
    assert [r.getMessage() for r in caplog.records if r.name == "livelearn.log"] == [
        f"checkpoint of group 'joiner' in {db} is corrupt (checksum); resuming from the one "
        f"before it"]


@contextmanager
def _read_only(path: Path) -> Iterator[None]:
    """``path`` (a file or folder) read-only inside the block: immutable for root, whom
    permissions do not stop (chattr +i, from e2fsprogs, which .ci/run installs)."""
    if os.geteuid() == 0:
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
        assert done.returncode == 0, f"chattr +i {path} failed: {done.stderr}"
        undo = ["chattr", "-i", str(path)]
    else:
        mode = path.stat().st_mode
        path.chmod(mode & ~0o222)
    try:
        yield
    finally:
        if os.geteuid() == 0:
            subprocess.run(undo, check=True)
        else:
            path.chmod(mode)


def _livelearn(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "livelearn", "-q", *args], capture_output=True,
                          text=True, timeout=120)


def test_a_read_only_log_or_log_folder_is_named_in_one_line(setup: tuple[Path, Path, Path]
                                                            ) -> None:
    """A log file that cannot be written (another user's, a read-only disk) stops a writer
    saying so, and readers go on; a folder that cannot be written stops readers too (SQLite
    makes log.db-wal and log.db-shm beside the file to open it), saying why. Before, a
    writer stopped with sqlite3's traceback, and a reader said 'unable to open database
    file' alone."""
    pipeline, ratings, _ = (str(p) for p in setup)
    work = Path(pipeline).parent / "w"
    ingest = ["ingest", pipeline, "ratings", ratings, "--workdir", str(work)]
    assert _livelearn(*ingest).returncode == 0
    assert sorted(os.listdir(work)) == ["log.db"]  # closed: no -wal, no -shm
    with _read_only(work):
        refused = _livelearn("dead-letters", pipeline, "--workdir", str(work))
        assert (refused.returncode, refused.stderr) == (2, (
            f"livelearn: log '{work / 'log.db'}': cannot open it as SQLite (unable to open "
            f"database file): its folder '{work}' cannot be written, and SQLite makes "
            f"log.db-wal and log.db-shm beside it, even to read it. Give a folder that can "
            f"be written (or copy the pipeline's folder to one).\n"))
    with _read_only(work / "log.db"):
        refused = _livelearn(*ingest)
        assert (refused.returncode, refused.stderr) == (2, (
            f"livelearn: log '{work / 'log.db'}': SQLite cannot write to it (attempt to write "
            f"a readonly database): is its disk full, or the file read-only? Nothing of this "
            f"write was written\n"))
        read = _livelearn("dead-letters", pipeline, "--workdir", str(work))
        assert (read.returncode, read.stderr) == (0, "")
    assert _livelearn(*ingest).returncode == 0
