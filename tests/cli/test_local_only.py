"""Local-first: ssh and Home Assistant answer only local sources, tried for real.

Two network namespaces joined by a veth pair play the box and its LAN. The box loads the
firewall role's real ruleset; real TCP listeners wait on 22 and 8123; the LAN side connects
from a private address, from the box's own (global) IPv6 subnet, and from sources beyond the
router (a public IPv4 and an IPv6 address of another network), which must get no answer."""

from __future__ import annotations

import ipaddress
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from smartos_cli import firewall, localnets
from smartos_cli.paths import Paths

from tests.conftest import REPO, needs_root

BOX, LAN = "192.168.50.1", "192.168.50.2"
BOX6, LAN6 = "2001:db8:1::1", "2001:db8:1::2"   # a global /64 the box is attached to
FAR4, FAR6 = "198.51.100.7", "2001:db8:99::7"    # beyond the router


def _ns(name: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", name, *cmd], capture_output=True, text=True, check=check)


@pytest.fixture
def lan(tmp_path: Path) -> Iterator[tuple[str, str]]:
    needs_root()
    box, other = f"sbox{tmp_path.name[-6:]}", f"slan{tmp_path.name[-6:]}"
    for ns in (box, other):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "link", "add", "veth-b", "netns", box, "type", "veth", "peer", "name", "veth-l",
                        "netns", other], check=True)
        for ns, dev, addrs in ((box, "veth-b", (f"{BOX}/24", f"{BOX6}/64")),
                               (other, "veth-l", (f"{LAN}/24", f"{LAN6}/64", f"{FAR4}/32", f"{FAR6}/128"))):
            for addr in addrs:
                _ns(ns, "ip", "addr", "add", addr, "dev", dev, *(["nodad"] if ":" in addr else []))
            _ns(ns, "ip", "link", "set", dev, "up")
            _ns(ns, "ip", "link", "set", "lo", "up")
        _ns(box, "ip", "route", "add", "default", "via", LAN)        # the LAN side is the router
        _ns(box, "ip", "-6", "route", "add", "default", "via", LAN6)
        listener = subprocess.Popen(["ip", "netns", "exec", box, "python3", "-c", _LISTEN])
        for _ in range(50):  # listening on both ports (from inside the box, over loopback)
            if all(_answers(box, "::1", "::1", port) for port in (22, 8123)):
                break
            time.sleep(0.1)
        try:
            yield box, other
        finally:
            listener.kill()
            listener.wait()
    finally:
        for ns in (box, other):
            subprocess.run(["ip", "netns", "delete", ns], check=False)


_LISTEN = """
import socket, threading
def serve(port):
    s = socket.socket(socket.AF_INET6); s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("::", port)); s.listen()
    while True: s.accept()[0].close()
for port in (22, 8123): threading.Thread(target=serve, args=(port,), daemon=True).start()
threading.Event().wait()
"""


def _answers(ns: str, source: str, target: str, port: int) -> bool:
    code = (f"import socket; socket.create_connection(({target!r}, {port}), timeout=1.5, "
            f"source_address=({source!r}, 0)).close()")
    return _ns(ns, "python3", "-c", code, check=False).returncode == 0


def test_default_ports_answer_local_and_attached_sources_only(lan: tuple[str, str], fw_paths: Paths,
                                                              tmp_path: Path) -> None:
    box, other = lan
    run_dir = tmp_path / "run"
    conf = fw_paths.nftables_conf.read_text().replace("/run/smartos-localnets", str(run_dir))
    fw_paths.nftables_conf.write_text(conf)
    _ns(box, "nft", "-f", str(fw_paths.nftables_conf))
    for port in (22, 8123):
        assert _answers(other, LAN, BOX, port)            # a private address on the LAN
        assert not _answers(other, FAR4, BOX, port)       # the internet, through the router
        assert not _answers(other, FAR6, BOX6, port)
    assert not _answers(other, LAN6, BOX6, 8123)  # a global /64 is local only once it is known
    nft, ip = ("ip", "netns", "exec", box, "nft"), ("ip", "netns", "exec", box, "ip")
    assert localnets.sync(fw_paths, run_dir, nft=nft, ip=ip)
    assert _answers(other, LAN6, BOX6, 8123) and _answers(other, LAN6, BOX6, 22)
    assert not _answers(other, FAR6, BOX6, 8123)
    assert not localnets.sync(fw_paths, run_dir, nft=nft, ip=ip)  # nothing changed, no reload
    # The owner opens Home Assistant to everyone; the attached subnet survives the reload.
    firewall.add(fw_paths, firewall.parse_rule("allow", "8123/tcp"), nft=nft)
    assert _answers(other, FAR4, BOX, 8123) and _answers(other, LAN6, BOX6, 8123)
    assert not _answers(other, FAR4, BOX, 22)
    shown = firewall.load(fw_paths)
    assert shown.verdict(firewall.Proto.TCP, 22, FAR4) is firewall.Action.DENY
    assert shown.verdict(firewall.Proto.TCP, 22, LAN) is firewall.Action.ALLOW
    assert shown.verdict(firewall.Proto.TCP, 8123, FAR4) is firewall.Action.ALLOW


def test_a_router_cannot_declare_the_internet_local() -> None:
    links = [{"ifname": "lo", "addr_info": [{"local": "127.0.0.1", "prefixlen": 8, "scope": "host"}]},
             {"ifname": "end0", "addr_info": [
                 {"local": "203.0.113.9", "prefixlen": 24, "scope": "global"},
                 {"local": "2001:db8:1::9", "prefixlen": 64, "scope": "global"},
                 {"local": "fe80::1", "prefixlen": 64, "scope": "link"},
                 {"local": "100.64.1.2", "prefixlen": 2, "scope": "global"},   # a hostile DHCP server
                 {"local": "2001:db8::1", "prefixlen": 16, "scope": "global"}]}]
    assert localnets.attached(links) == [ipaddress.ip_network("203.0.113.0/24"),
                                         ipaddress.ip_network("2001:db8:1::/64")]


def test_the_role_and_smartosctl_share_one_list_of_local_networks() -> None:
    defaults = yaml.safe_load((REPO / "roles/firewall/defaults/main.yml").read_text())
    assert tuple(defaults["firewall__local_networks"]) == firewall.LOCAL_NETWORKS
    assert tuple(defaults["firewall__local_tcp_ports"]) == firewall.Defaults().local_tcp
    assert tuple(defaults["firewall__local_udp_ports"]) == firewall.Defaults().local_udp
