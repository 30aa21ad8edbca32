"""Inbound firewall rules an admin adds on the device (`smartosctl firewall`).

The firewall role's ruleset (/etc/nftables.conf) drops inbound traffic by default, includes the
rule files in /data/firewall ahead of its default ports (ssh, Home Assistant, mDNS), then opens
those. smartosctl keeps the admin's rules as data (/data/smartos/firewall.json), renders them to
/data/firewall/50-admin.nft and reloads the whole ruleset with one `nft -f`, which the kernel
applies as one transaction: it takes all of it or none. First matching rule wins, in the order
shown by `firewall show`.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum

from .errors import CtlError, Exit
from .files import write_atomically
from .paths import Paths
from .run import run

SSH_PORT = 22
RULES_FILE = "50-admin.nft"
_PORTS = re.compile(r"^(\d{1,5})(?:-(\d{1,5}))?/(\w+)$")


class Action(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


class Proto(StrEnum):
    TCP = "tcp"
    UDP = "udp"


@dataclass(frozen=True)
class Rule:
    action: Action
    proto: Proto
    first_port: int
    last_port: int
    source: str | None = None  # a network in CIDR form; None: from anywhere

    @property
    def ports(self) -> str:
        return str(self.first_port) if self.first_port == self.last_port else \
            f"{self.first_port}-{self.last_port}"

    def matches(self, proto: Proto, port: int, address: str | None) -> bool:
        """Whether a connection to port from address (None: any address) hits this rule."""
        if proto != self.proto or not self.first_port <= port <= self.last_port:
            return False
        if self.source is None:
            return True
        if address is None:
            return False  # only some addresses: whoever is elsewhere falls through
        ip = ipaddress.ip_address(address)
        net = ipaddress.ip_network(self.source)
        return ip.version == net.version and ip in net

    def nft(self, number: int) -> str:
        net = ipaddress.ip_network(self.source) if self.source else None
        match = f"{'ip' if net.version == 4 else 'ip6'} saddr {net} " if net else ""
        verdict = "accept" if self.action is Action.ALLOW else "drop"
        return f'{match}{self.proto} dport {self.ports} {verdict} comment "smartosctl rule {number}"'

    def describe(self) -> str:
        return f"{self.action} {self.ports}/{self.proto} from {self.source or 'anywhere'}"


LOCAL_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "127.0.0.0/8",
                  "fc00::/7", "fe80::/10", "::1/128")


@dataclass(frozen=True)
class Defaults:
    """What the firewall role opens after the admin's rules (/etc/smartos/firewall.json, written
    from the same variables as the ruleset): `tcp`/`udp` to everyone, `local_tcp`/`local_udp`
    only to local networks, the subnets the box is attached to, and the VPN."""

    tcp: tuple[int, ...] = ()
    udp: tuple[int, ...] = ()
    local_tcp: tuple[int, ...] = (SSH_PORT, 8123)
    local_udp: tuple[int, ...] = (5353,)
    local_networks: tuple[str, ...] = LOCAL_NETWORKS

    def allows(self, proto: Proto, port: int, address: str | None = None) -> bool:
        """Whether a default opens port to address (None: some local address, such as a caller
        not on ssh)."""
        if port in (self.tcp if proto is Proto.TCP else self.udp):
            return True
        if port not in (self.local_tcp if proto is Proto.TCP else self.local_udp):
            return False
        return address is None or self.is_local(address)

    def is_local(self, address: str) -> bool:
        """In a local network by the static list. (The box's attached subnets and the VPN
        count as local too; they are known only to the kernel's ruleset.)"""
        ip = ipaddress.ip_address(address.split("%")[0])
        return any(ip.version == net.version and ip in net
                   for net in map(ipaddress.ip_network, self.local_networks))


@dataclass(frozen=True)
class Ruleset:
    defaults: Defaults
    rules: tuple[Rule, ...] = field(default_factory=tuple)

    def verdict(self, proto: Proto, port: int, address: str | None) -> Action:
        for rule in self.rules:
            if rule.matches(proto, port, address):
                return rule.action
        return Action.ALLOW if self.defaults.allows(proto, port, address) else Action.DENY

    def as_dict(self) -> dict[str, object]:
        return {"defaults": asdict(self.defaults),
                "rules": [{"number": n, **asdict(r), "ports": r.ports}
                          for n, r in enumerate(self.rules, 1)]}


def parse_rule(action: str, ports: str, source: str | None = None) -> Rule:
    """A rule from the command line's words; every mistake named before anything changes."""
    try:
        act = Action(action)
    except ValueError:
        raise CtlError(f"action: expected allow or deny, got {action!r}") from None
    m = _PORTS.match(ports.strip().lower())
    if not m:
        raise CtlError(f"port: expected PORT/PROTO or FIRST-LAST/PROTO (e.g. 1883/tcp, "
                       f"5000-5010/udp), got {ports!r}")
    first, last = int(m[1]), int(m[2] or m[1])
    try:
        proto = Proto(m[3])
    except ValueError:
        raise CtlError(f"protocol: expected tcp or udp, got {m[3]!r}") from None
    if not 1 <= first <= last <= 65535:
        raise CtlError(f"port: expected 1-65535 (and FIRST <= LAST), got {ports!r}")
    net: str | None = None
    if source is not None:
        # a scope id (fe80::1%eth0) would reach nft as it is: nft does not take one in a saddr
        bad = "%" in source
        try:
            net = str(ipaddress.ip_network(source.strip(), strict=False))
        except ValueError:
            bad = True
        if bad:
            raise CtlError(f"--from: expected an address or network in CIDR form without a "
                           f"%scope (e.g. 192.168.1.0/24, fd00::/8), got {source!r}") from None
    return Rule(act, proto, first, last, net)


def _rule_from(data: object) -> Rule:
    """A rule from firewall.json, checked as strictly as the command line's words."""
    if not isinstance(data, dict) or not {"action", "proto", "first_port", "last_port"} <= set(data) \
            or not set(data) <= {"action", "proto", "first_port", "last_port", "source"}:
        raise CtlError(f"expected a rule with action, proto, first_port, last_port, source, got {data!r}")
    first, last = data["first_port"], data["last_port"]
    if type(first) is not int or type(last) is not int:
        raise CtlError(f"ports: expected whole numbers, got {first!r} and {last!r}")
    source = data.get("source")
    if source is not None and not isinstance(source, str):
        raise CtlError(f"source: expected a network in CIDR form or null, got {source!r}")
    rule = parse_rule(str(data["action"]), f"{first}-{last}/{data['proto']}", source)
    if source is not None and rule.source != source:
        raise CtlError(f"source: expected a network in its normal form, got {source!r} "
                       f"(for {rule.source})")
    return rule


def parse_rules(text: str, where: str = "firewall.json") -> tuple[Rule, ...]:
    """The admin's rules as firewall.json holds them; every mistake is named with the file."""
    try:
        raw = json.loads(text)
        if not isinstance(raw, dict) or raw.get("version") != 1 or not isinstance(raw.get("rules"), list):
            raise CtlError('expected {"version": 1, "rules": [...]}')
        return tuple(_rule_from(r) for r in raw["rules"])
    except (ValueError, CtlError) as exc:
        raise CtlError(f"{where}: {exc}") from None


def load(paths: Paths) -> Ruleset:
    defaults = Defaults()
    if paths.firewall_defaults.exists():
        raw = json.loads(paths.firewall_defaults.read_text())
        defaults = Defaults(tuple(raw.get("tcp", ())), tuple(raw.get("udp", ())),
                            tuple(raw.get("local_tcp", ())), tuple(raw.get("local_udp", ())),
                            tuple(raw.get("local_networks", LOCAL_NETWORKS)))
    rules: tuple[Rule, ...] = ()
    if paths.firewall_rules.exists():
        rules = parse_rules(paths.firewall_rules.read_text(), str(paths.firewall_rules))
    return Ruleset(defaults, rules)


def render(rules: Sequence[Rule]) -> str:
    lines = ["# Written by smartosctl firewall: edit with `smartosctl firewall allow|deny|remove`."]
    lines += [rule.nft(n) for n, rule in enumerate(rules, 1)]
    return "\n".join(lines) + "\n"


def apply(paths: Paths, rules: Sequence[Rule], nft: Sequence[str] = ("nft",)) -> None:
    """Make rules the admin's rules: files first, then one atomic reload; on a failed reload the
    previous files are put back and the kernel keeps the previous ruleset."""
    rule_file = paths.firewall_include / RULES_FILE
    previous = {p: p.read_text() if p.exists() else None for p in (rule_file, paths.firewall_rules)}
    write_atomically(rule_file, render(rules))
    write_atomically(paths.firewall_rules, json.dumps(
        {"version": 1, "rules": [asdict(r) for r in rules]}, indent=2) + "\n")
    result = run([*nft, "-f", paths.nftables_conf], check=False)
    if result.returncode != 0:
        for path, text in previous.items():
            if text is None:
                path.unlink(missing_ok=True)
            else:
                write_atomically(path, text)
        raise CtlError(f"nft refused the new ruleset; nothing changed:\n{result.stderr.strip()}",
                       code=Exit.FAILED)


def _check_ssh(before: Ruleset, after: Ruleset, client: str | None, force: bool) -> None:
    """Refuse (without force) a change that closes ssh to the admin's own address, or to everyone
    when not called over ssh."""
    if force or before.verdict(Proto.TCP, SSH_PORT, client) is Action.DENY:
        return
    if after.verdict(Proto.TCP, SSH_PORT, client) is Action.DENY:
        who = f"your ssh connection from {client}" if client else "ssh from anywhere"
        raise CtlError(f"this would block {who} to port {SSH_PORT}; nothing changed",
                       hint="add --force if that is what you want", code=Exit.NOT_ALLOWED)


def add(paths: Paths, rule: Rule, client: str | None = None, force: bool = False,
        nft: Sequence[str] = ("nft",)) -> Ruleset:
    before = load(paths)
    if rule in before.rules:
        return before
    after = Ruleset(before.defaults, (*before.rules, rule))
    _check_ssh(before, after, client, force)
    apply(paths, after.rules, nft)
    return after


def remove(paths: Paths, number: int, client: str | None = None, force: bool = False,
           nft: Sequence[str] = ("nft",)) -> Ruleset:
    before = load(paths)
    if not 1 <= number <= len(before.rules):
        raise CtlError(f"no rule {number}: there are {len(before.rules)} (see smartosctl firewall show)")
    after = Ruleset(before.defaults, before.rules[:number - 1] + before.rules[number:])
    _check_ssh(before, after, client, force)
    apply(paths, after.rules, nft)
    return after
