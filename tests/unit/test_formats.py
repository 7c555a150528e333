"""Wire formats shared by every endpoint: timestamps, pagination, activity device labels."""

from __future__ import annotations

from datetime import datetime

from defguard.core.activity.service import describe_agent
from defguard.core.pagination import PageParams
from defguard.core.timefmt import format_timestamp


def test_timestamp_fraction_is_omitted_3_or_6_digits():
    assert format_timestamp(datetime(2025, 3, 4, 10, 22, 31)) == "2025-03-04T10:22:31"
    assert format_timestamp(datetime(2025, 3, 4, 10, 22, 31, 123000)) == "2025-03-04T10:22:31.123"
    assert (
        format_timestamp(datetime(2025, 3, 4, 10, 22, 31, 123456)) == "2025-03-04T10:22:31.123456"
    )


def test_pagination_clamps_and_counts():
    p = PageParams(page=0, per_page=1000)
    assert (p.page, p.per_page) == (1, 100)
    meta = PageParams(page=1, per_page=1).meta(57)
    assert (meta.total_pages, meta.next_page) == (57, 2)
    empty = PageParams(page=1, per_page=50).meta(0)
    assert (empty.total_pages, empty.next_page) == (0, None)
    last = PageParams(page=3, per_page=10).meta(30)
    assert last.next_page is None


def test_agent_labels():
    ff = "Mozilla/5.0 (X11; Linux x86_64; rv:123.0) Gecko/20100101 Firefox/123.0"
    assert describe_agent(ff) == "Firefox 123, OS: Linux"
    chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
    assert describe_agent(chrome) == "Chrome 120, OS: Windows"
    assert describe_agent("curl/8.5.0") == "curl 8"
    assert describe_agent(None) == ""
