"""What the commands say: replay's report and summary, `join --until-idle`'s summary, an
empty join shard, `models` without a registry, option checks. In process, on real files
and a real SQLite log."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest

from livelearn.cli import main
from livelearn.log.sqlite import SQLiteLog
from test_ingest import PIPELINE_FILE, T

#: PIPELINE_FILE's pipeline, whose features are not learnable for some movies
BAD_FEATURES = PIPELINE_FILE.replace(
    'features=lambda e, rows, counts: {"movie": e.payload["movie"]}',
    'features=lambda e, rows, counts: {"movie": {"nan": float("nan"), "list": [1, 2]}'
    '.get(e.payload["movie"], e.payload["movie"])}')


def _ratings(path: Path, movies: list[str]) -> Path:
    path.write_bytes(b"".join(
        orjson.dumps({"user": f"u{i % 3}", "movie": movie, "stars": i % 5, "ts": T + 1000 * i})
        + b"\n" for i, movie in enumerate(movies)))
    return path


def _dead_letters(log_path: Path) -> list[dict]:
    log = SQLiteLog(log_path)
    try:
        return [orjson.loads(r.value) for r in log.read("dead_letters", 0, 0, 10_000)]
    finally:
        log.close()


@pytest.mark.parametrize("action", [[], ["ls"], ["promote", "1"], ["rollback"]])
def test_models_without_a_registry_says_so_and_makes_none(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], action: list[str]) -> None:
    missing = tmp_path / "nonexist"
    assert main(["models", "--registry", str(missing), *action]) == 2
    assert capsys.readouterr().err == f"livelearn: no registry at {missing}\n"
    assert not missing.exists()
    missing.mkdir()  # a folder, but no registry in it
    assert main(["models", "--registry", str(missing), *action]) == 2
    assert list(missing.iterdir()) == []
