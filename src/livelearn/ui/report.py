"""A self-contained HTML report: a summary table and line charts drawn as inline SVG.

The page is one file with nothing external: no scripts, fonts, stylesheets or
images are fetched, so a report opens the same offline, mailed or archived.
Every text that comes in (titles, keys, values, series names, labels) is
escaped. The output is deterministic: the same arguments give the same bytes.

Charts are drawn by the small code below: axes with about five "nice" ticks, a
polyline per run of finite points (a nan or inf y, or x, is a gap), at most
``MAX_POINTS`` points per series (min and max of each bucket are kept, so
spikes survive), and markers as thin vertical lines whose labels are shown
where there is room and, for every marker, as a hover tooltip.
"""

from __future__ import annotations

import html
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from livelearn.errors import BadInput
from livelearn.files import replace_file

#: Most points drawn per series; longer series are downsampled.
MAX_POINTS = 2000
#: Colour-blind-friendly series colours; series past the tenth are also dashed.
PALETTE = (
    "#1f77b4", "#e8710a", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
WIDTH, HEIGHT = 760, 300
LEFT, RIGHT, TOP, BOTTOM = 70, 18, 24, 46
MARKER_LABEL_GAP = 70  # pixels between two shown marker labels
# Drawn as SVG attributes, not CSS, so a chart copied out of the page looks the same.
INK, MUTED, GRID, AXIS, MARK = "#1f2328", "#57606a", "#e6e9ed", "#8c959f", "#8250df"
FONT = "system-ui, -apple-system, Segoe UI, Roboto, Helvetica, Arial, sans-serif"


@dataclass
class Chart:
    """One line chart. ``series`` maps a name to (xs, ys); a nan y is a gap.

    ``markers`` are vertical marks at an x with a short label (for example each
    model version deployed); those outside the data's x range are not drawn.
    ``y_range`` fixes the y axis (lines outside it are clipped); by default the
    axis spans the data, widened to round ticks.
    """

    title: str
    x_label: str
    y_label: str
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]]
    markers: Sequence[tuple[float, str]] = ()
    y_range: tuple[float, float] | None = None


def render_report(
    title: str,
    summary: Mapping[str, object],
    charts: Sequence[Chart],
    notes: Sequence[str] = (),
) -> str:
    """The report as one HTML document.

    ``summary`` becomes a two-column table: floats to 4 significant digits,
    nested mappings as "key: value" lists, sequences comma-separated.

    >>> page = render_report("Demo", {"auc": 0.712345, "samples": 1200}, [])
    >>> "<td>0.7123</td>" in page, "<td>1200</td>" in page, "http" in page
    (True, True, False)
    """
    esc = html.escape
    parts = [page_head(title), f"<h1>{esc(title)}</h1>"]
    if summary:
        parts.append(_summary_table(summary))
    parts.extend(render_figure(chart, i) for i, chart in enumerate(charts))
    if notes:
        items = "".join(f"<li>{esc(note)}</li>" for note in notes)
        parts.append(f'<section><h2>Notes</h2><ul class="notes">{items}</ul></section>')
    parts.append("<footer>livelearn report</footer>\n</main>\n</body>\n</html>\n")
    return "\n".join(parts)


def page_head(title: str, style: str = "") -> str:
    """A page's start, up to its open <main>: the report's look, with ``style`` (CSS) added.
    The dashboard's page starts so too."""
    return _HEAD.replace("{title}", html.escape(title)).replace("</style>", f"{style}</style>")


def write_json(path: str | Path, data: dict[str, Any], what: str = "report") -> Path:
    """Write ``data`` as indented JSON, as ``files.replace_file`` does; ConfigError naming
    ``what`` and the path if it cannot be."""
    return replace_file(path, orjson.dumps(data, option=orjson.OPT_INDENT_2), what)


def write_report(
    path: str | Path,
    title: str,
    summary: Mapping[str, object],
    charts: Sequence[Chart],
    notes: Sequence[str] = (),
) -> Path:
    """Render the report and write it to ``path`` (UTF-8) as ``files.replace_file`` does: a
    reader never sees half a report; a path that cannot be written raises ConfigError
    naming it and the reason.
    """
    return replace_file(path, render_report(title, summary, charts, notes).encode(), "report")


# ---------------------------------------------------------------- summary


def _summary_table(summary: Mapping[str, object]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(str(key))}</th><td>{_value(value)}</td></tr>"
        for key, value in summary.items()
    )
    return f'<section><table class="summary">{rows}</table></section>'


def _value(value: object) -> str:
    """A summary value as escaped HTML."""
    if isinstance(value, Mapping):
        items = "".join(f"<li>{html.escape(str(k))}: {_value(v)}</li>" for k, v in value.items())
        return f'<ul class="kv">{items}</ul>'
    if value is None:
        return "&mdash;"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return f"{float(value):.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(_value(v) for v in value)
    return html.escape(str(value))


# ---------------------------------------------------------------- charts


def render_figure(chart: Chart, index: int = 0) -> str:
    """A chart as a <figure>: title, legend, then the SVG (escaped, self-contained). Each
    chart of one page needs its own ``index`` (its SVG's clip path is named by it)."""
    esc = html.escape
    lines = [_points(chart, name, xs, ys) for name, (xs, ys) in chart.series.items()]
    legend = "".join(
        f"<li>{_swatch(i)}{esc(name)}{'' if np.isfinite(y).any() else ' <em>(no data)</em>'}</li>"
        for i, (name, _, y) in enumerate(lines)
    )
    return (
        f"<figure><h2>{esc(chart.title)}</h2>"
        f'<ul class="legend">{legend}</ul>{_svg(chart, lines, index)}</figure>'
    )


def _points(
    chart: Chart, name: str, xs: Sequence[float], ys: Sequence[float]
) -> tuple[str, np.ndarray, np.ndarray]:
    x = np.asarray(xs, dtype=np.float64).ravel()
    y = np.asarray(ys, dtype=np.float64).ravel()
    if len(x) != len(y):
        raise BadInput(
            f"chart {chart.title!r}, series {name!r}: {len(x)} xs but {len(y)} ys; "
            "expected equal lengths"
        )
    y = np.where(np.isfinite(x), y, np.nan)  # a point with a bad x is a gap too
    return (name, *_downsample(x, y, MAX_POINTS))


def _downsample(x: np.ndarray, y: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``limit`` points: the first, the last and, per bucket of consecutive
    points between them, the min, the max and (if any) one non-finite point, so that
    the x range, spikes and gaps survive."""
    if len(x) <= limit:
        return x, y
    keep: list[int] = [0]
    edges = np.linspace(1, len(x) - 1, (limit - 2) // 3 + 1).astype(np.int64)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        segment = y[lo:hi]
        finite = np.flatnonzero(np.isfinite(segment))
        picked = set()
        if len(finite):
            picked.add(int(finite[np.argmin(segment[finite])]))
            picked.add(int(finite[np.argmax(segment[finite])]))
        if len(finite) < hi - lo:
            picked.add(int(np.flatnonzero(~np.isfinite(segment))[0]))
        keep.extend(lo + i for i in sorted(picked))
    keep.append(len(x) - 1)
    return x[keep], y[keep]


@dataclass(frozen=True)
class _Scale:
    """Maps data [lo, hi] linearly onto pixels [p0, p1] (p0 > p1 for a y axis)."""

    lo: float
    hi: float
    p0: float
    p1: float
    ticks: list[float]

    def __call__(self, v: float) -> float:
        return self.p0 + (v - self.lo) / (self.hi - self.lo) * (self.p1 - self.p0)

    def many(self, v: np.ndarray) -> np.ndarray:
        return self.p0 + (v - self.lo) / (self.hi - self.lo) * (self.p1 - self.p0)


def _svg(chart: Chart, lines: list[tuple[str, np.ndarray, np.ndarray]], index: int) -> str:
    esc = html.escape
    all_x = np.concatenate([x[np.isfinite(y)] for _, x, y in lines] or [np.empty(0)])
    all_y = np.concatenate([y[np.isfinite(y)] for _, _, y in lines] or [np.empty(0)])
    has_data = len(all_x) > 0
    if not has_data and chart.markers:
        all_x = np.asarray([m[0] for m in chart.markers], dtype=np.float64)
        all_x = all_x[np.isfinite(all_x)]
    if chart.y_range is not None:
        y_lo, y_hi = map(float, chart.y_range)
        if not (math.isfinite(y_lo) and math.isfinite(y_hi) and y_lo < y_hi):
            raise BadInput(f"chart {chart.title!r}: y_range {chart.y_range!r} must be (low, high)")
        y_ticks = _ticks(y_lo, y_hi)
    else:
        y_ticks = _nice_ticks(*_span(all_y))
        y_lo, y_hi = y_ticks[0], y_ticks[-1]
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, HEIGHT - BOTTOM, TOP
    x_lo, x_hi = _span(all_x)
    sx = _Scale(x_lo, x_hi, x0, x1, _ticks(x_lo, x_hi))
    sy = _Scale(y_lo, y_hi, y0, y1, y_ticks)
    clip = f"ll-clip-{index}"
    out = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{esc(chart.title)}" font-family="{FONT}" font-size="11">',
        f'<clipPath id="{clip}"><rect x="{x0 - 2}" y="{y1 - 2}" width="{x1 - x0 + 4}" '
        f'height="{y0 - y1 + 4}"/></clipPath>',
    ]
    out += _axes(chart, sx, sy)
    out += _markers(chart.markers, sx)
    out.append(f'<g clip-path="url(#{clip})" fill="none" stroke-width="1.6" '
               'stroke-linejoin="round" stroke-linecap="round">')  # fmt: skip
    for i, (_, x, y) in enumerate(lines):
        out.append(_series_svg(sx.many(x), sy.many(y), i))
    out.append("</g>")
    if not has_data:
        out.append(f'<text x="{(x0 + x1) / 2}" y="{(y0 + y1) / 2}" fill="{AXIS}" '
                   'font-size="14" text-anchor="middle">no data</text>')  # fmt: skip
    out.append("</svg>")
    return "\n".join(out)


def _axes(chart: Chart, sx: _Scale, sy: _Scale) -> list[str]:
    """Grid lines, tick labels, the axis lines and the axis titles."""
    esc = html.escape
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, HEIGHT - BOTTOM, TOP
    out = [f'<g class="axes" fill="{MUTED}" stroke-width="1">']
    for tick, label in zip(sy.ticks, _tick_labels(sy.ticks), strict=True):
        py = sy(tick)
        out.append(f'<line x1="{x0}" x2="{x1}" y1="{py:.1f}" y2="{py:.1f}" stroke="{GRID}"/>')
        out.append(f'<text x="{x0 - 6}" y="{py + 4:.1f}" text-anchor="end">{label}</text>')
    for tick, label in zip(sx.ticks, _tick_labels(sx.ticks), strict=True):
        px = sx(tick)
        out.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{y0}" y2="{y0 + 5}" stroke="{AXIS}"/>')
        out.append(f'<text x="{px:.1f}" y="{y0 + 18}" text-anchor="middle">{label}</text>')
    out.append(f'<path d="M{x0},{y1} V{y0} H{x1}" fill="none" stroke="{AXIS}"/>')
    out.append(
        f'<text x="{(x0 + x1) / 2}" y="{HEIGHT - 6}" fill="{INK}" font-size="12" '
        f'text-anchor="middle">{esc(chart.x_label)}</text>'
    )
    cy = (y0 + y1) / 2
    out.append(
        f'<text x="14" y="{cy}" fill="{INK}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 14 {cy})">{esc(chart.y_label)}</text>'
    )
    out.append("</g>")
    return out


def _markers(markers: Sequence[tuple[float, str]], sx: _Scale) -> list[str]:
    """Thin vertical lines with a tooltip each; labels only where they do not crowd."""
    esc = html.escape
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, HEIGHT - BOTTOM, TOP
    shown = sorted(
        (float(x), str(label))
        for x, label in markers
        if math.isfinite(float(x)) and sx.lo <= float(x) <= sx.hi
    )
    if not shown:
        return []
    opacity = max(0.15, min(0.45, 25 / max(len(shown), 1)))  # many marks: a lighter haze
    out = [
        f'<g class="markers" stroke="{MARK}" stroke-opacity="{opacity:.2f}" '
        f'stroke-width="0.75" fill="{MARK}" font-size="10">'
    ]
    last = -math.inf
    for x, label in shown:
        px = sx(x)
        out.append(
            f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{y1}" y2="{y0}">'
            f"<title>{esc(label)}</title></line>"
        )
        if label and px - last >= MARKER_LABEL_GAP:
            text = label if len(label) <= 14 else label[:13] + "\u2026"
            anchor = "start" if px < x0 + 30 else "end" if px > x1 - 30 else "middle"
            out.append(
                f'<text x="{px:.1f}" y="{y1 - 6}" stroke="none" '
                f'text-anchor="{anchor}">{esc(text)}</text>'
            )
            last = px
    out.append("</g>")
    return out


def _series_svg(px: np.ndarray, py: np.ndarray, i: int) -> str:
    """One polyline per run of finite points; a lone point is a dot."""
    colour, dash = _style(i)
    finite = np.flatnonzero(np.isfinite(py))
    runs = np.split(finite, np.flatnonzero(np.diff(finite) > 1) + 1) if len(finite) else []
    out = [f'<g class="series" stroke="{colour}"{dash}>']
    for run in runs:
        if len(run) == 1:
            j = run[0]
            out.append(f'<circle cx="{px[j]:.1f}" cy="{py[j]:.1f}" r="2" fill="{colour}"/>')
        else:
            points = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px[run], py[run], strict=True))
            out.append(f'<polyline points="{points}"/>')
    out.append("</g>")
    return "".join(out)


def _style(i: int) -> tuple[str, str]:
    dash = ' stroke-dasharray="6 3"' if i >= len(PALETTE) else ""
    return PALETTE[i % len(PALETTE)], dash


def _swatch(i: int) -> str:
    colour, dash = _style(i)
    return (
        f'<svg class="swatch" width="20" height="10" aria-hidden="true">'
        f'<line x1="1" x2="19" y1="5" y2="5" stroke="{colour}" stroke-width="3"{dash}/></svg>'
    )


# ---------------------------------------------------------------- scales and ticks


def _span(values: np.ndarray) -> tuple[float, float]:
    """(min, max) of finite values, widened when they are equal; (0, 1) for none."""
    if not len(values):
        return 0.0, 1.0
    lo, hi = float(values.min()), float(values.max())
    if lo == hi:
        pad = abs(lo) * 0.1 or 1.0
        return lo - pad, hi + pad
    return lo, hi


def _step(lo: float, hi: float, count: int = 5) -> float:
    """A round step (1, 2, 2.5 or 5 times a power of ten) giving closest to ``count`` ticks."""
    magnitude = 10.0 ** math.floor(math.log10((hi - lo) / (count - 1)))
    steps = [(m * magnitude, m == 2.5) for m in (0.5, 1, 2, 2.5, 5, 10)]
    # closest count wins; on a tie 1, 2, 5 beat 2.5 (shorter labels), then more ticks win
    best = min(steps, key=lambda s: (abs(len(_multiples(lo, hi, s[0])) - count) + s[1], s[0]))
    return best[0]


def _multiples(lo: float, hi: float, step: float) -> list[float]:
    """Multiples of ``step`` inside [lo, hi] (inclusive, with a little tolerance)."""
    first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
    return [k * step for k in range(first, last + 1)]


def _nice_ticks(lo: float, hi: float) -> list[float]:
    """Ticks of the range widened outwards to multiples of its tick step (first and last
    tick are the new bounds)."""
    step = _step(lo, hi)
    return _multiples(math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step, step)


def _ticks(lo: float, hi: float) -> list[float]:
    """About five round values inside [lo, hi]."""
    return _multiples(lo, hi, _step(lo, hi))


def _tick_labels(ticks: list[float]) -> list[str]:
    """Labels with the fewest decimals that still tell the ticks apart exactly, all with the
    same number; scientific notation for huge or tiny values."""
    if not ticks:
        return []
    step = ticks[1] - ticks[0] if len(ticks) > 1 else abs(ticks[0]) or 1.0
    biggest = max(abs(t) for t in ticks)
    code = "e" if biggest >= 1e7 or 0 < biggest < 1e-3 else "f"
    for decimals in range(13):
        labels = [f"{t:.{decimals}{code}}" for t in ticks]
        if all(abs(float(s) - t) <= step * 1e-6 for s, t in zip(labels, ticks, strict=True)):
            break
    zero = "0" if code == "e" else f"{0:.{decimals}f}"
    return [zero if float(s) == 0 else s for s in labels]


_HEAD = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body { margin: 0; background: #f5f6f8; color: #1f2328;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; }
main { max-width: 980px; margin: 0 auto; padding: 28px 20px 40px; }
h1 { font-size: 22px; margin: 0 0 18px; }
h2 { font-size: 15px; margin: 0 0 6px; }
section, figure { background: #fff; border: 1px solid #d8dee4; border-radius: 8px;
  padding: 14px 18px; margin: 0 0 16px; }
table.summary { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
table.summary th, table.summary td { padding: 6px 8px; border-top: 1px solid #eaeef2;
  text-align: left; vertical-align: top; }
table.summary tr:first-child th, table.summary tr:first-child td { border-top: none; }
table.summary th { width: 32%; font-weight: 600; color: #57606a; }
ul.kv, ul.legend { list-style: none; margin: 0; padding: 0; }
ul.legend { display: flex; flex-wrap: wrap; gap: 2px 18px; font-size: 13px; margin-bottom: 4px; }
ul.legend em { color: #8c959f; }
svg.swatch { vertical-align: middle; margin-right: 6px; }
svg.chart { display: block; width: 100%; height: auto; font-variant-numeric: tabular-nums; }
ul.notes { margin: 0; padding-left: 20px; }
footer { color: #8c959f; font-size: 12px; text-align: center; }
</style>
</head>
<body>
<main>"""
