"""Administration from the console (`defguard admin ...`), through the same services as the API.

Console actions have no web session; the activity log records them as done by
the pseudo-user `defguard-cli` (id 0), so they stand apart from anything done
through the API.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from defguard.core.activity.service import record
from defguard.core.auth.passwords import hash_password
from defguard.core.context import RequestContext
from defguard.core.errors import ApiError
from defguard.core.groups.models import Group
from defguard.core.locations.access import resync_locations
from defguard.core.users.models import User
from defguard.core.users.service import NewUser, create_users
from defguard.core.users.validation import FieldError, check_password_strength
from defguard.db.engine import Database

CONSOLE = RequestContext(ip=None, user_agent="defguard-cli")


def _console_actor() -> User:
    """A transient, never-saved user standing for whoever runs the console command."""
    return User(id=0, username="defguard-cli")


class ConsoleError(Exception):
    """A refused console action; the CLI prints it and exits with status 2."""


async def create_user(db: Database, spec: NewUser, *, admin: bool) -> User:
    try:
        async with db.transaction() as session:
            users = await create_users(session, [spec], actor=_console_actor(), ctx=CONSOLE)
            user = users[0]
            if admin:
                group = (
                    (await session.execute(select(Group).where(Group.is_admin).order_by(Group.id)))
                    .scalars()
                    .first()
                )
                if group is None:
                    raise ConsoleError("there is no admin group")
                await session.refresh(user, ["groups"])
                user.groups.append(group)
                await session.flush()
                await resync_locations(session)
            return user
    except ApiError as exc:
        raise ConsoleError(exc.msg) from None


async def reset_password(db: Database, username: str, password: str) -> None:
    try:
        check_password_strength(password)
    except FieldError as exc:
        raise ConsoleError(str(exc)) from None
    async with db.transaction() as session:
        user = (
            await session.execute(
                select(User).where(User.username == username).options(selectinload(User.groups))
            )
        ).scalar_one_or_none()
        if user is None:
            raise ConsoleError(f"user {username} not found")
        user.password_hash = await hash_password(password)
        record(
            session,
            CONSOLE,
            _console_actor(),
            "password_changed_by_admin",
            f"Password of {username} set from the console",
        )


async def ensure_local_gateways(db: Database, count: int, first_grpc_port: int) -> int:
    """Gateway rows for `defguard up --gateways N` on this machine; returns the WireGuard port.

    They serve the first location, which is created (`Default`, 10.200.0.1/24)
    when there is none, so the system is usable as soon as it starts.
    """
    from sqlalchemy import select

    from defguard.core.gateways.models import Gateway
    from defguard.core.gateways.schemas import AdoptGateway
    from defguard.core.gateways.service import adopt_gateway
    from defguard.core.locations.models import Location, LocationMfaMode, ServiceLocationMode
    from defguard.core.locations.schemas import LocationWrite
    from defguard.core.locations.service import create_location

    async with db.transaction() as session:
        location = (
            await session.execute(select(Location).order_by(Location.id).limit(1))
        ).scalar_one_or_none()
        if location is None:
            location = await create_location(
                session,
                LocationWrite(
                    name="Default",
                    address="10.200.0.1/24",
                    endpoint="127.0.0.1",
                    port=51820,
                    allowed_ips="10.200.0.0/24",
                    dns=None,
                    mtu=1420,
                    fwmark=0,
                    allow_all_groups=True,
                    allowed_groups=[],
                    keepalive_interval=25,
                    peer_disconnect_threshold=300,
                    acl_enabled=False,
                    acl_default_allow=False,
                    location_mfa_mode=LocationMfaMode.DISABLED,
                    service_location_mode=ServiceLocationMode.DISABLED,
                ),
                actor=_console_actor(),
                ctx=CONSOLE,
            )
        for i in range(count):
            port = first_grpc_port + i
            name = f"local-gateway-{i + 1}"
            exists = await session.execute(
                select(Gateway.id).where(Gateway.address == "127.0.0.1", Gateway.port == port)
            )
            if exists.first() is None:
                await adopt_gateway(
                    session,
                    location.id,
                    AdoptGateway(name=name, ip_or_domain="127.0.0.1", grpc_port=port),
                    actor=_console_actor(),
                )
        return location.port
