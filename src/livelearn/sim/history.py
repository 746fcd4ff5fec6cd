"""The simulated feed as history files, as ``livelearn replay`` takes them.

``write_history`` writes the world's offline tables (users.csv, posts.csv), its
impressions (impressions.jsonl: request_id, ts, user, item) and the clicks and
reads the hidden truth decides for them (click.jsonl, read.jsonl: events in the
envelope, sorted by ts, then id). No server ranks the candidates: each request's
posts are shown in a random order (seeded), so the clicks do not depend on any
model and every model judged on this history faces the same impressions and the
same clicks. (In ``livelearn demo`` the served model ranks them; the position
bias then favours what it ranks first.)
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from livelearn.sim.world import NewsFeed
from livelearn.spec import PREDICTIONS


def write_tables(world: NewsFeed, directory: Path) -> None:
    """users.csv and posts.csv, the tables of the demo's pipeline, in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, rows in (("users.csv", world.users), ("posts.csv", world.posts)):
        with open(directory / name, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def write_history(world: NewsFeed, directory: Path, seed: int) -> list[tuple[str, str]]:
    """Write the tables and the streams to ``directory``; the (stream, file) pairs."""
    write_tables(world, directory)
    rng = np.random.default_rng(seed)
    feedback: list[dict[str, Any]] = []
    with open(directory / "impressions.jsonl", "wb") as f:
        for q, request in enumerate(world.requests()):
            order = rng.permutation(len(request.candidates)).tolist()
            shown = [(f"{q}-{i}", request.candidates[i]) for i in order]
            f.writelines(orjson.dumps({"request_id": rid, "ts": request.ts,
                                       "user": request.user_id, "item": post}) + b"\n"
                         for rid, post in shown)
            feedback += world.feedback(request, shown)
    feedback.sort(key=lambda e: (e["ts"], e["id"]))
    sources = []
    for stream in ("click", "read"):
        with open(directory / f"{stream}.jsonl", "wb") as f:
            f.writelines(orjson.dumps(e) + b"\n" for e in feedback if e["stream"] == stream)
        sources.append((stream, str(directory / f"{stream}.jsonl")))
    return sources + [(PREDICTIONS, str(directory / "impressions.jsonl"))]
