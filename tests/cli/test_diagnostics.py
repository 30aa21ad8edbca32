"""smartosctl diagnostics: what goes into the tarball, and that secrets do not."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
from smartos_cli import diagnostics
from smartos_cli.errors import CtlError

CONFIG = """homeassistant:
  name: Home
http:
  api_password: hunter2hunter2
mqtt:
  broker: mqtt://bob:s3cr3tpw@192.168.1.2
  password: !secret mqtt_password
notify:
  - platform: telegram
    token: "123456:ABCDEF"
light: !include lights.yaml
"""


@pytest.mark.parametrize(("line", "shown"), [
    ("  api_password: hunter2", "  api_password: ***"),
    ('    "access_token": "eyJhbGciOi"', '    "access_token": ***'),
    ("psk=verysecret", "psk=***"),
    ("  client_secret: x", "  client_secret: ***"),
    ("  password: !secret mqtt_password", "  password: !secret mqtt_password"),
    ("  broker: mqtt://bob:s3cr3tpw@host", "  broker: mqtt://bob:***@host"),
    ("  name: Home", "  name: Home"),
])
def test_redact(line: str, shown: str) -> None:
    assert diagnostics.redact(line) == shown


def test_the_tarball_holds_what_was_collected_and_no_secrets(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ha = data / "homeassistant"
    (ha / ".storage").mkdir(parents=True)
    (ha / "configuration.yaml").write_text(CONFIG)
    (ha / "secrets.yaml").write_text("mqtt_password: topsecret\n")
    (ha / ".storage" / "auth").write_text('{"refresh_token": "abc"}')
    (data / "wireguard").mkdir()
    (data / "wireguard" / "wg0.conf").write_text("PrivateKey = abc\n")
    (ha / "linked.yaml").symlink_to(tmp_path / "root-only.yaml")
    (tmp_path / "root-only.yaml").write_text("root: only\n")
    out = tmp_path / "out"
    out.mkdir()

    def broken() -> str:
        raise OSError("no such thing here")

    made = diagnostics.bundle(data, sources={"versions/kernel": lambda: "Linux 6.12\n",
                                             "journal/this-boot.txt": broken})
    result = diagnostics.save(made, out)
    assert Path(result["path"]).parent == out and oct(Path(result["path"]).stat().st_mode & 0o777) == "0o600"
    with tarfile.open(result["path"]) as tar:
        names = {m.name.split("/", 1)[1]: m for m in tar.getmembers()}
        assert set(names) == {"versions/kernel", "journal/this-boot.txt",
                              "config/homeassistant/configuration.yaml"}
        text = {n: tar.extractfile(m).read().decode() for n, m in names.items()}  # type: ignore[union-attr]
    everything = "".join(text.values())
    for secret in ("hunter2", "s3cr3tpw", "123456:ABCDEF", "topsecret", "refresh_token", "PrivateKey"):
        assert secret not in everything
    assert "root: only" not in everything  # a link is not followed
    assert "light: !include lights.yaml" in text["config/homeassistant/configuration.yaml"]
    assert "not collected: no such thing here" in text["journal/this-boot.txt"]


def test_saving_follows_no_link(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    made = diagnostics.bundle(data, sources={"versions/kernel": lambda: "Linux 6.12\n"})
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    (out / made["name"]).symlink_to(victim)
    with pytest.raises(CtlError, match="exists already"):
        diagnostics.save(made, out)
    assert victim.read_text() == "keep me\n"
