"""Write a small, synthetic card-transaction history for the fraud example.

- ``transactions.jsonl``: one JSON object per line: tx_id, card, merchant,
  amount, ts (ms since the epoch, UTC) and the label is_fraud, known with the event.
- ``cards.csv``: each card's risk tier, which changes over time, and country: one
  row per change, valid from ``updated_at`` (ISO 8601, UTC) on.
- ``merchants.csv``: each merchant's category (static).

Fraud is more likely for a high-risk card (as of the transaction), at some
categories, for large amounts, and in bursts of transactions of one card.

    python examples/fraud/generate_data.py --out examples/fraud/data --rows 20000
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import random
from pathlib import Path

START_MS = 1_704_067_200_000  # 2024-01-01 00:00 UTC
DAY_MS = 86_400_000
CATEGORIES = {"grocery": -1.0, "fuel": -0.5, "travel": 0.5, "electronics": 1.0, "gift_cards": 2.0}


def generate(out: Path, rows: int, seed: int = 1, cards: int = 500, days: float = 14) -> None:
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    merchants = [(f"m{i}", rng.choice(list(CATEGORIES))) for i in range(100)]
    risk_changes = _cards(out / "cards.csv", rng, cards, days)
    with open(out / "merchants.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["merchant_id", "category"])
        w.writerows(merchants)
    times = sorted(START_MS + rng.randrange(int(days * DAY_MS)) for _ in range(rows))
    last: dict[str, int] = {}
    with open(out / "transactions.jsonl", "w") as f:
        for i, ts in enumerate(times):
            card = f"c{rng.randrange(cards)}"
            merchant, category = rng.choice(merchants)
            amount = round(math.exp(rng.gauss(3.5, 1.2)), 2)
            high = any(t <= ts for t in risk_changes.get(card, []))
            burst = ts - last.get(card, -DAY_MS) < 600_000
            last[card] = ts
            z = -4.0 + 2.0 * high + CATEGORIES[category] + 0.4 * math.log(amount) - 1.4 + \
                1.5 * burst
            fraud = rng.random() < 1 / (1 + math.exp(-z))
            f.write(json.dumps({"tx_id": f"t{i}", "card": card, "merchant": merchant,
                                "amount": amount, "ts": ts, "is_fraud": fraud}) + "\n")


def _cards(path: Path, rng: random.Random, cards: int, days: float) -> dict[str, list[int]]:
    """Write cards.csv; return, per card, the times it became high-risk."""
    high_since: dict[str, list[int]] = {}
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["card_id", "updated_at", "risk", "country"])
        for c in range(cards):
            card, country = f"c{c}", rng.choice(["FR", "DE", "US", "BR"])
            w.writerow([card, _iso(START_MS - DAY_MS), "low", country])
            if rng.random() < 0.3:
                when = START_MS + rng.randrange(int(days * DAY_MS))
                w.writerow([card, _iso(when), "high", country])
                high_since[card] = [when]
    return high_since


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    generate(a.out, a.rows, a.seed)
