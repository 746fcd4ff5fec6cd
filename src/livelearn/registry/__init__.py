"""The Registry: model versions on disk, their status, metrics and lineage."""

from livelearn.registry.registry import STATUSES, Registry, Version

__all__ = ["STATUSES", "Registry", "Version"]
