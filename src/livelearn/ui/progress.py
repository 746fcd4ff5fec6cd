"""The demo's live view in the terminal: throughput, joins, versions, live AUC."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from livelearn.join.runner import JoinRunner
from livelearn.registry import Registry
from livelearn.sim.client import ClientStats
from livelearn.study.outcome import Outcome
from livelearn.train.trainer import Trainer


class LiveProgress:
    """A context manager showing the loop's progress until it exits (if ``enabled``)."""

    def __init__(self, stats: ClientStats, joiner: JoinRunner, trainer: Trainer,
                 outcome: Outcome, registry: Registry, enabled: bool = True,
                 dashboard: str | None = None):
        """``dashboard``: the URL of the server's dashboard page, shown while it runs."""
        self.stats, self.joiner, self.trainer = stats, joiner, trainer
        self.dashboard = dashboard
        self.outcome, self.registry, self.enabled = outcome, registry, enabled
        self.console = Console(stderr=True)
        self._live: Live | None = None
        self._started = time.monotonic()
        self._auc: tuple[float, float] = (float("nan"), float("nan"))
        self._auc_at = 0.0

    def __enter__(self) -> LiveProgress:
        self._started = time.monotonic()
        if self.enabled:
            self._live = Live(get_renderable=self.render, console=self.console,
                              refresh_per_second=2, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._live is not None:
            self._live.__exit__(kind, error, tb)

    def render(self) -> Any:
        s, wall = self.stats, max(1e-9, time.monotonic() - self._started)
        if time.monotonic() - self._auc_at > 2 and self.outcome.learned > \
                self.outcome.baseline_samples:
            self._auc, self._auc_at = self.outcome.live_window_auc(), time.monotonic()
        versions = self.registry.statuses()
        approved = len(versions) - sum(map(versions.count, ("rejected", "candidate", "canary")))
        sim_time = datetime.fromtimestamp(s.sim_ts / 1000, UTC).strftime("%Y-%m-%d %H:%M") \
            if s.sim_ts else "-"
        dead = sum(n for k, n in self.joiner.counts.items() if k != "samples")
        table = Table(title="livelearn demo", show_header=False, min_width=60)
        for name, value in [
            ("simulated time", sim_time),
            ("impressions", f"{s.impressions:,}  ({s.impressions / wall:,.0f}/s)"),
            ("feedback events sent", f"{s.feedback_sent:,}  (spoiled on purpose: {s.faults})"),
            ("samples joined", f"{self.joiner.counts['samples']:,}"),
            ("dead letters (joiner)", f"{dead:,}"),
            ("samples learned", f"{self.trainer.samples:,}"),
            ("versions published", str(len(versions))),
            ("approved / rejected", f"{approved} / {versions.count('rejected')}"),
            ("AUC live / frozen (last 5000)", f"{self._auc[0]:.4f} / {self._auc[1]:.4f}"),
            ("wall time", f"{wall:.0f} s"),
        ]:
            table.add_row(name, value)
        if self.dashboard is not None:
            table.add_row("dashboard (while it runs)", self.dashboard)
        return table
