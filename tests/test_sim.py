"""The news-feed world: determinism, the constraints of its tables and streams, and drift."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from livelearn.errors import BadInput, ConfigError, NotFound
from livelearn.sim import START_MS, NewsFeed, Request
from livelearn.sim.world import DAY_MS, check_in_past

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
SMALL = {"impressions": 20_000, "users": 400, "new_users": 200, "authors": 50}


@dataclass
class Run:
    """A world played once: every request shown in the world's order, and its feedback."""

    world: NewsFeed
    requests: list[Request]
    shown: list[list[tuple[str, str]]]
    events: list[list[dict[str, Any]]]


def play(world: NewsFeed) -> Run:
    requests = list(world.requests())
    shown = [[(f"r{i}.{j}", post) for j, post in enumerate(r.candidates)]
             for i, r in enumerate(requests)]
    events = [world.feedback(r, s) for r, s in zip(requests, shown, strict=True)]
    return Run(world, requests, shown, events)


@pytest.fixture(scope="module")
def small() -> Run:
    return play(NewsFeed(seed=3, **SMALL))


@pytest.fixture(scope="module")
def full() -> Run:
    """The demo's default world: 20,000 requests of 10 candidates over 2 days."""
    return play(NewsFeed(seed=7))


def labels(run: Run) -> np.ndarray:
    """1.0 for each shown (request, post) that was clicked, in display order."""
    clicked = {e["payload"]["request_id"] for evs in run.events for e in evs
               if e["stream"] == "click"}
    return np.array([rid in clicked for shown in run.shown for rid, _ in shown], dtype=float)


def auc(scores: np.ndarray, y: np.ndarray) -> float:
    """Area under the ROC curve by average ranks (ties count one half)."""
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]
    pos = y.astype(bool)
    n_pos, n_neg = pos.sum(), len(y) - pos.sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def test_same_seed_same_world(small: Run) -> None:
    again = play(NewsFeed(seed=3, **SMALL))
    assert again.world.users == small.world.users
    assert again.world.posts == small.world.posts
    assert again.requests == small.requests
    assert again.events == small.events
    other = NewsFeed(seed=4, **SMALL)
    assert list(other.requests())[:50] != small.requests[:50]


def test_requests_replay_and_feedback_does_not_depend_on_call_order(small: Run) -> None:
    world = small.world
    assert list(world.requests()) == small.requests
    later = [world.feedback(r, s) for r, s in zip(small.requests[::-1], small.shown[::-1],
                                                      strict=True)]
    assert later[::-1] == small.events


def test_tables(small: Run) -> None:
    world = small.world
    assert [u["user_id"] for u in world.users] == [f"u{i}" for i in range(600)]
    assert {p["post_id"] for p in world.posts} == {f"p{i}" for i in range(len(world.posts))}
    signup = np.array([u["signup_ts"] for u in world.users])
    assert (signup < START_MS).sum() == 400  # 200 new users sign up during the run
    assert ((signup >= START_MS) & (signup < world.end_ms)).sum() == 200
    created = np.array([p["created_ts"] for p in world.posts])
    assert created.min() >= START_MS - 48 * HOUR_MS and created.max() < world.end_ms
    assert {u["country"] for u in world.users} <= {"US", "IN", "BR", "GB", "DE", "FR", "JP",
                                                   "MX", "NG", "ID"}


def test_requests_respect_time_signup_and_creation(small: Run) -> None:
    world, requests = small.world, small.requests
    assert len(requests) == 2000
    ts = np.array([r.ts for r in requests])
    assert (np.diff(ts) > 0).all()
    assert ts[0] >= START_MS and ts[-1] < START_MS + 2 * 24 * HOUR_MS == world.end_ms
    signup = {u["user_id"]: u["signup_ts"] for u in world.users}
    created = {p["post_id"]: p["created_ts"] for p in world.posts}
    for r in requests:
        assert signup[r.user_id] <= r.ts
        assert len(r.candidates) == len(set(r.candidates)) == 10
        assert all(created[p] <= r.ts for p in r.candidates)
    ages = np.array([r.ts - created[p] for r in requests for p in r.candidates])
    assert np.mean(ages <= 48 * HOUR_MS) > 0.99
    new_users_seen = {r.user_id for r in requests if signup[r.user_id] >= START_MS}
    assert len(new_users_seen) > 20  # cold-start users show up


def test_feedback_events(small: Run) -> None:
    ids = [e["id"] for evs in small.events for e in evs]
    assert len(ids) == len(set(ids))
    for request, shown, events in zip(small.requests, small.shown, small.events, strict=True):
        rids = {rid for rid, _ in shown}
        clicks = {e["payload"]["request_id"]: e for e in events if e["stream"] == "click"}
        assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
        for e in events:
            assert set(e) == {"stream", "key", "id", "ts", "payload"}
            assert e["key"] == request.user_id and e["payload"]["request_id"] in rids
            assert request.ts < e["ts"] < request.ts + 9 * MINUTE_MS
        for click in clicks.values():
            assert click["ts"] <= request.ts + 8 * MINUTE_MS
        for read in (e for e in events if e["stream"] == "read"):
            click = clicks[read["payload"]["request_id"]]  # a read only after a click
            assert read["ts"] - click["ts"] == round(read["payload"]["seconds"] * 1000)
            assert read["payload"]["seconds"] >= 5.0


def test_click_rate_and_truth_agree(full: Run) -> None:
    y = labels(full)
    world = full.world
    users = [r.user_id for r, s in zip(full.requests, full.shown, strict=True) for _ in s]
    posts = [p for s in full.shown for _, p in s]
    ts = [r.ts for r, s in zip(full.requests, full.shown, strict=True) for _ in s]
    ranks = [rank for s in full.shown for rank in range(len(s))]
    p = world.click_probabilities(users, posts, ts, ranks)
    assert 0.05 < y.mean() < 0.15
    assert abs(p.mean() - y.mean()) < 0.005  # the clicks are drawn from the truth
    assert auc(p, y) > 0.8  # and the truth is learnable from these ids and times
    reads = sum(e["stream"] == "read" for evs in full.events for e in evs)
    assert 0.9 < reads / y.sum() <= 1.0


def test_click_probability_is_pure(small: Run) -> None:
    world, request = small.world, small.requests[100]
    post = request.candidates[0]
    first = world.click_probability(request.user_id, post, request.ts, 0)
    world.feedback(request, small.shown[100])
    assert world.click_probability(request.user_id, post, request.ts, 0) == first
    assert 0.0 < first < 1.0
    assert world.click_probability(request.user_id, post, request.ts, 9) < first  # position


def test_a_frozen_click_table_falls_behind(full: Run) -> None:
    """A per-(user, topic) click-rate table fitted on the first 10% of impressions
    ranks the last 20% clearly worse than the same table fitted on 70-80%."""
    topic_of = {p["post_id"]: p["topic"] for p in full.world.posts}
    topic_index = {t: i for i, t in enumerate(sorted(set(topic_of.values())))}
    n_topics, n_users = len(topic_index), len(full.world.users)
    user = np.array([int(r.user_id[1:]) for r in full.requests for _ in r.candidates])
    topic = np.array([topic_index[topic_of[p]] for r in full.requests for p in r.candidates])
    key, y = user * n_topics + topic, labels(full)

    def fit(lo: int, hi: int, m: float = 5.0) -> np.ndarray:
        by_topic = ((np.bincount(topic[lo:hi], y[lo:hi], n_topics) + m * y[lo:hi].mean())
                    / (np.bincount(topic[lo:hi], minlength=n_topics) + m))
        clicks = np.bincount(key[lo:hi], y[lo:hi], n_users * n_topics)
        seen = np.bincount(key[lo:hi], minlength=n_users * n_topics)
        return (clicks + m * np.tile(by_topic, n_users)) / (seen + m)

    n = len(y)
    last = slice(8 * n // 10, n)
    frozen, fresh = fit(0, n // 10), fit(7 * n // 10, 8 * n // 10)
    assert auc(fresh[key[last]], y[last]) > auc(frozen[key[last]], y[last]) + 0.05


def test_tastes_drift_between_days_but_smoothly() -> None:
    """Users' tastes: their click logits over one post per topic, less what every user
    shares (each post's column mean: trend, freshness, quality). Alike an hour apart,
    different a day apart."""
    world = NewsFeed(seed=5)
    by_topic: dict[str, str] = {}
    for p in world.posts:
        by_topic.setdefault(p["topic"], p["post_id"])
    posts = list(by_topic.values())
    users = [u["user_id"] for u in world.users if u["signup_ts"] < START_MS][:200]

    def tastes(ts: int) -> np.ndarray:
        pairs = [(u, p) for u in users for p in posts]
        prob = world.click_probabilities([u for u, _ in pairs], [p for _, p in pairs],
                                         [ts] * len(pairs), [0] * len(pairs))
        logit = np.log(prob / (1.0 - prob)).reshape(len(users), len(posts))
        return logit - logit.mean(axis=0)

    def similarity(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.mean([np.corrcoef(x, y)[0, 1] for x, y in zip(a, b, strict=True)]))

    day1 = tastes(START_MS + 10 * HOUR_MS)
    assert len(posts) >= 20
    assert similarity(day1, tastes(START_MS + 11 * HOUR_MS)) > 0.9
    assert similarity(day1, tastes(START_MS + 34 * HOUR_MS)) < 0.5


def test_newcomers_share_their_demographics_tastes() -> None:
    """Before they sign up (and so at their first visit) users have the interests of
    their country and age group: same group, same click probability."""
    world = NewsFeed(seed=6, **SMALL)
    late = [u for u in world.users if u["signup_ts"] > START_MS + 12 * HOUR_MS]
    groups: dict[tuple[str, str], list[str]] = {}
    for u in late:
        groups.setdefault((u["country"], u["age_group"]), []).append(u["user_id"])
    pair = next(ids for ids in groups.values() if len(ids) >= 2)
    post = world.posts[0]["post_id"]
    p = [world.click_probability(u, post, START_MS + HOUR_MS, 0) for u in pair[:2]]
    assert p[0] == pytest.approx(p[1], abs=1e-6)
    old = [u["user_id"] for u in world.users if u["signup_ts"] < START_MS][:50]
    spread = [world.click_probability(u, post, START_MS + HOUR_MS, 0) for u in old]
    assert np.std(spread) > 0.01


def test_errors_name_what_is_wrong(small: Run) -> None:
    request = small.requests[0]
    with pytest.raises(BadInput, match="p999999"):
        small.world.feedback(request, [("r", "p999999")])
    with pytest.raises(NotFound, match="nobody"):
        small.world.click_probability("nobody", request.candidates[0], request.ts, 0)
    with pytest.raises(ConfigError, match="candidates"):
        NewsFeed(candidates=0)


def test_days_too_short_for_the_requests_or_infinite_are_refused() -> None:
    """Each request needs a ms of its own within the days; before, 1e-12 days divided by
    zero and inf overflowed, both as tracebacks."""
    for days in (1e-12, 199 / DAY_MS, math.inf, math.nan, 0.0, -1.0):
        with pytest.raises(ConfigError, match=f"days={days!r} is out of range"):
            NewsFeed(impressions=2000, days=days)
    world = NewsFeed(impressions=2000, days=200 / DAY_MS)  # 200 requests in 200 ms
    ts = [r.ts for r in world.requests()]
    assert ts == list(range(START_MS, START_MS + 200)) and world.end_ms == START_MS + 200


def test_a_feed_ending_after_now_is_refused() -> None:
    """The server and ingest refuse events from the future (5 minutes ahead at most)."""
    now = START_MS + 10 * DAY_MS
    check_in_past(10 - 10 * MINUTE_MS / DAY_MS, now)  # its feedback ends by now
    with pytest.raises(ConfigError) as refused:
        check_in_past(10.0, now)
    assert str(refused.value) == (
        "--days 10: the simulated feed starts on 2026-01-05 and would end after now "
        "(2026-01-15), but the server and ingest refuse events from the future; give at most "
        "--days 9.99")
