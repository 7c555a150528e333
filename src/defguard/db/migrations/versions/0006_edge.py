"""Edges, each Core's link to them, stored Edge results, polling tokens, VPN-client MFA
sessions, enrollment sessions and the e-mail and enrollment settings.

`edge_request` makes a client request retried on another Core act once: the
result is written in the transaction that commits the request's effects, so
a retry either finds it or runs on a database where the first attempt left
nothing behind.

`vpn_client_session` rows decide who is a peer in a location with MFA, so the
same trigger pattern as the device tables records their peer changes.

Revision ID: 0006_edge
Revises: 0005_gateways
"""

from alembic import op

revision = "0006_edge"
down_revision = "0005_gateways"
branch_labels = None
depends_on = None

SQL = r"""
CREATE TABLE proxy (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    address text NOT NULL,
    port integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    public_url text NULL,
    certificate_serial text NULL,
    certificate_expiry timestamp NULL,
    enabled boolean NOT NULL DEFAULT true,
    modified_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    modified_by text NOT NULL,
    CONSTRAINT proxy_address_port_key UNIQUE (address, port)
);

CREATE FUNCTION proxy_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('defguard_proxy', OLD.id::text);
    ELSE
        PERFORM pg_notify('defguard_proxy', NEW.id::text);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER proxy_notify AFTER INSERT OR UPDATE OR DELETE ON proxy
    FOR EACH ROW EXECUTE FUNCTION proxy_notify();

CREATE TABLE proxy_link (
    proxy_id bigint NOT NULL REFERENCES proxy(id) ON DELETE CASCADE,
    core_id text NOT NULL,
    connected_at timestamp NOT NULL,
    disconnected_at timestamp NULL,
    last_seen timestamp NOT NULL,
    version text NULL,
    PRIMARY KEY (proxy_id, core_id)
);

CREATE TABLE edge_request (
    request_id text PRIMARY KEY,
    method text NOT NULL,
    status integer NOT NULL,
    body bytea NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'utc')
);
CREATE INDEX edge_request_created_idx ON edge_request (created_at);

-- Clients name their device by public key (VPN-client MFA, enrollment's network_info).
CREATE INDEX device_wireguard_pubkey_idx ON device (wireguard_pubkey);

CREATE TABLE polling_token (
    token text PRIMARY KEY,
    device_id bigint NOT NULL UNIQUE REFERENCES device(id) ON DELETE CASCADE,
    created_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'utc')
);

-- A client-MFA attempt becomes a VPN session when MFA succeeds: it then holds
-- the preshared key the gateways give the device's peer.
CREATE TABLE vpn_client_session (
    id bigserial PRIMARY KEY,
    location_id bigint NOT NULL REFERENCES wireguard_network(id) ON DELETE CASCADE,
    device_id bigint NOT NULL REFERENCES device(id) ON DELETE CASCADE,
    user_id bigint NOT NULL REFERENCES "user"(id) ON DELETE CASCADE,
    method smallint NOT NULL,
    created_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    preshared_key text NULL,
    authorized_at timestamp NULL,
    connected_at timestamp NULL,
    last_handshake timestamp NULL,
    ended_at timestamp NULL,
    end_reason text NULL
);
CREATE UNIQUE INDEX vpn_client_session_active_key ON vpn_client_session (location_id, device_id)
    WHERE authorized_at IS NOT NULL AND ended_at IS NULL;
CREATE INDEX vpn_client_session_open_idx ON vpn_client_session (location_id)
    WHERE ended_at IS NULL;
CREATE INDEX vpn_client_session_device_idx ON vpn_client_session (device_id);

CREATE FUNCTION peer_change_vpn_session() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        -- Only an active session's removal changes the peer; a dropped attempt did not.
        IF OLD.authorized_at IS NOT NULL AND OLD.ended_at IS NULL THEN
            INSERT INTO peer_change (location_id, public_key)
            SELECT OLD.location_id, d.wireguard_pubkey FROM device d WHERE d.id = OLD.device_id;
        END IF;
        RETURN OLD;
    END IF;
    IF TG_OP = 'UPDATE' AND (OLD.preshared_key, OLD.authorized_at, OLD.ended_at)
            IS NOT DISTINCT FROM (NEW.preshared_key, NEW.authorized_at, NEW.ended_at) THEN
        RETURN NEW;
    END IF;
    IF NEW.authorized_at IS NOT NULL OR TG_OP = 'UPDATE' THEN
        INSERT INTO peer_change (location_id, public_key)
        SELECT NEW.location_id, d.wireguard_pubkey FROM device d WHERE d.id = NEW.device_id;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER peer_change_vpn_session BEFORE INSERT OR UPDATE OR DELETE ON vpn_client_session
    FOR EACH ROW EXECUTE FUNCTION peer_change_vpn_session();

-- An enrollment or reset token opens a session of limited length on first use.
ALTER TABLE token
    ADD COLUMN session_started_at timestamp NULL,
    ADD COLUMN session_deadline timestamp NULL;

CREATE TYPE smtp_encryption AS ENUM ('None', 'StartTls', 'ImplicitTls');

ALTER TABLE settings
    ADD COLUMN instance_id uuid NOT NULL DEFAULT gen_random_uuid(),
    ADD COLUMN instance_name text NOT NULL DEFAULT 'Defguard',
    ADD COLUMN smtp_server text NULL,
    ADD COLUMN smtp_port integer NULL CHECK (smtp_port BETWEEN 1 AND 65535),
    ADD COLUMN smtp_encryption smtp_encryption NOT NULL DEFAULT 'StartTls',
    ADD COLUMN smtp_user text NULL,
    ADD COLUMN smtp_password text NULL,
    ADD COLUMN smtp_sender text NULL,
    ADD COLUMN enrollment_vpn_step_optional boolean NOT NULL DEFAULT true,
    ADD COLUMN enrollment_welcome_message text NOT NULL DEFAULT '',
    ADD COLUMN enrollment_welcome_email_subject text NOT NULL DEFAULT 'Welcome to Defguard',
    ADD COLUMN enrollment_welcome_email text NOT NULL DEFAULT '',
    ADD COLUMN enrollment_use_welcome_message_as_email boolean NOT NULL DEFAULT true,
    ADD COLUMN enrollment_only_client_activation boolean NOT NULL DEFAULT false,
    ADD COLUMN enrollment_admin_device_management boolean NOT NULL DEFAULT false,
    ADD COLUMN client_traffic_policy smallint NOT NULL DEFAULT 0;
"""


def upgrade() -> None:
    op.execute(SQL)


def downgrade() -> None:
    raise NotImplementedError
