"""Rule expiry: applied rules whose `expires` has passed become `Expired` and leave the firewall.

Runs every minute on whichever Core's worker takes the periodic job. The
transition is one conditional `UPDATE ... RETURNING`, so two Cores racing
(or a job re-run after its Core died) expire each rule once: the loser's
UPDATE matches no rows and bumps nothing.
"""

from __future__ import annotations

import procrastinate
import structlog
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from defguard.core.acl.models import AclRule, RuleState
from defguard.core.acl.service import mark_firewall_changed, rule_locations
from defguard.core.jobs import database_of, tasks
from defguard.db.base import utcnow

log = structlog.get_logger("defguard.core.acl")


async def expire_rules(db: AsyncSession) -> list[int]:
    """Mark due rules `Expired` and bump their locations, in the caller's transaction.

    Returns the ids of the rules this call expired.
    """
    expired = list(
        (
            await db.execute(
                update(AclRule)
                .where(
                    AclRule.state == RuleState.APPLIED,
                    AclRule.expires.is_not(None),
                    AclRule.expires <= utcnow(),
                )
                .values(state=RuleState.EXPIRED)
                .returning(AclRule.id)
                .execution_options(synchronize_session=False)
            )
        ).scalars()
    )
    if expired:
        locations = await rule_locations(db, expired)
        await mark_firewall_changed(db, locations)
        log.info("expired ACL rules", rules=sorted(expired), locations=sorted(locations))
    return expired


@tasks.periodic(cron="* * * * *", periodic_id="acl-expiry")
@tasks.task(
    name="expire_acl_rules", queue="maintenance", pass_context=True, queueing_lock="acl-expiry"
)
async def expire_acl_rules(context: procrastinate.JobContext, timestamp: int) -> int:
    del timestamp
    async with database_of(context).transaction() as db:
        return len(await expire_rules(db))
