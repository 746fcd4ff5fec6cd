"""`--skip-lost`: a joiner or trainer whose next records the log's retention deleted goes
on from where the partition starts now, recording each gap (a WARNING and a dead letter
with reason lost) rather than stopping with Lost; without it the role stops, naming the
option. On the SQLite log with a retention of half a second (real processes) and on a
real Kafka broker (records deleted as its retention does)."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from livelearn.cli import main
from livelearn.errors import Lost
from livelearn.join.flink import _prepare_topics
from livelearn.join.runner import JoinRunner
from livelearn.log.base import Log
from livelearn.log.kafka import KafkaLog
from livelearn.log.sqlite import SQLiteLog
from livelearn.registry import Registry
from livelearn.sim.pipeline import PIPELINE
from livelearn.spec import DEAD_LETTERS, PREDICTIONS, SAMPLES
from livelearn.train.trainer import Trainer
from test_ingest import PIPELINE_FILE
from test_kafka_limits import T0, _delete_before, _flink_group_behind, _predictions
from test_run import _ratings
from test_sqlite_retention import HALF_SECOND


def _lost_letters(log: Log, after: int = 0) -> list[dict[str, Any]]:
    """The dead letters with reason lost from offset ``after`` on (or where the topic
    starts now, if later)."""
    offset = max(after, log.start_offset(DEAD_LETTERS, 0))
    letters = []
    while records := log.read(DEAD_LETTERS, 0, offset, 1000):
        letters += [orjson.loads(r.value) for r in records]
        offset = records[-1].offset + 1
    return [letter for letter in letters if letter["reason"] == "lost"]


def test_joiner_and_trainer_stop_naming_the_option_and_with_it_record_the_gap_once(
        tmp_path: Path) -> None:
    """Real processes on a SQLite log that keeps half a second: ratings the joiner had not
    read, then samples the trainer had not read, are deleted. Each role stops naming
    --skip-lost; with it, each goes on past its gap, learning what comes after, and says
    so in a WARNING and a dead letter; run again, neither finds the gap again."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    url = f"sqlite:///log.db?retention_hours={HALF_SECOND}"
    log = SQLiteLog(tmp_path / "log.db")

    def livelearn(*args: str, code: int = 0) -> str:
        done = subprocess.run([sys.executable, "-m", "livelearn", "-q", *args, "--log", url],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == code, done.stderr
        return done.stdout + done.stderr

    def ingest(start: int) -> None:
        livelearn("ingest", "p.py", "ratings", str(_ratings(tmp_path / f"{start}.jsonl",
                                                            start, 100)))

    train = ("train", "p.py", "--registry", "reg", "--until-idle")
    ingest(0)
    livelearn("join", "p.py", "--until-idle")
    livelearn(*train)  # learns samples 0 to 99
    ingest(100)
    livelearn("join", "p.py", "--until-idle")  # samples 100 to 199, which no trainer reads
    time.sleep(0.6)
    ingest(200)  # ratings 200 to 299, which no joiner reads
    time.sleep(0.6)
    ingest(300)  # deletes those
    assert log.start_offset("ratings", 0) == 300

    said = livelearn("join", "p.py", "--until-idle", code=2)
    assert "group 'joiner' stops: " in said and "up to 100 record(s) of topic 'ratings' " \
           "partition 0 (offsets 200 to 299) were deleted before they were read" in said
    assert "run the role again with --skip-lost" in said
    said = livelearn("join", "p.py", "--until-idle", "--skip-lost")
    assert "group 'joiner' skips offsets 200 to 299 of topic 'ratings' partition 0 (up to " \
           "100 record(s)), deleted from the log before it read them (--skip-lost): it goes " \
           "on from offset 300" in said
    assert "100 records read, 100 samples, 1 dead letter (lost 1)" in said
    [letter] = _lost_letters(log)
    assert letter["stream"] == "ratings" and letter["source"] == "ratings/0@200"
    assert letter["event"] == {"group": "joiner", "topic": "ratings", "partition": 0,
                               "first": 200, "last": 299, "records": 100}
    assert letter["detail"].startswith("group 'joiner' skipped offsets 200 to 299 of topic "
                                       "'ratings' partition 0 (up to 100 record(s))")
    time.sleep(0.6)
    ingest(400)  # deletes the samples 100 to 199, which the trainer had not read
    assert log.start_offset(SAMPLES, 0) == 200
    letters_end = log.end_offset(DEAD_LETTERS, 0)

    said = livelearn(*train, code=2)
    assert "group 'trainer' stops: " in said and "(offsets 100 to 199)" in said
    assert "--skip-lost" in said
    said = livelearn(*train, "--skip-lost")
    assert "group 'trainer' skips offsets 100 to 199 of topic 'samples' partition 0" in said
    [letter] = _lost_letters(log, letters_end)
    assert letter["event"] == {"group": "trainer", "topic": "samples", "partition": 0,
                               "first": 100, "last": 199, "records": 100}
    versions = Registry(tmp_path / "reg").versions()
    assert versions[-1].meta["samples"] == 200  # the 100 before the gap and the 100 after
    assert versions[-1].meta["offsets"] == [["samples", 0, 300]]

    # run again, each goes on as usual (ratings 400 to 499): the gaps are behind them
    letters_end = log.end_offset(DEAD_LETTERS, 0)
    said = livelearn("join", "p.py", "--until-idle", "--skip-lost")
    assert "100 records read, 100 samples, 0 dead letters" in said
    assert "skips" not in said + livelearn(*train, "--skip-lost")
    assert _lost_letters(log, letters_end) == []
    assert Registry(tmp_path / "reg").versions()[-1].meta["samples"] == 300


def test_a_kafka_joiner_skips_the_gap_records_it_once_and_joins_what_comes_after(
        kafka: KafkaLog, caplog: pytest.LogCaptureFixture) -> None:
    _predictions(kafka, 0, 10)
    JoinRunner(kafka, PIPELINE, idle_after_s=0).step(4)  # r0 to r3 read, their windows open
    _delete_before(kafka, PREDICTIONS, 7)
    with pytest.raises(Lost, match=r"\(offsets 4 to 6\) were deleted .* --skip-lost"):
        JoinRunner(kafka, PIPELINE, idle_after_s=0).step(100)
    runner = JoinRunner(kafka, PIPELINE, idle_after_s=0, skip_lost=True)
    with caplog.at_level(logging.WARNING, "livelearn.log"):
        assert runner.step(100) == 3
    assert "group 'joiner' skips offsets 4 to 6 of topic 'predictions' partition 0 (up to 3 " \
           "record(s))" in caplog.text
    assert kafka.committed("joiner").offsets[(PREDICTIONS, 0)] == 10
    assert runner.counts["lost"] == 1
    [letter] = _lost_letters(kafka)
    assert (letter["source"], letter["event"]["first"], letter["event"]["last"]) == (
        "predictions/0@4", 4, 6)
    caplog.clear()
    again = JoinRunner(kafka, PIPELINE, idle_after_s=0, skip_lost=True)
    with caplog.at_level(logging.WARNING, "livelearn.log"):
        while again.step(100, final=True):
            pass
    assert "skips" not in caplog.text and len(_lost_letters(kafka)) == 1
    samples = [orjson.loads(r.value)["id"] for r in kafka.read(SAMPLES, 0, 0, 100)]
    assert samples == ["r0", "r1", "r2", "r3", "r7", "r8", "r9"]


def _samples(first: int, n: int, tie_last: bool = False) -> list[tuple[str, bytes]]:
    ends = [T0 + i for i in range(first, first + n)]
    if tie_last:
        ends[-1] = ends[-2]
    return [(f"r{i}", orjson.dumps({"id": f"r{i}", "ts": end, "window_end": end,
                                    "score": 0.5, "features": {"topic": f"t{i % 3}"},
                                    "labels": {"clicked": float(i % 2)}}))
            for i, end in zip(range(first, first + n), ends, strict=True)]


def test_a_kafka_trainer_skips_a_gap_met_while_it_runs_once_it_learned_what_came_before(
        kafka: KafkaLog, tmp_path: Path) -> None:
    """The samples deleted are the last ones, while two read before them wait to be
    learned (their window end may tie with the next): the trainer learns those first,
    then publishes a version past the gap, so a restart does not find it again."""
    registry = Registry(tmp_path / "registry")
    kafka.append(SAMPLES, _samples(0, 10, tie_last=True))
    trainer = Trainer(kafka, registry, PIPELINE, idle_after_s=0, skip_lost=True)
    trainer.step()
    assert trainer.samples == 8  # r8 and r9, of the newest window end, are held back
    kafka.append(SAMPLES, _samples(10, 10))
    _delete_before(kafka, SAMPLES, 20)  # all of them: the partition starts at its end
    while trainer.step(final=True):
        pass
    assert (trainer.samples, trainer.lost) == (10, 1)
    [letter] = _lost_letters(kafka)
    assert letter["event"] == {"group": "trainer", "topic": "samples", "partition": 0,
                               "first": 10, "last": 19, "records": 10}
    assert registry.versions()[-1].meta["offsets"] == [["samples", 0, 20]]
    assert registry.versions()[-1].meta["samples"] == 10
    again = Trainer(kafka, registry, PIPELINE, idle_after_s=0, skip_lost=True)
    assert again.step(final=True) is None and again.offsets[(SAMPLES, 0)] == 20
    assert again.lost == 0 and len(_lost_letters(kafka)) == 1


def test_a_flink_join_with_skip_lost_records_its_groups_gap_and_moves_it_before_its_job(
        kafka: KafkaLog, caplog: pytest.LogCaptureFixture) -> None:
    """What `livelearn join --engine flink --skip-lost` does before it submits its job (no
    Flink needed): the gap of its consumer group becomes a dead letter, then the group's
    offset is moved past it, so the next start finds none."""
    _flink_group_behind(kafka)
    url = f"kafka://{kafka.bootstrap}?prefix={kafka.prefix}"
    with pytest.raises(Lost, match=r"group 'livelearn-flink-join' stops: .*\(offsets 4 to "
                                   r"6\).*--skip-lost"):
        _prepare_topics(PIPELINE, url, "livelearn-flink-join")
    with caplog.at_level(logging.WARNING, "livelearn.log"):
        _prepare_topics(PIPELINE, url, "livelearn-flink-join", skip_lost=True)
    assert "group 'livelearn-flink-join' skips offsets 4 to 6 of topic 'predictions'" \
           in caplog.text
    [letter] = _lost_letters(kafka)
    assert letter["event"] == {"group": "livelearn-flink-join", "topic": "predictions",
                               "partition": 0, "first": 4, "last": 6, "records": 3}
    _prepare_topics(PIPELINE, url, "livelearn-flink-join")  # the group is past the gap now
    assert len(_lost_letters(kafka)) == 1


def test_run_stops_naming_the_option_and_with_it_goes_on(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`livelearn run` (its joiner and trainer in one process) takes --skip-lost too."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    args = [str(tmp_path / "p.py"), "--log",
            f"sqlite:///{tmp_path}/log.db?retention_hours={HALF_SECOND}",
            "--workdir", str(tmp_path / "w")]

    def ingest(start: int) -> None:
        assert main(["-q", "ingest", *args, "ratings",
                     str(_ratings(tmp_path / f"{start}.jsonl", start, 100))]) == 0

    ingest(0)
    assert main(["-q", "run", *args, "--until-idle"]) == 0
    time.sleep(0.6)
    ingest(100)  # which no joiner reads
    time.sleep(0.6)
    ingest(200)  # deletes those
    capsys.readouterr()
    assert main(["-q", "run", *args, "--until-idle"]) == 2
    assert "(offsets 100 to 199)" in capsys.readouterr().err
    assert main(["-q", "run", *args, "--until-idle", "--skip-lost"]) == 0
    assert "200 samples learned" in capsys.readouterr().out
    [letter] = _lost_letters(SQLiteLog(tmp_path / "log.db"))
    assert letter["event"]["group"] == "joiner" and letter["event"]["first"] == 100
