"""One exception root for everything a user can act on.

Every error names what was wrong and where: the stream, the field, what was
expected and what came. A server maps ``status`` to its HTTP response.
"""

from __future__ import annotations


class LivelearnError(Exception):
    """Root of livelearn's errors. ``status`` is the HTTP status a server answers with."""

    status = 500


class BadInput(LivelearnError):
    """An event, request or file does not match what was declared."""

    status = 422


class NotFound(LivelearnError):
    """A stream, table row, topic or model version that does not exist."""

    status = 404


class Unavailable(LivelearnError):
    """The role cannot answer yet (for example: no model version approved)."""

    status = 503


class ConfigError(LivelearnError):
    """A pipeline spec, URL or command-line option is wrong."""

    status = 400


class PipelineError(LivelearnError):
    """The pipeline's own code failed or gave what livelearn cannot use: the features
    function raised, or returned a value that is not a number, a string or a bool."""

    status = 500


class Corrupt(LivelearnError):
    """A checkpoint or model file whose checksum does not match: damaged or truncated."""

    status = 500
