"""Write a small, synthetic click history for the click-feedback example.

- ``impressions.jsonl``: what was shown: request_id, ts (ms since the epoch,
  UTC), user, item.
- ``clicks.jsonl``: the clicks (id, user, ts), each naming the request_id it
  answers, a few seconds to minutes after the impression.
- ``users.csv``: each user's plan (free or premium), which changes over time, and
  country: one row per change, valid from ``updated_at`` (ms since the epoch) on.
- ``items.csv``: each item's category (static).

Users click the categories they like, premium users more often.

    python examples/clicks/generate_data.py --out examples/clicks/data --impressions 20000
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
from pathlib import Path

START_MS = 1_704_067_200_000  # 2024-01-01 00:00 UTC
DAY_MS = 86_400_000
CATEGORIES = ("news", "sports", "music", "tech", "food", "travel")


def generate(out: Path, impressions: int, seed: int = 1, users: int = 300, days: int = 7
             ) -> None:
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    items = [(f"i{i}", rng.choice(CATEGORIES)) for i in range(200)]
    likes = {f"u{u}": set(rng.sample(CATEGORIES, 2)) for u in range(users)}
    premium_since = _users(out / "users.csv", rng, users, days)
    with open(out / "items.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "category"])
        w.writerows(items)
    times = sorted(START_MS + rng.randrange(days * DAY_MS) for _ in range(impressions))
    clicks = []
    with open(out / "impressions.jsonl", "w") as f:
        for n, ts in enumerate(times):
            user = f"u{rng.randrange(users)}"
            item, category = rng.choice(items)
            rid = f"r{n}"
            f.write(json.dumps({"request_id": rid, "ts": ts, "user": user, "item": item}) + "\n")
            premium = premium_since.get(user, math.inf) <= ts
            z = -3.0 + 2.5 * (category in likes[user]) + 1.0 * premium
            if rng.random() < 1 / (1 + math.exp(-z)):
                clicks.append({"id": f"c{n}", "request_id": rid, "user": user,
                               "ts": ts + rng.randrange(1000, 120_000)})
    with open(out / "clicks.jsonl", "w") as f:
        for click in sorted(clicks, key=lambda c: c["ts"]):
            f.write(json.dumps(click) + "\n")


def _users(path: Path, rng: random.Random, users: int, days: int) -> dict[str, int]:
    """Write users.csv; return when each user who upgraded became premium."""
    since: dict[str, int] = {}
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "updated_at", "plan", "country"])
        for u in range(users):
            user, country = f"u{u}", rng.choice(["FR", "DE", "US", "JP"])
            w.writerow([user, START_MS - DAY_MS, "free", country])
            if rng.random() < 0.4:
                since[user] = START_MS + rng.randrange(days * DAY_MS)
                w.writerow([user, since[user], "premium", country])
    return since


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    p.add_argument("--impressions", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    generate(a.out, a.impressions, a.seed)
