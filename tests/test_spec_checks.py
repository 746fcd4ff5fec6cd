"""A spec with a mistake fails when it is built, naming the stream, the field and the problem."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from livelearn import spec
from livelearn.cli import main
from livelearn.errors import ConfigError
from livelearn.features.batch import SparseBatch
from livelearn.join.labels import DEMO_LABELS, Agg, Labels
from livelearn.models import Learner, register
from livelearn.models.ftrl import FTRL
from livelearn.sim.pipeline import PIPELINE as NEWS

TX = spec.Stream("tx", {"card": str, "merchant": str, "amount": float, "fraud": bool},
                 key="card")
MERCHANTS = spec.Table("merchants", "merchants.csv", key="merchant_id")


def _features(event: Any, rows: Any, counts: Any) -> dict[str, Any]:
    return {}


def _pipeline(**changes: Any) -> spec.Pipeline:
    args: dict[str, Any] = dict(
        name="fraud", feedback=spec.EventLabel(TX, label="fraud"),
        lookups=(spec.Lookup(MERCHANTS, on="merchant"),),
        counters=(spec.WindowCount("tx_1h", "tx", 3_600_000),),
        features=_features, learner=lambda: FTRL(bits=10), target="fraud")
    return spec.Pipeline(**{**args, **changes})


def test_a_good_spec_builds() -> None:
    p = _pipeline()
    assert p.labelled == TX and p.inputs == ["tx"] and p.feedback.window_ms == 0
    assert NEWS.inputs == ["predictions", "click", "read"]


def test_a_publish_cadence_of_never_is_taken() -> None:
    """No time is added to publish_every_ms: 10**15 (or any larger int) says "publish by
    samples only", as the freshness study and tests say it. It was refused for a while as
    longer than any event time, and test_canary's pipeline with it."""
    for never in (10**15, 2**63, 10**30):
        pipeline = _pipeline(policies=spec.Policies(publish_every_ms=never))
        assert pipeline.policies.publish_every_ms == never


@pytest.mark.parametrize(("changes", "message"), [
    ({"feedback": spec.EventLabel(TX, label="is_fraud")},
     "stream 'tx', field 'is_fraud': the label reads it, but it is not in the schema"),
    ({"feedback": spec.EventLabel(TX, label="merchant"), "target": "merchant"},
     "stream 'tx', field 'merchant': the label must be int, float or bool, got str"),
    ({"target": "clicked"}, "target 'clicked' is not a label; stream 'tx' gives the label"),
    ({"lookups": (spec.Lookup(MERCHANTS, on="shop"),)},
     "stream 'tx', field 'shop': lookup of table 'merchants' reads it"),
    ({"lookups": (spec.Lookup(MERCHANTS, on="amount"),)},  # str(1.0) is no table's key
     "stream 'tx', field 'amount': the lookup of table 'merchants' reads it as a key, text "
     "or an integer, but it is float"),
    ({"counters": (spec.WindowCount("c", "clicks", 1000),)},
     "counter 'c': stream 'clicks' is not a stream of pipeline 'fraud'"),
    ({"counters": (spec.WindowCount("c", "tx", 1000, by="shop"),)},
     "stream 'tx', field 'shop': counter 'c' reads it"),
    ({"counters": (spec.WindowCount("c", "tx", 0),)},
     "counter 'c': window_ms must be an integer number of milliseconds >= 1, got 0"),
    # durations of another type: a TypeError naming no field, or (0.5, NaN) taken
    ({"counters": (spec.WindowCount("c", "tx", "3600000"),)},  # type: ignore[arg-type]
     "counter 'c': window_ms must be an integer number of milliseconds >= 1, got '3600000'"),
    ({"feedback": spec.EventLabel(TX, label="fraud", dedup_ms=float("nan"))},
     "stream 'tx': dedup_ms must be an integer number of milliseconds >= 0, got nan"),
    ({"feedback": spec.EventLabel(TX, label="fraud", allowed_lateness_ms=None)},  # type: ignore[arg-type]
     "pipeline 'fraud': allowed_lateness_ms must be an integer number of milliseconds >= 0, "
     "got None"),
    ({"feedback": spec.EventLabel(TX, label="fraud", allowed_lateness_ms=0.5)},  # type: ignore[arg-type]
     "pipeline 'fraud': allowed_lateness_ms must be an integer number of milliseconds >= 0, "
     "got 0.5"),
    # longer than any event time: the joiner stopped with a traceback (a time plus the
    # duration beyond 64 bits in its checkpoint)
    ({"counters": (spec.WindowCount("c", "tx", 10**30),)},
     "counter 'c': window_ms 1000000000000000000000000000000 ms is longer than any event "
     "time"),
    ({"feedback": spec.EventLabel(TX, label="fraud", allowed_lateness_ms=10**30)},
     "pipeline 'fraud': allowed_lateness_ms 1000000000000000000000000000000 ms is longer"),
    ({"feedback": spec.EventLabel(TX, label="fraud", dedup_ms=2**64)},
     "stream 'tx': dedup_ms 18446744073709551616 ms is longer than any event time"),
    ({"learner": None}, "pipeline 'fraud': learner must be a function"),
    # 1.5 made a log of 1 partition, then failed saying "the pipeline says 1.5"; "2" was
    # a TypeError naming no field
    ({"partitions": 1.5}, "pipeline 'fraud': partitions must be an integer >= 1, got 1.5"),
    ({"partitions": "2"}, "pipeline 'fraud': partitions must be an integer >= 1, got '2'"),
    ({"partitions": 0}, "pipeline 'fraud': partitions must be an integer >= 1, got 0"),
    ({"policies": spec.Policies(keep_versions=0)},
     "pipeline 'fraud', policies: keep_versions must be an integer >= 1, got 0"),
    ({"policies": spec.Policies(publish_every_samples=2.5)},  # type: ignore[arg-type]
     "policies: publish_every_samples must be an integer >= 1, got 2.5"),
    ({"policies": spec.Policies(gate_tolerance=-0.1)},
     "policies: gate_tolerance must be a number >= 0, got -0.1"),
    # the gate rejected every candidate after the first: the window never held enough
    ({"policies": spec.Policies(gate_window=150)},
     "pipeline 'fraud', policies: gate_window must be at least 200, the samples the gate "
     "needs to judge a candidate, got 150"),
    ({"users": MERCHANTS, "items": MERCHANTS},  # its server would call features(event, ...)
     "pipeline 'fraud': users and items are a feedback join's tables"),
])
def test_mistakes_are_named(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        _pipeline(**changes)


def _two(event: Any, rows: Any) -> dict[str, Any]:
    return {}


def _four(user: Any, item: Any, ts: Any, counts: Any) -> dict[str, Any]:
    return {}


def _with_default(user: Any, item: Any, ts: Any, counts: Any = None) -> dict[str, Any]:
    return {}


@pytest.mark.parametrize(("pipeline", "message"), [
    (lambda: _pipeline(features=_two),
     "pipeline 'fraud': the joiner and the server call features(event, rows, counts), but "
     "features takes (event, rows)"),
    (lambda: replace(NEWS, features=_four),
     "pipeline 'news_feed': without counters the server calls features(user_row, item_row, "
     "ts), but features takes (user, item, ts, counts)"),
    (lambda: replace(NEWS, features=lambda user, item: {}),
     "pipeline 'news_feed': without counters the server calls features(user_row, item_row, "
     "ts), but features takes (user, item)"),
    (lambda: _pipeline(feedback=spec.EventLabel(TX, label=lambda e, x: {"fraud": 1.0}),
                       target="fraud"),
     "stream 'tx': the joiner calls label(event), but label takes (e, x)"),
    (lambda: replace(NEWS, feedback=replace(NEWS.feedback, label=lambda events, p: {})),
     "pipeline 'news_feed': the joiner calls label(events) with a window's events, but "
     "label takes (events, p)"),
    (lambda: replace(NEWS, feedback=replace(NEWS.feedback, label="clicked")),
     "pipeline 'news_feed': label must be a function of a window's events giving named "
     "labels (or join.labels.Labels), got 'clicked'"),
])
def test_a_function_the_roles_cannot_call_is_refused(pipeline: Any, message: str) -> None:
    """Before, each of these loaded, and every event or impression was dead-lettered
    'failed' with a TypeError (a replay exited 0 having learned nothing), or /predict
    answered 500 to every request."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        pipeline()


def test_functions_the_roles_can_call_are_taken() -> None:
    replace(NEWS, features=_with_default)  # counts=None: called with three, it is taken
    _pipeline(features=lambda *args: {})
    _pipeline(feedback=spec.EventLabel(TX, label=lambda e, x=1: {"fraud": 1.0}))


COUNTER = spec.WindowCount("tx_1h", "tx", 3_600_000)


@pytest.mark.parametrize(("pipeline", "message"), [
    # a tuple of one without its comma is the one element: "'WindowCount' object is not
    # iterable", naming no field
    (lambda: _pipeline(counters=(COUNTER)),
     "pipeline 'fraud': counters must be a tuple of spec.WindowCount, got one WindowCount: "
     "a tuple of one is written with a comma, (x,)"),
    (lambda: _pipeline(lookups=(spec.Lookup(MERCHANTS, on="merchant"))),
     "pipeline 'fraud': lookups must be a tuple of spec.Lookup, got one Lookup"),
    (lambda: replace(NEWS, feedback=replace(NEWS.feedback, streams=NEWS.feedback.streams[0])),
     "pipeline 'news_feed': the FeedbackJoin's streams must be a tuple of spec.Stream, got "
     "one Stream"),
    (lambda: _pipeline(feedback=spec.EventLabel(TX, label="fraud", counted=TX)),
     "pipeline 'fraud': the EventLabel's counted must be a tuple of spec.Stream, got one "
     "Stream"),
    (lambda: _pipeline(counters=[COUNTER, "tx_1d"]),
     "pipeline 'fraud': counters must be a tuple of spec.WindowCount, got 'tx_1d' (str) "
     "among them"),
    # "'str' object has no attribute 'name'"
    (lambda: _pipeline(feedback=spec.EventLabel("tx", label="fraud")),  # type: ignore[arg-type]
     "pipeline 'fraud': the EventLabel's stream must be a spec.Stream, got 'tx' (str)"),
    (lambda: _pipeline(lookups=(spec.Lookup("merchants"),)),  # type: ignore[arg-type]
     "pipeline 'fraud': the table of a Lookup must be a spec.Table, got 'merchants' (str)"),
    (lambda: _pipeline(policies={"gate_window": 500}),
     "pipeline 'fraud': policies must be a spec.Policies, got {'gate_window': 500} (dict)"),
    (lambda: _pipeline(feedback=TX),
     "pipeline 'fraud': feedback must be a spec.FeedbackJoin or a spec.EventLabel, got "
     "Stream"),
    (lambda: replace(NEWS, users="users.csv"),
     "pipeline 'news_feed': users must be a spec.Table, got 'users.csv' (str)"),
    (lambda: _pipeline(counters=(spec.WindowCount("tx_1h", TX, 3_600_000),)),  # type: ignore[arg-type]
     "counter 'tx_1h': stream must be a stream's name (text), got the Stream 'tx': give 'tx'"),
    # the trainer dead-lettered every sample: "it has no label 'None'"
    (lambda: replace(NEWS, target=None),
     "pipeline 'news_feed': target must be the name of a label (text), got None"),
    (lambda: spec.Stream("tx", ["card", "amount"]),  # type: ignore[arg-type]
     "stream 'tx': schema must be a dict of field names to types ({'amount': float}), got "
     "['card', 'amount'] (list)"),
])
def test_a_part_of_the_wrong_type_is_named(pipeline: Any, message: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        pipeline()


def test_a_feedback_join_whose_users_and_items_share_a_name_is_refused() -> None:
    """The server keeps a table by its name in the online store: with both named "users"
    the items' load replaced the users' rows, and every user was served as a cold start
    (an empty row) where ingested impressions, reading each file, saw the user's row."""
    with pytest.raises(ConfigError, match=re.escape(
            "pipeline 'news_feed': the users and items tables are both named 'users' (the "
            "server keeps each table under its name in the online store); give each its "
            "own")):
        replace(NEWS, items=spec.Table("users", "posts.csv", key="post_id"))


def test_a_feedback_join_without_feedback_streams_is_refused() -> None:
    """Before, it loaded, and every prediction was labelled from no events (not clicked):
    the trainer learned a model of one class, silently."""
    with pytest.raises(ConfigError, match=re.escape(
            "pipeline 'news_feed': the FeedbackJoin has no streams: each prediction is "
            "labelled from the events of its streams that answer it (clicks), so it needs "
            "one at least")):
        replace(NEWS, feedback=replace(NEWS.feedback, streams=()), counters=())


@pytest.mark.parametrize("name", ["fraud/v2", "", "card fraud", "..", "betrug_ü", 7])
def test_a_pipeline_name_that_names_no_folder_is_refused(name: Any) -> None:
    """Before, each loaded: "fraud/v2" made its default work folder livelearn-fraud/v2, a
    folder in another, "" livelearn-, and 7 was taken as a name."""
    with pytest.raises(ConfigError, match="^" + re.escape(
            f"pipeline {name!r}: a name is letters a-z and A-Z, digits, _, - and . (not . nor "
            f"..): it names the work folder, livelearn-NAME, and the registry's pipeline")):
        _pipeline(name=name)


@pytest.mark.parametrize("name", ["käufe", "..", ".", "tx 1", ""])
def test_a_stream_name_no_kafka_topic_can_have_is_refused(name: str) -> None:
    """Before, "käufe" (str.isalnum takes any script's letters) and "." loaded and ran
    embedded, and the same pipeline on Kafka stopped at its first command: "topic 'käufe':
    Kafka allows letters, digits, '.', '_', '-'"."""
    with pytest.raises(ConfigError, match="^" + re.escape(
            f"stream {name!r}: a name is letters a-z and A-Z, digits, _, - and . (not . nor "
            f"..), as a Kafka topic's")):
        spec.Stream(name, {"amount": float}, key="card")


def test_stream_and_table_mistakes() -> None:
    with pytest.raises(ConfigError, match="stream 'tx', field 'amount': type must be one of"):
        spec.Stream("tx", {"amount": "float"})  # type: ignore[dict-item]
    # a flat record's ts and id leave its payload, and a payload object makes an envelope:
    # each of these loaded, then every record was dead-lettered with a wrong reason
    with pytest.raises(ConfigError, match="stream 'tx', field 'ts': the event's time \\(ts\\), "
                                          "not a payload field; leave it out of the schema"):
        spec.Stream("tx", {"ts": int, "amount": float}, key="card")
    with pytest.raises(ConfigError, match="stream 'tx', field 'tx_id': the event's id"):
        spec.Stream("tx", {"tx_id": str}, key="card", id="tx_id")
    with pytest.raises(ConfigError, match="stream 'tx': key and id name the same field 'card'"):
        spec.Stream("tx", {"amount": float}, key="card", id="card")
    # accepted: the key was the time's text, or two events of the same ms one id
    with pytest.raises(ConfigError, match="stream 'tx': key and ts name the same field 'ts'; "
                                          "ts is the event's time, the key another field"):
        spec.Stream("tx", {"amount": float}, key="ts")
    with pytest.raises(ConfigError, match="stream 'tx': id and ts name the same field 'at'"):
        spec.Stream("tx", {"amount": float}, key="card", ts="at", id="at")
    with pytest.raises(ConfigError, match="stream 'tx', field 'payload': an object named so "
                                          "makes a record an envelope"):
        spec.Stream("tx", {"payload": dict}, key="card")
    spec.Stream("tx", {"payload": str}, key="card")  # text is no envelope's payload
    with pytest.raises(ConfigError, match="table 'users': users.xlsx is not one of"):
        spec.Table("users", "users.xlsx", key="id")
    with pytest.raises(ConfigError, match=r"table 'cards': data/c\[a\]rds\*.csv holds \* and \[, "
                                          r"which DuckDB reads as a pattern of file names"):
        spec.Table("cards", "data/c[a]rds*.csv", key="id")  # it read data/cards.csv
    for name in ("", "livelearn:loaded"):  # the server's own table in the online store
        with pytest.raises(ConfigError, match=f"table {name!r}: expected a name, not empty "
                                              f"nor starting with 'livelearn:'"):
            spec.Table(name, "users.csv", key="id")
    with pytest.raises(ConfigError, match="needs users and items tables"):
        replace(NEWS, users=None)
    # declared labels that do not name the target: the trainer dead-lettered every sample
    labels = Labels(Agg("click", "any", "click"), Agg("dwell_s", "sum", "read", "seconds"))
    with pytest.raises(ConfigError, match="pipeline 'news_feed': target 'clicked' is not a "
                                          "label; the labels declared are click, dwell_s"):
        replace(NEWS, feedback=replace(NEWS.feedback, label=labels))
    replace(NEWS, feedback=replace(NEWS.feedback, label=DEMO_LABELS))
    for window in (-1, 300.0, "5m"):  # a feedback join's window, in ms
        with pytest.raises(ConfigError, match=f"pipeline 'news_feed': window_ms must be an "
                                              f"integer number of milliseconds >= 0, got "
                                              f"{re.escape(repr(window))}"):
            replace(NEWS, feedback=replace(NEWS.feedback, window_ms=window))


def test_the_cli_names_the_mistake(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from livelearn import spec\n"
                   "from livelearn.models.ftrl import FTRL\n"
                   "S = spec.Stream('tx', {'amount': float}, key='card')\n"
                   "PIPELINE = spec.Pipeline(name='p', feedback=spec.EventLabel(S, 'fraud'),\n"
                   "    features=lambda e, r, c: {}, learner=FTRL, target='fraud')\n")
    assert main(["replay", str(bad), "--events", "tx=x.jsonl", "--workdir",
                 str(tmp_path / "w")]) == 2
    assert "stream 'tx', field 'fraud': the label reads it, but it is not in the schema" \
        in capsys.readouterr().err
    assert main(["replay", str(bad), "--events", "tx"]) == 2
    assert "--events 'tx': expected STREAM=FILE" in capsys.readouterr().err


@pytest.mark.parametrize(("code", "message"), [
    ("PIPELINE = (\n", "SyntaxError at line 1: '(' was never closed"),
    ("import json\nimport no_such_module_xyz\n",
     "cannot import 'no_such_module_xyz' at line 2: No module named 'no_such_module_xyz'"),
    ("import json\n\ndef build():\n    return json.loads('{')\n\nPIPELINE = build()\n",
     "JSONDecodeError at line 4: Expecting property name"),
    ("def PIPELINE():\n    raise KeyError('k')\n", "KeyError at line 2: 'k'"),
])
def test_a_pipeline_file_that_does_not_run_names_its_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], code: str, message: str) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(code)
    with pytest.raises(ConfigError, match="^" + re.escape(f"pipeline '{bad}': {message}")):
        spec.load_pipeline(str(bad))
    for command in (["ingest", str(bad), "tx", "x.jsonl", "--workdir", str(tmp_path / "w")],
                    ["train", str(bad), "--log", f"sqlite:///{tmp_path}/log.db",
                     "--registry", str(tmp_path / "r")]):
        assert main(command) == 2
        assert f"livelearn: pipeline '{bad}': {message}" in capsys.readouterr().err


@pytest.mark.parametrize(("code", "ref", "message"), [
    ("X = 1\n", "p.py", "p.py defines no PIPELINE"),
    ("from livelearn.sim.pipeline import PIPELINE as NEWS\n", "p.py",
     "p.py defines no PIPELINE; it defines NEWS: give p.py:NEWS"),
    ("PIPELINE = 5\n", "p.py", "PIPELINE is 5 (int), not a livelearn Pipeline"),
    ("PIPELINE = 5\n", "p.py:P", "p.py defines no P"),
])
def test_a_pipeline_file_without_its_pipeline_says_what_it_lacks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        code: str, ref: str, message: str) -> None:
    """Before, a file without PIPELINE (a misspelled name) was said to hold one that
    "is not a livelearn Pipeline"."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.py").write_text(code)
    assert main(["models", ref, "ls"]) == 2
    assert capsys.readouterr().err == f"livelearn: pipeline {ref!r}: {message}\n"


@pytest.mark.parametrize(("ref", "message"), [
    ("ex/fraud", "ex/fraud is a folder; give the pipeline's Python file (.py)"),
    ("ex/fraud/", "ex/fraud is a folder; give the pipeline's Python file (.py)"),
    ("ex/fraud/pipeline", "no such file ex/fraud/pipeline"),
])
def test_a_path_that_is_no_pipeline_file_is_named_as_a_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        ref: str, message: str) -> None:
    """Before, a folder or a path without .py was imported as a module: "cannot import
    'ex/fraud': No module named 'ex/fraud'"."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ex" / "fraud").mkdir(parents=True)
    (tmp_path / "ex" / "fraud" / "pipeline.py").write_text("PIPELINE = 5\n")
    assert main(["replay", ref, "--events", "tx=x.jsonl"]) == 2
    assert capsys.readouterr().err == f"livelearn: pipeline {ref!r}: {message}\n"


def test_a_module_that_does_not_import_is_named(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_spec_mod.py").write_text("x = 1\ndef f(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=re.escape(
            f"pipeline 'broken_spec_mod:P': SyntaxError at {tmp_path}/broken_spec_mod.py:2: "
            f"invalid syntax")):
        spec.load_pipeline("broken_spec_mod:P")
    with pytest.raises(ConfigError, match="^pipeline 'no_such_mod_xyz': cannot import "
                                          "'no_such_mod_xyz': No module named"):
        spec.load_pipeline("no_such_mod_xyz")


def _no_learner() -> Any:
    raise RuntimeError("no GPU")


class _Constant(Learner):
    """A learner of one's own: scores 0.5, learns nothing."""

    name = "test_constant"

    def predict(self, batch: SparseBatch) -> np.ndarray:
        return np.full(len(batch), 0.5)

    def predict_then_learn(self, batch: SparseBatch, y: np.ndarray) -> np.ndarray:
        return self.predict(batch)

    def state(self) -> dict[str, np.ndarray]:
        return {}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        pass


class _Hashed(_Constant):
    name = "test_hashed"
    bits = 10


class _Subclass(FTRL):
    """An FTRL of one's own, under FTRL's name: its versions would load as plain FTRL."""


@pytest.mark.parametrize(("learner", "message"), [
    (_Constant, "learner() returned a _Constant without an integer attribute 'bits' "
                "(got None): its rows are hashed into 2**bits buckets"),
    (_Hashed, "learner() returned a _Hashed, but no learner class is registered as "
              "'test_hashed': decorate _Hashed with @livelearn.models.register"),
    (_Subclass, "learner() returned a _Subclass, but 'ftrl' is registered as FTRL: give "
                "_Subclass a name of its own and decorate it with @livelearn.models.register"),
    (_no_learner, f"learner() raised RuntimeError at {__file__}:"),
    (lambda: None, "learner() returned None; expected a Learner (an object with "
                   "predict_then_learn"),
    (lambda: 5, "learner() returned 5 (int); expected a Learner"),
])
def test_a_learner_factory_that_fails_is_named(learner: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"pipeline 'fraud': {message}")):
        spec.new_learner(_pipeline(learner=learner))


def test_the_cli_names_a_learner_factory_that_fails(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from test_ingest import PIPELINE_FILE

    bad = tmp_path / "p.py"
    bad.write_text(PIPELINE_FILE.replace("learner=lambda: LinearRegression(bits=10)",
                                         "learner=lambda: None"))
    (tmp_path / "r.jsonl").write_text('{"user": "u1", "movie": "m1", "stars": 4, '
                                      '"ts": 1704067200000}\n')
    log = f"sqlite:///{tmp_path}/w/log.db"
    for command in (["run", str(bad), "--workdir", str(tmp_path / "w"), "--until-idle"],
                    ["train", str(bad), "--log", log, "--registry", str(tmp_path / "r")],
                    ["replay", str(bad), "--events", f"ratings={tmp_path}/r.jsonl", "--workdir",
                     str(tmp_path / "w")]):
        assert main(["-q", *command]) == 2
        assert "livelearn: pipeline 'movies': learner() returned None; expected a Learner" \
            in capsys.readouterr().err


def test_a_registered_learner_of_ones_own_is_taken() -> None:
    @register
    class Mine(_Hashed):
        name = "test_mine"

    assert isinstance(spec.new_learner(_pipeline(learner=Mine)), Mine)


def test_a_learner_name_taken_by_another_class_is_refused() -> None:
    with pytest.raises(ConfigError, match=re.escape(
            "learner name 'ftrl' is taken by livelearn.models.ftrl.FTRL: give "
            "_Subclass a name of its own")):
        register(_Subclass)


def test_the_cli_names_a_learner_it_could_not_load_back(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: a replay over a real SQLite log published versions that no role could load
    back ('unknown learner' at the gate's next judgement, a server, a restarted trainer);
    now it stops before learning."""
    from test_ingest import PIPELINE_FILE

    mine = tmp_path / "p.py"
    mine.write_text(PIPELINE_FILE.replace("learner=lambda: LinearRegression(bits=10)",
                                          "learner=lambda: Mine(bits=10)")
                    .replace("RATINGS = ", _MINE + "RATINGS = "))
    (tmp_path / "r.jsonl").write_text('{"user": "u1", "movie": "m1", "stars": 4, '
                                      '"ts": 1704067200000}\n')
    assert main(["-q", "replay", str(mine), "--events", f"ratings={tmp_path}/r.jsonl",
                 "--workdir", str(tmp_path / "w")]) == 2
    assert ("livelearn: pipeline 'movies': learner() returned a Mine, but no learner class "
            "is registered as 'mine'") in capsys.readouterr().err


_MINE = """
class Mine(LinearRegression):
    name = "mine"
"""
