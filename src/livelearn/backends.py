"""One factory for every protocol with backends chosen by URL (Log, Store)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from livelearn.errors import ConfigError


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
    try:
        found = importlib.import_module(module)
    except ModuleNotFoundError as e:  # a backend's client library, not installed
        if e.name is None or e.name.partition(".")[0] == "livelearn":
            raise
        # a backend's extra in pyproject.toml is named as its scheme (kafka, redis)
        raise ConfigError(f"{what} URL {url!r}: the {scheme} backend needs the Python "
                          f"package {e.name!r}, which is not installed: pip install "
                          f"'livelearn[{scheme}]'") from e
    return getattr(found, cls).from_url(url)
