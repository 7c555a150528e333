"""Traffic charts as inline SVG, drawn on the server so pages need no chart library.

Pure: the caller passes the series it read (the §5 `transfer_series` rows) and
gets markup back. The SVG stretches to its box (`preserveAspectRatio="none"`),
so it carries no text of its own; the page shows the legend and the peak.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from markupsafe import Markup, escape

WIDTH = 600
HEIGHT = 80
# Room above the peak so the top line is not clipped by the stroke.
PAD = 4


@dataclass(frozen=True)
class TrafficPoint:
    at: datetime
    upload: int
    download: int


@dataclass(frozen=True)
class TrafficChart:
    """The SVG and the numbers a page shows next to it."""

    svg: Markup
    peak: int
    upload: int
    download: int
    empty: bool


def _field(row: Mapping[str, Any] | Any, key: str) -> Any:
    return row[key] if isinstance(row, Mapping) else getattr(row, key)


def points_of(rows: Iterable[Mapping[str, Any] | Any]) -> list[TrafficPoint]:
    """`transfer_series` rows (dicts or TransferRow models) as points, oldest first."""
    points = [
        TrafficPoint(
            _field(row, "collected_at"),
            int(_field(row, "upload") or 0),
            int(_field(row, "download") or 0),
        )
        for row in rows
    ]
    return sorted(points, key=lambda p: p.at)


def _buckets(
    points: list[TrafficPoint], start: datetime, end: datetime, step: timedelta
) -> list[TrafficPoint]:
    """One point per bucket from start to end; a bucket with no sample moved nothing.

    Without this a quiet hour between two busy minutes would be drawn as a
    slope instead of a flat zero.
    """
    sums: dict[int, list[int]] = {}
    for p in points:
        index = int((p.at - start) / step)
        cell = sums.setdefault(index, [0, 0])
        cell[0] += p.upload
        cell[1] += p.download
    count = max(int((end - start) / step), 1)
    first = min(0, min(sums, default=0))
    last = max(count - 1, max(sums, default=0))
    return [TrafficPoint(start + step * i, *sums.get(i, (0, 0))) for i in range(first, last + 1)]


def _polyline(css_class: str, coords: list[tuple[float, float]]) -> str:
    text = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    return (
        f'<polyline class="{css_class}" points="{text}" fill="none" '
        'vector-effect="non-scaling-stroke"/>'
    )


def traffic_chart(
    rows: Iterable[Mapping[str, Any] | Any],
    *,
    start: datetime,
    end: datetime,
    step: timedelta | None = None,
    label: str = "Traffic",
    width: int = WIDTH,
    height: int = HEIGHT,
) -> TrafficChart:
    """Upload and download over [start, end] as two lines on one scale (the larger peak).

    `step`: the series' bucket size; buckets without a row count as zero.
    Points outside the window are clamped to its edges rather than dropped,
    so the totals match what the chart shows.
    """
    if end <= start:
        raise ValueError("end must be after start")
    points = points_of(rows)
    if step is not None and points:
        points = _buckets(points, start, end, step)
    upload = sum(p.upload for p in points)
    download = sum(p.download for p in points)
    peak = max((max(p.upload, p.download) for p in points), default=0)
    span = (end - start).total_seconds()
    plot = height - 2 * PAD

    def x_of(at: datetime) -> float:
        offset = (at - start).total_seconds() / span
        return min(max(offset, 0.0), 1.0) * width

    def y_of(value: int) -> float:
        return height - PAD - (value / peak * plot if peak else 0.0)

    title = escape(label)
    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'preserveAspectRatio="none" role="img" aria-label="{title}">',
        f"<title>{title}</title>",
        f'<line class="axis" x1="0" y1="{height - PAD}" x2="{width}" y2="{height - PAD}" '
        'stroke="#dde1e8" vector-effect="non-scaling-stroke"/>',
    ]
    if points:
        parts.append(_polyline("tx", [(x_of(p.at), y_of(p.upload)) for p in points]))
        parts.append(_polyline("rx", [(x_of(p.at), y_of(p.download)) for p in points]))
    parts.append("</svg>")
    # Every interpolated value is a number or escaped above.
    svg = Markup("".join(parts))  # noqa: S704
    return TrafficChart(svg=svg, peak=peak, upload=upload, download=download, empty=not points)
