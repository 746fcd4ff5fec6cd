"""The learners: batch-size invariance, bit-exact save and load, scores against numpy."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest

from livelearn.errors import BadInput, ConfigError
from livelearn.features.batch import SparseBatch
from livelearn.features.hashing import hash_rows
from livelearn.features.transforms import Categorical, Cross, FeatureSet, Numeric
from livelearn.models import (
    FTRL,
    FFMClassifier,
    FFMRegressor,
    FMClassifier,
    FMRegressor,
    Learner,
    LinearRegression,
    LogisticRegression,
    load_learner,
    save_learner,
)
from livelearn.models.base import Diverged
from livelearn.models.kernels import init_value

FEATURES = FeatureSet([Categorical("user"), Categorical("topic"), Numeric("age"),
                       Cross("user", "topic")])

LEARNERS: dict[str, Callable[[], Learner]] = {
    "ftrl": lambda: FTRL(bits=12, alpha=0.3, l1=0.1),
    "logreg-sgd": lambda: LogisticRegression(bits=12, optimizer="sgd", lr=0.05, l2=1e-4),
    "logreg-adagrad": lambda: LogisticRegression(bits=12),
    "linreg-adagrad": lambda: LinearRegression(bits=12, lr=0.3),
    "fm": lambda: FMClassifier(bits=12, k=4, l2_v=1e-4),
    "fm-sgd": lambda: FMClassifier(bits=12, k=4, optimizer="sgd"),
    "fm-regressor": lambda: FMRegressor(bits=12, k=4),
    "ffm": lambda: FFMClassifier(bits=12, n_fields=FEATURES.n_fields, k=3),
    "ffm-regressor": lambda: FFMRegressor(bits=12, n_fields=FEATURES.n_fields, k=3),
}


def stream(n: int = 3000, seed: int = 0) -> tuple[SparseBatch, np.ndarray, np.ndarray]:
    """Rows with fields, a click label and a numeric label: user and topic effects, a cross."""
    rng = np.random.default_rng(seed)
    users, topics = rng.integers(0, 20, n), rng.integers(0, 8, n)
    age = rng.random(n)
    rows = [{"user": f"u{u}", "topic": f"t{t}", "age": float(a)}
            for u, t, a in zip(users, topics, age, strict=True)]
    effect = np.random.default_rng(99).normal(size=(2, 20))
    cross = np.where((users + topics) % 3, 0.5, -0.5)
    logit = effect[0, users] + 2 * effect[1, topics] + cross - age
    clicks = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float64)
    return FEATURES.hash_rows(rows, bits=16), clicks, 3.0 * logit + rng.normal(size=n)


def labels_for(model: Learner, clicks: np.ndarray, numbers: np.ndarray) -> np.ndarray:
    return clicks if model.task == "binary" else numbers


def learn_in(model: Learner, batch: SparseBatch, y: np.ndarray, size: int) -> np.ndarray:
    scores = [model.predict_then_learn(batch.slice(i, min(i + size, len(batch))),
                                       y[i:i + size]) for i in range(0, len(batch), size)]
    return np.concatenate(scores)


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_state_does_not_depend_on_batch_size(name: str) -> None:
    batch, clicks, numbers = stream()
    runs = []
    for size in (1, 7, 1000):
        model = LEARNERS[name]()
        scores = learn_in(model, batch, labels_for(model, clicks, numbers), size)
        runs.append((scores, model.state()))
    for scores, state in runs[1:]:
        assert np.array_equal(scores, runs[0][0])
        assert state.keys() == runs[0][1].keys()
        for key in state:
            assert np.array_equal(state[key], runs[0][1][key]), key


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_a_reloaded_model_scores_bit_for_bit(name: str, tmp_path: Path) -> None:
    batch, clicks, numbers = stream()
    model = LEARNERS[name]()
    model.predict_then_learn(batch.slice(0, 2000), labels_for(model, clicks, numbers)[:2000])
    save_learner(model, tmp_path / "m.npz")
    loaded = load_learner(tmp_path / "m.npz")
    assert type(loaded) is type(model) and loaded.params() == model.params()
    assert np.array_equal(loaded.predict(batch), model.predict(batch))
    twin = model.copy()
    rest, y = batch.slice(2000, len(batch)), labels_for(model, clicks, numbers)[2000:]
    assert np.array_equal(twin.predict_then_learn(rest, y), loaded.predict_then_learn(rest, y))


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_prequential_scores_beat_chance(name: str) -> None:
    batch, clicks, numbers = stream()
    model = LEARNERS[name]()
    y = labels_for(model, clicks, numbers)
    scores = model.predict_then_learn(batch, y)[1000:]
    if model.task == "binary":
        y = y[1000:]
        pos, neg = scores[y == 1], scores[y == 0]
        assert (pos[:, None] > neg[None, :]).mean() > 0.7
    else:
        assert np.mean(np.abs(scores - y[1000:])) < 0.8 * np.mean(np.abs(y - y.mean()))


def test_predict_does_not_learn() -> None:
    batch, clicks, _ = stream(500)
    for make in LEARNERS.values():
        model = make()
        first = model.predict(batch)
        before = {k: v.copy() for k, v in model.state().items()}
        assert np.array_equal(model.predict(batch), first)
        assert all(np.array_equal(before[k], v) for k, v in model.state().items())
        assert model.predict_then_learn(batch.slice(0, 1), clicks[:1])[0] == first[0]


def dense(batch: SparseBatch, bits: int) -> np.ndarray:
    x = np.zeros((len(batch), 1 << bits))
    for r in range(len(batch)):
        lo, hi = batch.offsets[r], batch.offsets[r + 1]
        np.add.at(x[r], batch.indices[lo:hi] & ((1 << bits) - 1), batch.values[lo:hi])
    return x


def test_linear_scores_match_numpy() -> None:
    batch, clicks, numbers = stream(800)
    x = dense(batch, 12)
    ftrl, logreg = FTRL(bits=12, l1=0.2), LogisticRegression(bits=12)
    linreg = LinearRegression(bits=12)
    for model, y in ((ftrl, clicks), (logreg, clicks), (linreg, numbers)):
        model.predict_then_learn(batch, y)
    assert np.allclose(ftrl.predict(batch), 1 / (1 + np.exp(-x @ ftrl.weights())))
    assert np.allclose(logreg.predict(batch), 1 / (1 + np.exp(-x @ logreg.weights())))
    assert np.allclose(linreg.predict(batch), x @ linreg.weights())


def ftrl_reference(batch: SparseBatch, y: np.ndarray, alpha: float, beta: float, l1: float,
                   l2: float, bits: int) -> np.ndarray:
    """Prequential scores of FTRL-Proximal as McMahan et al. (2013), Algorithm 1, state it:
    plain Python, one coordinate at a time."""
    z: dict[int, float] = {}
    n: dict[int, float] = {}
    out = []
    for r in range(len(batch)):
        lo, hi = batch.offsets[r], batch.offsets[r + 1]
        x: dict[int, float] = {}
        for i, v in zip(batch.indices[lo:hi] & ((1 << bits) - 1), batch.values[lo:hi],
                        strict=True):
            x[int(i)] = x.get(int(i), 0.0) + float(v)
        w = {}
        for i in x:
            zi, ni = z.get(i, 0.0), n.get(i, 0.0)
            w[i] = 0.0 if abs(zi) <= l1 else -(zi - math.copysign(l1, zi)) / (
                (beta + math.sqrt(ni)) / alpha + l2)
        p = 1 / (1 + math.exp(-max(-35.0, min(35.0, sum(w[i] * x[i] for i in x)))))
        out.append(p)
        for i, xi in x.items():
            g, ni = (p - y[r]) * xi, n.get(i, 0.0)
            sigma = (math.sqrt(ni + g * g) - math.sqrt(ni)) / alpha
            z[i], n[i] = z.get(i, 0.0) + g - sigma * w[i], ni + g * g
    return np.array(out)


@pytest.mark.parametrize(("alpha", "beta", "l1", "l2"), [(0.1, 1.0, 0.0, 1.0),
                                                          (0.3, 0.5, 0.5, 0.1),
                                                          (1.0, 0.0, 2.0, 0.0)])
def test_ftrl_learns_as_the_papers_algorithm(alpha: float, beta: float, l1: float,
                                             l2: float) -> None:
    batch, clicks, _ = stream(800)
    model = FTRL(bits=10, alpha=alpha, beta=beta, l1=l1, l2=l2)
    scores = model.predict_then_learn(batch, clicks)
    assert np.allclose(scores, ftrl_reference(batch, clicks, alpha, beta, l1, l2, 10),
                       rtol=0, atol=1e-12)


@pytest.mark.parametrize("bias_pairs", [True, False])
def test_fm_scores_match_numpy(bias_pairs: bool) -> None:
    batch, _, numbers = stream(800)
    model = FMRegressor(bits=12, k=4, bias_pairs=bias_pairs)
    model.predict_then_learn(batch, numbers)
    w, v = model.state()["w"][:, 0, 0, 0], model.state()["v"][:, 0, 0, :].astype(np.float64)
    first = 0 if bias_pairs else 1  # the bias, each row's first feature, pairs or not
    expected = []
    for r in range(len(batch)):
        lo, hi = batch.offsets[r], batch.offsets[r + 1]
        i, x = batch.indices[lo:hi] & 4095, batch.values[lo:hi]
        pairs = sum(v[i[a]] @ v[i[b]] * x[a] * x[b]
                    for a in range(first, len(i)) for b in range(a + 1, len(i)))
        expected.append(w[i] @ x + pairs)
    assert np.allclose(model.predict(batch), np.clip(expected, numbers.min(), numbers.max()))


@pytest.mark.parametrize("make", [lambda: FMRegressor(bits=12, k=4),
                                  lambda: FFMRegressor(bits=12, n_fields=FEATURES.n_fields)])
def test_regressors_score_within_the_labels_learned(make: Callable[[], Learner]) -> None:
    batch, _, numbers = stream(400)
    model = make()
    scores = model.predict_then_learn(batch, np.full(len(batch), 5.0) + numbers / 100)
    lowest = np.minimum.accumulate(5.0 + numbers / 100)
    highest = np.maximum.accumulate(5.0 + numbers / 100)
    assert np.all((scores[1:] >= lowest[:-1]) & (scores[1:] <= highest[:-1]))
    assert abs(scores[-100:] - 5.0).max() < 0.2  # learned from the raw score, not the clipped one


def saved_without(model: Learner, param: str, folder: Path) -> Learner:
    """``model`` saved, then loaded from its file as written before ``param`` existed."""
    save_learner(model, folder / "new.npz")
    with np.load(folder / "new.npz") as data:
        arrays = {k: data[k] for k in data.files}
    meta = orjson.loads(arrays["__meta__"].tobytes())
    del meta["params"][param]
    arrays["__meta__"] = np.frombuffer(orjson.dumps(meta), dtype=np.uint8)
    np.savez(folder / "old.npz", **arrays)
    return load_learner(folder / "old.npz")


def test_a_factorization_saved_before_lr_w_steps_its_weights_with_lr(tmp_path: Path) -> None:
    old = saved_without(FFMClassifier(bits=10, n_fields=FEATURES.n_fields, lr=0.07), "lr_w",
                        tmp_path)
    assert isinstance(old, FFMClassifier) and old.lr_w == old.lr == 0.07


def test_a_factorization_saved_before_bias_pairs_pairs_its_bias(tmp_path: Path) -> None:
    batch, clicks, _ = stream(300)
    model = FFMClassifier(bits=12, n_fields=FEATURES.n_fields, bias_pairs=True)
    model.learn(batch, clicks)
    old = saved_without(model, "bias_pairs", tmp_path)
    assert isinstance(old, FFMClassifier) and old.bias_pairs
    assert np.array_equal(old.predict(batch), model.predict(batch))


def test_a_regressor_saved_before_clipping_loads_and_scores_as_saved(tmp_path: Path) -> None:
    batch, _, numbers = stream(300)
    model = FMRegressor(bits=12, k=4)
    model.learn(batch, numbers)
    save_learner(model, tmp_path / "new.npz")
    with np.load(tmp_path / "new.npz") as data:  # the file as it was before: no "seen"
        np.savez(tmp_path / "old.npz", **{k: data[k] for k in data.files if k != "state.seen"})
    old = load_learner(tmp_path / "old.npz")
    model.state()["seen"][:] = [np.inf, -np.inf]  # the scores the old version gave: unclipped
    assert np.array_equal(old.predict(batch), model.predict(batch))


@pytest.mark.parametrize("bias_pairs", [True, False])
def test_ffm_scores_match_numpy(bias_pairs: bool) -> None:
    batch, clicks, _ = stream(800)
    model = FFMClassifier(bits=12, n_fields=FEATURES.n_fields, k=3, bias_pairs=bias_pairs)
    model.predict_then_learn(batch, clicks)
    w, v = model.state()["w"][:, 0, 0, 0], model.state()["v"][:, 0].astype(np.float64)
    assert batch.fields is not None
    first = 0 if bias_pairs else 1
    expected = []
    for r in range(len(batch)):
        lo, hi = batch.offsets[r], batch.offsets[r + 1]
        i, x, f = batch.indices[lo:hi] & 4095, batch.values[lo:hi], batch.fields[lo:hi]
        score = w[i] @ x + sum(v[i[a], f[b]] @ v[i[b], f[a]] * x[a] * x[b]
                               for a in range(first, len(i)) for b in range(a + 1, len(i)))
        expected.append(1 / (1 + math.exp(-score)))
    assert np.allclose(model.predict(batch), expected)


@pytest.mark.parametrize("make", [lambda: FMRegressor(bits=12, k=4, bias_pairs=False),
                                  lambda: FFMRegressor(bits=12, n_fields=FEATURES.n_fields)])
def test_a_regressor_without_bias_pairs_starts_its_intercept_at_the_first_label(
        make: Callable[[], Learner]) -> None:
    seen = FEATURES.hash_rows([{"user": "u1", "topic": "t1", "age": 0.5}], bits=12)
    model = make()
    first = model.predict_then_learn(seen, np.array([40.0]))[0]
    weight = model.state()["w"][seen.indices[0], 0, 0, 0]  # the bias: the row's first
    assert 40.0 - first <= weight <= 40.0 - first + 0.5  # the whole error, then its step
    paired = FMRegressor(bits=12, k=4)  # its bias pairs: its factors learn the intercept too
    paired.learn(seen, np.array([40.0]))
    assert paired.state()["w"][seen.indices[0], 0, 0, 0] < 1.0


def test_latent_factors_start_as_small_noise() -> None:
    draws = np.array([init_value(7, c, 0.1) for c in range(20000)])
    assert abs(draws.mean()) < 0.005 and abs(draws.std() - 0.1) < 0.005
    assert draws.min() >= -0.1 * math.sqrt(3) and draws.max() <= 0.1 * math.sqrt(3)


def test_ffm_takes_positions_as_fields_without_fields() -> None:
    rows = [{"u": u, "i": i} for u in "abc" for i in "xyz"]
    plain = hash_rows(rows, bits=12)
    with_fields = FeatureSet([Categorical("u"), Categorical("i")]).hash_rows(rows, bits=12)
    y = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    a, b = FFMClassifier(bits=12, n_fields=3), FFMClassifier(bits=12, n_fields=3)
    assert np.array_equal(a.predict_then_learn(plain, y), b.predict_then_learn(with_fields, y))
    with pytest.raises(BadInput, match="n_fields"):
        FFMClassifier(bits=12, n_fields=2).predict(plain)
    with pytest.raises(BadInput, match="fields must be in"):
        FFMClassifier(bits=12, n_fields=2).predict(with_fields)


def test_indices_are_taken_modulo_the_model_size() -> None:
    rows = [{"a": "x", "n": 2.0}, {"a": "y"}]
    y = np.array([1.0, 0.0])
    for make in (lambda: FTRL(bits=10), lambda: FMClassifier(bits=10, k=2)):
        small, large = make(), make()
        assert np.array_equal(small.predict_then_learn(hash_rows(rows, 10), y),
                              large.predict_then_learn(hash_rows(rows, 24), y))


def test_bad_input_and_config_are_named() -> None:
    batch, clicks, _ = stream(10)
    with pytest.raises(BadInput, match="expected 10"):
        FTRL(bits=8).predict_then_learn(batch, clicks[:5])
    with pytest.raises(ConfigError, match="optimizer"):
        LogisticRegression(optimizer="adam")
    with pytest.raises(ConfigError, match="k must be"):
        FMClassifier(k=0)
    with pytest.raises(BadInput, match="shape"):
        FTRL(bits=8).set_state({"z": np.zeros(3), "n": np.zeros(3)})


def test_loading_garbage_says_so(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    path.write_bytes(b"not a model")
    with pytest.raises(BadInput, match="not a livelearn model"):
        load_learner(path)


def _meta(meta: object) -> dict[str, np.ndarray]:
    return {"__meta__": np.frombuffer(orjson.dumps(meta), dtype=np.uint8)}


@pytest.mark.parametrize(("spoil", "message"), [
    (lambda raw: raw[:len(raw) // 2], r"not a livelearn model \(BadZipFile: "),
    (lambda raw: b"", r"not a livelearn model \(ValueError: not an .npz archive"),
    (lambda raw: b'{"name": "ftrl"}', r"not a livelearn model \(ValueError: not an .npz "
                                      r"archive: it starts with b'\{\"na'\)"),
    (_meta([1, 2]), r"not a livelearn model \(its __meta__ is \[1, 2\]; expected an object"),
    (_meta({"name": "ftrl"}), r"not a livelearn model \(its __meta__ is \{'name': 'ftrl'\}"),
    (_meta({"name": "ftrl", "params": {"bogus": 1}}),
     r"its params \{'bogus': 1\} do not build a FTRL \(FTRL.__init__\(\) got an unexpected"),
    (_meta({"name": "ftrl", "params": {"bits": 2}}) | {"state.z": np.array(["a"] * 4),
                                                       "state.n": np.zeros(4)},
     r"model state 'z': expected numbers, got an array of <U1"),
])
def test_a_truncated_or_foreign_model_file_is_named(spoil: object, message: str,
                                                    tmp_path: Path) -> None:
    """Before: BadZipFile, EOFError, KeyError, TypeError or ValueError with a traceback, and
    for a file not a zip numpy's advice to load it with allow_pickle."""
    path = tmp_path / "m.npz"
    save_learner(FTRL(bits=8), path)
    if callable(spoil):
        path.write_bytes(spoil(path.read_bytes()))
    else:
        np.savez(path, **spoil)  # type: ignore[arg-type]
    with pytest.raises(BadInput, match=r"^model file .*m.npz: " + message
                       if "state" not in message else message):
        load_learner(path)


BAD_HYPERPARAMETERS: list[tuple[Callable[[], Learner], str]] = [
    (lambda: FTRL(alpha=-0.1), "FTRL: alpha must be a finite number > 0, got -0.1"),
    (lambda: FTRL(alpha=0.0), "FTRL: alpha must be a finite number > 0, got 0.0"),
    (lambda: FTRL(alpha=math.nan), "FTRL: alpha must be a finite number > 0, got nan"),
    (lambda: FTRL(l1=-1.0), "FTRL: l1 must be a finite number >= 0, got -1.0"),
    (lambda: FTRL(beta=math.inf), "FTRL: beta must be a finite number >= 0, got inf"),
    (lambda: FTRL(bits=0), "FTRL: bits must be an integer in [1, 32], got 0"),
    (lambda: FTRL(bits=-1), "FTRL: bits must be an integer in [1, 32], got -1"),
    (lambda: FTRL(bits=64), "FTRL: bits must be an integer in [1, 32], got 64"),
    (lambda: FTRL(bits=2.5), "FTRL: bits must be an integer in [1, 32], got 2.5"),  # type: ignore[arg-type]
    (lambda: LogisticRegression(lr=-1.0), "LogisticRegression: lr must be a finite number > 0"),
    (lambda: LinearRegression(lr=math.inf), "LinearRegression: lr must be a finite number > 0"),
    (lambda: LinearRegression(l2="0.1"), "LinearRegression: l2 must be a finite number >= 0, "  # type: ignore[arg-type]
                                         "got '0.1'"),
    (lambda: FMClassifier(k=2.5), "FMClassifier: k must be an integer >= 1, got 2.5"),  # type: ignore[arg-type]
    (lambda: FMClassifier(lr=-1.0), "FMClassifier: lr must be a finite number > 0"),
    (lambda: FMRegressor(init_std=math.nan), "FMRegressor: init_std must be a finite number >= 0"),
    (lambda: FMClassifier(seed=-1), "FMClassifier: seed must be an integer in "
                                    "[0, 9223372036854775807], got -1"),
    (lambda: FMClassifier(seed=2**63), "FMClassifier: seed must be an integer in "
                                       "[0, 9223372036854775807], got 9223372036854775808"),
    (lambda: FFMRegressor(seed=2**64), "FFMRegressor: seed must be an integer in "
                                       "[0, 9223372036854775807], got 18446744073709551616"),
    (lambda: FFMClassifier(n_fields=-1), "FFMClassifier: n_fields must be an integer >= 1"),
    (lambda: FFMRegressor(lr_w=math.nan), "FFMRegressor: lr_w must be a finite number > 0"),
]


@pytest.mark.parametrize(("make", "message"), BAD_HYPERPARAMETERS,
                         ids=[m for _, m in BAD_HYPERPARAMETERS])
def test_a_hyperparameter_out_of_range_is_named(make: Callable[[], Learner],
                                                message: str) -> None:
    """A negative, zero or NaN rate learned backwards or gave NaN scores; a bits out of
    range raised numpy's or Python's own error, a seed of 2**63 or more 'OverflowError:
    int too big to convert' at the first sample: each is a ConfigError naming it."""
    with pytest.raises(ConfigError) as raised:
        make()
    assert str(raised.value).startswith(message)


def test_a_numpy_number_as_a_hyperparameter_is_named() -> None:
    """A saved model's params are JSON, which holds no numpy numbers: refused when built."""
    with pytest.raises(ConfigError, match=r"FTRL: bits must be an integer in \[1, 32\], got "
                                          r"np.int64\(18\) \(a int64; expected a Python int\)"):
        FTRL(bits=np.int64(18))  # type: ignore[arg-type]


def test_tables_larger_than_the_machine_are_refused_not_killed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A table that would be zeroed up front (FTRL's) and holds more than the machine's
    memory is refused before any is made: the process would be killed, not told why."""
    from livelearn.models import base
    monkeypatch.setattr(base, "physical_memory", lambda: 2**30)  # as on a 1 GiB machine
    with pytest.raises(ConfigError, match=r"a learner's table of 2\.0 GiB cannot be made "
                                          r"\(more than this machine's memory, 1\.0 GiB\): "
                                          r"lower its bits"):
        FTRL(bits=27)
    assert FTRL(bits=20).bits == 20


#: Two rows of one feature each.
TWO_ROWS = SparseBatch(np.array([0, 1], dtype=np.int64), np.array([1.0, 1.0]),
                       np.array([0, 1, 2], dtype=np.int64))


@pytest.mark.parametrize(("name", "value"), [
    (name, value) for name in sorted(LEARNERS) for value in (1e200, math.nan, math.inf)
    if (name, value) != ("logreg-sgd", 1e200)])  # plain SGD squares nothing: no overflow
def test_a_value_that_spoils_the_weights_is_named_not_learned_silently(name: str,
                                                                       value: float) -> None:
    """Before: a value whose square overflows (1e200), or not finite, left NaN or inf
    weights and accumulators behind, while FTRL and the linear models went on scoring
    finite numbers (the bucket's weight stuck at 0), so nothing noticed."""
    batch, clicks, numbers = stream(20)
    model = LEARNERS[name]()
    y = labels_for(model, clicks, numbers)[:3]
    rows = SparseBatch(np.r_[batch.indices[:5], 7, 9], np.r_[batch.values[:5], 1.0, value],
                       np.array([0, 5, 7], dtype=np.int64))
    with pytest.raises(Diverged, match=rf"^{type(model).__name__}: learning row 1 of the "
                                       rf"batch \(largest \|value\| {re.escape(f'{value:.6g}')}, "
                                       rf"label .*\) left a weight that is not a finite "
                                       rf"number") as e:
        model.predict_then_learn(rows, y[:2])
    assert e.value.row == 1


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_labels_a_learner_cannot_learn_are_refused_before_learning(name: str) -> None:
    """Before: a NaN label spoiled the weights silently, and a classifier learned 2 or -1
    (the trainer dead-letters them, a learner used directly did not)."""
    model = LEARNERS[name]()
    before = {k: v.copy() for k, v in model.state().items()}
    bad = [math.nan, math.inf] + ([2.0, -1.0] if model.task == "binary" else [])
    for label in bad:
        with pytest.raises(BadInput, match=rf"^labels: row 1 is {label!r}; "
                                           rf"{type(model).__name__} learns"):
            model.predict_then_learn(TWO_ROWS, np.array([0.0, label]))
    assert all(np.array_equal(before[k], v) for k, v in model.state().items())


@pytest.mark.parametrize("make", [FMRegressor, FFMRegressor])
def test_undo_puts_back_the_label_range_whatever_the_bits(make: Callable[..., Learner]) -> None:
    """Before: with bits=1 the range of labels learned (2 numbers) was taken for a table of
    2**bits buckets, and only the buckets the batch touched were put back: a sample of
    label -1e300 that spoiled the weights left its label as the lowest learned."""
    model = make(bits=1)
    rows = hash_rows([{}], 1)  # the bias alone, in bucket 1
    model.learn(rows, np.array([5.0]))
    before = {k: v.copy() for k, v in model.state().items()}
    undo = model.undo_point(rows)
    assert undo is not None
    with pytest.raises(Diverged):
        model.learn(rows, np.array([-1e300]))
    undo()
    assert all(np.array_equal(before[k], v) for k, v in model.state().items())
    assert model.predict(rows).tolist() == [5.0]


@pytest.mark.parametrize("make", [lambda: FMRegressor(bits=12, k=4),
                                  lambda: FFMRegressor(bits=12, n_fields=FEATURES.n_fields)])
def test_a_regressors_nan_score_is_not_clipped_into_range(make: Callable[[], Learner]) -> None:
    """Before: a NaN score was clipped to a bound of the labels learned, so a NaN feature
    value (or spoiled weights) gave a plausible number, and no check saw it."""
    batch, _, numbers = stream(50)
    model = make()
    model.learn(batch, numbers[:50])
    nan_row = SparseBatch(batch.indices[:2], np.array([1.0, math.nan]),
                          np.array([0, 2], dtype=np.int64), batch.fields[:2]
                          if batch.fields is not None else None)
    assert math.isnan(model.predict(nan_row)[0])
