"""One exception root for everything a user can act on.

Every error names what was wrong and where: the stream, the field, what was
expected and what came. A server maps ``status`` to its HTTP response.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


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


class ClientGone(LivelearnError):
    """The client closed its connection before its answer was ready (its timeout, most
    likely): nothing of the request is kept. 499, nginx's "client closed request": no
    client reads it, a server's responses by status count it."""

    status = 499


class ConfigError(LivelearnError):
    """A pipeline spec, URL or command-line option is wrong."""

    status = 400


class PipelineError(LivelearnError):
    """The pipeline's own code failed or gave what livelearn cannot use: its features or
    label function raised, or features returned a value not a number, a string or a bool."""

    status = 500


def guarded(function: Callable[..., T], what: str | Callable[..., str]) -> Callable[..., T]:
    """``function`` (the pipeline's own code), raising PipelineError "``what`` raised
    KeyError: 'x'" where it raises anything but a LivelearnError (``what`` may be a
    function of the call's arguments that says it then, naming what the call was for)."""
    def call(*args: Any) -> T:
        try:
            return function(*args)
        except LivelearnError:
            raise
        except Exception as e:  # whatever the pipeline's code raises is its own fault
            said = what if isinstance(what, str) else what(*args)
            raise PipelineError(f"{said} raised {type(e).__name__}: {e}") from e

    return call


class Fenced(LivelearnError):
    """Another process took over this role's consumer group (or trainer): this one must
    stop, its last outputs not written, so that one role of a group writes at a time."""

    status = 409


class TooLarge(LivelearnError):
    """A record larger than the log takes in one (Kafka: the topic's max.message.bytes)."""

    status = 500


class Lost(LivelearnError):
    """Records a role had not read yet were deleted from the log (Kafka's retention):
    going on would skip them, so the role stops (unless run with ``--skip-lost``, which
    skips them and writes each gap to the dead letters, reason lost)."""

    status = 500


class Corrupt(LivelearnError):
    """A checkpoint or model file whose checksum does not match: damaged or truncated."""

    status = 500


#: The extra of pyproject.toml that installs each optional library livelearn uses (by the
#: top-level module it is imported as).
EXTRAS = {"confluent_kafka": "kafka", "redis": "redis", "river": "river", "sklearn": "sklearn",
          "scipy": "sklearn", "torch": "torch"}


def missing_extra(e: ModuleNotFoundError, what: str) -> ConfigError | None:
    """The error for an optional library that is not installed, naming the extra that
    brings it: ``WHAT needs the Python package 'torch', which is not installed: pip install
    'livelearn[torch]'``; None if ``e`` is about a module of no extra.

    >>> print(missing_extra(ModuleNotFoundError(name="sklearn.base"), "X"))
    X needs the Python package 'sklearn', which is not installed: pip install 'livelearn[sklearn]'
    """
    top = (e.name or "").partition(".")[0]
    if top not in EXTRAS:
        return None
    return ConfigError(f"{what} needs the Python package {top!r}, which is not installed: "
                       f"pip install 'livelearn[{EXTRAS[top]}]'")


def require(module: str, what: str) -> Any:
    """``import module``, or ConfigError naming the extra to install (missing_extra)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        extra = missing_extra(e, what)
        if extra is None:
            raise
        raise extra from e


def cannot(action: str, path: str | Path, e: OSError) -> ConfigError:
    """The error for a path the system refused, naming it and the reason:
    ``cannot create work folder '/proc/nope': No such file or directory``."""
    return ConfigError(f"cannot {action} {str(path)!r}: {e.strerror or e}")


def make_folder(path: str | Path, what: str) -> Path:
    """``path`` as a folder, created with its parents if missing; ConfigError naming
    ``what`` (e.g. "work folder") if it cannot be (no permission, a file in the way)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise cannot(f"create {what}", path, e) from None
    return path
