"""`defguard acl ...`: ACL tools run against the database, like `defguard admin`.

Imports stay inside the commands so that `defguard --help` does not load the
database stack.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

acl_app = typer.Typer(help="ACL tools run against the database.", no_args_is_help=True)


async def resolve_location(db: object, location: str) -> int:
    """A location id, or a name that names exactly one location."""
    from sqlalchemy import select

    from defguard.core.console import ConsoleError
    from defguard.core.locations.models import Location

    async with db.session() as session:  # type: ignore[attr-defined]
        if location.isdigit():
            found = await session.get(Location, int(location))
            if found is None:
                raise ConsoleError(f"location {location} not found")
            return found.id
        ids = list(
            (await session.execute(select(Location.id).where(Location.name == location))).scalars()
        )
    if not ids:
        raise ConsoleError(f"location {location!r} not found")
    if len(ids) > 1:
        raise ConsoleError(
            f"location name {location!r} is ambiguous (ids {', '.join(map(str, sorted(ids)))});"
            " give the id"
        )
    return ids[0]


@acl_app.command("explain")
def explain(
    location: Annotated[str, typer.Option("--location", help="Location id or name.")],
    user: Annotated[str, typer.Option("--user", help="Username whose devices are the sources.")],
    to: Annotated[
        str,
        typer.Option(
            "--to",
            # Brackets escaped for the rich help renderer.
            help="Destination ADDR\\[:PORT]\\[/tcp|udp|icmp]; IPv6 as \\[ADDR]:PORT.",
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            envvar="DEFGUARD_DATA_DIR",
            help="Where the embedded PostgreSQL keeps its data (used when no database is configured).",
        ),
    ] = None,
) -> None:
    """Which firewall rule decides a flow from each of a user's devices in a location.

    Exit status 2 for bad input, an unknown user or an unknown location.
    """
    from defguard.cli import _console_db, _run_console, _setup_logging
    from defguard.core.acl.explain import explain_flow, render_text
    from defguard.core.console import ConsoleError
    from defguard.core.errors import ApiError

    _setup_logging()

    async def _go() -> None:
        db = _console_db(data_dir)
        try:
            location_id = await resolve_location(db, location)
            async with db.session() as session:
                out = await explain_flow(session, location_id, user, to)
        except ApiError as exc:
            raise ConsoleError(exc.msg) from None
        finally:
            await db.dispose()
        if as_json:
            typer.echo(json.dumps(out.model_dump(mode="json"), indent=2))
        else:
            typer.echo(render_text(out))

    _run_console(_go)
