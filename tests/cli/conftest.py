"""Fixtures for smartosctl's library: a network namespace with its own nftables, the firewall
role's real ruleset rendered into a temporary tree."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import jinja2
import pytest
import yaml
from smartos_cli.paths import Paths

from tests.conftest import REPO, needs_root


@pytest.fixture
def netns_nft() -> Iterator[tuple[str, ...]]:
    """`nft` inside a fresh network namespace: the kernel's real nftables, not this host's."""
    needs_root()
    name = f"smartos-test-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield ("ip", "netns", "exec", name, "nft")
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


@pytest.fixture
def fw_paths(tmp_path: Path) -> Paths:
    """The firewall role's nftables.conf and default ports, pointed at a temporary /data."""
    role = REPO / "roles" / "firewall"
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    defaults["firewall__include_dir"] = str(tmp_path / "data" / "firewall")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(role / "templates"), keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["comment"] = lambda text: f"# {text}"
    env.filters["to_json"] = json.dumps  # the two Ansible filters the templates use
    paths = Paths(data=tmp_path / "data", nftables_conf=tmp_path / "nftables.conf",
                  firewall_defaults=tmp_path / "firewall.json")
    paths.nftables_conf.write_text(env.get_template("etc/nftables.conf.j2").render(
        ansible_managed="test", **defaults))
    paths.firewall_defaults.write_text(env.get_template("etc/smartos/firewall.json.j2").render(
        ansible_managed="test", **defaults))
    json.loads(paths.firewall_defaults.read_text())
    paths.firewall_include.mkdir(parents=True)
    return paths
