"""First start: the settings row and the `admin` user in the admin group.

Runs under an advisory lock so that several Cores starting together create
exactly one admin. The generated password is returned to the caller, which
prints it on the console once; it is never passed to the logger.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, text

from defguard.core.auth.passwords import generate_password, hash_password
from defguard.core.groups.models import Group
from defguard.core.settings.service import ensure_settings
from defguard.core.users.models import User
from defguard.db.base import utcnow
from defguard.db.engine import Database

BOOTSTRAP_LOCK = 0x64670001
ADMIN_USERNAME = "admin"
ADMIN_GROUP = "admin"


@dataclass
class BootstrapResult:
    admin_created: bool
    generated_password: str | None


async def bootstrap(db: Database, admin_password: str | None) -> BootstrapResult:
    async with db.transaction() as session:
        await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": BOOTSTRAP_LOCK})
        settings = await ensure_settings(session)
        if settings.initialized_at is not None:
            return BootstrapResult(False, None)
        settings.initialized_at = utcnow()
        users = (await session.execute(select(func.count()).select_from(User))).scalar_one()
        if users:
            return BootstrapResult(False, None)
        group = (
            await session.execute(select(Group).where(Group.name == ADMIN_GROUP))
        ).scalar_one_or_none()
        if group is None:
            group = Group(name=ADMIN_GROUP, is_admin=True)
            session.add(group)
        generated = None
        if not admin_password:
            admin_password = generated = generate_password()
        admin = User(
            username=ADMIN_USERNAME,
            first_name="Defguard",
            last_name="Administrator",
            email="admin@defguard.local",
            password_hash=await hash_password(admin_password),
        )
        admin.groups.append(group)
        session.add(admin)
    return BootstrapResult(True, generated)
