"""bench/learners.py runs and writes the records that docs/bench-learners.md describes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"learner", "stream", "mode", "samples", "samples_per_s", "metric", "metric_value"}


def test_quick_benchmark_writes_its_records(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "learners.py"), "--quick",
                           "--streams", "bananas,trump", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    records = json.loads(out.read_text())
    assert all(KEYS <= set(r) for r in records)
    assert {r["stream"] for r in records} == {"bananas", "trump"}
    assert {r["mode"] for r in records} == {"kernel", "end_to_end"}
    assert {r["metric"] for r in records} == {"auc", "mae"}
    peers = {r["learner"] for r in records if r["library"] != "livelearn"}
    assert {"river.LogisticRegression", "river.FMClassifier", "river.FFMClassifier",
            "vw.logistic", "vw.logistic-q", "river.FMRegressor", "vw.squared"} <= peers
    assert all(r["samples_per_s"] > 0 for r in records)
    seeded = [r for r in records if r["group"] in ("fm", "ffm") and r["library"] != "vw"]
    assert {r["library"] for r in seeded} == {"livelearn", "river"}
    for r in seeded:  # random factors: the mean over three seeds
        assert len(r["metric_by_seed"]) == 3
        assert abs(r["metric_value"] - sum(r["metric_by_seed"]) / 3) < 1e-4
    assert not any("metric_by_seed" in r for r in records if r["group"] == "linear")
    assert "x fastest peer" in done.stdout and "ftrl kernel" in done.stdout
