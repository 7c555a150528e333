"""A pending VPN-client MFA attempt commits without waiting for its WAL flush.

`client_mfa_open` writes nothing whose loss in a database crash would matter:
a pending session, the replaced pending session's removal, and the request's
stored answer. If the server crashes in the fraction of a second before the
flush, the client's `finish` gets "login session not found" (or finds the
older attempt again, which still needs a valid code) and the client starts
over. No authorisation, key, throttle count or TOTP step is in this
transaction, and the transaction stays atomic.

The setting is transaction-local (`set_config(..., true)`), so it ends with
the call: `client_mfa_authorize`, which grants access and counts failures,
and everything else on the same pooled connection keep waiting for the
flush. This is half of the commits of an MFA, and the flush wait was the
largest share of the time a database connection spent on one.

The function is 0008's with one statement added before its writes.

Revision ID: 0009_pending_async_commit
Revises: 0008_client_mfa_one_trip
"""

from alembic import op

from defguard.db.migrations.revision_sql import function_sql

revision = "0009_pending_async_commit"
down_revision = "0008_client_mfa_one_trip"
branch_labels = None
depends_on = None

_FIRST_WRITE = "    DELETE FROM vpn_client_session s\n"
_ASYNC_COMMIT = (
    "    -- Losing this attempt in a crash only makes the client start again (0009).\n"
    "    PERFORM set_config('synchronous_commit', 'off', true);\n"
)


def _open_function_0008() -> str:
    """0008's `CREATE FUNCTION client_mfa_open(...)` statement."""
    return function_sql("0008_client_mfa_one_trip", "client_mfa_open")


def upgrade() -> None:
    previous = _open_function_0008()
    assert previous.count(_FIRST_WRITE) == 1, "0008's client_mfa_open changed shape"
    replaced = previous.replace(_FIRST_WRITE, _ASYNC_COMMIT + _FIRST_WRITE)
    op.execute(replaced.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))


def downgrade() -> None:
    op.execute(_open_function_0008().replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
