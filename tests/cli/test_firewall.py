"""smartosctl firewall: rules are validated, checked against locking out ssh, and applied by
the kernel's nftables (in a network namespace) with the firewall role's own ruleset."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from smartos_cli import firewall
from smartos_cli.errors import CtlError, Exit
from smartos_cli.paths import Paths


def ruleset(nft: tuple[str, ...]) -> str:
    return subprocess.run([*nft, "list", "ruleset"], capture_output=True, text=True, check=True).stdout


def snapshot(paths: Paths) -> dict[str, str]:
    return {str(p): p.read_text() for p in paths.data.rglob("*") if p.is_file()}


def test_allow_from_a_network_is_loaded_ahead_of_the_default_ports(fw_paths: Paths, netns_nft) -> None:
    rule = firewall.parse_rule("allow", "1883/tcp", "192.168.1.7/24")
    firewall.add(fw_paths, rule, client="192.168.1.20", nft=netns_nft)
    live = ruleset(netns_nft)
    assert 'ip saddr 192.168.1.0/24 tcp dport 1883 accept comment "smartosctl rule 1"' in live
    assert live.index("dport 1883") < live.index("tcp dport { 22, 8123 } accept")
    assert firewall.load(fw_paths).rules == (rule,)


def test_deny_closes_a_default_port_and_remove_reopens_it(fw_paths: Paths, netns_nft) -> None:
    firewall.add(fw_paths, firewall.parse_rule("deny", "8123/tcp"), client="10.0.0.5", nft=netns_nft)
    assert "tcp dport 8123 drop" in ruleset(netns_nft)
    assert firewall.load(fw_paths).verdict(firewall.Proto.TCP, 8123, "10.0.0.9") is firewall.Action.DENY
    firewall.remove(fw_paths, 1, client="10.0.0.5", nft=netns_nft)
    assert "drop comment" not in ruleset(netns_nft)
    assert firewall.load(fw_paths).rules == ()


def test_a_rule_that_locks_out_your_ssh_is_refused_without_force(fw_paths: Paths, netns_nft) -> None:
    firewall.add(fw_paths, firewall.parse_rule("allow", "22/tcp", "10.0.0.0/24"), client="10.0.0.5",
                 nft=netns_nft)
    before, live = snapshot(fw_paths), ruleset(netns_nft)
    deny_ssh = firewall.parse_rule("deny", "22/tcp")
    # from inside 10.0.0.0/24 the allow still matches first: fine
    firewall.add(fw_paths, deny_ssh, client="10.0.0.5", nft=netns_nft)
    firewall.remove(fw_paths, 2, client="10.0.0.5", nft=netns_nft)
    before, live = snapshot(fw_paths), ruleset(netns_nft)
    with pytest.raises(CtlError) as err:
        firewall.add(fw_paths, deny_ssh, client="192.168.7.7", nft=netns_nft)
    assert err.value.code is Exit.NOT_ALLOWED
    assert "192.168.7.7" in err.value.message and "--force" in (err.value.hint or "")
    assert snapshot(fw_paths) == before and ruleset(netns_nft) == live
    with pytest.raises(CtlError):  # not over ssh: ssh from anywhere counts
        firewall.add(fw_paths, deny_ssh, client=None, nft=netns_nft)
    firewall.add(fw_paths, deny_ssh, client="192.168.7.7", force=True, nft=netns_nft)
    assert "tcp dport 22 drop" in ruleset(netns_nft)


def test_a_ruleset_nft_refuses_changes_nothing(fw_paths: Paths, netns_nft) -> None:
    firewall.add(fw_paths, firewall.parse_rule("allow", "1883/tcp"), nft=netns_nft)
    before, live = snapshot(fw_paths), ruleset(netns_nft)
    conf = fw_paths.nftables_conf
    conf.write_text(conf.read_text().replace("policy drop;", "policy dropp;"))  # a broken base
    with pytest.raises(CtlError) as err:
        firewall.add(fw_paths, firewall.parse_rule("allow", "8883/tcp"), nft=netns_nft)
    assert err.value.code is Exit.FAILED and "nothing changed" in err.value.message
    assert snapshot(fw_paths) == before and ruleset(netns_nft) == live


@pytest.mark.parametrize(("action", "ports", "source", "says"), [
    ("open", "80/tcp", None, "action: expected allow or deny"),
    ("allow", "80", None, "port: expected PORT/PROTO"),
    ("allow", "80/icmp", None, "protocol: expected tcp or udp"),
    ("allow", "70000/tcp", None, "port: expected 1-65535"),
    ("allow", "90-80/tcp", None, "port: expected 1-65535"),
    ("allow", "80/tcp", "192.168.1.300/24", "--from: expected an address or network in CIDR form"),
    ("allow", "80/tcp", "fe80::1%eth0/64", "without a %scope"),
    ("allow", "80/tcp", "fe80::1%eth0", "without a %scope"),
])
def test_bad_rules_are_named(action: str, ports: str, source: str | None, says: str) -> None:
    with pytest.raises(CtlError) as err:
        firewall.parse_rule(action, ports, source)
    assert says in err.value.message and err.value.code is Exit.BAD_INPUT


def test_unknown_rule_number_is_refused(fw_paths: Path) -> None:
    with pytest.raises(CtlError, match="no rule 3: there are 0"):
        firewall.remove(fw_paths, 3)  # type: ignore[arg-type]


def test_rules_read_from_the_file_are_checked_like_the_command_line(fw_paths: Paths) -> None:
    fw_paths.firewall_rules.parent.mkdir(parents=True, exist_ok=True)
    rule = {"action": "allow", "proto": "tcp", "first_port": 80, "last_port": 80}
    for source in ("fe80::1%eth0/64", "10.0.0.0/8 accept; flush ruleset", "10.0.0.1/8"):
        fw_paths.firewall_rules.write_text(json.dumps({"version": 1, "rules": [{**rule, "source": source}]}))
        with pytest.raises(CtlError, match="firewall.json: .*source|firewall.json: --from"):
            firewall.load(fw_paths)
    good = {**rule, "source": "10.0.0.0/8"}
    fw_paths.firewall_rules.write_text(json.dumps({"version": 1, "rules": [good]}))
    assert firewall.load(fw_paths).rules[0].nft(1).startswith("ip saddr 10.0.0.0/8 tcp dport 80 accept")
