"""What the commands say: replay's report and summary, `join --until-idle`'s summary, an
empty join shard, `models` without a registry, with an empty one or another program's
index.db, option checks. In process, on real files
and a real SQLite log."""

from __future__ import annotations

import logging
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from livelearn.cli import main
from livelearn.log.sqlite import SQLiteLog
from livelearn.models.ftrl import FTRL
from livelearn.registry import Registry
from test_freshness import _history, _tiny
from test_ingest import PIPELINE_FILE, T

#: PIPELINE_FILE's pipeline, whose features are not learnable for some movies
BAD_FEATURES = PIPELINE_FILE.replace(
    'features=lambda e, rows, counts: {"movie": e.payload["movie"]}',
    'features=lambda e, rows, counts: {"movie": {"nan": float("nan"), "list": [1, 2]}'
    '.get(e.payload["movie"], e.payload["movie"])}')


def _ratings(path: Path, movies: list[str]) -> Path:
    path.write_bytes(b"".join(
        orjson.dumps({"user": f"u{i % 3}", "movie": movie, "stars": i % 5, "ts": T + 1000 * i})
        + b"\n" for i, movie in enumerate(movies)))
    return path


def _dead_letters(log_path: Path) -> list[dict]:
    log = SQLiteLog(log_path)
    try:
        return [orjson.loads(r.value) for r in log.read("dead_letters", 0, 0, 10_000)]
    finally:
        log.close()


def test_replay_reports_the_trainers_dead_letters(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A sample the trainer cannot learn is counted in the report and the summary; with -q
    its warning is held back and only their number said."""
    assert BAD_FEATURES != PIPELINE_FILE
    (tmp_path / "p.py").write_text(BAD_FEATURES)
    movies = ["nan" if i % 10 == 0 else "list" if i % 10 == 1 else f"m{i % 4}"
              for i in range(100)]
    _ratings(tmp_path / "r.jsonl", movies)
    caplog.set_level(logging.INFO)
    assert main(["-q", "replay", str(tmp_path / "p.py"), "--workdir", str(tmp_path / "w"),
                 "--events", f"ratings={tmp_path / 'r.jsonl'}",
                 "--report-json", str(tmp_path / "report.json")]) == 0
    report = orjson.loads((tmp_path / "report.json").read_bytes())
    assert report["samples"] == 80 and report["dead_letters"] == {"malformed": 20}
    assert len(_dead_letters(tmp_path / "w" / "log.db")) == 20
    out, err = capsys.readouterr()
    assert re.search(r"^100 events, 80 samples, 20 dead letters \(malformed 20\), mae "
                     r"\d\.\d{4}, \d+ events/s; report ", out, re.M), out  # was 1.6361626336255797
    assert "livelearn: -q held back 20 warnings of samples the trainer could not learn" in err
    assert not [r for r in caplog.records if "cannot be learned" in r.getMessage()]


def test_a_replay_that_learned_from_no_sample_fails(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Every event taken, every sample dead-lettered (here the trainer's: features it cannot
    hash): the replay exited 0 having learned nothing, as if it had worked."""
    (tmp_path / "p.py").write_text(BAD_FEATURES)
    _ratings(tmp_path / "r.jsonl", ["nan"] * 10)
    assert main(["-q", "replay", str(tmp_path / "p.py"), "--workdir", str(tmp_path / "w"),
                 "--events", f"ratings={tmp_path / 'r.jsonl'}"]) == 2
    out, err = capsys.readouterr()
    assert "10 events, 0 samples, 10 dead letters (malformed 10)" in out
    assert (
        "livelearn: no sample was learned from the 10 events: 10 dead letters (malformed 10) "
        "(`livelearn dead-letters` shows why); does the pipeline's features or label "
        "function fail on every event?") in err.splitlines(), err


def test_a_regressions_report_says_its_error_is_better_lower(tmp_path: Path) -> None:
    """The dashboard and the study said which way the metric goes; the replay's page did not,
    and a rating's MAE falling over the plot looked like the model getting worse."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    _ratings(tmp_path / "r.jsonl", [f"m{i % 4}" for i in range(50)])
    assert main(["-q", "replay", str(tmp_path / "p.py"), "--workdir", str(tmp_path / "w"),
                 "--events", f"ratings={tmp_path / 'r.jsonl'}"]) == 0
    assert "prequential mae over event time (lower is better)" in \
        (tmp_path / "w" / "replay.html").read_text()


def test_replay_says_what_each_input_gave(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Input rejected entirely (a typo'd key field) is said, with the first reasons, and
    the command fails (see test_an_input_that_gave_no_event_fails_the_command)."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE.replace('key="user"', 'key="usr"'))
    source = f"ratings={_ratings(tmp_path / 'r.jsonl', ['m1'] * 8)}"
    assert main(["-q", "replay", str(tmp_path / "p.py"), "--workdir", str(tmp_path / "w"),
                 "--events", source, "--report-json", str(tmp_path / "report.json")]) == 2
    out, err = capsys.readouterr()
    assert f"{source}: 0 events appended, 8 dead-lettered" in out
    assert "0 events, 0 samples, 8 dead letters (malformed_at_ingest 8), mae -, " in out
    assert err.splitlines()[0].endswith("r.jsonl:1: stream 'ratings', field 'usr': missing "
                                        "(the key)")
    assert len(err.splitlines()) == 6  # the first five, and that nothing was accepted
    assert err.splitlines()[-1].startswith(f"livelearn: no event was accepted from {source} "
                                           f"(8 records)")
    given = orjson.loads((tmp_path / "report.json").read_bytes())["inputs"][source]
    assert (given["events"], given["dead"], len(given["first_errors"])) == (0, 8, 5)


def test_an_input_that_gave_no_event_fails_the_command(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every record of an input dead-lettered (every line malformed, another stream's
    file): replay and ingest end with one line saying so, exit code 2, so that a script
    stops there; the replay's report is written all the same. An input of which some
    records were dead-lettered, or an empty one, is no failure."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    good = _ratings(tmp_path / "r.jsonl", ["m1", "m2", "m3"]).read_bytes()
    clicks = b"".join(orjson.dumps({"request_id": f"q{i}", "ts": T + i}) + b"\n"
                      for i in range(2))
    for name, data in (("malformed", b"not json\n" * 3), ("clicks", clicks),
                       ("some", good + b"not json\n"), ("empty", b"")):
        (tmp_path / f"{name}.jsonl").write_bytes(data)
    pipeline, n = str(tmp_path / "p.py"), {"malformed": 3, "clicks": 2}

    def replay(name: str) -> int:
        return main(["-q", "replay", pipeline, "--workdir", str(tmp_path / f"w-{name}"),
                     "--events", f"ratings={tmp_path / name}.jsonl",
                     "--report-json", str(tmp_path / f"{name}.json")])

    def ingest(name: str) -> int:
        return main(["-q", "ingest", pipeline, "ratings", str(tmp_path / f"{name}.jsonl"),
                     "--workdir", str(tmp_path / "w-ingest")])

    for command in (replay, ingest):
        for name in ("malformed", "clicks"):
            assert command(name) == 2
            last = capsys.readouterr().err.splitlines()[-1]
            assert last == (f"livelearn: no event was accepted from ratings={tmp_path / name}"
                            f".jsonl ({n[name]} records): every record was dead-lettered (the "
                            f"first errors are above, each one's reason in the dead_letters "
                            f"topic); is it that stream's file, with the fields the pipeline "
                            f"declares?")
        for name in ("some", "empty"):
            assert command(name) == 0, capsys.readouterr().err
    assert orjson.loads((tmp_path / "clicks.json").read_bytes())["dead_letters"] == {
        "malformed_at_ingest": 2}
    log = SQLiteLog(tmp_path / "w-ingest" / "log.db")
    assert log.end_offset("ratings", 0) == 3 and log.end_offset("dead_letters", 0) == 6


def test_bucket_width_must_be_positive(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    for width in ("0", "-5", "x"):
        with pytest.raises(SystemExit) as stopped:
            main(["replay", "p.py", "--events", "ratings=r.jsonl", "--bucket-ms", width])
        assert stopped.value.code == 2
        assert "argument --bucket-ms: expected a" in capsys.readouterr().err


def test_bucket_width_beyond_any_time_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """A width past the largest event time (year 9999) is refused when parsed, not met as
    a traceback when the report's JSON is written, after the whole replay."""
    for width in ("253402300800001", "99999999999999999999999"):
        with pytest.raises(SystemExit) as stopped:
            main(["replay", "p.py", "--events", "ratings=r.jsonl", "--bucket-ms", width])
        assert stopped.value.code == 2
        assert (f"argument --bucket-ms: expected a whole number of ms from 1 to "
                f"253402300800000, got '{width}'") in capsys.readouterr().err


def test_join_until_idle_says_what_it_did(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    lines = _ratings(tmp_path / "r.jsonl", ["m1"] * 5).read_bytes().splitlines()
    (tmp_path / "r.jsonl").write_bytes(b"\n".join([*lines, lines[0]]) + b"\n")  # a duplicate
    url = f"sqlite:///{tmp_path / 'log.db'}"  # an absolute path: four slashes
    assert main(["-q", "ingest", str(tmp_path / "p.py"), "ratings", str(tmp_path / "r.jsonl"),
                 "--log", url]) == 0
    capsys.readouterr()
    assert main(["-q", "join", str(tmp_path / "p.py"), "--log", url, "--until-idle"]) == 0
    assert capsys.readouterr().out == "6 records read, 5 samples, 1 dead letter (duplicate 1)\n"


def test_train_until_idle_says_what_it_learned_and_dead_lettered(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`join --until-idle` and `run --until-idle` said what they did; `train --until-idle`
    ended without a word, also of the samples it could not learn."""
    (tmp_path / "p.py").write_text(BAD_FEATURES)
    _ratings(tmp_path / "r.jsonl", ["nan" if i % 10 == 0 else f"m{i % 4}" for i in range(30)])
    url = f"sqlite:///{tmp_path / 'log.db'}"
    for command in (["ingest", str(tmp_path / "p.py"), "ratings", str(tmp_path / "r.jsonl")],
                    ["join", str(tmp_path / "p.py"), "--until-idle"]):
        assert main(["-q", *command, "--log", url]) == 0
    capsys.readouterr()
    assert main(["-q", "train", str(tmp_path / "p.py"), "--log", url, "--registry",
                 str(tmp_path / "reg"), "--until-idle"]) == 0
    assert capsys.readouterr().out == ("27 samples learned; latest version v2; this run wrote "
                                       "3 dead letters (malformed 3)\n")


def test_run_until_idle_says_what_it_dead_lettered(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """It said only the samples learned: 45,002 ratings ingested, 41,997 learned, and not
    a word of the 3,000 that came late (a file ingested after a later one)."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    lines = _ratings(tmp_path / "r.jsonl", [f"m{i}" for i in range(8)]).read_bytes().splitlines()
    # the last four first, then the first four (late), then a copy of the last (a duplicate)
    (tmp_path / "r.jsonl").write_bytes(b"\n".join([*lines[4:], *lines[:4], lines[-1]]) + b"\n")
    workdir = str(tmp_path / "w")
    assert main(["-q", "ingest", str(tmp_path / "p.py"), "ratings", str(tmp_path / "r.jsonl"),
                 "--workdir", workdir]) == 0
    capsys.readouterr()
    assert main(["-q", "run", str(tmp_path / "p.py"), "--workdir", workdir,
                 "--until-idle"]) == 0
    assert capsys.readouterr().out == ("4 samples learned; latest version v2; this run wrote "
                                       "5 dead letters (duplicate 1, late 4)\n")


def test_a_join_shard_without_partitions_says_so(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    url = f"sqlite:///{tmp_path / 'log.db'}"
    assert main(["-q", "join", str(tmp_path / "p.py"), "--log", url, "--until-idle",
                 "--shard", "1/2"]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["shard 1/2 has no partitions of topics ratings (1 partition): it joins "
                        "nothing (a shard K/N takes partition numbers p with p % N == K)"]
    assert capsys.readouterr().out == "0 records read, 0 samples, 0 dead letters\n"


def test_a_join_shard_of_another_count_is_refused_until_resharded(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    url = f"sqlite:///{tmp_path / 'log.db'}"
    join = ["-q", "join", str(tmp_path / "p.py"), "--log", url, "--until-idle"]
    assert main([*join, "--shard", "0/2"]) == 0
    capsys.readouterr()
    assert main([*join, "--shard", "0/3"]) == 2
    assert capsys.readouterr().err.startswith(
        "livelearn: joiner shard 0/3: the shards of group 'joiner' of this log are 2 "
        "(--shard K/2), not 3: shards of two counts side by side would join some partitions "
        "twice and others not at all. Start it with --shard K/2; or, to change the count, "
        "stop every shard of 2 and start those of 3 with --reshard")
    assert main([*join, "--shard", "0/3", "--reshard"]) == 0
    assert main([*join, "--shard", "2/3"]) == 0


@pytest.mark.parametrize("action", [[], ["ls"], ["promote", "1"], ["rollback"]])
def test_models_without_a_registry_says_so_and_makes_none(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], action: list[str]) -> None:
    missing = tmp_path / "nonexist"
    assert main(["models", "--registry", str(missing), *action]) == 2
    assert capsys.readouterr().err == f"livelearn: no registry at {missing}\n"
    assert not missing.exists()
    missing.mkdir()  # a folder, but no registry in it
    assert main(["models", "--registry", str(missing), *action]) == 2
    assert list(missing.iterdir()) == []


def test_models_finds_a_pipelines_registry_in_its_work_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """DESIGN.md's `livelearn models PIPELINE ls / promote / rollback`: the registry run
    and replay keep in livelearn-NAME (or --workdir); only --registry DIR was taken."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    monkeypatch.chdir(tmp_path)
    registry = Registry(tmp_path / "livelearn-movies" / "registry")
    for _ in range(2):
        registry.publish(FTRL(bits=4), {"samples": 0}, None)
    assert main(["models", "p.py", "promote", "2"]) == 0
    assert capsys.readouterr().out == "v2 approved; servers swap it in\n"
    assert main(["models", "p.py"]) == 0 and "v2 approved: promoted by hand" in \
        capsys.readouterr().out
    assert main(["models", "--workdir", "elsewhere", "p.py", "ls"]) == 2
    assert capsys.readouterr().err == "livelearn: no registry at elsewhere/registry\n"
    for words, error in [([], "give PIPELINE (its registry is in its work folder) or "
                               "--registry DIR"),
                         (["p.py", "promote"], "promote takes a version number, got none"),
                         (["p.py", "promote", "v2"], "promote takes a version number, got v2"),
                         (["p.py", "rollback", "1"], "rollback takes nothing more, got 1"),
                         (["p.py", "drop"], "unknown action 'drop'; expected ls, promote "
                                            "VERSION or rollback")]:
        assert main(["models", *words]) == 2
        assert capsys.readouterr().err == f"livelearn: models: {error}\n"


def test_models_of_a_pipeline_refuses_another_pipelines_registry(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`models p.py --registry DIR promote 2` where DIR holds another pipeline's versions
    changed them; now it is refused as a trainer or server of p.py is, nothing changed or
    recorded (an unclaimed registry stays unclaimed)."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    monkeypatch.chdir(tmp_path)
    registry = Registry(tmp_path / "reg")
    registry.check_pipeline("clicks")
    for _ in range(2):
        registry.publish(FTRL(bits=4), {"samples": 0}, None)
    for action in [["ls"], ["promote", "2"], ["rollback"]]:
        assert main(["models", "p.py", "--registry", "reg", *action]) == 2
        assert capsys.readouterr().err == (
            f"livelearn: registry {str(Path('reg'))!r} holds the versions of pipeline "
            f"'clicks', not of 'movies': its models learned other features from another "
            f"log. Choose another --registry (or give the pipeline its old name back)\n")
    assert registry.statuses() == ["candidate", "candidate"]
    unclaimed = Registry(tmp_path / "unclaimed")
    unclaimed.publish(FTRL(bits=4), {"samples": 0}, None)
    assert main(["models", "p.py", "--registry", "unclaimed", "ls"]) == 0
    with sqlite3.connect(tmp_path / "unclaimed" / "index.db") as db:
        assert db.execute("SELECT * FROM pipeline").fetchall() == []


def test_models_promote_names_the_version_by_its_number(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`models promote 002` said "v002 approved", a version ls never lists."""
    registry = Registry(tmp_path)
    for _ in range(2):
        registry.publish(FTRL(bits=4), {"samples": 0}, None)
    assert main(["models", "--registry", str(tmp_path), "promote", "002"]) == 0
    assert capsys.readouterr().out == "v2 approved; servers swap it in\n"
    assert registry.incumbent() == registry.get(2)


def test_models_promote_of_a_version_beyond_any_says_it_is_not_there(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A version number beyond SQLite's integers was a traceback (OverflowError)."""
    Registry(tmp_path).publish(FTRL(bits=4), {"samples": 0}, None)
    big = "9" * 30
    assert main(["models", "--registry", str(tmp_path), "promote", big]) == 2
    assert capsys.readouterr().err == (f"livelearn: model version {big} is not in the "
                                       f"registry {tmp_path}\n")


def test_models_takes_its_words_on_either_side_of_its_options(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """README's `livelearn models PIPELINE [ls | promote VERSION | rollback]` with
    --registry or --workdir after PIPELINE: argparse took the words before the option
    only, and `models PIPELINE --registry DIR ls` failed with "unrecognized arguments:
    ls" (exit 2, nothing done)."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    monkeypatch.chdir(tmp_path)
    registry = Registry(tmp_path / "reg")
    for _ in range(3):
        registry.publish(FTRL(bits=4), {"samples": 0}, None)
    assert main(["models", "p.py", "--registry", "reg", "promote", "2"]) == 0
    assert capsys.readouterr().out == "v2 approved; servers swap it in\n"
    assert main(["models", "promote", "--registry", "reg", "3"]) == 0
    assert capsys.readouterr().out == "v3 approved; servers swap it in\n"
    assert main(["models", "p.py", "--registry", "reg", "rollback"]) == 2  # none served yet
    assert capsys.readouterr().err == ("livelearn: no serving version with a previous one to "
                                       "roll back to in reg\n")
    assert main(["models", "p.py", "--workdir", "elsewhere", "ls"]) == 2
    assert capsys.readouterr().err == "livelearn: no registry at elsewhere/registry\n"
    # the command itself, in the form that failed
    run = subprocess.run([sys.executable, "-m", "livelearn", "models", "p.py", "--registry",
                          "reg", "ls"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "v3 approved: promoted by hand" in run.stdout
    # what is not a word of models is still refused, as by any command
    with pytest.raises(SystemExit) as exit_:
        main(["models", "p.py", "--registry", "reg", "ls", "--force"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --force" in capsys.readouterr().err


def test_a_second_replay_into_the_same_log_is_refused(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Replayed again into the same log, every event would be late or a duplicate and the
    report not this history's: the command says so and changes nothing."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    events = _ratings(tmp_path / "r.jsonl", ["m1", "m2", "m3"])
    argv = ["-q", "replay", str(tmp_path / "p.py"), "--workdir", str(tmp_path / "w"),
            "--events", f"ratings={events}"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(argv) == 2
    said = capsys.readouterr().err
    assert "the log already holds 3 events of stream 'ratings'" in said
    assert f"to replay, delete the work folder (rm -r {tmp_path / 'w'}) or give another " \
           f"--workdir, and run the same command again. To learn from new events after a " \
           f"replay that finished, `livelearn ingest` them: `livelearn run` goes on from " \
           f"where it stopped" in said
    assert main([*argv, "--log", f"sqlite:///{tmp_path / 'w' / 'log.db'}"]) == 2
    assert "to replay, give another --log (a new SQLite file; for Kafka, another ?prefix=) " \
           "and another --workdir (where the registry is), and run the same command " \
           "again" in capsys.readouterr().err
    log = SQLiteLog(tmp_path / "w" / "log.db")
    assert log.end_offset("ratings", 0) == 3 and log.read("dead_letters", 0, 0, 10) == []


def test_a_file_given_twice_is_refused(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The same --events input twice was ingested twice, every event of the second time
    dead-lettered, and the report counted its events once: 3 events, 3 samples and 3
    dead letters. Now the command says so at once and makes no work folder."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    source = f"ratings={_ratings(tmp_path / 'r.jsonl', ['m1', 'm2', 'm3'])}"
    assert main(["-q", "replay", str(tmp_path / "p.py"), "--workdir", str(tmp_path / "w"),
                 "--events", source, source]) == 2
    assert capsys.readouterr().err == (f"livelearn: --events {source} given twice: each "
                                       f"file is replayed once\n")
    assert not (tmp_path / "w").exists()


def test_a_registry_of_another_log_is_refused(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A registry kept beside a new log: its trainer resumed from offsets this log does
    not reach and skipped every sample in silence ("3 events, 0 samples, 0 dead
    letters"). Now the command says so before it ingests anything."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    source = f"ratings={_ratings(tmp_path / 'r.jsonl', ['m1', 'm2', 'm3'])}"
    argv = ["-q", "replay", str(tmp_path / "p.py"), "--events", source,
            "--registry", str(tmp_path / "reg")]
    assert main([*argv, "--workdir", str(tmp_path / "w1")]) == 0
    capsys.readouterr()
    assert main([*argv, "--workdir", str(tmp_path / "w2")]) == 2
    assert re.match(f"livelearn: registry '{tmp_path / 'reg'}': v2 learned the samples of "
                    f"topic 'samples' with id [0-9a-f]{{32}}, this log's has id [0-9a-f]{{32}} "
                    f"\\(another log, or the topic made again\\): the registry is another "
                    f"log's", capsys.readouterr().err)
    assert SQLiteLog(tmp_path / "w2" / "log.db").end_offset("ratings", 0) == 0


def test_a_replay_after_another_streams_replay_into_the_same_log_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Only the streams given were checked: a replay of the ratings after one of the
    views they count (into the same log, whose joiner had read the views) dead-lettered
    every rating as late (3 events, 0 samples, 3 dead letters). Now it is refused."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE.replace(
        'spec.EventLabel(RATINGS, label="stars")',
        'spec.EventLabel(RATINGS, label="stars", counted=(spec.Stream("views", {"movie": str}, '
        'key="user"),)), counters=(spec.WindowCount("views", "views", 3_600_000),)'))
    _ratings(tmp_path / "r.jsonl", ["m1", "m2", "m3"])
    (tmp_path / "v.jsonl").write_bytes(b"".join(orjson.dumps(
        {"user": "u1", "movie": "m1", "ts": T + 60_000 * i}) + b"\n" for i in range(1, 4)))
    argv = ["-q", "replay", str(tmp_path / "p.py"), "--workdir", str(tmp_path / "w")]
    assert main([*argv, "--events", f"views={tmp_path / 'v.jsonl'}"]) == 0
    capsys.readouterr()
    assert main([*argv, "--events", f"ratings={tmp_path / 'r.jsonl'}"]) == 2
    assert capsys.readouterr().err.startswith(
        "livelearn: the log's joiner already read 3 events of stream(s) 'views' (an earlier "
        "replay or run): the events replayed now would be late.")
    assert SQLiteLog(tmp_path / "w" / "log.db").end_offset("ratings", 0) == 0


def test_shards_are_for_the_embedded_joiner(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    assert main(["join", str(tmp_path / "p.py"), "--log", "kafka://127.0.0.1:1",
                 "--engine", "flink", "--shard", "1/2"]) == 2
    assert "--shard is for the embedded joiner" in capsys.readouterr().err
    assert main(["join", str(tmp_path / "p.py"), "--log", "kafka://127.0.0.1:1",
                 "--engine", "flink", "--reshard"]) == 2
    assert "--reshard is for the embedded joiner" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["join", "run"])
def test_a_role_restarted_with_another_join_says_so_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    """`join` (or `run`) again after the pipeline's allowed lateness changed: the command
    says what changed and how to start over, and joins nothing."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    _ratings(tmp_path / "r.jsonl", ["m1", "m2", "m3"])
    url = f"sqlite:///{tmp_path / 'log.db'}"
    argv = ["-q", command, str(tmp_path / "p.py"), "--log", url, "--until-idle"]
    if command == "run":
        argv += ["--registry", str(tmp_path / "registry")]
    assert main(["-q", "ingest", str(tmp_path / "p.py"), "ratings", str(tmp_path / "r.jsonl"),
                 "--log", url]) == 0
    assert main(argv) == 0
    (tmp_path / "p.py").write_text(PIPELINE_FILE.replace('label="stars"',
                                                         'label="stars", allowed_lateness_ms=5000'))
    _ratings(tmp_path / "more.jsonl", ["m4"])
    assert main(["-q", "ingest", str(tmp_path / "p.py"), "ratings", str(tmp_path / "more.jsonl"),
                 "--log", url]) == 0
    capsys.readouterr()
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "livelearn: the joiner's checkpoint in group 'joiner' was made with allowed lateness "
        "0 ms; the pipeline now says 5000 ms. The samples would mix the two: put the old value "
        "back, or start over in a new log and registry (a new --workdir; with one process per "
        "role, a new --log and --registry) and ingest the events again\n")
    log = SQLiteLog(tmp_path / "log.db")
    assert log.end_offset("samples", 0) == 3
    # nor did it take the group over: a joiner still running would have gone on
    assert log._conn().execute("SELECT epoch FROM claims WHERE grp = 'joiner'").fetchall() \
        == [(1,)]


def test_models_says_when_a_registry_holds_no_version(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """It printed a table with headers and no row."""
    Registry(tmp_path / "reg")
    assert main(["models", "--registry", str(tmp_path / "reg")]) == 0
    assert capsys.readouterr().out == (f"registry {tmp_path / 'reg'} holds no version yet (a "
                                       f"trainer publishes its first when it starts)\n")


def test_models_ls_shows_each_versions_last_verdict_and_its_reason(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/own-data.md: `livelearn models ls` shows a canary's status and reason; it showed
    the status only, so why a version was rejected was in the dashboard and logs alone."""
    registry = Registry(tmp_path / "reg")
    for reason in ("no version approved yet", "canary: live auc 0.61 vs v1's 0.67"):
        version = registry.publish(FTRL(bits=4), {"metric": "auc"}, None)
        registry.set_status(version.id, "approved" if version.id == 1 else "rejected", reason)
    registry.publish(FTRL(bits=4), {"metric": "auc"}, 2)
    assert main(["models", "--registry", str(tmp_path / "reg")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2:] == ["v1 approved: no version approved yet",
                          "v2 rejected: canary: live auc 0.61 vs v1's 0.67"]  # v3: not judged


def test_models_ls_says_when_each_version_began_serving_in_iso_8601_utc(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`livelearn models ls` showed the event time a version began serving as epoch ms
    (1767571259326), which no one reads; it says 2026-01-05T00:00:59.326Z. /models keeps
    the ms."""
    registry = Registry(tmp_path / "reg")
    for since in (1_767_571_259_326, 1_767_571_260_000):
        version = registry.publish(FTRL(bits=4), {"metric": "auc"}, None)
        registry.set_status(version.id, "approved", "by hand")
        assert registry.mark_serving(version.id, since)
    registry.publish(FTRL(bits=4), {"metric": "auc"}, 2)  # never served
    assert main(["models", "--registry", str(tmp_path / "reg")]) == 0
    rows = {line.split()[1]: line for line in capsys.readouterr().out.splitlines()
            if line.split()[1:2] in (["1"], ["2"], ["3"])}
    assert "2026-01-05T00:00:59.326Z" in rows["1"] and "retired" in rows["1"]
    assert "2026-01-05T00:01:00.000Z" in rows["2"] and "serving" in rows["2"]
    assert "1767571" not in rows["1"] + rows["2"] and "Z" not in rows["3"]


def test_output_to_a_reader_gone_away_ends_quietly() -> None:
    """`livelearn flink-sql PIPELINE | head -1`: the rest of the output had nowhere to go,
    and Python printed a BrokenPipeError traceback."""
    run = subprocess.Popen([sys.executable, "-m", "livelearn", "flink-sql",
                            "livelearn.sim.pipeline:PIPELINE", "--max-message-bytes", "1048588"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert run.stdout is not None and run.stderr is not None
    run.stdout.close()  # the reader goes away before anything is written
    assert run.wait(timeout=60) == 141
    assert run.stderr.read() == b""
    run.stderr.close()


@pytest.mark.parametrize("tables", [["versions (name TEXT, size INTEGER)"],
                                    ["runs (id INTEGER)", "metrics (run INTEGER)"]])
def test_models_on_another_programs_index_db_says_so_and_leaves_it_alone(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], tables: list[str]) -> None:
    """A folder whose index.db was another program's: `livelearn models` added the registry's
    tables to it and switched it to WAL, then failed with a traceback (no such column)."""
    with sqlite3.connect(tmp_path / "index.db") as db:
        for table in tables:
            db.execute(f"CREATE TABLE {table}")
    schema = _schema(tmp_path / "index.db")
    for action in ([], ["promote", "1"], ["rollback"]):
        assert main(["models", "--registry", str(tmp_path), *action]) == 2
        names = ", ".join(sorted(t.partition(" ")[0] for t in tables))
        assert capsys.readouterr().err == (
            f"livelearn: registry {str(tmp_path)!r}: its index.db is not a livelearn "
            f"registry's (it holds tables {names}; a registry's table versions has columns "
            f"id, parent, status, created, meta, serving_since_ts, sha256): choose another "
            f"--registry folder\n")
    assert _schema(tmp_path / "index.db") == schema


def _schema(path: Path) -> list[object]:
    with sqlite3.connect(path) as db:
        return [*db.execute("SELECT sql FROM sqlite_master"), *db.execute("PRAGMA journal_mode")]


def test_replay_checks_every_input_before_it_ingests_any(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A second input of an unknown stream, or whose file is missing or a folder, was
    found only once the first was in the log, which a replay cannot go on from (a run
    again is refused): now the command says so at once and makes no work folder."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    events = _ratings(tmp_path / "r.jsonl", ["m1", "m2", "m3"])
    for second, said in ((f"nostream={events}", "livelearn: stream 'nostream': not a stream "
                          "of pipeline 'movies' (streams: ratings)"),
                         (f"ratings={tmp_path / 'missing.jsonl'}",
                          f"livelearn: {tmp_path / 'missing.jsonl'}: no such file"),
                         (f"ratings={tmp_path}", f"livelearn: {tmp_path}: a folder, not a "
                          f"file; give a JSON lines or CSV file")):
        assert main(["-q", "replay", str(tmp_path / "p.py"), "--workdir", str(tmp_path / "w"),
                     "--events", f"ratings={events}", second]) == 2
        assert capsys.readouterr().err == said + "\n"
        assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("role", [["join"], ["join", "--engine", "flink"],
                                  ["train", "--registry", "r"]])
def test_a_role_alone_on_the_in_memory_log_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], role: list[str]) -> None:
    """`livelearn join --log memory://` found an empty log of its own and waited on it
    forever (with --until-idle: "0 records read"), as a trainer did: nothing another
    process appends reaches it."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    argv = [role[0], str(tmp_path / "p.py"), "--log", "memory://", "--until-idle", *role[1:]]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (f"livelearn: --log memory://: the in-memory log is this process's own, so "
                   f"`livelearn {role[0]}` would find nothing there that another process "
                   f"appended; give the log the other roles use (sqlite:///PATH or "
                   f"kafka://HOST:PORT), or run every role in one process with `livelearn "
                   f"run`\n")


@pytest.mark.parametrize("argv", [
    ["serve", "p.py", "--log", "memory://", "--registry", "r", "--port", "65536"],
    ["serve", "p.py", "--log", "memory://", "--registry", "r", "--port", "-1"],
    ["run", "p.py", "--port", "99999"],
    ["replay", "p.py", "--events", "ratings=r.jsonl", "--then-live", "--port", "70000"],
    ["serve", "p.py", "--log", "memory://", "--registry", "r", "--poll", "-1"],
    ["serve", "p.py", "--log", "memory://", "--registry", "r", "--poll", "0"],
    ["demo", "--faults", "2"],
    ["demo", "--faults", "-0.1"],
])
def test_numbers_out_of_range_are_usage_errors(argv: list[str],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A port beyond 65535 was a traceback (OverflowError) from bind, after a whole replay;
    a --poll of 0 or less a server that polls without rest; --faults outside [0, 1] ran."""
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    assert f"argument {argv[-2]}: expected a" in capsys.readouterr().err


def test_a_host_not_of_this_machine_is_named_in_one_line() -> None:
    from livelearn.cli_data import bound_socket
    from livelearn.errors import ConfigError

    with pytest.raises(ConfigError, match=r"cannot serve on 999\.1\.1\.1:8000: .* \(is --host "
                                          r"an address of this machine\?\)"):
        bound_socket("999.1.1.1", 8000)


@pytest.mark.parametrize("url", ["redis://127.0.0.1:abc/0", "redis://127.0.0.1:99999/0"])
def test_a_store_url_with_a_bad_port_is_named_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str) -> None:
    """It was a ValueError traceback from urllib."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    assert main(["serve", str(tmp_path / "p.py"), "--log", "memory://", "--registry",
                 str(tmp_path / "r"), "--store", url]) == 2
    assert capsys.readouterr().err == (f"livelearn: store URL {url!r}: expected "
                                       f"redis://HOST:PORT/DB, PORT a number in [0, 65535]\n")


def test_ingest_into_a_log_of_its_own_makes_no_work_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With --log, `ingest` left an empty livelearn-NAME folder in the current one."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    _ratings(tmp_path / "r.jsonl", ["m1"])
    assert main(["-q", "ingest", "p.py", "ratings", "r.jsonl", "--log",
                 f"sqlite:///{tmp_path / 'elsewhere' / 'log.db'}"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "p.py", "r.jsonl"]


def test_models_with_a_misspelt_action_says_so(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Beside --registry, `rolback` was taken for a PIPELINE, left unused, and the versions
    listed with exit code 0, as if it had been done."""
    Registry(tmp_path / "reg")
    assert main(["models", "--registry", str(tmp_path / "reg"), "rolback"]) == 2
    assert capsys.readouterr().err.startswith(
        "livelearn: models: 'rolback' is neither an action (ls, promote VERSION, rollback) "
        "nor a PIPELINE (pipeline 'rolback': cannot import 'rolback'")


def test_port_0_serves_on_a_free_port_and_says_which(capsys: pytest.CaptureFixture[str]) -> None:
    """It said `serving on http://127.0.0.1:0`."""
    import threading

    from livelearn.cli_data import serve_http

    async def app(scope: dict, receive: object, send: object) -> None:  # never called
        raise AssertionError(scope)

    stop = threading.Event()
    threading.Timer(3.0, stop.set).start()  # the server is up well before
    serve_http(app, "127.0.0.1", 0, stop)
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("serving on http://127.0.0.1:") and not first.endswith(":0 (Ctrl-C "
                                                                                 "to stop)")
    assert int(first.split(":")[2].split()[0]) > 0


def test_replay_then_live_on_a_port_in_use_says_so_before_it_replays(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It replayed the whole history, then failed to serve; run again, the replay was
    refused (the log held the events)."""
    import socket

    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    events = _ratings(tmp_path / "r.jsonl", ["m1", "m2", "m3"])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["-q", "replay", str(tmp_path / "p.py"), "--workdir", str(tmp_path / "w"),
                     "--events", f"ratings={events}", "--then-live", "--port", str(port)]) == 2
    assert capsys.readouterr().err.startswith(f"livelearn: cannot serve on 127.0.0.1:{port}: ")
    assert not (tmp_path / "w").exists()


def test_serve_on_a_port_in_use_says_so_before_it_loads_anything(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It loaded the tables and counted the log first (minutes, on a large log)."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(tmp_path / "missing.py"), "--log", "memory://",
                     "--registry", str(tmp_path / "r"), "--port", str(port)]) == 2
    assert capsys.readouterr().err.startswith(f"livelearn: cannot serve on 127.0.0.1:{port}: ")
    assert not (tmp_path / "r").exists()


def test_a_replay_of_a_file_out_of_time_order_says_to_sort_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file newest first: every event but the first is late (the watermark follows the
    newest read). Before: counted among the dead letters, without a word of why."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    path = tmp_path / "r.jsonl"
    _ratings(path, ["m1", "m2", "m3", "m4"])
    path.write_bytes(b"".join(reversed(path.read_bytes().splitlines(keepends=True))))
    assert main(["-q", "replay", str(tmp_path / "p.py"), "--workdir", str(tmp_path / "w"),
                 "--events", f"ratings={path}"]) == 0
    out = capsys.readouterr().out
    assert "4 events, 1 samples, 3 dead letters (late 3)" in out
    assert ("3 events were late (older, by more than the allowed lateness of 0 ms, than one "
            "read before them): is a file not in time order? Sort it by its time field, or "
            "give the pipeline's allowed_lateness_ms the lateness its events come with\n"
            ) in out
    (tmp_path / "p2.py").write_text(PIPELINE_FILE)  # in order: nothing said
    assert main(["-q", "replay", str(tmp_path / "p2.py"), "--workdir", str(tmp_path / "w2"),
                 "--events", f"ratings={_ratings(tmp_path / 's.jsonl', ['m1', 'm2'])}"]) == 0
    assert "late" not in capsys.readouterr().out


def test_ctrl_c_while_the_command_starts_exits_130_without_a_traceback(tmp_path: Path
                                                                         ) -> None:
    """Building the parsers imports the roles' modules (a second or so after `livelearn`
    is typed): a Ctrl-C then printed a 30-line KeyboardInterrupt traceback, where a
    Ctrl-C a moment later exits quietly with 130."""
    code = ("import os, signal, sys\n"
            "import livelearn.cli as cli\n"
            "def interrupted(sub):  # Ctrl-C as the parsers import the roles\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "cli.add_study_parsers = interrupted\n"
            "sys.exit(cli.main(['run', 'p.py']))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (130, "", "")


def test_ctrl_c_while_the_command_is_imported_exits_130_without_a_traceback(
        tmp_path: Path) -> None:
    """The `livelearn` command's modules take a few tenths of a second to import, and a
    Ctrl-C then printed a KeyboardInterrupt traceback: the entry point imports them
    inside a ``try`` now."""
    code = ("import importlib.abc, os, signal, sys\n"
            "class Interrupt(importlib.abc.MetaPathFinder):  # Ctrl-C as cli imports\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name == 'livelearn.cli_data':\n"
            "            os.kill(os.getpid(), signal.SIGINT)\n"
            "sys.meta_path.insert(0, Interrupt())\n"
            "from livelearn.__main__ import main\n"
            "sys.exit(main())\n")
    done = subprocess.run([sys.executable, "-c", code, "run", "p.py"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (130, "", "")


@pytest.mark.parametrize("role", ["join", "train"])
def test_a_roles_help_says_it_refuses_the_in_memory_log(
        capsys: pytest.CaptureFixture[str], role: str) -> None:
    """`livelearn join --help` offered memory:// among the logs --log takes, which join and
    train refuse (the in-memory log is the process's own)."""
    with pytest.raises(SystemExit) as stopped:
        main([role, "--help"])
    assert stopped.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert ("memory:// (this process's own: join and train refuse it, as nothing another "
            "process appends reaches it)") in text


@pytest.mark.parametrize(("argv", "says"), [
    (["demo", "--help"], "--candidates CANDIDATES posts ranked per feed request, 1 to 1000 "
                         "(the most items /predict takes); every one is shown"),
    (["study", "freshness", "--help"], "--days DAYS simulated days, from 2026-01-05 (UTC) and "
                                       "ending before now,"),
])
def test_the_help_says_what_a_simulated_run_refuses(
        capsys: pytest.CaptureFixture[str], argv: list[str], says: str) -> None:
    """The demo refuses --candidates above what one /predict takes, the demo and the study
    --days whose feed would end after now; their --help did not say so (the study's)."""
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 0
    assert says in " ".join(capsys.readouterr().out.split())


def test_events_given_in_two_options_are_all_replayed(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """`--events A --events B`, as many commands take a repeated option, replayed B only and
    dropped A without a word: argparse kept the last option's list. Now both are replayed,
    as `--events A B` does."""
    (tmp_path / "p.py").write_text(PIPELINE_FILE)
    _ratings(tmp_path / "a.jsonl", ["m1"] * 30)
    (tmp_path / "b.jsonl").write_bytes(b"".join(
        orjson.dumps({"user": "u1", "movie": "m2", "stars": 3, "ts": T + 100_000 + i}) + b"\n"
        for i in range(20)))
    assert main(["-q", "replay", str(tmp_path / "p.py"), "--workdir", str(tmp_path / "w"),
                 "--events", f"ratings={tmp_path / 'a.jsonl'}",
                 "--events", f"ratings={tmp_path / 'b.jsonl'}"]) == 0
    out = capsys.readouterr().out
    assert "a.jsonl: 30 events appended" in out and "b.jsonl: 20 events appended" in out
    assert "\n50 events, 50 samples, " in out, out


def test_a_replays_auc_of_one_class_says_why_it_is_not_defined(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """AUC over labels of one class is no number: the summary, the JSON and the page say
    why, not a bare dash."""
    args = _tiny(tmp_path, _history(50, 3_600_000, positive=True))
    assert main(["-q", "replay", *args, "--workdir", str(tmp_path / "w"),
                 "--report-json", str(tmp_path / "r.json")]) == 0
    why = "AUC is not defined: every one of the 50 labels is positive (> 0.5), and it " \
          "needs both classes"
    assert f"50 events, 50 samples, 0 dead letters, auc - ({why})," in capsys.readouterr().out
    report = orjson.loads((tmp_path / "r.json").read_bytes())
    assert report["metric_value"] is None and report["metric_note"] == why
    assert why.replace(">", "&gt;") in (tmp_path / "w" / "replay.html").read_text()
    args = _tiny(tmp_path, _history(50, 3_600_000))  # both classes: no note on the page
    assert main(["-q", "replay", *args, "--workdir", str(tmp_path / "w2")]) == 0
    assert "metric_note" not in (tmp_path / "w2" / "replay.html").read_text()
