"""The news-feed world: a seeded, hidden ground truth that the demo learns from.

A NewsFeed simulates a news app. It lists its users and posts up front (the
offline tables, future rows included), emits the stream of feed requests, and
decides what a user does with the posts shown: clicks, and reads after clicks.
Every time is integer milliseconds since the epoch, UTC.

Ground truth. User u clicks post p, shown at rank r (0 = top) at time t, with
probability sigmoid(logit), where logit is the sum of

- ``BASE_LOGIT``: the overall level (7 to 9 % of impressions shown in random
  order are clicked; more when a good model ranks them);
- interest of u in p's topic: a personal term plus a country term and an
  age-group term, each drifting over event time (below);
- the topic's trend: bell-shaped bumps in time, 0.7 to 1.5 logits high and a few
  hours wide, so topics rise and fade; trending topics also get more posts
  written and more candidate slots;
- fixed popularity and quality of the topic, the author and the post itself;
- freshness: ``-FRESH_DROP * (1 - exp(-age / FRESH_TAU_H))``, age in hours;
- position bias: ``-POSITION_BIAS * log2(1 + r)``;
- base rates of u's country and age group;
- hour of day: ``HOUR_AMPLITUDE * cos(2 pi (hour - PEAK_HOUR) / 24)``, UTC.

Drift. Each interest term is an Ornstein-Uhlenbeck process over event time,
drawn at knots every ``KNOT_H`` hours and interpolated linearly between them.
A personal interest forgets in ``PERSONAL_TAU_H`` hours, a demographic one in
``GROUP_TAU_H``: day-2 tastes differ clearly from day-1 tastes, so a model
frozen early in the stream falls behind one that keeps learning. A user who
signs up during the run (cold start) starts with the interests of their country
and age group; their personal term grows from zero, as an OU process started at
zero does.

Feedback. A click arrives ``CLICK_MIN_MS`` plus an exponential delay (mean about
30 s, at most 8 minutes) after the impression. A click is followed by a read
whose duration is lognormal (median ``READ_MEDIAN_S``, longer the more u is
interested in the topic), capped so that it ends within 9 minutes of the
impression; reads shorter than ``BOUNCE_S`` are bounces and emit no read event.
The randomness of a request's feedback is keyed by (seed, request ts, user), and
each candidate keeps its own draws whatever its rank: the answer does not depend
on the order of calls, and two rankers face the same luck.

>>> world = NewsFeed(seed=1, impressions=100, users=50, new_users=10, authors=20)
>>> request = next(world.requests())
>>> len(request.candidates), request.ts >= START_MS
(10, True)
>>> shown = [(f"r{i}", post) for i, post in enumerate(request.candidates)]
>>> events = world.feedback(request, shown)
>>> all(event["ts"] > request.ts for event in events)
True
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.random import PCG64, Generator, SeedSequence

from livelearn.errors import BadInput, ConfigError, NotFound

#: 2026-01-05T00:00:00Z (a Monday), in milliseconds since the epoch.
START_MS = 1_767_571_200_000

SECOND_MS = 1_000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

COUNTRIES = ("US", "IN", "BR", "GB", "DE", "FR", "JP", "MX", "NG", "ID")
COUNTRY_SHARES = (0.25, 0.18, 0.10, 0.08, 0.08, 0.07, 0.07, 0.06, 0.06, 0.05)
AGE_GROUPS = ("18-24", "25-34", "35-44", "45-54", "55+")
AGE_SHARES = (0.22, 0.30, 0.22, 0.15, 0.11)
TOPIC_NAMES = (
    "politics", "world", "business", "tech", "science", "health", "sports", "football",
    "basketball", "movies", "music", "gaming", "food", "travel", "fashion", "cars",
    "climate", "crypto", "education", "parenting", "pets", "art", "history", "space",
)  # fmt: skip

# The hidden truth, in logits unless a unit is named.
BASE_LOGIT = -2.0
PERSONAL_SD, PERSONAL_TAU_H = 0.9, 18.0
GROUP_SD, GROUP_TAU_H = 0.5, 36.0
TOPIC_SD, AUTHOR_SD, POST_SD = 0.3, 0.5, 0.3
COUNTRY_SD, AGE_SD = 0.25, 0.2
TRENDS_PER_TOPIC_DAY = 0.5
TREND_HEIGHT = (0.7, 1.5)
TREND_WIDTH_H = (2.0, 6.0)
FRESH_DROP, FRESH_TAU_H = 1.2, 12.0
POSITION_BIAS = 0.4
HOUR_AMPLITUDE, PEAK_HOUR = 0.2, 21.0

# How the world is sampled.
KNOT_H = 3.0  # interest knots; fewer (wider apart) when the run is long
MAX_KNOTS = 64
TREND_STEP_MS = 10 * MINUTE_MS
POST_WINDOW_MS = 48 * HOUR_MS  # candidates come from the posts of the last 48 h
POSTS_PER_IMPRESSIONS = 100  # one post for every 100 impressions
ACTIVITY_AMPLITUDE = 0.5  # requests per hour swing by +-50 % around the daily mean
MAX_SIGNUP_AGE_MS = 730 * DAY_MS
CANDIDATE_TREND = 0.7  # log-weight of a candidate per logit of its topic's trend
CANDIDATE_FRESH_PER_DAY = 1.0  # log-weight lost per day of a candidate's age

CLICK_MIN_MS, CLICK_MEAN_MS, CLICK_MAX_MS = 1 * SECOND_MS, 30 * SECOND_MS, 8 * MINUTE_MS
READ_MEDIAN_S, READ_INTEREST, READ_SIGMA = 30.0, 0.35, 0.8
READ_MAX_S, BOUNCE_S = 300.0, 5.0
FEEDBACK_HORIZON_MS = 9 * MINUTE_MS - SECOND_MS  # every event ends before 9 minutes

_WORLD, _REQUESTS, _FEEDBACK = 0, 1, 2  # spawn keys: independent random streams

#: Indices or times (ms): one numpy integer or an array of them; they broadcast together.
_Ints = np.ndarray | np.int64


@dataclass(frozen=True)
class Request:
    """One feed request: ``user_id`` opens the app at ``ts`` (ms since epoch, UTC).

    ``candidates`` are distinct post ids, all created at or before ``ts``.
    """

    ts: int
    user_id: str
    candidates: list[str]


@dataclass(frozen=True)
class _Users:
    signup: np.ndarray  # int64 ms, nondecreasing (rows are sorted by signup)
    country: np.ndarray  # int index into COUNTRIES
    age: np.ndarray  # int index into AGE_GROUPS
    activity: np.ndarray  # relative request rate, lognormal


@dataclass(frozen=True)
class _Posts:
    created: np.ndarray  # int64 ms, nondecreasing (rows are sorted by creation)
    topic: np.ndarray
    author: np.ndarray
    quality: np.ndarray  # logit


@dataclass(frozen=True)
class _Truth:
    interest: np.ndarray  # (users, knots, topics) float32: personal + country + age group
    user: np.ndarray  # (users,) base rate of the user's country and age group
    post: np.ndarray  # (posts,) popularity of the topic + quality of the author and post


@dataclass(frozen=True)
class _Clock:
    """Event-time grids: interest knots over [start, end], trend steps from start - 48 h."""

    start: int
    end: int
    knots: int
    knot_ms: float

    @classmethod
    def of(cls, start_ms: int, days: float) -> _Clock:
        end = start_ms + round(days * DAY_MS)
        knots = min(MAX_KNOTS, math.ceil((end - start_ms) / (KNOT_H * HOUR_MS))) + 1
        return cls(start_ms, end, knots, (end - start_ms) / (knots - 1))

    def knot_times(self) -> np.ndarray:
        return self.start + self.knot_ms * np.arange(self.knots)

    def knot(self, ts: _Ints) -> tuple[_Ints, np.ndarray]:
        """The knot at or before each ts and the weight of the next one (ts clamped)."""
        x = np.minimum(np.maximum((ts - self.start) / self.knot_ms, 0.0), self.knots - 1.0)
        k = np.minimum(x.astype(np.int64), self.knots - 2)
        return k, x - k

    @property
    def trend_start(self) -> int:
        return self.start - POST_WINDOW_MS

    def trend_steps(self) -> int:
        return (self.end - self.trend_start) // TREND_STEP_MS + 1

    def trend_step(self, ts: _Ints) -> _Ints:
        step = (ts - self.trend_start) // TREND_STEP_MS
        return np.minimum(np.maximum(step, 0), self.trend_steps() - 1)


class NewsFeed:
    """A seeded news-feed world: tables, a request stream and feedback from a hidden truth.

    ``impressions // candidates`` requests spread over ``days`` of event time from
    ``start_ms``. ``users`` have signed up before the start; ``new_users`` sign up
    during the run. There are ``impressions // 100`` posts (at least 20 per
    candidate slot) by ``authors`` authors on ``topics`` topics, created from 48 h
    before the start to the end. Same seed and same calls give the same output.
    """

    def __init__(self, seed: int = 7, impressions: int = 200_000, candidates: int = 10,
                 days: float = 2.0, users: int = 4000, new_users: int = 2000,
                 topics: int = 24, authors: int = 400, start_ms: int = START_MS) -> None:
        _check_config(seed, impressions, candidates, days, users, new_users, topics, authors)
        self.seed, self.impressions, self.candidates = seed, impressions, candidates
        self.days, self.start_ms = days, start_ms
        self._clock = _Clock.of(start_ms, days)
        rng = Generator(PCG64(SeedSequence(seed, spawn_key=(_WORLD,))))
        self._users = _draw_users(rng, users, new_users, self._clock)
        self._trend = _draw_trends(rng, topics, self._clock)
        n_posts = max(20 * candidates, impressions // POSTS_PER_IMPRESSIONS)
        self._posts = _draw_posts(rng, n_posts, candidates, authors, self._trend, self._clock)
        self._truth = _draw_truth(rng, self._users, self._posts, topics, authors, self._clock)
        self._topic_names = [_topic_name(t) for t in range(topics)]
        self._user_ids = [f"u{i}" for i in range(users + new_users)]
        self._post_ids = [f"p{i}" for i in range(n_posts)]
        self._user_index = {u: i for i, u in enumerate(self._user_ids)}
        self._post_index = {p: i for i, p in enumerate(self._post_ids)}
        self.users: list[dict[str, Any]] = self._user_rows()
        self.posts: list[dict[str, Any]] = self._post_rows()

    @property
    def end_ms(self) -> int:
        """The end of the run (exclusive), ms since epoch, UTC."""
        return self._clock.end

    def _user_rows(self) -> list[dict[str, Any]]:
        u = self._users
        return [{"user_id": uid, "country": COUNTRIES[c], "age_group": AGE_GROUPS[a],
                 "signup_ts": int(s)}
                for uid, c, a, s in zip(self._user_ids, u.country, u.age, u.signup, strict=True)]

    def _post_rows(self) -> list[dict[str, Any]]:
        p = self._posts
        return [{"post_id": pid, "topic": self._topic_names[t], "author": f"a{a}",
                 "created_ts": int(c)}
                for pid, t, a, c in zip(self._post_ids, p.topic, p.author, p.created, strict=True)]

    # -- the request stream --------------------------------------------------------------

    def requests(self) -> Iterator[Request]:
        """The requests, ts strictly increasing within [start_ms, end_ms).

        Activity follows a daily cycle (peak at 21:00 UTC). A user appears only at
        or after their signup_ts, heavy users more often. Candidates are distinct
        posts with created_ts <= ts, mostly from the last 48 h, fresher and
        trending ones more likely. Every call replays the same stream.
        """
        rng = Generator(PCG64(SeedSequence(self.seed, spawn_key=(_REQUESTS,))))
        n = self.impressions // self.candidates
        ts = _activity_times(rng, n, self._clock)
        who = _active_users(rng, ts, self._users)
        for t, u in zip(ts.tolist(), who.tolist(), strict=True):
            picked = self._pick_candidates(rng, t)
            yield Request(t, self._user_ids[u], [self._post_ids[p] for p in picked.tolist()])

    def _pick_candidates(self, rng: Generator, ts: int) -> np.ndarray:
        """Indices of k posts of the last 48 h (or the k latest), drawn without replacement
        with weight exp(CANDIDATE_TREND * trend - CANDIDATE_FRESH_PER_DAY * age), shuffled."""
        posts, k = self._posts, self.candidates
        hi = int(np.searchsorted(posts.created, ts, side="right"))
        lo = min(int(np.searchsorted(posts.created, ts - POST_WINDOW_MS)), hi - k)
        age_days = (ts - posts.created[lo:hi]) / DAY_MS
        trend = self._trend[:, self._clock.trend_step(np.int64(ts))][posts.topic[lo:hi]]
        gumbel = -np.log(rng.standard_exponential(hi - lo))  # top-k of log-weight + Gumbel
        score = CANDIDATE_TREND * trend - CANDIDATE_FRESH_PER_DAY * age_days + gumbel
        top = np.argpartition(-score, k - 1)[:k] if hi - lo > k else np.arange(hi - lo)
        return lo + rng.permutation(top)

    # -- the ground truth ----------------------------------------------------------------

    def click_probability(self, user_id: str, post_id: str, ts: int, rank: int) -> float:
        """P(click) of post_id shown to user_id at rank (0 = top) at ts (ms, UTC).

        Pure: consumes no randomness. ts outside the run is clamped to it for the
        drifting terms; a post's age counts from its created_ts (at least 0).
        """
        return float(self.click_probabilities([user_id], [post_id], [ts], [rank])[0])

    def click_probabilities(self, user_ids: Sequence[str], post_ids: Sequence[str],
                            ts: Sequence[int] | np.ndarray,
                            ranks: Sequence[int] | np.ndarray) -> np.ndarray:
        """click_probability element by element, over equally long sequences."""
        users = np.array([self._user(u) for u in user_ids], dtype=np.int64)
        posts = np.array([self._post(p) for p in post_ids], dtype=np.int64)
        return _sigmoid(self._logits(users, posts, np.asarray(ts, dtype=np.int64),
                                     np.asarray(ranks, dtype=np.int64)))

    def _user(self, user_id: str) -> int:
        try:
            return self._user_index[user_id]
        except KeyError:
            raise NotFound(f"user_id {user_id!r} is not a user of this world") from None

    def _post(self, post_id: str) -> int:
        try:
            return self._post_index[post_id]
        except KeyError:
            raise NotFound(f"post_id {post_id!r} is not a post of this world") from None

    def _interest(self, users: _Ints, topics: np.ndarray, ts: _Ints) -> np.ndarray:
        """Interest of users in topics at ts: personal + country + age group, interpolated."""
        k, w = self._clock.knot(ts)
        table = self._truth.interest
        return (1.0 - w) * table[users, k, topics] + w * table[users, k + 1, topics]

    def _logits(self, users: _Ints, posts: np.ndarray, ts: _Ints,
                ranks: np.ndarray) -> np.ndarray:
        topics = self._posts.topic[posts]
        age_h = np.maximum(ts - self._posts.created[posts], 0) / HOUR_MS
        hour = (ts % DAY_MS) / HOUR_MS
        return (BASE_LOGIT
                + self._interest(users, topics, ts)
                + self._trend[topics, self._clock.trend_step(ts)]
                + self._truth.post[posts] + self._truth.user[users]
                - FRESH_DROP * (1.0 - np.exp(-age_h / FRESH_TAU_H))
                - POSITION_BIAS * np.log2(1.0 + ranks)
                + HOUR_AMPLITUDE * np.cos(2.0 * np.pi * (hour - PEAK_HOUR) / 24.0))

    # -- feedback --------------------------------------------------------------------------

    def feedback(self, request: Request, shown: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """The click and read events that the truth decides for posts shown in this order.

        ``shown`` is [(request_id, post_id), ...], rank 0 first; each post must be
        one of the request's candidates. Returns events in the envelope, sorted by
        ts: ``{"stream": "click" | "read", "key": user_id, "id": ..., "ts": ...,
        "payload": {"request_id": ...}}``, a read's payload with ``"seconds"`` too.
        Ids are ``"click:<request_id>"`` and ``"read:<request_id>"``. A click comes
        1 s to 8 min after request.ts; its read ends before request.ts + 9 min.
        """
        user = self._user(request.user_id)
        slots = self._slots(request, shown)
        posts = np.array([self._post(request.candidates[s]) for s in slots], dtype=np.int64)
        ts, users = np.int64(request.ts), np.int64(user)  # scalars, broadcast over posts
        p = _sigmoid(self._logits(users, posts, ts, np.arange(len(slots))))
        key = SeedSequence(self.seed, spawn_key=(_FEEDBACK, request.ts, user))
        rng = Generator(PCG64(key))
        uniform = rng.random((2, len(request.candidates)))[:, slots]
        normal = rng.standard_normal(len(request.candidates))[slots]
        clicked = np.flatnonzero(uniform[0] < p)
        if len(clicked) == 0:
            return []
        delay = np.minimum(CLICK_MIN_MS - (CLICK_MEAN_MS - CLICK_MIN_MS)
                           * np.log1p(-uniform[1, clicked]), CLICK_MAX_MS).astype(np.int64)
        interest = self._interest(users, self._posts.topic[posts[clicked]], ts)
        read_ms = _read_ms(interest, normal[clicked], delay)
        return self._events(request, [shown[i][0] for i in clicked], delay, read_ms)

    def _slots(self, request: Request, shown: list[tuple[str, str]]) -> list[int]:
        """Each shown post's index among the request's candidates."""
        where = {post: i for i, post in enumerate(request.candidates)}
        try:
            return [where[post] for _, post in shown]
        except KeyError as e:
            raise BadInput(f"shown post {e.args[0]!r} is not a candidate of the request of "
                           f"{request.user_id} at ts {request.ts}") from None

    def _events(self, request: Request, rids: list[str], delay: np.ndarray,
                read_ms: np.ndarray) -> list[dict[str, Any]]:
        events = []
        for rid, d, r in zip(rids, delay.tolist(), read_ms.tolist(), strict=True):
            click_ts = request.ts + d
            events.append({"stream": "click", "key": request.user_id, "id": f"click:{rid}",
                           "ts": click_ts, "payload": {"request_id": rid}})
            if r >= BOUNCE_S * SECOND_MS:
                events.append({"stream": "read", "key": request.user_id, "id": f"read:{rid}",
                               "ts": click_ts + r,
                               "payload": {"request_id": rid, "seconds": r / SECOND_MS}})
        events.sort(key=lambda e: (e["ts"], e["id"]))
        return events


def _read_ms(interest: np.ndarray, normal: np.ndarray, delay_ms: np.ndarray) -> np.ndarray:
    """Read durations in ms: lognormal, longer with interest, ending by the horizon."""
    seconds = READ_MEDIAN_S * np.exp(READ_INTEREST * interest + READ_SIGMA * normal)
    cap_ms = np.minimum(READ_MAX_S * SECOND_MS, FEEDBACK_HORIZON_MS - delay_ms)
    return np.minimum(np.round(seconds * SECOND_MS), cap_ms).astype(np.int64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _topic_name(t: int) -> str:
    return TOPIC_NAMES[t] if t < len(TOPIC_NAMES) else f"topic{t}"


def _check_config(seed: int, impressions: int, candidates: int, days: float, users: int,
                  new_users: int, topics: int, authors: int) -> None:
    requests = impressions // max(candidates, 1)  # each in a ms of its own
    checks = {"seed": seed >= 0, "candidates": candidates >= 1,
              "impressions": impressions >= candidates,
              "days": math.isfinite(days) and 0 < requests <= round(days * DAY_MS),
              "users": users >= 1,
              "new_users": new_users >= 0, "topics": topics >= 1, "authors": authors >= 1}
    values = {"seed": seed, "impressions": impressions, "candidates": candidates, "days": days,
              "users": users, "new_users": new_users, "topics": topics, "authors": authors}
    for name, ok in checks.items():
        if not ok:
            raise ConfigError(f"NewsFeed: {name}={values[name]!r} is out of range (need seed "
                              ">= 0, impressions >= candidates >= 1, days of at least 1 ms "
                              "per request, users >= 1, new_users >= 0, topics >= 1, "
                              "authors >= 1)")


def check_in_past(days: float, now_ms: int, start_ms: int = START_MS) -> None:
    """ConfigError unless a world of ``days`` from ``start_ms`` (ms since the epoch, UTC) and
    its feedback end by ``now_ms``: the server and ingest refuse events from the future
    (events.MAX_FUTURE_MS), so the demo's requests would fail and the study would lose
    them. Checked before the world is built, which takes memory in proportion to days."""
    end = start_ms + days * DAY_MS + FEEDBACK_HORIZON_MS
    if end > now_ms:
        most = (now_ms - start_ms - FEEDBACK_HORIZON_MS) / DAY_MS
        raise ConfigError(f"--days {days:g}: the simulated feed starts on "
                          f"{_date(start_ms)} and would end after now ({_date(now_ms)}), "
                          f"but the server and ingest refuse events from the future; give "
                          f"at most --days {math.floor(most * 100) / 100:g}")


def _date(ms: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ms / 1000))


# -- drawing the world -------------------------------------------------------------------------


def _draw_users(rng: Generator, old: int, new: int, clock: _Clock) -> _Users:
    """Users sorted by signup: ``old`` signed up in the two years before the start,
    ``new`` sign up uniformly during the run."""
    before = clock.start - rng.integers(HOUR_MS, MAX_SIGNUP_AGE_MS, size=old)
    during = rng.integers(clock.start, clock.end, size=new)
    signup = np.sort(np.concatenate([before, during]).astype(np.int64))
    n = old + new
    return _Users(signup=signup,
                  country=rng.choice(len(COUNTRIES), size=n, p=COUNTRY_SHARES),
                  age=rng.choice(len(AGE_GROUPS), size=n, p=AGE_SHARES),
                  activity=rng.lognormal(0.0, 1.0, size=n))


def _draw_trends(rng: Generator, topics: int, clock: _Clock) -> np.ndarray:
    """Trend of each topic at each trend step (logits): a sum of Gaussian bumps."""
    t = clock.trend_start + TREND_STEP_MS * np.arange(clock.trend_steps())
    lo, hi = clock.start - 12 * HOUR_MS, clock.end + 12 * HOUR_MS
    trend = np.zeros((topics, len(t)))
    per_topic = TRENDS_PER_TOPIC_DAY * (hi - lo) / DAY_MS
    for topic in range(topics):
        for _ in range(rng.poisson(per_topic)):
            center = rng.uniform(lo, hi)
            width = rng.uniform(*TREND_WIDTH_H) * HOUR_MS
            trend[topic] += rng.uniform(*TREND_HEIGHT) * np.exp(-0.5 * ((t - center) / width) ** 2)
    return trend


def _draw_posts(rng: Generator, n: int, candidates: int, authors: int, trend: np.ndarray,
                clock: _Clock) -> _Posts:
    """Posts sorted by creation, from 48 h before the start (at least ``candidates`` of
    them before it) to the end; trending topics and productive authors write more."""
    early = rng.integers(clock.trend_start, clock.start, size=candidates)
    rest = rng.integers(clock.trend_start, clock.end, size=n - candidates)
    created = np.sort(np.concatenate([early, rest]).astype(np.int64))
    topics = len(trend)
    popularity = rng.normal(0.0, 1.0, size=(topics, 1))
    weight = np.exp(popularity + CANDIDATE_TREND * trend[:, clock.trend_step(created)])
    cum = np.cumsum(weight / weight.sum(axis=0), axis=0)
    topic = np.minimum((cum < rng.random(n)).sum(axis=0), topics - 1)
    productivity = rng.lognormal(0.0, 1.0, size=authors)
    author = rng.choice(authors, size=n, p=productivity / productivity.sum())
    return _Posts(created=created, topic=topic, author=author,
                  quality=rng.normal(0.0, POST_SD, size=n))


def _draw_truth(rng: Generator, users: _Users, posts: _Posts, topics: int, authors: int,
                clock: _Clock) -> _Truth:
    """The hidden parameters, with the terms of each user and of each post summed up."""
    personal = _ou_paths(rng, (len(users.signup), topics), PERSONAL_SD, PERSONAL_TAU_H, clock)
    # A newcomer's personal taste grows from zero: the spread of an OU path started at 0.
    since = np.maximum(clock.knot_times()[None, :] - users.signup[:, None], 0.0) / HOUR_MS
    personal *= np.sqrt(1.0 - np.exp(-2.0 * since / PERSONAL_TAU_H))[:, :, None]
    by_country = _ou_paths(rng, (len(COUNTRIES), topics), GROUP_SD, GROUP_TAU_H, clock)
    by_age = _ou_paths(rng, (len(AGE_GROUPS), topics), GROUP_SD, GROUP_TAU_H, clock)
    personal += by_country[users.country]
    personal += by_age[users.age]
    topic = rng.normal(0.0, TOPIC_SD, size=topics)
    author = rng.normal(0.0, AUTHOR_SD, size=authors)
    country = rng.normal(0.0, COUNTRY_SD, size=len(COUNTRIES))
    age = rng.normal(0.0, AGE_SD, size=len(AGE_GROUPS))
    return _Truth(interest=personal.astype(np.float32),
                  user=country[users.country] + age[users.age],
                  post=topic[posts.topic] + author[posts.author] + posts.quality)


def _ou_paths(rng: Generator, shape: tuple[int, int], sd: float, tau_h: float,
              clock: _Clock) -> np.ndarray:
    """Stationary Ornstein-Uhlenbeck paths at the knots: array (rows, knots, columns)."""
    rho = math.exp(-clock.knot_ms / HOUR_MS / tau_h)
    paths = np.empty((shape[0], clock.knots, shape[1]))
    paths[:, 0] = rng.normal(0.0, sd, size=shape)
    for k in range(1, clock.knots):
        paths[:, k] = rho * paths[:, k - 1] + sd * math.sqrt(1 - rho**2) * rng.normal(size=shape)
    return paths


def _activity_times(rng: Generator, n: int, clock: _Clock) -> np.ndarray:
    """n strictly increasing request times in [start, end), ms: a daily cycle peaking at
    PEAK_HOUR UTC, drawn by inverting the cumulative intensity on a one-minute grid."""
    grid = np.arange(clock.start, clock.end + MINUTE_MS, MINUTE_MS, dtype=np.float64)
    hour = (grid % DAY_MS) / HOUR_MS
    rate = 1.0 + ACTIVITY_AMPLITUDE * np.cos(2.0 * np.pi * (hour - PEAK_HOUR) / 24.0)
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (rate[1:] + rate[:-1]))])
    ts = np.interp(np.sort(rng.random(n)) * cum[-1], cum, grid).astype(np.int64)
    ts = np.minimum(ts, clock.end - 1)
    step = np.arange(n)
    ts = np.maximum.accumulate(ts - step) + step  # ties pushed apart by 1 ms
    return np.minimum(ts, clock.end - n + step)  # and back before the end where they crowd it


def _active_users(rng: Generator, ts: np.ndarray, users: _Users) -> np.ndarray:
    """For each request time, a user signed up by then, in proportion to activity."""
    cum = np.cumsum(users.activity)
    signed_up = np.searchsorted(users.signup, ts, side="right")
    picked = np.searchsorted(cum, rng.random(len(ts)) * cum[signed_up - 1], side="right")
    return np.minimum(picked, signed_up - 1)
