"""The HTML report: well-formed, self-contained, escaped, with the charts' SVG parts."""

from __future__ import annotations

import math
import os
import re
import stat
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from livelearn.errors import BadInput
from livelearn.prequential import PrequentialRecord, metric_value, write_html
from livelearn.train.trainer import Trained
from livelearn.ui.report import MAX_POINTS, Chart, _downsample, render_report, write_report

VOID = {"meta", "br", "hr", "img", "input", "link"}
SVG_EMPTY_OK = {"line", "polyline", "path", "circle", "rect"}  # may be self-closed


class Tree(HTMLParser):
    """Counts start tags, collects text and attributes, and checks that tags nest."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: Counter[str] = Counter()
        self.attrs: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        self.attrs.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        self.attrs.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> Tree:
    tree = Tree()
    tree.feed(page)
    tree.close()
    assert tree.stack == [], f"unclosed tags: {tree.stack}"
    return tree


def charts() -> list[Chart]:
    rng = np.random.default_rng(0)
    xs = np.arange(5000, dtype=float)
    auc = 0.7 + 0.02 * rng.standard_normal(5000)
    auc[1000:1200] = np.nan  # a gap
    return [
        Chart(
            title="AUC <live>",
            x_label="samples",
            y_label="AUC",
            series={
                "fresh & hourly": (xs, auc),
                "daily": (xs, auc - 0.03),
                "nothing yet": ([], []),
                "all nan": ([1.0, 2.0], [math.nan, math.nan]),
            },
            markers=[(float(x), f"v{i}") for i, x in enumerate(range(0, 5000, 20))],
            y_range=(0.5, 1.0),
        ),
        Chart(
            "Log loss", "minutes", "log loss", {"lone points": ([1, 2, 3], [0.3, math.nan, 0.4])}
        ),
        Chart("Empty", "x", "y", {}),
    ]


SUMMARY = {
    "auc": 0.712345678,
    "samples": 120_000,
    "model": "ftrl <alpha=0.1>",
    "lag": {"p50_ms": 12.3456, "p99_ms": 250.0},
    "versions": [1, 2, 3],
    "note": None,
}


def test_report_is_well_formed_with_svg_charts() -> None:
    page = render_report("Demo <run>", SUMMARY, charts(), notes=["gate window: 5000 samples"])
    tree = parse(page)
    assert page.startswith("<!DOCTYPE html>")
    assert tree.tags["svg"] >= 3 + 5  # three charts and a legend swatch per series
    assert sum(1 for tag, a in tree.attrs if tag == "svg" and a.get("class") == "chart") == 3
    assert tree.tags["polyline"] >= 3  # two runs of "fresh", "daily" has a gap too
    assert tree.tags["circle"] == 2  # the lone points of "Log loss"
    assert tree.tags["text"] > 10  # tick labels and axis titles
    assert tree.tags["line"] >= 250  # a thin line per marker
    assert tree.tags["title"] >= 250  # a tooltip per marker
    assert tree.tags["table"] == 1
    text = " ".join(tree.text)
    for expected in ["0.7123", "120000", "p50_ms: 12.35", "p99_ms: 250", "1, 2, 3"]:
        assert expected in text
    for expected in ["samples", "AUC", "minutes", "no data", "(no data)", "gate window"]:
        assert expected in text


def test_report_is_self_contained() -> None:
    page = render_report("Demo", SUMMARY, charts())
    lowered = page.lower()
    for forbidden in ["http://", "https://", "<script", "<link", "@import", "url(http", "src="]:
        assert forbidden not in lowered


def test_text_is_escaped() -> None:
    page = render_report("A <b>bold</b> title", SUMMARY, charts(), notes=["<i>x</i> & y"])
    assert "<b>" not in page and "<i>" not in page
    assert "A &lt;b&gt;bold&lt;/b&gt; title" in page
    assert "ftrl &lt;alpha=0.1&gt;" in page
    assert "fresh &amp; hourly" in page
    assert "AUC &lt;live&gt;" in page
    assert "&lt;i&gt;x&lt;/i&gt; &amp; y" in page


def test_series_are_downsampled_and_distinctly_coloured() -> None:
    xs = np.arange(50_000, dtype=float)
    chart = Chart("big", "x", "y", {f"s{i}": (xs, np.sin(xs / 1000) + i) for i in range(3)})
    tree = parse(render_report("t", {}, [chart]))
    colours = [a["stroke"] for tag, a in tree.attrs if tag == "g" and a.get("class") == "series"]
    assert len(colours) == 3 and len(set(colours)) == 3
    polylines = [a["points"] or "" for tag, a in tree.attrs if tag == "polyline"]
    assert len(polylines) == 3
    assert all(len(p.split()) <= MAX_POINTS for p in polylines)


def test_downsample_keeps_ends_spikes_and_gaps() -> None:
    x = np.arange(100_000, dtype=float)
    y = np.zeros_like(x)
    y[54_321] = 9.0
    y[70_000:70_010] = np.nan
    dx, dy = _downsample(x, y, MAX_POINTS)
    assert len(dx) <= MAX_POINTS
    assert dx[0] == 0 and dx[-1] == 99_999
    assert 9.0 in dy and np.isnan(dy).any()
    assert np.all(np.diff(dx) > 0)
    short_x, short_y = _downsample(x[:10], y[:10], MAX_POINTS)
    assert len(short_x) == 10


def test_axes_have_about_five_ticks_with_round_labels() -> None:
    chart = Chart("c", "x", "y", {"s": ([0.0, 97.0], [0.013, 0.871])})
    tree = parse(render_report("t", {}, [chart]))
    labels = set(tree.text)
    assert {"0.0", "0.2", "0.4", "0.6", "0.8", "1.0"} <= labels  # y widened to round ticks
    assert {"0", "20", "40", "60", "80"} <= labels  # x spans the data exactly: 100 is not in it
    chart = Chart("c", "x", "y", {"s": ([-3.0, 3.0], [-0.0004, 0.0003])})
    labels = set(parse(render_report("t", {}, [chart])).text)
    assert {"-4e-04", "-2e-04", "0", "2e-04", "4e-04"} <= labels
    assert {"-3", "-2", "-1", "0", "1", "2", "3"} <= labels


def test_markers_are_thin_and_labelled_sparsely() -> None:
    chart = charts()[0]
    assert len(chart.markers) == 250
    tree = parse(render_report("t", {}, [chart]))
    groups = [a for tag, a in tree.attrs if tag == "g" and a.get("class") == "markers"]
    assert len(groups) == 1 and float(groups[0]["stroke-width"] or 9) <= 1
    texts = Counter(t for t in tree.text if re.fullmatch(r"v\d+", t))
    assert set(texts) == {f"v{i}" for i in range(250)}  # every marker has a tooltip
    labelled = [t for t, n in texts.items() if n == 2]  # and a few a label on the chart too
    assert 3 <= len(labelled) <= 15
    assert "v0" in labelled


def test_constant_and_single_point_series_render() -> None:
    chart = Chart("c", "x", "y", {"flat": ([5.0, 5.0], [0.3, 0.3]), "one": ([2.0], [7.0])})
    tree = parse(render_report("t", {}, [chart]))
    assert tree.tags["polyline"] == 1 and tree.tags["circle"] == 1
    for _tag, attrs in tree.attrs:
        for key in ("x", "y", "x1", "y1", "cx", "cy"):
            value = attrs.get(key)
            assert value is None or math.isfinite(float(value)), (key, value)


def test_bad_series_and_y_range_name_the_chart() -> None:
    bad = Chart("Lag", "x", "y", {"p99": ([1, 2, 3], [1, 2])})
    with pytest.raises(BadInput, match="'Lag'.*'p99'"):
        render_report("t", {}, [bad])
    with pytest.raises(BadInput, match="y_range"):
        render_report("t", {}, [Chart("Lag", "x", "y", {}, y_range=(1.0, 1.0))])


def test_render_is_deterministic() -> None:
    assert render_report("t", SUMMARY, charts()) == render_report("t", SUMMARY, charts())


def test_write_report_writes_the_file(tmp_path: Path) -> None:
    target = tmp_path / "out" / "report.html"
    written = write_report(str(target), "Demo", SUMMARY, charts(), notes=["n"])
    assert written == target and target.is_file()
    assert target.read_text(encoding="utf-8") == render_report("Demo", SUMMARY, charts(), ["n"])
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]  # no temporary left


def test_the_report_gets_the_permissions_of_a_new_file(tmp_path: Path) -> None:
    """Written atomically, yet 0666 less the umask, as any new file (not mkstemp's 0600)."""
    old = os.umask(0o022)
    try:
        write_report(tmp_path / "a.html", "A", SUMMARY, charts())
        os.umask(0o027)
        write_report(tmp_path / "b.html", "B", SUMMARY, charts())
    finally:
        os.umask(old)
    modes = [stat.S_IMODE((tmp_path / name).stat().st_mode) for name in ("a.html", "b.html")]
    assert modes == [0o644, 0o640]


def test_the_replays_buckets_are_each_ones_metric_in_time_even_one_per_sample() -> None:
    """Each bucket's metric is the batch metric of its samples (given out of time order),
    in time order, empty buckets left out, also with one bucket per sample (a 1 ms
    --bucket-ms: 100,000 buckets, which took 31 s when each bucket passed over every
    sample; a slice of the sorted samples each now)."""
    rng = np.random.default_rng(1)
    n = 100_000
    ts = 1_767_571_200_000 + rng.permutation(n) * 3 + rng.integers(0, 2, n)  # unordered, 1 ms gaps
    scores, labels = rng.random(n), (rng.random(n) < 0.3).astype(float)
    for metric, width in (("auc", 7_200), ("mae", 1_000), ("auc", 1)):
        record = PrequentialRecord(metric)
        record.add(_trained(ts, scores, labels))
        got = record.buckets(width)
        which = (ts - ts.min()) // width
        keys, counts = np.unique(which, return_counts=True)
        assert [b["start_ts"] for b in got] == (ts.min() + keys * width).tolist()
        assert [b["samples"] for b in got] == counts.tolist()
        for b, k in list(zip(got, keys, strict=True))[:: max(1, len(keys) // 300)]:
            expected = metric_value(metric, scores[which == k], labels[which == k])
            assert b["value"] == (None if math.isnan(expected) else expected)
        assert sum(b["samples"] for b in got) == n and all(
            b["end_ts"] - b["start_ts"] == width for b in got)


def _trained(ts: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> Trained:
    """A trainer step of these samples, as PrequentialRecord reads one."""
    return Trained(samples=[{"ts": int(t)} for t in ts], batch=None,  # type: ignore[arg-type]
                   labels=labels, scores=scores)


def test_the_replays_line_breaks_across_a_gap_of_days(tmp_path: Path) -> None:
    """Buckets left out (no sample in them: days without events) are a gap of the plotted
    line, not a straight segment across days of no data."""
    day, t0 = 86_400_000, 1_767_571_200_000
    record = PrequentialRecord("mae")
    ts = np.array([t0, t0 + 1, t0 + day, t0 + 5 * day, t0 + 6 * day], dtype=np.int64)
    record.add(_trained(ts, np.zeros(5), np.arange(5.0)))
    report = {**record.summary(day), "pipeline": "p"}
    assert [b["start_ts"] for b in report["buckets"]] == [t0, t0 + day, t0 + 5 * day,
                                                          t0 + 6 * day]
    page = write_html(tmp_path / "r.html", "replay", report).read_text()
    assert page.count("<polyline") == 2  # days 0 to 1, then 5 to 6: no line across 2 to 4
