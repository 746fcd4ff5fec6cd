"""Clicks on shown items: a feedback join of impressions and clicks, with a user table.

An impression (the server's prediction record, or one from history) is
labelled clicked = 1 if a click with its request_id comes within 5 minutes.
Features, as the server builds them at the impression's time: the user, their
plan (``users.csv``: rows valid from ``updated_at`` on) and country, the
item's category (``items.csv``), the user x category cross, and two windowed
counters the servers keep in the online store: how often the item was shown
and how often the user clicked, in the hour before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from livelearn import spec
from livelearn.events import Event
from livelearn.models.ftrl import FTRL

HOUR_MS = 3_600_000
CLICKS = spec.Stream("clicks", {"request_id": str}, key="user", id="id")
COUNTERS = (spec.WindowCount("item_shown_1h", spec.PREDICTIONS, HOUR_MS, by="item", of="item"),
            spec.WindowCount("user_clicks_1h", "clicks", HOUR_MS, of="user"))


def features(user: Mapping[str, Any], item: Mapping[str, Any], ts: int,
             counts: Mapping[str, int]) -> dict[str, Any]:
    uid, category = str(user.get("user_id", "unknown")), str(item.get("category", "unknown"))
    return {"user": uid, "plan": str(user.get("plan", "unknown")),
            "country": str(user.get("country", "unknown")), "category": category,
            "user_x_category": f"{uid}|{category}",
            "item_shown_1h": str(min(counts["item_shown_1h"], 20) // 5),
            "user_clicks_1h": str(min(counts["user_clicks_1h"], 3))}


def label(events: Sequence[Event]) -> dict[str, float]:
    return {"clicked": float(any(e.stream == "clicks" for e in events))}


PIPELINE = spec.Pipeline(
    name="clicks",
    feedback=spec.FeedbackJoin(streams=(CLICKS,), window_ms=5 * 60_000, label=label),
    users=spec.Table("users", "data/users.csv", key="user_id", as_of="updated_at"),
    items=spec.Table("items", "data/items.csv", key="item_id"),
    counters=COUNTERS,
    features=features,
    learner=lambda: FTRL(bits=18, alpha=0.1, l1=0.1),
    target="clicked",
    policies=spec.Policies(publish_every_samples=5000, publish_every_ms=24 * 3_600_000),
)
