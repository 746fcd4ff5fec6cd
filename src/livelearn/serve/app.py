"""The prediction server: where a request is scored, and its features logged.

For a feedback join, POST /predict scores candidates for one user with the
version the holder serves, and appends one prediction record per candidate
(request_id, ts, user, item, model_version, features as served, score) to the
predictions topic before answering: last, after counting them, so a request
answered with an error has no prediction logged (``_predict_candidates``). For
a label in the events, POST /predict scores events of the labelled stream
without their label, each with the features the joiner will build for it
(serve.scoring), and logs nothing: the joiner does not read predictions there,
the samples come from the labelled events themselves, and the gate judges
versions on the trainer's prequential scores of them (no canary, no rollback
on served scores).

POST /feedback appends events to their streams (a label-in-event pipeline's
labelled events too: the joiner makes them samples); an event that fails its
schema, or is larger than its stream's topic takes (Log.record_limit: reason
``too_large``, as ``livelearn ingest`` writes it), goes to the dead-letter
topic and is named in the answer. The
pipeline's windowed counters live in the online store: both endpoints count
what they logged, a thread counts what other producers append to the counted
streams (within ``poll_s``), and /predict reads each candidate's or event's
counts as of its ts (serve.counters). GET /models, /healthz (whether a model
serves), /readyz (200 when /predict can answer: a version approved, the log
taking appends (serve.health) and the online store answering (and taking the counts of
predictions, where the pipeline counts them); else 503 with
the reason, for a load balancer) and /metrics (Prometheus text, with the
responses of /predict and /feedback by status: serve.traffic); the last three
answer on the event loop, so they answer while requests wait on a log that is
down. GET /dashboard is a page that shows the loop at work, polling GET
/dashboard/data (ui.dashboard); GET / redirects to it.

Bad requests get a 4xx whose ``detail`` names the field and what was expected:
bodies too large (413), of another content type than JSON or compressed (415),
not UTF-8 or not valid JSON (400) are refused before parsing (see ``limits``);
a field of the wrong type, missing or unknown, or an item in no table, gets 422.
When the pipeline's features function raises, or returns a value that is not
a number, a string or a bool (a NaN, a list, None), /predict answers 500 with a
``detail`` that names the user, item and feature (or the exception), and so it
does when the model gives a score that is not finite, or outside [0, 1] for a
binary learner, or a prediction record is larger than the predictions topic
takes (Log.record_limit): nothing is counted or logged for that request, and
the server keeps serving whatever comes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import anyio
import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from livelearn.errors import (
    BadInput,
    ClientGone,
    ConfigError,
    LivelearnError,
    PipelineError,
    Unavailable,
    guarded,
)
from livelearn.events import (
    USUAL_FROM_MS,
    Event,
    Reason,
    check_envelope,
    check_payload,
    check_ts,
    dead_letter,
    decode_event,
    digits_of_a_date,
    letter_value,
    partition_key,
    too_large,
    wide_int,
    wide_int_said,
)
from livelearn.features.hashing import Features, unusable
from livelearn.log.base import Log
from livelearn.models.base import score_problem
from livelearn.registry import Registry
from livelearn.serve.counters import ServedCounters, retention_for
from livelearn.serve.health import LogHealth
from livelearn.serve.holder import ModelHolder
from livelearn.serve.limits import (
    MAX_BODY_BYTES,
    MAX_ID_CHARS,
    MAX_PREDICT,
    BodyLimits,
    validation_message,
)
from livelearn.serve.scoring import EventScorer
from livelearn.serve.tables import ServedTables
from livelearn.serve.traffic import CountResponses, Responses
from livelearn.spec import DEAD_LETTERS, PREDICTIONS, Pipeline
from livelearn.tables.store import Store, open_store
from livelearn.ui.dashboard import ServerState, mount_dashboard

logger = logging.getLogger("livelearn.serve")


class PredictRequest(BaseModel):
    # a field it does not know is refused: a misspelled "ts" would score as of now
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    items: list[Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)]] = Field(
        min_length=1, max_length=MAX_PREDICT,
        description="candidate item ids, scored in this order")
    ts: StrictInt | None = Field(
        None, description="event time, integer ms since the epoch UTC; now if absent")


class EventsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[dict[str, Any]] = Field(
        min_length=1, max_length=MAX_PREDICT,
        description="events of the labelled stream without their label, flat: the key field, "
                    "the schema's fields, optionally the id and ts fields (serve.scoring)")


class EventScore(BaseModel):
    id: str
    score: float
    model_version: int


class EventsResponse(BaseModel):
    model_version: int
    scores: list[EventScore]


class Scored(BaseModel):
    request_id: str
    item: str
    score: float
    model_version: int


class PredictResponse(BaseModel):
    model_version: int
    predictions: list[Scored]


class FeedbackResponse(BaseModel):
    accepted: int
    rejected: list[dict[str, Any]]


def create_app(pipeline: Pipeline, log: Log, registry: Registry, data_dir: str | Path = ".",
               poll_s: float = 0.1, max_body_bytes: int = MAX_BODY_BYTES,
               store: Store | None = None) -> FastAPI:
    """The FastAPI app for one pipeline.

    The users and items tables are loaded from ``data_dir`` into the online
    ``store`` at creation (a private in-memory one by default, keeping counted events
    for ``retention_for`` the pipeline's counters; servers that
    share a Redis store read the same rows and counters), each row valid from its
    ``as_of`` (the store keeps a key's newest ``max_versions``), and /predict reads
    each row and count as of the request's time, as the joiner and ingested
    impressions do. A store that loses the tables (a Redis restarted without
    persistence, or flushed) gets them back from ``data_dir``, and its counters
    from the log, at the first request that misses a row (serve.tables); while
    Redis is unreachable /predict answers 503, and while the log is failing
    /predict and /feedback answer 503 at once (serve.health). A request body
    larger than ``max_body_bytes`` gets 413.

    For a label in the events, the lookups' tables are loaded instead, and /predict
    scores events (serve.scoring). For both, the counters also count what other
    producers append to the counted streams, read from the log every ``poll_s``.
    """
    labelled = pipeline.labelled is not None
    tables_served = [lk.table for lk in pipeline.lookups] if labelled else \
        [pipeline.users, pipeline.items]
    if any(table is None for table in tables_served):
        raise ConfigError(f"pipeline '{pipeline.name}': a feedback join's server needs its "
                          f"users and items tables")
    registry.check_pipeline(pipeline.name)
    store = store or open_store("memory://", retention_for(pipeline.counters))
    served = ServedCounters(pipeline.counters, store)
    health = LogHealth(log, PREDICTIONS)

    def count_logged() -> None:
        if served.counters:
            started = time.perf_counter()
            counted = served.add_logged(log, pipeline.schemas)
            logger.info("counted %d logged events in the store's counters in %.1f s", counted,
                        time.perf_counter() - started)

    tables = ServedTables(store, [t for t in tables_served if t is not None], data_dir,
                          recount=count_logged, pipeline=pipeline.name)
    holder = ModelHolder(registry, poll_s, pipeline.policies.canary_share,
                         warm=lambda model: model.predict(pipeline.hash_rows([{}], model.bits)))
    holder.refresh()  # the incumbent loaded now: a damaged one is an error before serving
    counts: Counter[str] = Counter()
    responses: Responses = Counter()
    stop = threading.Event()
    follower = threading.Thread(target=served.follow, args=(log, pipeline.schemas, poll_s, stop),
                                name="counters-follow", daemon=True)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        holder.start()
        if served.followed:
            follower.start()
        yield
        stop.set()
        if follower.is_alive():
            follower.join()
        holder.stop()
        store.close()

    app = FastAPI(title=f"livelearn: {pipeline.name}", lifespan=lifespan)
    app.state.holder = holder
    app.add_middleware(BodyLimits, max_bytes=max_body_bytes)
    # added last, so outermost: it counts BodyLimits' refusals too
    app.add_middleware(CountResponses, counts=responses, paths=("/predict", "/feedback"))

    @app.exception_handler(LivelearnError)
    async def _error(_: Request, exc: LivelearnError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_message(exc.errors())}, status_code=422)

    if labelled:
        _predict_events(app, pipeline, holder, tables, served, counts)
    else:
        _predict_candidates(app, pipeline, log, health, holder, tables, served, counts)
    _feedback(app, pipeline, log, health, holder, served, counts)

    def counters() -> dict[str, int]:
        """The server's counters since it started, by name (/metrics adds ``_total``)."""
        scored = "events_scored" if labelled else "predictions"  # not logged / logged
        return {scored: counts["predictions"], "feedback_events": counts["feedback"],
                "feedback_rejected": counts["feedback_rejected"], "model_swaps": holder.swaps}

    _status(app, registry, holder, health, tables, served, counters, responses)
    mount_dashboard(app, f"livelearn: {pipeline.name}", registry, log, lambda: ServerState(
        holder.version, holder.swapped_at, holder.clock_ts, counters(), dict(responses),
        holder.canary, holder.canary_share))
    return app


def _predict_events(app: FastAPI, pipeline: Pipeline, holder: ModelHolder,
                    tables: ServedTables, served: ServedCounters, counts: Counter[str]) -> None:
    """A label-in-event pipeline's POST /predict: events scored (serve.scoring), counted
    in ``counts``, not logged (their labels come with the events themselves)."""
    scorer = EventScorer(pipeline, tables, served)

    @app.post("/predict", response_model=EventsResponse)
    def predict_events(req: EventsRequest) -> Response:
        now = int(time.time() * 1000)
        events = [scorer.event(obj, f"events.{i}", now) for i, obj in enumerate(req.events)]
        for event in events:
            holder.observe(event.ts)
        version, model = holder.current()
        rows = [scorer.row_features(event) for event in events]
        names = [f"event {event.id!r}" for event in events]
        scores = _scores(model, rows, pipeline, f"stream '{scorer.stream.name}'", names)
        counts["predictions"] += len(events)
        return Response(orjson.dumps({"model_version": version, "scores": [
            {"id": event.id, "score": score, "model_version": version}
            for event, score in zip(events, scores, strict=True)]}),
            media_type="application/json")


def _feedback(app: FastAPI, pipeline: Pipeline, log: Log, health: LogHealth,
              holder: ModelHolder, served: ServedCounters, counts: Counter[str]) -> None:
    """POST /feedback: a batch of events, each appended to its stream's topic or rejected
    by index (a dead letter where it holds something to keep), in one atomic write."""
    @app.post("/feedback", response_model=FeedbackResponse)
    def feedback(events: list[Any]) -> dict[str, Any]:
        decoded, rejected, letters = _decoded_batch(events, pipeline)
        accepted: list[Event] = []
        if decoded or letters:  # an empty batch asks nothing of the log: it tells nothing of it
            # the topics' limits are asked inside: a log failing refuses at once (serve.health)
            with health.appending(), log.atomic():
                good, accepted = _fitting(log, decoded, rejected, letters)
                for stream, records in good.items():
                    log.append(stream, records)
                if letters:
                    log.append(DEAD_LETTERS, _letter_records(log, letters))
            rejected.sort(key=lambda r: int(r["index"]))
        for event in accepted:
            holder.observe(event.ts)
        _count_feedback(served, accepted)
        counts["feedback"] += len(events) - len(rejected)
        counts["feedback_rejected"] += len(rejected)
        return {"accepted": len(events) - len(rejected), "rejected": rejected}


def _count_feedback(served: ServedCounters, accepted: list[Event]) -> None:
    """Count the events a /feedback batch appended; a store that refuses them (Redis down
    or full) fails nothing: they are in the log, where the counters' follower counts
    them once the store takes them (serve.counters). A 503 had the client send the
    events again, each then twice in the log."""
    try:
        served.add_events(accepted)
    except Unavailable as e:
        logger.debug("%d feedback event(s) appended, not counted yet: %s", len(accepted), e)


def _status(app: FastAPI, registry: Registry, holder: ModelHolder, health: LogHealth,
            tables: ServedTables, served: ServedCounters,
            counters: Callable[[], dict[str, int]], responses: Responses) -> None:
    """GET /models, /healthz, /readyz and /metrics."""
    @app.get("/models")
    def models() -> list[dict[str, Any]]:
        return [{"version": v.id, "parent": v.parent, "status": v.status, "created": v.created,
                 "serving_since_ts": v.serving_since_ts, "metrics": v.meta.get("window"),
                 "samples": v.meta.get("samples")} for v in registry.versions()]

    # /healthz, /readyz and /metrics are coroutines: they answer on the event loop while
    # every thread of the pool that runs the other endpoints waits on the log
    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        canary = {} if holder.canary is None else {"canary_version": holder.canary}
        return {"status": "ok" if holder.version else "no model",
                "model_version": holder.version, **canary}

    @app.get("/readyz", response_model=None)
    async def readyz() -> dict[str, Any] | JSONResponse:
        """Whether /predict can answer now (a load balancer's readiness check): 503 with
        the reason before a version is approved, while the log is failing (serve.health)
        or while the online store is down, or refuses the counting of predictions (a
        Redis full: serve.counters). The store is asked in a thread of the event loop's
        own executor, not of the pool where requests may all wait on the log."""
        try:
            holder.current()
            health.check()
            await asyncio.to_thread(tables.ready)
            await asyncio.to_thread(served.ready)
        except Unavailable as e:
            return JSONResponse({"ready": False, "detail": str(e)}, status_code=503)
        return {"ready": True, "model_version": holder.version}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> str:
        lines = []
        for name, n in counters().items():
            lines += [f"# TYPE livelearn_{name}_total counter", f"livelearn_{name}_total {n}"]
        lines.append("# TYPE livelearn_http_responses_total counter")
        lines += [f'livelearn_http_responses_total{{path="{path}",status="{status}"}} {n}'
                  for (path, status), n in sorted(responses.items())]
        lines += [
            "# TYPE livelearn_model_version gauge",
            f"livelearn_model_version {holder.version or 0}",
            "# TYPE livelearn_event_clock_ms gauge",
            f"livelearn_event_clock_ms {holder.clock_ts}",
        ]
        return "\n".join(lines) + "\n"


def _predict_candidates(app: FastAPI, pipeline: Pipeline, log: Log, health: LogHealth,
                        holder: ModelHolder, tables: ServedTables, served: ServedCounters,
                        counts: Counter[str]) -> None:
    """A feedback join's POST /predict: a user's candidates scored, counted and logged.

    The predictions are counted in the store's counters (serve.counters) before they are
    appended to the log, and the append is the last step that may fail: a request that
    gets an error (a full or unreachable Redis: 503) leaves no prediction in the log, so
    the joiner never labels what no client was shown. The other way round, an append that
    fails after the counting (the log down: 503) leaves the request's predictions counted
    though not logged: until they leave their windows, the served counts of its items and
    user exceed what the log holds by those, and a server that counts the log again
    (started on a fresh store) does not count them. A client that retries is served new
    request ids, counted again. A request whose client closed its connection meanwhile (it
    waited past the client's timeout: a thread pool busy, a slow features function) is
    answered 499 before anything is counted or logged: no one was shown its predictions,
    which the joiner would otherwise label not clicked."""

    @app.post("/predict", response_model=PredictResponse)
    def predict(req: PredictRequest, request: Request,
                arrived: Annotated[float, Depends(_arrived)]) -> Response:
        health.check()  # the log failing: 503 at once, nothing counted (serve.health)
        ts = int(time.time() * 1000) if req.ts is None else check_ts(req.ts, None)
        if ts < USUAL_FROM_MS:
            digits_of_a_date(ts, "field 'ts'")  # 202511291030: 1976 as ms
        holder.observe(ts)
        version, model = holder.current(req.user_id)
        user, items = tables.rows(req.user_id, req.items, ts)
        rows = [_by_name(row) for row in served.features(
            _named(pipeline, req.user_id, req.items), req.user_id, user, req.items, items, ts)]
        scores = _scores(model, rows, pipeline, f"user {req.user_id!r}",
                         [f"item {item!r}" for item in req.items])
        out, records = [], []
        for item, row, score in zip(req.items, rows, scores, strict=True):
            rid = uuid.uuid4().hex
            out.append({"request_id": rid, "item": item, "score": score,
                        "model_version": version})
            records.append({"request_id": rid, "ts": ts, "user": req.user_id, "item": item,
                            "model_version": version, "score": score, "features": row})
        logged = _logged(records, pipeline.name, req, log.record_limit(PREDICTIONS))
        if _client_gone(request, arrived):
            raise ClientGone(f"user {req.user_id!r}: the client closed the connection before "
                             f"the answer, which it never saw: nothing logged")
        # counted first, so that the log append is the last step that may fail: a request
        # answered with an error has nothing in the log for the joiner to label
        served.add_predictions(records)
        with health.appending(), log.atomic():
            log.append(PREDICTIONS, logged)
        counts["predictions"] += len(records)
        return Response(orjson.dumps({"model_version": version, "predictions": out}),
                        media_type="application/json")


def _named(pipeline: Pipeline, user: str, items: list[str]) -> Callable[..., Features]:
    """The pipeline's features function for one request's candidates, called once per item
    in ``items``' order (ServedCounters.features): where it raises, PipelineError (500)
    names the user and the item it raised on, as the other failures of /predict do."""
    named, item = iter(items), None
    call = guarded(pipeline.features, lambda *_: f"pipeline '{pipeline.name}', user {user!r}, "
                                                 f"item {item!r}: the features function")

    def features(*args: Any) -> Features:
        nonlocal item
        item = next(named)  # the name is made only where the function raises
        return call(*args)

    return features


#: Seconds a request may take before the server asks whether its client still waits: the
#: question is a trip to the event loop (about 0.14 ms, a seventh of a small /predict),
#: and a client that gives up within 10 ms of sending is rare.
ASK_AFTER_S = 0.01


async def _arrived() -> float:
    """When a request was read (monotonic clock), on the event loop: before it waited
    for a thread of the pool."""
    return time.monotonic()


def _client_gone(request: Request, arrived: float) -> bool:
    """Whether the client of a request that ``arrived`` ASK_AFTER_S ago or more closed
    its connection; asked from the request's thread of the pool."""
    return (time.monotonic() - arrived > ASK_AFTER_S
            and anyio.from_thread.run(request.is_disconnected))


def _by_name(row: Features) -> Features:
    """A candidate's features as its sample will carry them: sorted by name (the joiners'
    order, the Flink joiner's JSON's too). Without transforms a feature's field is its
    position in its row, so the server scores the fields the trainer learns; an FFM
    served the features function's order, other fields than those it learned."""
    if isinstance(row, dict) and all(isinstance(name, str) for name in row):
        return dict(sorted(row.items()))
    return row  # not features: _scores and _logged say what is wrong


def _scores(model: Any, rows: list[Features], pipeline: Pipeline, who: str, names: list[str]
            ) -> list[float]:
    """The model's score of each row (of ``who``: a user, a stream; each row named in
    ``names``: an item, an event); PipelineError (500) naming the row and the feature
    where a row cannot be hashed (or is not of the type its declared transform takes) or
    gets a score the model must not give (not finite, or outside [0, 1] for a binary
    learner)."""
    name = pipeline.name
    try:
        scores = model.predict(pipeline.hash_rows(rows, model.bits))
    except Exception as e:  # a feature of a type hashing cannot read, most likely
        raise PipelineError(_unusable(rows, name, who, names) or (
            f"pipeline '{name}', {who}: the model cannot score the "
            f"features: {type(e).__name__}: {e}")) from e
    problem = score_problem(model, scores)
    if problem is not None:
        raise PipelineError(_unusable(rows, name, who, names) or (
            f"pipeline '{name}', {who}, {names[problem[0]]}: the model gave {problem[1]}"))
    return list(scores.tolist())


def _unusable(rows: list[Features], pipeline: str, who: str, names: list[str]) -> str | None:
    """What is wrong with the first row's features that cannot be used, if any."""
    for name, row in zip(names, rows, strict=True):
        problem = unusable(row)
        if problem is not None:
            return f"pipeline '{pipeline}', {who}, {name}: {problem}"
    return None


def _logged(records: list[dict[str, Any]], pipeline: str, req: PredictRequest,
            limit: int | None) -> list[tuple[str, bytes]]:
    """The prediction records as JSON; PipelineError (500) if a feature cannot be written,
    or a record is larger than ``limit`` (Log.record_limit of the predictions topic)."""
    try:
        logged = [(r["request_id"], orjson.dumps(r)) for r in records]
    except TypeError as e:  # orjson: a numpy number, an int beyond 64 bits, ...
        raise PipelineError(f"pipeline '{pipeline}', user {req.user_id!r}: the features "
                            f"cannot be logged as JSON: {e}") from None
    if limit is None:
        return logged
    for (key, value), record in zip(logged, records, strict=True):
        if len(key) + len(value) > limit:  # the key: hex, ASCII
            raise PipelineError(
                f"pipeline '{pipeline}', user {req.user_id!r}, item {record['item']!r}: its "
                f"prediction record is {len(key) + len(value)} bytes, more than the {limit} "
                f"a record of topic '{PREDICTIONS}' may have (the log's limit; on Kafka the "
                f"topic's max.message.bytes): nothing was counted or logged. Make its "
                f"features smaller, or raise the limit")
    return logged


#: A /feedback event that passed its schema: (index in the batch, as sent, event, JSON).
_Decoded = tuple[int, Any, Event, bytes]
#: A dead letter of a /feedback event: (index in the batch, stream, letter).
_Letter = tuple[int, str, dict[str, Any]]


def _decoded_batch(events: list[Any], pipeline: Pipeline
                   ) -> tuple[list[_Decoded], list[dict[str, Any]], list[_Letter]]:
    """A /feedback batch's events that pass their schema; for the others, what the answer
    says of each (rejected) and its dead letter (malformed)."""
    decoded: list[_Decoded] = []
    rejected: list[dict[str, Any]] = []
    letters: list[_Letter] = []
    for i, obj in enumerate(events):
        try:
            event, value = _decode(obj, pipeline)
        except BadInput as e:
            rejected.append({"index": i, "error": str(e)})
            stream = str(obj.get("stream") if isinstance(obj, Mapping) else None)
            letters.append((i, stream, dead_letter(Reason.MALFORMED, str(e), stream, _raw(obj))))
            continue
        decoded.append((i, obj, event, value))
    return decoded, rejected, letters


def _fitting(log: Log, decoded: list[_Decoded], rejected: list[dict[str, Any]],
             letters: list[_Letter]) -> tuple[dict[str, list[tuple[str, bytes]]], list[Event]]:
    """The records of the ``decoded`` events by stream, and those events; an event larger
    than its topic takes (Log.record_limit) is added to ``rejected`` and ``letters``
    (too_large, as ``livelearn ingest`` writes it) instead."""
    good: dict[str, list[tuple[str, bytes]]] = {}
    accepted: list[Event] = []
    for i, obj, event, value in decoded:
        key = partition_key(event)
        size, limit = len(key.encode()) + len(value), log.record_limit(event.stream)
        if limit is not None and size > limit:
            letter = too_large("the event", size, limit, event.stream, event.stream, _raw(obj))
            rejected.append({"index": i, "error": letter["detail"]})
            letters.append((i, event.stream, letter))
            continue
        good.setdefault(event.stream, []).append((key, value))
        accepted.append(event)
    return good, accepted


def _letter_records(log: Log, letters: list[_Letter]) -> list[tuple[str, bytes]]:
    """The dead letters' records, in the order of their events in the batch."""
    limit = log.record_limit(DEAD_LETTERS)
    return [(stream, letter_value(letter, stream, limit, DEAD_LETTERS))
            for _, stream, letter in sorted(letters, key=lambda x: x[0])]


def _decode(obj: Any, pipeline: Pipeline) -> tuple[Event, bytes]:
    """One event of a /feedback batch, checked, and its JSON; BadInput if it is malformed."""
    stream = obj.get("stream") if isinstance(obj, Mapping) else None
    if isinstance(stream, str) and stream in pipeline.schemas:
        check_payload(obj, stream)  # a flat record, as ingest reads: say where it goes
    try:
        event = decode_event(obj if isinstance(obj, Mapping) else orjson.dumps(obj),
                             pipeline.schemas)
        check_envelope(obj, event.stream)  # decoded: obj is a mapping
        if event.ts < USUAL_FROM_MS:
            digits_of_a_date(event.ts, f"stream '{event.stream}', field 'ts'")
        return event, event.to_json()
    except TypeError as e:  # orjson: an integer beyond 64 bits (Python's json reads it exact)
        found = wide_int(obj)
        if found is not None and isinstance(stream, str):  # as `livelearn ingest` says it
            raise BadInput(wide_int_said(stream, *found)) from None
        raise BadInput(f"event cannot be stored as JSON: {e}") from None


def _raw(obj: Any) -> str:
    """An event as it came, for a dead letter; repr where it is not plain JSON."""
    try:
        return orjson.dumps(obj).decode()
    except TypeError:
        return repr(obj)
