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
    if not _NAME.fullmatch(name):
        raise CtlError(f"peer name: expected 1-32 lower-case letters, digits or '-' (e.g. phone, "
                       f"laptop-anna), got {name!r}")
    return name


def parse_endpoint(text: str) -> str:
    """HOST or HOST:PORT (a public address or a dynamic-DNS name the peers dial)."""
    host = text.strip()
    if not host or any(c.isspace() for c in host) or host.count(":") > 1 and not host.startswith("["):
        raise CtlError(f"--endpoint: expected HOST or HOST:PORT (e.g. home.example.net), got {text!r}")
    return host


def check_key(text: str, what: str = "public key") -> str:
    """A WireGuard key as wg writes it: base64 of 32 bytes."""
    try:
        if len(base64.b64decode(text, validate=True)) == 32 and len(text) == 44:
            return text
    except (ValueError, TypeError):
        pass
    raise CtlError(f"{what}: expected a WireGuard key (44 characters of base64), got {text!r}")


def _peer(raw: object, subnet: ipaddress.IPv4Network | ipaddress.IPv6Network) -> Peer:
    if not isinstance(raw, dict) or set(raw) != {"name", "public_key", "address"}:
        raise CtlError(f"peers: expected name, public_key and address, got {raw!r}")
    name, key, address = (str(raw[k]) if isinstance(raw[k], str) else "" for k in
                          ("name", "public_key", "address"))
    check_name(name)
    check_key(key, f"peer {name}: public key")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        ip = None
    if ip is None or ip not in subnet or str(ip) != address:
        raise CtlError(f"peer {name}: expected an address in {subnet}, got {raw['address']!r}")
    return Peer(name, key, address)


def parse_settings(text: str, where: str = "vpn.json") -> Settings:
    """vpn.json, checked field by field (the names and keys end up in wg0.conf)."""
    try:
        raw = json.loads(text)
        fields = {"enabled", "port", "subnet", "endpoint", "peers"}
        if not isinstance(raw, dict) or not set(raw) <= fields or \
                not {"enabled", "port", "subnet", "peers"} <= set(raw):
            raise CtlError(f"expected the fields {', '.join(sorted(fields))}")
        if not isinstance(raw["enabled"], bool):
            raise CtlError(f"enabled: expected true or false, got {raw['enabled']!r}")
        if type(raw["port"]) is not int or not 1 <= raw["port"] <= 65535:
            raise CtlError(f"port: expected 1-65535, got {raw['port']!r}")
        try:
            subnet = ipaddress.ip_network(str(raw["subnet"]))
        except ValueError:
            raise CtlError(f"subnet: expected a network such as {DEFAULT_SUBNET}, "
                           f"got {raw['subnet']!r}") from None
        if not isinstance(raw["subnet"], str) or subnet.num_addresses < 4:
            raise CtlError(f"subnet: expected a network such as {DEFAULT_SUBNET}, got {raw['subnet']!r}")
        endpoint = raw.get("endpoint", "")
        if not isinstance(endpoint, str) or endpoint and parse_endpoint(endpoint) != endpoint:
            raise CtlError(f"endpoint: expected HOST or HOST:PORT, got {endpoint!r}")
        if not isinstance(raw["peers"], list):
            raise CtlError("peers: expected a list")
        peers = tuple(_peer(p, subnet) for p in raw["peers"])
        settings = Settings(enabled=raw["enabled"], port=raw["port"], subnet=str(subnet),
                            endpoint=endpoint, peers=peers)
        if len({p.name for p in peers}) != len(peers) or \
                len({p.address for p in peers} | {settings.device_address.split("/")[0]}) != len(peers) + 1:
            raise CtlError("peers: expected each name and address once (and not the device's)")
        return settings
    except (ValueError, CtlError) as exc:
        raise CtlError(f"{where}: {exc}") from None


def load(paths: Paths) -> Settings:
    if not paths.vpn_settings.exists():
        return Settings()
    return parse_settings(paths.vpn_settings.read_text(), str(paths.vpn_settings))


def _server_private(paths: Paths) -> str:
    key_file = paths.wireguard / "server.key"
    if not key_file.exists():
        private, _ = keypair()
        write_atomically(key_file, private + "\n", 0o600)
    return check_key(key_file.read_text().strip(), str(key_file))


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
        write_firewall_file(self.paths, after)
        run([*self.nft, "-f", str(self.paths.nftables_conf)])


def write_firewall_file(paths: Paths, settings: Settings) -> None:
    """The VPN's rule file under /data/firewall, from the settings (loaded by the caller)."""
    rule = paths.firewall_include / FIREWALL_FILE
    if settings.port_open:
        write_atomically(rule, f"# smartosctl vpn: WireGuard, while enabled with peers\n"
                         f'udp dport {settings.port} accept comment "smartosctl vpn"\n', 0o644)
    else:
        rule.unlink(missing_ok=True)


def write_config(paths: Paths, settings: Settings) -> None:
    """wg0.conf from the settings and the device's key (made if there is none)."""
    write_atomically(paths.wireguard / f"{INTERFACE}.conf", render(settings, _server_private(paths)), 0o600)


def _save(paths: Paths, before: Settings, after: Settings, device: Device) -> Settings:
    """Settings and wg0.conf first, then the live changes; if those fail, the files go back."""
    old_files = {p: p.read_text() if p.exists() else None
                 for p in (paths.vpn_settings, paths.wireguard / f"{INTERFACE}.conf")}
    write_atomically(paths.vpn_settings, json.dumps(asdict(after), indent=2) + "\n", 0o644)
    write_config(paths, after)
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
