"""WireGuard for reaching the box from outside (`smartosctl vpn`): the phone or laptop becomes a
peer of wg0 on the device, with an address in the VPN's subnet; Home Assistant and ssh answer
on the device's VPN address. The VPN's UDP port is open in the firewall only while the VPN is
enabled and has at least one peer.

Settings live on the data partition (they survive updates): /data/smartos/vpn.json (enabled,
port, endpoint, peers: name, public key, address) and /data/wireguard (the device's private key,
wg0.conf rendered from the settings, read by wg-quick@wg0). A peer's private key is made on the
device, shown once (config text and QR code) and not kept.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .errors import CtlError, Exit
from .files import write_atomically
from .paths import Paths
from .run import run

INTERFACE = "wg0"
DEFAULT_PORT = 51820
DEFAULT_SUBNET = "10.77.0.0/24"
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
FIREWALL_FILE = "40-vpn.nft"


@dataclass(frozen=True)
class Peer:
    name: str
    public_key: str
    address: str


@dataclass(frozen=True)
class Settings:
    enabled: bool = False
    port: int = DEFAULT_PORT
    subnet: str = DEFAULT_SUBNET
    endpoint: str = ""
    peers: tuple[Peer, ...] = field(default_factory=tuple)

    @property
    def device_address(self) -> str:
        net = ipaddress.ip_network(self.subnet)
        return f"{next(net.hosts())}/{net.prefixlen}"

    @property
    def port_open(self) -> bool:
        return self.enabled and bool(self.peers)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "device_address": self.device_address, "port_open": self.port_open}


def keypair() -> tuple[str, str]:
    """A WireGuard key pair (Curve25519), base64 as `wg genkey`/`wg pubkey` write them."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    key = X25519PrivateKey.generate()
    raw = serialization.Encoding.Raw
    private = key.private_bytes(raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    public = key.public_key().public_bytes(raw, serialization.PublicFormat.Raw)
    return base64.b64encode(private).decode(), base64.b64encode(public).decode()


def public_of(private_b64: str) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    key = X25519PrivateKey.from_private_bytes(base64.b64decode(private_b64))
    raw = serialization.Encoding.Raw
    return base64.b64encode(key.public_key().public_bytes(raw, serialization.PublicFormat.Raw)).decode()


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise CtlError(f"peer name: expected 1-32 lower-case letters, digits or '-' (e.g. phone, "
                       f"laptop-anna), got {name!r}")
    return name


def parse_endpoint(text: str) -> str:
    """HOST or HOST:PORT (a public address or a dynamic-DNS name the peers dial)."""
    host = text.strip()
    if not host or any(c.isspace() for c in host) or host.count(":") > 1 and not host.startswith("["):
        raise CtlError(f"--endpoint: expected HOST or HOST:PORT (e.g. home.example.net), got {text!r}")
    return host


def load(paths: Paths) -> Settings:
    if not paths.vpn_settings.exists():
        return Settings()
    raw = json.loads(paths.vpn_settings.read_text())
    return Settings(enabled=raw["enabled"], port=raw["port"], subnet=raw["subnet"],
                    endpoint=raw.get("endpoint", ""), peers=tuple(Peer(**p) for p in raw["peers"]))


def _server_private(paths: Paths) -> str:
    key_file = paths.wireguard / "server.key"
    if not key_file.exists():
        private, _ = keypair()
        write_atomically(key_file, private + "\n", 0o600)
    return key_file.read_text().strip()


def render(settings: Settings, server_private: str) -> str:
    lines = ["# Written by smartosctl vpn from /data/smartos/vpn.json: change it with smartosctl.",
             "[Interface]", f"Address = {settings.device_address}", f"ListenPort = {settings.port}",
             f"PrivateKey = {server_private}"]
    for peer in settings.peers:
        lines += ["", f"# {peer.name}", "[Peer]", f"PublicKey = {peer.public_key}",
                  f"AllowedIPs = {peer.address}/32"]
    return "\n".join(lines) + "\n"


def peer_config(settings: Settings, peer: Peer, private: str, server_public: str, endpoint: str) -> str:
    """What the phone app imports (text or QR code)."""
    return "\n".join([
        "[Interface]", f"PrivateKey = {private}",
        f"Address = {peer.address}/32", "",
        "[Peer]", f"PublicKey = {server_public}",
        f"AllowedIPs = {ipaddress.ip_network(settings.subnet)}",
        f"Endpoint = {endpoint if ':' in endpoint else f'{endpoint}:{settings.port}'}",
        "PersistentKeepalive = 25", ""])


def _next_address(settings: Settings) -> str:
    net = ipaddress.ip_network(settings.subnet)
    used = {settings.device_address.split("/")[0], *(p.address for p in settings.peers)}
    for host in net.hosts():
        if str(host) not in used:
            return str(host)
    raise CtlError(f"no free address left in {settings.subnet}", code=Exit.FAILED)


class Device:
    """What changes outside the settings files: wg-quick@wg0 and the firewall's VPN file."""

    def __init__(self, paths: Paths, nft: tuple[str, ...] = ("nft",)) -> None:
        self.paths = paths
        self.nft = nft

    def apply(self, before: Settings, after: Settings) -> None:
        self.interface(before, after)
        self.firewall(before, after)

    def interface(self, before: Settings, after: Settings) -> None:
        unit = f"wg-quick@{INTERFACE}.service"
        if after.enabled and not before.enabled:
            run(["systemctl", "enable", "--now", unit])
        elif before.enabled and not after.enabled:
            run(["systemctl", "disable", "--now", unit])
        elif after.enabled:
            stripped = run(["wg-quick", "strip", INTERFACE]).stdout
            run(["wg", "syncconf", INTERFACE, "/dev/stdin"], input_text=stripped)

    def firewall(self, before: Settings, after: Settings) -> None:
        rule = self.paths.firewall_include / FIREWALL_FILE
        if after.port_open == before.port_open and after.port == before.port and \
                rule.exists() == after.port_open:
            return
        if after.port_open:
            write_atomically(rule, f"# smartosctl vpn: WireGuard, while enabled with peers\n"
                         f'udp dport {after.port} accept comment "smartosctl vpn"\n', 0o644)
        else:
            rule.unlink(missing_ok=True)
        run([*self.nft, "-f", str(self.paths.nftables_conf)])


def _save(paths: Paths, before: Settings, after: Settings, device: Device) -> Settings:
    """Settings and wg0.conf first, then the live changes; if those fail, the files go back."""
    old_files = {p: p.read_text() if p.exists() else None
                 for p in (paths.vpn_settings, paths.wireguard / f"{INTERFACE}.conf")}
    write_atomically(paths.vpn_settings, json.dumps(asdict(after), indent=2) + "\n", 0o644)
    write_atomically(paths.wireguard / f"{INTERFACE}.conf", render(after, _server_private(paths)), 0o600)
    try:
        device.apply(before, after)
    except BaseException:
        for path, text in old_files.items():
            if text is None:
                path.unlink(missing_ok=True)
            else:
                write_atomically(path, text, 0o600 if path.suffix == ".conf" else 0o644)
        raise
    return after


def enable(paths: Paths, device: Device, endpoint: str | None = None) -> Settings:
    before = load(paths)
    after = replace(before, enabled=True, endpoint=parse_endpoint(endpoint) if endpoint else before.endpoint)
    return _save(paths, before, after, device)


def disable(paths: Paths, device: Device) -> Settings:
    before = load(paths)
    return _save(paths, before, replace(before, enabled=False), device)


def add_peer(paths: Paths, device: Device, name: str, fallback_endpoint: str) -> dict[str, Any]:
    """Add a peer; returns the settings and the peer's config (with its private key, shown once)."""
    before = load(paths)
    check_name(name)
    if any(p.name == name for p in before.peers):
        raise CtlError(f"there is a peer named {name!r} already", hint="smartosctl vpn show")
    private, public = keypair()
    peer = Peer(name, public, _next_address(before))
    after = replace(before, peers=(*before.peers, peer))
    _save(paths, before, after, device)
    endpoint = after.endpoint or fallback_endpoint
    config = peer_config(after, peer, private, public_of(_server_private(paths)), endpoint)
    return {**after.as_dict(), "peer": asdict(peer), "config": config,
            "endpoint_is_local": not after.endpoint}


def remove_peer(paths: Paths, device: Device, name: str) -> Settings:
    before = load(paths)
    if not any(p.name == name for p in before.peers):
        known = ", ".join(p.name for p in before.peers) or "none"
        raise CtlError(f"no peer named {name!r} (peers: {known})")
    after = replace(before, peers=tuple(p for p in before.peers if p.name != name))
    return _save(paths, before, after, device)
