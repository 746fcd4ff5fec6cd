"""Log backends, chosen by URL: ``sqlite:///path/to/log.db`` (embedded), ``memory://``, ``kafka://host:port``."""

from __future__ import annotations

import importlib

from livelearn.errors import ConfigError
from livelearn.log.base import Checkpoint, Log, Record, TopicPartition, partition_for

#: URL scheme -> "module:class". Adding a backend is adding a file and a line here.
BACKENDS = {"sqlite": "livelearn.log.sqlite:SQLiteLog",
            "memory": "livelearn.log.memory:MemoryLog",
            "kafka": "livelearn.log.kafka:KafkaLog"}


def open_log(url: str) -> Log:
    """Open the log a URL names, for example ``sqlite:///var/ll.db``."""
    scheme, sep, _ = url.partition("://")
    if not sep or scheme not in BACKENDS:
        raise ConfigError(f"log URL {url!r}: expected one of "
                          f"{', '.join(s + '://...' for s in BACKENDS)}")
    module, cls = BACKENDS[scheme].split(":")
    backend: type[Log] = getattr(importlib.import_module(module), cls)
    return backend.from_url(url)  # type: ignore[attr-defined, no-any-return]


__all__ = ["BACKENDS", "Checkpoint", "Log", "Record", "TopicPartition", "open_log",
           "partition_for"]
