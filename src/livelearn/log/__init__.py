"""Log backends, chosen by URL: ``sqlite:///relative/log.db`` or ``sqlite:////absolute/log.db``
(embedded), ``memory://``, ``kafka://host:port``."""

from __future__ import annotations

from livelearn.backends import open_backend
from livelearn.log.base import Checkpoint, Log, Record, TopicPartition, partition_for

#: URL scheme -> "module:class". Adding a backend is adding a file and a line here.
BACKENDS = {"sqlite": "livelearn.log.sqlite:SQLiteLog",
            "memory": "livelearn.log.memory:MemoryLog",
            "kafka": "livelearn.log.kafka:KafkaLog"}


def open_log(url: str) -> Log:
    """Open the log a URL names, for example ``sqlite:///ll/log.db`` (ll/log.db here)."""
    log: Log = open_backend(url, BACKENDS, "log")
    return log


__all__ = ["BACKENDS", "Checkpoint", "Log", "Record", "TopicPartition", "open_log",
           "partition_for"]
