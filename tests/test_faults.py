"""A shorter run of bench/faults.py: SIGKILLed roles lose nothing, learn nothing twice, and
publish the metrics of a run never interrupted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

BENCH = Path(__file__).resolve().parent.parent / "bench" / "faults.py"


def _faults(tmp_path: Path, *args: str) -> dict[str, Any]:
    """bench/faults.py on 12,000 impressions with ``args``: its JSON, after checking that
    every sample came once, was learned once, and the samples, model and metrics are
    those of the run never interrupted."""
    out = tmp_path / "faults.json"
    done = subprocess.run([sys.executable, str(BENCH), *args, "--impressions", "12000",
                           "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = orjson.loads(out.read_bytes())
    assert result["samples_expected"] == result["samples_got"] == 12000
    assert result["samples_missing"] == result["samples_duplicated"] == 0
    assert result["learned_twice"] == 0
    assert result["samples_identical"] and result["model_identical"]
    assert result["metrics_identical"]
    return result


def test_kill_nine_at_random_moments_changes_nothing(tmp_path: Path) -> None:
    result = _faults(tmp_path, "--kills", "5", "--seed", "3")
    assert result["kills"] == 5
    assert result["kills_by_role"].get("join", 0) >= 1  # live: killed between its writes too
    assert result["versions"] > 2


def test_a_second_joiner_or_trainer_fences_the_first_off_and_nothing_is_written_twice(
        tmp_path: Path) -> None:
    """Takeovers among kills: each superseded joiner or trainer stops, fenced off (exit 2,
    'taken over'), at its next write, or had nothing left to write; no sample is written
    twice. Before claims, the same run wrote thousands of samples twice."""
    result = _faults(tmp_path, "--kills", "2", "--takeovers", "4", "--seed", "3")
    assert result["takeovers"] == 4
    assert result["superseded_fenced"] + result["superseded_idle"] == 4
    assert result["versions"] > 2


def test_kill_nine_of_sharded_joiners_over_two_partitions_changes_nothing(
        tmp_path: Path) -> None:
    """--partitions 2: two joiner shards (join --shard K/2), each killed on its own, and a
    trainer merging the two samples partitions."""
    result = _faults(tmp_path, "--partitions", "2", "--kills", "6", "--seed", "1")
    assert result["kills"] == 6
    assert set(result["kills_by_role"]) <= {"join0", "join1", "train", "serve"}
