"""The Defguard 1.6.x layout of identity, location, device and ACL tables.

This baseline reproduces the legacy schema column for column (names, order,
defaults, constraints) so that a 1.x database can be filled in its old shape
(`defguard migrate --to 1.x`) and then upgraded by the next revision exactly as
the 2.0 release does.

Revision ID: 0001_legacy_1x
Revises:
"""

from alembic import op

revision = "0001_legacy_1x"
down_revision = None
branch_labels = None
depends_on = None

LEGACY_SQL = r"""
CREATE TYPE aclrule_state AS ENUM ('applied', 'new', 'modified', 'deleted', 'expired');
CREATE TYPE aclalias_state AS ENUM ('applied', 'modified');
CREATE TYPE aclalias_kind AS ENUM ('destination', 'component');
CREATE TYPE device_type AS ENUM ('user', 'network');
CREATE TYPE mfa_method AS ENUM ('none', 'one_time_password', 'webauthn', 'email');
CREATE TYPE location_mfa_mode AS ENUM ('disabled', 'internal', 'external');
CREATE TYPE service_location_mode AS ENUM ('disabled', 'prelogon', 'alwayson');

CREATE FUNCTION all_ranges_bounded(ranges int4range[]) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE r int4range;
BEGIN
    IF ranges IS NULL THEN RETURN true; END IF;
    FOREACH r IN ARRAY ranges LOOP
        IF lower(r) IS NULL OR upper(r) IS NULL THEN RETURN false; END IF;
    END LOOP;
    RETURN true;
END;
$$;

CREATE TABLE "user" (
    id bigserial PRIMARY KEY,
    username text NOT NULL,
    password_hash text NULL,
    last_name text NOT NULL,
    first_name text NOT NULL,
    email text NOT NULL,
    phone text NULL,
    totp_enabled boolean NOT NULL DEFAULT false,
    totp_secret bytea NULL,
    mfa_method mfa_method NOT NULL DEFAULT 'none',
    recovery_codes text[] NOT NULL DEFAULT '{}',
    mfa_enabled boolean NOT NULL DEFAULT false,
    email_mfa_enabled boolean NOT NULL DEFAULT false,
    email_mfa_secret bytea NULL,
    is_active boolean NOT NULL DEFAULT true,
    openid_sub text NULL,
    from_ldap boolean NOT NULL DEFAULT false,
    ldap_pass_randomized boolean NOT NULL DEFAULT false,
    ldap_rdn text NULL,
    ldap_user_path text NULL,
    enrollment_pending boolean NOT NULL DEFAULT false,
    CONSTRAINT user_username_key UNIQUE (username),
    CONSTRAINT user_openid_sub_key UNIQUE (openid_sub),
    CONSTRAINT unique_ldap_rdn_path UNIQUE (ldap_user_path, ldap_rdn)
);
CREATE UNIQUE INDEX email_unique_idx ON "user" (lower(email));

CREATE TABLE "group" (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    is_admin boolean NOT NULL DEFAULT false,
    CONSTRAINT group_name_key UNIQUE (name)
);
INSERT INTO "group" (id, name, is_admin) VALUES (1, 'admin', true);
SELECT setval(pg_get_serial_sequence('"group"', 'id'), 1);

CREATE TABLE group_user (
    group_id bigint NULL REFERENCES "group"(id) ON DELETE CASCADE,
    user_id bigint NULL REFERENCES "user"(id) ON DELETE CASCADE,
    CONSTRAINT group_user_unique UNIQUE (group_id, user_id)
);

CREATE TABLE wireguard_network (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    address inet[] NOT NULL,
    port integer NOT NULL,
    pubkey text NOT NULL,
    prvkey text NOT NULL,
    endpoint text NOT NULL,
    dns text NULL,
    allowed_ips inet[] NOT NULL,
    connected_at timestamp NULL,
    keepalive_interval integer NOT NULL DEFAULT 25,
    peer_disconnect_threshold integer NOT NULL DEFAULT 300,
    acl_enabled boolean NOT NULL DEFAULT false,
    acl_default_allow boolean NOT NULL DEFAULT false,
    location_mfa_mode location_mfa_mode NOT NULL DEFAULT 'disabled',
    service_location_mode service_location_mode NOT NULL DEFAULT 'disabled'
);

CREATE TABLE device (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    wireguard_pubkey text NOT NULL,
    user_id bigint NOT NULL REFERENCES "user"(id) ON DELETE CASCADE,
    created timestamp NOT NULL,
    device_type device_type NOT NULL DEFAULT 'user',
    description text NULL,
    configured boolean NOT NULL DEFAULT true,
    CONSTRAINT name_user UNIQUE (name, user_id, device_type)
);

CREATE TABLE wireguard_network_device (
    device_id bigint NOT NULL REFERENCES device(id) ON DELETE CASCADE,
    wireguard_network_id bigint NOT NULL REFERENCES wireguard_network(id) ON DELETE CASCADE,
    is_authorized boolean NOT NULL DEFAULT false,
    preshared_key text NULL,
    authorized_at timestamp NULL,
    id bigserial PRIMARY KEY,
    wireguard_ips inet[] NOT NULL DEFAULT '{}',
    CONSTRAINT device_network UNIQUE (device_id, wireguard_network_id)
);

CREATE TABLE wireguard_network_allowed_group (
    network_id bigint NULL REFERENCES wireguard_network(id) ON DELETE CASCADE,
    group_id bigint NULL REFERENCES "group"(id) ON DELETE CASCADE,
    CONSTRAINT network_group_unique UNIQUE (network_id, group_id)
);

CREATE TABLE aclrule (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    allow_all_users boolean NOT NULL,
    deny_all_users boolean NOT NULL,
    all_networks boolean NOT NULL,
    destination inet[] NOT NULL,
    ports int4range[] NOT NULL,
    protocols integer[] NOT NULL,
    expires timestamp NULL,
    enabled boolean NOT NULL DEFAULT true,
    state aclrule_state NOT NULL DEFAULT 'new',
    parent_id bigint NULL,
    allow_all_network_devices boolean NOT NULL DEFAULT false,
    deny_all_network_devices boolean NOT NULL DEFAULT false,
    CONSTRAINT unique_parent_id UNIQUE (parent_id),
    CONSTRAINT parent_id_fkey FOREIGN KEY (parent_id) REFERENCES aclrule(id),
    CONSTRAINT bounded_ports CHECK (all_ranges_bounded(ports))
);

CREATE TABLE aclalias (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    destination inet[] NOT NULL,
    ports int4range[] NOT NULL,
    protocols integer[] NOT NULL,
    state aclalias_state NOT NULL DEFAULT 'applied',
    parent_id bigint NULL,
    kind aclalias_kind NOT NULL,
    CONSTRAINT alias_unique_parent_id UNIQUE (parent_id),
    CONSTRAINT alias_parent_id_fkey FOREIGN KEY (parent_id) REFERENCES aclalias(id),
    CONSTRAINT bounded_ports CHECK (all_ranges_bounded(ports))
);

CREATE TABLE aclrulenetwork (
    id bigserial PRIMARY KEY,
    rule_id bigint NOT NULL REFERENCES aclrule(id) ON DELETE CASCADE,
    network_id bigint NOT NULL REFERENCES wireguard_network(id) ON DELETE CASCADE,
    CONSTRAINT rule_network UNIQUE (rule_id, network_id)
);
CREATE TABLE aclruleuser (
    id bigserial PRIMARY KEY,
    rule_id bigint NOT NULL REFERENCES aclrule(id) ON DELETE CASCADE,
    user_id bigint NOT NULL REFERENCES "user"(id) ON DELETE CASCADE,
    allow boolean NOT NULL,
    CONSTRAINT rule_user UNIQUE (rule_id, user_id, allow)
);
CREATE TABLE aclrulegroup (
    id bigserial PRIMARY KEY,
    rule_id bigint NOT NULL REFERENCES aclrule(id) ON DELETE CASCADE,
    group_id bigint NOT NULL REFERENCES "group"(id) ON DELETE CASCADE,
    allow boolean NOT NULL,
    CONSTRAINT rule_group UNIQUE (rule_id, group_id, allow)
);
CREATE TABLE aclruledevice (
    id bigserial PRIMARY KEY,
    rule_id bigint NOT NULL REFERENCES aclrule(id) ON DELETE CASCADE,
    device_id bigint NOT NULL REFERENCES device(id) ON DELETE CASCADE,
    allow boolean NOT NULL,
    CONSTRAINT rule_device UNIQUE (rule_id, device_id, allow)
);
CREATE TABLE aclrulealias (
    id bigserial PRIMARY KEY,
    rule_id bigint NOT NULL REFERENCES aclrule(id) ON DELETE CASCADE,
    alias_id bigint NOT NULL REFERENCES aclalias(id) ON DELETE CASCADE,
    CONSTRAINT rule_alias UNIQUE (rule_id, alias_id)
);
CREATE TABLE aclruledestinationrange (
    id bigserial PRIMARY KEY,
    rule_id bigint NOT NULL REFERENCES aclrule(id) ON DELETE CASCADE,
    "start" inet NOT NULL,
    "end" inet NOT NULL,
    CONSTRAINT no_networks CHECK (host("start")::inet = "start" AND host("end")::inet = "end"),
    CONSTRAINT range_order CHECK ("start" < "end")
);
CREATE TABLE aclaliasdestinationrange (
    id bigserial PRIMARY KEY,
    alias_id bigint NOT NULL REFERENCES aclalias(id) ON DELETE CASCADE,
    "start" inet NOT NULL,
    "end" inet NOT NULL,
    CONSTRAINT no_networks CHECK (host("start")::inet = "start" AND host("end")::inet = "end"),
    CONSTRAINT range_order CHECK ("start" < "end")
);
"""


def upgrade() -> None:
    op.execute(LEGACY_SQL)


def downgrade() -> None:
    raise NotImplementedError("the legacy baseline is never downgraded")
