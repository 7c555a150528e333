"""Session expiry: idle MFA sessions end and their peers leave the gateways.

Runs every 15 seconds on whichever Core's worker takes the periodic job, so
a device that stopped handshaking loses its peer soon after the location's
`peer_disconnect_threshold`. `expire_sessions` is conditional throughout:
two Cores racing, or a run repeated after its Core died, end each session
once and bump each location once.
"""

from __future__ import annotations

import procrastinate
import structlog

from defguard.core.jobs import database_of, tasks
from defguard.core.vpn_sessions.service import expire_sessions

log = structlog.get_logger("defguard.core.vpn_sessions")


@tasks.periodic(cron="* * * * * */15", periodic_id="vpn-session-expiry")
@tasks.task(
    name="expire_vpn_sessions",
    queue="maintenance",
    pass_context=True,
    queueing_lock="vpn-session-expiry",
)
async def expire_vpn_sessions(context: procrastinate.JobContext, timestamp: int) -> int:
    del timestamp
    async with database_of(context).transaction() as db:
        expiry = await expire_sessions(db)
    if expiry.ended or expiry.purged:
        log.info("expired VPN sessions", ended=expiry.ended, purged=expiry.purged)
    return len(expiry.ended)
