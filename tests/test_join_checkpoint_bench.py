"""bench/join_checkpoint.py runs and writes the figures README.md quotes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_join_checkpoint_benchmark_compares_writing_every_step_and_when_due(tmp_path: Path
                                                                           ) -> None:
    out = tmp_path / "join_checkpoint.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "join_checkpoint.py"),
                           "--rate", "10", "--seconds", "3", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "x_cpu" in done.stdout
    result = json.loads(out.read_text())
    every, due = result["every_step"], result["when_due"]
    for run in (every, due):
        assert run["open_windows"] > 6000 and run["state_kb"] > 1000  # 11 minutes at 10/s
        assert run["samples"] > 0  # the window moves on with the clock
    # a few events at a time are never worth a state of 6,000 windows: a write a second
    assert 1 <= due["writes"] <= 4 and every["writes"] >= due["writes"]
    assert result["x_cpu"] == round(every["cpu_per_wall_s"] / due["cpu_per_wall_s"], 1)
