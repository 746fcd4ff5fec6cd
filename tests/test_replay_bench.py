"""bench/replay.py runs and writes the figures README.md and docs/own-data.md quote."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_replay_benchmark_writes_its_figures_and_its_baselines(tmp_path: Path) -> None:
    out = tmp_path / "replay.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "replay.py"), "--events", "3000",
                           "--json", str(out)], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["events"] == result["samples"] == result["direct"]["events"] == 3000
    assert result["metric"] == "auc" and 0.5 < result["metric_value"] <= 1
    assert result["events_per_s"] > 0 and result["direct"]["events_per_s"] > 0
    ratio = result["events_per_s"] / result["direct"]["events_per_s"]
    assert abs(result["x_direct"] - ratio) < 0.002
    # the same events, tables, counter, features and learner: nearly the same AUC (the
    # baseline learns in file order, the replay in event-time order)
    assert abs(result["direct"]["metric_value"] - result["metric_value"]) < 0.02
    floor = result["one_loop"]  # the same work and log in one loop: the same samples
    assert floor["events"] == 3000 and floor["events_per_s"] > 0
    assert abs(floor["metric_value"] - result["metric_value"]) < 0.02
    assert abs(result["x_one_loop"] - result["events_per_s"] / floor["events_per_s"]) < 0.002
    dense = result["dense"]  # the same number of events, a second of event time
    assert dense["events_per_second_of_event_time"] == 3000 and dense["events_per_s"] > 0
    assert 0 < dense["metric_value"] <= 1
