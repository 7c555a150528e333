"""The location's firewall as an nftables table of its own, applied in one atomic batch.

`render_ruleset` is pure: it turns the `FirewallConfig` that Core compiled into
the `nft -j` JSON commands, so its structure is unit-tested without nftables.
`apply` pipes that JSON into one `nft -j -f -` run, which nftables executes as a
single transaction: the table's rules are flushed and rebuilt inside it, so
there is never a moment without rules and a rejected batch changes nothing.

Layout, in table `inet defguard_<ifname>` (one per interface, so several
Gateways on one host and the host's own tables never collide):

    chain forward { type filter hook forward priority filter; policy accept;
        ct state established,related accept
        iifname <ifname> <rule 1> accept|drop
        ...
        iifname <ifname> <default policy>
    }

The location's default policy is the chain's final rule for traffic from the
VPN interface rather than the chain's own policy: a `policy drop` on a forward
hook would also drop everything else the host forwards (containers, other
interfaces), which the location's ACL has no say over. Traffic that comes from
the VPN sees exactly the location's policy.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Iterable, Sequence
from typing import Any

from defguard.logs import get_logger
from defguard.proto import gateway_pb2

log = get_logger(__name__)

FAMILY = "inet"
CHAIN = "forward"
TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58
PORT_PROTOCOLS = (TCP, UDP)
COMMENT_MAX_BYTES = 128
NFT_TIMEOUT = 60.0

Json = dict[str, Any]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class FirewallError(RuntimeError):
    pass


def table_name(ifname: str) -> str:
    return f"defguard_{ifname}"


def _table(ifname: str) -> Json:
    return {"family": FAMILY, "name": table_name(ifname)}


def _match(left: Json, right: object, op: str = "==") -> Json:
    return {"match": {"op": op, "left": left, "right": right}}


def _set_or_single(elements: list[object]) -> object:
    return elements[0] if len(elements) == 1 else {"set": elements}


def _merge(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted ranges with overlapping and adjacent ones joined: nftables rejects overlapping intervals."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _address_elements(
    ranges: Sequence[gateway_pb2.AddressRange], version: int, rule_id: int
) -> list[object]:
    parsed: list[tuple[int, int]] = []
    for item in ranges:
        try:
            start = ipaddress.ip_address(item.start)
            end = ipaddress.ip_address(item.end or item.start)
        except ValueError as exc:
            raise ValueError(f"rule {rule_id}: {exc}") from exc
        if start.version != version or end.version != version:
            raise ValueError(f"rule {rule_id}: address {item.start} is not IPv{version}")
        if int(end) < int(start):
            raise ValueError(f"rule {rule_id}: range {item.start}-{item.end} is reversed")
        parsed.append((int(start), int(end)))
    cls: type[IPAddress] = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    elements: list[object] = []
    for start_int, end_int in _merge(parsed):
        start, end = cls(start_int), cls(end_int)
        if start == end:
            elements.append(str(start))
            continue
        networks = list(ipaddress.summarize_address_range(start, end))  # type: ignore[arg-type]
        if len(networks) == 1:
            net = networks[0]
            elements.append({"prefix": {"addr": str(net.network_address), "len": net.prefixlen}})
        else:
            elements.append({"range": [str(start), str(end)]})
    return elements


def _port_elements(ports: Sequence[gateway_pb2.PortRange], rule_id: int) -> list[object]:
    parsed = []
    for item in ports:
        end = item.end or item.start
        if not 0 <= item.start <= end <= 65535:
            raise ValueError(f"rule {rule_id}: bad port range {item.start}-{item.end}")
        parsed.append((item.start, end))
    return [start if start == end else {"range": [start, end]} for start, end in _merge(parsed)]


def _verdict(value: gateway_pb2.FirewallVerdict.ValueType) -> Json:
    if value == gateway_pb2.FIREWALL_VERDICT_ALLOW:
        return {"accept": None}
    if value == gateway_pb2.FIREWALL_VERDICT_DENY:
        return {"drop": None}
    raise ValueError(f"unspecified firewall verdict ({gateway_pb2.FirewallVerdict.Name(value)})")


def _comment(text: str) -> str:
    raw = text.encode()[:COMMENT_MAX_BYTES]
    return raw.decode(errors="ignore")


def render_rule(ifname: str, rule: gateway_pb2.FirewallRule) -> list[list[Json]]:
    """The expression lists of the nft rules for one compiled rule (one, or two when mixed).

    Ports only exist for TCP and UDP: a rule with ports and protocols that
    include others (ICMP) becomes one nft rule for TCP/UDP with the ports and
    one for the other protocols without. With ports and no protocols, the ports
    apply to TCP and UDP. In an IPv6 rule, ICMP means ICMPv6.
    """
    if rule.ip_version not in (4, 6):
        raise ValueError(f"rule {rule.id}: ip_version must be 4 or 6, not {rule.ip_version}")
    proto = "ip" if rule.ip_version == 4 else "ip6"
    head: list[Json] = [_match({"meta": {"key": "iifname"}}, ifname)]
    sources = _address_elements(rule.sources, rule.ip_version, rule.id)
    destinations = _address_elements(rule.destinations, rule.ip_version, rule.id)
    if sources:
        head.append(
            _match({"payload": {"protocol": proto, "field": "saddr"}}, _set_or_single(sources))
        )
    if destinations:
        head.append(
            _match({"payload": {"protocol": proto, "field": "daddr"}}, _set_or_single(destinations))
        )
    if not sources and not destinations:
        head.append(
            _match({"meta": {"key": "nfproto"}}, "ipv4" if rule.ip_version == 4 else "ipv6")
        )

    protocols = list(dict.fromkeys(rule.protocols))
    if rule.ip_version == 6:
        protocols = [ICMPV6 if p == ICMP else p for p in protocols]
    ports = _port_elements(rule.ports, rule.id)
    verdict = _verdict(rule.verdict)

    def l4(protos: list[int]) -> Json:
        return _match({"meta": {"key": "l4proto"}}, _set_or_single(list(protos)))

    if not ports:
        body = [l4(protocols)] if protocols else []
        return [[*head, *body, verdict]]
    result: list[list[Json]] = []
    with_ports = (
        [p for p in protocols if p in PORT_PROTOCOLS] if protocols else list(PORT_PROTOCOLS)
    )
    others = [p for p in protocols if p not in PORT_PROTOCOLS]
    if with_ports:
        dport = _match({"payload": {"protocol": "th", "field": "dport"}}, _set_or_single(ports))
        result.append([*head, l4(with_ports), dport, verdict])
    if others:
        result.append([*head, l4(others), verdict])
    return result


def render_ruleset(ifname: str, firewall: gateway_pb2.FirewallConfig) -> Json:
    """The whole table as one `nft -j` batch: create if missing, flush, rebuild."""
    table = _table(ifname)
    chain_ref = {"family": FAMILY, "table": table["name"], "chain": CHAIN}

    def rule(exprs: list[Json], comment: str = "") -> Json:
        body: Json = {**chain_ref, "expr": exprs}
        if comment:
            body["comment"] = _comment(comment)
        return {"add": {"rule": body}}

    commands: list[Json] = [
        {"add": {"table": table}},
        {"flush": {"table": table}},
        {
            "add": {
                "chain": {
                    "family": FAMILY,
                    "table": table["name"],
                    "name": CHAIN,
                    "type": "filter",
                    "hook": "forward",
                    "prio": 0,
                    "policy": "accept",
                }
            }
        },
        rule(
            [
                _match({"ct": {"key": "state"}}, ["established", "related"], op="in"),
                {"accept": None},
            ]
        ),
    ]
    for item in firewall.rules:
        for exprs in render_rule(ifname, item):
            commands.append(rule(exprs, item.comment))
    commands.append(
        rule(
            [_match({"meta": {"key": "iifname"}}, ifname), _verdict(firewall.default_policy)],
            "default policy",
        )
    )
    return {"nftables": commands}


def render_removal(ifname: str) -> Json:
    """Delete the table whether or not it exists: `add` first makes `delete` always valid."""
    table = _table(ifname)
    return {"nftables": [{"add": {"table": table}}, {"delete": {"table": table}}]}


async def run_nft(batch: Json) -> None:
    proc = await asyncio.create_subprocess_exec(
        "nft",
        "-j",
        "-f",
        "-",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(json.dumps(batch).encode()), NFT_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise FirewallError("nft timed out") from None
    if proc.returncode != 0:
        raise FirewallError(f"nft rejected the batch: {err.decode(errors='replace').strip()}")


class Firewall:
    """The firewall of one interface, or nothing at all when management is disabled."""

    def __init__(self, ifname: str, *, enabled: bool = True) -> None:
        self.ifname = ifname
        self.enabled = enabled

    async def apply(self, firewall: gateway_pb2.FirewallConfig | None) -> None:
        """Install `firewall`, or remove the table when the location has no firewall."""
        if not self.enabled:
            return
        if firewall is None:
            await run_nft(render_removal(self.ifname))
            log.info("firewall removed", table=table_name(self.ifname))
            return
        await run_nft(render_ruleset(self.ifname, firewall))
        log.info(
            "firewall applied",
            table=table_name(self.ifname),
            rules=len(firewall.rules),
            default=gateway_pb2.FirewallVerdict.Name(firewall.default_policy),
        )

    async def remove(self) -> None:
        if self.enabled:
            await run_nft(render_removal(self.ifname))
