"""A pipeline's declared transforms (spec.Pipeline.transforms): the trainer, the gate and
the server all hash the features through them, over a real SQLite log and real HTTP."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from conftest import ServerThread
from livelearn.deploy.gate import Gate
from livelearn.errors import BadInput, ConfigError
from livelearn.features.hashing import hash_rows
from livelearn.features.transforms import (
    Bucketized,
    Categorical,
    Cross,
    FeatureSet,
    Numeric,
    Text,
)
from livelearn.join.runner import JoinRunner
from livelearn.log.sqlite import SQLiteLog
from livelearn.models.ffm import FFMClassifier
from livelearn.registry import Registry
from livelearn.replay import replay
from livelearn.serve.app import create_app
from livelearn.sim.history import write_tables
from livelearn.sim.pipeline import PIPELINE
from livelearn.sim.world import NewsFeed
from livelearn.spec import DEAD_LETTERS, SAMPLES, Policies
from livelearn.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
TRANSFORMS = FeatureSet([Categorical("country"), Categorical("topic"), Categorical("post_age_h"),
                         Cross("country", "topic"), Cross("user", "topic"),
                         Text("user_x_topic", ngrams=2)])
DECLARED = replace(PIPELINE, transforms=TRANSFORMS,
                   learner=lambda: FFMClassifier(bits=14, n_fields=7, k=4),
                   policies=Policies(publish_every_samples=10**9, publish_every_ms=10**15,
                                     gate_tolerance=1.0))


def test_the_trainer_gate_and_server_hash_through_the_declared_transforms(
        tmp_path: Path, log: SQLiteLog) -> None:
    world = NewsFeed(seed=5, impressions=3000, candidates=5, days=0.5, users=100, new_users=10)
    write_tables(world, tmp_path / "tables")
    for topic in DECLARED.topics:
        log.create_topic(topic)
    registry = Registry(tmp_path / "registry")
    trainer, gate = Trainer(log, registry, DECLARED), Gate.of(log, registry, DECLARED)
    gate.step()
    app = create_app(DECLARED, log, registry, tmp_path / "tables", poll_s=0.02)
    requests = iter(world.requests())
    with ServerThread(app) as server, httpx.Client(base_url=server.url) as http:
        for request, _ in zip(requests, range(300), strict=False):
            reply = http.post("/predict", json={"user_id": request.user_id,
                                                "items": request.candidates, "ts": request.ts})
            assert reply.status_code == 200, reply.text
            shown = [(p["request_id"], p["item"]) for p in reply.json()["predictions"]]
            assert http.post("/feedback", json=world.feedback(request, shown)).status_code == 200
        JoinRunner(log, DECLARED).step(100_000, final=True)
        trainer.step(100_000, final=True)
        version = trainer.publish_now()
        assert version is not None and [d.approved for d in gate.step()] == [True]

        # the trainer learned the transforms' rows: the same model as learning them directly
        samples = [orjson.loads(r.value) for r in log.read(SAMPLES, 0, 0, 100_000)]
        rows = [s["features"] for s in samples]
        direct = DECLARED.learner()
        direct.predict_then_learn(TRANSFORMS.hash_rows(rows, direct.bits),
                                  np.array([s["labels"]["clicked"] for s in samples]))
        learned = registry.load(version.id)
        assert np.array_equal(learned.predict(TRANSFORMS.hash_rows(rows, 14)),
                              direct.predict(TRANSFORMS.hash_rows(rows, 14)))

        # the server scores with them too, once it serves the new version
        request = next(requests)
        body = {"user_id": request.user_id, "items": request.candidates, "ts": request.ts}
        for _ in range(500):
            reply = http.post("/predict", json=body).json()
            if reply["model_version"] == version.id:
                break
        assert reply["model_version"] == version.id
    served = [orjson.loads(r.value) for r in log.read("predictions", 0, 0, 100_000)][-5:]
    features = [p["features"] for p in served]
    scores = [p["score"] for p in reply["predictions"]]
    assert scores == learned.predict(TRANSFORMS.hash_rows(features, 14)).tolist()
    with pytest.raises(BadInput, match="13 features"):  # undeclared: too many fields
        learned.predict(hash_rows(features, 14))


def test_a_sample_whose_feature_its_transform_cannot_take_is_dead_lettered(
        tmp_path: Path, log: SQLiteLog) -> None:
    pipeline = replace(PIPELINE, transforms=FeatureSet([Categorical("topic"),
                                                         Numeric("age_h")]))
    log.create_topic(SAMPLES)
    log.create_topic(DEAD_LETTERS)
    log.append(SAMPLES, [(f"r{i}", orjson.dumps({
        "id": f"r{i}", "ts": 1000 * i, "window_end": 1000 * i, "score": 0.5,
        "features": {"topic": "t1", "age_h": "old" if i == 1 else 2.0},
        "labels": {"clicked": 1.0}})) for i in range(3)])
    trainer = Trainer(log, Registry(tmp_path / "registry"), pipeline)
    trained = trainer.step(100, final=True)
    assert trained is not None and [s["id"] for s in trained.samples] == ["r0", "r2"]
    dead = [orjson.loads(r.value) for r in log.read(DEAD_LETTERS, 0, 0, 10)]
    assert [d["reason"] for d in dead] == ["malformed"]
    assert "feature 'age_h': expected a number, got str 'old'" in dead[0]["detail"]


def test_what_the_transforms_leave_out_is_learned_alike_beside_a_dead_letter(
        tmp_path: Path) -> None:
    """A list in a feature no transform reads, or a null where a number is declared (left
    out, as the docs say), was learned, unless a sample of the same turn was dead-lettered:
    then every sample was checked as if there were no transforms, and those two were
    dead-lettered too. The model depended on which samples shared a turn."""
    pipeline = replace(PIPELINE, transforms=FeatureSet([Categorical("topic"),
                                                         Numeric("age_h")]))
    features = [{"topic": "t1", "age_h": 2.0, "tags": ["a", "b"]}, {"topic": "t2", "age_h": "old"},
                {"topic": "t3", "age_h": None}, {"topic": "t1", "age_h": [1]}]
    models = []
    for name, rows in (("with", [0, 1, 2, 3]), ("without", [0, 2])):
        log = SQLiteLog(tmp_path / f"{name}.db")
        log.create_topic(SAMPLES)
        log.create_topic(DEAD_LETTERS)
        log.append(SAMPLES, [(f"r{i}", orjson.dumps({
            "id": f"r{i}", "ts": 1000 * i, "window_end": 1000 * i, "score": 0.5,
            "features": features[i], "labels": {"clicked": 1.0}})) for i in rows])
        trainer = Trainer(log, Registry(tmp_path / name), pipeline)
        trained = trainer.step(100, final=True)
        assert trained is not None and [s["id"] for s in trained.samples] == ["r0", "r2"]
        models.append(trainer.model)
        dead = [orjson.loads(r.value)["detail"] for r in log.read(DEAD_LETTERS, 0, 0, 10)]
        assert dead == ([] if name == "without" else [
            "sample cannot be learned: feature 'age_h': expected a number, got str 'old'",
            "sample cannot be learned: feature 'age_h': expected a number, got list [1]"])
    for key, array in models[0].state().items():
        assert np.array_equal(array, models[1].state()[key]), key


def test_a_turn_whose_every_sample_is_dead_lettered_learns_nothing_and_goes_on(
        tmp_path: Path, log: SQLiteLog) -> None:
    """A Categorical given floats (docs/own-data.md): when every sample of a turn was
    dead-lettered, the trainer stopped with a bare AssertionError (in its first turn) or
    ValueError (after one that learned)."""
    pipeline = replace(PIPELINE, transforms=FeatureSet([Categorical("age_h")]))
    log.create_topic(SAMPLES)
    log.create_topic(DEAD_LETTERS)

    def append(ages: list[Any]) -> None:
        first = log.end_offsets([SAMPLES])[(SAMPLES, 0)]
        log.append(SAMPLES, [(f"r{i}", orjson.dumps({
            "id": f"r{i}", "ts": 1000 * i, "window_end": 1000 * i, "score": 0.5,
            "features": {"age_h": age}, "labels": {"clicked": 1.0}}))
            for i, age in enumerate(ages, start=first)])

    trainer = Trainer(log, Registry(tmp_path / "registry"), pipeline)
    for ages, learned in (([2.5, 3.5], 0), ([2, 2.5], 1), ([4.5, 5.5], 1)):
        append(ages)
        trained = trainer.step(100, final=True)
        assert trained is not None and trainer.samples == learned
    dead = [orjson.loads(r.value) for r in log.read(DEAD_LETTERS, 0, 0, 100)]
    assert len(dead) == 5 and {d["reason"] for d in dead} == {"malformed"}
    assert "feature 'age_h': categorical values must be str, bool or int" in dead[0]["detail"]


def test_transforms_that_cannot_work_fail_when_the_pipeline_is_built(
        tmp_path: Path, log: SQLiteLog) -> None:
    with pytest.raises(ConfigError, match="transforms must be a FeatureSet"):
        replace(PIPELINE, transforms=[Categorical("topic")])
    with pytest.raises(ConfigError, match="'topic' is not a transform"):
        FeatureSet(["topic"])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="boundaries must be increasing"):
        Bucketized("age_h", (6.0, 1.0))
    too_few = replace(DECLARED, learner=lambda: FFMClassifier(bits=14, n_fields=4))
    log.create_topic(SAMPLES)
    with pytest.raises(ConfigError, match="n_fields=4, but the transforms make 7 fields"):
        Trainer(log, Registry(tmp_path / "registry"), too_few)


def test_the_transforms_of_docs_own_data_replay_the_fraud_example(tmp_path: Path) -> None:
    """docs/own-data.md's transforms, as written there, on the fraud example's pipeline."""
    text = (ROOT / "docs" / "own-data.md").read_text()
    block = re.search(r"To say how instead.*?```python\n(.*?)```", text, re.S)
    assert block is not None
    imports, _, declared = block.group(1).partition("\n\n")
    scope: dict[str, object] = {}
    exec(imports, scope)
    fraud = _module(ROOT / "examples" / "fraud" / "pipeline.py")
    pipeline = replace(fraud.PIPELINE, **eval(f"dict({declared})", scope))
    assert isinstance(pipeline.transforms, FeatureSet) and pipeline.transforms.n_fields == 6
    _module(ROOT / "examples" / "fraud" / "generate_data.py").generate(tmp_path / "data", 3000)
    report, _ = replay(SQLiteLog(tmp_path / "log.db"), Registry(tmp_path / "registry"),
                       pipeline, [("transactions", str(tmp_path / "data" / "transactions.jsonl"))],
                       data_dir=tmp_path)
    assert report["samples"] == 3000 and report["metric_value"] > 0.6


def _module(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"_doc_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_transform_naming_a_feature_no_sample_has_is_warned_of_once(
        tmp_path: Path, log: SQLiteLog, caplog: pytest.LogCaptureFixture) -> None:
    pipeline = replace(PIPELINE, transforms=FeatureSet([Categorical("topic"),
                                                         Categorical("topik")]))
    log.create_topic(SAMPLES)
    for i in range(2):
        log.append(SAMPLES, [(f"r{i}", orjson.dumps({
            "id": f"r{i}", "ts": 1000 * i, "window_end": 1000 * i, "score": 0.5,
            "features": {"topic": "t1"}, "labels": {"clicked": 1.0}}))])
    trainer = Trainer(log, Registry(tmp_path / "registry"), pipeline)
    trainer.step(1, final=False)
    trainer.step(100, final=True)
    warnings = [r.getMessage() for r in caplog.records if "none of the first" in r.getMessage()]
    assert warnings == [f"pipeline '{PIPELINE.name}': the transforms read 'topik', which none "
                        f"of the first 1 samples has (their features: topic): nothing is "
                        f"learned from them. A misspelled name?"]
