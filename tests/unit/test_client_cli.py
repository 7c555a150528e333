"""`defguard client` on bad input: exit status 2, a message naming the problem, nothing written."""

from __future__ import annotations

from typer.testing import CliRunner

from defguard.cli import app
from defguard.client.api import Device, DeviceConfig, InstanceInfo
from defguard.client.cli import run_code_command
from defguard.client.state import Instance, StateStore
from defguard.wireguard.keys import generate_keypair

runner = CliRunner()
# Nothing listens here; commands that must fail before any request never get that far.
NO_EDGE = "http://127.0.0.1:9"


def _enrolled(root, *, token: str | None = None) -> StateStore:
    store = StateStore(root)
    keys = generate_keypair()
    store.save_instance(
        Instance(
            edge_url=NO_EDGE + "/",
            info=InstanceInfo(
                id="0b6f0c3e-5d0a-4a53-9d0e-2f6f1b7c9a10",
                name="Acme",
                url="https://defguard.acme.test/",
                proxy_url="https://enroll.acme.test/",
                username="jdoe",
                client_traffic_policy=1,
            ),
            device=Device(id=17, name="box", pubkey=keys.public, user_id=5, created_at=0),
            polling_token=token,
            configs=[
                DeviceConfig(
                    network_id=1,
                    network_name="HQ",
                    endpoint="vpn.acme.test:51820",
                    assigned_ip="10.10.0.7",
                    pubkey="qSl+wevyCjR0oXbm2wgNz2G0XF+Ty/biwZMik2o6POA=",
                    allowed_ips="10.10.0.0/24",
                    location_mfa_mode=2,
                )
            ],
        ),
        keys.private,
    )
    return store


def _run(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, ["client", *args], env=env)


def test_connect_without_enrollment_is_bad_input(tmp_path):
    result = _run("connect", "HQ", "--state-dir", str(tmp_path / "empty"))
    assert result.exit_code == 2
    assert "nothing is enrolled" in result.output
    assert "defguard client enroll" in result.output


def test_state_dir_comes_from_the_environment(tmp_path):
    result = _run("connect", "HQ", env={"DEFGUARD_CLIENT_DIR": str(tmp_path / "env-state")})
    assert result.exit_code == 2
    assert str(tmp_path / "env-state") in result.output


def test_connect_to_an_unknown_location_lists_the_known_ones(tmp_path):
    # The poll fails (nothing listens), which is only a warning: the stored configs are used.
    _enrolled(tmp_path, token="MdZ3lx1h3sGpXa2JoEPQj354KVypfbip")
    result = _run("connect", "Branch", "--state-dir", str(tmp_path))
    assert result.exit_code == 2
    assert "unknown location 'Branch'" in result.output
    assert "1 HQ" in result.output
    assert "could not refresh Acme" in result.output
    assert not (tmp_path / "tunnels").exists()


def test_connect_options_are_checked_before_anything_happens(tmp_path):
    _enrolled(tmp_path)
    cases = {
        ("--ifname", "not a valid name"): "--ifname",
        ("--method", "sms"): "--method",
        ("--all-traffic",): "does not allow routing all traffic",
        ("--instance", "Nope"): "--instance",
    }
    for extra, message in cases.items():
        result = _run("connect", "HQ", "--state-dir", str(tmp_path), *extra)
        assert result.exit_code == 2, (extra, result.output)
        assert message in result.output, (extra, result.output)
    assert not (tmp_path / "tunnels").exists()


def test_enroll_rejects_bad_input_before_contacting_the_edge(tmp_path):
    state = str(tmp_path / "state")
    cases = [
        (("enroll", "enroll.acme.test", "T", "--password", "S3cure!Passw0rd"), "URL"),
        (("enroll", NO_EDGE, "T", "--password", "short"), "password"),
        (("enroll", NO_EDGE, "T", "--password", "alllowercase1!"), "uppercase"),
        (("enroll", NO_EDGE, "T", "--name", "  "), "--name"),
        (("enroll", NO_EDGE, "T", "--phone", "call me"), "--phone"),
        (("enroll", NO_EDGE, "T", "--mfa-method", "sms"), "--mfa-method"),
    ]
    for args, message in cases:
        result = _run(*args, "--state-dir", state)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
    assert not (tmp_path / "state").exists()


def test_password_from_the_environment_is_checked_too(tmp_path):
    result = _run(
        "enroll",
        NO_EDGE,
        "T",
        "--state-dir",
        str(tmp_path),
        env={"DEFGUARD_CLIENT_PASSWORD": "weak"},
    )
    assert result.exit_code == 2
    assert "password" in result.output


def test_unreachable_edge_is_a_failure_not_bad_input(tmp_path):
    result = _run(
        "enroll", NO_EDGE, "T", "--password", "S3cure!Passw0rd", "--state-dir", str(tmp_path)
    )
    assert result.exit_code == 1
    assert "cannot reach the Edge at http://127.0.0.1:9/" in result.output
    assert not (tmp_path / "instances").exists()


def test_status_and_disconnect(tmp_path):
    result = _run("status", "--state-dir", str(tmp_path / "empty"))
    assert result.exit_code == 0
    assert "Nothing is enrolled" in result.output

    _enrolled(tmp_path)
    result = _run("status", "--state-dir", str(tmp_path))
    assert result.exit_code == 0
    assert "Instance Acme" in result.output
    assert "location 1 HQ: 10.10.0.7" in result.output
    assert "MFA (TOTP or e-mail code)" in result.output
    assert "disconnected" in result.output
    assert (
        StateStore(tmp_path).private_key("0b6f0c3e-5d0a-4a53-9d0e-2f6f1b7c9a10")
        not in result.output
    )

    result = _run("disconnect", "--state-dir", str(tmp_path))
    assert (result.exit_code, result.output.strip()) == (0, "Not connected.")
    result = _run("disconnect", "HQ", "--state-dir", str(tmp_path))
    assert (result.exit_code, result.output.strip()) == (0, "Not connected.")
    result = _run("disconnect", "Branch", "--state-dir", str(tmp_path))
    assert result.exit_code == 2
    assert "unknown location 'Branch'" in result.output


def test_code_command_gets_the_secret_and_its_output_is_the_code():
    code = run_code_command(
        'printf "  %s\\n" "$DEFGUARD_TOTP_SECRET"', {"DEFGUARD_TOTP_SECRET": "123"}
    )
    assert code == "123"


def test_help_of_every_client_command():
    for command in ([], ["enroll"], ["connect"], ["status"], ["disconnect"]):
        result = _run(*command, "--help")
        assert result.exit_code == 0, (command, result.output)
        assert "Usage" in result.output
