"""The hot-swap holder: the model a server scores with, replaced without a pause.

The current (version, learner) pair is one reference. A request reads it once
and scores every candidate with that pair, so a response never mixes versions;
a swap loads the new version completely first, then replaces the reference in
one assignment. No lock is held while requests score.
"""

from __future__ import annotations

import logging
import threading

from livelearn.errors import Unavailable
from livelearn.models.base import Learner
from livelearn.registry import Registry

log = logging.getLogger("livelearn.serve")


class ModelHolder:
    """Serves the Registry's incumbent version, polling for a new one every ``poll_s``."""

    def __init__(self, registry: Registry, poll_s: float = 0.1):
        self.registry, self.poll_s = registry, poll_s
        self._current: tuple[int, Learner] | None = None
        self.clock_ts = 0  # the largest event time (ms) seen in requests
        self.swaps = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def version(self) -> int | None:
        """The version served now, or None before the first swap."""
        pair = self._current
        return None if pair is None else pair[0]

    def current(self) -> tuple[int, Learner]:
        """The (version, learner) to score one whole request with."""
        pair = self._current
        if pair is None:
            raise Unavailable("no model version approved yet")
        return pair

    def observe(self, ts: int) -> None:
        """Move the event-time clock forward to ``ts`` (ms)."""
        if ts > self.clock_ts:
            self.clock_ts = ts

    def refresh(self) -> bool:
        """Swap in the incumbent version if it is not the one served; True if swapped."""
        incumbent = self.registry.incumbent()
        if incumbent is None or (self._current and self._current[0] == incumbent.id):
            return False
        learner = self.registry.load(incumbent.id)
        self._current = (incumbent.id, learner)
        self.swaps += 1
        self.registry.mark_serving(incumbent.id, self.clock_ts or None)
        log.info("serving v%d", incumbent.id)
        return True

    def start(self) -> None:
        self.refresh()
        self._thread = threading.Thread(target=self._poll, name="model-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.refresh()
            except Exception:  # a bad version must not stop serving the good one
                log.exception("could not swap in the incumbent version; still serving the old")
