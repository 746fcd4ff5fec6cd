"""Hashing and declared transforms: the fast paths reproduce the plain-Python definitions."""

from __future__ import annotations

import enum
import math
import random
import re
from types import MappingProxyType
from typing import Any

import numpy as np
import orjson
import pytest

from livelearn.errors import BadInput, ConfigError
from livelearn.features.batch import SparseBatch
from livelearn.features.hashing import bucket, hash_rows, hash_rows_python
from livelearn.features.transforms import (
    Bucketized,
    Categorical,
    Cross,
    FeatureSet,
    Numeric,
    Text,
    cross_hash,
)

ODD_STRINGS = ["a", "é", 'x"y', "q\\z", "\n\t", "\x01", "\u2028", "", "日本", "a=b", "😀"]


def odd_value(rng: random.Random) -> Any:
    """Values whose text or float parsing is easy to get wrong."""
    return rng.choice([
        lambda: rng.random(), lambda: rng.randrange(-10**6, 10**6),
        lambda: round(rng.uniform(-1e3, 1e3), 2), lambda: rng.choice(ODD_STRINGS),
        lambda: rng.random() < 0.5, lambda: float(rng.randrange(10**17, 10**19)),
        lambda: 10.0 ** rng.randrange(-30, 30), lambda: -0.0, lambda: 2**63,
        lambda: rng.choice([float("nan"), float("inf"), 1e-5, 1.5e16, 10**18, 0.1 + 0.2]),
    ])()


def same(a: SparseBatch, b: SparseBatch) -> bool:
    parts = ["indices", "values", "offsets"] + (["fields"] if a.fields is not None else [])
    return all(np.array_equal(getattr(a, k), getattr(b, k), equal_nan=True)
               and getattr(a, k).dtype == getattr(b, k).dtype for k in parts)


def test_hash_rows_matches_its_definition_on_odd_values() -> None:
    rng = random.Random(0)
    names = ["a", "b", 'd"e', "é", "f\nk", "x_y"]
    rows = [{rng.choice(names) + str(rng.randrange(4)): odd_value(rng)
             for _ in range(rng.randrange(0, 8))} for _ in range(5000)]
    assert same(hash_rows(rows, 20), hash_rows_python(rows, 20))


def test_hash_rows_keeps_its_tokens() -> None:
    batch = hash_rows([{"topic": "sports", "age_h": 2, "new": True}], bits=18)
    assert batch.indices.tolist() == [bucket("__bias__", 18), bucket("topic=sports", 18),
                                      bucket("age_h", 18), bucket("new=True", 18)]
    assert batch.values.tolist() == [1.0, 1.0, 2.0, 1.0]


def test_hash_rows_falls_back_for_what_the_scan_cannot_read() -> None:
    rows: list[dict[Any, Any]] = [{"a": np.float32(1.5)}, {1: "x"}]
    assert same(hash_rows(rows, 16), hash_rows_python(rows, 16))
    with pytest.raises(TypeError):
        hash_rows([{"a": [1, 2]}], 16)
    with pytest.raises(TypeError):
        hash_rows([{"a": None}], 16)
    assert len(hash_rows([], 16)) == 0 and len(hash_rows([{}], 16).indices) == 1


def random_rows(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    values = [lambda: rng.random() * 30, lambda: rng.randrange(-10, 10),
              lambda: rng.choice(ODD_STRINGS), lambda: rng.random() < 0.5, lambda: None,
              lambda: float("nan"), lambda: round(rng.random(), 2)]
    rows = []
    for _ in range(n):
        row = {k: rng.choice(values)() for k in "abcde" if rng.random() < 0.8}
        if isinstance(row.get("b"), str):
            row["b"] = 1.0
        rows.append(row)
    return rows


FEATURES = FeatureSet([Categorical("a"), Numeric("b", 0.5), Bucketized("b", (0.1, 1.0, 5.0)),
                       Cross("a", "c"), Categorical("c"), Numeric("d"), Cross("a", "c", "e")])


def valid(row: dict[str, Any], features: FeatureSet = FEATURES) -> bool:
    try:
        features.hash_rows_python([row], 18)
    except BadInput:
        return False
    return True


def test_feature_set_matches_its_definition() -> None:
    rows = [r for r in random_rows(6000, 1) if valid(r)]
    assert len(rows) > 1000
    assert same(FEATURES.hash_rows(rows, 18), FEATURES.hash_rows_python(rows, 18))
    assert same(FEATURES.hash_rows(rows[:1], 18), FEATURES.hash_rows_python(rows[:1], 18))


def test_a_name_of_the_same_crc_as_a_declared_one_is_not_taken_for_it() -> None:
    """'plumless' and 'buckeroo' have the same CRC-32: the scan found a declared name by
    its CRC alone, so a row's 'buckeroo' was hashed as if it were 'plumless'."""
    assert bucket("plumless", 32) == bucket("buckeroo", 32)
    features = FeatureSet([Categorical("plumless"), Numeric("x")])
    rows = [{"buckeroo": "a", "x": 1.0}, {"x": 2.0, "buckeroo": 3, "plumless": "b"}]
    assert same(features.hash_rows(rows, 18), features.hash_rows_python(rows, 18))
    batch, _ = features.hash_pairs([(row, 1.0) for row in rows], 18)
    assert same(batch, features.hash_rows_python(rows, 18))
    assert features.hash_rows(rows, 18).fields.tolist() == [0, 2, 0, 1, 2]  # type: ignore[union-attr]


class Country(str, enum.Enum):  # noqa: UP042 - a mixin whose str() is not its value
    FR = "fr"


class Level(int, enum.Enum):
    HIGH = 3


def test_a_str_or_int_of_a_subclass_hashes_as_the_value_json_logs() -> None:
    """A feature of a (str, Enum) is logged as its value ("fr"), which the trainer learns;
    before, serving hashed it as f"{value}" ("country=Country.FR"), a bucket never learned:
    training and serving skewed, without a word."""
    row = {"country": Country.FR, "level": Level.HIGH, "n": Level.HIGH}
    logged = orjson.loads(orjson.dumps(row))  # what the trainer reads
    assert logged == {"country": "fr", "level": 3, "n": 3}
    assert same(hash_rows([row], 18), hash_rows([logged], 18))
    assert same(hash_rows_python([row], 18), hash_rows([logged], 18))
    features = FeatureSet([Categorical("country"), Categorical("level"), Numeric("n"),
                           Cross("country", "level")])
    assert same(features.hash_rows([row], 18), features.hash_rows([logged], 18))
    assert same(features.hash_rows_python([row], 18), features.hash_rows([logged], 18))


def test_hash_pairs_is_hash_rows_and_the_labels() -> None:
    rows = [r for r in random_rows(3000, 2) if valid(r)]
    rng = random.Random(2)
    labels: list[Any] = [rng.choice([rng.random(), rng.randrange(-5, 5), rng.random() < 0.5,
                                     np.float64(2.5), 2**70]) for _ in rows]
    pairs = list(zip(rows, labels, strict=True))
    pairs[7] = (MappingProxyType(rows[7]), labels[7])  # not a dict: read in Python
    batch, y = FEATURES.hash_pairs(pairs, 18)
    assert y.dtype == np.float64 and y.tolist() == [float(t) for t in labels]
    assert same(batch, FEATURES.hash_rows_python(rows, 18))
    with pytest.raises(BadInput, match="sample 1: the label must be a number"):
        FEATURES.hash_pairs([({}, 1.0), ({}, "yes")], 18)
    with pytest.raises(BadInput, match="sample 0: expected a .features, label. pair"):
        FEATURES.hash_pairs([[{}, 1.0]], 18)  # type: ignore[list-item]


def test_a_feature_set_of_a_rows_names_is_hash_rows() -> None:
    rows = [{"u": f"u{i % 100}", "x": i * 0.37, "t": "s" if i % 3 else "q", "f": i % 2 == 0}
            for i in range(1000)]
    features = FeatureSet.infer(rows[0])
    batch, plain = features.hash_rows(rows, 20), hash_rows(rows, 20)
    assert same(SparseBatch(batch.indices, batch.values, batch.offsets), plain)
    assert batch.fields is not None and batch.fields[:5].tolist() == [0, 1, 2, 3, 4]


def test_transforms_hash_what_they_declare() -> None:
    features = FeatureSet([Bucketized("age", (1.0, 6.0)), Cross("u", "t"), Numeric("n", 2.0)])
    batch = features.hash_rows([{"age": 6.0, "u": "a", "t": 3, "n": 4}, {"age": 0.5}], 18)
    crc = [bucket(t, 32) for t in ("u=a", "t=3")]
    assert batch.indices.tolist() == [bucket("__bias__", 18), bucket("age@2", 18),
                                      cross_hash(crc) & (2**18 - 1), bucket("n", 18),
                                      bucket("__bias__", 18), bucket("age@0", 18)]
    assert batch.values.tolist() == [1.0, 1.0, 1.0, 8.0, 1.0, 1.0]


def test_wrong_values_and_declarations_are_named() -> None:
    features = FeatureSet([Categorical("a"), Numeric("n")])
    with pytest.raises(BadInput, match="'n': expected a number"):
        features.hash_rows([{"n": "3"}], 16)
    with pytest.raises(BadInput, match="'a': categorical values"):
        features.hash_rows([{"a": 1.5}], 16)
    with pytest.raises(ConfigError, match="increasing"):
        Bucketized("x", (2.0, 1.0))
    with pytest.raises(ConfigError, match="two or more"):
        Cross("x")


@pytest.mark.parametrize("scale", [math.nan, math.inf, "0.5", None, True])
def test_a_numeric_scale_that_is_not_a_finite_number_is_refused(scale: Any) -> None:
    """Before: NaN or inf made every value of the feature NaN or inf (each sample dead-
    lettered by the trainer, as if the values were wrong), and a string was read as a
    number by the fast path but raised TypeError in Python, which the trainer did not
    take for a sample's fault: it stopped."""
    with pytest.raises(ConfigError, match=rf"^Numeric\('x'\): scale must be a finite "
                                          rf"number, got {re.escape(repr(scale))}"):
        Numeric("x", scale)
    assert [Numeric("x", s).scale for s in (2, -0.5, np.float64(0.25))] == [2, -0.5, 0.25]


TEXTS = FeatureSet([Categorical("a"), Text("t", ngrams=2), Numeric("b"), Text("a"),
                    Cross("a", "c")])
WORDS = ["Red", "car", "RED", "é", "日本", "a_b", "x-y", "!", "  ", "\n", "😀", "42"]


def test_text_features_match_their_definition() -> None:
    rng = random.Random(3)
    rows: list[dict[str, Any]] = []
    for row in random_rows(3000, 3):
        if rng.random() < 0.7:
            row["t"] = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(0, 9)))
        if not isinstance(row.get("a"), str):
            row.pop("a", None)
        rows.append(row)
    rows = [r for r in rows if valid(r, TEXTS)]
    assert len(rows) > 500
    assert same(TEXTS.hash_rows(rows, 18), TEXTS.hash_rows_python(rows, 18))
    pairs: list[Any] = [(r, 1) for r in rows]
    pairs[5] = (MappingProxyType(rows[5]), 1)  # not a dict: the kernel leaves it to Python
    batch, y = TEXTS.hash_pairs(pairs, 18)
    assert same(batch, TEXTS.hash_rows_python(rows, 18)) and y.tolist() == [1.0] * len(rows)
    alone = FeatureSet([Text("t")])
    assert same(alone.hash_rows(rows, 18), alone.hash_rows_python(rows, 18))


def test_a_text_is_its_distinct_words_and_ngrams_of_equal_weight() -> None:
    batch = FeatureSet([Categorical("u"), Text("title", ngrams=2)]).hash_rows(
        [{"title": "Red car, red!", "u": "x"}, {"title": "  "}, {}], 18)
    tokens = ["title~red", "title~car", "title~red car", "title~car red"]
    assert batch.indices.tolist() == [bucket(t, 18) for t in ["__bias__", "u=x", *tokens,
                                                              "__bias__", "__bias__"]]
    assert batch.values.tolist() == [1.0, 1.0, *[0.5] * 4, 1.0, 1.0]
    assert batch.fields is not None and batch.fields.tolist() == [0, 1, 2, 2, 2, 2, 0, 0]
    assert FeatureSet([Text("t")]).n_fields == 2


def test_text_takes_only_strings() -> None:
    with pytest.raises(BadInput, match="feature 'title': Text takes a string, got int 3"):
        FeatureSet([Text("title")]).hash_rows([{"title": "ok"}, {"title": 3}], 16)
    with pytest.raises(ConfigError, match=r"Text\('t'\): ngrams must be 1, 2 or 3, got 4"):
        Text("t", ngrams=4)
    with pytest.raises(ConfigError, match="is not a transform; expected .*Text"):
        FeatureSet(["title"])  # type: ignore[list-item]
