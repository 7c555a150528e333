"""The firewall compiler's contract: pure data in, a location's firewall config out.

`compile_location` is a pure function (no I/O): the ACL feature loads the
rows into these types, the compiler turns them into ordered allow/deny rules
per IP family, and gateways apply the result. Keeping it pure is what lets the
semantics be tested exhaustively (hand-worked cases, a property test against an
independent oracle, the 1.x-versus-2.0 upgrade equivalence) without a database.

Addresses are carried as inclusive ranges of `ipaddress` objects of one family;
ports as inclusive `(start, end)` pairs; protocols as IP protocol numbers.

Below the types: `compile_location` (and `LocationCompiler`, which keeps
per-rule results so that one changed rule is cheap to recompile), `decide`
(the verdict for one flow, with the gateways' nftables semantics: a rule
listing ports matches only TCP/UDP packets to those ports) and
`config_to_json` (the preview format of `spec/acl.md`). Values a gateway
cannot apply raise `FirewallCompileError`, a ValueError.
"""

from __future__ import annotations

import gc
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from itertools import chain, compress
from operator import sub
from typing import Any

Address = IPv4Address | IPv6Address
AddressRange = tuple[Address, Address]  # inclusive, same family, start <= end
PortRange = tuple[int, int]  # inclusive, 0 <= start <= end <= 65535

PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1}
SUPPORTED_PROTOCOLS = frozenset(PROTOCOLS.values())


class Verdict(Enum):
    ALLOW = "allow"
    DENY = "deny"


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class DestinationSpec:
    """One destination: the rule's manual settings (merged with its Aliases) or one Destination."""

    addresses: tuple[AddressRange, ...] = ()
    ports: tuple[PortRange, ...] = ()
    protocols: tuple[int, ...] = ()
    any_address: bool = False
    any_port: bool = False
    any_protocol: bool = False
    # For comments: "DESTINATION 3 - postgres"; None for the manual destination.
    destination_id: int | None = None
    destination_name: str | None = None


@dataclass(frozen=True)
class RuleSpec:
    """An applied, enabled, unexpired rule that applies to the location being compiled.

    Filtering by state, `enabled`, `expires` and locations happens before the
    compiler; `manual` is None when `use_manual_destination_settings` is off
    (linked Aliases are then ignored), otherwise it already includes the
    linked Aliases' addresses, ports and protocols.
    """

    id: int
    name: str
    allow_all_users: bool = False
    deny_all_users: bool = False
    allow_all_groups: bool = False
    deny_all_groups: bool = False
    allow_all_network_devices: bool = False
    deny_all_network_devices: bool = False
    allowed_users: frozenset[int] = frozenset()
    denied_users: frozenset[int] = frozenset()
    allowed_groups: frozenset[int] = frozenset()
    denied_groups: frozenset[int] = frozenset()
    allowed_network_devices: frozenset[int] = frozenset()
    denied_network_devices: frozenset[int] = frozenset()
    manual: DestinationSpec | None = None
    destinations: tuple[DestinationSpec, ...] = ()


@dataclass(frozen=True)
class Directory:
    """Who is in the location: users, their groups and devices' addresses *in this location*."""

    # user id -> is_active
    users: dict[int, bool] = field(default_factory=dict)
    # group id -> member user ids
    group_members: dict[int, frozenset[int]] = field(default_factory=dict)
    # user id -> addresses of that user's user-type devices in this location
    user_addresses: dict[int, tuple[Address, ...]] = field(default_factory=dict)
    # network device id -> addresses in this location (only configured devices bound here)
    network_device_addresses: dict[int, tuple[Address, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class LocationSpec:
    id: int
    name: str
    acl_enabled: bool
    acl_default_allow: bool
    # The location's own interface addresses; their families decide what "any address" covers.
    subnets: tuple[IPv4Interface | IPv6Interface, ...]


# ---------------------------------------------------------------- output


@dataclass(frozen=True)
class FirewallRule:
    id: int  # unique inside one config
    verdict: Verdict
    ip_version: int  # 4 or 6
    sources: tuple[AddressRange, ...]  # normalised; empty = any
    destinations: tuple[AddressRange, ...]  # normalised; empty = any
    ports: tuple[PortRange, ...]  # normalised; empty = any
    protocols: tuple[int, ...]  # sorted, unique; empty = any
    comment: str


@dataclass(frozen=True)
class FirewallConfig:
    default_policy: Verdict
    rules: tuple[FirewallRule, ...]


# ---------------------------------------------------------------- constants and errors

PORT_PROTOCOLS = frozenset({PROTOCOLS["tcp"], PROTOCOLS["udp"]})
MAX_PORT = 65535
_V6_TAG = 1 << 128  # added to IPv6 integers so that one int space orders IPv4 before IPv6


class FirewallCompileError(ValueError):
    """A rule holds a value no gateway can apply; the whole location is refused.

    Raised rather than skipped because a silently dropped rule changes what the
    firewall lets through; the caller decides how to surface it.
    """

    def __init__(self, message: str, *, rule_id: int, destination_id: int | None) -> None:
        super().__init__(message)
        self.rule_id = rule_id
        self.destination_id = destination_id


# ---------------------------------------------------------------- normalisation


def _tag(address: Address) -> int:
    return int(address) if address.version == 4 else int(address) | _V6_TAG


def merge_address_ranges(
    ranges: Iterable[AddressRange],
) -> tuple[tuple[AddressRange, ...], tuple[AddressRange, ...]]:
    """Sorted, overlap- and adjacency-merged `(ipv4, ipv6)` ranges.

    The merged ranges reuse the caller's address objects (a merged range
    starts at one input's start and ends at another's end), so no address is
    re-created. Raises ValueError for a mixed-family or reversed range.
    """
    items: list[tuple[int, int, Address, Address]] = []
    for start, end in ranges:
        if start.version != end.version:
            raise ValueError(f"address range {start}-{end} mixes IP families")
        s, e = int(start), int(end)
        if s > e:
            raise ValueError(f"address range {start}-{end} ends before it starts")
        if start.version == 6:
            s |= _V6_TAG
            e |= _V6_TAG
        items.append((s, e, start, end))
    if not items:
        return (), ()
    items.sort(key=lambda item: (item[0], item[1]))
    v4: list[AddressRange] = []
    v6: list[AddressRange] = []
    cur_s, cur_e, cur_a, cur_b = items[0]
    for s, e, a, b in items[1:]:
        if s <= cur_e + 1 and (s ^ cur_s) < _V6_TAG:
            if e > cur_e:
                cur_e, cur_b = e, b
            continue
        (v4 if cur_s < _V6_TAG else v6).append((cur_a, cur_b))
        cur_s, cur_e, cur_a, cur_b = s, e, a, b
    (v4 if cur_s < _V6_TAG else v6).append((cur_a, cur_b))
    return tuple(v4), tuple(v6)


def merge_port_ranges(ports: Iterable[PortRange]) -> tuple[PortRange, ...]:
    """Sorted, overlap- and adjacency-merged port ranges; ValueError outside 0-65535."""
    items = list(ports)
    for start, end in items:
        if not (type(start) is int and type(end) is int and 0 <= start <= end <= MAX_PORT):
            raise ValueError(f"invalid port range {start}-{end}")
    merged: list[PortRange] = []
    for start, end in sorted(items):
        if merged and start <= merged[-1][1] + 1:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return tuple(merged)


def normalise_protocols(protocols: Iterable[int]) -> tuple[int, ...]:
    """Sorted unique protocols; ValueError for one a gateway cannot apply."""
    unique = sorted(set(protocols))
    bad = [p for p in unique if p not in SUPPORTED_PROTOCOLS]
    if bad:
        supported = ", ".join(str(p) for p in sorted(SUPPORTED_PROTOCOLS))
        raise ValueError(
            f"unsupported protocol {', '.join(map(str, bad))} (supported: {supported})"
        )
    return tuple(unique)


# ---------------------------------------------------------------- per-rule destinations


@dataclass(frozen=True)
class _Part:
    """One (destination, family) pair of a rule: everything but the sources."""

    comment: str  # without the verdict suffix
    ip_version: int
    destinations: tuple[AddressRange, ...]
    ports: tuple[PortRange, ...]
    protocols: tuple[int, ...]


def _label(rule: RuleSpec, destination: DestinationSpec | None) -> str:
    label = f"RULE {rule.id} - {rule.name}"
    if destination is not None:
        label += f", DESTINATION {destination.destination_id} - {destination.destination_name}"
    return label


def _rule_parts(rule: RuleSpec, has_v4: bool, has_v6: bool) -> tuple[_Part, ...]:
    """The rule's (destination, family) pairs in generation order.

    Every value that survives its `any_*` flag is validated even when the
    destination yields no family, so that bad data is reported where it is
    rather than surfacing later when a location gains a family.
    """
    specs: list[tuple[DestinationSpec, DestinationSpec | None]] = []
    if rule.manual is not None:
        specs.append((rule.manual, None))
    specs.extend((d, d) for d in rule.destinations)
    parts: list[_Part] = []
    for spec, named in specs:
        label = _label(rule, named)
        try:
            v4, v6 = ((), ()) if spec.any_address else merge_address_ranges(spec.addresses)
            ports = () if spec.any_port else merge_port_ranges(spec.ports)
            protocols = () if spec.any_protocol else normalise_protocols(spec.protocols)
        except ValueError as exc:
            raise FirewallCompileError(
                f"{label}: {exc}", rule_id=rule.id, destination_id=spec.destination_id
            ) from exc
        if v4 or (spec.any_address and has_v4):
            parts.append(_Part(label, 4, v4, ports, protocols))
        if v6 or (spec.any_address and has_v6):
            parts.append(_Part(label, 6, v6, ports, protocols))
    return tuple(parts)


# ---------------------------------------------------------------- sources


_SourceKey = tuple[object, ...]
_Sources = tuple[tuple[AddressRange, ...], tuple[AddressRange, ...]]


def _source_key(rule: RuleSpec) -> _SourceKey:
    return (
        rule.allow_all_users,
        rule.deny_all_users,
        rule.allow_all_groups,
        rule.deny_all_groups,
        rule.allow_all_network_devices,
        rule.deny_all_network_devices,
        rule.allowed_users,
        rule.denied_users,
        rule.allowed_groups,
        rule.denied_groups,
        rule.allowed_network_devices,
        rule.denied_network_devices,
    )


class _DirectoryIndex:
    """Every address of a directory at a bit position, so source sets are big-int bitmasks.

    Addresses are sorted (IPv4 before IPv6), so a set bit run over consecutive
    addresses is one merged range, and union/difference of source sets is one
    C-level integer operation instead of a per-address loop. This is what makes
    a thousand "all users but these" rules over 20,000 devices cheap.
    """

    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        self.active: frozenset[int] = frozenset(u for u, ok in directory.users.items() if ok)
        objects: dict[int, Address] = {}

        def tags_of(addresses: tuple[Address, ...]) -> list[int]:
            found = []
            for a in addresses:
                t = int(a) | _V6_TAG if isinstance(a, IPv6Address) else int(a)
                found.append(t)
                objects.setdefault(t, a)
            return found

        user_tags = {u: tags_of(a) for u, a in directory.user_addresses.items() if a}
        device_tags = {d: tags_of(a) for d, a in directory.network_device_addresses.items()}
        # an address listed twice for one holder still has one owner
        owners = Counter(
            chain.from_iterable(map(set, chain(user_tags.values(), device_tags.values())))
        )
        tags = sorted(objects)
        self.objects: list[Address] = [objects[t] for t in tags]
        # one shared (a, a) pair per address: most source runs are single devices
        self.singles: list[AddressRange] = [(a, a) for a in self.objects]
        self.ipv4_bits = (1 << bisect_left(tags, _V6_TAG)) - 1  # positions of IPv4 addresses
        position = dict(zip(tags, range(len(tags)), strict=True))
        self._nbytes = (len(tags) >> 3) + 1
        at = position.__getitem__
        self.user_positions = {u: tuple(map(at, t)) for u, t in user_tags.items()}
        self.device_positions = {d: tuple(map(at, t)) for d, t in device_tags.items()}
        self.shared = self._mask(position[t] for t, n in owners.items() if n > 1)
        steps = map(sub, tags[1:], tags)
        self.contiguous = self._mask(compress(range(1, len(tags)), map((1).__eq__, steps)))
        self.group_ids = frozenset(directory.group_members)
        self._group_active: dict[int, frozenset[int]] = {}
        self._group_mask: dict[int, int] = {}
        self._all_active_mask: int | None = None
        self._all_grouped: tuple[frozenset[int], int] | None = None
        self._all_devices_mask: int | None = None
        self._ranges: dict[int, _Sources] = {}

    # -- masks

    def _mask(self, positions: Iterable[int]) -> int:
        buf = bytearray(self._nbytes)
        for p in positions:
            buf[p >> 3] |= 1 << (p & 7)
        return int.from_bytes(buf, "little")

    def users_mask(self, users: Iterable[int]) -> int:
        table = self.user_positions
        return self._mask(p for u in users if u in table for p in table[u])

    def devices_mask(self, devices: Iterable[int]) -> int:
        table = self.device_positions
        return self._mask(p for d in devices if d in table for p in table[d])

    def all_active_mask(self) -> int:
        if self._all_active_mask is None:
            self._all_active_mask = self.users_mask(self.active)
        return self._all_active_mask

    def all_devices_mask(self) -> int:
        if self._all_devices_mask is None:
            self._all_devices_mask = self.devices_mask(self.device_positions)
        return self._all_devices_mask

    def group_active(self, group: int) -> frozenset[int]:
        members = self._group_active.get(group)
        if members is None:
            members = self.directory.group_members.get(group, frozenset()) & self.active
            self._group_active[group] = members
        return members

    def group_mask(self, group: int) -> int:
        mask = self._group_mask.get(group)
        if mask is None:
            mask = self.users_mask(self.group_active(group))
            self._group_mask[group] = mask
        return mask

    def all_grouped(self) -> tuple[frozenset[int], int]:
        """Active members of any group, and their mask (for the `*_all_groups` flags)."""
        if self._all_grouped is None:
            users = frozenset().union(*(self.group_active(g) for g in self.group_ids))
            self._all_grouped = (users, self.users_mask(users))
        return self._all_grouped

    def _difference(self, base: frozenset[int], base_mask: int, removed: frozenset[int]) -> int:
        """Mask of `base - removed` users without walking `base` when the removal is small.

        Clearing the removed users' bits is exact only when none of their
        addresses is also held by someone else; otherwise rebuild from the rest.
        """
        if not removed:
            return base_mask
        if 2 * len(removed) <= len(base):
            removed_mask = self.users_mask(removed)
            if not removed_mask & self.shared:
                return base_mask & ~removed_mask
        return self.users_mask(base - removed)

    # -- sources

    def source_mask(self, rule: RuleSpec) -> int:
        return self._user_source_mask(rule) | self._device_source_mask(rule)

    def _user_source_mask(self, rule: RuleSpec) -> int:
        if rule.deny_all_users:
            return 0
        if rule.allow_all_users:
            allowed, mask = self.active, self.all_active_mask()
        else:
            explicit = rule.allowed_users & self.active
            if rule.allow_all_groups:
                grouped, mask = self.all_grouped()
                allowed = explicit | grouped
            else:
                groups = rule.allowed_groups
                allowed = explicit.union(*(self.group_active(g) for g in groups))
                mask = 0
                for g in groups:
                    mask |= self.group_mask(g)
            if explicit:
                mask |= self.users_mask(explicit)
        if not allowed:
            return 0
        if rule.deny_all_groups:
            denied = (rule.denied_users & allowed) | (self.all_grouped()[0] & allowed)
        else:
            denied = (rule.denied_users & allowed).union(
                *(self.group_active(g) & allowed for g in rule.denied_groups)
            )
        return self._difference(allowed, mask, denied)

    def _device_source_mask(self, rule: RuleSpec) -> int:
        if rule.deny_all_network_devices:
            return 0
        known = self.device_positions
        if rule.allow_all_network_devices:
            removed = [d for d in rule.denied_network_devices if d in known]
            if not removed:
                return self.all_devices_mask()
            allowed: Iterable[int] = set(known).difference(removed)
        else:
            allowed = rule.allowed_network_devices - rule.denied_network_devices
        return self.devices_mask(allowed)

    def ranges(self, mask: int) -> _Sources:
        """Merged `(ipv4, ipv6)` ranges of a mask, memoised since many rules share a source set."""
        cached = self._ranges.get(mask)
        if cached is not None:
            return cached
        if not mask:
            result: _Sources = ((), ())
        else:
            contiguous = self.contiguous
            starts = mask & ~((mask << 1) & contiguous)
            ends = mask & ~((mask & contiguous) >> 1)
            # bit i of a mask is character i of its reversed binary text, so
            # str.find walks the runs at C speed
            start_text, end_text = bin(starts)[:1:-1], bin(ends)[:1:-1]
            objects, singles = self.objects, self.singles
            pairs: list[AddressRange] = []
            append, find = pairs.append, start_text.find
            s = find("1")
            while s >= 0:
                if end_text[s] == "1":
                    append(singles[s])
                else:
                    append((objects[s], objects[end_text.find("1", s)]))
                s = find("1", s + 1)
            split = (starts & self.ipv4_bits).bit_count()
            result = (tuple(pairs[:split]), tuple(pairs[split:]))
        self._ranges[mask] = result
        return result


# ---------------------------------------------------------------- compiler


@dataclass
class CompileStats:
    """What the last `LocationCompiler.compile` had to redo; lets tests and benchmarks check caching."""

    rules: int = 0
    rules_compiled: int = 0  # destinations re-normalised
    sources_resolved: int = 0  # distinct source sets resolved from the directory
    directory_indexed: bool = False


@dataclass
class _RuleEntry:
    rule: RuleSpec
    parts: tuple[_Part, ...]
    source_key: _SourceKey
    generation: int = -1  # directory generation the sources below belong to
    sources: _Sources = ((), ())
    allow_first_id: int = -1
    allow_rules: tuple[FirewallRule, ...] = ()
    deny_first_id: int = -1
    deny_rules: tuple[FirewallRule, ...] = ()


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Hold off the cyclic garbage collector while compiling.

    A compile allocates hundreds of thousands of small tuples (one per source
    range) and creates no reference cycles, so collections during it find
    nothing, yet each one rescans the process's live objects; at 20,000
    devices that doubled the compile time. The previous state is restored, so
    a caller that disabled the collector keeps it disabled.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _has_families(location: LocationSpec) -> tuple[bool, bool]:
    versions = {s.version for s in location.subnets}
    return 4 in versions, 6 in versions


class LocationCompiler:
    """Compiles one location repeatedly, redoing only what changed since the last call.

    Per rule it keeps the normalised destinations (valid while the rule is
    equal and the location's IP families are unchanged) and the resolved
    sources (valid while the directory is equal). Source sets are memoised by
    their definition, so rules sharing e.g. `allow_all_users` resolve once.
    Reassembly still renumbers every firewall rule, because ids are positions
    in the output; unchanged rules whose ids did not move are reused as is.

    Rules are matched to cache entries by id and compared by identity first,
    then by equality, so a caller that rebuilds all specs from the database
    still hits the cache. Not thread-safe: use one instance per location.
    """

    def __init__(self) -> None:
        self._families: tuple[bool, bool] | None = None
        self._directory: Directory | None = None
        self._index: _DirectoryIndex | None = None
        self._generation = 0
        self._sources: dict[_SourceKey, _Sources] = {}
        self._entries: dict[int, _RuleEntry] = {}
        self.stats = CompileStats()

    def _use_directory(self, directory: Directory) -> None:
        if self._directory is directory:
            return
        if self._directory is not None and self._directory == directory:
            self._directory = directory
            return
        self._directory = directory
        self._index = None
        self._sources = {}
        self._generation += 1

    def _resolve(self, key: _SourceKey, rule: RuleSpec, stats: CompileStats) -> _Sources:
        sources = self._sources.get(key)
        if sources is None:
            if self._index is None:
                assert self._directory is not None
                self._index = _DirectoryIndex(self._directory)
                stats.directory_indexed = True
            index = self._index
            sources = index.ranges(index.source_mask(rule))
            self._sources[key] = sources
            stats.sources_resolved += 1
        return sources

    def compile(
        self, location: LocationSpec, rules: Sequence[RuleSpec], directory: Directory
    ) -> FirewallConfig | None:
        with _collector_paused():
            return self._compile(location, rules, directory)

    def _compile(
        self, location: LocationSpec, rules: Sequence[RuleSpec], directory: Directory
    ) -> FirewallConfig | None:
        stats = CompileStats(rules=len(rules))
        self.stats = stats
        if not location.acl_enabled:
            return None
        families = _has_families(location)
        if families != self._families:
            self._families = families
            self._entries = {}
        self._use_directory(directory)
        has_v4, has_v6 = families

        entries: list[_RuleEntry] = []
        seen: dict[int, _RuleEntry] = {}
        for rule in sorted(rules, key=lambda r: r.id):
            entry = self._entries.get(rule.id)
            if entry is None or not (entry.rule is rule or entry.rule == rule):
                entry = _RuleEntry(rule, _rule_parts(rule, has_v4, has_v6), _source_key(rule))
                stats.rules_compiled += 1
            elif entry.rule is not rule:
                entry.rule = rule
            if entry.generation != self._generation:
                sources = self._resolve(entry.source_key, rule, stats)
                if sources != entry.sources:
                    entry.allow_first_id = -1
                entry.sources = sources
                entry.generation = self._generation
            seen[rule.id] = entry
            entries.append(entry)
        self._entries = seen

        output: list[FirewallRule] = []
        next_id = 1
        for entry in entries:
            if entry.allow_first_id != next_id:
                entry.allow_rules = _allow_rules(entry, next_id)
                entry.allow_first_id = next_id
            output.extend(entry.allow_rules)
            next_id += len(entry.allow_rules)
        for entry in entries:
            if entry.deny_first_id != next_id:
                entry.deny_rules = _deny_rules(entry, next_id)
                entry.deny_first_id = next_id
            output.extend(entry.deny_rules)
            next_id += len(entry.deny_rules)
        policy = Verdict.ALLOW if location.acl_default_allow else Verdict.DENY
        return FirewallConfig(default_policy=policy, rules=tuple(output))


def _allow_rules(entry: _RuleEntry, first_id: int) -> tuple[FirewallRule, ...]:
    v4, v6 = entry.sources
    out: list[FirewallRule] = []
    for part in entry.parts:
        sources = v4 if part.ip_version == 4 else v6
        if sources:
            out.append(
                FirewallRule(
                    id=first_id + len(out),
                    verdict=Verdict.ALLOW,
                    ip_version=part.ip_version,
                    sources=sources,
                    destinations=part.destinations,
                    ports=part.ports,
                    protocols=part.protocols,
                    comment=f"{part.comment} ALLOW",
                )
            )
    return tuple(out)


def _deny_rules(entry: _RuleEntry, first_id: int) -> tuple[FirewallRule, ...]:
    return tuple(
        FirewallRule(
            id=first_id + i,
            verdict=Verdict.DENY,
            ip_version=part.ip_version,
            sources=(),
            destinations=part.destinations,
            ports=(),
            protocols=(),
            comment=f"{part.comment} DENY",
        )
        for i, part in enumerate(entry.parts)
    )


def compile_location(
    location: LocationSpec, rules: Sequence[RuleSpec], directory: Directory
) -> FirewallConfig | None:
    """The location's firewall config, or None when its ACL is disabled (gateways then filter nothing)."""
    return LocationCompiler().compile(location, rules, directory)


# ---------------------------------------------------------------- evaluation


def _in_ranges(value: int, ranges: Sequence[tuple[int, int]] | Sequence[AddressRange]) -> bool:
    if not ranges:
        return True
    i = bisect_right(ranges, value, key=lambda r: int(r[0])) - 1
    return i >= 0 and value <= int(ranges[i][1])


def rule_matches(
    rule: FirewallRule, src: Address, dst: Address, port: int | None, protocol: int
) -> bool:
    """nftables semantics of one rule; empty lists match anything.

    A rule that lists ports matches only TCP and UDP packets to one of those
    ports (nftables matches `th dport` only on a transport header with ports),
    so ICMP, or a flow given without a port, never matches a port-restricted
    rule even when its protocol list is empty.
    """
    if rule.ip_version != src.version:
        return False
    if rule.protocols and protocol not in rule.protocols:
        return False
    if rule.ports and (
        protocol not in PORT_PROTOCOLS or port is None or not _in_ranges(port, rule.ports)
    ):
        return False
    return _in_ranges(int(src), rule.sources) and _in_ranges(int(dst), rule.destinations)


def decide(
    config: FirewallConfig | None,
    src: Address,
    dst: Address,
    port: int | None,
    protocol: int,
) -> tuple[Verdict, FirewallRule | None]:
    """The verdict for one flow: the first matching rule, else the default policy.

    A None config (ACL disabled) allows everything: the gateway then has no
    firewall for the location. Mixed-family flows do not exist and raise.
    """
    if src.version != dst.version:
        raise ValueError(f"flow {src} -> {dst} mixes IP families")
    if config is None:
        return Verdict.ALLOW, None
    for rule in config.rules:
        if rule_matches(rule, src, dst, port, protocol):
            return rule.verdict, rule
    return config.default_policy, None


# ---------------------------------------------------------------- preview JSON


def _ipv4_text(value: int) -> str:
    return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"


def _range_strings(version: int, start: int, end: int) -> list[str]:
    """The fewest aligned subnets covering `start..end`: greedy largest aligned block first."""
    bits = 32 if version == 4 else 128
    text = _ipv4_text if version == 4 else lambda v: str(IPv6Address(v))
    out: list[str] = []
    while start <= end:
        aligned = (start & -start).bit_length() - 1 if start else bits
        size = min(aligned, (end - start + 1).bit_length() - 1)
        out.append(text(start) if size == 0 else f"{text(start)}/{bits - size}")
        start += 1 << size
    return out


class _AddressRenderer:
    """Renders address lists for one preview, memoising per range and per shared tuple.

    Source lists are large (one entry per run of device addresses) and the
    same ranges recur across rules, so a preview renders each distinct range
    once; lists shared between rules (one memoised source set) render once.
    """

    def __init__(self) -> None:
        self._ranges: dict[tuple[int, int], list[str]] = {}
        self._lists: dict[int, tuple[tuple[AddressRange, ...], list[str]]] = {}

    def __call__(self, ranges: tuple[AddressRange, ...]) -> list[str]:
        cached = self._lists.get(id(ranges))
        if cached is not None and cached[0] is ranges:
            return list(cached[1])
        out: list[str] = []
        memo = self._ranges
        for start, end in ranges:
            key = (_tag(start), _tag(end))
            strings = memo.get(key)
            if strings is None:
                strings = _range_strings(start.version, int(start), int(end))
                memo[key] = strings
            out.extend(strings)
        self._lists[id(ranges)] = (ranges, out)
        return list(out)


def address_strings(ranges: Iterable[AddressRange]) -> list[str]:
    """Each range as the fewest aligned subnets; a single address as a plain IP."""
    return _AddressRenderer()(tuple(ranges))


def port_values(ports: Iterable[PortRange]) -> list[int | str]:
    return [start if start == end else f"{start}-{end}" for start, end in ports]


def rule_to_json(
    rule: FirewallRule, render: Callable[[tuple[AddressRange, ...]], list[str]] = address_strings
) -> dict[str, Any]:
    return {
        "id": rule.id,
        "verdict": rule.verdict.value,
        "ip_version": rule.ip_version,
        "sources": render(rule.sources),
        "destinations": render(rule.destinations),
        "ports": port_values(rule.ports),
        "protocols": list(rule.protocols),
        "comment": rule.comment,
    }


def config_to_json(config: FirewallConfig | None) -> dict[str, Any] | None:
    """The preview body of `GET /api/v1/network/{id}/firewall` (None: ACL disabled)."""
    if config is None:
        return None
    render = _AddressRenderer()
    return {
        "default_policy": config.default_policy.value,
        "rules": [rule_to_json(r, render) for r in config.rules],
    }
