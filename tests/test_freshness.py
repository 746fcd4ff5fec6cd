"""`livelearn study freshness`: the metric of each update interval, from one pass.

Checked against the trainer (every sample), a frozen model (never) and a plain
re-implementation that copies the model at every deploy (the intervals).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import orjson
import pytest

from livelearn.cli import main
from livelearn.errors import ConfigError
from livelearn.events import utc
from livelearn.log.memory import MemoryLog
from livelearn.registry import Registry
from livelearn.replay import replay
from livelearn.sim.history import write_history
from livelearn.sim.pipeline import PIPELINE
from livelearn.sim.world import NewsFeed
from livelearn.spec import new_learner
from livelearn.study.freshness import (
    FreshnessStudy,
    SampleRecorder,
    Samples,
    label_of,
    parse_intervals,
)
from livelearn.train.metrics import auc
from livelearn.train.trainer import Trained

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--impressions", "4000", "--days", "0.25", "--seed", "3"]


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Samples, np.ndarray]:
    """A small drifting feed's samples as the trainer learned them, and its scores."""
    folder = tmp_path_factory.mktemp("feed")
    sources = write_history(NewsFeed(seed=3, impressions=6000, days=0.25), folder, seed=3)
    recorder, trainer_scores = SampleRecorder(), []

    def keep(trained: Trained) -> None:
        recorder.add(trained)
        trainer_scores.append(trained.scores)

    replay(MemoryLog(), Registry(folder / "registry"), PIPELINE, sources, folder,
           on_trained=keep)
    return recorder.samples(), np.concatenate(trainer_scores)


def _study(samples: Samples, intervals: str, delay_ms: int = 0, warmup: float = 0.1
           ) -> FreshnessStudy:
    return FreshnessStudy(samples, new_learner(PIPELINE), parse_intervals(intervals), delay_ms,
                          warmup)


def _values(study: FreshnessStudy) -> dict[str, float]:
    return {r["label"]: r["metric_value"] for r in study.summary()["intervals"]}


def test_every_sample_is_the_trainers_prequential_score(feed: tuple[Samples, np.ndarray]
                                                         ) -> None:
    samples, trainer_scores = feed
    study = _study(samples, "every", warmup=0.0)
    assert study.start == 0
    assert np.array_equal(study.scores[0], trainer_scores)
    assert _values(study)["every sample"] == auc(trainer_scores, samples.labels)


def test_never_is_the_model_frozen_after_the_warm_up(feed: tuple[Samples, np.ndarray]) -> None:
    samples, _ = feed
    study = _study(samples, "never", warmup=0.2)
    warm = int(0.2 * len(samples.ts))
    frozen = new_learner(PIPELINE)
    frozen.learn(samples.batch.slice(0, warm), samples.labels[:warm])
    n = len(samples.ts)
    expected = frozen.predict(samples.batch.slice(study.start, n))
    assert np.array_equal(study.scores[0, study.start:], expected)
    # no scored sample was served before the warm-up's last label was final
    assert samples.ts[study.start] > samples.ends[warm - 1]
    assert study.summary()["intervals"][0]["deploys"] == 1


def _copied(samples: Samples, every_ms: int, delay_ms: int, warm: int, start: int
            ) -> np.ndarray:
    """The scores of the interval as the design states it: a copy of the learner at each
    multiple B of every_ms (window_end < B learned), serving from B + delay_ms."""
    learner, n = new_learner(PIPELINE), len(samples.ts)
    learner.learn(samples.batch.slice(0, warm), samples.labels[:warm])
    versions = [(-(2**62), learner.copy())]  # (cut, model): the warm-up model first
    scores = np.full(n, np.nan)
    for i in range(warm, n):
        cut = samples.ends[i] // every_ms * every_ms
        if i > warm and samples.ends[i - 1] < cut:  # a multiple crossed: every label before
            versions.append((cut, learner.copy()))
        while len(versions) > 1 and versions[1][0] + delay_ms <= samples.ts[i]:
            versions.pop(0)
        if i >= start:
            scores[i] = versions[0][1].predict(samples.batch.slice(i, i + 1))[0]
        learner.learn(samples.batch.slice(i, i + 1), samples.labels[i:i + 1])
    return scores


@pytest.mark.parametrize(("every_ms", "delay_ms"), [(600_000, 0), (1_800_000, 300_000)])
def test_an_interval_scores_as_copies_of_the_learner_would(
        feed: tuple[Samples, np.ndarray], every_ms: int, delay_ms: int) -> None:
    samples, _ = feed
    study = _study(samples, label_of(every_ms), delay_ms)
    warm = int(0.1 * len(samples.ts))
    expected = _copied(samples, every_ms, delay_ms, warm, study.start)
    np.testing.assert_allclose(study.scores[0, study.start:], expected[study.start:],
                               rtol=1e-12)
    versions = study.summary()["intervals"][0]["deploys"]
    assert 1 < versions <= 6 * 3600_000 // every_ms + 1


def test_a_delay_past_the_last_sample_is_named_as_the_cause(
        feed: tuple[Samples, np.ndarray]) -> None:
    """The warm-up's model would serve only after the last sample: the delay is said to
    be why, not the warm-up alone."""
    samples, _ = feed
    warm = int(0.1 * len(samples.ts))
    delay_ms = int(samples.ts.max() - samples.ends[warm - 1])  # serves 1 ms after the last
    with pytest.raises(ConfigError) as refused:
        _study(samples, "1h", delay_ms)
    assert str(refused.value) == (
        f"no sample is left to score: {len(samples.ts)} samples, the first {warm} of them "
        f"(--warmup 0.1) the warm-up, whose model serves from {utc(samples.ts.max() + 1)} "
        f"(its last label final plus --delay {label_of(delay_ms)}), and the other "
        f"{len(samples.ts) - warm} were all served by {utc(samples.ts.max())}; give a "
        f"history that goes on after then, a shorter --delay or a smaller --warmup (0 "
        f"scores every sample)")
    assert samples.ts[_study(samples, "1h", delay_ms - 1).start] == samples.ts.max()


def test_fresher_scores_higher_on_the_drifting_feed(feed: tuple[Samples, np.ndarray]) -> None:
    values = _values(_study(feed[0], "0,1m,1h,never"))
    assert values["every sample"] > values["never"]
    assert values["1m"] > values["never"]


@pytest.mark.parametrize(("args", "says"), [
    (["--intervals", "1m,5x"], "interval '5x': expected a whole number"),
    (["--delay=-5m"], "--delay '-5m': expected a whole number >= 0"),
    (["--intervals", "1h,99999999999999999999d"],
     "interval '99999999999999999999d': longer than any event time (at most 2932897d)"),
    (["--delay", "2932898d"], "--delay '2932898d': longer than any event time"),
    (["--days", "100000"], "--days 100000: the simulated feed starts on 2026-01-05 and "
                           "would end after now ("),
    (["--warmup", "1"], "--warmup '1': expected a share of the samples in [0, 1)"),
    (["--warmup", "-0.1"], "--warmup '-0.1'"),
    (["--warmup", "half"], "--warmup 'half'"),
    (["--events", "click=c.jsonl"], "--events and --data go with a PIPELINE"),
    (["livelearn.sim.pipeline:PIPELINE"], "give its history as --events"),
    (["livelearn.sim.pipeline:PIPELINE", "--impressions", "10", "--events", "a=b"],
     "--impressions: for the simulated feed"),
])
def test_bad_arguments_say_so_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          args: list[str], says: str) -> None:
    assert main(["-q", "study", "freshness", *args, "--json", str(tmp_path / "s.json")]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1 and err.startswith("livelearn: ")
    assert not (tmp_path / "s.json").exists()


def test_the_command_prints_the_table_and_writes_json_and_report(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_json, out_html = tmp_path / "s.json", tmp_path / "s.html"
    assert main(["-q", "study", "freshness", *SMALL, "--intervals", "never,10m,0",
                 "--delay", "1m", "--json", str(out_json), "--report", str(out_html)]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[1].startswith("every sample")
    data = orjson.loads(out_json.read_bytes())
    assert data["metric"] == "auc" and data["delay_ms"] == 60_000
    assert data["simulated"] == {"impressions": 4000, "days": 0.25, "seed": 3}
    assert set(data["inputs"]) == {"predictions", "click", "read"}
    assert [r["every_ms"] for r in data["intervals"]] == [0, 600_000, None]
    assert {k for r in data["intervals"] for k in r} == {"every_ms", "label", "metric_value",
                                                         "samples", "deploys"}
    assert all(r["samples"] == data["scored"] < data["samples"] for r in data["intervals"])
    page = out_html.read_text()
    assert page.count("<h2>") == 3 and "against how often" in page and "<script" not in page


def test_a_users_pipeline_and_files_as_replay_takes_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("gen", ROOT / "examples/clicks/generate_data.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    gen.generate(tmp_path / "data", impressions=3000)  # the tables are data/*.csv
    assert main(["-q", "study", "freshness", str(ROOT / "examples/clicks/pipeline.py"),
                 "--events", f"predictions={tmp_path / 'data/impressions.jsonl'}",
                 f"clicks={tmp_path / 'data/clicks.jsonl'}", "--data", str(tmp_path),
                 "--intervals", "0,1d,never", "--json", str(tmp_path / "s.json")]) == 0
    data = orjson.loads((tmp_path / "s.json").read_bytes())
    assert data["pipeline"] == "clicks" and data["samples"] == 3000
    assert all(r["metric_value"] > 0.5 for r in data["intervals"])


TINY = '''
from livelearn import spec
from livelearn.models.ftrl import FTRL

TX = spec.Stream("tx", {"g": str, "y": bool}, key="g", id="id")

PIPELINE = spec.Pipeline(
    name="tiny", feedback=spec.EventLabel(TX, label="y"),
    features=lambda event, rows, counts: {"g": str(event.payload["g"])},
    learner=lambda: FTRL(bits=10, alpha=0.5), target="y")
'''
START_MS = 1_704_067_200_000  # 2024-01-01 UTC


def _tiny(folder: Path, events: list[tuple[int, str, bool]], bad: list[str] = ()
          ) -> list[str]:
    """A label-in-event pipeline of one feature in ``folder``, its history (ts, g, y) and
    ``bad`` records after it: the study's arguments."""
    (folder / "tiny.py").write_text(TINY)
    lines = [orjson.dumps({"id": f"e{i}", "ts": ts, "g": g, "y": y}).decode()
             for i, (ts, g, y) in enumerate(events)]
    (folder / "tx.jsonl").write_text("\n".join([*lines, *bad]) + "\n")
    return [str(folder / "tiny.py"), "--events", f"tx={folder / 'tx.jsonl'}"]


def _history(n: int, span_ms: int, positive: float | None = None) -> list[tuple[int, str, bool]]:
    """n events over span_ms, group a mostly positive and b mostly not (every label
    ``positive`` if given)."""
    rng = np.random.default_rng(1)
    out = []
    for i, ts in enumerate(sorted(rng.integers(START_MS, START_MS + span_ms + 1, n).tolist())):
        g = "ab"[i % 2]
        y = bool(rng.random() < (0.8 if g == "a" else 0.2)) if positive is None else \
            bool(positive)
        out.append((ts, g, y))
    return out


def test_what_the_users_files_gave_is_said_as_replay_says_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A record dead-lettered at ingest is said (its file:line and reason) and counted, not
    only left in the JSON; an input whose every record was dead-lettered is an error."""
    args = _tiny(tmp_path, _history(400, 86_400_000), bad=['{"id": "x", "ts": 1, "g": 2}'])
    assert main(["-q", "study", "freshness", *args, "--intervals", "1h"]) == 0
    captured = capsys.readouterr()
    assert f"tx={tmp_path / 'tx.jsonl'}: 400 events appended, 1 dead-lettered" in captured.out
    assert "tx.jsonl:401: stream 'tx'" in captured.err
    assert "400 events, 400 samples, 1 dead letter (malformed_at_ingest 1)" in captured.out
    args = _tiny(tmp_path, [], bad=['{"id": "x", "ts": 1, "g": 2}'])
    assert main(["-q", "study", "freshness", *args]) == 2
    assert "no event was accepted from tx=" in capsys.readouterr().err


@pytest.mark.parametrize("positive", [True, False])
def test_labels_of_one_class_are_an_error_not_a_table_of_dashes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], positive: bool) -> None:
    args = _tiny(tmp_path, _history(200, 86_400_000, positive=positive))
    assert main(["-q", "study", "freshness", *args, "--json", str(tmp_path / "s.json")]) == 2
    which = "positive (> 0.5)" if positive else "negative (<= 0.5)"
    assert f"livelearn: AUC is not defined on the 180 samples scored (after the 20 of the " \
           f"warm-up): every label is {which}" in capsys.readouterr().err
    assert not (tmp_path / "s.json").exists()


def test_a_history_all_in_one_millisecond_is_named_as_the_cause(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every sample served in the warm-up's last millisecond: not "give more samples",
    which would not help, but when the warm-up's model serves and when the rest was served."""
    args = _tiny(tmp_path, [(START_MS, "ab"[i % 2], i % 3 == 0) for i in range(100)])
    assert main(["-q", "study", "freshness", *args]) == 2
    assert ("the first 10 of them (--warmup 0.1) the warm-up, whose model serves from "
            "2024-01-01T00:00:00.001Z (its last label final), and the other 90 were all "
            "served by 2024-01-01T00:00:00.000Z; give a history that goes on after then or a "
            "smaller --warmup (0 scores every sample)") in capsys.readouterr().err
    assert main(["-q", "study", "freshness", *args, "--warmup", "0"]) == 0


def test_the_lines_over_event_time_break_across_a_gap_of_days(
        tmp_path: Path) -> None:
    """Days without a sample are a gap of each interval's line over event time."""
    day = 86_400_000
    history = _history(300, day) + [(ts + 5 * day, g, y) for ts, g, y in _history(300, day)]
    args = _tiny(tmp_path, history)
    assert main(["-q", "study", "freshness", *args, "--intervals", "1h,never", "--warmup",
                 "0.05", "--report", str(tmp_path / "s.html")]) == 0
    over_time = (tmp_path / "s.html").read_text().split("<figure>")[2]
    assert over_time.count("<polyline") == 4  # two lines, each broken once
