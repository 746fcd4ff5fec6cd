"""Live roles whose log goes away (a Kafka broker stopped, killed, out of reach) wait
for it and go on, rather than stop.

A request the log does not answer within its timeout raises Unavailable. A role
running live (`join`, `train`, `run` without --until-idle) then says so (a WARNING),
and once the log answers again it is made again from its checkpoint, as a restarted
process would be: what it read and made since its last write is read and made again,
and the deterministic ids and atomic checkpoints keep every sample exactly once
(DESIGN.md, "Exactly once"). It tries every ``RETRY_S`` seconds, each try saying why it
failed (INFO), and says when it goes on (WARNING). Other errors (fenced
off, records lost, a damaged checkpoint) still stop it: waiting would not mend them.
A bounded command (--until-idle, ingest) still fails with the error, as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from livelearn.errors import Unavailable

log = logging.getLogger("livelearn.outage")

R = TypeVar("R")
T = TypeVar("T")

#: Seconds between two tries to make the roles again while the log does not answer.
RETRY_S = 2.0


class Resuming(Generic[R]):
    """The role(s) that ``make()`` builds from their checkpoints (``what`` names them),
    made again once the log answers after a turn failed on it (Unavailable)."""

    def __init__(self, make: Callable[[], R], what: str, role: R | None = None,
                 stop: threading.Event | None = None):
        """``role``: the first one, made already (else ``make()`` makes it). ``stop``: once
        set, a wait for the log ends (its turn returns None, the role not made again)."""
        self.make, self.what, self.stop = make, what, stop
        self.role = make() if role is None else role

    def turn(self, act: Callable[[R], T]) -> T | None:
        """``act(role)``; if the log failed it, None once the role is made again."""
        try:
            return act(self.role)
        except Unavailable as e:
            self._again(e)
            return None

    def _again(self, error: Unavailable) -> None:
        log.warning("the log failed under %s: %s. Waiting for the log, to go on from the "
                    "checkpoints (tried every %g s)", self.what, error, RETRY_S)
        began = time.monotonic()
        stop = self.stop or threading.Event()  # never set: waits as time.sleep
        while not stop.wait(RETRY_S):
            try:
                self.role = self.make()
            except Unavailable as e:
                log.info("%s: the log does not answer yet: %s", self.what, e)
                continue
            log.warning("the log answers again: %s went on from the checkpoints after "
                        "%.0f s", self.what, time.monotonic() - began)
            return
