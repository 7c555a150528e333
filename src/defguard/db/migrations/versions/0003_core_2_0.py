"""Core state that must live in PostgreSQL for stateless, active-active Cores.

Web sessions, login throttling, one-time tokens, the activity log, the
settings row (with the signing secret) and the per-location configuration
revision that gateways follow.

Revision ID: 0003_core_2_0
Revises: 0002_upgrade_2_0
"""

from alembic import op

revision = "0003_core_2_0"
down_revision = "0002_upgrade_2_0"
branch_labels = None
depends_on = None

SQL = r"""
ALTER TABLE wireguard_network ADD COLUMN config_revision bigint NOT NULL DEFAULT 0;
-- The last TOTP time step accepted at login: a code cannot be replayed within its window.
ALTER TABLE "user" ADD COLUMN totp_last_step bigint NULL;

CREATE TABLE settings (
    id integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    secret_key text NOT NULL,
    authentication_period_days integer NOT NULL DEFAULT 7,
    enrollment_token_timeout_hours integer NOT NULL DEFAULT 24,
    password_reset_token_timeout_hours integer NOT NULL DEFAULT 24,
    mfa_code_timeout_seconds integer NOT NULL DEFAULT 60,
    public_proxy_url text NULL,
    initialized_at timestamp NULL
);

CREATE TABLE session (
    id text PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES "user"(id) ON DELETE CASCADE,
    mfa_verified boolean NOT NULL DEFAULT false,
    created timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    expires timestamp NOT NULL,
    ip inet NULL,
    user_agent text NULL
);
CREATE INDEX session_user_idx ON session (user_id);
CREATE INDEX session_expires_idx ON session (expires);

CREATE TABLE login_failure (
    id bigserial PRIMARY KEY,
    login text NOT NULL,
    at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'utc')
);
CREATE INDEX login_failure_login_at_idx ON login_failure (login, at);

CREATE TYPE token_kind AS ENUM ('enrollment', 'desktop', 'password_reset');
CREATE TABLE token (
    id text PRIMARY KEY,
    kind token_kind NOT NULL,
    user_id bigint NOT NULL REFERENCES "user"(id) ON DELETE CASCADE,
    admin_id bigint NULL REFERENCES "user"(id) ON DELETE SET NULL,
    email text NULL,
    created_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    expires_at timestamp NOT NULL,
    used_at timestamp NULL
);
CREATE INDEX token_user_kind_idx ON token (user_id, kind);

CREATE TABLE activity_log_event (
    id bigserial PRIMARY KEY,
    timestamp timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    user_id bigint NOT NULL,
    username text NOT NULL,
    location text NULL,
    ip inet NULL,
    event text NOT NULL,
    module text NOT NULL,
    device text NOT NULL DEFAULT '',
    description text NULL
);
CREATE INDEX activity_log_event_timestamp_idx ON activity_log_event (timestamp, id);
CREATE INDEX activity_log_event_user_idx ON activity_log_event (user_id);
"""


def upgrade() -> None:
    op.execute(SQL)


def downgrade() -> None:
    raise NotImplementedError
