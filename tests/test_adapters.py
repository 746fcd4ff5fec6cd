"""Adapters for River, scikit-learn and PyTorch, each with its real library."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from livelearn.errors import BadInput, ConfigError
from livelearn.features.batch import SparseBatch
from livelearn.features.hashing import hash_rows
from livelearn.models import Learner, load_learner, save_learner


def stream(n: int = 600) -> tuple[SparseBatch, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    users, age = rng.integers(0, 20, n), rng.random(n)
    rows = [{"user": f"u{u}", "age": float(a)} for u, a in zip(users, age, strict=True)]
    logit = np.where(users % 2 == 0, 2.0, -2.0) + age
    clicks = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float64)
    return hash_rows(rows, bits=10), clicks, logit


def learn_in(model: Learner, batch: SparseBatch, y: np.ndarray, size: int) -> np.ndarray:
    return np.concatenate([model.predict_then_learn(batch.slice(i, min(i + size, len(batch))),
                                                    y[i:i + size])
                           for i in range(0, len(batch), size)])


def check_adapter(make: Callable[[], Learner], tmp_path: Path) -> Learner:
    """Same scores for batches of 1, 7 and 1000; better than chance; a trusted reload."""
    batch, clicks, numbers = stream()
    model = make()
    y = clicks if model.task == "binary" else numbers
    runs = []
    for size in (1, 7, 1000):
        model = make()
        runs.append((learn_in(model, batch, y, size), model.predict(batch)))
    for scores, final in runs[1:]:
        assert np.array_equal(scores, runs[0][0]) and np.array_equal(final, runs[0][1])
    late = runs[0][0][300:]
    if model.task == "binary":
        assert late[y[300:] == 1].mean() > late[y[300:] == 0].mean() + 0.2
    else:
        assert np.abs(late - y[300:]).mean() < 0.5 * np.abs(y - y.mean()).mean()
    path = tmp_path / "adapter.npz"
    save_learner(model, path)
    with pytest.raises(BadInput, match="trusted=True"):
        load_learner(path)
    loaded = load_learner(path, trusted=True)
    assert np.array_equal(loaded.predict(batch), model.predict(batch))
    rest = model.copy()
    assert np.array_equal(rest.predict_then_learn(batch, y), loaded.predict_then_learn(batch, y))
    fresh = model.clone()
    assert np.array_equal(learn_in(fresh, batch, y, 1000), runs[0][0])
    return model


def test_river_classifier_and_regressor(tmp_path: Path) -> None:
    import river  # noqa: F401  (the river extra: .ci/run installs it)
    from river import linear_model, optim, preprocessing

    from livelearn.models.adapters import RiverLearner

    check_adapter(lambda: RiverLearner(linear_model.LogisticRegression(optim.SGD(0.2)), bits=10),
                  tmp_path)
    regressor = check_adapter(lambda: RiverLearner(
        linear_model.LinearRegression(optim.SGD(0.1)), bits=10), tmp_path)
    assert regressor.task == "regression"
    with pytest.raises(ConfigError, match="river classifier or regressor"):
        RiverLearner(preprocessing.StandardScaler())


def test_sklearn_classifier_and_regressor(tmp_path: Path) -> None:
    import sklearn  # noqa: F401  (the sklearn extra: .ci/run installs it)
    from sklearn.linear_model import SGDClassifier, SGDRegressor

    from livelearn.models.adapters import SklearnLearner

    model: Any = check_adapter(lambda: SklearnLearner(
        SGDClassifier(loss="log_loss", random_state=0), bits=10, batch_size=16), tmp_path)
    assert model.estimator.coef_.shape == (1, 1024)
    check_adapter(lambda: SklearnLearner(SGDClassifier(loss="hinge", random_state=0), bits=10,
                                         batch_size=16), tmp_path)
    check_adapter(lambda: SklearnLearner(SGDRegressor(learning_rate="constant", eta0=0.1,
                                                      random_state=0), bits=10, batch_size=8),
                  tmp_path)
    with pytest.raises(ConfigError, match="no partial_fit"):
        from sklearn.linear_model import LogisticRegression

        SklearnLearner(LogisticRegression())


def test_torch_dnn(tmp_path: Path) -> None:
    import torch  # the torch extra: .ci/run installs it (PyPI's wheel brings CUDA's, ~5 GB)

    from livelearn.models.adapters import TorchLearner, dnn

    torch.set_num_threads(1)
    model: Any = check_adapter(lambda: TorchLearner(dnn(bits=10, dim=8, hidden=(16,)), bits=10,
                                                    batch_size=16), tmp_path)
    assert model.task == "binary"
    check_adapter(lambda: TorchLearner(dnn(bits=10, dim=8, hidden=(16,)), bits=10,
                                       task="regression", batch_size=16), tmp_path)
    with pytest.raises(ConfigError, match="optimizer"):
        TorchLearner(dnn(bits=10), bits=10, optimizer="lbfgs")


def test_a_pipeline_with_an_adapter_trains_serves_and_resumes(tmp_path: Path) -> None:
    """The Registry loads the adapter files its own trainer wrote: the gate judges them,
    a server on 127.0.0.1 scores with them, and a restarted trainer resumes from them."""
    import dataclasses

    import httpx
    from river import linear_model

    from conftest import ServerThread
    from livelearn.deploy.gate import Gate
    from livelearn.log.sqlite import SQLiteLog
    from livelearn.models.adapters import RiverLearner
    from livelearn.registry import Registry
    from livelearn.serve.app import create_app
    from livelearn.sim.history import write_tables
    from livelearn.sim.pipeline import PIPELINE
    from livelearn.sim.world import NewsFeed
    from livelearn.train.trainer import Trainer

    pipeline = dataclasses.replace(PIPELINE, learner=lambda: RiverLearner(
        linear_model.LogisticRegression(), bits=10))
    world = NewsFeed(seed=3, impressions=50, candidates=5, days=0.5, users=20, new_users=2)
    write_tables(world, tmp_path / "tables")
    log = SQLiteLog(tmp_path / "log.db")
    for topic in pipeline.topics:
        log.create_topic(topic)
    registry = Registry(tmp_path / "registry")
    Trainer(log, registry, pipeline)
    assert [d.approved for d in Gate.of(log, registry, pipeline).step()] == [True]
    with ServerThread(create_app(pipeline, log, registry, tmp_path / "tables")) as server:
        reply = httpx.post(f"{server.url}/predict", json={"user_id": "u0", "items": ["p0"]})
    assert reply.status_code == 200, reply.text
    assert reply.json()["predictions"][0]["score"] == 0.5
    resumed = Trainer(log, registry, pipeline)
    assert resumed.version is not None and resumed.version.id == 1
    assert isinstance(resumed.model, RiverLearner)
    log.close()


def test_an_adapters_bits_and_rate_are_checked() -> None:
    from river import linear_model
    from sklearn.linear_model import SGDClassifier

    from livelearn.models.adapters import RiverLearner, SklearnLearner, TorchLearner, dnn

    with pytest.raises(ConfigError, match=r"RiverLearner: bits must be an integer in \[1, 32\]"):
        RiverLearner(linear_model.LogisticRegression(), bits=40)
    with pytest.raises(ConfigError, match=r"SklearnLearner: bits must be an integer in "):
        SklearnLearner(SGDClassifier(), bits=0)
    with pytest.raises(ConfigError, match="TorchLearner: lr must be a finite number > 0"):
        TorchLearner(dnn(bits=4, dim=2, hidden=()), bits=4, lr=-0.1)


def test_a_classifier_adapter_learns_a_probability_label_as_the_metrics_count_it() -> None:
    """A label is positive where it is > 0.5 (train.metrics, the trainer takes labels in
    [0, 1]). Before: River learned bool(0.2), True; scikit-learn int(0.9), class 0."""
    from river import linear_model
    from sklearn.linear_model import SGDClassifier

    from livelearn.models.adapters import RiverLearner, SklearnLearner

    batch = hash_rows([{"x": "a"}, {"x": "b"}] * 100, bits=8)
    y = np.array([0.9, 0.2] * 100)
    for model in (RiverLearner(linear_model.LogisticRegression(), bits=8),
                  SklearnLearner(SGDClassifier(loss="log_loss", random_state=0), bits=8,
                                 batch_size=10)):
        model.learn(batch, y)
        a, b = model.predict(batch.slice(0, 2))
        assert a > 0.5 > b, type(model).__name__


def test_a_sample_that_spoils_an_adapter_before_a_publish_is_a_dead_letter(
        tmp_path: Path) -> None:
    """A River regressor learned a value of 1e300 into a weight of -inf and said nothing:
    where it was the last sample before a version, that version was published spoiled,
    the trainer stopped at the next sample (scored -inf), and each restart resumed the
    spoiled version and stopped again. Now the adapter is put back as it was before the
    sample, as a native learner is, the sample dead-lettered, and no version is spoiled."""
    import dataclasses

    import orjson
    from river import linear_model

    from livelearn.log.sqlite import SQLiteLog
    from livelearn.models.adapters import RiverLearner
    from livelearn.registry import Registry
    from livelearn.sim.pipeline import PIPELINE
    from livelearn.spec import DEAD_LETTERS, SAMPLES, Policies
    from livelearn.train.trainer import Trainer

    def samples(log: SQLiteLog, values: dict[int, float]) -> None:
        for topic in (SAMPLES, DEAD_LETTERS):
            log.create_topic(topic)
        log.append(SAMPLES, [(f"r{i}", orjson.dumps({
            "id": f"r{i}", "ts": 1_767_571_200_000 + i, "window_end": 1_767_571_800_000 + i,
            "score": 0.5, "features": {"age": value}, "labels": {"dwell_s": 1.0 + i % 3}}))
            for i, value in values.items()])

    pipeline = dataclasses.replace(
        PIPELINE, target="dwell_s", learner=lambda: RiverLearner(
            linear_model.LinearRegression(), bits=10),
        policies=Policies(publish_every_samples=10, publish_every_ms=10**12))
    values = {i: 1.0 + i % 4 for i in range(25)}
    log, without = SQLiteLog(tmp_path / "log.db"), SQLiteLog(tmp_path / "without.db")
    samples(without, {i: v for i, v in values.items() if i != 9})
    samples(log, {**values, 9: 1e300})  # the last sample of the first version
    registry = Registry(tmp_path / "reg")
    trainer = Trainer(log, registry, pipeline)
    trainer.step(final=True)
    assert (trainer.samples, trainer.malformed) == (24, 1)
    letter, = [orjson.loads(r.value) for r in log.read(DEAD_LETTERS, 0, 0, 10)]
    assert '"r9"' in letter["event"] and "that are not finite numbers" in letter["detail"]
    rows = hash_rows([{"age": v} for v in (1.0, 2.0, 3.0)], bits=10)
    for version in registry.versions():
        assert np.isfinite(registry.load(version.id).predict(rows)).all(), version.id
    twin = Trainer(without, Registry(tmp_path / "twin"), pipeline)
    twin.step(final=True)
    assert np.array_equal(trainer.model.predict(rows), twin.model.predict(rows))
