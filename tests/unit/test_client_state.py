"""The client's state directory: round trips, permissions, atomic writes and location lookup."""

from __future__ import annotations

import os
import stat

import pytest

from defguard.client import state as client_state
from defguard.client.api import Device, DeviceConfig, InstanceInfo
from defguard.client.state import Instance, Location, StateError, StateStore, Tunnel, find_in
from defguard.wireguard.keys import generate_keypair


def _info(instance_id: str = "0b6f0c3e-5d0a-4a53-9d0e-2f6f1b7c9a10", name: str = "Acme"):
    return InstanceInfo(
        id=instance_id,
        name=name,
        url="https://defguard.acme.test/",
        proxy_url="https://enroll.acme.test/",
        username="jdoe",
        client_traffic_policy=0,
    )


def _cfg(network_id: int, name: str) -> DeviceConfig:
    return DeviceConfig(
        network_id=network_id,
        network_name=name,
        endpoint="vpn.acme.test:51820",
        assigned_ip=f"10.10.{network_id}.7",
        pubkey="qSl+wevyCjR0oXbm2wgNz2G0XF+Ty/biwZMik2o6POA=",
        allowed_ips="10.10.0.0/16",
        location_mfa_mode=1,
    )


def _instance(pubkey: str, configs: list[DeviceConfig], **info) -> Instance:
    return Instance(
        edge_url="https://enroll.acme.test/",
        info=_info(**info),
        device=Device(id=17, name="box", pubkey=pubkey, user_id=5, created_at=1767225800),
        polling_token="MdZ3lx1h3sGpXa2JoEPQj354KVypfbip",
        configs=configs,
    )


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_instance_round_trip_with_private_permissions(tmp_path):
    root = tmp_path / "state"
    store = StateStore(root)
    keys = generate_keypair()
    instance = _instance(keys.public, [_cfg(1, "HQ"), _cfg(2, "Lab")])
    store.save_instance(instance, keys.private)

    loaded = StateStore(root).load_instance(instance.id)
    assert loaded == instance
    assert store.private_key(instance.id) == keys.private
    assert store.instances() == [instance]

    directory = root / "instances" / instance.id
    for path in (root, root / "instances", directory):
        assert _mode(path) == 0o700
    for path in (directory / "private.key", directory / "instance.json"):
        assert _mode(path) == 0o600
    # The key lives in its own file only.
    assert keys.private not in (directory / "instance.json").read_text()
    # Replacing writes through a temporary file and leaves nothing behind.
    store.save_instance(instance.model_copy(update={"polling_token": "new"}))
    assert sorted(p.name for p in directory.iterdir()) == ["instance.json", "private.key"]
    assert store.load_instance(instance.id).polling_token == "new"
    assert store.private_key(instance.id) == keys.private


def test_missing_and_damaged_state(tmp_path):
    store = StateStore(tmp_path / "nothing")
    assert store.instances() == []
    assert store.tunnels() == []
    assert store.load_instance("0b6f0c3e") is None
    with pytest.raises(StateError, match="private key"):
        store.private_key("0b6f0c3e")

    store = StateStore(tmp_path / "state")
    instance = _instance(generate_keypair().public, [])
    store.save_instance(instance)
    (tmp_path / "state" / "instances" / instance.id / "instance.json").write_text("{")
    with pytest.raises(StateError, match="damaged"):
        store.load_instance(instance.id)


@pytest.mark.parametrize("bad", ["../etc", "a/b", "", "."])
def test_instance_ids_cannot_escape_the_directory(tmp_path, bad):
    with pytest.raises(StateError):
        StateStore(tmp_path).instance_dir(bad)


def test_tunnel_record_and_config_round_trip(tmp_path):
    store = StateStore(tmp_path / "state")
    record = Tunnel(
        ifname="dg0",
        instance_id="i",
        location_id=1,
        location_name="HQ",
        backend="userspace",
        addresses=["10.10.0.7"],
        routes=["10.10.0.0/24"],
        mfa=True,
        connected_at=1767225800,
    )
    store.save_tunnel(record, "[Interface]\nPrivateKey = secret")
    assert store.tunnels() == [record]
    assert store.tunnel("dg0") == record
    assert _mode(store.tunnel_config_path("dg0")) == 0o600
    assert _mode(store.tunnel_record_path("dg0")) == 0o600
    assert _mode(store.tunnels_dir) == 0o700
    store.forget_tunnel("dg0")
    assert store.tunnels() == []
    assert not store.tunnel_config_path("dg0").exists()
    store.forget_tunnel("dg0")  # nothing left to forget is fine


@pytest.mark.parametrize("bad", ["", "a" * 16, "dg 0", "../x"])
def test_interface_names_are_checked(bad):
    with pytest.raises(StateError, match="--ifname"):
        client_state.check_ifname(bad)


def test_location_lookup_by_name_case_and_id():
    acme = _instance("A", [_cfg(1, "HQ"), _cfg(2, "hq-lab"), _cfg(3, "Lab")])
    other = _instance("B", [_cfg(1, "Branch"), _cfg(7, "lab")], instance_id="other", name="Other")
    pool = [Location(i, c) for i in (acme, other) for c in i.configs]

    def names(query: str) -> list[tuple[str, str]]:
        return [(loc.instance.info.name, loc.config.network_name) for loc in find_in(pool, query)]

    assert names("HQ") == [("Acme", "HQ")]
    assert names("hq") == [("Acme", "HQ")]
    # An exact match wins over case-insensitive ones.
    assert names("Lab") == [("Acme", "Lab")]
    assert names("LAB") == [("Acme", "Lab"), ("Other", "lab")]
    assert names("3") == [("Acme", "Lab")]
    assert names("1") == [("Acme", "HQ"), ("Other", "Branch")]
    assert names("nope") == []


def test_find_locations_limited_to_an_instance(tmp_path):
    store = StateStore(tmp_path)
    store.save_instance(_instance("A", [_cfg(1, "HQ")]))
    store.save_instance(_instance("B", [_cfg(1, "HQ")], instance_id="other", name="Other"))
    assert len(store.find_locations("HQ")) == 2
    [only] = store.find_locations("HQ", instance="Other")
    assert only.instance.id == "other"
    [only] = store.find_locations("1", instance="0b6f0c3e-5d0a-4a53-9d0e-2f6f1b7c9a10")
    assert only.instance.info.name == "Acme"


def test_default_state_dir_depends_on_the_user(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert client_state.default_state_dir() == client_state.ROOT_STATE_DIR
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert client_state.default_state_dir().name == "defguard-client"
    assert client_state.default_state_dir() != client_state.ROOT_STATE_DIR
