"""How Core and the Edge run their event loop.

uvloop, the libuv-based loop that uvicorn also prefers: every client request
crosses the loop several times (HTTP, gRPC, PostgreSQL), and its cheaper
socket and callback handling is a measured share of a request's cost
(docs/benchmarks.md). The Gateway keeps the standard loop: it serves one
Core stream per Core, not client traffic, and starts `wireguard-go`, which
daemonizes; the standard loop's subprocess handling is the one it is
tested with. The command-line tools keep the standard loop too.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    return uvloop.run(main)
