"""The Defguard 2.0 upgrade of the legacy tables (steps U1 to U4).

U1 makes "match any" explicit on ACL rules and aliases and backfills the flags
from the legacy empty-means-any fields, renames `destination` to `addresses`
and `all_networks` to `all_locations`, and moves VPN session state out of
`wireguard_network_device`. U2 adds the modification stamps, U3 the LDAP
enrollment flag, and U4 restores "no allowed groups means everyone" as an
explicit `allow_all_groups`.

Revision ID: 0002_upgrade_2_0
Revises: 0001_legacy_1x
"""

from alembic import op

revision = "0002_upgrade_2_0"
down_revision = "0001_legacy_1x"
branch_labels = None
depends_on = None

U1 = r"""
ALTER TABLE wireguard_network
    ADD COLUMN mtu integer NOT NULL DEFAULT 1420,
    ADD COLUMN fwmark bigint NOT NULL DEFAULT 0,
    ADD COLUMN allow_all_groups boolean NOT NULL DEFAULT false;

ALTER TABLE aclalias
    ADD COLUMN any_address boolean NOT NULL DEFAULT false,
    ADD COLUMN any_port boolean NOT NULL DEFAULT false,
    ADD COLUMN any_protocol boolean NOT NULL DEFAULT false;

UPDATE aclalias a SET
    any_address = (coalesce(cardinality(a.destination), 0) = 0)
        AND NOT EXISTS (SELECT 1 FROM aclaliasdestinationrange r WHERE r.alias_id = a.id),
    any_port = (coalesce(cardinality(a.ports), 0) = 0),
    any_protocol = (coalesce(cardinality(a.protocols), 0) = 0);

ALTER TABLE aclalias RENAME COLUMN destination TO addresses;

ALTER TABLE aclrule
    ADD COLUMN any_address boolean NOT NULL DEFAULT false,
    ADD COLUMN any_port boolean NOT NULL DEFAULT false,
    ADD COLUMN any_protocol boolean NOT NULL DEFAULT false,
    ADD COLUMN use_manual_destination_settings boolean NOT NULL DEFAULT true,
    ADD COLUMN allow_all_groups boolean NOT NULL DEFAULT false,
    ADD COLUMN deny_all_groups boolean NOT NULL DEFAULT false;

WITH f AS (
    SELECT
        r.id,
        EXISTS (SELECT 1 FROM aclrulealias l JOIN aclalias a ON a.id = l.alias_id
                WHERE l.rule_id = r.id AND a.kind = 'destination') AS d,
        EXISTS (SELECT 1 FROM aclrulealias l JOIN aclalias a ON a.id = l.alias_id
                WHERE l.rule_id = r.id AND a.kind = 'component' AND NOT a.any_address) AS ca,
        EXISTS (SELECT 1 FROM aclrulealias l JOIN aclalias a ON a.id = l.alias_id
                WHERE l.rule_id = r.id AND a.kind = 'component' AND NOT a.any_port) AS cp,
        EXISTS (SELECT 1 FROM aclrulealias l JOIN aclalias a ON a.id = l.alias_id
                WHERE l.rule_id = r.id AND a.kind = 'component' AND NOT a.any_protocol) AS cr,
        (coalesce(cardinality(r.destination), 0) = 0)
            AND NOT EXISTS (SELECT 1 FROM aclruledestinationrange x WHERE x.rule_id = r.id) AS na,
        coalesce(cardinality(r.ports), 0) = 0 AS np,
        coalesce(cardinality(r.protocols), 0) = 0 AS nr
    FROM aclrule r
)
UPDATE aclrule r SET
    any_address = f.na AND NOT f.ca,
    any_port = f.np AND NOT f.cp,
    any_protocol = f.nr AND NOT f.cr,
    use_manual_destination_settings =
        NOT (f.na AND f.np AND f.nr AND NOT f.ca AND NOT f.cp AND NOT f.cr AND f.d),
    allow_all_groups = false,
    deny_all_groups = false
FROM f WHERE f.id = r.id;

ALTER TABLE aclrule RENAME COLUMN destination TO addresses;
ALTER TABLE aclrule RENAME COLUMN all_networks TO all_locations;

ALTER TABLE wireguard_network_device
    DROP COLUMN preshared_key,
    DROP COLUMN is_authorized,
    DROP COLUMN authorized_at;
CREATE INDEX wireguard_network_device_network_device_idx
    ON wireguard_network_device (wireguard_network_id, device_id);
CREATE INDEX device_user_type_id_idx ON device (user_id, device_type, id);
"""

U2 = r"""
DO $$
DECLARE admin_name text;
BEGIN
    SELECT u.username INTO admin_name
    FROM "user" u
    WHERE u.is_active AND EXISTS (
        SELECT 1 FROM group_user gu JOIN "group" g ON g.id = gu.group_id
        WHERE gu.user_id = u.id AND g.is_admin)
    ORDER BY u.id LIMIT 1;
    IF admin_name IS NULL THEN
        IF EXISTS (SELECT 1 FROM aclrule) OR EXISTS (SELECT 1 FROM aclalias) THEN
            RAISE EXCEPTION 'ACL rows exist but no active admin user to record as modified_by';
        END IF;
        admin_name := 'admin';
    END IF;
    EXECUTE format('ALTER TABLE aclrule ADD COLUMN modified_at timestamp NOT NULL '
                   'DEFAULT CURRENT_TIMESTAMP, ADD COLUMN modified_by text NOT NULL DEFAULT %L',
                   admin_name);
    EXECUTE format('ALTER TABLE aclalias ADD COLUMN modified_at timestamp NOT NULL '
                   'DEFAULT CURRENT_TIMESTAMP, ADD COLUMN modified_by text NOT NULL DEFAULT %L',
                   admin_name);
END $$;
ALTER TABLE aclrule ALTER COLUMN modified_by DROP DEFAULT;
ALTER TABLE aclalias ALTER COLUMN modified_by DROP DEFAULT;
"""

U3 = r"""
ALTER TABLE "user" ADD COLUMN ldap_remote_enrollment_completed boolean NOT NULL DEFAULT false;
UPDATE "user" SET ldap_remote_enrollment_completed = true WHERE from_ldap;
"""

U4 = r"""
UPDATE wireguard_network n SET allow_all_groups = true
WHERE NOT EXISTS (SELECT 1 FROM wireguard_network_allowed_group g WHERE g.network_id = n.id);
"""


def upgrade() -> None:
    for step in (U1, U2, U3, U4):
        op.execute(step)


def downgrade() -> None:
    raise NotImplementedError("the 2.0 upgrade is one-way; restore the 1.x backup instead")
