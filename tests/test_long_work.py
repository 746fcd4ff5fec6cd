"""Long work on real-size inputs: `ingest`, `replay` and `run --until-idle` say how far
they are, and one stopped by Ctrl-C (or SIGTERM) says what it wrote and how to go on.

The progress lines come every PROGRESS_S seconds; here it is 0, so every write logs one,
and a Ctrl-C is a KeyboardInterrupt raised where a progress line is logged."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import orjson
import pytest

from livelearn import cli_data
from livelearn.cli import main
from livelearn.ingest import BATCH
from livelearn.log.sqlite import SQLiteLog

T = 1_704_067_200_000
PIPELINE_FILE = '''
from livelearn import spec
from livelearn.models.linear import LinearRegression
RATINGS = spec.Stream("ratings", {"movie": str, "stars": float}, key="user")
PIPELINE = spec.Pipeline(name="movies", feedback=spec.EventLabel(RATINGS, label="stars"),
                         features=lambda e, rows, counts: {"movie": e.payload["movie"]},
                         learner=lambda: LinearRegression(bits=10), target="stars",
                         policies=spec.Policies(publish_every_samples=1000))
'''


class _CtrlC(logging.Filter):
    """Raises KeyboardInterrupt, as a Ctrl-C would, at the ``at``-th progress line
    that holds ``words``."""

    def __init__(self, words: str, at: int):
        super().__init__()
        self.words, self.at = words, at

    def filter(self, record: logging.LogRecord) -> bool:
        if self.words in record.getMessage():
            self.at -= 1
            if not self.at:
                raise KeyboardInterrupt
        return True


@pytest.fixture
def progress(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
             ) -> pytest.LogCaptureFixture:
    """Progress logged at every write, captured."""
    monkeypatch.setattr(cli_data, "PROGRESS_S", 0.0)
    caplog.set_level(logging.INFO, logger="livelearn.progress")
    return caplog


def _ratings(path: Path, n: int) -> Path:
    path.write_text("".join(f'{{"user": "u{i % 50}", "movie": "m{i % 7}", "stars": '
                            f'{i % 5 + 1}, "ts": {T + i * 1000}}}\n' for i in range(n)))
    return path


def _ids(log_path: Path) -> list[str]:
    log = SQLiteLog(log_path)
    try:
        return [orjson.loads(r.value)["id"] for r in log.read("ratings", 0, 0, 100_000)]
    finally:
        log.close()


def _stop_at(words: str, at: int) -> _CtrlC:
    ctrl_c = _CtrlC(words, at)
    logging.getLogger("livelearn.progress").addFilter(ctrl_c)
    return ctrl_c


def test_an_ingest_says_how_far_it_is_and_where_to_go_on_when_stopped(
        tmp_path: Path, progress: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    """It said nothing for the 25 s of a 3-million-line file, and a Ctrl-C ended it with
    no word of what was in the log: ingesting the file again gave every event written
    twice (1.9 million dead letters)."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    source = _ratings(tmp_path / "r.jsonl", 2 * BATCH + 500)
    args = [str(tmp_path / "p.py"), "--workdir", str(tmp_path / "w"), "ratings", str(source)]
    ctrl_c = _stop_at("ingesting", 2)
    try:
        assert main(["ingest", *args]) == 130
    finally:
        logging.getLogger("livelearn.progress").removeFilter(ctrl_c)
    said = [r.getMessage() for r in progress.records]
    assert re.fullmatch(rf"ingesting {source} into stream 'ratings': line {BATCH} \(\d\d% "
                        rf"of the file\), {BATCH} events and 0 dead letters written", said[0])
    out = capsys.readouterr().out
    assert out == (f"stopped. Of {source}, the records before line {2 * BATCH + 1} were "
                   f"written ({2 * BATCH} events, 0 dead letters) and none from there on: "
                   f"ingest the rest with --from-line {2 * BATCH + 1} (ingested again, the "
                   f"joiner dead-letters the copies of records ingested twice)\n")
    assert len(_ids(tmp_path / "w" / "log.db")) == 2 * BATCH
    assert main(["-q", "ingest", *args, "--from-line", str(2 * BATCH + 1)]) == 0
    assert "500 events appended, 0 dead-lettered" in capsys.readouterr().out
    assert main(["-q", "ingest", args[0], "--workdir", str(tmp_path / "whole"),
                 *args[3:]]) == 0
    assert _ids(tmp_path / "w" / "log.db") == _ids(tmp_path / "whole" / "log.db")


def test_from_line_skips_the_csv_rows_that_start_before_it(tmp_path: Path) -> None:
    """A row's line is where it starts: a quoted cell over lines 3 and 4 is row 3's."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    (tmp_path / "r.csv").write_text(f'user,movie,stars,ts\nu1,m1,1,{T}\nu2,"m\n2",2,{T}\n'
                                    f'u3,m3,3,{T}\n')
    args = [str(tmp_path / "p.py"), "--workdir", str(tmp_path / "w"), "ratings",
            str(tmp_path / "r.csv")]
    assert main(["-q", "ingest", *args, "--from-line", "4"]) == 0
    log = SQLiteLog(tmp_path / "w" / "log.db")
    assert [orjson.loads(r.value)["key"] for r in log.read("ratings", 0, 0, 10)] == ["u3"]
    log.close()
    with pytest.raises(SystemExit):  # argparse's error, naming the option
        main(["-q", "ingest", *args, "--from-line", "0"])


def test_a_replay_says_how_far_it_is_and_that_it_cannot_go_on_when_stopped(
        tmp_path: Path, progress: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A replay of 2 million events said nothing for the 17 s of its ingest (nothing at all
    with -q, the gate's verdicts held back), and a Ctrl-C ended it without a word."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    source = _ratings(tmp_path / "r.jsonl", 2 * BATCH + 500)
    workdir = tmp_path / "w"
    args = ["replay", str(tmp_path / "p.py"), "--workdir", str(workdir), "--events",
            f"ratings={source}"]
    ctrl_c = _stop_at("learning", 3)
    try:
        assert main(args) == 130
    finally:
        logging.getLogger("livelearn.progress").removeFilter(ctrl_c)
    said = [r.getMessage() for r in progress.records]
    assert said[0].startswith(f"ingesting {source} into stream 'ratings': line {BATCH} ")
    assert said[-1].startswith("learning: the joiner read ")
    assert f" of the {2 * BATCH + 500} input records in the log (" in said[-1]
    assert capsys.readouterr().out == (
        f"stopped: a replay stopped partway cannot go on (part of a file may be in the log, "
        f"and its report would miss what was learned before): to replay, delete the work "
        f"folder (rm -r {workdir}) or give another --workdir, and run the same command "
        f"again\n")


def test_run_until_idle_says_how_far_it_is_and_what_it_resumes_from_when_stopped(
        tmp_path: Path, progress: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`run --until-idle` over a long log said nothing while it learned, and a Ctrl-C
    ended it without the word `run` live gives (which version is the newest)."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    args = [str(tmp_path / "p.py"), "--workdir", str(tmp_path / "w")]
    assert main(["-q", "ingest", *args, "ratings",
                 str(_ratings(tmp_path / "r.jsonl", 3000))]) == 0
    capsys.readouterr()
    ctrl_c = _stop_at("learning", 2)
    try:
        assert main(["run", *args, "--until-idle"]) == 130
    finally:
        logging.getLogger("livelearn.progress").removeFilter(ctrl_c)
    learning = [r.getMessage() for r in progress.records if "learning" in r.getMessage()]
    assert learning[0].startswith(
        "learning: the joiner read 1000 of the 3000 input records in the log (33%), ")
    out = capsys.readouterr().out
    assert out.startswith("stopped; the newest version is v"), out
    assert "`livelearn run` again resumes from it" in out
    assert main(["-q", "run", *args, "--until-idle"]) == 0
    assert capsys.readouterr().out.endswith("3000 samples learned; latest version v4; this run "
                                            "wrote 0 dead letters\n")
