"""Gateways per location, each Core's link to them, the peer change log and peer stats.

`peer_change` is filled by triggers, not by application code, so no path that
changes a peer (a service, a cascade, a bulk statement, a console command)
can forget to record it. A row says "the peer with this key in this location
may have changed"; `bump_revisions` stamps a location's pending rows with the
revision it creates, which is how a Core builds the diff of one revision.

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
    certificate_serial text NULL,
    certificate_expiry timestamp NULL,
    enabled boolean NOT NULL DEFAULT true,
    modified_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    modified_by text NOT NULL,
    CONSTRAINT gateway_address_port_key UNIQUE (address, port)
);
CREATE INDEX gateway_location_idx ON gateway (location_id);

-- Every Core LISTENs on this channel and reconciles its links without a restart.
CREATE FUNCTION gateway_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('defguard_gateway', OLD.id::text);
    ELSE
        PERFORM pg_notify('defguard_gateway', NEW.id::text);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER gateway_notify AFTER INSERT OR UPDATE OR DELETE ON gateway
    FOR EACH ROW EXECUTE FUNCTION gateway_notify();

-- One row per (gateway, Core process). A Core that dies leaves its row with an
-- old `last_seen`, so readers treat it as disconnected without any clean-up.
CREATE TABLE gateway_link (
    gateway_id bigint NOT NULL REFERENCES gateway(id) ON DELETE CASCADE,
    core_id text NOT NULL,
    connected_at timestamp NOT NULL,
    disconnected_at timestamp NULL,
    last_seen timestamp NOT NULL,
    version text NULL,
    applied_revision bigint NULL,
    PRIMARY KEY (gateway_id, core_id)
);

-- No foreign key to the location: rows are written by triggers while a
-- location's rows are being cascade-deleted, and orphans are purged by age.
CREATE TABLE peer_change (
    id bigserial PRIMARY KEY,
    location_id bigint NOT NULL,
    public_key text NOT NULL,
    revision bigint NULL,
    created_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'utc')
);
CREATE INDEX peer_change_pending_idx ON peer_change (location_id) WHERE revision IS NULL;
CREATE INDEX peer_change_revision_idx ON peer_change (location_id, revision);
CREATE INDEX peer_change_created_idx ON peer_change (created_at);

-- Statement-level triggers with transition tables: a re-sync that rewrites
-- tens of thousands of assignments costs one INSERT .. SELECT, not one per row.
CREATE FUNCTION peer_change_assignment_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO peer_change (location_id, public_key)
    SELECT DISTINCT n.wireguard_network_id, d.wireguard_pubkey
    FROM new_rows n JOIN device d ON d.id = n.device_id;
    RETURN NULL;
END $$;
CREATE TRIGGER peer_change_insert AFTER INSERT ON wireguard_network_device
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION peer_change_assignment_insert();

-- When the device row is already gone (a cascade from deleting it) the join
-- finds nothing; the device's own BEFORE DELETE trigger has written the rows.
CREATE FUNCTION peer_change_assignment_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO peer_change (location_id, public_key)
    SELECT DISTINCT o.wireguard_network_id, d.wireguard_pubkey
    FROM old_rows o JOIN device d ON d.id = o.device_id;
    RETURN NULL;
END $$;
CREATE TRIGGER peer_change_delete AFTER DELETE ON wireguard_network_device
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION peer_change_assignment_delete();

CREATE FUNCTION peer_change_assignment_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO peer_change (location_id, public_key)
    SELECT DISTINCT changed.location_id, d.wireguard_pubkey
    FROM (
        SELECT o.wireguard_network_id AS location_id, o.device_id
        FROM old_rows o JOIN new_rows n ON n.id = o.id
        WHERE (o.wireguard_ips, o.device_id, o.wireguard_network_id)
            IS DISTINCT FROM (n.wireguard_ips, n.device_id, n.wireguard_network_id)
        UNION
        SELECT n.wireguard_network_id, n.device_id
        FROM old_rows o JOIN new_rows n ON n.id = o.id
        WHERE (o.wireguard_ips, o.device_id, o.wireguard_network_id)
            IS DISTINCT FROM (n.wireguard_ips, n.device_id, n.wireguard_network_id)
    ) changed
    JOIN device d ON d.id = changed.device_id;
    RETURN NULL;
END $$;
CREATE TRIGGER peer_change_update AFTER UPDATE ON wireguard_network_device
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION peer_change_assignment_update();

-- A new key (or a device leaving or entering the configured state) changes
-- the peer under both keys in every location the device is in.
CREATE FUNCTION peer_change_device_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO peer_change (location_id, public_key)
    SELECT DISTINCT w.wireguard_network_id, k.public_key
    FROM wireguard_network_device w
    CROSS JOIN (VALUES (OLD.wireguard_pubkey), (NEW.wireguard_pubkey)) AS k(public_key)
    WHERE w.device_id = NEW.id;
    RETURN NULL;
END $$;
CREATE TRIGGER peer_change_device_update AFTER UPDATE OF wireguard_pubkey, configured ON device
    FOR EACH ROW
    WHEN (OLD.wireguard_pubkey IS DISTINCT FROM NEW.wireguard_pubkey
          OR OLD.configured IS DISTINCT FROM NEW.configured)
    EXECUTE FUNCTION peer_change_device_update();

-- Before the row goes: cascaded deletes of its assignments can no longer see the key.
CREATE FUNCTION peer_change_device_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO peer_change (location_id, public_key)
    SELECT w.wireguard_network_id, OLD.wireguard_pubkey
    FROM wireguard_network_device w
    WHERE w.device_id = OLD.id;
    RETURN OLD;
END $$;
CREATE TRIGGER peer_change_device_delete BEFORE DELETE ON device
    FOR EACH ROW EXECUTE FUNCTION peer_change_device_delete();

-- Stats as gateways report them (cumulative counters per gateway and peer).
-- A batch re-sent to another Core hits the unique key and is stored once.
CREATE TABLE peer_stats (
    id bigserial PRIMARY KEY,
    batch_id text NOT NULL,
    gateway_id bigint NOT NULL,
    location_id bigint NOT NULL REFERENCES wireguard_network(id) ON DELETE CASCADE,
    device_id bigint NULL REFERENCES device(id) ON DELETE CASCADE,
    public_key text NOT NULL,
    collected_at timestamp NOT NULL,
    endpoint text NULL,
    upload bigint NOT NULL,
    download bigint NOT NULL,
    latest_handshake timestamp NULL,
    allowed_ips text NULL,
    CONSTRAINT peer_stats_batch_peer_key UNIQUE (batch_id, public_key)
);
CREATE INDEX peer_stats_location_time_idx ON peer_stats (location_id, collected_at);
CREATE INDEX peer_stats_device_time_idx ON peer_stats (device_id, collected_at);
CREATE INDEX peer_stats_time_idx ON peer_stats (collected_at);
"""


def upgrade() -> None:
    op.execute(SQL)


def downgrade() -> None:
    raise NotImplementedError
