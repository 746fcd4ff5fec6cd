"""Card fraud: each transaction carries its own label (is_fraud).

Features, all as of the transaction's time: the card's risk tier from
``cards.csv`` (rows valid from ``updated_at``), the merchant's category from
``merchants.csv``, the amount, and how many transactions the card made in the
hour before (a windowed counter).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from livelearn import spec
from livelearn.events import Event
from livelearn.models.ftrl import FTRL

HOUR_MS = 3_600_000

TRANSACTIONS = spec.Stream(
    "transactions", {"card": str, "merchant": str, "amount": float, "is_fraud": bool},
    key="card", id="tx_id")
CARDS = spec.Table("cards", "data/cards.csv", key="card_id", as_of="updated_at")
MERCHANTS = spec.Table("merchants", "data/merchants.csv", key="merchant_id")


def features(event: Event, rows: Mapping[str, Mapping[str, Any]],
             counts: Mapping[str, int]) -> dict[str, Any]:
    card, merchant = rows["cards"], rows["merchants"]
    amount = float(event.payload["amount"])
    category = str(merchant.get("category", "unknown"))
    return {
        "risk": str(card.get("risk", "unknown")),
        "country": str(card.get("country", "unknown")),
        "category": category,
        "merchant": str(event.payload["merchant"]),
        "log_amount": math.log1p(amount),
        "category_x_risk": f"{category}|{card.get('risk', 'unknown')}",
        "tx_last_hour": str(min(counts["card_tx_1h"], 5)),
    }


PIPELINE = spec.Pipeline(
    name="fraud",
    feedback=spec.EventLabel(TRANSACTIONS, label="is_fraud"),
    lookups=(spec.Lookup(CARDS), spec.Lookup(MERCHANTS, on="merchant")),
    counters=(spec.WindowCount("card_tx_1h", "transactions", window_ms=HOUR_MS),),
    features=features,
    learner=lambda: FTRL(bits=18, alpha=0.1, l1=0.1),
    target="is_fraud",
    policies=spec.Policies(publish_every_samples=5000, publish_every_ms=24 * HOUR_MS),
)
