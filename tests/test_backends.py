"""Backends chosen by URL: one whose client library is not installed (livelearn's plain
install has neither confluent-kafka nor redis) is one line naming the package and the
extra that brings it, not an ImportError traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest

from livelearn.errors import ConfigError
from livelearn.log import open_log
from livelearn.tables.store import open_store


@pytest.mark.parametrize(("url", "opener", "package", "module"), [
    ("kafka://127.0.0.1:1", open_log, "confluent_kafka", "livelearn.log.kafka"),
    ("redis://127.0.0.1:1/0", open_store, "redis", "livelearn.tables.redis")])
def test_a_backend_without_its_client_names_the_extra(
        url: str, opener: Callable[[str], Any], package: str, module: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # importing it raises ModuleNotFoundError
    monkeypatch.delitem(sys.modules, module, raising=False)
    scheme = url.partition("://")[0]
    with pytest.raises(ConfigError, match=rf"URL '{url}': the {scheme} backend needs the "
                                          rf"Python package '{package}', which is not "
                                          rf"installed: pip install 'livelearn\[{scheme}\]'"):
        opener(url)
