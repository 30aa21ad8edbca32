"""smartosctl vpn: WireGuard keys, configs, peers and the firewall port.

This host's kernel has no WireGuard, so bringing wg0 up (wg-quick@wg0) is checked on the booted
image (tests/system/test_smartosctl.py); here a Device that records those calls stands in for
it, while the firewall side runs for real: nft in a network namespace with the firewall role's
ruleset."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from smartos_cli import vpn
from smartos_cli.errors import CtlError
from smartos_cli.paths import Paths


class RecordingDevice(vpn.Device):
    def __init__(self, paths: Paths, nft: tuple[str, ...]) -> None:
        super().__init__(paths, nft)
        self.calls: list[tuple[bool, bool]] = []

    def interface(self, before: vpn.Settings, after: vpn.Settings) -> None:
        self.calls.append((before.enabled, after.enabled))


def nft_rules(nft: tuple[str, ...]) -> str:
    return subprocess.run([*nft, "list", "ruleset"], capture_output=True, text=True, check=True).stdout


def test_keys_are_what_wg_makes_of_them() -> None:
    private, public = vpn.keypair()
    derived = subprocess.run(["wg", "pubkey"], input=private, capture_output=True, text=True, check=True)
    assert derived.stdout.strip() == public == vpn.public_of(private)


def test_the_port_opens_with_the_first_peer_and_closes_with_the_last(fw_paths: Paths, netns_nft) -> None:
    device = RecordingDevice(fw_paths, netns_nft)
    vpn.enable(fw_paths, device, "home.example.net")
    assert "51820" not in nft_rules(netns_nft)  # enabled, but nobody could connect yet
    phone = vpn.add_peer(fw_paths, device, "phone", "192.168.1.5")
    assert 'udp dport 51820 accept comment "smartosctl vpn"' in nft_rules(netns_nft)
    laptop = vpn.add_peer(fw_paths, device, "laptop", "192.168.1.5")
    assert (phone["peer"]["address"], laptop["peer"]["address"]) == ("10.77.0.2", "10.77.0.3")
    vpn.remove_peer(fw_paths, device, "phone")
    assert "51820" in nft_rules(netns_nft)
    vpn.remove_peer(fw_paths, device, "laptop")
    assert "51820" not in nft_rules(netns_nft)
    vpn.add_peer(fw_paths, device, "tablet", "192.168.1.5")
    vpn.disable(fw_paths, device)
    assert "51820" not in nft_rules(netns_nft)
    assert device.calls[0] == (False, True) and device.calls[-1] == (True, False)


def test_configs_parse_and_the_peer_key_is_not_kept(fw_paths: Paths, netns_nft, tmp_path: Path) -> None:
    device = RecordingDevice(fw_paths, netns_nft)
    vpn.enable(fw_paths, device, None)
    added = vpn.add_peer(fw_paths, device, "phone", "192.168.1.5")
    assert added["endpoint_is_local"] and "Endpoint = 192.168.1.5:51820" in added["config"]
    peer_private = next(line.split(" = ", 1)[1] for line in added["config"].splitlines()
                        if line.startswith("PrivateKey"))
    server_conf = fw_paths.wireguard / "wg0.conf"
    assert oct(server_conf.stat().st_mode & 0o777) == "0o600"
    for conf, text in (("wg0.conf", server_conf.read_text()), ("phone.conf", added["config"])):
        path = tmp_path / conf
        path.write_text(text)
        stripped = subprocess.run(["wg-quick", "strip", str(path)], capture_output=True, text=True,
                                  check=True).stdout
        assert "PrivateKey" in stripped and "Address" not in stripped
    assert peer_private not in "".join(p.read_text() for p in fw_paths.data.rglob("*") if p.is_file())
    assert added["peer"]["public_key"] in server_conf.read_text()


@pytest.mark.parametrize(("name", "says"), [("Phone", "peer name: expected"), ("a b", "peer name: expected"),
                                            ("x" * 33, "peer name: expected")])
def test_bad_peer_names_are_refused(name: str, says: str) -> None:
    with pytest.raises(CtlError, match=says):
        vpn.check_name(name)


def test_duplicate_and_unknown_peers_change_nothing(fw_paths: Paths, netns_nft) -> None:
    device = RecordingDevice(fw_paths, netns_nft)
    vpn.add_peer(fw_paths, device, "phone", "192.168.1.5")
    before = fw_paths.vpn_settings.read_text()
    with pytest.raises(CtlError, match="there is a peer named 'phone' already"):
        vpn.add_peer(fw_paths, device, "phone", "192.168.1.5")
    with pytest.raises(CtlError, match="no peer named 'tablet' \\(peers: phone\\)"):
        vpn.remove_peer(fw_paths, device, "tablet")
    assert fw_paths.vpn_settings.read_text() == before


@pytest.mark.parametrize(("change", "says"), [
    ({"name": "phone\nPostUp = touch /tmp/owned"}, "peer name: expected"),
    ({"public_key": "abc\nPostUp = id"}, "peer phone: public key: expected a WireGuard key"),
    ({"address": "10.99.0.2"}, "peer phone: expected an address in 10.77.0.0/24"),
])
def test_settings_read_from_the_file_are_checked(change: dict[str, str], says: str) -> None:
    _, public = vpn.keypair()
    peer = {"name": "phone", "public_key": public, "address": "10.77.0.2"} | change
    text = json.dumps({"enabled": True, "port": 51820, "subnet": "10.77.0.0/24", "peers": [peer]})
    with pytest.raises(CtlError, match=f"vpn.json: {says}"):
        vpn.parse_settings(text)
