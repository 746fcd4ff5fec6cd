"""One factory for every protocol with backends chosen by URL (Log, Store)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from livelearn.errors import ConfigError, require


def open_backend(url: str, backends: Mapping[str, str], what: str) -> Any:
    """``backends[scheme]`` ("module:Class") built by its ``from_url(url)``.

    >>> open_backend("ftp://x", {"sqlite": "m:C"}, "log")
    Traceback (most recent call last):
    livelearn.errors.ConfigError: log URL 'ftp://x': scheme 'ftp' is not one of sqlite://...
    """
    scheme, sep, _ = url.partition("://")
    if not sep or scheme not in backends:
        raise ConfigError(f"{what} URL {url!r}: scheme {scheme!r} is not one of "
                          f"{', '.join(s + '://...' for s in backends)}")
    module, cls = backends[scheme].split(":")
    found = require(module, f"{what} URL {url!r}: the {scheme} backend")
    return getattr(found, cls).from_url(url)
