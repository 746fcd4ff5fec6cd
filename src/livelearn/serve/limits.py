"""What the server accepts as a request body, and the messages it answers the rest with.

``BodyLimits`` checks every POST, PUT and PATCH body before FastAPI parses it:

- larger than ``max_bytes``: 413, from Content-Length before any byte is read,
  or as soon as the bytes read pass the limit;
- a media type other than JSON (``application/json`` or ``*/*+json``), a charset
  other than UTF-8, or a Content-Encoding (the body compressed): 415;
- bytes that are not UTF-8, or not strict JSON (RFC 8259: no NaN or Infinity,
  no number beyond a double, no lone surrogate), or nested more than
  ``MAX_DEPTH`` deep (as deep as an event may nest: events.MAX_NESTING): 400.

An empty body passes (the endpoint then says which body it expected). Every
refusal is JSON ``{"detail": message}``, the message naming the problem.
``validation_message`` turns FastAPI's validation errors into one such message
naming each field, what was expected and what came, without echoing the whole
input back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from livelearn.events import MAX_NESTING, is_digits, show, too_deep

#: Most items (a feedback join) or events (a label in the events) one /predict scores.
MAX_PREDICT = 1000
#: The longest user or item id /predict takes, in characters.
MAX_ID_CHARS = 256

#: The default largest request body, in bytes (1 MiB: a feedback batch of some
#: 5,000 events).
MAX_BODY_BYTES = 1 << 20
#: The deepest nesting of arrays and objects a body may have.
MAX_DEPTH = MAX_NESTING
_METHODS = frozenset({"POST", "PUT", "PATCH"})


class Refused(Exception):
    """A request body refused before parsing: its HTTP status and why."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


class BodyLimits:
    """ASGI middleware: refuse oversized, non-JSON, non-UTF-8 or malformed bodies."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _METHODS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        try:
            encoding = headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise Refused(415, f"header 'Content-Encoding': {encoding!r} is not "
                                   f"supported; send the body uncompressed")
            body = await self._read(headers, receive)
            check_json_body(headers.get("content-type"), body)
        except Refused as e:
            response = JSONResponse({"detail": e.detail}, status_code=e.status)
            await response(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, headers: Headers, receive: Receive) -> bytes:
        declared = headers.get("content-length", "")
        if is_digits(declared) and int(declared) > self.max_bytes:
            raise self._too_large(f"Content-Length is {declared} bytes")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Refused(400, "the client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise self._too_large(f"more than {self.max_bytes} bytes came")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large(self, what: str) -> Refused:
        return Refused(413, f"request body too large: {what}; the limit is "
                            f"{self.max_bytes} bytes (send smaller batches)")


def check_json_body(content_type: str | None, body: bytes) -> None:
    """Raise Refused unless ``body`` is empty or strict JSON in UTF-8 with a JSON media type."""
    if not body:
        return
    media, *parameters = (content_type or "").lower().split(";")
    media = media.strip()
    charset = next((p.partition("=")[2].strip().strip('"') for p in parameters
                    if p.partition("=")[0].strip() == "charset"), "utf-8")
    if media != "application/json" and not media.endswith("+json") \
            or charset.replace("_", "-") not in ("utf-8", "utf8"):
        raise Refused(415, f"header 'Content-Type': expected application/json in UTF-8, "
                           f"got {content_type or 'none'!r}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Refused(400, f"request body is not UTF-8: byte 0x{body[e.start]:02x} at "
                           f"offset {e.start} ({e.reason})") from None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise Refused(400, f"request body is not valid JSON: {e}") from None
    if too_deep(text, value):
        raise Refused(400, f"request body is nested more than {MAX_DEPTH} deep")


def validation_message(errors: Sequence[Mapping[str, Any]]) -> str:
    """One line per error: the field (a dotted path in the body), what was expected, what came.

    >>> validation_message([{"type": "missing", "loc": ("body", "user_id"),
    ...                      "msg": "Field required", "input": {}}])
    "field 'user_id': Field required"
    >>> validation_message([{"type": "int_type", "loc": ("body", "ts"),
    ...                      "msg": "Input should be a valid integer", "input": "soon"}])
    "field 'ts': Input should be a valid integer, got 'soon'"
    """
    lines = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        field = ".".join(loc[1:] if loc[:1] == ["body"] else loc)
        line = f"{f'field {field!r}' if field else 'request body'}: {error.get('msg', 'invalid')}"
        if error.get("type") != "missing":
            line += f", got {show(error.get('input'))}"
        lines.append(line)
    return "; ".join(lines) or "invalid request"


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the body already read, then whatever the client sends next."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return again

