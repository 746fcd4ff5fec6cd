"""The dashboard: one page that shows the loop at work, and the JSON it polls.

GET /dashboard is one self-contained HTML page (inline CSS and a small inline
script; nothing is fetched from elsewhere) with five sections: the version this
server serves and since when (and the canary it holds); its counters (predictions
logged, feedback events accepted and rejected, model swaps, responses of /predict
and /feedback by HTTP status); the dead letters of the log by reason; a chart of the newest
``MAX_CHART`` versions' metric; and the newest ``MAX_ROWS`` versions with their
status, samples learned, metric, creation time, serving time and the last
verdict on them (approved, rejected or a canary, by the gate, a rollback or by
hand) with its reason.

Every ``POLL_S`` seconds the page's script fetches GET /dashboard/data and puts
the sections it holds in place of its own. That answer is the facts as JSON
(``data``) and the sections rendered from them (``html``): one piece of code
draws the page, loaded or refreshed, and it escapes every string it puts in
HTML (reasons and names come from users' pipelines). GET / redirects here.

A poll is cheap: it reads the registry's index (the newest versions and their
verdicts, no model file, however many versions there are) and only the dead
letters appended since the last poll, at most ``DEAD_LETTERS_PER_POLL`` (a
longer backlog is counted over several polls, and the page says so); never the
rest of the log. Times on the page are UTC:
"created" and "swapped in" are wall-clock times, "serving since" and the event
clock are event times.
"""

from __future__ import annotations

import html
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, RedirectResponse

from livelearn.errors import Lost, NotFound
from livelearn.log.base import Log, Record, TopicPartition
from livelearn.registry import Registry, Version
from livelearn.spec import DEAD_LETTERS
from livelearn.train.metrics import better
from livelearn.ui.report import Chart, page_head, render_figure

#: Most versions listed in the table (the newest).
MAX_ROWS = 50
#: Most versions in the chart (the newest): six weeks of hourly versions.
MAX_CHART = 1000
#: Seconds between two polls of the page.
POLL_S = 3.0
#: Most dead letters read by one poll.
DEAD_LETTERS_PER_POLL = 20_000
#: What the page calls the server's counters (``ServerState.counters``).
COUNTER_LABELS = {"predictions": "predictions logged",
                  "events_scored": "events scored (a label in the events: not logged)",
                  "feedback_events": "feedback events accepted",
                  "feedback_rejected": "feedback events rejected (dead-lettered)",
                  "model_swaps": "model versions swapped in"}


@dataclass(frozen=True)
class ServerState:
    """What the server knows of itself now: the version it serves (None: none yet), when
    it swapped it in (wall clock, s), its event clock (ms), its counters by name, its
    responses by (path, HTTP status), and the canary it holds with its share of users."""

    version: int | None
    swapped_at: float | None
    clock_ts: int
    counters: Mapping[str, int]
    responses: Mapping[tuple[str, int], int] = field(default_factory=dict)
    canary: int | None = None
    canary_share: float = 0.0


class DeadLetterCounts:
    """A log's dead letters by reason, counted as they come: each ``update`` reads only the
    records appended since the one before. Dead letters the log's retention deleted before
    a poll read them are ``skipped`` (counted, not read): the count goes on from where the
    partition starts now. Safe to call from several threads."""

    def __init__(self, log: Log):
        self.log = log
        self.counts: Counter[str] = Counter()
        self.read = 0  # dead letters counted so far
        self.skipped = 0  # dead letters deleted by the log's retention before they were read
        self.behind = False  # the last update stopped at its limit before the end
        self._next: dict[TopicPartition, int] = {}
        self._lock = threading.Lock()

    def update(self, limit: int | None = None) -> dict[str, int]:
        """The counts by reason, after reading at most ``limit`` more records (None: all)."""
        with self._lock:
            try:
                partitions = self.log.topic_partitions([DEAD_LETTERS])
            except NotFound:  # no dead-letter topic (yet): none
                partitions = []
            left = limit
            for tp in partitions:
                offset = self._next.get(tp) or self.log.start_offset(*tp)
                while left is None or left > 0:
                    try:
                        records = self.log.read(*tp, offset, 10_000 if left is None else
                                                min(left, 10_000))
                    except Lost:  # deleted before this poll: go on from where it starts now
                        start = self.log.start_offset(*tp)
                        if start <= offset:
                            raise
                        self.skipped += start - offset
                        offset = start
                        continue
                    if not records:
                        break
                    self.counts.update(_reason(r) for r in records)
                    self.read += len(records)
                    offset = records[-1].offset + 1
                    left = None if left is None else left - len(records)
                self._next[tp] = offset
            self.behind = left == 0 and any(
                self._next[tp] < self.log.end_offset(*tp) for tp in partitions)
            return dict(sorted(self.counts.items()))


def _reason(record: Record) -> str:
    """A dead letter's reason ("unreadable" if the record is no dead letter of ours)."""
    try:
        letter = record.decoded if record.decoded is not None else orjson.loads(record.value)
        return str(letter["reason"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return "unreadable"


def mount_dashboard(app: FastAPI, title: str, registry: Registry, log: Log,
                    state: Callable[[], ServerState]) -> None:
    """Add GET /, /dashboard and /dashboard/data to ``app``; ``state`` is asked at each poll."""
    dead = DeadLetterCounts(log)

    def data() -> dict[str, Any]:
        dead.update(DEAD_LETTERS_PER_POLL)
        return dashboard_data(registry, state(), dead)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/dashboard")

    @app.get("/dashboard", include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(render_page(title, data()))

    @app.get("/dashboard/data")
    def data_endpoint() -> dict[str, Any]:
        """The dashboard's facts (``data``) and its sections as HTML (``html``)."""
        facts = data()
        return {"data": facts, "html": render_sections(facts)}


def dashboard_data(registry: Registry, server: ServerState, dead: DeadLetterCounts
                   ) -> dict[str, Any]:
    """The facts the page shows, as JSON-ready values (versions newest first)."""
    charted = registry.newest(MAX_CHART)
    versions, newest, total = charted[::-1], charted[:MAX_ROWS], registry.count()
    verdicts = registry.verdicts(since=newest[-1].id) if newest else {}
    serving = next((v for v in newest if v.id == server.version), None)
    if serving is None and server.version is not None:
        serving = registry.get(server.version)
    return {
        "serving": {"version": server.version, "swapped_at": server.swapped_at,
                    "since_ts": None if serving is None else serving.serving_since_ts,
                    "canary": server.canary, "canary_share": server.canary_share},
        "clock_ts": server.clock_ts or None,
        "counters": dict(server.counters),
        "responses": [{"path": p, "status": s, "count": n}
                      for (p, s), n in sorted(server.responses.items())],
        "dead_letters": {"counts": dict(sorted(dead.counts.items())), "read": dead.read,
                         "behind": dead.behind, "skipped": dead.skipped},
        "versions": [_row(v, verdicts.get(v.id)) for v in newest],
        "versions_total": total,
        "versions_hidden": total - len(newest),
        "metric_by_version": {
            "metric": versions[-1].meta.get("metric") if versions else None,
            "version": [v.id for v in versions],
            "window": [_window_metric(v) for v in versions],
            "prequential": [v.meta.get("prequential") for v in versions]},
    }


def _row(v: Version, verdict: dict[str, Any] | None) -> dict[str, Any]:
    return {"version": v.id, "parent": v.parent, "status": v.status, "pruned": v.pruned,
            "samples": v.meta.get("samples"), "metric": v.meta.get("metric"),
            "window_metric": _window_metric(v), "prequential": v.meta.get("prequential"),
            "created": v.created, "serving_since_ts": v.serving_since_ts, "verdict": verdict}


def _window_metric(v: Version) -> float | None:
    """The version's prequential metric on its most recent samples, at publication."""
    window = v.meta.get("window")
    return window.get("metric") if isinstance(window, dict) else None


# ---------------------------------------------------------------- HTML


def render_page(title: str, data: Mapping[str, Any]) -> str:
    """The whole page: its sections as ``render_sections`` draws them, and the script that
    refreshes them."""
    sections = "\n".join(f'<div id="{key}">{part}</div>'
                         for key, part in render_sections(data).items())
    return (f"{page_head(title, _STYLE)}\n<h1>{html.escape(title)}</h1>\n"
            f'<p id="status" class="note">updated {_wall(time.time())}; refreshed every '
            f"{POLL_S:g} s</p>\n{sections}\n"
            f'<footer>livelearn dashboard: <a href="/dashboard/data">data</a> · '
            f'<a href="/metrics">metrics</a> · <a href="/docs">API</a></footer>\n'
            f"</main>\n{_SCRIPT.replace('POLL_MS', str(int(POLL_S * 1000)))}</body>\n</html>\n")


def render_sections(data: Mapping[str, Any]) -> dict[str, str]:
    """Each section of the page by its element id, as escaped HTML."""
    return {"serving": _serving(data), "counters": _counters(data),
            "dead-letters": _dead_letters(data), "chart": _chart(data),
            "versions": _versions(data)}


def _serving(data: Mapping[str, Any]) -> str:
    serving = data["serving"]
    if serving["version"] is None:
        text = ("<p>No version serves yet: none is approved. /predict answers 503 until "
                "the gate approves one.</p>")
    else:
        since = serving["since_ts"]
        text = (f'<p class="big">v{serving["version"]}</p><p>serving since event time '
                f"{_event(since) if since is not None else '(no request yet)'}; swapped in "
                f"by this server at {_wall(serving['swapped_at'])}</p>")
    if serving["canary"] is not None:
        text += (f"<p>canary v{serving['canary']} scores {100 * serving['canary_share']:g}% "
                 f"of the users</p>")
    clock = data["clock_ts"]
    return (f"<section><h2>Serving</h2>{text}<p class=\"note\">event clock (the latest "
            f"event time in a request): {_event(clock) if clock else 'no request yet'}</p>"
            f"</section>")


def _counters(data: Mapping[str, Any]) -> str:
    rows = [(COUNTER_LABELS.get(name, name), _count(n)) for name, n in data["counters"].items()]
    table = _table(("counter", "count"), rows, "num")
    responses = data["responses"]
    answered = _table(("endpoint", "HTTP status", "responses"),
                      [(r["path"], str(r["status"]), _count(r["count"])) for r in responses],
                      "num") if responses else "<p>No request to /predict or /feedback yet.</p>"
    return (f'<section><h2>This server</h2><div class="cols"><div>{table}</div>'
            f"<div>{answered}</div></div></section>")


def _dead_letters(data: Mapping[str, Any]) -> str:
    dead = data["dead_letters"]
    counts = dead["counts"]
    body = (_table(("reason", "dead letters"), [(k, _count(n)) for k, n in counts.items()],
                   "num") if counts else "<p>None.</p>")
    note = (f'<p class="note">still counting: {_count(dead["read"])} read so far</p>'
            if dead["behind"] else "")
    if dead.get("skipped"):
        note += (f'<p class="note">{_count(dead["skipped"])} deleted by the log\'s retention '
                 f'before they were counted</p>')
    return (f"<section><h2>Dead letters in the log, by reason</h2>{body}{note}"
            f'<p class="note">From ingest, /feedback, the joiner and the trainer.</p></section>')


def _chart(data: Mapping[str, Any]) -> str:
    points = data["metric_by_version"]
    name = str(points["metric"] or "metric")
    way = f" ({better(name)})" if better(name) else ""
    nan = float("nan")
    series = {f"{name} on its recent samples": [nan if y is None else y
                                                for y in points["window"]],
              f"{name} prequential, all samples": [nan if y is None else y
                                                   for y in points["prequential"]]}
    serving = data["serving"]["version"]
    chart = Chart(f"{name.upper()} of each version at publication{way}", "version", name,
                  {label: (points["version"], ys) for label, ys in series.items()},
                  markers=[] if serving is None else [(serving, f"serving v{serving}")])
    return render_figure(chart)


def _versions(data: Mapping[str, Any]) -> str:
    rows = []
    for v in data["versions"]:
        status = v["status"] + (" (file pruned)" if v["pruned"] else "")
        verdict = v["verdict"]
        rows.append((f"v{v['version']}", status, _count(v["samples"]),
                     _number(v["window_metric"]), _number(v["prequential"]),
                     _wall(v["created"]),
                     "" if v["serving_since_ts"] is None else _event(v["serving_since_ts"]),
                     "" if verdict is None else f"{verdict['status']}: {verdict['reason']}"))
    total, hidden = data["versions_total"], data["versions_hidden"]
    metric = next((v["metric"] for v in data["versions"] if v["metric"]), "metric")
    table = _table(("version", "status", "samples learned", f"{metric}, recent samples",
                    f"{metric}, prequential", "created", "serving since (event time)",
                    "last verdict and its reason"), rows, "versions") if rows else (
        "<p>No version published yet: the trainer publishes one once it has learned "
        "enough samples.</p>")
    more = (f'<p class="note">{_count(hidden)} older versions not shown (the newest '
            f"{MAX_ROWS} of {_count(total)} are); <code>livelearn models ls</code> lists "
            f"them all.</p>" if hidden else "")
    return f"<section><h2>Versions ({_count(total)})</h2>{table}{more}</section>"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], cls: str) -> str:
    """An HTML table; every cell escaped."""
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _count(n: object) -> str:
    return f"{n:,}" if isinstance(n, int) else "" if n is None else str(n)


def _number(x: object) -> str:
    return f"{x:.4f}" if isinstance(x, float | int) else ""


def _wall(seconds: float | None) -> str:
    return "" if seconds is None else time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                                    time.gmtime(seconds))


def _event(ms: int) -> str:
    return _wall(ms / 1000)


_STYLE = """
p { margin: 4px 0; }
p.big { font-size: 26px; font-weight: 600; }
p.note, #status { color: #57606a; font-size: 12px; }
#status.stale { color: #cf222e; }
.cols { display: flex; flex-wrap: wrap; gap: 8px 40px; }
table.num, table.versions { border-collapse: collapse; font-variant-numeric: tabular-nums; }
table.num th, table.num td, table.versions th, table.versions td { padding: 4px 10px 4px 0;
  border-top: 1px solid #eaeef2; text-align: left; vertical-align: top; }
table.versions { width: 100%; font-size: 13px; }
table.versions td:last-child { overflow-wrap: anywhere; }
thead th { color: #57606a; font-weight: 600; border-top: none; }
"""

# Fetches the page's own data endpoint and swaps its sections in; one poll at a time.
_SCRIPT = """<script>
(function () {
  var status = document.getElementById("status");
  function refresh() {
    fetch('/dashboard/data', {cache: "no-store"}).then(function (response) {
      if (!response.ok) { throw new Error("HTTP " + response.status); }
      return response.json();
    }).then(function (answer) {
      for (var id in answer.html) {
        var element = document.getElementById(id);
        if (element) { element.innerHTML = answer.html[id]; }
      }
      status.textContent = "updated " + new Date().toLocaleTimeString();
      status.className = "";
    }).catch(function (error) {
      status.textContent = "cannot reach the server (" + error.message + "): trying again";
      status.className = "stale";
    }).then(function () { setTimeout(refresh, POLL_MS); });
  }
  setTimeout(refresh, POLL_MS);
})();
</script>
"""
