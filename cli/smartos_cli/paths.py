"""Where a SmartOS device keeps things. Tests pass their own Paths (a temporary tree)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    data: Path = Path("/data")                       # the data partition: survives OS updates
    nftables_conf: Path = Path("/etc/nftables.conf")  # written by the firewall role
    firewall_defaults: Path = Path("/etc/smartos/firewall.json")  # the role's open ports

    @property
    def state(self) -> Path:
        """smartosctl's own settings (firewall rules, update channel, ...)."""
        return self.data / "smartos"

    @property
    def backups(self) -> Path:
        """Where `smartosctl backup create` writes unless told --to (root, group smartos-admin)."""
        return self.data / "backups"

    @property
    def backup_key(self) -> Path:
        """The device's backup key (root only): the password of backups made without one."""
        return self.state / "backup.key"

    @property
    def wifi(self) -> Path:
        """Wi-Fi settings and wpa_supplicant's file rendered from them (root only)."""
        return self.data / "wifi"

    @property
    def firewall_rules(self) -> Path:
        return self.state / "firewall.json"

    @property
    def vpn_settings(self) -> Path:
        return self.state / "vpn.json"

    @property
    def wireguard(self) -> Path:
        """/etc/wireguard links here (roles/vpn): keys and wg0.conf."""
        return self.data / "wireguard"

    @property
    def firewall_include(self) -> Path:
        """Rule files the role's ruleset includes ahead of its default ports."""
        return self.data / "firewall"
