"""smartosctl network: hostname and Wi-Fi settings are checked before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from smartos_cli import network
from smartos_cli.errors import CtlError, Exit
from smartos_cli.paths import Paths


@pytest.mark.parametrize("name", ["kitchen", "ha-2", "a", "x" * 63])
def test_good_hostnames(name: str) -> None:
    assert network.check_hostname(name) == name


@pytest.mark.parametrize("name", ["Kitchen", "-ha", "ha-", "my box", "x" * 64, "", "ha.local", "123"])
def test_bad_hostnames_are_named(name: str) -> None:
    with pytest.raises(CtlError, match="hostname: expected"):
        network.check_hostname(name)


def test_wpa_psk_is_the_standards_key() -> None:
    """IEEE 802.11i-2004, annex H.4.3: passphrase "password", SSID "IEEE"."""
    assert network.wpa_psk("IEEE", "password") == \
        "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"


@pytest.mark.parametrize("ssid", ['Cafe "Home"', "back\\slash", "Küche", "plain"])
def test_wifi_config_keeps_no_passphrase_and_writes_the_ssid_as_hex(ssid: str) -> None:
    """wpa_supplicant reads a quoted SSID without escapes: as hex, every byte arrives as it is."""
    text = network.wifi_config(ssid, "my passphrase", "DE")
    assert "country=DE" in text and f"    ssid={ssid.encode().hex()}\n" in text
    assert 'ssid="' not in text and bytes.fromhex(text.split("ssid=")[1].split()[0]).decode() == ssid
    assert "my passphrase" not in text and f"psk={network.wpa_psk(ssid, 'my passphrase')}" in text


def test_wifi_settings_are_checked_when_read() -> None:
    good = network.WifiSettings("Home", network.wpa_psk("Home", "long enough"), "DE")
    assert network.parse_wifi(good.as_json()) == good
    with pytest.raises(CtlError, match="wifi.json: psk"):
        network.parse_wifi('{"ssid": "Home", "psk": "x\\nnetwork={", "country": "DE"}')


@pytest.mark.parametrize(("ssid", "password", "country", "says"), [
    ("Home", "short", "DE", "Wi-Fi password: expected 8-63"),
    ("Home", "long enough", "Germany", "--country: expected a two-letter"),
    ("", "long enough", "DE", "SSID: expected 1-32 bytes"),
])
def test_bad_wifi_settings_are_named(ssid: str, password: str, country: str, says: str) -> None:
    with pytest.raises(CtlError, match=says):
        network.wifi_config(ssid, password, country)


def test_wifi_without_an_adapter_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    paths = Paths(data=tmp_path / "data")
    (tmp_path / "net" / "eth0").mkdir(parents=True)
    with pytest.raises(CtlError) as err:
        network.set_wifi(paths, "Home", "long enough", "DE", sys_net=tmp_path / "net")
    assert err.value.code is Exit.UNAVAILABLE and "no Wi-Fi adapter" in err.value.message
    assert not (tmp_path / "data").exists()
