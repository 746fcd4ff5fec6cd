"""Replay: history through exactly the code that runs live (the Kappa architecture).

The files are ingested into the pipeline's streams in the Log, then the same
joiner, trainer and gate that run live (livelearn.loop) read them back, as fast
as the machine allows. ``final`` treats the log as complete and flushes every
window at the end; without it the last windows stay open for live events to
come (``--then-live``). The result is the prequential report (prequential.py)
with the events, samples, dead letters and events per second, end to end.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from livelearn.ingest import ingest
from livelearn.log.base import Log
from livelearn.loop import Loop
from livelearn.prequential import PrequentialRecord
from livelearn.registry import Registry
from livelearn.spec import PREDICTIONS, SAMPLES, Pipeline


def replay(log: Log, registry: Registry, pipeline: Pipeline, sources: Sequence[tuple[str, str]],
           data_dir: str | Path = ".", final: bool = True, bucket_ms: int | None = None
           ) -> tuple[dict[str, Any], Loop]:
    """Ingest ``sources`` ((stream, file) pairs, in order, impressions last) and learn.

    Returns the report and the loop, whose roles can go on with live events.
    """
    started = time.perf_counter()
    loop = Loop(log, registry, pipeline, data_dir)
    record = PrequentialRecord(loop.trainer.kind)
    loop.on_trained = record.add
    # impressions last: their served counters count the feedback before them
    ingested = {f"{s}={f}": ingest(log, pipeline, s, f, data_dir=data_dir)
                for s, f in sorted(sources, key=lambda source: source[0] == PREDICTIONS)}
    loop.drain(final=final)
    seconds = time.perf_counter() - started
    events = sum(i.events for i in ingested.values())
    dead = {k: n for k, n in sorted(loop.joiner.counts.items()) if k != SAMPLES}
    malformed_at_ingest = sum(i.dead for i in ingested.values())
    if malformed_at_ingest:
        dead["malformed_at_ingest"] = malformed_at_ingest
    report = {"pipeline": pipeline.name, **record.summary(bucket_ms), "events": events,
              "seconds": round(seconds, 3), "events_per_s": round(events / seconds, 1),
              "dead_letters": dead, "versions": loop.trainer.version.id
              if loop.trainer.version else 0,
              "inputs": {k: {"events": i.events, "dead": i.dead} for k, i in ingested.items()}}
    return report, loop
