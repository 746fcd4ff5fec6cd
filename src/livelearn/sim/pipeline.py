"""The demo's pipeline: a news feed ranked by click probability.

Served features of one (user, post) candidate at event time ``ts`` (ms, UTC):
the user and post ids, the user's country and age group, the post's topic and
author, the post's age and the user's tenure (log-scale buckets), and the
crosses that let a model learn each user's interests and each topic's trend.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from livelearn.events import Event
from livelearn.features.hashing import Features
from livelearn.models.ftrl import FTRL
from livelearn.spec import FeedbackJoin, Pipeline, Policies, Stream, Table

HOUR_MS = 3_600_000
CLICK = Stream("click", {"request_id": str})
READ = Stream("read", {"request_id": str, "seconds": float})


def log_bucket(value: float) -> str:
    """A log2 bucket label for a non-negative quantity: '0', '1', '2-3', '4-7', ..."""
    if value < 1:
        return "0"
    k = int(math.log2(value))
    return "1" if k == 0 else f"{2 ** k}-{2 ** (k + 1) - 1}"


def features(user: Mapping[str, Any], post: Mapping[str, Any], ts: int) -> Features:
    """The features served for one candidate. Missing rows give 'unknown' values."""
    uid, topic = str(user.get("user_id", "unknown")), str(post.get("topic", "unknown"))
    country, age = str(user.get("country", "unknown")), str(user.get("age_group", "unknown"))
    age_h = max(0.0, (ts - int(post.get("created_ts", ts))) / HOUR_MS)
    tenure_d = max(0.0, (ts - int(user.get("signup_ts", ts))) / (24 * HOUR_MS))
    return {
        "user": uid,
        "country": country,
        "age_group": age,
        "post": str(post.get("post_id", "unknown")),
        "topic": topic,
        "author": str(post.get("author", "unknown")),
        "post_age_h": log_bucket(age_h),
        "tenure_d": log_bucket(tenure_d),
        "user_x_topic": f"{uid}|{topic}",
        "country_x_topic": f"{country}|{topic}",
        "age_x_topic": f"{age}|{topic}",
        "hour_x_topic": f"{ts // HOUR_MS % 24}|{topic}",
    }


def label(events: Sequence[Event]) -> dict[str, float]:
    """clicked = any click; dwell_s = the sum of read seconds."""
    clicked = any(e.stream == "click" for e in events)
    dwell = sum(float(e.payload["seconds"]) for e in events if e.stream == "read")
    return {"clicked": float(clicked), "dwell_s": dwell}


def learner() -> FTRL:
    return FTRL(bits=18, alpha=0.05, beta=1.0, l1=0.5, l2=1.0)


PIPELINE = Pipeline(
    name="news_feed",
    feedback=FeedbackJoin(streams=(CLICK, READ), window_ms=10 * 60_000, label=label,
                          allowed_lateness_ms=60_000),
    users=Table("users", "users.csv", key="user_id"),
    items=Table("posts", "posts.csv", key="post_id"),
    features=features,
    learner=learner,
    target="clicked",
    policies=Policies(publish_every_samples=5000, publish_every_ms=2 * HOUR_MS, gate_window=5000,
                      gate_tolerance=0.01),
)
