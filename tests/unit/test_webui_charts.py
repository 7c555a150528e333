"""The dashboard's traffic chart: scaling, gaps, empty series and well-formed SVG."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timedelta

import pytest

from defguard.core.gateways.schemas import TransferRow
from defguard.core.webui.charts import HEIGHT, PAD, WIDTH, traffic_chart

SVG = "{http://www.w3.org/2000/svg}"
START = datetime(2025, 3, 4, 10, 0)
END = START + timedelta(hours=1)
MINUTE = timedelta(minutes=1)


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def points(root: ET.Element, css_class: str) -> list[tuple[float, float]]:
    (line,) = [p for p in root.iter(f"{SVG}polyline") if p.get("class") == css_class]
    return [tuple(map(float, pair.split(","))) for pair in line.get("points", "").split()]


def row(minute: int, upload: int, download: int) -> dict[str, object]:
    return {"collected_at": START + minute * MINUTE, "upload": upload, "download": download}


def test_empty_series_is_a_valid_svg_without_lines():
    chart = traffic_chart([], start=START, end=END, step=MINUTE)
    root = parse(chart.svg)
    assert root.tag == f"{SVG}svg"
    assert chart.empty
    assert (chart.peak, chart.upload, chart.download) == (0, 0, 0)
    assert list(root.iter(f"{SVG}polyline")) == []
    assert root.find(f"{SVG}title") is not None


def test_both_lines_share_the_larger_peak():
    chart = traffic_chart([row(0, 50, 100), row(30, 100, 200), row(59, 0, 0)], start=START, end=END)
    root = parse(chart.svg)
    assert chart.peak == 200
    assert (chart.upload, chart.download) == (150, 300)
    bottom, top = HEIGHT - PAD, PAD
    down = points(root, "rx")
    up = points(root, "tx")
    assert down[0] == (0.0, pytest.approx((bottom + top) / 2))
    assert down[1] == (pytest.approx(WIDTH / 2), top)
    assert up[1][1] == pytest.approx((bottom + top) / 2)
    assert down[2] == (pytest.approx(WIDTH * 59 / 60), bottom)
    # Every coordinate stays inside the view box.
    for x, y in up + down:
        assert 0 <= x <= WIDTH and 0 <= y <= HEIGHT


def test_missing_buckets_are_drawn_as_zero_and_rows_are_sorted():
    rows = [row(10, 5, 5), row(2, 8, 8)]
    chart = traffic_chart(rows, start=START, end=END, step=MINUTE)
    down = points(parse(chart.svg), "rx")
    assert len(down) == 60
    assert [x for x, _ in down] == sorted(x for x, _ in down)
    zero = HEIGHT - PAD
    assert down[0][1] == zero and down[9][1] == zero
    assert down[2][1] == PAD  # the peak
    assert chart.download == 13


def test_all_zero_traffic_lies_on_the_baseline():
    chart = traffic_chart([row(1, 0, 0), row(2, 0, 0)], start=START, end=END, step=MINUTE)
    assert not chart.empty
    assert all(y == HEIGHT - PAD for _, y in points(parse(chart.svg), "tx"))


def test_points_outside_the_window_are_clamped():
    chart = traffic_chart([row(-5, 1, 1), row(90, 2, 2)], start=START, end=END)
    xs = [x for x, _ in points(parse(chart.svg), "tx")]
    assert xs == [0.0, float(WIDTH)]


def test_accepts_transfer_rows_and_escapes_the_label():
    rows = [TransferRow(collected_at=START, upload=1, download=2)]
    chart = traffic_chart(rows, start=START, end=END, label='HQ <b>&"x"')
    root = parse(chart.svg)
    assert root.find(f"{SVG}title").text == 'HQ <b>&"x"'
    assert root.get("aria-label") == 'HQ <b>&"x"'
    assert "<b>" not in str(chart.svg)


def test_window_must_not_be_empty():
    with pytest.raises(ValueError):
        traffic_chart([], start=END, end=START)
