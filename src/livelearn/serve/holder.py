"""The hot-swap holder: the model a server scores with, replaced without a pause.

The current (version, learner) pair is one reference. A request reads it once
and scores every candidate with that pair, so a response never mixes versions;
a swap loads the new version completely first, then replaces the reference in
one assignment. No lock is held while requests score.

Loading and recording happen on the poll thread, never on a request's path; a
loaded learner is warmed (``warm``: the server scores one empty row with it, so
the first request does not wait for numba to compile its kernels). A
version whose file cannot be loaded is skipped (logged once, with the reason)
and the one served goes on serving until a newer version is approved, or until
that file changes (restored from a backup, even by a copy that keeps its mtime;
its permissions changed): then it is tried again. Recording
a swap in the Registry (``mark_serving``) is retried on the next poll if it
fails, so the Registry always learns which version serves. A poll that fails
(the index locked too long, damaged, or taken away) is logged once with its
error (in one line for livelearn's own errors, which say what to do; with its traceback
for an unexpected one), again only if the error changes, and once more when polls work
again.

With a canary share (Policies.canary_share), the Registry's canary is held too:
a request of a user whose id hashes into the share (``in_canary``: the same
users in every server) is scored by it. Once approved, it becomes the version
served without being loaded again. A canary that cannot be loaded is skipped
as a version is (the incumbent scores every user), and tried again once its
file changes.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Callable

from livelearn.errors import LivelearnError, Unavailable
from livelearn.models.base import Learner
from livelearn.registry import Registry

log = logging.getLogger("livelearn.serve")


def in_canary(user: str, share: float) -> bool:
    """Whether a canary scores ``user``: the CRC-32 of the id falls in the first ``share``
    of its range (stable across processes and machines)."""
    return zlib.crc32(user.encode()) < share * 2**32


class ModelHolder:
    """Serves the Registry's incumbent version, polling for a new one every ``poll_s``, and
    its canary to ``canary_share`` of the users."""

    def __init__(self, registry: Registry, poll_s: float = 0.1, canary_share: float = 0.0,
                 warm: Callable[[Learner], object] | None = None):
        self.registry, self.poll_s, self.canary_share = registry, poll_s, canary_share
        self._warm = warm
        self._current: tuple[int, Learner] | None = None
        self._canary: tuple[int, Learner] | None = None
        # the canary last found unloadable, with its file's stamp (_stamp) then
        self._broken_canary: tuple[int, tuple[int, int, int] | None] | None = None
        self._marked: int | None = None  # the version last recorded as serving
        self._marked_since: int | None = None  # with this serving time (None: not known)
        # the event time the current version began serving at: the clock when it was
        # swapped in, or the first request's after it (at most the wall clock) if the
        # clock had not started
        self._since: int | None = None
        # the version last found unloadable, with its file's stamp (_stamp) then
        self._broken: tuple[int, tuple[int, int, int] | None] | None = None
        self.clock_ts = 0  # the largest event time (ms) seen in requests, at most the wall's
        self.swaps = 0
        self.swapped_at: float | None = None  # wall clock (s since the epoch) of the last swap
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def version(self) -> int | None:
        """The version served now, or None before the first swap."""
        pair = self._current
        return None if pair is None else pair[0]

    @property
    def canary(self) -> int | None:
        """The canary version held, if any."""
        pair = self._canary
        return None if pair is None else pair[0]

    def current(self, user: str | None = None) -> tuple[int, Learner]:
        """The (version, learner) to score one whole request with: for a ``user`` in the
        canary's share, the canary."""
        pair = self._current
        if pair is None:
            raise Unavailable("no model version approved yet")
        canary = self._canary
        if canary is not None and user is not None and in_canary(user, self.canary_share):
            return canary
        return pair

    def observe(self, ts: int) -> None:
        """Move the event-time clock forward to ``ts`` (ms), or to the wall clock if that
        is earlier: a request ahead of it (a client's clock minutes ahead; the server
        takes 5 minutes ahead) would otherwise hold the clock there, and date every
        version swapped in meanwhile from then (its serving time, by which the gate
        finds the version it rolls back to)."""
        ts = min(ts, int(time.time() * 1000))
        if ts > self.clock_ts:
            self.clock_ts = ts
        if self._since is None:
            self._since = ts

    def refresh(self) -> bool:
        """Swap in the incumbent version if it is not the one served; True if swapped."""
        incumbent = self.registry.incumbent()
        swapped = False
        if incumbent is not None and incumbent.id != self.version and \
                self._broken != (incumbent.id, self._stamp(incumbent.id)):
            swapped = self._swap(incumbent.id)
        if self.canary_share:
            self._hold_canary()
        self._mark()
        return swapped

    def _hold_canary(self) -> None:
        """Hold the Registry's canary, or none if it has none (approved or rejected)."""
        canary = self.registry.canary()
        if canary is None:
            self._canary = None
        elif canary.id != self.canary and \
                self._broken_canary != (canary.id, self._stamp(canary.id)):
            try:
                self._canary = (canary.id, self._load(canary.id))
            except LivelearnError as e:
                self._broken_canary = (canary.id, self._stamp(canary.id))
                log.error("could not load canary v%d: %s; v%s scores every user", canary.id,
                          e, self.version)
                return
            log.info("canary v%d scores %g%% of the users", canary.id, 100 * self.canary_share)

    def _swap(self, version: int) -> bool:
        held = self._canary  # an approved canary is swapped in as it was loaded
        try:
            learner = held[1] if held is not None and held[0] == version else \
                self._load(version)
        except LivelearnError as e:
            self._broken = (version, self._stamp(version))
            if self._current is None:  # nothing to fall back on
                raise type(e)(f"{e}; nothing else to serve: `livelearn models ls` lists the "
                              f"versions, `livelearn models promote N` serves an earlier "
                              f"one") from e
            log.error("could not load v%d: %s; still serving v%d", version, e, self._current[0])
            return False
        self._current = (version, learner)
        self._since = self.clock_ts or None
        self.swaps += 1
        self.swapped_at = time.time()
        log.info("serving v%d", version)
        return True

    def _say_failed(self, e: Exception) -> None:
        """Log that a poll failed with ``e``: one line naming one of livelearn's errors (it
        says what to do), a traceback for an unexpected one."""
        again = f"still serving v{self.version}, trying again every {self.poll_s:g} s " \
                f"(logged again if the error changes)"
        if isinstance(e, LivelearnError):
            log.error("model poll failed: %s: %s; %s", type(e).__name__, e, again)
        else:
            log.exception("model poll failed; %s", again)

    def _stamp(self, version: int) -> tuple[int, int, int] | None:
        """When the model file of ``version`` last changed (its ctime: a write, a rename, a
        change of permissions, which no copy keeps, unlike the mtime that ``cp -p`` or
        ``rsync -a`` carries over), its inode and size (None if it is not there): a file
        that failed to load is tried again once this changes."""
        try:
            stat = self.registry.file(version).stat()
        except OSError:
            return None
        return stat.st_ctime_ns, stat.st_ino, stat.st_size

    def _load(self, version: int) -> Learner:
        """Version ``version``'s learner, loaded and warmed. A warm-up that fails is
        logged; the requests it scores say what is wrong (a 500 naming it)."""
        learner = self.registry.load(version)
        if self._warm is not None:
            try:
                self._warm(learner)
            except Exception as e:  # noqa: BLE001 - the learner is the user's
                log.warning("v%d failed to score an empty row: %s: %s", version,
                            type(e).__name__, e)
        return learner

    def _mark(self) -> None:
        """Record in the Registry the version served, unless it is recorded already.

        Not if it stopped being the incumbent while it loaded (rolled back, or
        superseded): marking would make it serving again. The next poll swaps. A
        version swapped in before any request (a server just started) is recorded
        again with the first request's time: the gate judges, and rolls back, a
        version by what it served since then.
        """
        version, since = self.version, self._since
        if version is None or (version == self._marked and
                               (self._marked_since is not None or since is None)):
            return
        if self.registry.mark_serving(version, since):
            self._marked, self._marked_since = version, since

    def start(self) -> None:
        self.refresh()
        self._thread = threading.Thread(target=self._poll, name="model-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _poll(self) -> None:
        failing: str | None = None  # the error of the polls failing since the last success
        while not self._stop.wait(self.poll_s):
            try:
                self.refresh()
            except Exception as e:  # a bad version or a busy Registry must not stop serving
                if f"{type(e).__name__}: {e}" != failing:  # not ten lines a second
                    failing = f"{type(e).__name__}: {e}"
                    self._say_failed(e)
                continue
            if failing is not None:
                failing = None
                log.info("model poll works again; serving v%s", self.version)
