"""Optional libraries (livelearn's plain install has none of them): a backend chosen by
URL, an adapter, a pipeline file or a saved model that needs one that is not installed
is one line naming the package and the extra that brings it, not an ImportError
traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from livelearn.errors import ConfigError
from livelearn.features.hashing import hash_rows
from livelearn.join import flink
from livelearn.log import open_log
from livelearn.models import adapters
from livelearn.models.base import load_learner, save_learner
from livelearn.sim.pipeline import PIPELINE
from livelearn.spec import load_pipeline, new_learner
from livelearn.tables.store import open_store


def _uninstall(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    """Make ``import package`` (and of its modules) raise ModuleNotFoundError."""
    for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, package, None)


def _needs(package: str, extra: str) -> str:
    return (rf"needs the Python package '{package}', which is not installed: "
            rf"pip install 'livelearn\[{extra}\]'")


@pytest.mark.parametrize(("url", "opener", "package", "module"), [
    ("kafka://127.0.0.1:1", open_log, "confluent_kafka", "livelearn.log.kafka"),
    ("redis://127.0.0.1:1/0", open_store, "redis", "livelearn.tables.redis")])
def test_a_backend_without_its_client_names_the_extra(
        url: str, opener: Callable[[str], Any], package: str, module: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _uninstall(monkeypatch, package)
    monkeypatch.delitem(sys.modules, module, raising=False)
    scheme = url.partition("://")[0]
    with pytest.raises(ConfigError, match=rf"URL '{url}': the {scheme} backend "
                                          + _needs(package, scheme)):
        opener(url)


def test_the_flink_join_without_the_kafka_client_names_the_extra(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jar = tmp_path / "connector.jar"
    jar.write_bytes(b"")
    monkeypatch.setenv("LIVELEARN_FLINK_JAR", str(jar))
    _uninstall(monkeypatch, "confluent_kafka")
    monkeypatch.delitem(sys.modules, "livelearn.log.kafka", raising=False)
    with pytest.raises(ConfigError, match=_needs("confluent_kafka", "kafka")):
        flink.run_flink_join(PIPELINE, "kafka://127.0.0.1:1")


@pytest.mark.parametrize(("make", "package", "extra"), [
    (lambda: adapters.RiverLearner(object()), "river", "river"),
    (lambda: adapters.SklearnLearner(object()), "sklearn", "sklearn"),
    (lambda: adapters.TorchLearner(object()), "torch", "torch"),
    (lambda: adapters.dnn(bits=4), "torch", "torch")])
def test_an_adapter_without_its_library_names_the_extra(
        make: Callable[[], Any], package: str, extra: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _uninstall(monkeypatch, package)
    monkeypatch.delitem(adapters.__dict__, "DNN", raising=False)
    with pytest.raises(ConfigError, match=_needs(package, extra)):
        new_learner(replace(PIPELINE, learner=make))


def test_a_pipeline_file_importing_a_missing_library_names_the_extra(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "p.py"
    path.write_text("from livelearn.sim.pipeline import PIPELINE\nimport river.linear_model\n")
    _uninstall(monkeypatch, "river")
    with pytest.raises(ConfigError, match=rf"^pipeline '{path}' at line 2 "
                                          + _needs("river", "river") + "$"):
        load_pipeline(str(path))


def test_a_saved_adapter_without_its_library_names_the_extra(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from river import linear_model

    learner = adapters.RiverLearner(linear_model.LogisticRegression(), bits=8)
    learner.predict_then_learn(hash_rows([{"x": "a"}], bits=8), np.array([1.0]))
    save_learner(learner, tmp_path / "v1.npz")
    _uninstall(monkeypatch, "river")
    with pytest.raises(ConfigError, match=r"v1.npz \(the 'river' adapter\) "
                                          + _needs("river", "river")):
        load_learner(tmp_path / "v1.npz", trusted=True)
