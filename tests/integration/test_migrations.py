"""The migration history: empty database to head, and a populated 1.x database upgraded to 2.0."""

from __future__ import annotations

import psycopg
import pytest
from alembic import command
from sqlalchemy.engine import URL

from defguard.db.migrate import alembic_config, current_revision, head_revision, upgrade


def _conn(url: URL) -> psycopg.Connection:
    return psycopg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))


def test_empty_database_migrates_to_head(empty_db_url):
    assert upgrade(empty_db_url) == head_revision()
    # Running again is a no-op (every Core runs it at start-up).
    assert upgrade(empty_db_url) == head_revision()
    with _conn(empty_db_url) as c:
        assert c.execute('SELECT name, is_admin FROM "group"').fetchall() == [("admin", True)]


def test_to_1x_stops_at_legacy_layout(empty_db_url):
    assert upgrade(empty_db_url, "1.x") == "0001_legacy_1x"
    with _conn(empty_db_url) as c:
        cols = {
            r[0]
            for r in c.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'aclrule'"
            )
        }
    assert {"destination", "all_networks"} <= cols
    assert "any_address" not in cols


LEGACY_FILL = """
INSERT INTO "user" (id, username, last_name, first_name, email, is_active)
VALUES (10, 'zed', 'Z', 'Zed', 'zed@x', true), (11, 'boss', 'B', 'Boss', 'boss@x', true),
       (12, 'oldboss', 'O', 'Old', 'old@x', false);
INSERT INTO "group" (id, name, is_admin) VALUES (2, 'devs', false);
INSERT INTO group_user VALUES (1, 11), (1, 12), (2, 10);
INSERT INTO wireguard_network (id, name, address, port, pubkey, prvkey, endpoint, allowed_ips)
VALUES (1, 'open', '{10.1.0.1/24}', 51820, 'pk1', 'sk1', 'vpn1', '{}'),
       (2, 'closed', '{10.2.0.1/24}', 51821, 'pk2', 'sk2', 'vpn2', '{}');
INSERT INTO wireguard_network_allowed_group VALUES (2, 2);
WITH d AS (
    INSERT INTO device (name, wireguard_pubkey, user_id, created)
    VALUES ('laptop', 'k', 10, now()) RETURNING id)
INSERT INTO wireguard_network_device (device_id, wireguard_network_id, is_authorized, wireguard_ips)
SELECT d.id, 1, true, '{10.1.0.2}' FROM d;
-- alias 1: destination alias with ports only; alias 2: empty component alias;
-- alias 3: component alias with an address range only
INSERT INTO aclalias (id, name, destination, ports, protocols, kind)
VALUES (1, 'web', '{}', '{"[80,81)"}', '{}', 'destination'),
       (2, 'empty', '{}', '{}', '{}', 'component'),
       (3, 'range', '{}', '{}', '{}', 'component');
INSERT INTO aclaliasdestinationrange (alias_id, "start", "end") VALUES (3, '10.9.0.1', '10.9.0.9');
-- rule 1: nothing but a destination alias; rule 2: manual ports only;
-- rule 3: empty + empty component alias + destination alias; rule 4: range component alias
INSERT INTO aclrule (id, name, allow_all_users, deny_all_users, all_networks, destination, ports, protocols)
VALUES (1, 'only-dest', true, false, true, '{}', '{}', '{}'),
       (2, 'ports', true, false, false, '{}', '{"[22,23)"}', '{}'),
       (3, 'dest-and-empty-comp', true, false, true, '{}', '{}', '{}'),
       (4, 'range-comp', true, false, true, '{}', '{}', '{6}');
INSERT INTO aclrulealias (rule_id, alias_id) VALUES (1, 1), (3, 1), (3, 2), (4, 3);
"""


def test_populated_1x_database_upgrades_with_backfill(empty_db_url):
    upgrade(empty_db_url, "1.x")
    with _conn(empty_db_url) as c:
        c.execute(LEGACY_FILL)
    assert upgrade(empty_db_url) == head_revision()
    with _conn(empty_db_url) as c:
        aliases = {
            r[0]: r[1:]
            for r in c.execute(
                "SELECT name, any_address, any_port, any_protocol, addresses, modified_by FROM aclalias"
            )
        }
        assert aliases["web"][:3] == (True, False, True)
        assert aliases["empty"][:3] == (True, True, True)
        assert aliases["range"][:3] == (False, True, True)
        # modified_by: the lowest-id *active* admin (oldboss is inactive).
        assert {a[4] for a in aliases.values()} == {"boss"}
        rules = {
            r[0]: r[1:]
            for r in c.execute(
                "SELECT name, any_address, any_port, any_protocol, use_manual_destination_settings,"
                " all_locations, allow_all_groups, deny_all_groups FROM aclrule"
            )
        }
        assert rules["only-dest"] == (True, True, True, False, True, False, False)
        assert rules["ports"] == (True, False, True, True, False, False, False)
        assert rules["dest-and-empty-comp"] == (True, True, True, False, True, False, False)
        # The range of a component alias contributes an address: not "any address".
        assert rules["range-comp"] == (False, True, False, True, True, False, False)
        locations = dict(c.execute("SELECT name, allow_all_groups FROM wireguard_network"))
        assert locations == {"open": True, "closed": False}
        cols = {
            r[0]
            for r in c.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_name = 'wireguard_network_device'"
            )
        }
        assert "preshared_key" not in cols and "is_authorized" not in cols
        assert c.execute("SELECT wireguard_ips::text FROM wireguard_network_device").fetchone() == (
            "{10.1.0.2}",
        )


def test_upgrade_aborts_cleanly_without_an_admin(empty_db_url):
    upgrade(empty_db_url, "1.x")
    with _conn(empty_db_url) as c:
        c.execute(
            "INSERT INTO aclrule (name, allow_all_users, deny_all_users, all_networks, destination,"
            " ports, protocols) VALUES ('r', true, false, true, '{}', '{}', '{}')"
        )
    with pytest.raises(Exception, match="no active admin"):
        upgrade(empty_db_url)
    # The failed step rolled back whole: still the legacy layout, data intact.
    assert current_revision(empty_db_url) == "0001_legacy_1x"
    with _conn(empty_db_url) as c:
        assert c.execute("SELECT count(*) FROM aclrule WHERE destination = '{}'").fetchone() == (1,)


def test_upstream_16_database_is_recognised(empty_db_url):
    upgrade(empty_db_url, "1.x")
    with _conn(empty_db_url) as c:
        # Make it look like a database upstream 1.6 wrote: sqlx history, no Alembic table.
        c.execute("DROP TABLE alembic_version")
        c.execute(
            "CREATE TABLE _sqlx_migrations (version bigint PRIMARY KEY, success boolean NOT NULL)"
        )
        c.execute(
            "INSERT INTO _sqlx_migrations VALUES (20250101000000, true), (20251119122424, true)"
        )
    assert upgrade(empty_db_url) == head_revision()


def test_older_upstream_database_is_refused_untouched(empty_db_url):
    from defguard.db.migrate import UnsupportedDatabase

    upgrade(empty_db_url, "1.x")
    with _conn(empty_db_url) as c:
        c.execute("DROP TABLE alembic_version")
        c.execute(
            "CREATE TABLE _sqlx_migrations (version bigint PRIMARY KEY, success boolean NOT NULL)"
        )
        c.execute("INSERT INTO _sqlx_migrations VALUES (20240101000000, true)")
    with pytest.raises(UnsupportedDatabase, match=r"upgrade it to 1\.6"):
        upgrade(empty_db_url)
    with _conn(empty_db_url) as c:
        assert c.execute("SELECT to_regclass('alembic_version')").fetchone() == (None,)


def test_client_request_functions_downgrade_and_upgrade_again(empty_db_url):
    """Rolling a release back restores the previous SQL functions, and rolling forward
    again works: the later migrations build on the earlier ones' function text."""

    def open_function_body(url: URL) -> str:
        with _conn(url) as c:
            row = c.execute("SELECT pg_get_functiondef('client_mfa_open'::regproc)").fetchone()
        assert row is not None
        return row[0]

    upgrade(empty_db_url)
    assert "synchronous_commit" in open_function_body(empty_db_url)
    command.downgrade(alembic_config(empty_db_url), "0007_client_requests")
    assert current_revision(empty_db_url) == "0007_client_requests"
    body = open_function_body(empty_db_url)
    assert "synchronous_commit" not in body and "network_device" not in body
    assert upgrade(empty_db_url) == head_revision()
    assert "synchronous_commit" in open_function_body(empty_db_url)
