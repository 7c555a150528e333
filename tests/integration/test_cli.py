"""The console commands against a real database: success paths and exit status 2 on bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg

from defguard.core.auth.passwords import verify_password_sync


def _cli(url, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEFGUARD_")}
    env["DEFGUARD_DATABASE_URL"] = url.render_as_string(hide_password=False)
    return subprocess.run(
        [sys.executable, "-m", "defguard", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def _pg(url):
    return psycopg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))


def test_help_on_every_command(fresh_db_url):
    for cmd in (
        [],
        ["up"],
        ["core"],
        ["migrate"],
        ["admin"],
        ["admin", "create-user"],
        ["admin", "reset-password"],
    ):
        r = _cli(fresh_db_url, *cmd, "--help")
        assert r.returncode == 0, (cmd, r.stderr)
        assert "Usage" in r.stdout


def test_create_admin_user_and_reset_password(fresh_db_url):
    r = _cli(
        fresh_db_url,
        "admin",
        "create-user",
        "ops",
        "--email",
        "ops@example.com",
        "--password",
        "0ps!Passw0rd",
        "--admin",
    )
    assert r.returncode == 0, r.stderr
    with _pg(fresh_db_url) as c:
        (hash_,) = c.execute(
            """SELECT password_hash FROM "user" WHERE username = 'ops'"""
        ).fetchone()
        assert verify_password_sync(hash_, "0ps!Passw0rd")
        groups = c.execute(
            """SELECT g.name FROM "group" g JOIN group_user gu ON gu.group_id = g.id
               JOIN "user" u ON u.id = gu.user_id WHERE u.username = 'ops'"""
        ).fetchall()
        assert groups == [("admin",)]
    r = _cli(fresh_db_url, "admin", "reset-password", "ops")
    assert r.returncode == 0, r.stderr
    new_password = r.stdout.strip().rsplit(" ", 1)[-1]
    with _pg(fresh_db_url) as c:
        (hash_,) = c.execute(
            """SELECT password_hash FROM "user" WHERE username = 'ops'"""
        ).fetchone()
        assert verify_password_sync(hash_, new_password)
        events = c.execute("SELECT event, username FROM activity_log_event ORDER BY id").fetchall()
        assert events == [
            ("user_added", "defguard-cli"),
            ("password_changed_by_admin", "defguard-cli"),
        ]


def test_bad_input_exits_2_and_writes_nothing(fresh_db_url):
    with _pg(fresh_db_url) as c:
        (before,) = c.execute('SELECT count(*) FROM "user"').fetchone()
    weak = _cli(
        fresh_db_url, "admin", "create-user", "eve", "--email", "eve@x", "--password", "short"
    )
    assert weak.returncode == 2
    assert "password" in weak.stderr
    bad_name = _cli(fresh_db_url, "admin", "create-user", "bad name!", "--email", "b@x")
    assert bad_name.returncode == 2
    unknown = _cli(fresh_db_url, "admin", "reset-password", "nobody", "--password", "G00d!Password")
    assert unknown.returncode == 2
    assert "nobody" in unknown.stderr
    bad_rev = _cli(fresh_db_url, "migrate", "--to", "nonsense")
    assert bad_rev.returncode == 2
    with _pg(fresh_db_url) as c:
        assert c.execute('SELECT count(*) FROM "user"').fetchone() == (before,)
