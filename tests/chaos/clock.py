"""Monotonic times of the run as the UTC wall-clock times the processes' logs use."""

from __future__ import annotations

import time
from datetime import UTC, datetime

# Fixed once: the run measures intervals with the monotonic clock, and only
# its reports are matched against log lines.
_OFFSET = time.time() - time.monotonic()


def stamp(monotonic: float) -> str:
    return datetime.fromtimestamp(monotonic + _OFFSET, UTC).strftime("%H:%M:%S.%f")[:-3]


def now() -> str:
    return stamp(time.monotonic())
