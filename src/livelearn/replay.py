"""Replay: history through exactly the code that runs live (the Kappa architecture).

The files are ingested into the pipeline's streams in the Log, then the same
joiner, trainer and gate that run live (livelearn.loop) read them back, as fast
as the machine allows. ``final`` treats the log as complete and flushes every
window at the end; without it the last windows stay open for live events to
come (``--then-live``). The result is the prequential report (prequential.py)
with the events, samples, dead letters and events per second, end to end.

The report's ``dead_letters`` counts, by reason, what the joiner and the trainer
sent to the dead-letter topic in this replay (the trainer's are samples it cannot
learn: ``malformed``, and with ``skip_lost`` the gaps of samples the log deleted
before it read them: ``lost``), and the records that never became events by their
reason: ``malformed_at_ingest``, ``failed_at_ingest`` (the pipeline's code failed on
them), ``too_large_at_ingest``. ``late_counted`` is the number of events of a counted
stream (``EventLabel.counted``) that came after the joiner had emitted a sample of a
later ts: counted from then on, such samples were counted without them. ``inputs``
says, for each file, how many events it gave, how many records were dead-lettered and
the first few reasons.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from livelearn.errors import ConfigError
from livelearn.ingest import Ingested, ingest
from livelearn.log.base import Log
from livelearn.loop import Loop
from livelearn.prequential import PrequentialRecord
from livelearn.registry import Registry
from livelearn.spec import PREDICTIONS, Pipeline
from livelearn.train.trainer import Trained


def replay(log: Log, registry: Registry, pipeline: Pipeline, sources: Sequence[tuple[str, str]],
           data_dir: str | Path = ".", final: bool = True, bucket_ms: int | None = None,
           on_trained: Callable[[Trained], None] | None = None, skip_lost: bool = False,
           ingesting: Callable[[str, str, Ingested, float | None], None] | None = None,
           learning: Callable[[Loop], None] | None = None) -> tuple[dict[str, Any], Loop]:
    """Ingest ``sources`` ((stream, file) pairs, in order, impressions last) and learn;
    ``on_trained`` also sees what each trainer step learned (study.freshness keeps it);
    ``skip_lost``: the roles go on past records the log's retention deleted before they
    read them, as ``Loop`` says. ``ingesting`` (stream, file, what was written of it, the
    share read: ``ingest``'s ``progress``) and ``learning`` (after each turn of the roles)
    are told how far a long replay is.

    Returns the report and the loop, whose roles can go on with live events; the
    loop no longer records what it learns (the report is made: a loop that went on
    for months would hold a score and a label of every sample).
    """
    check_once(sources)
    started = time.perf_counter()
    loop = Loop(log, registry, pipeline, data_dir, skip_lost=skip_lost)
    record = PrequentialRecord(loop.trainer.kind)

    def learned(trained: Trained) -> None:
        record.add(trained)
        if on_trained is not None:
            on_trained(trained)

    loop.on_trained = learned
    # impressions last: their served counters count the feedback before them
    ingested = {f"{s}={f}": ingest(log, pipeline, s, f, data_dir=data_dir, progress=None
                                   if ingesting is None else functools.partial(ingesting, s, f))
                for s, f in sorted(sources, key=lambda source: source[0] == PREDICTIONS)}
    loop.drain(final=final, progress=None if learning is None else
               functools.partial(learning, loop))
    loop.on_trained = None
    seconds = time.perf_counter() - started
    events = sum(i.events for i in ingested.values())
    report = {"pipeline": pipeline.name, **record.summary(bucket_ms), "events": events,
              "seconds": round(seconds, 3), "events_per_s": round(events / seconds, 1),
              "dead_letters": _dead_letters(loop, ingested.values()),
              "late_counted": loop.joiner.joiner.late_counted,
              "versions": loop.trainer.version.id if loop.trainer.version else 0,
              "inputs": {k: {"events": i.events, "dead": i.dead,
                             "first_errors": i.first_errors or []}
                         for k, i in ingested.items()}}
    return report, loop


def check_once(sources: Sequence[tuple[str, str]]) -> None:
    """ConfigError if a (stream, file) pair is given twice: its second ingest would be
    duplicates and late events only, and the report counted its events once."""
    given = [f"{stream}={path}" for stream, path in sources]
    for source in given:
        if given.count(source) > 1:
            raise ConfigError(f"--events {source} given twice: each file is replayed once")


def _dead_letters(loop: Loop, ingested: Iterable[Ingested]) -> dict[str, int]:
    """Dead letters by reason: the joiner's and the trainer's, then the ingest's."""
    dead = loop.dead_letters()
    for given in ingested:
        for reason, n in given.reasons.items():
            dead[f"{reason}_at_ingest"] += n
    return {str(k): n for k, n in sorted(dead.items()) if n}
