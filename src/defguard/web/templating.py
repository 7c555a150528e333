"""Jinja2 environments for the console and the Edge pages, with the shared macros."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import jinja2
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from defguard import __version__
from defguard.web.qr import qr_svg

STATIC_DIR = Path(__file__).parent / "static"
SHARED_TEMPLATES = Path(__file__).parent / "templates"


def _when(value: datetime | int | float | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value)
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _bytes(value: int | None) -> str:
    size = float(value or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def make_templates(directory: Path) -> Jinja2Templates:
    """Page templates from `directory`, macros from the shared folder; autoescaped."""
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(
            [jinja2.FileSystemLoader(directory), jinja2.FileSystemLoader(SHARED_TEMPLATES)]
        ),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(qr_svg=qr_svg, version=__version__)
    env.filters.update(when=_when, bytes=_bytes)
    return Jinja2Templates(env=env)


def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC_DIR)
