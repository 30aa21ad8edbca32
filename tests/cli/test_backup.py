"""smartosctl backup: encrypted archives of Home Assistant's config and SmartOS's settings,
made and restored with the real gpg, tar, SQLite and (in a network namespace) nft; a wrong
password, a damaged archive or a hostile one (made with the right password by someone else)
changes nothing."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
from smartos_cli import backup, firewall, vpn
from smartos_cli.errors import CtlError
from smartos_cli.paths import Paths

from tests.conftest import needs_root

PASSWORD = "correct horse battery"


def tree_state(data: Path) -> dict[str, bytes]:
    return {str(p.relative_to(data)): p.read_bytes() for p in sorted(data.rglob("*"))
            if p.is_file() and ".restore" not in str(p)}


def tree_hash(root: Path) -> str:
    """Names, types, modes, owners and contents of everything below root (links not followed)."""
    h = hashlib.sha256()
    for where, dirs, names in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted([*dirs, *names]):
            path = Path(where) / name
            st = path.lstat()
            h.update(f"{path.relative_to(root)} {st.st_mode:o} {st.st_uid} {st.st_gid}\n".encode())
            if stat.S_ISREG(st.st_mode):
                h.update(path.read_bytes())
            elif stat.S_ISLNK(st.st_mode):
                h.update(os.readlink(path).encode())
    return h.hexdigest()


def make_paths(tmp_path: Path) -> Paths:
    needs_root()  # restore sets owners
    paths = Paths(data=tmp_path / "data", nftables_conf=tmp_path / "nftables.conf",
                  firewall_defaults=tmp_path / "firewall-defaults.json")
    root = paths.data
    (root / "homeassistant" / ".storage").mkdir(parents=True)
    (root / "homeassistant" / "configuration.yaml").write_text("default_config:\n")
    (root / "homeassistant" / ".storage" / "core.config_entries").write_text('{"entries": []}')
    (root / "homeassistant" / "home-assistant.log").write_text("not backed up\n")
    (root / "smartos").mkdir()
    (root / "smartos" / "firewall.json").write_text('{"version": 1, "rules": []}\n')
    (root / "smartos" / "machine-id").write_text("this device\n")
    (root / "wireguard").mkdir(mode=0o700)
    (root / "wireguard" / "wg0.conf").write_text("[Interface]\nPrivateKey = secret\n")
    return paths


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return make_paths(tmp_path)


class Recorder:
    def __init__(self, fail_start: bool = False) -> None:
        self.calls: list[str] = []
        self.fail_start = fail_start

    def hooks(self) -> backup.Hooks:
        return backup.Hooks(stop=lambda: self.calls.append("stop"), start=self._start, owners={})

    def _start(self) -> None:
        self.calls.append("start")
        if self.fail_start and self.calls.count("start") == 1:
            raise RuntimeError("Home Assistant did not start")


def craft(paths: Paths, entries: list[tuple[tarfile.TarInfo, bytes]], password: str = PASSWORD,
          name: str = "smartos-elsewhere-20260101-000000.tar.gz.gpg") -> Path:
    """An archive someone else made with the right password: a manifest that matches, then
    whatever entries they chose, encrypted with the real gpg."""
    files = {i.name: hashlib.sha256(blob).hexdigest() for i, blob in entries if i.isreg()}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        manifest = json.dumps({"format": 1, "created": "2026-01-01T00:00:00Z", "hostname": "x",
                               "files": files}).encode()
        info = tarfile.TarInfo("MANIFEST.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
        for info, blob in entries:
            tar.addfile(info, io.BytesIO(blob) if info.isreg() else None)
    backup.backup_dir(paths)
    out = paths.backups / name
    home = paths.data.parent / "gnupg"
    home.mkdir(mode=0o700, exist_ok=True)
    subprocess.run(["gpg", "--homedir", home, "--batch", "--yes", "--pinentry-mode", "loopback",
                    "--passphrase", password, "--symmetric", "--output", out],
                   input=buf.getvalue(), check=True, capture_output=True)
    subprocess.run(["gpgconf", "--homedir", home, "--kill", "gpg-agent"], check=False)
    return out


def entry(name: str, blob: bytes = b"", kind: bytes = tarfile.REGTYPE,
          link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    info.size = len(blob) if kind == tarfile.REGTYPE else 0
    return info, blob


def test_round_trip_restores_what_changed_and_keeps_the_device_identity(paths: Paths) -> None:
    data = paths.data
    info = backup.create(paths, PASSWORD, facts={"smartos": "0.1.0"})
    assert info.name.startswith("smartos-") and info.name.endswith(".tar.gz.gpg")
    assert Path(info.path).parent == paths.backups
    assert oct(os.stat(info.path).st_mode & 0o777) == "0o640"
    assert oct(paths.backups.stat().st_mode & 0o777) == "0o750"
    before = tree_state(data)
    (data / "homeassistant" / "configuration.yaml").write_text("broken: [\n")
    (data / "homeassistant" / "automations.yaml").write_text("- id: new\n")
    (data / "smartos" / "firewall.json").unlink()
    rec = Recorder()
    result = backup.restore(paths, Path(info.path), PASSWORD, rec.hooks())
    after = tree_state(data)
    before.pop("homeassistant/home-assistant.log")  # logs are not part of a backup
    # wg0.conf is never taken from a backup, and there are no VPN settings to render it from
    before.pop("wireguard/wg0.conf")
    assert {k: v for k, v in after.items() if not k.startswith(("firewall/", "backups/"))} == \
        {k: v for k, v in before.items() if not k.startswith(("firewall/", "backups/"))}
    assert result["left_out"] == ["wireguard/wg0.conf (rendered again from the restored settings)"]
    assert rec.calls == ["stop", "start"]
    assert result["files"] == 3
    assert oct((data / "wireguard").stat().st_mode & 0o777) == "0o700"
    assert not list(data.glob(".restore*")) and not list(data.glob(".backup-*"))


def test_any_computer_opens_it_with_gpg_and_tar(paths: Paths, tmp_path: Path) -> None:
    info = backup.create(paths, PASSWORD)
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    out = tmp_path / "open"
    out.mkdir()
    gpg = subprocess.run(["gpg", "--homedir", home, "--batch", "--pinentry-mode", "loopback",
                          "--passphrase", PASSWORD, "-d", info.path], capture_output=True, check=True)
    subprocess.run(["tar", "xz", "-C", out], input=gpg.stdout, check=True)
    assert (out / "MANIFEST.json").exists()
    assert (out / "homeassistant/configuration.yaml").read_text() == "default_config:\n"
    assert not (out / "smartos/machine-id").exists()
    subprocess.run(["gpgconf", "--homedir", home, "--kill", "gpg-agent"], check=False)


def test_a_database_in_use_is_backed_up_consistently(paths: Paths) -> None:
    """Rows still in the write-ahead log (Home Assistant's recorder, running) are in the backup."""
    db = paths.data / "homeassistant" / "home-assistant_v2.db"
    live = sqlite3.connect(db)
    live.execute("PRAGMA journal_mode=WAL")
    live.execute("PRAGMA wal_autocheckpoint=0")
    live.execute("CREATE TABLE states (id INTEGER PRIMARY KEY, state TEXT)")
    live.executemany("INSERT INTO states (state) VALUES (?)", [("on",)] * 500)
    live.commit()
    assert (paths.data / "homeassistant" / "home-assistant_v2.db-wal").stat().st_size > 0
    info = backup.create(paths, PASSWORD)
    live.close()
    db.unlink()
    backup.restore(paths, Path(info.path), PASSWORD, Recorder().hooks())
    assert sqlite3.connect(db).execute("SELECT count(*) FROM states").fetchone() == (500,)


@pytest.mark.parametrize("damage", ["wrong password", "flipped byte", "truncated", "not a backup"])
def test_bad_archives_change_nothing(paths: Paths, damage: str) -> None:
    info = backup.create(paths, PASSWORD)
    path = Path(info.path)
    blob = path.read_bytes()
    password = PASSWORD
    if damage == "wrong password":
        password = "not the password"
    elif damage == "flipped byte":
        mid = len(blob) // 2
        path.write_bytes(blob[:mid] + bytes([blob[mid] ^ 0x40]) + blob[mid + 1:])
    elif damage == "truncated":
        path.write_bytes(blob[:len(blob) * 2 // 3])
    else:
        path.write_bytes(b"hello, this is not an OpenPGP file" * 100)
    before = tree_hash(paths.data)
    rec = Recorder()
    with pytest.raises(CtlError) as err:
        backup.restore(paths, path, password, rec.hooks())
    assert "nothing changed" in err.value.message
    assert ("wrong password" in err.value.message) == (damage == "wrong password")
    assert tree_hash(paths.data) == before and rec.calls == []


MALICIOUS_PEER = {"enabled": True, "port": 51820, "subnet": "10.77.0.0/24", "endpoint": "",
                  "peers": [{"name": "phone\nPostUp = touch /tmp/owned",
                             "public_key": "x" * 43 + "=", "address": "10.77.0.2"}]}


@pytest.mark.parametrize(("entries", "says"), [
    ([entry("homeassistant/evil", kind=tarfile.SYMTYPE, link="/etc/shadow")], "a link"),
    ([entry("homeassistant/configuration.yaml", b"x"),
      entry("homeassistant/hard", kind=tarfile.LNKTYPE, link="homeassistant/configuration.yaml")],
     "a link"),
    ([entry("homeassistant/dev", kind=tarfile.CHRTYPE)], "not a file or directory"),
    ([entry("homeassistant/../../etc/cron.d/x", b"* * * * * root id\n")], "'..'"),
    ([entry("/etc/cron.d/x", b"* * * * * root id\n")], "absolute"),
    ([entry("etc/passwd", b"root::0:0::/:/bin/sh\n")], "unexpected entry 'etc/passwd'"),
    ([entry("smartos/firewall.json", b'{"version": 1, "rules": [{"action": "allow", "proto": "tcp",'
            b' "first_port": 1, "last_port": 65535, "source": "0.0.0.0/0; flush ruleset"}]}')],
     "firewall.json: --from: expected"),
    ([entry("smartos/vpn.json", json.dumps(MALICIOUS_PEER).encode())], "vpn.json: peer name: expected"),
    ([entry("smartos/update.json", b'{"url": "https://evil.example", "compatible": "anything"}')],
     "update.json: expected only channel, policy and url"),
    ([entry("smartos/hostname", b"kitchen; reboot\n")], "hostname: hostname: expected"),
    ([entry("wifi/wifi.json", b'{"ssid": "x", "psk": "nothex", "country": "DE"}')], "wifi.json: psk"),
    ([entry("wireguard/server.key", b"not a key\n")], "server.key: expected a WireGuard key"),
])
def test_hostile_archives_are_refused_and_change_nothing(
        paths: Paths, entries: list[tuple[tarfile.TarInfo, bytes]], says: str) -> None:
    path = craft(paths, [entry("homeassistant/configuration.yaml", b"owned: true\n"), *entries]
                 if not any(i.name == "homeassistant/configuration.yaml" for i, _ in entries) else entries)
    before = tree_hash(paths.data)
    rec = Recorder()
    with pytest.raises(CtlError) as err:
        backup.restore(paths, path, PASSWORD, rec.hooks())
    assert says in err.value.message and "nothing changed" in err.value.message
    assert tree_hash(paths.data) == before and rec.calls == []
    assert not Path("/tmp/owned").exists()


def test_size_limits_are_named_and_change_nothing(paths: Paths) -> None:
    path = craft(paths, [entry("homeassistant/big.bin", bytes(3 << 20))])  # compresses to little
    before = tree_hash(paths.data)
    with pytest.raises(CtlError, match="unpacks to more than 2 MiB, the most a restore takes"):
        backup.restore(paths, path, PASSWORD, Recorder().hooks(), backup.Limits(unpacked_bytes=2 << 20))
    with pytest.raises(CtlError, match=r"the backup is \d+ bytes, more than the 100 bytes"):
        backup.restore(paths, path, PASSWORD, Recorder().hooks(), backup.Limits(archive_bytes=100))
    assert tree_hash(paths.data) == before


def test_a_valid_restore_renders_wg0_and_the_firewall_from_settings(fw_paths: Paths, netns_nft) -> None:
    """wg0.conf with a PostUp in the archive is not taken: wg0.conf is rendered from vpn.json and
    the key; the kernel then enforces exactly the restored rules and the VPN's port."""
    paths = fw_paths
    (paths.data / "homeassistant").mkdir()
    private, public = vpn.keypair()
    settings = {"enabled": True, "port": 51820, "subnet": "10.77.0.0/24", "endpoint": "",
                "peers": [{"name": "phone", "public_key": public, "address": "10.77.0.2"}]}
    rules = {"version": 1, "rules": [{"action": "allow", "proto": "tcp", "first_port": 1883,
                                      "last_port": 1883, "source": "192.168.1.0/24"}]}
    path = craft(paths, [
        entry("homeassistant/configuration.yaml", b"default_config:\n"),
        entry("smartos/firewall.json", json.dumps(rules).encode()),
        entry("smartos/vpn.json", json.dumps(settings).encode()),
        entry("smartos/other-file", b"anything\n"),
        entry("wireguard/server.key", f"{private}\n".encode()),
        entry("wireguard/wg0.conf", b"[Interface]\nPostUp = touch /tmp/owned\n"),
        entry("wifi/wpa_supplicant-wlan0.conf", b"network={\n ssid=\"evil\"\n}\n"),
        entry("network/10-evil.network", b"[Match]\nName=*\n"),
    ])
    hooks = backup.Hooks(stop=lambda: None, owners={}, start=lambda: subprocess.run(
        [*netns_nft, "-f", paths.nftables_conf], check=True))
    result = backup.restore(paths, path, PASSWORD, hooks)
    wg0 = (paths.wireguard / "wg0.conf").read_text()
    assert wg0 == vpn.render(vpn.load(paths), private) and "PostUp" not in wg0
    assert not (paths.wifi / "wpa_supplicant-wlan0.conf").exists()
    assert not (paths.data / "network" / "10-evil.network").exists()
    assert not (paths.state / "other-file").exists()
    assert len(result["left_out"]) == 4
    live = subprocess.run([*netns_nft, "list", "ruleset"], capture_output=True, text=True, check=True).stdout
    shown = firewall.load(paths)
    assert [r.describe() for r in shown.rules] == ["allow 1883/tcp from 192.168.1.0/24"]
    assert 'ip saddr 192.168.1.0/24 tcp dport 1883 accept comment "smartosctl rule 1"' in live
    assert 'udp dport 51820 accept comment "smartosctl vpn"' in live
    assert oct((paths.wireguard / "wg0.conf").stat().st_mode & 0o777) == "0o600"
    assert oct((paths.state / "firewall.json").stat().st_mode & 0o777) == "0o644"


def test_a_restore_that_fails_late_puts_the_previous_state_back(paths: Paths) -> None:
    info = backup.create(paths, PASSWORD)
    (paths.data / "homeassistant" / "configuration.yaml").write_text("changed after the backup\n")
    before = tree_hash(paths.data)
    rec = Recorder(fail_start=True)
    with pytest.raises(RuntimeError):
        backup.restore(paths, Path(info.path), PASSWORD, rec.hooks())
    assert tree_hash(paths.data) == before
    assert rec.calls == ["stop", "start", "start"]  # and Home Assistant is started on the old state


def test_the_device_key_makes_and_restores_a_backup_and_is_not_in_it(paths: Paths) -> None:
    info = backup.create(paths, "")
    key = paths.backup_key.read_text().strip()
    assert oct(paths.backup_key.stat().st_mode & 0o777) == "0o600" and len(key) >= 24
    assert backup.device_key(paths) == key  # made once
    with pytest.raises(CtlError, match="wrong password"):
        backup.restore(paths, Path(info.path), "not the device key", Recorder().hooks())
    result = backup.restore(paths, Path(info.path), "", Recorder().hooks())
    assert paths.backup_key.read_text().strip() == key  # this device's own, kept
    assert "smartos/backup.key" not in str(result)


def test_restore_takes_a_name_in_the_backup_directory_only(paths: Paths, tmp_path: Path) -> None:
    info = backup.create(paths, PASSWORD)
    elsewhere = tmp_path / info.name
    elsewhere.write_bytes(Path(info.path).read_bytes())
    for name in (str(elsewhere), f"../{info.name}", "smartos-x.tar.gz.gpg/../../etc"):
        with pytest.raises(CtlError, match="not a path"):
            backup.find(paths.backups, name)
    assert backup.find(paths.backups, info.name) == Path(info.path)


def test_an_unknown_name_lists_no_other_backups(paths: Paths) -> None:
    info = backup.create(paths, PASSWORD)
    with pytest.raises(CtlError) as err:
        backup.delete(paths.backups, "smartos-nope-20260101-000000.tar.gz.gpg")
    assert info.name not in str(err.value)


def test_create_follows_no_link(paths: Paths, tmp_path: Path) -> None:
    """A link Home Assistant's user plants is not followed into the backup; a /data/backups that
    is a link is refused (nothing written where it points)."""
    secret = tmp_path / "shadow"
    secret.write_text("root:secret-hash\n")
    (paths.data / "homeassistant" / "shadow-link").symlink_to(secret)
    (paths.data / "homeassistant" / "etc").symlink_to(tmp_path)
    info = backup.create(paths, PASSWORD)
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    gpg = subprocess.run(["gpg", "--homedir", home, "--batch", "--pinentry-mode", "loopback",
                          "--passphrase", PASSWORD, "-d", info.path], capture_output=True, check=True)
    subprocess.run(["gpgconf", "--homedir", home, "--kill", "gpg-agent"], check=False)
    with tarfile.open(fileobj=io.BytesIO(gpg.stdout)) as tar:
        names = tar.getnames()
    assert not any("shadow" in n or n.startswith("homeassistant/etc") for n in names)
    os.unlink(info.path)
    paths.backups.rmdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    paths.backups.symlink_to(outside)
    with pytest.raises(CtlError, match="is not a directory"):
        backup.create(paths, PASSWORD)
    assert list(outside.iterdir()) == [] and stat.S_IMODE(outside.stat().st_mode) == 0o755


def test_copy_to_a_stick_writes_a_new_file_and_follows_no_link(paths: Paths, tmp_path: Path) -> None:
    info = backup.create(paths, PASSWORD)
    stick = tmp_path / "stick"
    stick.mkdir()
    copied = backup.copy_to(Path(info.path), stick)
    assert Path(copied.path).read_bytes() == Path(info.path).read_bytes()
    assert oct(os.stat(copied.path).st_mode & 0o777) == "0o600"
    other = tmp_path / "other-stick"
    other.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    (other / info.name).symlink_to(victim)
    with pytest.raises(CtlError, match="exists already"):
        backup.copy_to(Path(info.path), other)
    assert victim.read_text() == "keep me\n"


def test_not_enough_space_is_refused_before_writing(paths: Paths) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", paths.data], check=True)
    try:
        (paths.data / "homeassistant").mkdir()
        with pytest.raises(CtlError, match=f"not enough space on {paths.data}"):
            (paths.data / "homeassistant" / "big.bin").write_bytes(os.urandom(900 << 10))
            backup.create(paths, PASSWORD)
        assert not list(paths.backups.glob("*")) if paths.backups.exists() else True
    finally:
        subprocess.run(["umount", paths.data], check=True)


def test_bad_input_is_named(paths: Paths) -> None:
    with pytest.raises(CtlError, match="password: expected at least 8 characters"):
        backup.create(paths, "short")
    with pytest.raises(CtlError, match="no backup 'smartos-nope.tar.gz.gpg'"):
        backup.delete(paths.backups, "smartos-nope.tar.gz.gpg")
