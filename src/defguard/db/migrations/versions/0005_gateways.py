"""Gateways registered per location, and what each Core knows of its link to them.

Revision ID: 0005_gateways
Revises: 0004_job_queue
"""

from alembic import op

revision = "0005_gateways"
down_revision = "0004_job_queue"
branch_labels = None
depends_on = None

SQL = r"""
CREATE TABLE gateway (
    id bigserial PRIMARY KEY,
    location_id bigint NOT NULL REFERENCES wireguard_network(id) ON DELETE CASCADE,
    name text NOT NULL,
    address text NOT NULL,
    port integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    connected_at timestamp NULL,
    disconnected_at timestamp NULL,
    certificate_serial text NULL,
    certificate_expiry timestamp NULL,
    version text NULL,
    enabled boolean NOT NULL DEFAULT true,
    modified_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    modified_by text NOT NULL,
    CONSTRAINT gateway_address_port_key UNIQUE (address, port)
);
CREATE INDEX gateway_location_idx ON gateway (location_id);
"""


def upgrade() -> None:
    op.execute(SQL)


def downgrade() -> None:
    raise NotImplementedError
