"""Streaming and windowed metrics against plain batch computations on random data."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from livelearn.errors import BadInput, ConfigError, Corrupt, LivelearnError
from livelearn.train.metrics import (
    StreamingAUC,
    StreamingLogLoss,
    StreamingMAE,
    WindowedMetric,
    auc,
    log_loss,
    mae,
    make_metric,
    metric_from_state,
)

SEEDS = [0, 1, 2, 3, 4]
SIZES = [1, 2, 17, 500, 3000]
BATCH = {"auc": auc, "log_loss": log_loss, "mae": mae}


def data(seed: int, n: int, kind: str = "auc") -> tuple[np.ndarray, np.ndarray]:
    """Scores that carry some signal about binary labels (or regression targets for mae)."""
    rng = np.random.default_rng(seed)
    if kind == "mae":
        y = rng.normal(3.0, 2.0, n)
        return y + rng.normal(0.0, 1.0, n), y
    y = (rng.random(n) < 0.3).astype(np.float64)
    scores = 1.0 / (1.0 + np.exp(-(rng.normal(0.0, 1.0, n) + 1.2 * y - 0.5)))
    return scores, y


def splits(seed: int, n: int, max_batch: int) -> list[tuple[int, int]]:
    """Random consecutive [start, stop) batches covering range(n), some of them empty."""
    rng = np.random.default_rng(seed + 1000)
    out, start = [], 0
    while start < n:
        stop = min(n, start + int(rng.integers(0, max_batch + 1)))
        out.append((start, stop))
        start = stop
    return out


def pairwise_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """AUC by definition: over every (positive, negative) pair, ties count 1/2."""
    pos, neg = scores[labels > 0.5], scores[labels <= 0.5]
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def same(a: float, b: float, tol: float = 1e-12) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=tol, abs_tol=tol)


# ---------------------------------------------------------------- batch functions


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", [2, 10, 300])
@pytest.mark.parametrize("decimals", [None, 1, 2])
def test_auc_matches_pairwise_definition(seed: int, n: int, decimals: int | None) -> None:
    scores, labels = data(seed, n)
    if decimals is not None:  # many exact ties
        scores = np.round(scores, decimals)
    assert same(auc(scores, labels), pairwise_auc(scores, labels))


def test_auc_known_values() -> None:
    assert auc([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1]) == 1.0
    assert auc([0.1, 0.2, 0.3, 0.4], [1, 1, 0, 0]) == 0.0
    assert auc([0.5] * 6, [0, 1, 0, 1, 1, 0]) == 0.5
    assert auc(np.array([0.3, 0.7]), np.array([False, True])) == 1.0


@pytest.mark.parametrize("labels", [[], [0, 0, 0], [1, 1]])
def test_auc_nan_when_a_class_is_absent(labels: list[int]) -> None:
    assert math.isnan(auc(np.linspace(0, 1, len(labels)), labels))


@pytest.mark.parametrize("seed", SEEDS)
def test_log_loss_and_mae_match_formulas(seed: int) -> None:
    scores, labels = data(seed, 200)
    expected = -np.mean(labels * np.log(scores) + (1 - labels) * np.log(1 - scores))
    assert same(log_loss(scores, labels), float(expected), 1e-10)
    preds, targets = data(seed, 200, "mae")
    assert same(mae(preds, targets), float(np.mean(np.abs(preds - targets))))


def test_log_loss_clips_certain_scores() -> None:
    assert log_loss([1.0, 0.0], [1, 0]) == pytest.approx(-math.log(1 - 1e-15))
    assert log_loss([0.0], [1]) == pytest.approx(-math.log(1e-15))
    assert math.isfinite(log_loss([1.0, 0.0], [0, 1]))


def test_empty_batch_functions_are_nan() -> None:
    assert math.isnan(log_loss([], []))
    assert math.isnan(mae([], []))


@pytest.mark.parametrize("fn", [auc, log_loss, mae])
def test_bad_input_is_refused(fn) -> None:
    with pytest.raises(BadInput, match="3 scores but 2 labels"):
        fn([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(BadInput, match="nan"):
        fn([0.1, math.nan], [0, 1])


@pytest.mark.parametrize("label", [2.0, -1.0, 1.0000001])
def test_log_loss_refuses_a_label_outside_0_1_naming_it(label: float) -> None:
    """Log loss is of a probability's outcome. Before: a label of 2 or -1 gave a number
    (a negative loss for 2), and a streaming or windowed log loss counted it, silently."""
    message = rf"log loss: label {label!r} \(row 1\) is outside \[0, 1\]"
    with pytest.raises(BadInput, match=message):
        log_loss([0.3, 0.6], [1.0, label])
    streaming, window = StreamingLogLoss(), WindowedMetric("log_loss", size=4)
    for metric in (streaming, window):
        metric.update([0.2], [0.0])
        with pytest.raises(BadInput, match=message):
            metric.update([0.3, 0.6], [1.0, label])
        assert metric.count == 1  # the batch refused is not counted
    assert streaming.get() == pytest.approx(-math.log(0.8))


# ---------------------------------------------------------------- streaming metrics


@pytest.mark.parametrize("kind", ["log_loss", "mae"])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("max_batch", [1, 7, 10_000])
def test_streaming_mean_metrics_match_batch(kind: str, seed: int, n: int, max_batch: int) -> None:
    scores, labels = data(seed, n, kind)
    metric = make_metric(kind)
    for start, stop in splits(seed, n, max_batch):
        metric.update(scores[start:stop], labels[start:stop])
        assert same(metric.get(), BATCH[kind](scores[:stop], labels[:stop]), 1e-9)
    assert metric.count == n


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("n", "max_batch"), [(n, 7) for n in SIZES] + [(200_000, 30_000)])
def test_streaming_auc_is_within_1e3_of_exact(seed: int, n: int, max_batch: int) -> None:
    scores, labels = data(seed, n)
    metric = StreamingAUC()
    for start, stop in splits(seed, n, max_batch):
        metric.update(scores[start:stop], labels[start:stop])
    exact = auc(scores, labels)
    assert metric.count == n
    assert same(metric.get(), exact) or abs(metric.get() - exact) <= 1e-3


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("bins", [1, 3, 64, 2**16])
def test_streaming_auc_is_exact_auc_of_binned_scores(seed: int, bins: int) -> None:
    scores, labels = data(seed, 2000)
    scores[:5] = [0.0, 1.0, -0.5, 1.5, 0.5]  # edges and out-of-range scores are clipped
    metric = StreamingAUC(bins)
    metric.update(scores, labels)
    binned = np.minimum(np.floor(np.clip(scores, 0, 1) * bins), bins - 1)
    assert same(metric.get(), auc(binned, labels))


def test_streaming_auc_with_ties_matches_exact() -> None:
    scores, labels = data(7, 3000)
    scores = np.round(scores, 2)
    metric = StreamingAUC()
    metric.update(scores, labels)
    assert same(metric.get(), auc(scores, labels))


@pytest.mark.parametrize("kind", ["auc", "log_loss", "mae"])
def test_streaming_empty_and_single_class_are_nan(kind: str) -> None:
    metric = make_metric(kind)
    assert math.isnan(metric.get()) and metric.count == 0
    metric.update([], [])
    assert math.isnan(metric.get())
    if kind == "auc":
        metric.update([0.2, 0.9], [1, 1])
        assert math.isnan(metric.get())


@pytest.mark.parametrize("kind", ["auc", "log_loss", "mae"])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("cut", [0, 1, 600, 1000])
def test_merge_equals_metric_on_concatenation(kind: str, seed: int, cut: int) -> None:
    scores, labels = data(seed, 1000, kind)
    a, b, whole = make_metric(kind), make_metric(kind), make_metric(kind)
    a.update(scores[:cut], labels[:cut])
    b.update(scores[cut:], labels[cut:])
    whole.update(scores, labels)
    merged = a + b
    assert type(merged) is type(whole)
    assert merged.count == whole.count == 1000
    assert same(merged.get(), whole.get(), 1e-12)
    assert a.count == cut  # the operands are left alone


def test_merge_refuses_other_types_and_bins() -> None:
    with pytest.raises(TypeError):
        StreamingMAE() + StreamingLogLoss()  # type: ignore[operator]
    with pytest.raises(ConfigError, match="bins"):
        StreamingAUC(64) + StreamingAUC(128)


def test_make_metric_names_the_bad_kind() -> None:
    assert isinstance(make_metric("auc"), StreamingAUC)
    assert isinstance(make_metric("log_loss"), StreamingLogLoss)
    assert isinstance(make_metric("mae"), StreamingMAE)
    with pytest.raises(ConfigError, match="'rmse'"):
        make_metric("rmse")


def test_streaming_auc_bins_must_be_positive() -> None:
    with pytest.raises(ConfigError):
        StreamingAUC(0)


def _saved(state: dict) -> dict:
    """A state as a version's details hold it: through JSON and back."""
    return orjson.loads(orjson.dumps(state))


@pytest.mark.parametrize("kind", ["auc", "log_loss", "mae"])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", [0, 1, 17, 3000])
def test_a_restored_metric_goes_on_as_the_one_saved(kind: str, seed: int, n: int) -> None:
    """Saved at every batch and restored (through JSON), a metric gives the same value as
    one never saved, bit for bit, and the batch function's on every sample so far."""
    scores, labels = data(seed, n, kind)
    whole, restarted = make_metric(kind), make_metric(kind)
    for start, stop in splits(seed, n, 500):
        whole.update(scores[start:stop], labels[start:stop])
        restarted = metric_from_state(_saved(restarted.state()))
        restarted.update(scores[start:stop], labels[start:stop])
        assert type(restarted) is type(whole) and restarted.count == whole.count == stop
        assert same(restarted.get(), whole.get(), 0.0)
        if kind == "auc":
            binned = np.minimum(np.floor(scores[:stop] * 2**16), 2**16 - 1)
            assert same(restarted.get(), auc(binned, labels[:stop]))
        else:
            assert same(restarted.get(), BATCH[kind](scores[:stop], labels[:stop]), 1e-9)


@pytest.mark.parametrize("kind", ["auc", "log_loss", "mae"])
def test_a_restored_metric_merges_as_the_one_saved(kind: str) -> None:
    scores, labels = data(5, 1000, kind)
    a, b = make_metric(kind), make_metric(kind)
    a.update(scores[:400], labels[:400])
    b.update(scores[400:], labels[400:])
    merged = metric_from_state(_saved(a.state())) + metric_from_state(_saved(b.state()))
    assert merged.count == 1000 and same(merged.get(), (a + b).get(), 0.0)


def test_an_auc_state_is_small() -> None:
    """Binned counts, packed: a version's details stay small whatever the sample count."""
    metric = StreamingAUC()
    sizes = []
    for seed in range(20):
        metric.update(*data(seed, 50_000))
        sizes.append(len(orjson.dumps(metric.state())))
    assert sizes[0] < 40_000 and max(sizes) < 200_000  # the raw counts: 1 MB


@pytest.mark.parametrize("state", [
    {"kind": "rmse"}, {"kind": "auc", "bins": 4, "count": 1, "pos": "u1:AAAA", "neg": "u1:"},
    {"kind": "auc", "bins": 4, "count": 1, "pos": 3, "neg": 4}, {"kind": "mae", "sum": "1"},
    {"kind": "mae", "sum": 1.0, "count": True}, {"bins": 4}, None])
def test_a_state_that_is_not_one_is_corrupt(state: dict) -> None:
    with pytest.raises(Corrupt, match="metrics: "):
        metric_from_state(state)


def test_a_state_of_another_kind_is_corrupt() -> None:
    with pytest.raises(Corrupt, match="'mae'; expected 'auc'"):
        StreamingAUC.from_state(StreamingMAE().state())
    packed = StreamingAUC(8).state()
    with pytest.raises(Corrupt, match="8 packed counts; expected 16"):
        StreamingAUC.from_state(packed | {"bins": 16})


# ---------------------------------------------------------------- windowed metrics


@pytest.mark.parametrize("kind", ["auc", "log_loss", "mae"])
@pytest.mark.parametrize("seed", SEEDS[:3])
@pytest.mark.parametrize("size", [1, 5, 64, 1000])
@pytest.mark.parametrize("max_batch", [1, 13, 3000])
def test_windowed_matches_batch_on_last_samples(
    kind: str, seed: int, size: int, max_batch: int
) -> None:
    n = 1300
    scores, labels = data(seed, n, kind)
    window = WindowedMetric(kind, size)
    for start, stop in splits(seed, n, max_batch):
        window.update(scores[start:stop], labels[start:stop])
        lo = max(0, stop - size)
        got_scores, got_labels = window.arrays()
        np.testing.assert_array_equal(got_scores, scores[lo:stop])
        np.testing.assert_array_equal(got_labels, labels[lo:stop])
        assert same(window.get(), BATCH[kind](scores[lo:stop], labels[lo:stop]))
        assert window.count == stop


@pytest.mark.parametrize("kind", ["auc", "log_loss", "mae"])
@pytest.mark.parametrize("cut", [0, 3, 50, 290, 300])
def test_windowed_merge_equals_window_on_concatenation(kind: str, cut: int) -> None:
    scores, labels = data(11, 300, kind)
    a, b, whole = (WindowedMetric(kind, 40) for _ in range(3))
    a.update(scores[:cut], labels[:cut])
    b.update(scores[cut:], labels[cut:])
    whole.update(scores, labels)
    merged = a + b
    assert merged.count == whole.count
    np.testing.assert_array_equal(merged.arrays()[0], whole.arrays()[0])
    assert same(merged.get(), whole.get())


def test_windowed_arrays_are_copies() -> None:
    window = WindowedMetric("mae", 3)
    window.update([1.0, 2.0], [0.0, 0.0])
    window.arrays()[0][:] = 99.0
    assert window.get() == 1.5


@pytest.mark.parametrize("size", [0, -1, 2.5])
def test_windowed_size_must_be_positive(size) -> None:
    with pytest.raises(ConfigError, match="size"):
        WindowedMetric("auc", size)


def test_windowed_kind_is_checked_and_errors_share_the_root() -> None:
    with pytest.raises(ConfigError, match="'accuracy'") as info:
        WindowedMetric("accuracy", 10)
    assert isinstance(info.value, LivelearnError)
    with pytest.raises(ConfigError):
        WindowedMetric("auc", 10) + WindowedMetric("auc", 20)


def test_windowed_empty_is_nan() -> None:
    window = WindowedMetric("log_loss", 10)
    assert math.isnan(window.get()) and window.count == 0
    assert [len(a) for a in window.arrays()] == [0, 0]


@pytest.mark.parametrize("kind", ["auc", "log_loss", "mae"])
@pytest.mark.parametrize("seed", SEEDS[:3])
@pytest.mark.parametrize("size", [1, 5, 64, 1000])
def test_a_restored_window_goes_on_as_the_one_saved(kind: str, seed: int, size: int) -> None:
    n = 1300
    scores, labels = data(seed, n, kind)
    whole, restarted = WindowedMetric(kind, size), WindowedMetric(kind, size)
    for start, stop in splits(seed, n, 200):
        whole.update(scores[start:stop], labels[start:stop])
        restarted = WindowedMetric.from_state(_saved(restarted.state()))
        restarted.update(scores[start:stop], labels[start:stop])
        lo = max(0, stop - size)
        np.testing.assert_array_equal(restarted.arrays()[0], scores[lo:stop])
        np.testing.assert_array_equal(restarted.arrays()[1], labels[lo:stop])
        assert restarted.count == whole.count == stop
        assert same(restarted.get(), whole.get(), 0.0)
        assert same(restarted.get(), BATCH[kind](scores[lo:stop], labels[lo:stop]))


def test_a_window_restored_smaller_keeps_the_most_recent() -> None:
    window = WindowedMetric("mae", 5)
    window.update([1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0])
    smaller = WindowedMetric.from_state(window.state() | {"size": 2})
    assert smaller.arrays()[0].tolist() == [3.0, 4.0] and smaller.count == 4
    larger = WindowedMetric.from_state(window.state() | {"size": 8, "count": 40})
    larger.update([5.0], [0.0])  # fewer samples than its size: filled from what it has
    assert larger.arrays()[0].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0] and larger.count == 41


@pytest.mark.parametrize("change", [{"size": 0}, {"kind": "rmse"}, {"count": 1},
                                    {"scores": [1.0]}, {"labels": ["a", "b"]}])
def test_a_window_state_that_is_not_one_is_corrupt(change: dict) -> None:
    window = WindowedMetric("mae", 5)
    window.update([1.0, 2.0], [0.0, 0.0])
    with pytest.raises(Corrupt, match="metrics: "):
        WindowedMetric.from_state(window.state() | change)
