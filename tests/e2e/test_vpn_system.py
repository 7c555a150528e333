"""The whole data path for real: Core (a `defguard core` process), a Gateway (`defguard gateway`
in its own namespace, userspace WireGuard and nftables), a client namespace running
`wireguard-go` with the configuration Core renders for its device, and a host behind the
gateway.

    client ns ──veth── gateway ns ──veth── host ns
                          │
                        veth (gRPC, Core → Gateway)
                          │
                     test namespace: Core + PostgreSQL
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.api_bodies import location_body
from tests.conftest import require_tools
from tests.processes import CoreProcess, wait_for
from tests.wgtools import (
    GRPC_PORT,
    gateway_in_namespace,
    keypair,
    namespace,
    ns_run,
    ping,
    subnet_octets,
    veth_pair,
    wg_dump,
    wireguard_client,
)


@contextlib.contextmanager
def routed_host(gw_ns: str, vpn_subnet: str) -> Iterator[tuple[str, str]]:
    """A host namespace behind the gateway that routes the VPN subnet back through it."""
    second, third = subnet_octets()
    gw_side, host_side = f"10.{second}.{third}.1", f"10.{second}.{third}.2"
    with namespace() as host_ns, veth_pair(gw_ns, host_ns, f"{gw_side}/30", f"{host_side}/30"):
        ns_run(gw_ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        ns_run(host_ns, "ip", "route", "add", vpn_subnet, "via", gw_side)
        yield host_ns, host_side


def _gateway_peers(gw) -> dict[str, list[str]]:
    try:
        return wg_dump(gw.ns, gw.ifname)[1]
    except subprocess.CalledProcessError:
        return {}


@pytest.mark.e2e
def test_vpn_data_path_acl_partition_and_core_loss(fresh_db_url, tmp_path):
    require_tools("wireguard-go", "wg", "ip", "nft", root=True)
    core = CoreProcess(fresh_db_url, tmp_path / "core.log")
    with gateway_in_namespace(tmp_path) as gw, routed_host(gw.ns, "10.99.0.0/24") as (_, host_ip):
        second, third = subnet_octets()
        gw_public, client_public = f"10.{second}.{third}.1", f"10.{second}.{third}.2"
        with (
            namespace() as client_ns,
            veth_pair(gw.ns, client_ns, f"{gw_public}/30", f"{client_public}/30"),
        ):
            gw.start()
            core.start()
            try:
                http = core.client()
                r = http.post(
                    "/network",
                    json=location_body(
                        name="office",
                        address="10.99.0.1/24",
                        endpoint=gw_public,
                        allowed_ips=f"10.99.0.0/24,{host_ip}/32",
                        dns=None,
                        acl_enabled=True,
                        acl_default_allow=True,
                    ),
                )
                assert r.status_code == 201, r.text
                location = r.json()
                r = http.post(
                    f"/network/{location['id']}/gateways/adopt",
                    json={"name": "gw1", "ip_or_domain": gw.address, "grpc_port": GRPC_PORT},
                )
                assert r.status_code == 201, r.text
                gateway_id = r.json()["id"]
                wait_for(lambda: _gateway_connected(http, gateway_id), 30, "the gateway link")

                r = http.post(
                    "/user",
                    json={
                        "username": "alice",
                        "first_name": "Alice",
                        "last_name": "A",
                        "email": "alice@example.com",
                        "password": "Al1ce!Passw0rd",
                    },
                )
                assert r.status_code == 201, r.text
                private, public = keypair()
                r = http.post("/device/alice", json={"name": "laptop", "wireguard_pubkey": public})
                assert r.status_code == 201, r.text
                device_id = r.json()["device"]["id"]
                config = r.json()["configs"][0]
                assert config["address"] == ["10.99.0.2"]
                wait_for(
                    lambda: public in _gateway_peers(gw), 10, "the device's peer on the gateway"
                )

                with wireguard_client(
                    client_ns,
                    private_key=private,
                    peer_public=config["pubkey"],
                    endpoint=config["endpoint"],
                    address="10.99.0.2/24",
                    allowed_ips=",".join(config["allowed_ips"]),
                ) as client_if:
                    # What wg-quick does for each AllowedIPs entry outside the address.
                    ns_run(client_ns, "ip", "route", "add", f"{host_ip}/32", "dev", client_if)
                    assert ping(client_ns, "10.99.0.1", count=3) == 3, gw.log()
                    assert ping(client_ns, host_ip, count=3) == 3

                    # An applied ACL rule denies the host; the gateway stays reachable.
                    r = http.post(
                        "/acl/rule",
                        json=_rule(f"{host_ip}", allowed_users=[1]),
                    )
                    assert r.status_code == 201, r.text
                    rule_id = r.json()["id"]
                    assert http.put("/acl/rule/apply", json={"rules": [rule_id]}).status_code == 200
                    wait_for(
                        lambda: ping(client_ns, host_ip, count=1, wait=1.0) == 0,
                        10,
                        "the deny rule",
                    )
                    assert ping(client_ns, "10.99.0.1", count=3) == 3

                    # Cut the gateway off from Core, change the policy, reconnect: applied.
                    ns_run(gw.ns, "ip", "link", "set", _core_facing_link(gw.ns, gw.address), "down")
                    assert http.delete(f"/acl/rule/{rule_id}").status_code == 200
                    pending = http.get("/acl/rule").json()["data"]
                    deleted = [x["id"] for x in pending if x["state"] == "Deleted"]
                    assert http.put("/acl/rule/apply", json={"rules": deleted}).status_code == 200
                    time.sleep(2)
                    assert ping(client_ns, host_ip, count=1, wait=1.0) == 0, (
                        "a cut-off gateway changed"
                    )
                    ns_run(gw.ns, "ip", "link", "set", _core_facing_link(gw.ns, gw.address), "up")
                    wait_for(
                        lambda: ping(client_ns, host_ip, count=1, wait=1.0) == 1,
                        20,
                        "the change after reconnecting",
                    )

                    # With Core gone the tunnel keeps working.
                    core.stop(signal.SIGKILL)
                    time.sleep(1)
                    assert ping(client_ns, host_ip, count=3) == 3
                    assert ping(client_ns, "10.99.0.1", count=3) == 3
                    core.start()
                    http = core.client()
                    wait_for(
                        lambda: _gateway_connected(http, gateway_id),
                        30,
                        "the gateway link after restart",
                    )

                    # A removed device loses its tunnel.
                    assert http.delete(f"/device/{device_id}").status_code == 200
                    wait_for(lambda: public not in _gateway_peers(gw), 10, "the peer's removal")
                    assert ping(client_ns, "10.99.0.1", count=2, wait=1.0) == 0
            finally:
                core.stop()
                print(core.log.read_text()[-3000:])
                print(gw.log())


def _rule(addresses: str, *, allowed_users: list[int]) -> dict:
    return {
        "name": "no-host",
        "all_locations": True,
        "locations": [],
        "expires": None,
        "enabled": True,
        "allow_all_users": False,
        "deny_all_users": False,
        "allow_all_groups": False,
        "deny_all_groups": False,
        "allow_all_network_devices": False,
        "deny_all_network_devices": False,
        "allowed_users": allowed_users,
        "denied_users": [],
        "allowed_groups": [],
        "denied_groups": [],
        "allowed_network_devices": [],
        "denied_network_devices": [],
        "use_manual_destination_settings": True,
        "addresses": addresses,
        "ports": "",
        "protocols": [],
        "any_address": False,
        "any_port": True,
        "any_protocol": True,
        "aliases": [],
        "destinations": [],
    }


def _gateway_connected(http: httpx.Client, gateway_id: int) -> bool:
    r = http.get(f"/gateway/{gateway_id}")
    return (
        r.status_code == 200
        and bool(r.json().get("connected_at"))
        and (
            r.json().get("disconnected_at") is None
            or r.json()["connected_at"] >= r.json()["disconnected_at"]
        )
    )


def _core_facing_link(gw_ns: str, gw_address: str) -> str:
    for line in ns_run(gw_ns, "ip", "-o", "-4", "addr", "show").splitlines():
        fields = line.split()
        if f"{gw_address}/" in line:
            return fields[1].split("@")[0]
    raise AssertionError("no core-facing link")
