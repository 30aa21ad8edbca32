"""smartos-localnets: the subnets this box is attached to count as local for the firewall.

The firewall opens ssh, Home Assistant and mDNS only to local sources (roles/firewall). Private,
link-local and unique local networks are a fixed list; the prefixes of the box's own global
addresses (an IPv6 /64 the router advertises, a public IPv4 LAN) are known only at run time.
This service watches the kernel's addresses (`ip monitor address`), writes those prefixes as
nft elements into its run-time directory, which the ruleset includes, and reloads the ruleset
when they change. A prefix wider than MIN_PREFIX is ignored: a hostile DHCP server or router on
the LAN must not be able to declare half the internet local.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .files import write_atomically
from .paths import Paths
from .run import follow, run

MIN_PREFIX = {4: 16, 6: 48}
RULES_FILE = "attached.nft"

log = logging.getLogger("smartos-localnets")


def attached(links: Iterable[dict[str, Any]]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The networks of the global addresses in `ip -j address` output (loopback left out)."""
    nets: set[ipaddress.IPv4Network | ipaddress.IPv6Network] = set()
    for link in links:
        if link.get("ifname") == "lo":
            continue
        for addr in link.get("addr_info", []):
            if addr.get("scope") != "global" or "local" not in addr:
                continue
            net = ipaddress.ip_network(f"{addr['local']}/{addr['prefixlen']}", strict=False)
            if net.prefixlen < MIN_PREFIX[net.version]:
                log.warning("%s on %s is wider than /%d: not counted as local", net,
                            link.get("ifname"), MIN_PREFIX[net.version])
                continue
            nets.add(net)
    return sorted(nets, key=lambda n: (n.version, n))


def render(nets: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> str:
    lines = ["# Written by smartos-localnets.service: the subnets this box is attached to."]
    for version, name in ((4, "local4"), (6, "local6")):
        ours = [str(n) for n in nets if n.version == version]
        if ours:
            lines.append(f"add element inet smartos {name} {{ {', '.join(ours)} }}")
    return "\n".join(lines) + "\n"


def sync(paths: Paths, run_dir: Path, nft: Sequence[str] = ("nft",),
         ip: Sequence[str] = ("ip",)) -> bool:
    """Bring the ruleset's attached subnets up to date; whether anything changed."""
    nets = attached(json.loads(run([*ip, "-j", "address", "show"]).stdout or "[]"))
    text = render(nets)
    target = run_dir / RULES_FILE
    if target.exists() and target.read_text() == text:
        return False
    previous = target.read_text() if target.exists() else None
    write_atomically(target, text)
    result = run([*nft, "-f", paths.nftables_conf], check=False)
    if result.returncode != 0:
        log.error("nft refused the attached subnets, kept the previous ones: %s", result.stderr.strip())
        if previous is None:
            target.unlink()
        else:
            write_atomically(target, previous)
        return False
    log.info("attached subnets, local for the firewall: %s", ", ".join(map(str, nets)) or "none")
    return True


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "/run/smartos-localnets")
    paths = Paths()
    sync(paths, run_dir)
    for _ in follow(["ip", "monitor", "address"]):
        sync(paths, run_dir)


if __name__ == "__main__":
    main()
