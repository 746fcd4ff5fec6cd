"""The roles of one pipeline taking turns in one process: join, train, judge.

They talk only through the Log and the Registry, exactly as when each runs in
its own process; this is the one code path of both replay and live (Kappa).
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from livelearn.deploy.gate import Gate
from livelearn.join.runner import JoinRunner
from livelearn.log.base import Log
from livelearn.registry import Registry
from livelearn.spec import SAMPLES, Pipeline
from livelearn.train.trainer import Trained, Trainer, check_registry

#: Records a role handles per turn. A thousand: what a turn holds in memory stays
#: in the CPU's caches until the next role takes it (the trainer takes the
#: joiner's samples as they were made: Log.append), and young for the garbage
#: collector. A replay ran 15-20% faster than with 5,000; 50,000 was slower still.
TURN = 1_000


def tune_gc(threshold: int = 50_000) -> None:
    """Let the cyclic garbage collector run less often, for a process that runs roles.

    The roles allocate a few containers per event; with Python's default gen-0
    threshold (700) the collector runs every hundred events or so, and each
    run costs about as much as the work it interrupts. Objects alive now (the
    tables, the code) are frozen out of every later collection. Memory is still
    freed by reference counting as before; only cycles wait longer.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(threshold, 50, 100)


class Loop:
    """Joiner, trainer and gate of ``pipeline`` over one Log and Registry."""

    def __init__(self, log: Log, registry: Registry, pipeline: Pipeline,
                 data_dir: str | Path = ".", on_trained: Callable[[Trained], None] | None = None,
                 idle_after_s: float = 5.0, turn: int = TURN, skip_lost: bool = False):
        """``skip_lost``: the joiner and the trainer go on past records the log deleted
        before they read them, recording each gap (JoinRunner, Trainer), rather than stop."""
        for topic in pipeline.topics:
            log.create_topic(topic, pipeline.partitions)
        check_registry(log, registry, pipeline)  # refused before the joiner claims its group
        self.joiner = JoinRunner(log, pipeline, data_dir=data_dir, idle_after_s=idle_after_s,
                                 hand_on=True, skip_lost=skip_lost)
        self.trainer = Trainer(log, registry, pipeline, skip_lost=skip_lost)
        self.gate = Gate.of(log, registry, pipeline)
        self.on_trained = on_trained
        self.size = turn

    def turn(self, final: bool = False) -> bool:
        """One turn of each role; ``final`` treats the log as complete (flushes every
        window). Returns whether anything was read."""
        joined = self.joiner.step(self.size, final=final)
        trained = self.trainer.step(self.size, final=final)
        if trained is not None and self.on_trained is not None:
            self.on_trained(trained)
        self.gate.step()
        return bool(joined or trained)

    def drain(self, final: bool = True, progress: Callable[[], None] | None = None) -> None:
        """Turn until every role has read all there is, and the joiner written all it
        made; when ``final``, publish what was learned since the last version and judge
        it, as ``livelearn train --until-idle`` ends. ``progress`` is called after each
        turn (a long drain says how far it is)."""
        while self.turn(final) or self.joiner.write_pending():
            if progress is not None:
                progress()
        if final and self.trainer.publish_now() is not None:
            self.gate.step()

    def dead_letters(self) -> Counter[str]:
        """What this process's joiner and trainer dead-lettered, by reason (the trainer's
        samples it cannot learn as ``malformed``, its gaps as ``lost``); nothing from
        before a restart."""
        dead = Counter({str(k): n for k, n in self.joiner.counts.items() if k != SAMPLES})
        return +(dead + self.trainer.dead_letters())

    def resumed(self) -> str | None:
        """What a restart goes on from (the joiner's checkpoint, the trainer's newest
        version), in one line; None for a first start, with nothing read or published."""
        version = self.trainer.version  # v1, the untrained model, is there from the start
        if not self.joiner.resumed and not self.trainer.samples:
            return None
        read, held = self.read()
        learned = ("no version yet" if version is None else
                   f"v{version.id} ({self.trainer.samples} samples learned)")
        return (f"resuming: the joiner from its checkpoint ({read} of the {held} input "
                f"records in the log read), the trainer from {learned}")

    def read(self) -> tuple[int, int]:
        """How many of the joiner's input records it has read, and how many the log holds."""
        held = sum(self.joiner.log.end_offset(t, p) for t, p in self.joiner.inputs)
        return sum(self.joiner.offsets.values()), held
