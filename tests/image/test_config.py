"""Config: defaults load, overrides apply, and every bad value is named with what was expected."""

from pathlib import Path

import pytest
from smartos_image.config import Board, Suite, load_config
from smartos_image.errors import SmartOSError

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ0x2lqB8vQ4JH3n0QmYyKk7o5m3a0Lr1m0a1b2c3d4e test@host"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "smartos.yaml"
    path.write_text(text)
    return path


def test_defaults_are_valid_and_typed() -> None:
    cfg = load_config()
    assert cfg.board is Board.X86_64
    assert cfg.debian.suite is Suite.TRIXIE
    assert cfg.partitions.root == 2560
    assert cfg.homeassistant.version == "latest"


def test_user_file_overrides_and_resolves_key_files(tmp_path: Path) -> None:
    (tmp_path / "me.pub").write_text(KEY + "\n")
    cfg = load_config(write(tmp_path, "hostname: kitchen\npartitions: {root: 3GiB}\n"
                                      "admin: {ssh_key_files: [me.pub]}\n"))
    assert cfg.hostname == "kitchen"
    assert cfg.partitions.root == 3072
    assert cfg.authorized_keys() == [KEY]


def test_set_overrides_win_over_the_file(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "hostname: kitchen\n"), ("hostname=garage",))
    assert cfg.hostname == "garage"


@pytest.mark.parametrize(("text", "fragment"), [
    ("hostname: Bad_Name\n", "hostname: expected a DNS label"),
    ("hostnme: x\n", "unknown key 'hostnme'"),
    ("debian: {suite: buster}\n", "debian.suite: expected one of trixie, forky"),
    ("partitions: {root: 12}\n", "partitions.root: expected a size"),
    ("partitions: {root: 100MiB}\n", "partitions.root: expected at least 1536MiB"),
    ("compress: maybe\n", "compress: expected true or false"),
    ("extra_packages: ffmpeg\n", "extra_packages: expected a list of strings"),
    ("homeassistant: {version: 2026.2}\n", "homeassistant.version: expected 'latest' or a release"),
    ("debian: {mirror: ftp.debian.org}\n", "debian.mirror: expected an http:// or https:// URL"),
    ("admin: {ssh_keys: ['not a key']}\n", "admin.ssh_keys[0]: expected an OpenSSH public key"),
    ("admin: {ssh_key_files: [missing.pub]}\n", "admin.ssh_key_files: expected a readable public key file"),
    ("admin: {user: root}\n", "admin.user: expected a lower-case login name other than root"),
    ("board: rpi9\n", "board: expected one of x86-64"),
    ("timezone: Mars/Base\n", "timezone: expected a tz database name"),
    ("hostname: a: b\n", "not valid YAML (line 1"),
    ("- a\n- b\n", "expected a mapping of settings"),
])
def test_bad_values_name_the_file_key_and_expectation(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SmartOSError) as err:
        load_config(path)
    assert fragment in str(err.value)
    assert str(path) in str(err.value)


def test_bad_set_override_names_the_override() -> None:
    with pytest.raises(SmartOSError, match=r"--set hostname=-x: hostname: expected a DNS label"):
        load_config(None, ("hostname=-x",))
    with pytest.raises(SmartOSError, match="expected KEY=VALUE"):
        load_config(None, ("hostname",))


def test_missing_config_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(SmartOSError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_a_release_at_another_version_reuses_the_configured_tree(tmp_path: Path) -> None:
    """The roles' cache key is their variables: the version must not be one of them, or every
    `smartos release` would apply the roles again (the version is written after them)."""
    from rich.console import Console
    from smartos_image import stages
    from smartos_image.context import Context

    def variables(version: str) -> object:
        cfg = load_config(None, (f"version={version}", "admin.ssh_keys=['ssh-ed25519 AAAA test']"))
        return stages._ansible_vars(Context(config=cfg, workdir=tmp_path, logfile=tmp_path / "log",
                                            console=Console()))

    assert variables("0.1.0") == variables("0.2.0")
    assert "0.2.0" not in str(variables("0.2.0"))
