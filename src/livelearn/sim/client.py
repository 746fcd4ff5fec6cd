"""The simulated users as an HTTP client of a real server.

For each request of the world: send the feedback that has come due, ask the
server to score the candidates (POST /predict), show them ranked by score,
and schedule the clicks and reads the world's hidden truth decides. Feedback
goes back over HTTP (POST /feedback) in event-time order.

``faults`` is the fraction of feedback events that are spoiled on purpose, to
show the dead-letter path: duplicated, malformed (timestamp in seconds),
orphaned (unknown request_id) or delayed past their window (late).
"""

from __future__ import annotations

import heapq
import threading
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from livelearn.sim.world import NewsFeed

#: How long (ms of event time) a "late" fault holds an event back: past any window.
LATE_BY_MS = 60 * 60_000


@dataclass
class ClientStats:
    """Counters the progress view reads while the client runs."""

    requests: int = 0
    impressions: int = 0
    feedback_sent: int = 0
    faults: int = 0
    sim_ts: int = 0
    done: bool = False
    served_versions: dict[int, int] = field(default_factory=dict)


class FeedClient:
    """Drives a NewsFeed world against the server at ``base_url``."""

    def __init__(self, world: NewsFeed, base_url: str, faults: float = 0.002, seed: int = 0,
                 flush_every: int = 8):
        self.world, self.faults, self.flush_every = world, faults, flush_every
        self.http = httpx.Client(base_url=base_url, timeout=60)
        self.rng = np.random.default_rng(seed)
        self.stats = ClientStats()
        self._due: list[tuple[int, int, dict[str, Any]]] = []  # (send at ts, seq, event)
        self._seq = 0

    def run(self, stop: threading.Event | None = None) -> ClientStats:
        """Play every request of the world, then send all feedback still held."""
        for request in self.world.requests():
            if stop is not None and stop.is_set():
                break
            if self.stats.requests % self.flush_every == 0:
                self._send_due(request.ts)
            self.stats.sim_ts = request.ts
            reply = self._post("/predict", {"user_id": request.user_id,
                                            "items": request.candidates, "ts": request.ts})
            ranked = sorted(reply["predictions"], key=lambda p: -p["score"])
            shown = [(p["request_id"], p["item"]) for p in ranked]
            version = reply["model_version"]
            self.stats.served_versions[version] = self.stats.served_versions.get(version, 0) + 1
            for event in self.world.feedback(request, shown):
                self._schedule(event)
            self.stats.requests += 1
            self.stats.impressions += len(shown)
        self._send_due(2**62)
        self.stats.done = True
        self.http.close()
        return self.stats

    def _schedule(self, event: dict[str, Any]) -> None:
        send_at = event["ts"]
        if self.rng.random() < self.faults:
            self.stats.faults += 1
            kind = self.rng.integers(4)
            if kind == 0:  # duplicate: the same event twice
                self._push(send_at, dict(event))
            elif kind == 1:  # malformed: a timestamp in seconds
                event = {**event, "ts": event["ts"] // 1000}
            elif kind == 2:  # orphan: a request_id no prediction has
                event = {**event, "payload": {**event["payload"], "request_id": "no-such-request"}}
            else:  # late: held back until its window has long closed
                send_at += LATE_BY_MS
        self._push(send_at, event)

    def _push(self, send_at: int, event: dict[str, Any]) -> None:
        self._seq += 1
        heapq.heappush(self._due, (send_at, self._seq, event))

    def _send_due(self, now_ts: int) -> None:
        batch = []
        while self._due and self._due[0][0] <= now_ts:
            batch.append(heapq.heappop(self._due)[2])
        for start in range(0, len(batch), 1000):
            self._post("/feedback", batch[start:start + 1000])
        self.stats.feedback_sent += len(batch)

    def _post(self, path: str, body: Any) -> Any:
        response = self.http.post(path, json=body)
        response.raise_for_status()
        return response.json()
