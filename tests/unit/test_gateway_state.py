"""The Gateway's decisions on state messages, the plans they produce, and the device transactions.

Pure: no WireGuard, no network. The property test plays several Cores that
deliver the same history of revisions with duplicates, reordering and gaps,
and checks that the Gateway converges on the last revision while every plan,
replayed on a model device, does exactly what the plan's result says.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from defguard.gateway.state import (
    Apply,
    GatewayState,
    Ignore,
    InterfaceSpec,
    InvalidMessage,
    PeerSpec,
    Plan,
    RequestFullState,
    decide_full_state,
    decide_update,
    diff_interface,
    unknown_revision,
)
from defguard.gateway.stats import StatsDispatcher, build_batch
from defguard.gateway.wireguard import (
    PeerStats,
    key_to_hex,
    parse_uapi_get,
    parse_wg_dump,
    render_addconf,
    render_uapi_set,
)
from defguard.proto import gateway_pb2
from defguard.wireguard.keys import generate_keypair

KEYS = [generate_keypair().public for _ in range(12)]
PRIVATE = generate_keypair().private
OTHER_PRIVATE = generate_keypair().private
LOCATION = 4


def iface(**changes: object) -> gateway_pb2.InterfaceConfig:
    fields: dict[str, object] = {
        "private_key": PRIVATE,
        "listen_port": 51820,
        "addresses": ["10.0.0.1/24"],
        "mtu": 0,
        "fwmark": 0,
    }
    fields.update(changes)
    return gateway_pb2.InterfaceConfig(**fields)  # type: ignore[arg-type]


def pc(i: int, *ips: str, psk: str = "", keepalive: int = 0) -> gateway_pb2.PeerConfig:
    return gateway_pb2.PeerConfig(
        public_key=KEYS[i],
        allowed_ips=list(ips) or [f"10.0.0.{i + 10}/32"],
        preshared_key=psk,
        keepalive_interval=keepalive,
    )


def full(
    revision: int,
    *peers: gateway_pb2.PeerConfig,
    interface: gateway_pb2.InterfaceConfig | None = None,
    firewall: gateway_pb2.FirewallConfig | None = None,
    location: int = LOCATION,
) -> gateway_pb2.LocationState:
    return gateway_pb2.LocationState(
        location_id=location,
        location_name="office",
        revision=revision,
        interface=interface or iface(),
        peers=list(peers),
        firewall=firewall,
    )


def update(
    base: int,
    revision: int,
    *,
    upsert: tuple[gateway_pb2.PeerConfig, ...] = (),
    remove: tuple[int, ...] = (),
    interface: gateway_pb2.InterfaceConfig | None = None,
    firewall: gateway_pb2.FirewallConfig | None = None,
    location: int = LOCATION,
) -> gateway_pb2.LocationUpdate:
    return gateway_pb2.LocationUpdate(
        location_id=location,
        base_revision=base,
        revision=revision,
        interface=interface or iface(),
        upsert_peers=list(upsert),
        remove_peers=[KEYS[i] for i in remove],
        firewall=firewall,
    )


def applied(
    state: GatewayState, msg: gateway_pb2.LocationState | gateway_pb2.LocationUpdate
) -> Plan:
    decision = (
        decide_full_state(state, msg)
        if isinstance(msg, gateway_pb2.LocationState)
        else decide_update(state, msg)
    )
    assert isinstance(decision, Apply), decision
    return decision.plan


DENY = gateway_pb2.FirewallConfig(default_policy=gateway_pb2.FIREWALL_VERDICT_DENY)
ALLOW = gateway_pb2.FirewallConfig(default_policy=gateway_pb2.FIREWALL_VERDICT_ALLOW)


# ---------------------------------------------------------------- full state


def test_first_full_state_creates_everything():
    plan = applied(GatewayState(), full(3, pc(0), pc(1), firewall=DENY))
    assert [p.public_key for p in plan.add_peers] == [KEYS[0], KEYS[1]]
    assert not plan.change_peers and not plan.remove_peers
    assert plan.interface.changed_fields == {"private_key", "listen_port", "addresses"}
    assert plan.interface.add_addresses == ("10.0.0.1/24",)
    assert plan.firewall_changed and plan.firewall == DENY
    assert plan.result.revision == 3 and plan.result.location_id == LOCATION
    assert set(plan.result.peers) == {KEYS[0], KEYS[1]}


def test_full_state_is_applied_as_a_diff():
    state = applied(GatewayState(), full(3, pc(0), pc(1), pc(2))).result
    plan = applied(state, full(4, pc(0), pc(1, "10.0.0.99/32"), pc(3)))
    assert [p.public_key for p in plan.add_peers] == [KEYS[3]]
    assert [(c.old.allowed_ips, c.new.allowed_ips) for c in plan.change_peers] == [
        (("10.0.0.11/32",), ("10.0.0.99/32",))
    ]
    assert plan.remove_peers == (KEYS[2],)
    assert plan.interface.is_empty and not plan.firewall_changed
    assert set(plan.result.peers) == {KEYS[0], KEYS[1], KEYS[3]}


def test_full_state_at_same_or_older_revision_is_ignored_even_with_other_content():
    state = applied(GatewayState(), full(5, pc(0))).result
    assert isinstance(decide_full_state(state, full(5, pc(0), pc(1))), Ignore)
    assert isinstance(decide_full_state(state, full(4, pc(1))), Ignore)
    assert isinstance(decide_full_state(state, full(6, pc(0))), Apply)


def test_identical_newer_full_state_is_a_noop_plan():
    state = applied(GatewayState(), full(5, pc(0), pc(1), firewall=ALLOW)).result
    plan = applied(state, full(9, pc(1), pc(0), firewall=ALLOW))
    assert plan.is_noop and plan.result.revision == 9


def test_full_state_for_another_location_is_applied_whatever_its_revision():
    state = applied(GatewayState(), full(50, pc(0))).result
    plan = applied(state, full(2, pc(1), location=LOCATION + 1))
    assert plan.remove_peers == (KEYS[0],) and plan.result.location_id == LOCATION + 1
    assert plan.result.revision == 2


def test_unknown_revision_applies_any_full_state_and_reapplies_firewall():
    state = applied(GatewayState(), full(5, pc(0), firewall=DENY)).result
    forgotten = unknown_revision(state)
    plan = applied(forgotten, full(5, pc(0), firewall=DENY))
    assert not plan.peers_changed and plan.firewall_changed
    assert isinstance(decide_update(forgotten, update(5, 6)), RequestFullState)


def test_adopted_interface_needs_no_change_for_matching_state():
    adopted = GatewayState(
        interface=InterfaceSpec(PRIVATE, 51820, ("10.0.0.1/24",), 1420, 0),
        peers={KEYS[0]: PeerSpec(KEYS[0], ("10.0.0.10/32",))},
    )
    plan = applied(adopted, full(8, pc(0)))
    assert plan.is_noop is False  # the firewall state is unknown after adoption
    assert plan.interface.is_empty and not plan.peers_changed
    assert plan.result.interface is not None and plan.result.interface.mtu == 1420


# ---------------------------------------------------------------- updates


def test_update_from_current_revision_is_applied():
    state = applied(GatewayState(), full(5, pc(0), pc(1))).result
    plan = applied(state, update(5, 6, upsert=(pc(2),), remove=(0,)))
    assert [p.public_key for p in plan.add_peers] == [KEYS[2]]
    assert plan.remove_peers == (KEYS[0],)
    assert not plan.firewall_changed
    assert plan.result.revision == 6 and set(plan.result.peers) == {KEYS[1], KEYS[2]}


def test_duplicate_and_old_updates_are_ignored():
    state = applied(GatewayState(), full(5, pc(0))).result
    state = applied(state, update(5, 6, upsert=(pc(1),))).result
    assert isinstance(decide_update(state, update(5, 6, upsert=(pc(1),))), Ignore)
    assert isinstance(decide_update(state, update(4, 5)), Ignore)
    assert isinstance(decide_update(state, update(2, 6)), Ignore)


def test_gap_or_overlap_asks_for_full_state():
    state = applied(GatewayState(), full(5, pc(0))).result
    gap = decide_update(state, update(7, 8))
    assert isinstance(gap, RequestFullState) and "gap" in gap.reason
    # Starts before the current revision and ends after it: not safely applicable.
    assert isinstance(decide_update(state, update(4, 6)), RequestFullState)


def test_update_without_any_state_or_for_another_location_asks_for_full_state():
    assert isinstance(decide_update(GatewayState(), update(0, 1)), RequestFullState)
    state = applied(GatewayState(), full(5, pc(0))).result
    assert isinstance(decide_update(state, update(5, 6, location=9)), RequestFullState)


def test_update_removing_an_unknown_peer_or_upserting_an_identical_one_changes_nothing():
    state = applied(GatewayState(), full(5, pc(0))).result
    plan = applied(state, update(5, 6, upsert=(pc(0),), remove=(3,)))
    assert plan.is_noop and plan.result.revision == 6


def test_update_firewall_absent_means_unchanged_present_means_replace():
    state = applied(GatewayState(), full(5, pc(0), firewall=DENY)).result
    plan = applied(state, update(5, 6))
    assert not plan.firewall_changed and plan.result.firewall == DENY
    plan = applied(plan.result, update(6, 7, firewall=ALLOW))
    assert plan.firewall_changed and plan.result.firewall == ALLOW
    plan = applied(plan.result, update(7, 8, firewall=ALLOW))
    assert not plan.firewall_changed
    # A full state without a firewall turns it off.
    plan = applied(plan.result, full(9, pc(0)))
    assert plan.firewall_changed and plan.firewall is None and plan.result.firewall is None


def test_update_can_turn_the_firewall_off():
    state = applied(GatewayState(), full(5, pc(0), firewall=DENY)).result
    off = update(5, 6)
    off.firewall_disabled = True
    plan = applied(state, off)
    assert plan.firewall_changed and plan.firewall is None and plan.result.firewall is None


def test_firewall_is_copied_not_aliased():
    firewall = gateway_pb2.FirewallConfig(default_policy=gateway_pb2.FIREWALL_VERDICT_DENY)
    state = applied(GatewayState(), full(1, firewall=firewall)).result
    firewall.default_policy = gateway_pb2.FIREWALL_VERDICT_ALLOW
    assert state.firewall == DENY


# ---------------------------------------------------------------- interface and peer changes


def test_interface_change_detection():
    base = InterfaceSpec(PRIVATE, 51820, ("10.0.0.1/24", "fd00::1/64"), 1420, 0)
    assert diff_interface(base, base).is_empty
    change = diff_interface(
        base, InterfaceSpec(OTHER_PRIVATE, 51821, ("10.0.0.1/24", "10.1.0.1/24"), 1380, 7)
    )
    assert change.changed_fields == {"private_key", "listen_port", "addresses", "mtu", "fwmark"}
    assert change.add_addresses == ("10.1.0.1/24",)
    assert change.remove_addresses == ("fd00::1/64",)
    assert change.private_key == OTHER_PRIVATE and change.fwmark == 7
    # Address order is not a change; 0 MTU and port mean "leave as is".
    same = diff_interface(base, InterfaceSpec(PRIVATE, 0, ("fd00::1/64", "10.0.0.1/24"), 0, 0))
    assert same.is_empty
    # Turning a firewall mark off is a change.
    assert diff_interface(InterfaceSpec(PRIVATE, fwmark=5), InterfaceSpec(PRIVATE)).fwmark == 0


def test_interface_change_in_update():
    state = applied(GatewayState(), full(5, pc(0))).result
    plan = applied(state, update(5, 6, interface=iface(addresses=["10.0.0.1/24", "10.9.0.1/16"])))
    assert plan.interface.changed_fields == {"addresses"}
    assert not plan.peers_changed
    assert plan.result.interface is not None
    assert plan.result.interface.addresses == ("10.0.0.1/24", "10.9.0.1/16")


def test_peer_fields_are_normalised_before_comparing():
    state = applied(GatewayState(), full(5, pc(0, "10.0.0.10/32", "fd00::a/128"))).result
    # Same networks in another order and with host bits: no change.
    plan = applied(state, full(6, pc(0, "fd00::a/128", "10.0.0.10")))
    assert plan.is_noop
    psk = generate_keypair().private
    plan = applied(state, full(7, pc(0, "10.0.0.10/32", "fd00::a/128", psk=psk, keepalive=25)))
    assert len(plan.change_peers) == 1
    assert plan.change_peers[0].new.preshared_key == psk
    assert plan.change_peers[0].new.keepalive_interval == 25


@pytest.mark.parametrize(
    ("msg", "message"),
    [
        (full(1, gateway_pb2.PeerConfig(public_key="nope")), "peer public key"),
        (full(1, pc(0), pc(0)), "listed twice"),
        (full(1, pc(0, "10.0.0.300/32")), "invalid allowed IP"),
        (full(1, interface=iface(private_key="")), "private key"),
        (full(1, interface=iface(addresses=["bad"])), "interface address"),
        (full(1, pc(0, psk="short")), "preshared key"),
        (full(1, location=0), "location id"),
    ],
)
def test_invalid_full_states_are_rejected(msg: gateway_pb2.LocationState, message: str):
    with pytest.raises(InvalidMessage, match=message):
        decide_full_state(GatewayState(), msg)


def test_invalid_updates_are_rejected():
    state = applied(GatewayState(), full(5, pc(0))).result
    with pytest.raises(InvalidMessage, match="does not move forward"):
        decide_update(state, update(6, 6))
    with pytest.raises(InvalidMessage, match="both upserted and removed"):
        decide_update(state, update(5, 6, upsert=(pc(1),), remove=(1,)))
    with pytest.raises(InvalidMessage, match="removed peer key"):
        bad = update(5, 6)
        bad.remove_peers.append("x")
        decide_update(state, bad)


# ---------------------------------------------------------------- many Cores, any order


@dataclass
class Revision:
    number: int
    peers: dict[int, tuple[str, ...]]  # key index -> allowed IPs
    firewall: gateway_pb2.FirewallConfig | None


def _peer_msgs(peers: dict[int, tuple[str, ...]]) -> list[gateway_pb2.PeerConfig]:
    return [pc(i, *ips) for i, ips in sorted(peers.items())]


def _full(rev: Revision) -> gateway_pb2.LocationState:
    return full(rev.number, *_peer_msgs(rev.peers), firewall=rev.firewall)


def _update(prev: Revision, rev: Revision) -> gateway_pb2.LocationUpdate:
    upsert = {i: ips for i, ips in rev.peers.items() if prev.peers.get(i) != ips}
    removed = tuple(i for i in prev.peers if i not in rev.peers)
    return update(
        prev.number,
        rev.number,
        upsert=tuple(_peer_msgs(upsert)),
        remove=removed,
        firewall=rev.firewall if rev.firewall != prev.firewall else None,
    )


peer_sets = st.dictionaries(
    st.integers(0, 7), st.sampled_from([("10.0.0.10/32",), ("10.0.1.0/24",), ("fd00::5/128",)])
)
firewalls = st.sampled_from([DENY, ALLOW])


@st.composite
def histories(draw: st.DrawFn) -> list[Revision]:
    count = draw(st.integers(1, 6))
    return [Revision(number, draw(peer_sets), draw(firewalls)) for number in range(1, count + 1)]


@settings(max_examples=200, deadline=None)
@given(history=histories(), rnd=st.randoms(use_true_random=False))
def test_cores_delivering_in_any_order_converge_on_the_last_revision(
    history: list[Revision], rnd: random.Random
):
    """Each Core sends its full state and then the updates in order; the Gateway sees them interleaved.

    A Core joins at a random revision (its full state is that revision) and
    some Cores drop messages (a link that broke); a StateRequest is answered
    with the Core's latest full state, as Core does. Whatever the interleaving,
    every plan replayed on a model device matches its result, and the Gateway
    ends at the last revision once some Core has delivered everything.
    """
    last = history[-1]
    cores: list[list[object]] = []
    for c in range(rnd.randint(1, 3)):
        start = rnd.randrange(len(history))
        msgs: list[object] = [_full(history[start])]
        for prev, rev in zip(history[start:], history[start + 1 :], strict=False):
            if c > 0 and rnd.random() < 0.3:
                continue
            msgs.append(_update(prev, rev))
        cores.append(msgs)
    cores[0] = [_full(history[0])] + [_update(p, r) for p, r in itertools.pairwise(history)]
    # Duplicates: any Core may repeat a message it already sent.
    state = GatewayState()
    device: dict[str, PeerSpec] = {}
    positions = [0] * len(cores)
    sent_by: list[list[object]] = [[] for _ in cores]
    while any(p < len(m) for p, m in zip(positions, cores, strict=True)):
        c = rnd.choice([i for i, m in enumerate(cores) if positions[i] < len(m)])
        if sent_by[c] and rnd.random() < 0.2:
            msg = rnd.choice(sent_by[c])
        else:
            msg = cores[c][positions[c]]
            positions[c] += 1
            sent_by[c].append(msg)
        decision = (
            decide_full_state(state, msg)
            if isinstance(msg, gateway_pb2.LocationState)
            else decide_update(state, msg)  # type: ignore[arg-type]
        )
        if isinstance(decision, RequestFullState):
            latest = max(
                (m.revision for m in sent_by[c]),  # type: ignore[attr-defined]
                default=0,
            )
            decision = decide_full_state(state, _full(history[latest - 1]))
        if isinstance(decision, Apply):
            plan = decision.plan
            for key in plan.remove_peers:
                del device[key]
            for peer in plan.add_peers:
                assert peer.public_key not in device
                device[peer.public_key] = peer
            for change in plan.change_peers:
                assert device[change.old.public_key] == change.old
                device[change.new.public_key] = change.new
            assert device == dict(plan.result.peers)
            assert (
                plan.result.revision > state.revision
                or state.revision == 0
                or (
                    isinstance(msg, gateway_pb2.LocationState)
                    and state.location_id != msg.location_id
                )
            )
            state = plan.result
    assert state.revision == last.number
    assert {k: p.allowed_ips for k, p in state.peers.items()} == {
        KEYS[i]: tuple(sorted(ips)) for i, ips in last.peers.items()
    }
    assert state.firewall == last.firewall


# ---------------------------------------------------------------- device transactions


def _peer(i: int, *ips: str, psk: str = "", keepalive: int = 0) -> PeerSpec:
    return PeerSpec(KEYS[i], tuple(ips) or (f"10.0.0.{i + 10}/32",), psk, keepalive)


def test_uapi_transaction_adds_changes_and_removes_only_what_the_plan_says():
    state = applied(GatewayState(), full(1, pc(0), pc(1), pc(2))).result
    plan = applied(state, full(2, pc(0, "10.0.0.10/32", keepalive=25), pc(2), pc(3)))
    text = render_uapi_set(plan.interface, plan.add_peers, plan.change_peers, plan.remove_peers)
    assert text.endswith("\n\n") and text.startswith("set=1\n")
    lines = text.strip().splitlines()
    assert "replace_peers=true" not in lines
    assert lines[1:] == [
        f"public_key={key_to_hex(KEYS[1])}",
        "remove=true",
        f"public_key={key_to_hex(KEYS[3])}",
        "replace_allowed_ips=true",
        "allowed_ip=10.0.0.13/32",
        f"public_key={key_to_hex(KEYS[0])}",
        "persistent_keepalive_interval=25",
    ]


def test_uapi_transaction_for_interface_and_preshared_key_removal():
    psk = generate_keypair().private
    state = applied(GatewayState(), full(1, pc(0, psk=psk))).result
    plan = applied(state, full(2, pc(0), interface=iface(private_key=OTHER_PRIVATE, fwmark=9)))
    lines = render_uapi_set(
        plan.interface, plan.add_peers, plan.change_peers, plan.remove_peers
    ).splitlines()
    assert lines[1:4] == [
        f"private_key={key_to_hex(OTHER_PRIVATE)}",
        "fwmark=9",
        f"public_key={key_to_hex(KEYS[0])}",
    ]
    assert lines[4] == "preshared_key=" + "0" * 64


def test_uapi_get_parsing():
    psk = generate_keypair().private
    text = "\n".join(
        [
            f"private_key={key_to_hex(PRIVATE)}",
            "listen_port=51820",
            "fwmark=3",
            f"public_key={key_to_hex(KEYS[0])}",
            f"preshared_key={key_to_hex(psk)}",
            "protocol_version=1",
            "endpoint=192.0.2.7:41000",
            "last_handshake_time_sec=1700000000",
            "last_handshake_time_nsec=5",
            "tx_bytes=1000",
            "rx_bytes=2000",
            "persistent_keepalive_interval=25",
            "allowed_ip=10.0.0.2/32",
            "allowed_ip=fd00::2/128",
            f"public_key={key_to_hex(KEYS[1])}",
            "preshared_key=" + "0" * 64,
            "last_handshake_time_sec=0",
            "tx_bytes=0",
            "rx_bytes=0",
            "persistent_keepalive_interval=0",
        ]
    ).splitlines()
    dump = parse_uapi_get(text)
    assert (dump.private_key, dump.listen_port, dump.fwmark) == (PRIVATE, 51820, 3)
    (first, first_stats), (second, second_stats) = dump.peers
    assert first == PeerSpec(KEYS[0], ("10.0.0.2/32", "fd00::2/128"), psk, 25)
    assert first_stats == PeerStats(
        KEYS[0], "192.0.2.7:41000", 2000, 1000, 1700000000, ("10.0.0.2/32", "fd00::2/128")
    )
    assert second == PeerSpec(KEYS[1], (), "", 0) and second_stats.endpoint == ""


def test_wg_dump_parsing_and_addconf_rendering():
    text = (
        f"{PRIVATE}\t{KEYS[11]}\t51820\toff\n"
        f"{KEYS[0]}\t(none)\t192.0.2.7:41000\t10.0.0.2/32,fd00::2/128\t1700000000\t2000\t1000\t25\n"
        f"{KEYS[1]}\t(none)\t(none)\t(none)\t0\t0\t0\toff\n"
    )
    dump = parse_wg_dump(text)
    assert dump.listen_port == 51820 and dump.fwmark == 0
    assert dump.peers[0][0] == PeerSpec(KEYS[0], ("10.0.0.2/32", "fd00::2/128"), "", 25)
    assert dump.peers[1][1].endpoint == "" and dump.peers[1][0].allowed_ips == ()

    state = applied(GatewayState(), full(1, pc(0))).result
    plan = applied(state, full(2, pc(0, keepalive=5), pc(1), interface=iface(listen_port=51999)))
    conf = render_addconf(plan.interface, [*plan.add_peers, *(c.new for c in plan.change_peers)])
    assert conf.splitlines() == [
        "[Interface]",
        "ListenPort = 51999",
        "[Peer]",
        f"PublicKey = {KEYS[1]}",
        "AllowedIPs = 10.0.0.11/32",
        "PresharedKey = " + "A" * 43 + "=",
        "PersistentKeepalive = off",
        "[Peer]",
        f"PublicKey = {KEYS[0]}",
        "AllowedIPs = 10.0.0.10/32",
        "PresharedKey = " + "A" * 43 + "=",
        "PersistentKeepalive = 5",
    ]


# ---------------------------------------------------------------- stats delivery


@dataclass
class FakeLink:
    link_id: int
    got: list[str]
    accepting: bool = True

    def send_stats(self, batch: gateway_pb2.StatsBatch) -> bool:
        if self.accepting:
            self.got.append(batch.batch_id)
        return self.accepting


def test_batch_content():
    batch = build_batch(
        3, [PeerStats(KEYS[0], "192.0.2.1:5", 10, 20, 99, ("10.0.0.2/32",))], now=1234.5
    )
    assert batch.location_id == 3 and batch.collected_at == 1234 and len(batch.batch_id) == 36
    (peer,) = batch.peers
    assert (peer.upload, peer.download, peer.latest_handshake) == (10, 20, 99)
    assert build_batch(3, []).batch_id != build_batch(3, []).batch_id


def test_stats_go_round_robin_and_move_on_without_ack():
    a, b = FakeLink(1, []), FakeLink(2, [])
    links = [a, b]
    d = StatsDispatcher(lambda: links, ack_timeout=5)
    first, second = build_batch(1, []), build_batch(1, [])
    d.submit(first)
    d.submit(second)
    assert d.dispatch_due(0.0) == 5.0
    assert (a.got, b.got) == ([first.batch_id], [second.batch_id])
    # Nothing is re-sent before the timeout.
    d.dispatch_due(4.9)
    assert len(a.got) + len(b.got) == 2
    d.ack(second.batch_id, 2)
    d.dispatch_due(5.1)
    # Not acknowledged by a: the same batch goes to b, which has not seen it.
    assert b.got == [second.batch_id, first.batch_id]
    d.ack(first.batch_id, 2)
    assert d.pending == [] and d.dispatch_due(100.0) is None


def test_stats_wait_for_a_core_and_are_bounded():
    links: list[FakeLink] = []
    d = StatsDispatcher(lambda: links, ack_timeout=1, max_pending=3)
    batches = [build_batch(1, []) for _ in range(5)]
    for batch in batches:
        d.submit(batch)
    assert d.dispatch_due(0.0) is None
    assert d.pending == [b.batch_id for b in batches[2:]]
    links.append(FakeLink(7, []))
    d.dispatch_due(1.0)
    assert links[0].got == d.pending


def test_batch_in_flight_to_a_core_that_left_goes_to_another_at_once():
    a, b = FakeLink(1, []), FakeLink(2, [])
    links = [a]
    d = StatsDispatcher(lambda: links, ack_timeout=30)
    batch = build_batch(1, [])
    d.submit(batch)
    d.dispatch_due(0.0)
    links[:] = [b]
    d.dispatch_due(0.1)
    assert b.got == [batch.batch_id]


async def test_dispatcher_loop_delivers_on_submit():
    link = FakeLink(1, [])
    d = StatsDispatcher(lambda: [link], ack_timeout=30)
    task = asyncio.get_running_loop().create_task(d.run())
    try:
        batch = build_batch(1, [])
        d.submit(batch)
        for _ in range(50):
            if link.got:
                break
            await asyncio.sleep(0.01)
        assert link.got == [batch.batch_id]
    finally:
        task.cancel()
