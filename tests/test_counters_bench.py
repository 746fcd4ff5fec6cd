"""bench/counters.py runs and writes its figures, each size against the smallest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_counters_benchmark_writes_each_size_against_the_smallest(tmp_path: Path) -> None:
    out = tmp_path / "counters.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "counters.py"), "--sizes",
                           "100,2000", "--json", str(out)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())["sizes"]
    assert [r["size"] for r in rows] == [100, 2000]
    assert rows[0]["counter_x_smallest"] == rows[0]["store_x_smallest"] == 1.0
    for r in rows:
        assert r["counter_us"] > 0 and r["store_us"] > 0
        assert abs(r["counter_x_smallest"] - r["counter_us"] / rows[0]["counter_us"]) < 0.01
