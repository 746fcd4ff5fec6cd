"""livelearn's learners against River and Vowpal Wabbit, on the same streams, in one run.

Every learner sees every sample of a stream once, prequentially: it scores the
sample, then learns from it. Streams are lists of (features dict, label) built
before any timing; the same list goes to every library.

- ``kernel`` (livelearn only): rows already hashed into arrays (untimed), then
  predict-and-learn over them.
- ``end_to_end``: from the list of dicts, timing everything livelearn needs (the
  declared FeatureSet's hashing, batching in micro-batches of 1024, labels)
  besides predict and learn. River gets each dict as it wants it (its
  LogisticRegression needs strings one-hot encoded: that comprehension is timed,
  its FM models do it themselves); Vowpal Wabbit gets a text line built from the
  dict, parsed, learned (one call that predicts before it updates) and finished.

Building a fresh model (a livelearn learner, a River estimator, a VW workspace)
is never timed.

Each speed is the best of fresh runs repeated until 1 s has passed (at most 3; a
peer that takes longer runs once). Metrics: AUC for binary labels, MAE for
numeric ones, over all prequential scores. Learners that start from random
factors (livelearn's and River's FM and FFM) run exactly 3 times, with seeds 0,
1 and 2, and their metric is the mean of the three: one lucky or unlucky draw
decides no comparison. The peers run with their defaults;
livelearn's learners with one setting each for every stream (listed in ``ours``:
defaults, but FTRL's alpha and the linear models' learning rates). Hashed models
have 2**20 buckets (FFM 2**18).

    python bench/learners.py --json bench-learners.json        # about 15 minutes
    python bench/learners.py --quick --json /tmp/quick.json    # about half a minute
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from livelearn.features.transforms import FeatureSet
from livelearn.models import (
    FTRL,
    FFMClassifier,
    FFMRegressor,
    FMClassifier,
    FMRegressor,
    LinearRegression,
    LogisticRegression,
)
from livelearn.models.base import Learner

Sample = tuple[dict[str, Any], float]
BITS = 20
CHUNK = 1024
SEEDS = (0, 1, 2)  # the runs of a learner that starts from random factors


# -- streams ---------------------------------------------------------------------------------

@dataclass
class Stream:
    name: str
    task: str  # "binary" or "regression"
    samples: list[Sample]
    about: str


def _clean(x: dict[Any, Any], scale: dict[str, float] | None = None) -> dict[str, Any]:
    """Names without '_' (River's FFM reads a name's field up to its first '_'), values
    without the characters that VW's text format reserves, numbers scaled where declared."""
    out: dict[str, Any] = {}
    for k, v in x.items():
        name = sys.intern(str(k).replace("_", ""))  # as JSON parsers share repeated keys
        if isinstance(v, str):
            out[name] = v.replace("|", "/").replace(":", ";").replace(" ", "-")
        else:
            out[name] = float(v) * (scale or {}).get(name, 1.0)
    return out


def _take(dataset: Any, n: int, scale: dict[str, float] | None = None,
          categorical: tuple[str, ...] = ()) -> list[Sample]:
    out = []
    for x, y in dataset.take(n) if hasattr(dataset, "take") else dataset:
        row = _clean(x, scale)
        for name in categorical:
            row[name] = str(int(row[name]))
        out.append((row, float(y)))
        if len(out) == n:
            break
    return out


def river_streams(n: int) -> list[Stream]:
    from river import datasets
    from river.datasets import synth

    agrawal_scale = {"salary": 1e-5, "commission": 1e-5, "age": 0.01, "hvalue": 1e-6,
                     "hyears": 1 / 30, "loan": 2e-6}
    agrawal = synth.ConceptDriftStream(synth.Agrawal(0, seed=42), synth.Agrawal(2, seed=42),
                                       seed=42, position=n // 2, width=n // 10)
    sea = synth.ConceptDriftStream(synth.SEA(0, seed=42), synth.SEA(2, seed=42), seed=42,
                                   position=n // 2, width=n // 10)
    trump_scale = {"ordinaldate": 1e-3} | {k: 0.01 for k in (
        "gallup", "ipsos", "morningconsult", "rasmussen", "yougov")}
    trump = [(x | {"ordinaldate": x["ordinaldate"] - 736.389}, y)
             for x, y in _take(datasets.TrumpApproval(), n, trump_scale)]
    return [
        Stream("hyperplane", "binary", _take(synth.Hyperplane(42, n_features=20,
                                                              mag_change=0.001), n),
               "River Hyperplane, 20 numeric features, drifting"),
        Stream("sea", "binary", _take(sea, n, {k: 0.1 for k in "012"}),
               "River SEA, 3 numeric, concept drift at the middle"),
        Stream("agrawal", "binary", _take(agrawal, n, agrawal_scale, ("elevel", "car", "zipcode")),
               "River Agrawal, 6 numeric + 3 categorical, concept drift at the middle"),
        Stream("phishing", "binary", _take(datasets.Phishing(), n),
               "River Phishing dataset, 9 numeric"),
        Stream("bananas", "binary", _take(datasets.Bananas(), n),
               "River Bananas dataset, 2 numeric"),
        Stream("friedman", "regression", _take(synth.FriedmanDrift(seed=42), n),
               "River FriedmanDrift, 10 numeric, drifting"),
        Stream("trump", "regression", trump, "River TrumpApproval dataset, 6 numeric"),
    ]


def feed_streams(n: int, seed: int = 3) -> list[Stream]:
    """The demo's news feed: the served features of each impression (candidates in a
    random order), labelled clicked (binary) and seconds read (regression)."""
    from livelearn.sim.pipeline import features
    from livelearn.sim.world import NewsFeed

    world = NewsFeed(seed=seed, impressions=n)
    users = {u["user_id"]: u for u in world.users}
    posts = {p["post_id"]: p for p in world.posts}
    rng = np.random.default_rng(seed)
    clicks, reads = [], []
    for q, request in enumerate(world.requests()):
        order = rng.permutation(len(request.candidates)).tolist()
        shown = [(f"{q}-{i}", request.candidates[i]) for i in order]
        events = world.feedback(request, shown)
        clicked = {e["payload"]["request_id"] for e in events if e["stream"] == "click"}
        seconds = {e["payload"]["request_id"]: float(e["payload"]["seconds"])
                   for e in events if e["stream"] == "read"}
        for rid, post in shown:
            x = _clean(dict(features(users[request.user_id], posts[post], request.ts)))
            clicks.append((x, float(rid in clicked)))
            reads.append((x, seconds.get(rid, 0.0)))
    about = "the demo's simulated feed, 12 hashed categorical features (ids and crosses)"
    return [Stream("feed", "binary", clicks, about + ", clicked"),
            Stream("feed-dwell", "regression", reads, about + ", seconds read")]


# -- metrics ---------------------------------------------------------------------------------

def auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC with ties counted half (average ranks)."""
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    ranks = np.empty(len(s))
    edges = np.flatnonzero(np.diff(s)) + 1
    starts, stops = np.r_[0, edges], np.r_[edges, len(s)]
    ranks[order] = np.repeat((starts + stops + 1) / 2.0, stops - starts)
    pos = y > 0.5
    n_pos, n_neg = pos.sum(), len(y) - pos.sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def metric(task: str, y: np.ndarray, score: np.ndarray) -> tuple[str, float]:
    if task == "binary":
        return "auc", auc(y, score)
    return "mae", float(np.mean(np.abs(y - score)))


# -- runners ---------------------------------------------------------------------------------
# A Runner builds a fresh model (untimed) and returns the timed part: a call that
# learns the whole stream prequentially and returns the scores.

Runner = Callable[[list[Sample], int], Callable[[], np.ndarray]]
Make = Callable[[int], Learner]  # a fresh learner from a seed (ignored where nothing is random)


def livelearn_end_to_end(make: Make, features: FeatureSet) -> Runner:
    def start(samples: list[Sample], seed: int) -> Callable[[], np.ndarray]:
        model = make(seed)
        bits = model.bits  # type: ignore[attr-defined]

        def run() -> np.ndarray:
            out = []
            for i in range(0, len(samples), CHUNK):
                batch, y = features.hash_pairs(samples[i:i + CHUNK], bits)
                out.append(model.predict_then_learn(batch, y))
            return np.concatenate(out)
        return run
    return start


def livelearn_kernel(make: Make, features: FeatureSet, samples: list[Sample]) -> Runner:
    batch = features.hash_rows([x for x, _ in samples], make(0).bits)  # type: ignore[attr-defined]
    y = np.array([t for _, t in samples], dtype=np.float64)

    def start(_: list[Sample], seed: int) -> Callable[[], np.ndarray]:
        model = make(seed)
        return lambda: model.predict_then_learn(batch, y)
    return start


def river_runner(make: Callable[[int], Any], task: str, one_hot: bool) -> Runner:
    def start(samples: list[Sample], seed: int) -> Callable[[], np.ndarray]:
        model = make(seed)

        def run() -> np.ndarray:
            out = np.empty(len(samples))
            for i, (x, y) in enumerate(samples):
                if one_hot:
                    x = {(f"{k}={v}" if isinstance(v, str) else k):
                         (1.0 if isinstance(v, str) else v) for k, v in x.items()}
                if task == "binary":
                    out[i] = model.predict_proba_one(x).get(True, 0.0)
                    model.learn_one(x, y > 0.5)
                else:
                    out[i] = model.predict_one(x)
                    model.learn_one(x, y)
            return out
        return run
    return start


def vw_runner(args: str, task: str) -> Runner:
    def start(samples: list[Sample], seed: int) -> Callable[[], np.ndarray]:
        from vowpalwabbit import pyvw

        vw = pyvw.Workspace(args + " --quiet")

        def run() -> np.ndarray:
            out = np.empty(len(samples))
            for i, (x, y) in enumerate(samples):
                label = ("1" if y > 0.5 else "-1") if task == "binary" else repr(y)
                line = label + " |f " + " ".join(
                    f"{k}={v}" if isinstance(v, str) else f"{k}:{v!r}" for k, v in x.items())
                ex = vw.parse(line)
                vw.learn(ex)
                out[i] = ex.get_simplelabel_prediction()
                vw.finish_example(ex)
            vw.finish()
            return out
        return run
    return start


# -- the line-up ------------------------------------------------------------------------------

@dataclass
class Entry:
    learner: str
    library: str
    group: str  # learners of a group are compared with the peers of the group
    task: str
    seeded: bool = False  # starts from random factors: run with each of SEEDS


def ours(task: str, n_fields: int) -> dict[str, tuple[Entry, Make]]:
    if task == "binary":
        table: dict[str, tuple[str, Make]] = {
            "ftrl": ("linear", lambda _: FTRL(bits=BITS, alpha=0.3)),
            "logreg-adagrad": ("linear", lambda _: LogisticRegression(bits=BITS)),
            "logreg-sgd": ("linear", lambda _: LogisticRegression(bits=BITS, optimizer="sgd",
                                                                  lr=0.05)),
            "fm": ("fm", lambda seed: FMClassifier(bits=BITS, seed=seed)),
            "ffm": ("ffm", lambda seed: FFMClassifier(n_fields=n_fields, seed=seed)),
        }
    else:
        table = {
            "linreg-adagrad": ("linear", lambda _: LinearRegression(bits=BITS, lr=0.5)),
            "linreg-sgd": ("linear", lambda _: LinearRegression(bits=BITS, optimizer="sgd",
                                                                lr=0.01)),
            "fm-regressor": ("fm", lambda seed: FMRegressor(bits=BITS, seed=seed)),
            "ffm-regressor": ("ffm", lambda seed: FFMRegressor(n_fields=n_fields, seed=seed)),
        }
    return {name: (Entry(name, "livelearn", group, task, seeded=group != "linear"), make)
            for name, (group, make) in table.items()}


def peers(task: str) -> list[tuple[Entry, Runner]]:
    from river import facto, linear_model

    b = f"-b {BITS}"
    if task == "binary":
        rows: list[tuple[str, str, str, Runner]] = [
            ("river.LogisticRegression", "river", "linear",
             river_runner(lambda _: linear_model.LogisticRegression(), task, one_hot=True)),
            ("river.FMClassifier", "river", "fm",
             river_runner(lambda seed: facto.FMClassifier(seed=seed), task, False)),
            ("river.FFMClassifier", "river", "ffm",
             river_runner(lambda seed: facto.FFMClassifier(seed=seed), task, False)),
            ("vw.logistic", "vw", "linear",
             vw_runner(f"--loss_function logistic --link logistic {b}", task)),
            ("vw.logistic-q", "vw", "fm,ffm",
             vw_runner(f"--loss_function logistic --link logistic {b} -q ff", task)),
        ]
    else:
        rows = [
            ("river.LinearRegression", "river", "linear",
             river_runner(lambda _: linear_model.LinearRegression(), task, one_hot=True)),
            ("river.FMRegressor", "river", "fm",
             river_runner(lambda seed: facto.FMRegressor(seed=seed), task, False)),
            ("river.FFMRegressor", "river", "ffm",
             river_runner(lambda seed: facto.FFMRegressor(seed=seed), task, False)),
            ("vw.squared", "vw", "linear", vw_runner(f"--loss_function squared {b}", task)),
            ("vw.squared-q", "vw", "fm,ffm", vw_runner(f"--loss_function squared {b} -q ff", task)),
        ]
    return [(Entry(name, lib, group, task, seeded=name.startswith(("river.FM", "river.FFM"))),
             run) for name, lib, group, run in rows]


# -- measuring --------------------------------------------------------------------------------

def measure(runner: Runner, samples: list[Sample], budget_s: float,
            seeded: bool) -> tuple[float, list[np.ndarray]]:
    """(best samples/s of fresh runs, the scores of each run).

    Runs until ``budget_s`` has passed, at most 3 (the best is the one least slowed
    by whatever else the machine was doing); ``seeded``: exactly one run per seed
    of SEEDS."""
    speeds: list[float] = []
    scores: list[np.ndarray] = []
    spent = 0.0
    while len(speeds) < len(SEEDS) and (not speeds or seeded or spent < budget_s):
        run = runner(samples, SEEDS[len(speeds)])
        gc.collect()
        start = time.perf_counter()
        scores.append(run())
        took = time.perf_counter() - start
        spent += took
        speeds.append(len(samples) / took)
    return max(speeds), scores


def warm_up(features: FeatureSet, makes: list[Make], samples: list[Sample]) -> None:
    """Compile (or load from numba's cache) every kernel before any timing."""
    xs, ys = zip(*samples[:50], strict=True)
    for make in makes:
        model = make(0)
        model.predict_then_learn(features.hash_rows(xs, model.bits),  # type: ignore[attr-defined]
                                 np.array(ys, dtype=np.float64))


def bench_stream(stream: Stream, budget_s: float,
                 log: Callable[[str], None]) -> list[dict[str, Any]]:
    features = FeatureSet.infer(stream.samples[0][0])
    y = np.array([t for _, t in stream.samples])
    mine = ours(stream.task, features.n_fields)
    warm_up(features, [make for _, make in mine.values()], stream.samples)
    records = []
    runs: list[tuple[Entry, str, Runner]] = []
    for entry, make in mine.values():
        runs.append((entry, "kernel", livelearn_kernel(make, features, stream.samples)))
        runs.append((entry, "end_to_end", livelearn_end_to_end(make, features)))
    runs += [(entry, "end_to_end", run) for entry, run in peers(stream.task)]
    for entry, mode, run in runs:
        speed, scores = measure(run, stream.samples, budget_s, entry.seeded)
        values = [metric(stream.task, y, s)[1] for s in scores]
        name, value = metric(stream.task, y, scores[0])[0], float(np.mean(values))
        record = {"learner": entry.learner, "library": entry.library, "group": entry.group,
                  "stream": stream.name, "mode": mode, "samples": len(stream.samples),
                  "samples_per_s": round(speed, 1), "metric": name,
                  "metric_value": None if value != value else round(value, 5)}
        if entry.seeded:  # the mean over SEEDS, and each seed's
            record["metric_by_seed"] = [None if v != v else round(v, 5) for v in values]
        records.append(record)
        seeds = " (" + " ".join(f"{v:.4f}" for v in values) + ")" if entry.seeded else ""
        log(f"  {entry.learner:26s} {mode:10s} {speed:>12,.0f}/s  {name} {value:.4f}{seeds}")
    return records


# -- report -----------------------------------------------------------------------------------

def best_peers(records: list[dict[str, Any]], stream: str, group: str) -> tuple[Any, Any]:
    """(fastest, most accurate) peer record of ``group`` on ``stream``."""
    peer = [r for r in records if r["stream"] == stream and r["library"] != "livelearn"
            and group in r["group"].split(",")]
    fastest = max(peer, key=lambda r: r["samples_per_s"])
    accurate = max(peer, key=lambda r: _goodness(r))
    return fastest, accurate


def _goodness(record: dict[str, Any]) -> float:
    """Higher is better: AUC, or minus MAE; a diverged (NaN) metric is the worst."""
    value = record["metric_value"]
    if value is None:
        return -float("inf")
    return value if record["metric"] == "auc" else -value


def table(records: list[dict[str, Any]]) -> str:
    lines = ["| stream | learner | mode | samples/s | x fastest peer | metric | value "
             "| vs best peer |", "|---|---|---|---:|---:|---|---:|---:|"]
    for r in records:
        if r["library"] == "livelearn":
            fastest, accurate = best_peers(records, r["stream"], r["group"])
            speed = f"{r['samples_per_s'] / fastest['samples_per_s']:.1f}"
            delta = _delta(r, accurate)
        else:
            speed, delta = "", ""
        lines.append(f"| {r['stream']} | {r['learner']} | {r['mode']} | "
                     f"{r['samples_per_s']:,.0f} | {speed} | {r['metric']} | "
                     f"{_fmt(r['metric_value'])} | {delta} |")
    return "\n".join(lines)


def find(records: list[dict[str, Any]], stream: str, learner: str, mode: str) -> dict[str, Any]:
    return next(r for r in records
                if (r["stream"], r["learner"], r["mode"]) == (stream, learner, mode))


def targets(records: list[dict[str, Any]]) -> str:
    """The issue's targets, checked stream by stream."""
    lines = []
    binary = sorted({r["stream"] for r in records if r["metric"] == "auc"})
    for s in binary:
        kernel = find(records, s, "ftrl", "kernel")["samples_per_s"]
        e2e = find(records, s, "ftrl", "end_to_end")
        river = find(records, s, "river.LogisticRegression", "end_to_end")
        vw = find(records, s, "vw.logistic", "end_to_end")
        best = max(_goodness(river), _goodness(vw))
        lines.append(
            f"{s}: ftrl kernel {kernel:,.0f}/s [{_ok(kernel >= 1e6)} >= 1M]; end_to_end "
            f"{e2e['samples_per_s'] / river['samples_per_s']:.1f}x River LR "
            f"[{_ok(e2e['samples_per_s'] >= 10 * river['samples_per_s'])} >= 10x], "
            f"{e2e['samples_per_s'] / vw['samples_per_s']:.1f}x VW "
            f"[{_ok(e2e['samples_per_s'] >= 3 * vw['samples_per_s'])} >= 3x]; AUC "
            f"{_goodness(e2e) - best:+.4f} vs best [{_ok(_goodness(e2e) >= best - 0.005)}]")
    for r in records:
        if (r["library"], r["mode"]) == ("livelearn", "end_to_end") and r["group"] != "linear":
            peer = "river." + {"fm": "FM", "ffm": "FFM"}[r["group"]] + (
                "Classifier" if r["metric"] == "auc" else "Regressor")
            p = find(records, r["stream"], peer, "end_to_end")
            ratio = r["samples_per_s"] / p["samples_per_s"]
            better = _goodness(r) >= _goodness(p)
            lines.append(f"{r['stream']}: {r['learner']} end_to_end {ratio:,.0f}x {peer} "
                         f"[{_ok(ratio >= 100)} >= 100x], {r['metric']} "
                         f"{_fmt(r['metric_value'])} vs {_fmt(p['metric_value'])} [{_ok(better)}]")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "nan" if value is None else f"{value:.4f}"


def _delta(record: dict[str, Any], peer: dict[str, Any]) -> str:
    """The metric minus the peer's (NaN when either diverged)."""
    if record["metric_value"] is None or peer["metric_value"] is None:
        return "nan"
    return f"{record['metric_value'] - peer['metric_value']:+.4f}"


def _ok(flag: bool) -> str:
    return "met" if flag else "NOT met"


# -- main -------------------------------------------------------------------------------------

def streams(quick: bool, only: set[str] | None) -> Iterator[Stream]:
    n, feed_n = (1_000, 2_000) if quick else (20_000, 50_000)
    wanted = (lambda name: True) if only is None else only.__contains__
    built = river_streams(n)
    if wanted("feed") or wanted("feed-dwell"):
        built += feed_streams(feed_n)
    yield from (s for s in built if wanted(s.name))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", help="write the records to this file")
    parser.add_argument("--quick", action="store_true", help="small streams: under a minute")
    parser.add_argument("--streams", help="comma-separated stream names (default: all)")
    args = parser.parse_args(argv)
    only = set(args.streams.split(",")) if args.streams else None
    records: list[dict[str, Any]] = []
    print(f"python {platform.python_version()} on {platform.machine()}, "
          f"{' '.join(sys.argv)}", flush=True)
    for stream in streams(args.quick, only):
        print(f"{stream.name} ({len(stream.samples)} samples): {stream.about}", flush=True)
        records += bench_stream(stream, 0.1 if args.quick else 1.0,
                                lambda line: print(line, flush=True))
    print("\n" + table(records) + "\n\n" + targets(records))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
