"""How the server answered: responses counted by endpoint and HTTP status.

``CountResponses`` is ASGI middleware placed outside every other, so it counts
the refusals of ``limits.BodyLimits`` (413, 415, 400) and the validation and
pipeline errors (422, 500) as well as the answers. Only the ``paths`` given
are counted (the server's API, not its pages or a scanner's guesses), so the
counts stay a few numbers however many URLs are tried. A request that raises
past every handler is counted as the 500 the server then answers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Responses by (path, HTTP status).
Responses = Counter[tuple[str, int]]


class CountResponses:
    """ASGI middleware: add one to ``counts[(path, status)]`` per response to ``paths``."""

    def __init__(self, app: ASGIApp, counts: Responses, paths: Iterable[str]):
        self.app, self.counts, self.paths = app, counts, frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path not in self.paths:
            await self.app(scope, receive, send)
            return

        started = False

        async def counted(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                self.counts[(path, int(message["status"]))] += 1
            await send(message)

        try:
            await self.app(scope, receive, counted)
        except Exception:
            if not started:
                self.counts[(path, 500)] += 1
            raise
