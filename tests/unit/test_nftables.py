"""Rendering a location's firewall as `nft -j` JSON, and real nftables accepting it.

The structure tests are pure. The last tests feed the rendered batches to the
real `nft` inside a throwaway network namespace and read the table back: the
batch must be accepted, re-applying must replace (not append), removal must
work whether or not the table exists, and the rules must read back in order.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
from typing import Any

import pytest

from defguard.gateway.nftables import (
    Firewall,
    render_removal,
    render_rule,
    render_ruleset,
    table_name,
)
from defguard.proto import gateway_pb2 as pb
from tests.conftest import require_tools
from tests.wgtools import namespace, ns_run

ALLOW = pb.FIREWALL_VERDICT_ALLOW
DENY = pb.FIREWALL_VERDICT_DENY
IIF = {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "wg0"}}


def rng(start: str, end: str | None = None) -> pb.AddressRange:
    return pb.AddressRange(start=start, end=end or start)


def ports(*items: tuple[int, int]) -> list[pb.PortRange]:
    return [pb.PortRange(start=a, end=b) for a, b in items]


def saddr(right: object, proto: str = "ip") -> dict[str, Any]:
    return {
        "match": {
            "op": "==",
            "left": {"payload": {"protocol": proto, "field": "saddr"}},
            "right": right,
        }
    }


def daddr(right: object, proto: str = "ip") -> dict[str, Any]:
    return {
        "match": {
            "op": "==",
            "left": {"payload": {"protocol": proto, "field": "daddr"}},
            "right": right,
        }
    }


def l4(right: object) -> dict[str, Any]:
    return {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": right}}


def dport(right: object) -> dict[str, Any]:
    return {
        "match": {
            "op": "==",
            "left": {"payload": {"protocol": "th", "field": "dport"}},
            "right": right,
        }
    }


def nfproto(value: str) -> dict[str, Any]:
    return {"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": value}}


ACCEPT = {"accept": None}
DROP = {"drop": None}


def test_ruleset_layout():
    firewall = pb.FirewallConfig(
        default_policy=DENY,
        rules=[
            pb.FirewallRule(id=1, verdict=ALLOW, ip_version=4, comment="first"),
            pb.FirewallRule(id=2, verdict=DENY, ip_version=6, comment="second"),
        ],
    )
    cmds = render_ruleset("wg0", firewall)["nftables"]
    table = {"family": "inet", "name": "defguard_wg0"}
    assert cmds[0] == {"add": {"table": table}}
    assert cmds[1] == {"flush": {"table": table}}
    chain = cmds[2]["add"]["chain"]
    assert chain["hook"] == "forward" and chain["type"] == "filter" and chain["policy"] == "accept"
    rules = [c["add"]["rule"] for c in cmds[3:]]
    assert all(r["table"] == "defguard_wg0" and r["chain"] == "forward" for r in rules)
    assert rules[0]["expr"] == [
        {
            "match": {
                "op": "in",
                "left": {"ct": {"key": "state"}},
                "right": ["established", "related"],
            }
        },
        ACCEPT,
    ]
    assert rules[1] == {**rules[1], "comment": "first", "expr": [IIF, nfproto("ipv4"), ACCEPT]}
    assert rules[2]["expr"] == [IIF, nfproto("ipv6"), DROP]
    assert rules[3]["expr"] == [IIF, DROP] and rules[3]["comment"] == "default policy"


def test_default_allow_ends_with_an_accept_for_the_interface():
    cmds = render_ruleset("wg0", pb.FirewallConfig(default_policy=ALLOW))["nftables"]
    assert cmds[-1]["add"]["rule"]["expr"] == [IIF, ACCEPT]
    assert len(cmds) == 5


def test_addresses_become_single_values_prefixes_and_ranges_merged():
    rule = pb.FirewallRule(
        id=3,
        verdict=ALLOW,
        ip_version=4,
        sources=[
            rng("10.0.0.1"),
            rng("10.1.0.0", "10.1.255.255"),
            rng("10.2.0.5", "10.2.0.9"),
            rng("10.2.0.8", "10.2.0.20"),
            rng("10.2.0.21", "10.2.0.30"),
        ],
        destinations=[rng("192.168.1.1")],
    )
    (exprs,) = render_rule("wg0", rule)
    assert exprs == [
        IIF,
        saddr(
            {
                "set": [
                    "10.0.0.1",
                    {"prefix": {"addr": "10.1.0.0", "len": 16}},
                    {"range": ["10.2.0.5", "10.2.0.30"]},
                ]
            }
        ),
        daddr("192.168.1.1"),
        ACCEPT,
    ]


def test_ipv6_rule_and_icmp_means_icmpv6():
    rule = pb.FirewallRule(
        id=4,
        verdict=DENY,
        ip_version=6,
        destinations=[rng("fd00::", "fd00::ffff")],
        protocols=[1],
    )
    (exprs,) = render_rule("wg0", rule)
    assert exprs == [IIF, daddr({"prefix": {"addr": "fd00::", "len": 112}}, "ip6"), l4(58), DROP]


def test_ports_apply_to_tcp_and_udp_and_split_other_protocols():
    rule = pb.FirewallRule(
        id=5,
        verdict=ALLOW,
        ip_version=4,
        destinations=[rng("10.9.0.1")],
        ports=ports((443, 443), (8000, 8080), (8080, 8090)),
        protocols=[6, 1],
    )
    with_ports, icmp = render_rule("wg0", rule)
    assert with_ports == [
        IIF,
        daddr("10.9.0.1"),
        l4(6),
        dport({"set": [443, {"range": [8000, 8090]}]}),
        ACCEPT,
    ]
    assert icmp == [IIF, daddr("10.9.0.1"), l4(1), ACCEPT]

    (any_proto,) = render_rule(
        "wg0", pb.FirewallRule(id=6, verdict=ALLOW, ip_version=4, ports=ports((22, 22)))
    )
    assert any_proto == [IIF, nfproto("ipv4"), l4({"set": [6, 17]}), dport(22), ACCEPT]

    (only_icmp,) = render_rule(
        "wg0",
        pb.FirewallRule(id=7, verdict=ALLOW, ip_version=4, ports=ports((22, 22)), protocols=[1]),
    )
    assert only_icmp == [IIF, nfproto("ipv4"), l4(1), ACCEPT]


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (pb.FirewallRule(id=1, verdict=ALLOW, ip_version=5), "ip_version"),
        (pb.FirewallRule(id=1, verdict=ALLOW, ip_version=4, sources=[rng("fd00::1")]), "not IPv4"),
        (
            pb.FirewallRule(
                id=1, verdict=ALLOW, ip_version=4, sources=[rng("10.0.0.9", "10.0.0.1")]
            ),
            "reversed",
        ),
        (pb.FirewallRule(id=1, verdict=ALLOW, ip_version=4, sources=[rng("nope")]), "rule 1"),
        (pb.FirewallRule(id=1, verdict=ALLOW, ip_version=4, ports=ports((90, 80))), "port range"),
        (pb.FirewallRule(id=1, ip_version=4), "unspecified"),
    ],
)
def test_bad_rules_are_rejected_before_nft(rule: pb.FirewallRule, message: str):
    with pytest.raises(ValueError, match=message):
        render_rule("wg0", rule)


def test_long_comments_are_cut_to_what_nft_takes():
    rule = pb.FirewallRule(id=1, verdict=ALLOW, ip_version=4, comment="ż" * 100)
    cmds = render_ruleset("wg0", pb.FirewallConfig(default_policy=ALLOW, rules=[rule]))
    comment = cmds["nftables"][4]["add"]["rule"]["comment"]
    assert len(comment.encode()) <= 128 and comment == "ż" * 64


def test_removal_is_valid_whether_or_not_the_table_exists():
    table = {"family": "inet", "name": table_name("wg0")}
    assert render_removal("wg0") == {
        "nftables": [{"add": {"table": table}}, {"delete": {"table": table}}]
    }


async def test_disabled_firewall_management_never_runs_nft(monkeypatch: pytest.MonkeyPatch):
    async def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("nft must not run")

    monkeypatch.setattr(asyncio, "create_subprocess_exec", forbidden)
    firewall = Firewall("wg0", enabled=False)
    await firewall.apply(pb.FirewallConfig(default_policy=DENY))
    await firewall.apply(None)
    await firewall.remove()


# ---------------------------------------------------------------- real nftables


def _normalise(exprs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """nft lists protocols by name and folds `meta nfproto` into what implies it; undo both."""

    def proto(value: object) -> object:
        if isinstance(value, str):
            return socket.getprotobyname(value)
        if isinstance(value, dict) and "set" in value:
            return {"set": [proto(v) for v in value["set"]]}
        return value

    out = []
    for expr in exprs:
        match = expr.get("match")
        if match and match["left"] == {"meta": {"key": "nfproto"}}:
            continue
        if match and match["left"] == {"meta": {"key": "l4proto"}}:
            expr = {"match": {**match, "right": proto(match["right"])}}
        out.append(expr)
    return out


def _listed_rules(ns: str, ifname: str) -> list[tuple[list[dict[str, Any]], str]]:
    listing = json.loads(ns_run(ns, "nft", "-j", "list", "table", "inet", table_name(ifname)))
    return [
        (_normalise(item["rule"]["expr"]), item["rule"].get("comment", ""))
        for item in listing["nftables"]
        if "rule" in item
    ]


def _apply(ns: str, batch: dict[str, Any]) -> None:
    ns_run(ns, "nft", "-j", "-f", "-", input=json.dumps(batch))


@pytest.mark.e2e
def test_real_nft_accepts_replaces_and_removes_the_table():
    require_tools("nft", "ip", root=True)
    rules = [
        pb.FirewallRule(
            id=1,
            verdict=ALLOW,
            ip_version=4,
            sources=[rng("10.0.0.2"), rng("10.0.0.5", "10.0.0.9")],
            destinations=[rng("192.168.0.0", "192.168.0.255")],
            ports=ports((22, 22), (8000, 8080)),
            protocols=[6, 17, 1],
            comment="ALLOW admins",
        ),
        pb.FirewallRule(
            id=2,
            verdict=DENY,
            ip_version=6,
            destinations=[rng("fd00::1"), rng("fd00::100", "fd00::1ff")],
            protocols=[1],
            comment="DENY v6 ping",
        ),
        pb.FirewallRule(id=3, verdict=DENY, ip_version=4, protocols=[17], comment="no udp"),
    ]
    firewall = pb.FirewallConfig(default_policy=DENY, rules=rules)
    with namespace() as ns:
        batch = render_ruleset("wgnft0", firewall)
        _apply(ns, batch)
        expected = [
            (_normalise(cmd["add"]["rule"]["expr"]), cmd["add"]["rule"].get("comment", ""))
            for cmd in batch["nftables"]
            if "rule" in cmd.get("add", {})
        ]
        assert _listed_rules(ns, "wgnft0") == expected
        assert len(expected) == 1 + 4 + 1

        # Applying again replaces the rules instead of appending to them.
        smaller = pb.FirewallConfig(default_policy=ALLOW, rules=rules[2:])
        _apply(ns, render_ruleset("wgnft0", smaller))
        listed = _listed_rules(ns, "wgnft0")
        assert [comment for _, comment in listed] == ["", "no udp", "default policy"]
        chain = json.loads(
            ns_run(ns, "nft", "-j", "list", "chain", "inet", "defguard_wgnft0", "forward")
        )
        (info,) = [item["chain"] for item in chain["nftables"] if "chain" in item]
        assert (info["hook"], info["policy"]) == ("forward", "accept")

        # A rejected batch leaves the previous rules in place.
        broken = render_ruleset("wgnft0", firewall)
        broken["nftables"][4]["add"]["rule"]["expr"][1]["match"]["right"] = "10.0.0.300"
        result = subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "-j", "-f", "-"],
            input=json.dumps(broken),
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode != 0
        assert _listed_rules(ns, "wgnft0") == listed

        # Other interfaces' tables are separate.
        _apply(ns, render_ruleset("wgnft1", firewall))
        _apply(ns, render_removal("wgnft0"))
        _apply(ns, render_removal("wgnft0"))
        tables = ns_run(ns, "nft", "list", "tables")
        assert "defguard_wgnft0" not in tables and "defguard_wgnft1" in tables
