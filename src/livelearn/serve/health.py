"""Whether the log takes a server's appends, for its readiness check (GET /readyz).

A server appends to the log on the path of POST /predict and /feedback, one
append at a time (each backend takes them so). When an append fails for want
of the log (Unavailable: a Kafka broker down, or not acknowledging within the
log's timeout), the log is failing: /readyz answers 503 naming the append's
error, so that a load balancer sends requests to other servers, and the
requests that come meanwhile, or were waiting for their turn, are answered 503
at once with the same error rather than each waiting out the log's timeout in
turn (50 waiting requests took 50 timeouts: 12 minutes at Kafka's 15 s).

Nothing comes to succeed then: so, while the log is failing, each readiness
check and each refused request starts a probe in a thread of its own (unless
one is under way) and answers from what is known, without waiting for it. The
probe asks the log where partition 0 of ``topic`` ends (``Log.end_offset``);
an answer ends the failing, unless an append failed since the probe began. A
probe asks a question, it appends nothing: a log that answers questions but
refuses appends (a SQLite disk full, a Kafka topic short of in-sync replicas)
is ready again after each probe and failing again at the next append, which
waits out the log's timeout.

>>> from livelearn.log.memory import MemoryLog
>>> log = MemoryLog()
>>> log.create_topic("predictions")
>>> health = LogHealth(log, "predictions")
>>> health.check()  # no append failed: nothing raised
>>> try:
...     with health.appending():
...         raise Unavailable("kafka://b:9092: appending 1 records failed")
... except Unavailable:
...     pass
>>> try:
...     with health.appending():  # refused at once: nothing is asked of the log
...         pass
... except Unavailable as e:
...     print(e)
the log failed the server's last append: kafka://b:9092: appending 1 records failed
>>> health.wait_for_probe()  # the memory log answers the refused append's probe
True
>>> with health.appending():
...     pass  # an append that succeeds
>>> health.check()
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from livelearn.errors import NotFound, Unavailable
from livelearn.log.base import Log

logger = logging.getLogger("livelearn.serve")


class LogHealth:
    """Whether ``log`` took the server's last append; probes ``topic`` while it did not."""

    def __init__(self, log: Log, topic: str):
        self.log, self.topic = log, topic
        self._lock = threading.Lock()
        self._failure: str | None = None  # the error of the failed append, while failing
        self._failed = 0  # appends failed so far: a probe ends only failures older than it
        self._idle = threading.Event()  # set while no probe is under way
        self._idle.set()
        self._turn = threading.Lock()  # one request's appends at a time

    @contextmanager
    def appending(self) -> Iterator[None]:
        """Around a request's appends, one request at a time: while the log is failing,
        Unavailable at once (``check``); else Unavailable inside (raised on), or NotFound
        (a topic deleted: raised as Unavailable), makes the log failing, and leaving
        without an exception ends it."""
        with self._turn:
            self.check()
            try:
                try:
                    yield
                except NotFound as e:  # a topic deleted under the server: the log's fault
                    raise Unavailable(str(e)) from e
            except Unavailable as e:
                with self._lock:
                    if self._failure is None:
                        logger.warning("the log failed an append: /readyz answers 503 until "
                                       "it takes one again: %s", e)
                    self._failure, self._failed = str(e), self._failed + 1
                raise
        self._ended("an append")

    def check(self) -> None:
        """Unavailable naming the failed append while the log is failing; a probe of the
        log is started then, unless one is under way."""
        if self._failure is None:  # the usual case, on every request: no lock taken
            return
        with self._lock:
            failure = self._failure
            if failure is None:
                return
            if self._idle.is_set():
                self._idle.clear()
                threading.Thread(target=self._probe, args=(self._failed,), name="log-probe",
                                 daemon=True).start()
        raise Unavailable(f"the log failed the server's last append: {failure}")

    def _probe(self, failed: int) -> None:
        try:
            self.log.end_offset(self.topic, 0)
        except Exception as e:  # whatever the log raises: it is still failing
            logger.debug("probing the log failed: %s", e)
            self._idle.set()
            return
        self._ended("a question", failed)

    def wait_for_probe(self, timeout_s: float | None = None) -> bool:
        """Wait for the probe under way, if any, to end (at most ``timeout_s``); whether
        none is under way now."""
        return self._idle.wait(timeout_s)

    def _ended(self, what: str, failed: int | None = None) -> None:
        """The log answered ``what``: no longer failing, unless an append failed since
        ``failed`` appends had (a probe's start)."""
        with self._lock:
            if failed is not None:  # the probe's end
                self._idle.set()
            if self._failure is None or (failed is not None and failed != self._failed):
                return
            self._failure = None
        logger.info("the log answers again (%s): /readyz answers 200", what)
