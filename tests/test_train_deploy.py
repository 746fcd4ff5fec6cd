"""Trainer (prequential, publishing, resuming), Registry (status, lineage) and Gate."""

from __future__ import annotations

import logging
import re
import resource
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import orjson
import pytest

from livelearn.cli import main
from livelearn.deploy.gate import Gate
from livelearn.errors import BadInput, ConfigError, Corrupt, NotFound, PipelineError
from livelearn.features.batch import SparseBatch
from livelearn.features.hashing import hash_rows
from livelearn.log import open_log, partition_for
from livelearn.log.base import Checkpoint
from livelearn.log.sqlite import SQLiteLog
from livelearn.models import FTRL, LinearRegression, load_learner, register, save_learner
from livelearn.models.base import Learner
from livelearn.models.ffm import FFMClassifier
from livelearn.models.fm import FMClassifier
from livelearn.registry import Registry, Version
from livelearn.serve.app import create_app
from livelearn.sim.history import write_tables
from livelearn.sim.pipeline import PIPELINE
from livelearn.sim.world import NewsFeed
from livelearn.spec import DEAD_LETTERS, SAMPLES, Policies
from livelearn.train import trainer as trainer_module
from livelearn.train.dedup import RecentIds
from livelearn.train.metrics import auc
from livelearn.train.rebuild import Marks, read_back
from livelearn.train.trainer import Trainer, _dedup_horizon, _sample_key

T0 = 1_767_571_200_000
SMALL = replace(PIPELINE, policies=Policies(publish_every_samples=1000,
                                            publish_every_ms=10**12, gate_window=1000,
                                            gate_tolerance=0.01))


def _samples(log: SQLiteLog, n: int, seed: int = 0, flip: bool = False) -> None:
    """Samples whose click depends on the topic; ``flip`` reverses the dependence."""
    log.create_topic(SAMPLES)
    rng = np.random.default_rng(seed)
    start = log.end_offset(SAMPLES, 0)
    records = []
    for i in range(n):
        topic = f"t{rng.integers(5)}"
        p = (0.1 + 0.2 * int(topic[1])) if not flip else (0.9 - 0.2 * int(topic[1]))
        records.append((f"r{start + i}", orjson.dumps({
            "id": f"r{start + i}", "ts": T0 + (start + i) * 1000,
            "window_end": T0 + (start + i) * 1000 + 600_000,
            "score": 0.5, "features": {"topic": topic},
            "labels": {"clicked": float(rng.random() < p)}})))
    log.append(SAMPLES, records)


def test_trainer_scores_before_learning_and_publishes_with_lineage(tmp_path: Path,
                                                                  log: SQLiteLog) -> None:
    _samples(log, 2500)
    registry = Registry(tmp_path / "reg")
    trainer = Trainer(log, registry, SMALL)
    trained = trainer.step(10_000, final=True)
    assert trained is not None and len(trained.samples) == 2500
    assert trained.scores[0] == 0.5  # the first sample is scored by an untrained model
    assert [v.meta["samples"] for v in registry.versions()] == [0, 1000, 2000]
    assert [v.parent for v in registry.versions()] == [None, 1, 2]
    v3 = registry.get(3)
    assert v3.meta["offsets"] == [[SAMPLES, 0, 2000]]
    assert v3.meta["prequential"] == pytest.approx(auc(trained.scores[:2000],
                                                       trained.labels[:2000]), abs=1e-3)
    assert trainer.step(final=True) is None


def test_a_restarted_trainer_ends_in_the_same_state(tmp_path: Path, log: SQLiteLog) -> None:
    _samples(log, 3500)
    whole = Trainer(log, Registry(tmp_path / "a"), SMALL)
    whole.step(10_000, final=True)
    first = Trainer(log, Registry(tmp_path / "b"), SMALL)
    first.step(1500, final=True)  # then "crashes": what it learned after v2 is lost
    again = Trainer(log, Registry(tmp_path / "b"), SMALL)
    assert again.samples == 1000
    while again.step(700, final=True):
        pass
    assert np.array_equal(again.model.state()["z"], whole.model.state()["z"])
    assert np.array_equal(again.model.state()["n"], whole.model.state()["n"])


#: a window that reaches back past the version before (as the defaults' 5,000 and 5,000 can)
WIDE = replace(SMALL, policies=replace(SMALL.policies, gate_window=1500))


def _published(registry: Registry) -> list[tuple[object, ...]]:
    """What each version says of its metrics, and the window the gate reads."""
    return [(v.meta["samples"], v.meta["event_ts"], v.meta["prequential"], v.meta["window"],
             registry.details(v.id)["window"]) for v in registry.versions()]


def _judged(log: SQLiteLog, registry: Registry) -> list[tuple[int, str, str]]:
    """The gate's verdicts on every version, judged in turn."""
    Gate.of(log, registry, WIDE).step()
    return [(d["version"], d["status"], d["reason"]) for d in registry.decisions()]


@pytest.mark.parametrize("first_step", [1500, 2001, 2300, 3500])
def test_a_restarted_trainer_publishes_the_metrics_of_one_never_stopped(
        tmp_path: Path, log: SQLiteLog, first_step: int) -> None:
    """Stopped between versions (1,500, 2,300 and 3,500 samples: what it learned after the
    last version is lost) or right after one (2,001 read, 2,000 learned: v3; the last one
    read is held back to see that none ties with it), it resumes with the overall metric and
    the window that version recorded: every version after says what the uninterrupted run's
    says, and the gate decides the same. Before, the first version after the restart covered
    only the samples since, and the gate judged v5 (v4 rejected) on 1,000 samples, not 1,500."""
    _samples(log, 4200)
    whole = Trainer(log, Registry(tmp_path / "a"), WIDE)
    while whole.step(700, final=True):
        pass
    whole.publish_now()
    Trainer(log, Registry(tmp_path / "b"), WIDE).step(first_step, final=True)  # then stops
    again = Trainer(log, Registry(tmp_path / "b"), WIDE)
    assert again.samples == (first_step - 1) // 1000 * 1000
    while again.step(700, final=True):
        pass
    again.publish_now()
    assert [v[0] for v in _published(whole.registry)] == [0, 1000, 2000, 3000, 4000, 4200]
    assert _published(again.registry) == _published(whole.registry)
    assert again.metric.count == again.window.count == again.samples == 4200
    assert again.metric.get() == whole.metric.get()
    final = _published(again.registry)[-1]
    assert final[3]["samples"] == 1500
    assert final[3]["metric"] == auc(final[4]["scores"][f"{SAMPLES}/0"],
                                     final[4]["labels"][f"{SAMPLES}/0"])
    assert _judged(log, again.registry) == _judged(log, whole.registry)


def test_a_trainer_stopped_at_any_point_publishes_the_same_metrics(tmp_path: Path,
                                                                  log: SQLiteLog) -> None:
    """Each trainer learns one step of a random size, then stops; the next resumes."""
    _samples(log, 6000)
    whole = Trainer(log, Registry(tmp_path / "a"), WIDE)
    while whole.step(5000, final=True):
        pass
    rng = np.random.default_rng(4)
    while (trainer := Trainer(log, Registry(tmp_path / "b"), WIDE)).step(
            int(rng.integers(1, 1800)), final=True):
        pass
    assert _published(trainer.registry) == _published(whole.registry)
    assert trainer.metric.get() == whole.metric.get()
    assert _judged(log, trainer.registry) == _judged(log, whole.registry)


def test_a_version_without_the_metrics_state_resumes_with_them_from_zero(
        tmp_path: Path, log: SQLiteLog, caplog: pytest.LogCaptureFixture) -> None:
    """A version published before versions held their metrics' state: the trainer resumes
    from it, says that its metrics restart from zero, and they cover the samples since."""
    _samples(log, 2500)
    registry = Registry(tmp_path / "reg")
    trainer = Trainer(log, registry, WIDE)
    trainer.step(1500, final=True)
    old = Registry(tmp_path / "old")
    for v in registry.versions():
        details = registry.details(v.id)
        window = {k: details["window"][k] for k in ("offsets", "scores")}
        old.publish(registry.load(v.id), v.meta, v.parent,
                    {"learned_ids": _listed_ids(log, registry, v.id), "window": window})
    with caplog.at_level(logging.WARNING, logger="livelearn.train"):
        resumed = Trainer(log, old, WIDE)
    (said,) = [r.getMessage() for r in caplog.records]
    assert said == ("v2 records no metric state (published by an earlier livelearn): the "
                    "prequential and window auc of the versions this trainer publishes "
                    "restart from zero, over the samples learned from now on")
    assert resumed.samples == 1000 and resumed.metric.count == 0
    trained = resumed.step(10_000, final=True)
    assert trained is not None
    v3 = old.get(3)
    assert v3.meta["samples"] == 2000 and v3.meta["window"]["samples"] == 1000
    assert v3.meta["prequential"] == pytest.approx(auc(trained.scores[:1000],
                                                       trained.labels[:1000]), abs=1e-3)
    resumed_again = Trainer(log, old, WIDE)  # from v3, which holds them
    assert resumed_again.metric.count == 1000 and len(resumed_again._recent) == 1000


def _listed_ids(log: SQLiteLog, registry: Registry, version: int) -> list[list[object]]:
    """The ids learned lately as a version of an earlier livelearn listed them: [window
    end, id], ordered by window end."""
    ids = RecentIds(_dedup_horizon(SMALL))
    rebuild = registry.details(version)["rebuild"]
    for end, sid in read_back(log, _sample_key(SMALL.target), rebuild, Marks()):
        ids.add(end, sid)
    return sorted([end, sid] for sid, end in ids._ids.items())


def test_a_metric_state_that_cannot_be_read_restarts_the_metrics_and_says_so(
        tmp_path: Path, log: SQLiteLog, caplog: pytest.LogCaptureFixture) -> None:
    _samples(log, 1500)
    Trainer(log, Registry(tmp_path / "reg"), WIDE).step(10_000, final=True)
    details = Registry(tmp_path / "reg").details(2)
    details["metric_state"]["pos"] = "u1:x"  # the AUC's counts of positives, damaged
    with sqlite3.connect(tmp_path / "reg" / "index.db") as db:
        db.execute("UPDATE details SET data = ? WHERE version = 2", (orjson.dumps(details),))
    with caplog.at_level(logging.WARNING, logger="livelearn.train"):
        resumed = Trainer(log, Registry(tmp_path / "reg"), WIDE)
    (said,) = [r.getMessage() for r in caplog.records]
    assert said.startswith("v2 records a metric state that cannot be read (metrics: packed "
                           "counts that cannot be read (")
    assert resumed.samples == 1000 and resumed.metric.count == 0 and not resumed._recent


@pytest.mark.parametrize("step", [100, 10_000])
def test_versions_by_event_time_do_not_depend_on_the_steps(tmp_path: Path, log: SQLiteLog,
                                                           step: int) -> None:
    """publish_every_ms runs from the first sample learned, across steps (it restarted
    with every step of fewer samples than the interval, and never published)."""
    _samples(log, 2500)  # a sample a second
    timed = replace(SMALL, policies=replace(SMALL.policies, publish_every_samples=10**9,
                                            publish_every_ms=600_000))
    trainer = Trainer(log, Registry(tmp_path / f"reg{step}"), timed)
    while trainer.step(step, final=True):
        pass
    assert [v.meta["samples"] for v in trainer.registry.versions()] == [0, 601, 1201, 1801, 2401]


def test_bulky_details_stay_out_of_the_version_list(tmp_path: Path, log: SQLiteLog) -> None:
    """The gate's window of scores and the recent ids are read one version at a time;
    a registry written before they had a table of their own still resumes."""
    _samples(log, 2500)
    registry = Registry(tmp_path / "reg")
    Trainer(log, registry, SMALL).step(10_000, final=True)
    v3 = registry.get(3)
    assert set(v3.meta["window"]) == {"metric", "samples"} and "learned_ids" not in v3.meta
    details = registry.details(3)
    assert len(details["window"]["scores"][f"{SAMPLES}/0"]) == 1000
    # the step read 2,500: the 500 after v3's 2,000th are to skip at a restart
    assert details["rebuild"] == {"from": [[SAMPLES, 0, 0]], "to": [[SAMPLES, 0, 2500]],
                                  "skip": [[SAMPLES, 0, 2000, 500]]}
    listed = _listed_ids(log, registry, 3)
    assert listed[-1] == [T0 + 1999 * 1000 + 600_000, "r1999"]
    # as before: everything in the metadata, and the ids listed
    old = Registry(tmp_path / "old")
    for v in registry.versions():
        old.publish(registry.load(v.id), v.meta | registry.details(v.id), v.parent)
    resumed = Trainer(log, old, SMALL)
    assert resumed.samples == 2000 and old.details(3)["rebuild"] == details["rebuild"]
    assert sorted([e, s] for s, e in resumed._read_ids._ids.items()) == listed
    assert resumed.step(10_000, final=True) is not None and resumed.samples == 2500


def test_saved_models_score_bit_for_bit(tmp_path: Path) -> None:
    model = FTRL(bits=12, l1=0.1)
    batch = hash_rows([{"a": str(i % 13), "x": i / 7} for i in range(300)], 12)
    model.learn(batch, np.arange(300) % 2)
    save_learner(model, tmp_path / "m.npz")
    assert np.array_equal(load_learner(tmp_path / "m.npz").predict(batch), model.predict(batch))
    (tmp_path / "bad.npz").write_bytes(b"not a model")
    with pytest.raises(BadInput, match="not a livelearn model"):
        load_learner(tmp_path / "bad.npz")


def test_registry_statuses_and_decisions(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    v = registry.publish(FTRL(bits=8), {"samples": 0}, parent=None)
    assert v.status == "candidate" and registry.incumbent() is None
    registry.set_status(v.id, "approved", "first")
    assert registry.incumbent() == registry.get(v.id)
    registry.mark_serving(v.id, T0)
    assert registry.get(v.id).serving_since_ts == T0
    assert [d["status"] for d in registry.decisions()] == ["approved", "serving"]
    with pytest.raises(NotFound):
        registry.get(99)
    with pytest.raises(BadInput, match="status 'bogus'"):
        registry.set_status(v.id, "bogus", "")


def test_gate_approves_improvements_and_rejects_a_degraded_candidate(tmp_path: Path,
                                                                   log: SQLiteLog) -> None:
    registry = Registry(tmp_path / "reg")
    _samples(log, 2000)
    trainer = Trainer(log, registry, SMALL)
    gate = Gate(log, registry, "clicked", tolerance=0.03)
    trainer.step(10_000, final=True)
    decisions = gate.step()
    assert [d.approved for d in decisions] == [True, True, True]
    assert "no version approved yet" in decisions[0].reason
    # A candidate trained on the flipped world: worse on the samples the incumbent never saw.
    _samples(log, 1000, seed=1)
    bad = FTRL(**trainer.model.params())
    rows = hash_rows([{"topic": f"t{i % 5}"} for i in range(5000)], bad.bits)
    bad.learn(rows, np.array([float(i % 5 == 0) for i in range(5000)]))
    trainer.model = bad
    trainer.step(10_000, final=True)
    decision = gate.step()[-1]
    assert not decision.approved
    assert "worse by more than tolerance" in decision.reason
    assert registry.get(decision.version).status == "rejected"


def test_after_a_rollback_the_trainer_goes_on_and_the_gate_judges_it_against_the_target(
        tmp_path: Path, log: SQLiteLog) -> None:
    """As docs/own-data.md says: a rollback changes what serves, not what the trainer
    learned (its state is the log's, whatever a person did meanwhile). Its next version
    descends from the one rolled back, and the gate judges it against the version rolled
    back to, on samples that one never learned."""
    registry = Registry(tmp_path / "reg")
    _samples(log, 2000)
    trainer, gate = Trainer(log, registry, SMALL), Gate(log, registry, "clicked", 0.03)
    trainer.step(10_000, final=True)
    gate.step()
    for version in (2, 3):
        registry.promote(version, "test")
        registry.mark_serving(version, T0 + version)
    assert registry.rollback("rolled back by hand") == (3, 2)
    _samples(log, 1000, seed=1)
    trainer.step(10_000, final=True)
    [decision] = gate.step()
    v4 = registry.get(decision.version)
    assert (v4.id, v4.parent, v4.meta["offsets"]) == (4, 3, [[SAMPLES, 0, 3000]])
    assert "vs incumbent v2 " in decision.reason


def test_a_canary_left_when_the_share_is_set_to_0_is_judged_as_a_candidate(
        tmp_path: Path, log: SQLiteLog) -> None:
    """canary_share set to 0 while a canary ran: no server scored anyone with it, and the
    gate, judging candidates only, never looked at it. It stayed a canary forever."""
    registry = Registry(tmp_path / "reg")
    log.create_topic(SAMPLES)
    trainer, gate = Trainer(log, registry, SMALL), Gate(log, registry, "clicked", 0.03,
                                                        canary_share=0.5)
    gate.step()  # v1, the first: approved
    _samples(log, 2000)
    trainer.step(10_000, final=True)
    gate.step()
    assert registry.statuses() == ["approved", "retired", "canary"]
    [decision] = Gate(log, registry, "clicked", 0.03).step()
    assert (decision.version, decision.approved, decision.canary) == (3, True, False)
    assert registry.statuses() == ["approved", "retired", "approved"]


def test_samples_written_twice_are_learned_once(tmp_path: Path, log: SQLiteLog) -> None:
    _samples(log, 1500)
    again = [(r.key, r.value) for r in log.read(SAMPLES, 0, 1000, 500)]
    log.append(SAMPLES, again)  # a joiner restart wrote its last step again
    twice = Trainer(log, Registry(tmp_path / "a"), SMALL)
    while twice.step(400, final=True):
        pass
    assert (twice.samples, twice.duplicates) == (1500, 500)
    once = SQLiteLog(tmp_path / "once.db")
    _samples(once, 1500)
    reference = Trainer(once, Registry(tmp_path / "b"), SMALL)
    reference.step(10_000, final=True)
    assert np.array_equal(twice.model.state()["z"], reference.model.state()["z"])


def test_samples_it_cannot_learn_are_dead_lettered_and_the_rest_learned(
        tmp_path: Path, log: SQLiteLog) -> None:
    clean = SQLiteLog(tmp_path / "clean.db")
    _samples(clean, 1500)
    good = [(r.key, r.value) for r in clean.read(SAMPLES, 0, 0, 2000)]
    first = orjson.loads(good[0][1])
    bad = [b"not json", b"[1, 2]", orjson.dumps({**first, "id": "x1", "labels": {}}),
           orjson.dumps({**first, "id": "x2", "window_end": "soon"}),
           orjson.dumps({**first, "id": "x3", "features": ["topic"]}),
           orjson.dumps({**first, "id": "x6", "labels": {"clicked": None}}),
           # a feature that was NaN in the joiner (JSON null), and one that is a list
           orjson.dumps({**first, "id": "x4", "features": {**first["features"], "age": None}}),
           orjson.dumps({**first, "id": "x5", "features": {**first["features"], "tags": [1]}})]
    for topic in (SAMPLES, DEAD_LETTERS):
        log.create_topic(topic)
    log.append(SAMPLES, [*good[:700], *[("bad", value) for value in bad], *good[700:]])
    trainer = Trainer(log, Registry(tmp_path / "a"), SMALL)
    while trainer.step(400, final=True):
        pass
    assert (trainer.samples, trainer.malformed) == (1500, len(bad))
    letters = [orjson.loads(r.value) for r in log.read(DEAD_LETTERS, 0, 0, 100)]
    assert [(d["reason"], d["stream"], d["source"]) for d in letters] == [
        ("malformed", SAMPLES, f"{SAMPLES}/0@{700 + i}") for i in range(len(bad))]
    assert "it has no label 'clicked', the pipeline's target (its labels: none)" \
        in letters[2]["detail"]
    assert "(window_end is 'soon')" in letters[3]["detail"]
    assert "(features is ['topic'])" in letters[4]["detail"]
    assert "labels['clicked'] is null (the label function gave None, NaN or an infinity" \
        in letters[5]["detail"]
    assert letters[-2]["detail"] == (
        "sample cannot be learned: feature 'age': expected a number, a string or a bool, got "
        "None (as the sample's JSON holds it: NaN and infinities are written as null)")
    assert "feature 'tags': expected a number, a string or a bool, got [1] (" in \
        letters[-1]["detail"]
    reference = Trainer(clean, Registry(tmp_path / "b"), SMALL)
    while reference.step(400, final=True):
        pass
    assert np.array_equal(trainer.model.state()["z"], reference.model.state()["z"])


def test_a_sample_whose_ts_is_a_bool_is_dead_lettered(tmp_path: Path, log: SQLiteLog) -> None:
    """A bool is an int to Python: a sample of ``"ts": true`` was learned as of 1 ms past
    the epoch (its window_end, checked as an int exactly, was refused), and a version
    published after it recorded that event time."""
    for topic in (SAMPLES, DEAD_LETTERS):
        log.create_topic(topic)
    sample = {"id": "r0", "ts": T0, "window_end": T0 + 600_000, "score": 0.5,
              "features": {"topic": "t1"}, "labels": {"clicked": 1.0}}
    log.append(SAMPLES, [("r0", orjson.dumps(sample)),
                         ("r1", orjson.dumps({**sample, "id": "r1", "ts": True}))])
    trainer = Trainer(log, Registry(tmp_path / "reg"), SMALL)
    trainer.step(final=True)
    assert (trainer.samples, trainer.malformed) == (1, 1)
    letter, = [orjson.loads(r.value) for r in log.read(DEAD_LETTERS, 0, 0, 10)]
    assert letter["source"] == f"{SAMPLES}/0@1" and "(ts is True)" in letter["detail"]


def test_a_restarted_trainer_does_not_dead_letter_a_sample_twice(tmp_path: Path,
                                                                 log: SQLiteLog) -> None:
    """A trainer that stopped after dead-lettering samples, before a version passed them,
    read them again at its restart and wrote each letter a second time."""
    clean = SQLiteLog(tmp_path / "clean.db")
    _samples(clean, 1500)
    good = [(r.key, r.value) for r in clean.read(SAMPLES, 0, 0, 2000)]
    bad = [b"not json", orjson.dumps({**orjson.loads(good[0][1]), "id": "x1", "labels": {}})]
    for topic in (SAMPLES, DEAD_LETTERS):
        log.create_topic(topic)
    log.append(SAMPLES, [*good[:1100], *[("bad", value) for value in bad], *good[1100:]])
    registry = Registry(tmp_path / "reg")
    first = Trainer(log, registry, SMALL)
    first.step(1300, final=True)  # then it stops: v2 (1,000 samples) is the newest
    assert (first.malformed, [v.meta["samples"] for v in registry.versions()]) == (2, [0, 1000])
    again = Trainer(log, registry, SMALL)
    while again.step(400, final=True):
        pass
    assert (again.samples, again.malformed) == (1500, 2)  # met again, not written again
    letters = [orjson.loads(r.value) for r in log.read(DEAD_LETTERS, 0, 0, 100)]
    assert [d["source"] for d in letters] == [f"{SAMPLES}/0@1100", f"{SAMPLES}/0@1101"]
    # a letter written once a version is past those: the log keeps only the new one's
    _samples(log, 1000)
    log.append(SAMPLES, [("bad", b"[]")])
    third = Trainer(log, registry, SMALL)
    while third.step(400, final=True):
        pass
    assert [v.meta["offsets"] for v in registry.versions()][-1] == [[SAMPLES, 0, 2002]]
    assert orjson.loads(log.committed("trainer.letters").state or b"") == {
        "topic_ids": {SAMPLES: log.topic_id(SAMPLES)}, "letters": [[SAMPLES, 0, 2502]]}
    assert len(log.read(DEAD_LETTERS, 0, 0, 100)) == 3


def test_the_dead_letters_list_of_a_samples_topic_made_again_is_not_taken(
        tmp_path: Path, log: SQLiteLog) -> None:
    """The list of the letters written is of the samples topic as it was: a log whose
    samples topic is made anew (its id another) holds other samples at those offsets,
    whose letters a trainer of a new registry skipped."""
    for topic in (SAMPLES, DEAD_LETTERS):
        log.create_topic(topic)
    log.append(SAMPLES, [("bad", b"[]")])
    Trainer(log, Registry(tmp_path / "a"), SMALL).step(final=True)
    with log.atomic():  # the topic made again, as another log's: a new id
        log._conn().execute("UPDATE topic_ids SET id = 'another' WHERE name = ?", (SAMPLES,))
    trainer = Trainer(log, Registry(tmp_path / "b"), SMALL)
    trainer.step(final=True)
    assert trainer.malformed == 1 and len(log.read(DEAD_LETTERS, 0, 0, 10)) == 2


def test_a_corrupt_model_file_falls_back_to_the_version_before(
        tmp_path: Path, log: SQLiteLog, caplog: pytest.LogCaptureFixture) -> None:
    _samples(log, 2500)
    registry = Registry(tmp_path / "reg")
    Trainer(log, registry, SMALL).step(10_000, final=True)
    path = registry.file(3)
    path.write_bytes(path.read_bytes()[:-100])  # truncated
    resumed = Trainer(log, registry, SMALL)
    assert resumed.version is not None and resumed.version.id == 2
    assert resumed.samples == 1000
    assert registry.get(3).status == "rejected"
    assert "v3 is damaged" in caplog.text


def test_a_trainer_falling_back_past_a_corrupt_version_does_not_dead_letter_twice(
        tmp_path: Path, log: SQLiteLog, caplog: pytest.LogCaptureFixture) -> None:
    """The list of letters written (group trainer.letters) held those past the newest
    version only: a restart past its damaged file resumed the version before, met again
    the samples dead-lettered between the two, and wrote each letter a second time."""
    clean = SQLiteLog(tmp_path / "clean.db")
    _samples(clean, 2500)
    good = [(r.key, r.value) for r in clean.read(SAMPLES, 0, 0, 3000)]
    for topic in (SAMPLES, DEAD_LETTERS):
        log.create_topic(topic)
    log.append(SAMPLES, [*good[:1500], ("bad", b"[]"), *good[1500:2450], ("bad", b"[]"),
                         *good[2450:]])
    registry = Registry(tmp_path / "reg")
    first = Trainer(log, registry, SMALL)
    while first.step(400, final=True):
        pass
    assert [v.meta["samples"] for v in registry.versions()] == [0, 1000, 2000]
    assert orjson.loads(log.committed("trainer.letters").state or b"")["letters"] == [
        [SAMPLES, 0, 2451]]  # v3 is past the first
    path = registry.file(3)
    path.write_bytes(path.read_bytes()[:-100])
    again = Trainer(log, registry, SMALL)
    assert again.version is not None and again.version.id == 2
    while again.step(400, final=True):
        pass
    assert (again.samples, again.malformed) == (2500, 2)  # met again, not written again
    assert [orjson.loads(r.value)["source"] for r in log.read(DEAD_LETTERS, 0, 0, 10)] == [
        f"{SAMPLES}/0@1500", f"{SAMPLES}/0@2451"]


def _served(log: SQLiteLog, model: Learner, version: int, n: int, seed: int,
            target: str = "clicked") -> None:
    """Samples as the server would have logged them, scored by ``model`` as ``version``;
    the label ``clicked`` is 0 or 1, ``dwell`` the topic's number."""
    rng = np.random.default_rng(seed)
    start = log.end_offset(SAMPLES, 0)
    records = []
    for i in range(start, start + n):
        topic = f"t{rng.integers(5)}"
        score = float(model.predict(hash_rows([{"topic": topic}], model.bits))[0])
        label = (float(rng.random() < 0.1 + 0.2 * int(topic[1])) if target == "clicked"
                 else float(topic[1]))
        records.append((f"r{i}", orjson.dumps({
            "id": f"r{i}", "ts": T0 + i * 1000, "window_end": T0 + i * 1000 + 600_000,
            "model_version": version, "score": score, "features": {"topic": topic},
            "labels": {target: label}})))
    log.append(SAMPLES, records)


def _good_then_bad(registry: Registry) -> tuple[FTRL, FTRL]:
    """Two models, served in turn as v1 then v2: the first ranks the topics right, the
    second upside down."""
    good, bad = FTRL(bits=10), FTRL(bits=10)
    rows = hash_rows([{"topic": f"t{i % 5}"} for i in range(5000)], 10)
    good.learn(rows, np.array([float(i % 5 >= 3) for i in range(5000)]))
    bad.learn(rows, np.array([float(i % 5 <= 1) for i in range(5000)]))
    for model, ts in ((good, T0), (bad, T0 + 3_600_000)):
        v = registry.publish(model, {"metric": "auc"}, parent=None)
        registry.set_status(v.id, "approved", "by hand")
        registry.mark_serving(v.id, ts)
    return good, bad


_SAMPLE = (b'{"id": "p", "ts": %d, "window_end": %d, "model_version": 2, '
           % (T0 + 10**6, T0 + 2 * 10**6))


@pytest.mark.parametrize("poison", [
    b"not json", b"[1]", _SAMPLE + b'"features": {"topic": "t1"}, "labels": {"clicked": 1}}',
    _SAMPLE + b'"score": null, "features": {"topic": "t1"}, "labels": {"clicked": 1}}',
    _SAMPLE + b'"score": 0.5, "features": {"topic": "t1"}, "labels": {}}',
    _SAMPLE + b'"score": 0.5, "features": {"topic": "t1"}, "labels": {"clicked": null}}',
    _SAMPLE + b'"score": 0.5, "features": {"topic": null}, "labels": {"clicked": 1}}',
    _SAMPLE + b'"score": 0.5, "features": [1, 2], "labels": {"clicked": 1}}'],
    ids=["not JSON", "not an object", "no score", "score null", "no label",
         "label null (1e308 + 1e308 read seconds)", "a feature null", "features a list"])
def test_a_sample_the_gate_cannot_judge_by_is_left_out(tmp_path: Path, log: SQLiteLog,
                                                       poison: bytes) -> None:
    """Another producer's sample, or a joiner's whose label sums to infinity (JSON null):
    the gate stopped at it, and the trainer that runs it, again after every restart.
    The trainer dead-letters such a sample; the gate judges by the others."""
    log.create_topic(SAMPLES)
    registry = Registry(tmp_path / "reg")
    _, bad = _good_then_bad(registry)
    _served(log, bad, 2, 600, seed=2)
    log.append(SAMPLES, [("p", poison)])
    _served(log, bad, 2, 600, seed=3)
    decision = Gate(log, registry, "clicked", tolerance=0.02).step()[0]
    assert decision.version == 2 and not decision.approved
    assert "on the 1200 samples it served" in decision.reason


def test_the_gate_rolls_back_a_version_whose_live_metric_falls(
        tmp_path: Path, log: SQLiteLog, caplog: pytest.LogCaptureFixture) -> None:
    log.create_topic(SAMPLES)
    registry = Registry(tmp_path / "reg")
    gate = Gate(log, registry, "clicked", tolerance=0.02)
    good, bad = _good_then_bad(registry)
    _served(log, good, 1, 1000, seed=1)
    assert gate.check_rollback() is None  # v2 has served nothing yet
    _served(log, bad, 2, 1000, seed=2)  # the stream degrades: v2 ranks upside down
    decision = gate.step()[0]
    assert decision.version == 2 and not decision.approved
    assert decision.reason.startswith("rolled back: live auc of v2")
    assert "on the 1000 samples it served fell below v1" in decision.reason
    assert registry.get(2).status == "rejected"
    incumbent = registry.incumbent()
    assert incumbent is not None and incumbent.id == 1
    assert "rolled back" in caplog.text


def test_a_binary_versions_live_auc_leaves_out_labels_outside_0_1(
        tmp_path: Path, log: SQLiteLog) -> None:
    """The trainer dead-letters a binary learner's samples labelled 2 or -1; the gate took
    them into the served version's live AUC (2 a click, -1 none) and judged by them."""
    log.create_topic(SAMPLES)
    registry = Registry(tmp_path / "reg")
    good, bad = _good_then_bad(registry)
    _served(log, good, 1, 1000, seed=1)
    _served(log, bad, 2, 1000, seed=2)
    log.append(SAMPLES, [(f"x{i}", orjson.dumps({
        "id": f"x{i}", "ts": T0 + 10**7 + i, "window_end": T0 + 10**7 + i + 600_000,
        "model_version": 2, "score": 0.5, "features": {"topic": "t1"},
        "labels": {"clicked": 2.0 if i % 2 else -1.0}})) for i in range(500)])
    decision = Gate(log, registry, "clicked", tolerance=0.02).step()[0]
    assert decision.version == 2 and not decision.approved
    assert "on the 1000 samples it served fell below v1" in decision.reason


def test_a_regressions_rollback_says_its_error_rose(tmp_path: Path, log: SQLiteLog) -> None:
    """An MAE is worse when higher: the reason said it 'fell below' the previous one's."""
    log.create_topic(SAMPLES)
    registry = Registry(tmp_path / "reg")
    gate = Gate(log, registry, "dwell", tolerance=0.02)
    good, bad = LinearRegression(bits=10), LinearRegression(bits=10)
    rows = hash_rows([{"topic": f"t{i % 5}"} for i in range(5000)], 10)
    for _ in range(20):
        good.learn(rows, np.array([float(i % 5) for i in range(5000)]))
        bad.learn(rows, np.array([float(4 - i % 5) for i in range(5000)]))
    for model, ts in ((good, T0), (bad, T0 + 3_600_000)):
        v = registry.publish(model, {"metric": "mae"}, parent=None)
        registry.set_status(v.id, "approved", "by hand")
        registry.mark_serving(v.id, ts)
    _served(log, good, 1, 1000, seed=1, target="dwell")
    _served(log, bad, 2, 1000, seed=2, target="dwell")
    decision = gate.step()[0]
    assert decision.version == 2 and not decision.approved
    ours, theirs = decision.candidate_metric, decision.incumbent_metric
    assert ours is not None and theirs is not None and ours > theirs + 1  # v2's error, v1's
    assert decision.reason.startswith("rolled back: live mae of v2")
    assert "on the 1000 samples it served rose above v1's" in decision.reason


class _Meanwhile(Gate):
    """A gate during whose first model load ``meanwhile`` happens: another process changes
    the registry between what the gate read and the verdict it records."""

    def __init__(self, log: SQLiteLog, registry: Registry, meanwhile: Callable[[], object]):
        super().__init__(log, registry, "clicked", tolerance=0.02)
        self.meanwhile: Callable[[], object] | None = meanwhile

    def _load(self, version: Version) -> Learner | None:
        if self.meanwhile is not None:
            self.meanwhile, run = None, self.meanwhile
            run()
        return super()._load(version)


def test_a_promote_or_rollback_by_hand_while_the_gate_judges_is_not_undone(
        tmp_path: Path, log: SQLiteLog, caplog: pytest.LogCaptureFixture) -> None:
    """The gate recorded its verdict whatever had happened since it read the registry: after
    a rollback by hand its own rollback raised NotFound (`livelearn train` stopped), or
    rejected the version the hand had restored; a candidate promoted by hand was rejected."""
    caplog.set_level(logging.INFO, "livelearn.gate")
    log.create_topic(SAMPLES)
    registry, by_hand = Registry(tmp_path / "reg"), Registry(tmp_path / "reg")
    good, bad = _good_then_bad(registry)
    _served(log, good, 1, 1000, seed=1)
    _served(log, bad, 2, 1000, seed=2)  # a rollback of v2 is due
    assert _Meanwhile(log, registry, lambda: by_hand.rollback("by hand")).step() == []
    assert [v.status for v in registry.versions()] == ["approved", "rejected"]
    assert [d["reason"] for d in registry.decisions()][-2:] == [
        "by hand", "rollback target: by hand"]
    assert "v2 no longer serves: not rolled back (rolled back: live auc of v2" in caplog.text
    candidate = registry.publish(good, {"metric": "auc"}, parent=1)  # too few samples to pass
    promote = _Meanwhile(log, registry, lambda: by_hand.promote(candidate.id, "by hand"))
    assert promote.step() == []
    assert registry.get(candidate.id).status == "approved"
    assert "v3 is no longer candidate: verdict not recorded (rejected: only 0 recent" in \
        caplog.text


def test_the_gate_keeps_the_live_samples_of_the_versions_served_lately_only(
        tmp_path: Path, log: SQLiteLog) -> None:
    log.create_topic(SAMPLES)
    registry = Registry(tmp_path / "reg")
    gate = Gate(log, registry, "clicked", tolerance=0.02, live_window=200)
    model = FTRL(bits=8)
    for i in range(1, 41):  # 40 versions swapped in, each serving too little to judge
        v = registry.publish(model, {"metric": "auc"}, parent=None)
        registry.set_status(v.id, "approved", "by hand")
        registry.mark_serving(v.id, T0 + i * 3_600_000)
        _served(log, model, v.id, 50, seed=i)
        assert gate.step() == []
    assert sorted(gate._served) == [37, 38, 39, 40]
    assert len(gate._unjudged) <= 4  # not one count per version it ever saw serving


def test_an_old_version_promoted_again_is_judged_by_what_it_serves(
        tmp_path: Path, log: SQLiteLog) -> None:
    """The gate kept the samples of the 4 highest version numbers: v1 promoted again after
    v2..v5 had served lost every sample it served, and was never rolled back."""
    log.create_topic(SAMPLES)
    registry = Registry(tmp_path / "reg")
    gate = Gate(log, registry, "clicked", tolerance=0.02)
    good, bad = _good_then_bad(Registry(tmp_path / "models"))
    for i, model in enumerate([bad, good, good, good, good], start=1):  # v1 bad, v2..v5 good
        v = registry.publish(model, {"metric": "auc"}, parent=None)
        registry.set_status(v.id, "approved", "by hand")
        registry.mark_serving(v.id, T0 + log.end_offset(SAMPLES, 0) * 1000)  # its first
        _served(log, model, v.id, 100, seed=i)
        assert gate.step() == []
    registry.promote(1, "promoted by hand")  # the bad one again
    registry.mark_serving(1, T0 + log.end_offset(SAMPLES, 0) * 1000)
    _served(log, bad, 1, 1000, seed=10)
    decision = gate.step()[0]
    assert (decision.version, decision.approved) == (1, False)
    assert "on the 1000 samples it served fell below v5's" in decision.reason
    assert registry.incumbent() == registry.get(5)


def _served_unique(log: SQLiteLog, model: Learner, version: int, n: int, seed: int
                   ) -> list[tuple[dict[str, str], float]]:
    """Samples served by ``version``, each with a feature of its own (its id): a model
    that learned them knows each label. Their (features, label)."""
    rng = np.random.default_rng(seed)
    start = log.end_offset(SAMPLES, 0)
    rows = [{"id": f"r{i}"} for i in range(start, start + n)]
    labels = [float(rng.random() < 0.3) for _ in rows]
    scores = model.predict(hash_rows(rows, model.bits))
    log.append(SAMPLES, [(f"r{i}", orjson.dumps({
        "id": f"r{i}", "ts": T0 + i * 1000, "window_end": T0 + i * 1000 + 600_000,
        "model_version": version, "score": float(score), "features": row,
        "labels": {"clicked": label}}))
        for i, row, label, score in zip(range(start, start + n), rows, labels, scores,
                                        strict=True)])
    return list(zip(rows, labels, strict=True))


def test_a_version_served_again_is_judged_by_what_it_served_since(
        tmp_path: Path, log: SQLiteLog) -> None:
    """v1 served, v2 learned what v1 served, then v1 was promoted again: the gate judged v1
    by every sample it had served, v2 scoring the ones it had learned, and rolled v1 back
    for that. Now only the samples v1 served since it serves again count."""
    registry = Registry(tmp_path / "reg")
    gate = Gate(log, registry, "clicked", tolerance=0.02)
    v1 = _served_again(log, registry, gate)
    assert gate.step() == []
    assert registry.get(v1).status == "serving"


def _served_again(log: SQLiteLog, registry: Registry, gate: Gate | None = None) -> int:
    """v1 serves 1,000 samples (``gate`` steps once then), v2 learns them and serves, then
    v1 is promoted again and serves 1,200 more; v1's number."""
    log.create_topic(SAMPLES)
    first = FTRL(bits=16)
    v1 = registry.publish(first, {"metric": "auc"}, parent=None)
    registry.set_status(v1.id, "approved", "test")
    registry.mark_serving(v1.id, T0)
    learned = _served_unique(log, first, v1.id, 1000, seed=1)
    if gate is not None:
        assert gate.step() == []
    second = FTRL(bits=16)
    for _ in range(5):
        second.learn(hash_rows([f for f, _ in learned], 16), np.array([y for _, y in learned]))
    v2 = registry.publish(second, {"metric": "auc"}, parent=v1.id)
    registry.set_status(v2.id, "approved", "test")
    registry.mark_serving(v2.id, T0 + 999_999)
    registry.promote(v1.id, "promoted by hand")
    registry.mark_serving(v1.id, T0 + 1_000_000)  # the next sample's time
    _served_unique(log, first, v1.id, 1200, seed=2)
    return v1.id


def test_promote_and_rollback_by_hand(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    for i in range(3):
        v = registry.publish(FTRL(bits=8), {"samples": i}, parent=None)
        registry.set_status(v.id, "approved", "test")
        registry.mark_serving(v.id, T0 + i)
    cli = [sys.executable, "-m", "livelearn", "models", "--registry", str(tmp_path)]
    done = subprocess.run([*cli, "rollback"], capture_output=True, text=True, check=True)
    assert "v3 rejected; v2 approved again" in done.stdout
    assert registry.incumbent() == registry.get(2)
    subprocess.run([*cli, "promote", "1"], capture_output=True, text=True, check=True)
    assert [v.status for v in registry.versions()] == ["approved", "retired", "rejected"]
    listing = subprocess.run(cli, capture_output=True, text=True, check=True).stdout
    assert "rejected" in listing
    with pytest.raises(NotFound):
        Registry(tmp_path / "empty").rollback("nothing served")


def test_a_version_served_again_is_rolled_back_to_the_one_that_served_just_before(
        tmp_path: Path) -> None:
    """v1, v2, v3 served in turn; v1 promoted by hand and swapped in again: its serving time
    is the new one, so a rollback goes back to v3, which served just before it."""
    registry = Registry(tmp_path)
    for i in range(3):
        v = registry.publish(FTRL(bits=8), {"samples": i}, parent=None)
        registry.set_status(v.id, "approved", "test")
        registry.mark_serving(v.id, T0 + i * 1000)
    registry.promote(1, "promoted by hand")
    registry.mark_serving(1, T0 + 5000)
    assert registry.get(1).serving_since_ts == T0 + 5000
    assert registry.rollback("rolled back by hand") == (1, 3)
    registry.promote(2, "promoted by hand")
    registry.mark_serving(2, None)  # a server that has seen no request yet
    assert registry.get(2).serving_since_ts is None  # not its old time: not known yet
    registry.mark_serving(2, T0 + 9000)
    assert registry.get(2).serving_since_ts == T0 + 9000
    assert registry.rollback("rolled back by hand") == (2, 3)


def test_versions_that_began_serving_in_the_same_millisecond_are_told_apart(
        tmp_path: Path) -> None:
    """v3 then v2 (promoted back by hand) then v4 began serving at one event time, with no
    request between: a rollback of v4 went back to v3, the highest number of that time,
    not v2, which served just before. The order in which they were swapped in decides."""
    registry = Registry(tmp_path)
    for _ in range(4):
        registry.publish(FTRL(bits=8), {"samples": 0}, parent=None)
    registry.set_status(1, "approved", "test")
    registry.mark_serving(1, T0)
    for version in (3, 2, 4):
        registry.promote(version, "promoted by hand")
        registry.mark_serving(version, T0 + 1000)
    assert registry.rollback("rolled back by hand") == (4, 2)
    registry.mark_serving(2, T0 + 1000)
    assert registry.rollback("rolled back by hand") == (2, 3)
    registry.mark_serving(3, T0 + 1000)
    assert registry.rollback("rolled back by hand") == (3, 1)


def test_a_rollback_goes_back_to_the_version_swapped_in_before_whatever_the_clocks(
        tmp_path: Path) -> None:
    """Two servers: one swapped v3 in at its event clock T0 + 5 s, then the other, whose
    requests were older, swapped v4 in at T0 + 4 s. A rollback of v4 went back to v2, the
    newest that began serving before T0 + 4 s, not to v3, which v4 replaced."""
    registry = Registry(tmp_path)
    _served_in_turn(registry, 2)
    for version, clock in ((3, T0 + 5000), (4, T0 + 4000)):
        registry.publish(FTRL(bits=8), {"samples": version}, parent=None)
        registry.promote(version, "test")
        registry.mark_serving(version, clock)
    assert registry.rollback("rolled back by hand") == (4, 3)


def test_a_version_swapped_in_before_any_request_can_be_rolled_back(tmp_path: Path) -> None:
    """A server (re)started swaps the incumbent in before it has an event time: `models
    rollback` then said "no serving version with a previous one to roll back to"."""
    registry = Registry(tmp_path)
    _served_in_turn(registry, 2)
    v3 = registry.publish(FTRL(bits=8), {"samples": 2}, parent=None)
    registry.set_status(v3.id, "approved", "test")
    registry.mark_serving(v3.id, None)
    assert registry.rollback("rolled back by hand") == (3, 2)
    assert registry.statuses() == ["retired", "approved", "rejected"]


def test_promoting_the_version_serving_keeps_it_serving(tmp_path: Path) -> None:
    """`models promote` of the version served (a newer one approved meanwhile, say) keeps it
    serving: it can be rolled back, and a later rollback comes back to it."""
    registry = Registry(tmp_path)
    for i in range(3):
        v = registry.publish(FTRL(bits=8), {"samples": i}, parent=None)
        registry.set_status(v.id, "approved", "test")
        if i < 2:
            registry.mark_serving(v.id, T0 + i * 1000)
    cli = [sys.executable, "-m", "livelearn", "models", "--registry", str(tmp_path)]
    done = subprocess.run([*cli, "promote", "2"], capture_output=True, text=True, check=True)
    assert done.stdout == "v2 serves already; servers go on serving it\n"
    assert registry.statuses() == ["retired", "serving", "retired"]
    assert registry.get(2).serving_since_ts == T0 + 1000
    v4 = registry.publish(FTRL(bits=8), {"samples": 3}, parent=None)
    registry.set_status(v4.id, "approved", "test")
    registry.mark_serving(v4.id, T0 + 9000)
    assert registry.rollback("rolled back by hand") == (4, 2)


def test_a_status_change_that_fails_is_rolled_back_and_the_next_one_works(tmp_path: Path
                                                                          ) -> None:
    """Every write of the index is one transaction rolled back if it fails: a status change
    that failed half-way (here its decision could not be logged) left its update applied
    but uncommitted, and the thread's next write failed ('within a transaction')."""
    registry = Registry(tmp_path)
    v = registry.publish(FTRL(bits=8), {"samples": 1}, parent=None)
    with sqlite3.connect(tmp_path / "index.db") as db:
        db.execute("ALTER TABLE decisions RENAME TO held")
    with pytest.raises(sqlite3.OperationalError, match="no such table: decisions"):
        registry.set_status(v.id, "approved", "test")
    with sqlite3.connect(tmp_path / "index.db") as db:
        db.execute("ALTER TABLE held RENAME TO decisions")
    assert registry.get(v.id).status == "candidate"  # the failed change left nothing
    registry.set_status(v.id, "rejected", "test")
    assert registry.get(v.id).status == "rejected"


def test_old_model_files_are_pruned_and_never_served_again(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    for i in range(6):  # v1..v5 served in turn, then retired; v6 serves
        v = registry.publish(FTRL(bits=8), {"samples": i}, parent=None)
        registry.set_status(v.id, "approved", "test")
        registry.mark_serving(v.id, T0 + i)
    candidate = registry.publish(FTRL(bits=8), {"samples": 6}, parent=6)
    assert registry.prune(keep=2) == [1, 2, 3]
    assert registry.prune(keep=2) == []  # already done
    assert [registry.file(v.id).exists() for v in registry.versions()] == [
        False, False, False, True, True, True, True]
    assert [(v.status, v.pruned) for v in registry.versions()][:4] == [  # rows stay
        ("retired", True), ("retired", True), ("retired", True), ("retired", False)]
    assert "pruned" in registry.decisions()[-1]["reason"]
    listing = subprocess.run([sys.executable, "-m", "livelearn", "models", "--registry",
                              str(tmp_path)], capture_output=True, text=True, check=True).stdout
    assert listing.count("pruned") == 3
    with pytest.raises(Corrupt, match="pruned"):
        registry.load(1)
    with pytest.raises(NotFound, match="pruned"):
        registry.promote(2, "by hand")
    assert registry.rollback("test") == (6, 5)
    registry.mark_serving(5, T0 + 6)
    assert registry.rollback("test") == (5, 4)
    registry.mark_serving(4, T0 + 7)
    with pytest.raises(NotFound):  # v3 served before v4, but its file is gone
        registry.rollback("test")
    assert registry.get(candidate.id).status == "candidate" and registry.file(candidate.id).exists()


class _PrunedWhileChecked(Registry):
    """A registry whose first check of a model file is followed, as soon as it can be, by
    a prune of another process (a gate deciding meanwhile)."""

    def check_file(self, version: int) -> None:
        super().check_file(version)
        if not hasattr(self, "pruning"):
            self.pruning = threading.Thread(target=Registry(self.path).prune, args=(2,))
            self.pruning.start()
            self.pruning.join(timeout=0.5)  # done at once unless the index is locked


def test_a_promote_while_the_gate_prunes_never_approves_a_pruned_version(
        tmp_path: Path) -> None:
    """`models promote 3` checked v3's file, the gate pruned it, then v3 was approved: the
    command said "servers swap it in" and no server could load it."""
    _served_in_turn(Registry(tmp_path), 6)
    registry = _PrunedWhileChecked(tmp_path)
    registry.promote(3, "promoted by hand")
    registry.pruning.join()
    assert registry.incumbent() == registry.get(3) and not registry.get(3).pruned
    registry.load(3)


def test_the_gate_keeps_the_files_and_details_of_the_newest_versions_only(
        tmp_path: Path, log: SQLiteLog) -> None:
    """A version's details (~100 KB or more) went on filling index.db after its file was
    pruned, one more with every version published, for as long as the trainer ran."""
    _samples(log, 6000)
    registry = Registry(tmp_path / "reg")
    trainer = Trainer(log, registry, SMALL)
    gate = Gate(log, registry, "clicked", tolerance=0.03, keep_versions=2)
    while trainer.step(1000, final=True):
        gate.step()
    versions = registry.versions()
    assert len(versions) == 7
    kept = [v.id for v in versions if registry.file(v.id).exists()]
    incumbent = registry.incumbent()
    assert incumbent is not None and incumbent.id in kept
    past = [v.id for v in versions if v.status != "candidate" and v.id != incumbent.id]
    assert len(past) > 2 and kept == sorted(set(range(1, 8)) - set(past[:-2]))
    with sqlite3.connect(tmp_path / "reg" / "index.db") as db:
        detailed = [vid for (vid,) in db.execute("SELECT version FROM details ORDER BY version")]
    assert detailed == kept
    resumed = Trainer(log, registry, SMALL)  # resumes from its newest version, as before
    assert resumed.version == versions[-1] and resumed.samples == 6000


def test_finding_the_versions_of_a_status_does_not_read_every_version(tmp_path: Path
                                                                      ) -> None:
    """What the gate asks at every step (the candidates, the version serving, the one that
    served before it) read the whole index: O(versions), ~50 ms a step at 100,000."""
    registry = Registry(tmp_path)
    for i in range(3):  # v1 and v2 served in turn, v3 serves, then a candidate
        v = registry.publish(FTRL(bits=8), {"samples": i}, parent=None)
        registry.set_status(v.id, "approved", "test")
        registry.mark_serving(v.id, T0 + i)
    registry.publish(FTRL(bits=8), {"samples": 3}, parent=3)

    def steps() -> list[int]:
        """SQLite's VM steps (in thousands) of each query the gate makes at a step."""
        db, counted = registry._db(), [0]

        def count() -> int:
            counted[0] += 1
            return 0

        out = []
        db.set_progress_handler(count, 1000)
        for ask in (lambda: registry.versions("candidate"), lambda: registry.versions("serving"),
                    lambda: registry.previous_served(registry.get(3)), registry.incumbent):
            counted[0] = 0
            ask()
            out.append(counted[0])
        db.set_progress_handler(None, 1000)
        return out

    few = steps()
    with sqlite3.connect(tmp_path / "index.db") as db:  # 20,000 older versions, long retired
        db.executemany("INSERT INTO versions SELECT id - ?, NULL, 'retired', created, meta, "
                       "serving_since_ts - ?, '' FROM versions WHERE id = 1",
                       [(i, i) for i in range(1, 20_001)])
    assert len(registry.statuses()) == 20_004
    assert steps() == few


def test_a_version_rolled_back_while_loading_is_not_marked_serving(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    v = registry.publish(FTRL(bits=8), {}, parent=None)
    registry.set_status(v.id, "rejected", "rolled back while a server loaded it")
    assert registry.mark_serving(v.id, T0) is False
    assert registry.get(v.id).status == "rejected"


def test_a_trainer_resumed_with_another_learner_says_so(tmp_path: Path, log: SQLiteLog,
                                                        caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    _samples(log, 1500)
    Trainer(log, Registry(tmp_path / "reg"), SMALL).step(10_000, final=True)
    with caplog.at_level(logging.WARNING, logger="livelearn.train"):
        Trainer(log, Registry(tmp_path / "reg"), SMALL)  # the same learner: nothing said
        assert not caplog.records
        other = replace(SMALL, learner=lambda: FTRL(bits=10))
        resumed = Trainer(log, Registry(tmp_path / "reg"), other)
    assert resumed.model.bits == PIPELINE.learner().bits  # goes on with what it learned
    (said,) = [r.getMessage() for r in caplog.records]
    assert said.startswith("pipeline 'news_feed' declares the learner FTRL(bits=10, ")
    assert "but this trainer resumes v2, a FTRL(bits=" in said


def test_a_sample_far_behind_the_newest_is_taken_for_learned_and_said(
        tmp_path: Path, log: SQLiteLog, caplog: pytest.LogCaptureFixture) -> None:
    _samples(log, 3000)  # window ends a second apart: 50 minutes, the horizon 20
    old = {"id": "late-one", "ts": T0, "window_end": T0 + 600_000, "score": 0.5,
           "features": {"topic": "t1"}, "labels": {"clicked": 1.0}}
    log.append(SAMPLES, [("late-one", orjson.dumps(old))])
    trainer = Trainer(log, Registry(tmp_path / "reg"), SMALL)
    with caplog.at_level(logging.WARNING, logger="livelearn.train"):
        while trainer.step(500, final=True):
            pass
    assert (trainer.samples, trainer.duplicates, trainer.behind) == (3000, 1, 1)
    assert "1 sample(s) so far ('late-one', window end" in caplog.records[-1].getMessage()


def _numbers(log: SQLiteLog, values: list[float], labels: list[float]) -> None:
    """Samples whose one feature is the number ``age``."""
    log.create_topic(SAMPLES)
    log.append(SAMPLES, [(f"r{i}", orjson.dumps({
        "id": f"r{i}", "ts": T0 + i, "window_end": T0 + i + 600_000, "score": 0.5,
        "features": {"age": value}, "labels": {"clicked": label}}))
        for i, (value, label) in enumerate(zip(values, labels, strict=True))])


def test_a_learner_whose_weights_diverge_stops_the_trainer_naming_it(tmp_path: Path,
                                                                      log: SQLiteLog) -> None:
    """Plain SGD on numbers of a million diverges to NaN. Before: 'metrics: scores and
    labels must not contain nan', naming neither the learner nor the sample; then the
    sample whose score was NaN (r42), not the one whose learning overflowed (r41). The
    first three are put back and dead-lettered (each might be an outlier); a fourth since
    the last version is the learner diverging."""
    log.create_topic(DEAD_LETTERS)
    _numbers(log, [1e6 * (i % 3) for i in range(50)], [float(i % 2) for i in range(50)])
    registry = Registry(tmp_path / "reg")
    pipeline = replace(SMALL, learner=lambda: LinearRegression(bits=10, optimizer="sgd"))
    trainer = Trainer(log, registry, pipeline)
    with pytest.raises(PipelineError, match=re.escape(
            "pipeline 'news_feed': the learner LinearRegression(bits=10, optimizer='sgd', "
            "lr=0.1, l2=0.0) learned sample 'r46' into weights that are not finite numbers, "
            "as 3 before it since the last version did (put back, in the dead letters) "
            "(its weights diverged: lower its learning rate, or scale large numeric "
            "features, e.g. with log1p); nothing learned since v1 is published")):
        trainer.step(final=True)
    assert [v.id for v in registry.versions()] == [1]
    assert [orjson.loads(orjson.loads(r.value)["event"])["id"]
            for r in log.read(DEAD_LETTERS, 0, 0, 10)] == ["r41", "r43", "r44"]


@pytest.mark.parametrize("learner", [
    lambda: FTRL(bits=10), lambda: LinearRegression(bits=10),
    lambda: FMClassifier(bits=10, k=4), lambda: FFMClassifier(bits=10, k=4)],
    ids=["FTRL", "LinearRegression", "FMClassifier", "FFMClassifier"])
def test_a_feature_too_large_to_learn_is_a_dead_letter_and_the_rest_learned(
        tmp_path: Path, log: SQLiteLog, learner: Callable[[], Learner]) -> None:
    """A number of 1e200 (valid JSON) squared overflows: learning it left weights that
    are not finite numbers. It stopped the trainer, and each restart stopped on it again:
    the samples after it were never learned. Now its learning is put back, it goes to the
    dead letters, and the model is the one learned from the other samples, bit for bit."""
    values, labels = [1.0 + i % 3 for i in range(30)], [float(i % 2) for i in range(30)]
    values[0] = values[10] = 1e200
    labels[0] = 1.0  # an error to learn from at the first row, whose weights are 0
    without = SQLiteLog(tmp_path / "without.db")
    for each in (log, without):
        each.create_topic(DEAD_LETTERS)
    _numbers(log, values, labels)
    _numbers(without, values[1:10] + values[11:], labels[1:10] + labels[11:])
    pipeline = replace(SMALL, learner=learner)
    trainer = Trainer(log, Registry(tmp_path / "reg"), pipeline)
    learned = [s["id"] for s in trainer.step(final=True).samples]  # type: ignore[union-attr]
    assert learned == [f"r{i}" for i in range(30) if i not in (0, 10)]
    assert (trainer.samples, trainer.malformed) == (28, 2)
    first, letter = [orjson.loads(r.value) for r in log.read(DEAD_LETTERS, 0, 0, 10)]
    assert '"r0"' in first["event"]
    assert letter["reason"] == "malformed" and '"r10"' in letter["event"]
    assert letter["detail"].startswith("sample cannot be learned: learning it (largest "
                                       "|value| 1e+200, label 0) left weights of ")
    assert "that are not finite numbers" in letter["detail"]
    twin = Trainer(without, Registry(tmp_path / "twin"), pipeline)
    twin.step(final=True)
    for name, array in trainer.model.state().items():
        assert np.array_equal(array, twin.model.state()[name]), name
    trainer.publish_now()  # and the next version is published with it
    assert trainer.version is not None and trainer.version.meta["samples"] == 28


def test_a_sample_the_learner_refuses_is_a_dead_letter_and_the_rest_learned(
        tmp_path: Path, log: SQLiteLog) -> None:
    """Without transforms a feature's position is its field: a sample of more features
    than an FFM has fields made the learner refuse the whole turn, and the trainer stopped
    with its BadInput, naming no sample, at every restart. Now that sample is dead-
    lettered, saying why, and the model is the one learned from the others, bit for bit."""
    features = [{"topic": f"t{i % 3}", "age": float(i % 5)} for i in range(20)]
    features[7] = {f"f{j}": j for j in range(6)}  # 7 with the bias, for 4 fields
    without = SQLiteLog(tmp_path / "without.db")
    for each, rows in ((log, list(range(20))), (without, [i for i in range(20) if i != 7])):
        each.create_topic(SAMPLES)
        each.create_topic(DEAD_LETTERS)
        each.append(SAMPLES, [(f"r{i}", orjson.dumps({
            "id": f"r{i}", "ts": T0 + i, "window_end": T0 + i + 600_000, "score": 0.5,
            "features": features[i], "labels": {"clicked": float(i % 2)}})) for i in rows])
    pipeline = replace(SMALL, learner=lambda: FFMClassifier(bits=10, n_fields=4, k=4))
    trainer = Trainer(log, Registry(tmp_path / "reg"), pipeline)
    trained = trainer.step(final=True)
    assert trained is not None and [s["id"] for s in trained.samples] == [
        f"r{i}" for i in range(20) if i != 7]
    assert (trainer.samples, trainer.malformed) == (19, 1)
    letter, = [orjson.loads(r.value) for r in log.read(DEAD_LETTERS, 0, 0, 10)]
    assert letter["reason"] == "malformed" and '"r7"' in letter["event"]
    assert letter["detail"] == ("sample cannot be learned: FFMClassifier: a row has 7 "
                                "features, so as many fields by position, but n_fields is 4")
    twin = Trainer(without, Registry(tmp_path / "twin"), pipeline)
    twin.step(final=True)
    for name, array in trainer.model.state().items():
        assert np.array_equal(array, twin.model.state()[name]), name


def test_a_learner_that_refuses_most_samples_stops_the_trainer_saying_so(
        tmp_path: Path, log: SQLiteLog) -> None:
    """An FFM of fewer fields than every row has features is a learner declared wrong,
    not samples gone wrong: the trainer stops rather than dead-letter every sample."""
    log.create_topic(SAMPLES)
    log.create_topic(DEAD_LETTERS)
    log.append(SAMPLES, [(f"r{i}", orjson.dumps({
        "id": f"r{i}", "ts": T0 + i, "window_end": T0 + i + 600_000, "score": 0.5,
        "features": {"a": 1.0, "b": "x"}, "labels": {"clicked": float(i % 2)}}))
        for i in range(600)])
    pipeline = replace(SMALL, learner=lambda: FFMClassifier(bits=10, n_fields=2, k=4))
    trainer = Trainer(log, Registry(tmp_path / "reg"), pipeline)
    with pytest.raises(PipelineError, match=re.escape(
            "pipeline 'news_feed': the learner FFMClassifier(bits=10, n_fields=2, k=4, ") + ".*"
            + re.escape(") refused 501 of the first 501 samples (each is in the dead letters): "
                        "FFMClassifier: a row has 3 features, so as many fields by position, "
                        "but n_fields is 2")):
        trainer.step(final=True)


@register
class _Plain(Learner):
    """A user's own learner, as the Learner protocol asks and no more: no undo_point, and
    weights that turn infinite without a word (it raises no Diverged)."""

    name = "test_plain"
    task = "regression"

    def __init__(self, bits: int = 10):
        self.bits, self.w = bits, np.zeros(1 << bits)

    def predict(self, batch: SparseBatch) -> np.ndarray:
        rows = np.repeat(np.arange(len(batch)), np.diff(batch.offsets))
        return np.bincount(rows, self.w[batch.indices & ((1 << self.bits) - 1)] * batch.values,
                           minlength=len(batch))

    def predict_then_learn(self, batch: SparseBatch, y: np.ndarray) -> np.ndarray:
        scores = np.empty(len(batch))
        with np.errstate(all="ignore"):
            for r in range(len(batch)):
                row = batch.slice(r, r + 1)
                scores[r] = self.predict(row)[0]
                self.w[row.indices & ((1 << self.bits) - 1)] -= 0.01 * (scores[r] - y[r]) \
                    * row.values
        return scores

    def state(self) -> dict[str, np.ndarray]:
        return {"w": self.w}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self.w = np.array(state["w"], dtype=np.float64)


def test_a_sample_that_spoils_a_learner_without_undo_point_is_a_dead_letter(
        tmp_path: Path, log: SQLiteLog) -> None:
    """A user's own learner has no undo_point: a sample whose learning turned its weights
    infinite stopped the trainer at the sample after it (scored nan), or where it was the
    last before a version, that version was published spoiled. Now the trainer puts it
    back from a copy made before the turn, dead-letters the sample, and goes on: the model
    is the one learned from the others."""
    log.create_topic(DEAD_LETTERS)
    values = [1.0 + i % 3 for i in range(30)]
    _numbers(log, [*values[:12], 1e300, *values[13:]], [float(i % 4) for i in range(30)])
    without = SQLiteLog(tmp_path / "without.db")
    without.create_topic(SAMPLES)
    without.append(SAMPLES, [r for r in ((r.key, r.value) for r in log.read(SAMPLES, 0, 0, 30))
                             if r[0] != "r12"])
    pipeline = replace(SMALL, target="clicked", learner=lambda: _Plain(bits=10))
    trainer = Trainer(log, Registry(tmp_path / "reg"), pipeline)
    learned = [s["id"] for s in trainer.step(final=True).samples]  # type: ignore[union-attr]
    assert learned == [f"r{i}" for i in range(30) if i != 12]
    letter, = [orjson.loads(r.value) for r in log.read(DEAD_LETTERS, 0, 0, 10)]
    assert '"r12"' in letter["event"] and "that are not finite numbers" in letter["detail"]
    twin = Trainer(without, Registry(tmp_path / "twin"), pipeline)
    twin.step(final=True)
    assert np.array_equal(trainer.model.state()["w"], twin.model.state()["w"])


def test_a_learner_spoiled_before_its_samples_stops_the_trainer_saying_so(
        tmp_path: Path, log: SQLiteLog) -> None:
    """A learner without undo_point whose weights were not finite before a turn (a version
    published spoiled by an earlier livelearn, resumed): each sample was taken in turn for
    the one that spoiled it, and three dead-lettered before the trainer stopped, blaming
    the fourth."""
    log.create_topic(DEAD_LETTERS)
    _numbers(log, [1.0, 2.0, 3.0, 1.0, 2.0], [1.0, 0.0, 1.0, 0.0, 1.0])
    trainer = Trainer(log, Registry(tmp_path / "reg"),
                      replace(SMALL, learner=lambda: _Plain(bits=10)))
    assert isinstance(trainer.model, _Plain)
    trainer.model.w[:] = np.inf
    with pytest.raises(PipelineError, match=re.escape(
            "the learner _Plain(bits=10) held weights that are not finite numbers before "
            "it learned sample 'r0'")):
        trainer.step(final=True)
    assert log.read(DEAD_LETTERS, 0, 0, 10) == []


@register
class _Sure(FTRL):
    """A classifier that says 7 for a probability."""

    name = "test_sure"

    def predict_then_learn(self, batch: SparseBatch, y: np.ndarray) -> np.ndarray:
        return np.full(len(batch), 7.0)


def test_a_classifiers_score_outside_0_1_stops_the_trainer(tmp_path: Path,
                                                           log: SQLiteLog) -> None:
    _numbers(log, [1.0] * 10, [1.0] * 10)
    trainer = Trainer(log, Registry(tmp_path / "reg"), replace(SMALL, learner=lambda: _Sure(
        bits=10)))
    with pytest.raises(PipelineError, match=re.escape(
            "gave sample 'r0' the score 7.0: outside [0, 1], where a binary learner's "
            "P(label = 1) lies")):
        trainer.step(final=True)


@register
class _Float32(FTRL):
    """A learner of 32-bit floats (a PyTorch module's): a value beyond 3.4e38, finite in
    JSON, is infinite to it, and it scores that row NaN without raising."""

    name = "test_float32"

    def predict_then_learn(self, batch: SparseBatch, y: np.ndarray) -> np.ndarray:
        scores = super().predict_then_learn(batch, y)
        too_large = np.add.reduceat(np.abs(batch.values) > 3.4e38, batch.offsets[:-1]) > 0
        return np.where(too_large, np.nan, scores)


def test_a_nan_score_the_learner_gives_stops_the_trainer_naming_the_sample(
        tmp_path: Path, log: SQLiteLog) -> None:
    """Before: a NaN score was taken for a sample the trainer had put back and dead-
    lettered; none was written, the sample was left out of the metrics and of the samples
    learned, and the trainer went on, as it did past every sample a learner whose weights
    had turned NaN scored after it: all lost, without a word."""
    log.create_topic(DEAD_LETTERS)
    _numbers(log, [1.0, 1e39, 2.0, 3.0], [1.0, 1.0, 0.0, 1.0])
    registry = Registry(tmp_path / "reg")
    trainer = Trainer(log, registry, replace(SMALL, learner=lambda: _Float32(bits=10)))
    with pytest.raises(PipelineError, match=re.escape(
            "gave sample 'r1' the score nan: not a finite number (its weights diverged")):
        trainer.step(final=True)
    assert [v.id for v in registry.versions()] == [1]
    assert log.read(DEAD_LETTERS, 0, 0, 10) == []


@register
class _Fragile(FTRL):
    """A learner that raises its own error on a value too large, as scikit-learn's
    SGDClassifier does ('Floating-point under-/overflow occurred at epoch #1')."""

    name = "test_fragile"

    def predict_then_learn(self, batch: SparseBatch, y: np.ndarray) -> np.ndarray:
        if np.abs(batch.values).max(initial=0.0) > 1e300:
            raise ValueError("Floating-point under-/overflow occurred at epoch #1")
        return super().predict_then_learn(batch, y)


def test_a_learners_own_error_stops_the_trainer_naming_the_learner_and_samples(
        tmp_path: Path, log: SQLiteLog) -> None:
    """Before: the learner's ValueError went up as it was, a traceback naming neither the
    learner, nor the samples, nor what the trainer had published."""
    log.create_topic(DEAD_LETTERS)
    _numbers(log, [1.0, 2.0, 1e308, 3.0], [1.0, 0.0, 1.0, 0.0])
    registry = Registry(tmp_path / "reg")
    trainer = Trainer(log, registry, replace(SMALL, learner=lambda: _Fragile(bits=10)))
    with pytest.raises(PipelineError, match=re.escape(
            "pipeline 'news_feed': the learner _Fragile(bits=10, alpha=0.1, beta=1.0, l1=0.0, "
            "l2=1.0) raised ValueError learning the samples 'r0' to 'r3': Floating-point "
            "under-/overflow occurred at epoch #1; nothing learned since v1 is published")):
        trainer.step(final=True)
    assert [v.id for v in registry.versions()] == [1]


def test_a_classifiers_labels_outside_0_1_are_dead_lettered(tmp_path: Path,
                                                            log: SQLiteLog) -> None:
    """Before: FTRL learned labels 2 and -1 as they came (log loss of a 'probability' 2),
    silently; a regressor learns them."""
    log.create_topic(DEAD_LETTERS)
    _numbers(log, [1.0] * 6, [2.0, -1.0, 1.0, 0.0, 0.5, True])
    trainer = Trainer(log, Registry(tmp_path / "reg"), SMALL)
    while trainer.step(final=True):
        pass
    assert (trainer.samples, trainer.malformed) == (4, 2)
    letters = [orjson.loads(r.value) for r in log.read(DEAD_LETTERS, 0, 0, 10)]
    assert [d["detail"] for d in letters] == [
        f"sample cannot be learned: labels['clicked'] is {label}; the binary learner FTRL "
        f"learns a number in [0, 1]: 0 or 1, false or true, or a probability"
        for label in ("2.0", "-1.0")]
    regressor = Trainer(log, Registry(tmp_path / "other"), replace(
        SMALL, learner=lambda: LinearRegression(bits=10)))
    while regressor.step(final=True):
        pass
    assert (regressor.samples, regressor.malformed) == (6, 0)


def test_a_label_not_a_number_is_dead_lettered_saying_what_the_target_takes(
        tmp_path: Path, log: SQLiteLog) -> None:
    """A label function giving "no", None, NaN (null in the sample's JSON), a list or "1":
    the dead letter said "sample cannot be learned (labels['clicked'] is 'no'): expected a
    JSON object with integer ts and window_end, string id, features and
    labels['clicked']", not what the label should have been."""
    log.create_topic(DEAD_LETTERS)
    given = ["no", None, float("nan"), [1], "1", 1.0]
    _numbers(log, [1.0] * len(given), given)  # type: ignore[arg-type]
    trainer = Trainer(log, Registry(tmp_path / "reg"), SMALL)
    while trainer.step(final=True):
        pass
    assert (trainer.samples, trainer.malformed) == (1, 5)
    takes = ("the binary learner FTRL learns a number in [0, 1]: 0 or 1, false or true, "
             "or a probability")
    null = ("null (the label function gave None, NaN or an infinity: the sample's JSON "
            "holds those as null)")
    assert [orjson.loads(r.value)["detail"] for r in log.read(DEAD_LETTERS, 0, 0, 10)] == [
        f"sample cannot be learned: labels['clicked'] is {came}; {takes}"
        for came in ("'no', a string", null, null, "[1]",
                     "'1', a string (the label function gives the number's text, not the "
                     "number)")]
    other = SQLiteLog(tmp_path / "other" / "log.db")
    other.create_topic(DEAD_LETTERS)
    _numbers(other, [1.0], ["no"])  # type: ignore[list-item]
    regressor = Trainer(other, Registry(tmp_path / "other" / "reg"), replace(
        SMALL, learner=lambda: LinearRegression(bits=10)))
    while regressor.step(final=True):
        pass
    assert orjson.loads(other.read(DEAD_LETTERS, 0, 0, 1)[0].value)["detail"] == (
        "sample cannot be learned: labels['clicked'] is 'no', a string; the learner "
        "LinearRegression learns a number")


def test_a_sample_without_the_target_label_is_dead_lettered_naming_it(
        tmp_path: Path, log: SQLiteLog) -> None:
    """A target misspelled, or a label function that names its label otherwise: the
    dead letter said "sample cannot be learned (KeyError: 'clicked'): expected a JSON
    object with ... labels['clicked']", not which labels the sample has."""
    log.create_topic(DEAD_LETTERS)
    log.create_topic(SAMPLES)
    log.append(SAMPLES, [(f"r{i}", orjson.dumps({
        "id": f"r{i}", "ts": T0 + i, "window_end": T0 + i + 600_000, "score": 0.5,
        "features": {"age": 1.0}, "labels": labels}))
        for i, labels in enumerate([{"clicked": 1.0}, {"click": 1.0, "dwell_s": 2.0}, {}])])
    trainer = Trainer(log, Registry(tmp_path / "reg"), SMALL)
    while trainer.step(final=True):
        pass
    assert (trainer.samples, trainer.malformed) == (1, 2)
    assert [orjson.loads(r.value)["detail"] for r in log.read(DEAD_LETTERS, 0, 0, 10)] == [
        f"sample cannot be learned: it has no label 'clicked', the pipeline's target (its "
        f"labels: {labels}); does the label function give it?"
        for labels in ("'click', 'dwell_s'", "none")]


def test_a_classifier_fed_regression_labels_stops_saying_so(tmp_path: Path,
                                                            log: SQLiteLog) -> None:
    """Ratings of 0.5 to 5 to FTRL: it dead-lettered 96% of them, one warning each, learned
    the ratings of 0.5 and 1, reported their AUC and exited 0."""
    log.create_topic(DEAD_LETTERS)
    ratings = [0.5 * (1 + i % 10) for i in range(2000)]  # 0.5, 1.0, ..., 5.0
    _numbers(log, [1.0] * 2000, ratings)
    trainer = Trainer(log, Registry(tmp_path / "reg"), SMALL)
    with pytest.raises(PipelineError, match=r"pipeline 'news_feed': 501 of the first 6\d\d "
                       r"samples have labels\['clicked'\] outside \[0, 1\], which the binary "
                       r"learner FTRL\(") as stop:
        while trainer.step(max_records=100, final=True):
            pass
    assert "declare a regression learner" in str(stop.value)
    assert trainer.malformed == 501 and len(log.read(DEAD_LETTERS, 0, 0, 1000)) == 501
    # a few such labels among many good ones are dead letters, as before
    mixed = tmp_path / "mixed"
    mixed_log = SQLiteLog(mixed / "log.db")
    mixed_log.create_topic(DEAD_LETTERS)
    _numbers(mixed_log, [1.0] * 2000, [2.0 if i % 10 == 0 else float(i % 2)
                                       for i in range(2000)])
    other = Trainer(mixed_log, Registry(mixed / "reg"), SMALL)
    while other.step(final=True):
        pass
    assert (other.samples, other.malformed) == (1800, 200)


@contextmanager
def _disk_full(limit: int) -> Iterator[None]:
    """Files of this process cannot grow beyond ``limit`` bytes (EFBIG, as a full disk
    refuses a write: Python ignores SIGXFSZ); the limit is lifted again after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


@pytest.mark.parametrize("refused", ["disk full", "folder in the way"])
def test_a_publish_the_disk_refuses_stops_the_trainer_and_a_restart_resumes(
        tmp_path: Path, log: SQLiteLog, refused: str) -> None:
    """The trainer stopped with a bare OSError traceback and left the half-written file;
    now a ConfigError names the registry and the reason, nothing of v3 is left, and a
    restarted trainer ends as one never interrupted."""
    _samples(log, 2500)
    registry = Registry(tmp_path / "reg")
    trainer = Trainer(log, registry, SMALL)
    trainer.step(1500)  # v1 (the untrained learner) and v2 published
    tmp = registry.file(3).with_suffix(".tmp")
    if refused == "folder in the way":
        tmp.mkdir()
    with pytest.raises(ConfigError) as raised, _disk_full(4096 if refused == "disk full"
                                                          else resource.RLIM_INFINITY):
        trainer.step(10_000, final=True)
    why = "File too large" if refused == "disk full" else "Is a directory"
    assert str(raised.value) == (
        f"registry {str(tmp_path / 'reg')!r}: cannot write model file v000003.tmp ({why}): "
        f"is its disk full or read-only? Nothing was written")
    assert [v.id for v in registry.versions()] == [1, 2]
    assert sorted(f.name for f in (tmp_path / "reg").glob("v*")) == (
        ["v000001.npz", "v000002.npz"] + (["v000003.tmp"] if tmp.is_dir() else []))
    if tmp.is_dir():
        tmp.rmdir()
    resumed = Trainer(log, registry, SMALL)
    resumed.step(10_000, final=True)
    reference = Trainer(log, Registry(tmp_path / "b"), SMALL)
    reference.step(10_000, final=True)
    assert [v.meta["samples"] for v in registry.versions()] == [0, 1000, 2000]
    assert np.array_equal(resumed.model.state()["z"], reference.model.state()["z"])


def test_a_publish_whose_row_the_disk_refuses_leaves_no_model_file(tmp_path: Path) -> None:
    """The model file was written, its row refused, and the file stayed in the folder though
    the error said "Nothing was written"."""
    registry = Registry(tmp_path)
    registry.publish(FTRL(bits=8), {"samples": 0}, parent=None)
    assert registry.file(1).stat().st_size < 100_000
    with pytest.raises(ConfigError, match=r"cannot write index.db .*Nothing was written"), \
            _disk_full(100_000):  # the model file fits, the details do not
        registry.publish(FTRL(bits=8), {"samples": 1}, parent=1, details={"x": "y" * 200_000})
    assert [v.id for v in registry.versions()] == [1]
    assert sorted(f.name for f in tmp_path.glob("v*")) == ["v000001.npz"]
    assert registry.publish(FTRL(bits=8), {"samples": 1}, parent=1).id == 2


def test_an_index_the_disk_refuses_to_write_says_so_and_keeps_its_state(tmp_path: Path
                                                                          ) -> None:
    """SQLite's bare 'disk I/O error' became a ConfigError naming the registry's index."""
    registry = Registry(tmp_path)
    v = registry.publish(FTRL(bits=8), {"samples": 0}, parent=None)
    with pytest.raises(ConfigError, match=r"cannot write index.db \(disk I/O error\): is its "
                                          r"disk full or read-only\? Nothing was written"), \
            _disk_full((tmp_path / "index.db-wal").stat().st_size):
        for _ in range(100):
            registry.set_status(v.id, "approved", "x" * 4000)
    assert registry.get(v.id).status in ("candidate", "approved")  # a whole change or none
    registry.set_status(v.id, "rejected", "test")  # the connection is free again
    assert registry.get(v.id).status == "rejected"


def _served_in_turn(registry: Registry, n: int) -> None:
    """Versions 1..n, each approved and served in turn: v{n} serves, the others retired."""
    for i in range(n):
        v = registry.publish(FTRL(bits=8), {"samples": i, "metric": "auc"}, parent=None)
        registry.set_status(v.id, "approved", "test")
        registry.mark_serving(v.id, T0 + i)


def test_a_promote_or_rollback_to_a_file_no_server_can_load_changes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Promoting (or rolling back to) a damaged, missing or unreadable file was accepted,
    said "servers swap it in", and the servers went on serving what they had."""
    registry = Registry(tmp_path)
    _served_in_turn(registry, 3)
    registry.file(2).write_bytes(registry.file(2).read_bytes()[:-10])
    before = [(v.status, v.serving_since_ts) for v in registry.versions()]
    with pytest.raises(Corrupt, match="v2 is damaged or missing"):
        registry.rollback("by hand")
    assert main(["models", "--registry", str(tmp_path), "promote", "2"]) == 2
    assert capsys.readouterr().err == (f"livelearn: model file {registry.file(2)} of v2 is "
                                       f"damaged or missing (SHA-256 does not match the "
                                       f"registry)\n")
    registry.file(1).unlink()
    registry.file(1).symlink_to("/proc/self/mem")  # a file whose read fails: EIO
    with pytest.raises(Corrupt, match=r"v000001.npz of v1 cannot be read \(Input/output "):
        registry.promote(1, "by hand")
    assert [(v.status, v.serving_since_ts) for v in registry.versions()] == before
    assert [d["reason"] for d in registry.decisions()][-1] == "swapped in at event time " \
        f"{T0 + 2}"


def test_the_gate_rejects_a_version_whose_file_it_cannot_load_and_goes_on(
        tmp_path: Path, log: SQLiteLog, caplog: pytest.LogCaptureFixture) -> None:
    """The gate raised Corrupt at every step, so `livelearn train` stopped at each restart
    while the incumbent's (or the previous serving version's) file was damaged."""
    _samples(log, 2000)
    registry = Registry(tmp_path / "reg")
    trainer = Trainer(log, registry, SMALL)
    gate = Gate(log, registry, "clicked", tolerance=0.03)
    trainer.step(10_000, final=True)
    gate.step()
    registry.mark_serving(3, T0)
    registry.file(3).write_bytes(b"damaged")
    _samples(log, 1000, seed=1)
    trainer.step(10_000, final=True)
    decision = Gate(log, registry, "clicked", tolerance=0.03).step()[-1]  # a restarted gate
    assert decision.version == 4 and decision.approved
    assert "vs incumbent v2" in decision.reason
    assert registry.get(3).status == "rejected"
    assert f"v3 rejected: model file {registry.file(3)} of v3 is damaged" in caplog.text
    # the previous serving version's file missing: no rollback to it, and no error
    rollback = Registry(tmp_path / "roll")
    _served_in_turn(rollback, 2)
    rollback.file(1).unlink()
    model = rollback.load(2)
    _served(log, model, 2, 1000, seed=3)
    assert Gate(log, rollback, "clicked", tolerance=0.0).check_rollback() is None
    assert [v.status for v in rollback.versions()] == ["rejected", "serving"]


def test_a_registry_of_another_log_is_refused_even_where_that_log_is_longer(
        tmp_path: Path, log: SQLiteLog) -> None:
    """A registry beside a new log already longer than its versions' offsets (the samples
    joined there before the trainer started, or the topic made again and refilled): the
    trainer resumed at v3's offset 2,000 and skipped that many of the new log's samples in
    silence. Each version now records the samples topic's id, and another is refused."""
    _samples(log, 2500)
    registry = Registry(tmp_path / "reg")
    Trainer(log, registry, SMALL).step(10_000, final=True)
    assert registry.get(3).meta["topic_ids"] == {SAMPLES: log.topic_id(SAMPLES)}
    other = SQLiteLog(tmp_path / "other.db")
    _samples(other, 3000, seed=1)
    with pytest.raises(ConfigError, match=f"v3 learned the samples of topic 'samples' with id "
                                          f"{log.topic_id(SAMPLES)}, this log's has id "
                                          f"{other.topic_id(SAMPLES)} .*another log's"):
        Trainer(other, registry, SMALL)
    assert Trainer(log, registry, SMALL).samples == 2000  # its own log: it resumes


def test_a_version_from_before_topic_ids_is_checked_by_its_offsets(tmp_path: Path,
                                                                   log: SQLiteLog) -> None:
    """A version published by an earlier livelearn records no topic id: another log is
    known by offsets it does not reach, and its own log resumes as before."""
    _samples(log, 1500)
    registry = Registry(tmp_path / "reg")
    Trainer(log, registry, SMALL).step(10_000, final=True)
    with sqlite3.connect(tmp_path / "reg" / "index.db") as db:
        for vid, meta in db.execute("SELECT id, meta FROM versions").fetchall():
            old = {k: v for k, v in orjson.loads(meta).items() if k != "topic_ids"}
            db.execute("UPDATE versions SET meta = ? WHERE id = ?", (orjson.dumps(old), vid))
    empty = SQLiteLog(tmp_path / "empty.db")
    empty.create_topic(SAMPLES)
    with pytest.raises(ConfigError, match="v2 learned the samples up to offset 1000 of topic "
                                          "'samples' partition 0, but this log holds 0"):
        Trainer(empty, registry, SMALL)
    assert Trainer(log, registry, SMALL).samples == 1000


def test_a_registry_of_another_pipeline_is_refused_before_anything_changes(
        tmp_path: Path, log: SQLiteLog) -> None:
    """Its models learned other features from another log; a trainer would resume them (and
    fence off that pipeline's trainer), a server would serve them."""
    _samples(log, 100)
    registry = Registry(tmp_path / "reg")
    Trainer(log, registry, SMALL).step(10_000, final=True)
    assert {v.meta["pipeline"] for v in registry.versions()} == {SMALL.name}
    other = replace(SMALL, name="fraud")
    with pytest.raises(ConfigError, match=f"holds the versions of pipeline '{SMALL.name}', "
                                          f"not of 'fraud'.*another --registry"):
        Trainer(log, registry, other)
    with sqlite3.connect(tmp_path / "reg" / "index.db") as db:  # the first claim stands
        assert db.execute("SELECT epoch FROM claims").fetchall() == [(1,)]
    with pytest.raises(ConfigError, match="holds the versions of pipeline"):
        create_app(other, log, registry, tmp_path)
    # a server started first, on a new registry, before any version: a trainer of another
    # pipeline started later published versions the server then served
    write_tables(NewsFeed(seed=1, impressions=100, users=10, new_users=0), tmp_path / "data")
    first = Registry(tmp_path / "first")
    create_app(SMALL, log, first, tmp_path / "data")
    with pytest.raises(ConfigError, match=f"holds the versions of pipeline '{SMALL.name}', "
                                          f"not of 'fraud'"):
        Trainer(log, first, other)
    assert first.versions() == []


#: a version an hour of event time, so one is published inside a group of samples of one
#: window end (the candidates of one request, each a sample)
HOURLY = replace(PIPELINE, policies=Policies(publish_every_samples=10**6,
                                             publish_every_ms=3_600_000))


def test_a_trainer_restarted_from_a_version_published_inside_a_tie_learns_all_of_it(
        tmp_path: Path, log_url: str) -> None:
    """Samples of one window end are learned sorted by id, which is not their order in
    the log; a version published after some of them resumed past the others, which were
    then never learned (9 of 10 candidates of a request at a restart)."""
    log = open_log(log_url)
    log.create_topic(SAMPLES)
    rng, records = np.random.default_rng(3), []
    for g in range(40):  # a request an hour, its 10 candidates written in reverse id order
        ts = T0 + g * 3_600_000
        for j in reversed(range(10)):
            sid = f"r{g:03d}-{j}"
            records.append((sid, orjson.dumps({
                "id": sid, "ts": ts, "window_end": ts + 600_000, "score": 0.5,
                "features": {"topic": f"t{j % 3}"},
                "labels": {"clicked": float(rng.random() < 0.3)}})))
    log.append(SAMPLES, records)
    whole = Trainer(log, Registry(tmp_path / "a"), HOURLY)
    while whole.step(10_000, final=True):
        pass
    assert whole.samples == 400
    skipped = []
    for first_step in (15, 42, 137):
        registry = Registry(tmp_path / f"b{first_step}")
        Trainer(log, registry, HOURLY).step(first_step, final=True)  # then killed
        # the tie's samples read but not learned are to skip, not taken for learned
        skipped.append(registry.details(registry.versions()[-1].id)["rebuild"]["skip"])
        again = Trainer(log, registry, HOURLY)
        while again.step(50, final=True):
            pass
        assert again.samples == 400, first_step
        assert np.array_equal(again.model.state()["z"], whole.model.state()["z"])
        assert again._read_ids._ids == whole._read_ids._ids
    assert any(skipped)
    log.close()


def _in_partition(log: SQLiteLog, partition: int, seconds: range, tag: str) -> list[str]:
    """Append a sample a second to ``partition`` of the 2-partition samples topic; their ids."""
    ids = []
    for s in seconds:
        sid = next(f"{tag}{s}.{k}" for k in range(100)
                   if partition_for(f"{tag}{s}.{k}", 2) == partition)
        ids.append(sid)
        log.append(SAMPLES, [(sid, orjson.dumps({
            "id": sid, "ts": T0 + s * 1000, "window_end": T0 + s * 1000 + 600_000,
            "score": 0.5, "features": {"topic": f"t{s % 5}"},
            "labels": {"clicked": float(s % 3 == 0)}}))])
    return ids


def test_samples_of_a_partition_that_was_idle_are_learned_late_not_lost(
        tmp_path: Path) -> None:
    """A joiner shard down for longer than idle_after_s: its samples partition is idle,
    the trainer goes on with the others for hours of event time, then the shard writes
    its samples, far behind the newest learned. They are learned (before: taken for
    learned by their window end, and lost), also by a trainer restarted in between; a
    sample its own partition wrote again still is skipped."""
    two = replace(SMALL, partitions=2)
    log = SQLiteLog(tmp_path / "log.db")
    log.create_topic(SAMPLES, 2)
    registry = Registry(tmp_path / "registry")
    ahead = _in_partition(log, 0, range(0, 3 * 3600, 2), "a")  # 3 h of event time
    trainer = Trainer(log, registry, two, idle_after_s=0)
    while trainer.step(700):  # live: partition 1 is idle at once
        pass
    assert trainer.samples == len(ahead) - 1  # the newest window end is held back
    late = _in_partition(log, 1, range(1, 1801, 2), "b")  # the half hour its shard was down
    while trainer.step(700):
        pass
    assert (trainer.samples, trainer.behind) == (len(ahead) - 1 + len(late), 0)
    trainer.publish_now()
    later = _in_partition(log, 1, range(1801, 3601, 2), "c")
    again = Trainer(log, registry, two, idle_after_s=0)
    log.append(SAMPLES, [(ahead[0], log.read(SAMPLES, 0, 0, 1)[0].value)])  # written again
    while again.step(700, final=True):
        pass
    assert again.samples == len(ahead) + len(late) + len(later)
    assert again.behind == 1


def _dense(log: SQLiteLog, n: int) -> list[str]:
    """``n`` samples, three of a window end every 10 ms of event time (so thousands lie
    within the trainer's horizon), over the 2 partitions of the samples topic, with a
    few it cannot learn (not JSON; a feature null: every 101st, every 97th) and a few
    written twice; the ids of those that are JSON."""
    log.create_topic(SAMPLES, 2)
    log.create_topic(DEAD_LETTERS)
    rng, records, ids = np.random.default_rng(5), [], []
    for i in range(1, n + 1):
        sid, ts = f"d{i:06d}", T0 + i // 3 * 10
        topic = f"t{rng.integers(5)}" if i % 97 else None
        value = orjson.dumps({
            "id": sid, "ts": ts, "window_end": ts + 600_000, "score": 0.5,
            "features": {"topic": topic}, "labels": {"clicked": float(rng.random() < 0.3)}})
        records.append((sid, value if i % 101 else b"{not json"))
        if i % 89 == 0:
            records.append((sid, value))  # written again
        ids += [sid] if i % 101 else []
    log.append(SAMPLES, records)
    return ids


#: two partitions; the defaults' horizon (22 minutes of event time)
DENSE = replace(SMALL, partitions=2)


def test_a_trainer_restarted_over_dense_samples_remembers_the_ids_of_one_never_stopped(
        tmp_path: Path) -> None:
    """Each trainer learns one step of a random size, then stops; the next resumes and
    reads the ids learned lately back from the log (train.rebuild), none listed in the
    versions. It learns each sample once, and ends with the ids, the model and the
    versions of a trainer never stopped."""
    log = SQLiteLog(tmp_path / "log.db")
    ids = _dense(log, 6000)
    whole = Trainer(log, Registry(tmp_path / "a"), DENSE)
    while whole.step(5000, final=True):
        pass
    whole.publish_now()
    assert whole.samples == sum(1 for sid in ids if int(sid[1:]) % 97)
    assert set(whole._read_ids._ids) == set(ids)  # the dead-lettered ones taken as learned
    rng, restarts = np.random.default_rng(7), 0
    while restarts < 100:  # a trainer that never reaches the end fails, not hangs
        trainer = Trainer(log, Registry(tmp_path / "b"), DENSE)
        trainer.step(int(rng.integers(1, 1800)), final=True)
        if trainer.samples == whole.samples:  # the end: published, as the other
            trainer.publish_now()
            break
        restarts += 1
    assert restarts >= 3
    assert trainer._read_ids._ids == whole._read_ids._ids
    assert trainer._learned_newest == whole._learned_newest
    assert trainer.samples == whole.samples
    assert np.array_equal(trainer.model.state()["z"], whole.model.state()["z"])
    assert _published(trainer.registry) == _published(whole.registry)
    assert trainer.metric.get() == whole.metric.get()
    log.close()


def test_a_trainer_resumed_mid_stream_has_the_ids_learned_until_its_version(
        tmp_path: Path) -> None:
    """Right after the restart, the ids remembered are those of the samples the version
    covers (not those of the step's samples after it, read again next)."""
    log = SQLiteLog(tmp_path / "log.db")
    _dense(log, 4000)
    order: list[str] = []
    whole = Trainer(log, Registry(tmp_path / "a"), DENSE)
    while trained := whole.step(700, final=True):
        order += [s["id"] for s in trained.samples]
    registry = Registry(tmp_path / "b")
    Trainer(log, registry, DENSE).step(2500, final=True)  # v3 at 2,000; then stops
    again = Trainer(log, registry, DENSE)
    learned = {sid for sid in again._read_ids._ids if int(sid[1:]) % 97}  # not dead letters
    assert again.samples == 2000 and learned == set(order[:2000])
    assert registry.details(3)["rebuild"]["skip"]  # the step's samples after the 2,000th
    log.close()


def test_a_versions_details_do_not_grow_with_the_samples_within_the_horizon(
        tmp_path: Path) -> None:
    """20,000 samples within a minute of event time, all remembered: the version after
    the 20,000th says where their ids are in as few bytes as the one after the 2,000th."""
    log = SQLiteLog(tmp_path / "log.db")
    _dense(log, 21_000)
    every = replace(DENSE, policies=replace(DENSE.policies, publish_every_samples=2000))
    trainer = Trainer(log, Registry(tmp_path / "reg"), every)
    while trainer.step(1000, final=True):
        pass
    assert len(trainer._read_ids._ids) > 19_000  # all within the horizon
    by_samples = {v.meta["samples"]: v.id for v in trainer.registry.versions()}
    small, large = (trainer.registry.details(by_samples[n]) for n in (2000, 20_000))
    for details in (small, large):
        assert len(details["rebuild"]["from"]) == len(details["rebuild"]["to"]) == 2
        # the samples of the step after the version (less those dead-lettered)
        assert sum(n for _, _, _, n in details["rebuild"]["skip"]) < 1000
    assert len(orjson.dumps(large["rebuild"])) < 2 * len(orjson.dumps(small["rebuild"]))
    assert len(orjson.dumps(large)) < 2 * len(orjson.dumps(small))
    log.close()



class _CountedLog(SQLiteLog):
    """A SQLite log that counts the bytes each group's checkpoints wrote."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.written: dict[str, int] = {}

    def commit(self, group: str, checkpoint: Checkpoint) -> None:
        size = len(checkpoint.state or b"")
        self.written[group] = self.written.get(group, 0) + size
        super().commit(group, checkpoint)


def test_a_burst_of_dead_letters_writes_their_list_once_a_turn(tmp_path: Path) -> None:
    """Each letter wrote the whole list of the letters since the newest version (group
    trainer.letters): 3,000 bad samples in a row wrote it 3,000 times, 4.5 million
    entries (16,000: 121 s where the trainer took 8 s before the list)."""
    log = _CountedLog(tmp_path / "log.db")
    _samples(log, 10)
    log.create_topic(DEAD_LETTERS)
    log.append(SAMPLES, [(f"b{i}", b"[]") for i in range(3000)])
    trainer = Trainer(log, Registry(tmp_path / "reg"), SMALL)
    while trainer.step(1000, final=True):
        pass
    assert trainer.malformed == 3000
    assert len(log.read(DEAD_LETTERS, 0, 0, 4000)) == 3000
    listed = orjson.loads(log.committed("trainer.letters").state or b"")["letters"]
    assert listed == [[SAMPLES, 0, o] for o in range(10, 3010)]
    # once a turn of 1,000 samples: 1,000 + 2,000 + 3,000 entries, not 1 + 2 + ... + 3,000
    assert log.written["trainer.letters"] <= len(orjson.dumps(listed)) * 2


def test_the_list_of_dead_letters_is_bounded_by_a_version_past_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The list of the letters written since the newest version (group trainer.letters)
    grew with every bad sample while no version was published, and was written whole each
    turn. Past ``LETTERS_LISTED`` a version is published as the trainer's checkpoint, past
    them, and they leave the list; a restart writes none of them again."""
    monkeypatch.setattr(trainer_module, "LETTERS_LISTED", 1000)
    clean = SQLiteLog(tmp_path / "clean.db")
    _samples(clean, 30)
    good = [(r.key, r.value) for r in clean.read(SAMPLES, 0, 0, 100)]
    log = _CountedLog(tmp_path / "log.db")
    for topic in (SAMPLES, DEAD_LETTERS):
        log.create_topic(topic)
    for i in range(30):  # a sample learned, then a hundred the trainer cannot learn
        log.append(SAMPLES, [good[i], *[(f"b{i}", b"[]")] * 100])
    registry = Registry(tmp_path / "reg")
    trainer = Trainer(log, registry, SMALL)
    longest = 0
    while trainer.step(5000, final=True):
        listed = orjson.loads(log.committed("trainer.letters").state or b"")["letters"]
        longest = max(longest, len(listed))
    assert trainer.malformed == 3000 and longest <= 2 * 1000  # not 3,000
    assert len(registry.versions()) > 2  # checkpoints, of the 30 samples learned at most
    again = Trainer(log, registry, SMALL)
    while again.step(5000, final=True):
        pass
    assert again.samples == 30
    assert len(log.read(DEAD_LETTERS, 0, 0, 4000)) == 3000  # each written once


def test_a_version_served_again_is_judged_by_what_it_served_since_after_a_restart(
        tmp_path: Path, log: SQLiteLog) -> None:
    """As above, with a gate started (or restarted) once v1 serves again: it read every
    sample v1 served, of both times, as served since, and rolled v1 back for what v2 had
    learned. The samples of before v1's serving time are not its own now."""
    registry = Registry(tmp_path / "reg")
    v1 = _served_again(log, registry)
    gate = Gate(log, registry, "clicked", tolerance=0.02)
    assert gate.step() == []
    assert registry.get(v1).status == "serving"


def test_a_log_older_than_the_registry_is_refused_naming_both(tmp_path: Path,
                                                                log: SQLiteLog) -> None:
    """A folder copied while its roles ran (the registry copied after the log, or the log
    without its -wal file), or a log restored from an earlier backup: the same topic's id,
    fewer samples than the newest version learned. The trainer resumed at that version's
    offsets and learned none of the samples joined next at the offsets before them."""
    _samples(log, 1000)
    log.topic_id(SAMPLES)
    with sqlite3.connect(tmp_path / "older.db") as copy:  # the log as it is now
        sqlite3.connect(tmp_path / "log.db").backup(copy)
    _samples(log, 1500, seed=1)
    registry = Registry(tmp_path / "reg")
    Trainer(log, registry, SMALL).step(10_000, final=True)
    learned = registry.versions()[-1].meta["offsets"][0][2]
    assert learned > 1000
    older = SQLiteLog(tmp_path / "older.db")
    assert older.topic_id(SAMPLES) == log.topic_id(SAMPLES)
    with pytest.raises(ConfigError, match=rf"v\d+ learned the samples up to offset {learned} of "
                                          r"topic 'samples' partition 0, but this log holds "
                                          r"1000: the registry is another log's, or newer "
                                          r"than this log \(a log restored from an earlier "
                                          r"copy, or a folder copied while its roles wrote"):
        Trainer(older, registry, SMALL)
