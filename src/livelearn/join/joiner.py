"""The feedback join: where a prediction and its feedback become a labelled sample.

Semantics (normative):

- A prediction at time t collects the feedback events with its ``request_id``
  and ts in [t, t + W] (both ends inclusive). ``label(events)`` of those events,
  in (ts, id) order, gives the sample's labels; no events gives the labels of
  an empty list (for a click: 0).
- The watermark is the smallest, over the inputs (topic, partition), of the
  largest event time seen, minus the allowed lateness. It only moves forward.
  An input that has seen nothing holds it at "no watermark"; an input marked
  idle is left out. A window is emitted once the watermark passes t + W, in
  (t + W, request_id) order. ``flush()`` emits all windows (end of input).
- Nothing is dropped silently. To the dead-letter topic, with a reason:
  malformed records; a second prediction with a known request_id or a second
  feedback event with a known id, or an event of a stream only counted whose id
  was counted and is kept (duplicate); feedback for a window already
  emitted, or a prediction whose window the watermark has passed (late);
  feedback with ts outside [t, t + W] (outside_window); feedback whose
  prediction has not come when the watermark passes its ts (orphan). An event
  (of a stream, not a prediction) whose ts is more than events.MAX_FUTURE_MS
  after the log received its record (``Record.appended_ms``) is malformed, and
  moves no watermark: a producer that writes to the log directly with its clock
  ahead would otherwise make every present event after it late. It is judged
  by the log's time, not this machine's clock, so every reading of the log
  (a replay, a restart's rebuild) decides the same; a record without an append
  time (Record.appended_ms None) is not judged.
- Samples carry the features exactly as the server logged them, by name in
  sorted order (so that every joiner, Flink's too, hands the trainer the same
  rows in the same order: the model is then the same bit for bit).
- Label in the event (an ``enricher``, join.enrich): each event of the labelled
  stream is its own window of width zero, keyed by its id: it is a duplicate if
  its id was seen, late if the watermark has passed its ts, and otherwise
  becomes a sample once the watermark passes its ts, in (ts, id) order, with
  features built then, from tables and counters as of its ts. Every input
  event that is not dead-lettered feeds the counters as it arrives: an event of a
  counted stream behind the watermark is counted from then on, the samples of
  later ts emitted before it came without it (``late_counted`` says how many came
  after such a sample). An event of a stream only counted (not the labelled one)
  counts once per id, as the server counts it (serve.counters): its id is kept
  (``counted``) until the watermark passes its ts by the longest window of the
  stream's counters (``keep_ms``), and a copy read meanwhile is a duplicate; one
  read later, when it counts in no sample to come, is counted again. A restart
  decides each copy as the joiner did (``rebuild``), but for an id given again to
  an event at another ts after the first was forgotten, while an input read again
  had been idle: the rebuild's watermark lags the joiner's there (idleness is in
  no record), so it may take that copy as a duplicate where the joiner counted it.

The Joiner is a pure operator: records in, outputs out, its whole state in
``state()``; or, given where the records of its horizon start, the state without
what those records give back, which ``rebuild`` takes from them again after a
restore. join.runner feeds it from the Log and checkpoints it. The state
records what its meaning depends on (``made_with``: the streams, the labelled
stream, the window, the allowed lateness, the counters' definitions), and
``restore`` refuses a state made with other values: its open windows would be
joined one way and new ones another. The features and the label function are
not in it: a change to them applies to the samples emitted from then on.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from livelearn.errors import BadInput, ConfigError, PipelineError
from livelearn.events import (
    MAX_FUTURE_MS,
    Event,
    EventDecoder,
    Reason,
    Schema,
    ahead_of_log,
    dead_letter,
    decode_prediction,
    partition_key,
    shortened,
    show,
    too_large,
)
from livelearn.log.base import Record, TopicPartition
from livelearn.spec import DEAD_LETTERS, PREDICTIONS, SAMPLES

if TYPE_CHECKING:
    from livelearn.join.enrich import Enricher

NO_WATERMARK = -(2**63)
#: How much event time (ms) of the ids of a stream only counted is let go of at once.
FORGET_STEP_MS = 1_000

#: What ``made_with`` holds, in the order a refused restore looks for a change: how an
#: error names each, and shows its value.
_MADE_WITH: dict[str, tuple[str, Callable[[Any], str]]] = {
    "labelled": ("labelled stream", lambda v: "none (a feedback join)" if v is None
                 else f"'{v}'"),
    "streams": ("streams", lambda v: ", ".join(v)),
    "window_ms": ("window", lambda v: f"{v} ms"),
    "allowed_lateness_ms": ("allowed lateness", lambda v: f"{v} ms"),
    "counters": ("counters", lambda v: ", ".join(
        f"{name} ({stream} by {by or 'key'}, {ms} ms)" for name, (stream, ms, by) in v.items())
        or "none"),
}
#: What a refused restore tells the user to do.
_START_OVER = ("put the old value back, or start over in a new log and registry (a new "
              "--workdir; with one process per role, a new --log and --registry) and "
              "ingest the events again")


class Output(NamedTuple):
    """A record the joiner emits: to ``topic`` (samples or dead_letters) under ``key``."""

    topic: str
    key: str
    value: dict[str, Any]


@dataclass
class _Window:
    prediction: dict[str, Any]
    events: list[Event]


class Joiner:
    """The embedded join operator for one pipeline's predictions and feedback streams."""

    def __init__(self, inputs: Sequence[TopicPartition], schemas: Mapping[str, Schema],
                 window_ms: int, label: Callable[[Sequence[Event]], dict[str, float]],
                 allowed_lateness_ms: int = 0, remember_closed_ms: int | None = None,
                 enricher: Enricher | None = None):
        self.schemas, self.window_ms, self.label = dict(schemas), window_ms, label
        self._decoder = EventDecoder(self.schemas, max_future_ms=None)
        self.enricher = enricher
        self.labelled = None if enricher is None else enricher.stream
        self.lateness = allowed_lateness_ms
        self.remember_ms = remember_closed_ms if remember_closed_ms is not None else (
            window_ms + allowed_lateness_ms + 3_600_000)
        self.max_seen: dict[TopicPartition, int | None] = {tp: None for tp in inputs}
        self.idle: set[TopicPartition] = set()
        self.watermark = NO_WATERMARK
        # open windows by request_id; an event of a labelled stream is its own window
        self.open: dict[str, _Window | Event] = {}
        self._closing: list[tuple[int, str]] = []  # (t + W, request_id)
        self.pending: dict[str, list[Event]] = {}  # feedback before its prediction
        self._pending_heap: list[tuple[int, str]] = []  # (ts, request_id)
        self.closed: dict[str, int] = {}  # request_id -> t + W, for a while after emission
        # (t + W, request_id) of closed windows to forget, oldest first: those emitted
        # (in order of t + W; after a flush, later ones may end sooner and wait for those
        # before them) queue up, the others (late, restored) wait in a heap
        self._emitted: deque[tuple[int, str]] = deque()
        self._closed_heap: list[tuple[int, str]] = []
        # predictions and events of a labelled stream dead-lettered as late (see rebuild)
        self._late: dict[str, int] = {}
        self._late_heap: list[tuple[int, str]] = []
        self.made_with = made_with(self.schemas, window_ms, allowed_lateness_ms, enricher)
        #: Events of a counted stream read after a sample of a later ts was emitted (by this
        #: operator, not in its state): such samples were counted without them.
        self.late_counted = 0
        self._newest_emitted = NO_WATERMARK  # the end of the last window emitted
        counted = [] if enricher is None else [c.window_ms for c, _ in enricher.counters.values()]
        #: For each stream only counted (not the labelled one), how long its ids are kept
        #: behind the watermark: its counters' longest window; an id older than that counts
        #: in no sample to come.
        self.keep_ms: dict[str, int] = {} if enricher is None else counted_only(enricher)
        #: The ids of those streams' events counted, while kept: a copy is then a
        #: duplicate, as the server counts an id once (serve.counters).
        self.counted = {stream: CountedIds(ms) for stream, ms in self.keep_ms.items()}
        #: How far behind the watermark (ms of event time) lie the records whose ids and
        #: counts the state needs (see ``state``).
        self.horizon_ms = max([self.remember_ms + window_ms, *counted]) + allowed_lateness_ms
        #: Where a restored state's inputs are to be read again from (``rebuild``), or None.
        self.rewind: list[tuple[str, int, int]] | None = None
        self.whole_until: int | None = None
        # during a rebuild: the window end of each id's last copy taken or late, and the
        # newest ts of each input read so far (its watermark then)
        self._rebuilt: dict[str, int] = {}
        self._rebuilt_seen: dict[TopicPartition, int | None] = {}
        self._rebuilt_mark = NO_WATERMARK
        self._rebuilt_counted = {stream: CountedIds(ms) for stream, ms in self.keep_ms.items()}

    # -- input ------------------------------------------------------------------

    def process(self, record: Record, decoded: Any = None) -> list[Output]:
        """Take one record of an input; return what it lets out, in emission order.

        ``decoded`` may be the record's value as JSON already parsed (or None).
        """
        out: list[Output] = []
        self._take(record, decoded, out)
        return out

    def process_many(self, items: Iterable[tuple[Record, Any]]) -> list[Output]:
        """``process`` each (record, decoded) in turn; all they let out, in emission order."""
        out: list[Output] = []
        take = self._take
        for record, decoded in items:
            take(record, decoded, out)
        return out

    def _take(self, record: Record, decoded: Any, out: list[Output]) -> None:
        if record.topic == PREDICTIONS:
            ts = self._on_prediction(record, decoded, out)
        elif self.enricher is None:
            ts = self._on_feedback(record, decoded, out)
        else:
            ts = self._on_event(record, decoded, out)
        if ts is not None:
            tp = (record.topic, record.partition)
            seen = self.max_seen.get(tp)
            if seen is None or ts > seen:  # else the watermark cannot move
                self.max_seen[tp] = ts
                if len(self.max_seen) > 1:
                    self._advance(out)
                elif ts - self.lateness > self.watermark:  # the one input, not idle: it is read
                    self.watermark = ts - self.lateness
                    self._close_until(self.watermark, out)

    def set_idle(self, tp: TopicPartition, idle: bool) -> list[Output]:
        """Leave an input out of the watermark (idle) or take it back."""
        (self.idle.add if idle else self.idle.discard)(tp)
        out: list[Output] = []
        self._advance(out)
        return out

    def flush(self) -> list[Output]:
        """End of input: emit every open window and orphan every pending event. Their
        ids are remembered as the watermark would have them: a copy read later (the
        input continued after a bounded run) is still a duplicate."""
        out: list[Output] = []
        self._emit_until(2**63 - 1, out)
        return out

    def _on_prediction(self, record: Record, decoded: Any, out: list[Output]) -> int | None:
        try:
            pred = decode_prediction(decoded if type(decoded) is dict else record.value)
        except BadInput as e:
            out.append(_dead(Reason.MALFORMED, str(e), PREDICTIONS, record))
            return None
        rid, ts = pred["request_id"], pred["ts"]
        if rid in self.open or rid in self.closed:
            out.append(_dead(Reason.DUPLICATE, f"request_id {rid!r} already seen",
                             PREDICTIONS, record))
        elif ts + self.window_ms < self.watermark:
            out.append(_dead(Reason.LATE, f"prediction at {ts}: its window ended before "
                             f"the watermark {self.watermark}", PREDICTIONS, record))
            self._remember_closed(rid, ts + self.window_ms)
            self._note_late(rid, ts)
        else:
            window = _Window(pred, [])
            self.open[rid] = window
            heapq.heappush(self._closing, (ts + self.window_ms, rid))
            for event in self.pending.pop(rid, []):
                self._attach(window, event, out)
        return int(ts)

    def _on_feedback(self, record: Record, decoded: Any, out: list[Output]) -> int | None:
        event = self._decode(record, decoded, out)
        if event is None:
            return None
        rid = event.payload.get("request_id")
        if not isinstance(rid, str):
            out.append(_dead(Reason.MALFORMED, f"stream '{event.stream}', field "
                             f"'payload.request_id': expected str", event.stream, record))
        elif rid in self.open:
            self._attach(self.open[rid], event, out, record)  # type: ignore[arg-type]
        elif rid in self.closed:
            out.append(_dead(Reason.LATE, f"window of request {rid!r} already closed",
                             event.stream, record))
        elif event.ts < self.watermark:
            out.append(_dead(Reason.ORPHAN, f"no prediction {rid!r} before the watermark",
                             event.stream, record))
        elif any(e.id == event.id for e in self.pending.get(rid, ())):
            out.append(_dead(Reason.DUPLICATE, f"event id {event.id!r} already seen",
                             event.stream, record))
        else:
            self.pending.setdefault(rid, []).append(event)
            heapq.heappush(self._pending_heap, (event.ts, rid))
        return event.ts

    def _on_event(self, record: Record, decoded: Any, out: list[Output]) -> int | None:
        """An event of a label-in-event pipeline: a window of its own, or just counted."""
        assert self.enricher is not None
        event = self._decode(record, decoded, out)
        if event is None:
            return None
        eid, ts = event.id, event.ts
        if event.stream != self.labelled:
            ids = self.counted.get(event.stream)
            if ids is not None and not ids.add(eid, ts, self.watermark):
                out.append(_dead(Reason.DUPLICATE, f"event id {eid!r} already counted",
                                 event.stream, record))
                return ts
            self.enricher.observe(event)
            if ts < self._newest_emitted:  # a sample after it was emitted without it
                self.late_counted += 1
        elif eid in self.open or eid in self.closed:
            out.append(_dead(Reason.DUPLICATE, f"event id {eid!r} already seen",
                             event.stream, record))
        elif ts < self.watermark:
            out.append(_dead(Reason.LATE, f"event at {ts}: the watermark "
                             f"{self.watermark} has passed it", event.stream, record))
            self._remember_closed(eid, ts)
            self._note_late(eid, ts)
        else:
            self.enricher.observe(event)
            self.open[eid] = event
            heapq.heappush(self._closing, (ts + self.window_ms, eid))
        return ts

    def _decode(self, record: Record, decoded: Any, out: list[Output]) -> Event | None:
        try:
            event = self._decoder(decoded if type(decoded) is dict else record.value)
        except BadInput as e:
            out.append(_dead(Reason.MALFORMED, str(e), record.topic, record))
            return None
        if event.stream != record.topic:
            out.append(_dead(Reason.MALFORMED, f"stream '{event.stream}' read from topic "
                             f"'{record.topic}'", record.topic, record))
            return None
        appended = record.appended_ms
        if appended is not None and event.ts > appended + MAX_FUTURE_MS:  # see join.runner._ts
            out.append(_dead(Reason.MALFORMED, ahead_of_log(event.stream, event.ts, appended),
                             record.topic, record))
            return None
        return event

    def _attach(self, window: _Window, event: Event, out: list[Output],
                record: Record | None = None) -> None:
        t = int(window.prediction["ts"])
        raw = record if record is not None else event.to_json()
        if any(e.id == event.id for e in window.events):
            out.append(_dead(Reason.DUPLICATE, f"event id {event.id!r} already seen",
                             event.stream, raw))
        elif not t <= event.ts <= t + self.window_ms:
            out.append(_dead(Reason.OUTSIDE_WINDOW, f"ts {event.ts} outside the window "
                             f"[{t}, {t + self.window_ms}] of request "
                             f"{window.prediction['request_id']!r}", event.stream, raw))
        else:
            window.events.append(event)

    # -- watermark and emission -------------------------------------------------

    def _advance(self, out: list[Output]) -> None:
        low: int | None = None
        idle = self.idle
        for tp, seen in self.max_seen.items():
            if idle and tp in idle:
                continue
            if seen is None:
                return
            if low is None or seen < low:
                low = seen
        if low is None:
            return
        mark = low - self.lateness
        if mark > self.watermark:
            self.watermark = mark
            self._close_until(mark, out)

    def _close_until(self, mark: int, out: list[Output]) -> None:
        """Emit windows ending before ``mark`` (the watermark), orphan pending events
        older than it, forget closed windows it has left ``remember_ms`` behind."""
        self._emit_until(mark, out)
        self._forget_until(mark - self.remember_ms)
        late, heap = self._late, self._late_heap
        while heap and heap[0][0] < mark - self.horizon_ms:
            late.pop(heapq.heappop(heap)[1], None)
        for ids in self.counted.values():
            ids.forget(mark)

    def _emit_until(self, mark: int, out: list[Output]) -> None:
        """Emit windows ending before ``mark``, orphan pending events older than it."""
        while self._pending_heap and self._pending_heap[0][0] < mark:
            ts, rid = heapq.heappop(self._pending_heap)
            events = self.pending.get(rid, [])
            for event in [e for e in events if e.ts == ts]:
                events.remove(event)
                out.append(_dead(Reason.ORPHAN, f"no prediction {rid!r} before the "
                                 f"watermark", event.stream, event.to_json()))
            if not events:
                self.pending.pop(rid, None)
        closing, closed, emitted = self._closing, self.closed, self._emitted
        pop = heapq.heappop
        while closing and closing[0][0] < mark:
            end, rid = pop(closing)
            out.append(self._output(rid, self.open.pop(rid)))
            closed[rid] = end
            emitted.append((end, rid))
            self._newest_emitted = end

    def _forget_until(self, end: int) -> None:
        """Forget the closed windows that ended before ``end``."""
        closed, emitted, heap = self.closed, self._emitted, self._closed_heap
        while emitted and emitted[0][0] < end:
            closed.pop(emitted.popleft()[1], None)
        while heap and heap[0][0] < end:
            closed.pop(heapq.heappop(heap)[1], None)

    def _note_late(self, rid: str, ts: int) -> None:
        """Keep the id of a prediction or labelled event dead-lettered as late (at ``ts``)
        for ``horizon_ms``: a rebuild must not take it (``rebuild``)."""
        self._late[rid] = ts
        heapq.heappush(self._late_heap, (ts, rid))

    def _remember_closed(self, rid: str, end: int) -> None:
        self.closed[rid] = end
        heapq.heappush(self._closed_heap, (end, rid))

    def _output(self, rid: str, window: _Window | Event) -> Output:
        """The sample of a closed window, or a dead letter where the pipeline's label
        or features (guarded: errors.PipelineError) fail on it (a null label: malformed)."""
        # a labelled event's sample goes to its event's partition number, as a prediction's
        # does: a shard writes its own partitions of samples, each in emission order
        key = partition_key(window) if isinstance(window, Event) else rid
        try:
            return Output(SAMPLES, key, self._sample(window))
        except BadInput as e:
            reason, detail = Reason.MALFORMED, str(e)
        except PipelineError as e:
            reason, detail = Reason.FAILED, str(e)
        if isinstance(window, Event):
            return _dead(reason, detail, window.stream, window.to_json())
        return _dead(reason, f"request {rid!r}: {detail}", PREDICTIONS,
                     orjson.dumps(window.prediction))

    def unwritable(self, sample: dict[str, Any], error: Exception) -> Output:
        """The dead letter of a sample JSON cannot hold (an int over 64 bits, a numpy
        value, a key not a string, made by the pipeline's features or label)."""
        return _dead(Reason.FAILED, f"sample {sample.get('id')!r} cannot be written as "
                     f"JSON: {error}{_unwritable_part(sample)}", self.labelled or PREDICTIONS,
                     show(sample, limit=1000).encode())

    def oversized(self, output: Output, size: int, limit: int) -> Output:
        """The dead letter of an output of ``size`` bytes, more than its topic takes
        (``limit``): a sample of many feedback events or large features, or a dead
        letter holding a large event."""
        topic, _, value = output
        if topic != SAMPLES:
            return Output(DEAD_LETTERS, value["stream"], shortened(value, size, limit, topic))
        stream = self.labelled or PREDICTIONS
        return Output(DEAD_LETTERS, stream, too_large(f"sample {value['id']!r}", size, limit,
                                                      topic, stream, orjson.dumps(value)))

    def _sample(self, window: _Window | Event) -> dict[str, Any]:
        if isinstance(window, Event):  # of a labelled stream
            assert self.enricher is not None
            return self.enricher.sample(window)
        pred = window.prediction
        events = sorted(window.events, key=lambda e: (e.ts, e.id))
        return {"id": pred["request_id"], "ts": pred["ts"],
                "window_end": pred["ts"] + self.window_ms, "user": pred["user"],
                "item": pred["item"], "model_version": pred["model_version"],
                "score": pred["score"], "features": dict(sorted(pred["features"].items())),
                "labels": self.label(events), "feedback": [e.id for e in events]}

    # -- checkpoint -------------------------------------------------------------

    def state(self, rewind: Sequence[tuple[str, int, int]] | None = None,
              whole_until: int | None = None) -> bytes:
        """Everything the operator holds, as bytes for a checkpoint.

        With ``rewind`` (for each input, an offset from which its records hold every one
        within ``horizon_ms`` behind the watermark), the state leaves out what those
        records give back: the ids of the windows emitted, those of the streams only
        counted and the counters, which grow with the traffic (an hour of ids at 3,000
        events/s is 470 MB). ``restore`` then needs them read again (``rebuild``); the
        checkpoint stays the size of the open windows, the pending feedback and the
        late ids. ``whole_until`` is kept for the runner (join.runner: until when it
        writes the state whole).
        """
        compact = rewind is not None
        closed = [(rid, self.closed[rid]) for rid in self._late if rid in self.closed] \
            if compact else list(self.closed.items())
        return orjson.dumps({
            "watermark": self.watermark,
            "max_seen": [[t, p, s] for (t, p), s in self.max_seen.items()],
            "open": [_window_obj(w) for w in self.open.values()],
            "pending": [[rid, [_event_obj(e) for e in evs]] for rid, evs in self.pending.items()],
            "closed": closed,
            "late": list(self._late.items()),
            "counted": None if compact else [
                [stream, eid, ts] for stream, ids in self.counted.items()
                for eid, ts in ids.kept(self.watermark)],
            "enricher": None if self.enricher is None or compact else self.enricher.state(),
            "rewind": None if rewind is None else [list(r) for r in rewind],
            "whole_until": whole_until,
            "made_with": self.made_with,
        })

    def restore(self, blob: bytes, whose: str = "the joiner's checkpoint") -> None:
        """Take back a ``state()``: the operator continues exactly where it was.

        ConfigError, naming ``whose`` state it is and the first value that differs, if
        it was made with another ``made_with``; a state without one (or without one of
        its values: written by an older livelearn) is taken as made with this one.
        """
        s = orjson.loads(blob)
        check_made_with(s.get("made_with") or {}, self.made_with, whose)
        self.watermark = s["watermark"]
        self.max_seen.update({(t, p): seen for t, p, seen in s["max_seen"]})
        self.open = {pred["request_id"]: Event(**evs[0]) if "labelled" in pred
                     else _Window(pred, [Event(**e) for e in evs]) for pred, evs in s["open"]}
        self._closing = [(_start(w) + self.window_ms, rid) for rid, w in self.open.items()]
        self.pending = {rid: [Event(**e) for e in evs] for rid, evs in s["pending"]}
        self._pending_heap = [(e.ts, rid) for rid, evs in self.pending.items() for e in evs]
        self.closed = dict(s["closed"])
        if self.enricher is not None and s.get("enricher") is not None:
            self.enricher.restore(s["enricher"])
        self._emitted.clear()
        self._closed_heap = [(end, rid) for rid, end in self.closed.items()]
        self._late = dict(s.get("late") or [])
        self._late_heap = [(ts, eid) for eid, ts in self._late.items()]
        self.counted = {stream: CountedIds(ms) for stream, ms in self.keep_ms.items()}
        for stream, eid, ts in s.get("counted") or []:  # none in a compact state: rebuilt
            self.counted[stream].add(eid, ts, self.watermark)
        for heap in (self._closing, self._pending_heap, self._closed_heap, self._late_heap):
            heapq.heapify(heap)
        rewind = s.get("rewind")
        self.rewind = None if rewind is None else [(t, p, o) for t, p, o in rewind]
        self.whole_until = s.get("whole_until")

    def rebuilding(self, inputs: Iterable[TopicPartition]) -> None:
        """Start a ``rebuild`` that reads ``inputs`` again. The watermark it moves is the
        smallest newest ts of those and of the others that held the restored one: an
        input behind it, or that has seen nothing while it is not none, was idle (left
        out)."""
        self._rebuilt_seen = dict.fromkeys(inputs)
        for tp, seen in self.max_seen.items():
            if tp in self._rebuilt_seen:
                continue
            if seen is None:  # holds the watermark, unless idle: then it moved on
                if self.watermark == NO_WATERMARK:
                    self._rebuilt_seen[tp] = None
            elif seen - self.lateness >= self.watermark:
                self._rebuilt_seen[tp] = seen
        self._rebuilt_mark = NO_WATERMARK

    def rebuild(self, record: Record, decoded: Any) -> None:
        """Take back what one record read before a compact state (``state(rewind)``) left
        in the operator: the id of the window it closed while still remembered, and the
        counts of its event. After ``restore`` and ``rebuilding``, the records of each
        input from its rewind offset up to its checkpoint offset, merged as the join
        merged them (join.runner); then ``rebuilt()``.

        A record of a labelled stream or of predictions was taken (counted, and open
        still or emitted), a duplicate (a copy of it remembered) or late (dead-lettered);
        one of a stream only counted was counted or a duplicate (a copy of it kept):
        the rebuild decides each copy as the joiner did, against the watermark the
        records read before it give. A malformed record (one far ahead of its append
        time too) left nothing.
        """
        if record.topic == PREDICTIONS:
            try:
                pred = decode_prediction(decoded if type(decoded) is dict else record.value)
            except BadInput:
                return
            ts = pred["ts"]
            self._rebuild_id(pred["request_id"], ts, ts + self.window_ms)
        else:
            event = self._decode(record, decoded, [])
            if event is None:
                return
            ts = event.ts
            if self.enricher is not None and (
                    self._rebuild_counted(event) if event.stream != self.labelled
                    else self._rebuild_id(event.id, ts, ts)):
                self.enricher.observe(event)
        seen, tp = self._rebuilt_seen, (record.topic, record.partition)
        newest = seen.get(tp)
        if newest is None or ts > newest:
            seen[tp] = ts
            low = min((s for s in seen.values() if s is not None), default=None)
            if low is not None and None not in seen.values():
                self._rebuilt_mark = max(self._rebuilt_mark, low - self.lateness)

    def _rebuild_id(self, rid: str, ts: int, end: int) -> bool:
        """Whether the copy of ``rid`` at ``ts`` (its window ending at ``end``) was taken:
        not while an earlier copy was remembered, nor late."""
        mark, last = self._rebuilt_mark, self._rebuilt.get(rid)
        if last is not None and last >= mark - self.remember_ms:
            return False  # a duplicate
        self._rebuilt[rid] = end
        # late: behind the watermark, or the state's late copy where nothing before it
        # in the rebuild says otherwise
        return not (end < mark or (last is None and self._late.get(rid) == ts))

    def _rebuild_counted(self, event: Event) -> bool:
        """Whether ``event``, of a stream not labelled, was counted: not while the id of
        an earlier copy was kept (``keep_ms``), as the joiner decided it."""
        ids = self._rebuilt_counted.get(event.stream)
        return ids is None or ids.add(event.id, event.ts, self._rebuilt_mark)

    def rebuilt(self) -> None:
        """End a ``rebuild``: the windows emitted and still remembered are closed again
        (and forgotten in time); a late one the state kept closed stays so."""
        oldest, closed = self.watermark - self.remember_ms, self.closed
        emitted = sorted((end, rid) for rid, end in self._rebuilt.items()
                         if end >= oldest and rid not in self.open and rid not in closed)
        closed.update((rid, end) for end, rid in emitted)
        self._emitted = deque(emitted)
        for ids in self._rebuilt_counted.values():
            ids.forget(self.watermark)
        self.counted = self._rebuilt_counted
        self._rebuilt, self._rebuilt_seen = {}, {}
        self._rebuilt_counted = {stream: CountedIds(ms) for stream, ms in self.keep_ms.items()}
        self.rewind = None

    def check(self, blob: bytes | None, whose: str = "the joiner's checkpoint") -> None:
        """ConfigError, as ``restore`` would raise it, if state ``blob`` was made with
        another ``made_with``; nothing changes."""
        if blob is not None:
            check_made_with(orjson.loads(blob).get("made_with") or {}, self.made_with,
                            whose)


def made_with(schemas: Mapping[str, Schema], window_ms: int, allowed_lateness_ms: int,
              enricher: Enricher | None) -> dict[str, Any]:
    """What a joiner's state means depends on, as JSON values (the same in every process).
    Not the partitions: a log keeps its count (Log.same_partitions) and a shard K/N
    has a consumer group of its own (join.runner). The Flink join records the same
    values in its checkpoint directory (join.flink.checkpoint_config)."""
    counters = {} if enricher is None else {
        name: [c.stream, c.window_ms, c.by] for name, (c, _) in sorted(enricher.counters.items())}
    return {"labelled": None if enricher is None else enricher.stream,
            "streams": sorted(schemas), "window_ms": window_ms,
            "allowed_lateness_ms": allowed_lateness_ms, "counters": counters}


def check_made_with(was: Mapping[str, Any], now: Mapping[str, Any], whose: str,
                    start_over: str = _START_OVER) -> None:
    """ConfigError if a state (``whose``) made with ``was`` cannot go on with ``now``
    (two ``made_with`` values): it names the first value that differs, both ways, and
    says how to ``start_over``. A value missing from ``was`` (written by an older
    livelearn) is taken as ``now``'s."""
    for key, (what, show_value) in _MADE_WITH.items():
        if key in was and was[key] != now[key]:
            raise ConfigError(f"{whose} was made with {what} {show_value(was[key])}; the "
                              f"pipeline now says {show_value(now[key])}. The samples "
                              f"would mix the two: {start_over}")


class CountedIds:
    """The ids of one stream's events counted, each kept while the watermark has not
    passed its ts by ``keep_ms``: ``add`` takes an id once meanwhile. ``forget`` lets
    go of those it has passed a step (``FORGET_STEP_MS``) at a time, so an event costs
    a dict entry and an append, in or out of order; ``add`` decides by the watermark
    it is given, not by what is forgotten yet."""

    __slots__ = ("keep_ms", "ts", "_steps", "_due")

    def __init__(self, keep_ms: int):
        self.keep_ms = keep_ms
        self.ts: dict[str, int] = {}  # id -> ts of the copy counted
        self._steps: dict[int, list[str]] = {}  # (ts + keep_ms) // FORGET_STEP_MS -> ids
        self._due: list[int] = []  # those steps, a heap

    def add(self, eid: str, ts: int, watermark: int) -> bool:
        """Whether the event ``eid`` at ``ts`` is to be counted: not while an earlier copy
        is kept. One the watermark has passed by ``keep_ms`` counts in no sample to
        come, and is not kept."""
        keep, seen = self.keep_ms, self.ts
        last = seen.get(eid)
        if last is not None and last + keep >= watermark:
            return False
        if ts + keep >= watermark:
            seen[eid] = ts
            step = (ts + keep) // FORGET_STEP_MS
            ids = self._steps.get(step)
            if ids is None:
                self._steps[step] = [eid]
                heapq.heappush(self._due, step)
            else:
                ids.append(eid)
        return True

    def forget(self, watermark: int) -> None:
        """Let go of the ids the watermark has passed by ``keep_ms``, a whole step at a
        time (those of the step it is in stay until it has passed it)."""
        due, seen, keep = self._due, self.ts, self.keep_ms
        while due and (due[0] + 1) * FORGET_STEP_MS <= watermark:
            for eid in self._steps.pop(heapq.heappop(due)):
                ts = seen.get(eid)
                if ts is not None and ts + keep < watermark:  # not a copy taken since
                    del seen[eid]

    def kept(self, watermark: int) -> list[tuple[str, int]]:
        """(id, ts) of each id kept, as ``add`` decides by ``watermark``."""
        return [(eid, ts) for eid, ts in self.ts.items() if ts + self.keep_ms >= watermark]


def counted_only(enricher: Enricher) -> dict[str, int]:
    """The streams that ``enricher``'s counters read but its labelled stream, each with the
    longest window (ms) of the counters that read it."""
    keep: dict[str, int] = {}
    for counter, _ in enricher.counters.values():
        if counter.stream != enricher.stream:
            keep[counter.stream] = max(keep.get(counter.stream, 0), counter.window_ms)
    return keep


def _window_obj(window: _Window | Event) -> list[Any]:
    """An open window as a checkpoint holds it: [prediction, events]; an event of a
    labelled stream as the window of a prediction marked ``labelled``."""
    if isinstance(window, Event):
        return [{"request_id": window.id, "ts": window.ts, "labelled": True},
                [_event_obj(window)]]
    return [window.prediction, [_event_obj(e) for e in window.events]]


def _start(window: _Window | Event) -> int:
    return window.ts if isinstance(window, Event) else int(window.prediction["ts"])


def _event_obj(e: Event) -> dict[str, Any]:
    return {"stream": e.stream, "key": e.key, "id": e.id, "ts": e.ts, "payload": e.payload}


def _unwritable_part(sample: dict[str, Any]) -> str:
    """Which feature or label of ``sample`` JSON cannot hold, and which of the pipeline's
    functions gave it ("" if none is found)."""
    for part, function in (("feature", "features"), ("label", "label")):
        values = sample.get(f"{part}s")
        for name, value in values.items() if isinstance(values, dict) else ():
            if not isinstance(name, str):
                return (f"; the {function} function gave a {part} named {show(name)} "
                        f"({type(name).__name__}): a name is text")
            try:
                orjson.dumps(value)
            except orjson.JSONEncodeError:
                return (f"; the {function} function gave {part} '{name}' {show(value)} "
                        f"({type(value).__name__})")
    return ""


def _dead(reason: Reason, detail: str, stream: str, raw: Record | bytes) -> Output:
    if isinstance(raw, Record):
        source, value = f"{raw.topic}/{raw.partition}@{raw.offset}", raw.value
    else:
        source, value = "", raw
    return Output(DEAD_LETTERS, stream, dead_letter(reason, detail, stream, value, source))
