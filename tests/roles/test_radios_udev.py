"""The radios role's udev rules give each known Zigbee/Z-Wave stick its names.

A physical USB stick cannot be attached here, so these tests simulate the
device: they render the rules template with the role's defaults, parse the
result with a small matcher for exactly the udev syntax the template emits, and
run simulated tty devices (attribute chains as `udevadm info -a` shows them)
through it. The real rules are also checked under udev on a booted image by
the VM tests.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "radios"
TEMPLATE = "etc/udev/rules.d/70-smartos-radios.rules.j2"


# --- rendering -------------------------------------------------------------------------


def comment(text: str) -> str:
    """Ansible's `comment` filter with its default (plain) style."""
    return "\n".join(["#", *(f"# {line}" for line in text.splitlines()), "#"])


def to_bool(value: Any) -> bool:
    """Ansible's `bool` filter, for the values a YAML file can hold."""
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on", "y")


def defaults() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    return loaded


def render(**overrides: Any) -> str:
    # Ansible's template module renders with trim_blocks on and undefined as an error.
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(ROLE / "templates"),
        trim_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["comment"] = comment
    env.filters["bool"] = to_bool
    variables = {**defaults(), "ansible_managed": "Ansible managed", **overrides}
    return env.get_template(TEMPLATE).render(variables)


# --- a matcher for the udev rule syntax the template uses ------------------------------

TOKEN = re.compile(r'\s*([A-Z_]+)(?:\{([^}]*)\})?\s*(==|!=|\+=|=)\s*"([^"]*)"\s*(?:,|$)')
MATCH_KEYS = {"ACTION", "SUBSYSTEM", "ATTRS", "ENV"}
ASSIGN_KEYS = {"GROUP", "MODE", "SYMLINK", "OPTIONS", "GOTO", "LABEL", "ENV"}


@dataclass(frozen=True)
class Token:
    key: str
    attr: str | None
    op: str
    value: str


def parse(text: str) -> list[list[Token]]:
    """Rules as lists of tokens; anything the matcher does not model is an error."""
    rules: list[list[Token]] = []
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        tokens: list[Token] = []
        pos = 0
        while pos < len(line):
            m = TOKEN.match(line, pos)
            if m is None:
                raise ValueError(f"cannot parse udev rule at {line[pos:]!r}")
            key, attr, op, value = m.groups()
            is_match = op in ("==", "!=")
            if key not in (MATCH_KEYS if is_match else ASSIGN_KEYS):
                raise ValueError(f"the matcher does not model {key}{op} in {line!r}")
            if key == "ATTRS" and op != "==":
                raise ValueError(f"the matcher does not model ATTRS{op} in {line!r}")
            tokens.append(Token(key, attr, op, value))
            pos = m.end()
        rules.append(tokens)
    return rules


def glob(pattern: str, value: str | None) -> bool:
    """udev's pattern match: shell glob, '|' separates alternatives."""
    if value is None:
        return False
    if not pattern[-1:].isspace():
        # udev ignores trailing whitespace of sysfs values unless the pattern has some
        value = value.rstrip()
    return any(fnmatch.fnmatchcase(value, alt) for alt in pattern.split("|"))


@dataclass
class Device:
    """An event device and its parents, nearest first, as `udevadm info -a` walks them."""

    kernel: str
    subsystem: str
    chain: list[dict[str, str]]
    env: dict[str, str] = field(default_factory=dict)
    action: str = "add"


@dataclass
class Result:
    symlinks: set[str] = field(default_factory=set)
    group: str | None = None
    mode: str | None = None
    link_priority: int = 0
    env: dict[str, str] = field(default_factory=dict)


def apply(rules: list[list[Token]], dev: Device) -> Result:
    result = Result()
    goto: str | None = None
    for rule in rules:
        if goto is not None:
            if any(t.key == "LABEL" and t.value == goto for t in rule):
                goto = None
            continue
        if not matches(rule, dev):
            continue
        for t in rule:
            if t.key == "GROUP":
                result.group = t.value
            elif t.key == "MODE":
                result.mode = t.value
            elif t.key == "SYMLINK":
                assert t.op == "+=", t
                result.symlinks.update(t.value.split())
            elif t.key == "OPTIONS":
                name, _, number = t.value.partition("=")
                if name != "link_priority":
                    raise ValueError(f"the matcher does not model OPTIONS {t.value!r}")
                result.link_priority = int(number)
            elif t.key == "GOTO":
                goto = t.value
            elif t.key == "ENV" and t.op == "=":
                assert t.attr, t
                result.env[t.attr] = t.value
    return result


def matches(rule: list[Token], dev: Device) -> bool:
    for t in rule:
        if t.op not in ("==", "!="):
            continue
        if t.key == "ACTION":
            ok = glob(t.value, dev.action)
        elif t.key == "SUBSYSTEM":
            ok = glob(t.value, dev.subsystem)
        elif t.key == "ENV":
            ok = glob(t.value, dev.env.get(t.attr or "", ""))
        else:
            continue  # ATTRS, below
        if ok != (t.op == "=="):
            return False
    attrs = [t for t in rule if t.key == "ATTRS"]
    # All ATTRS keys of a rule must match on one and the same device of the chain.
    return not attrs or any(
        all(glob(t.value, node.get(t.attr or "")) for t in attrs) for node in dev.chain
    )


def plug(rules: list[list[Token]], *devices: Device) -> dict[str, str]:
    """Where each symlink points once all devices are added: the highest link_priority
    claims a contested link; a tie is left out, since udev's choice is then arbitrary."""
    claims: dict[str, list[tuple[int, str]]] = {}
    for dev in devices:
        result = apply(rules, dev)
        for link in result.symlinks:
            claims.setdefault(link, []).append((result.link_priority, dev.kernel))
    owners: dict[str, str] = {}
    for link, contenders in claims.items():
        contenders.sort(reverse=True)
        if len(contenders) == 1 or contenders[0][0] > contenders[1][0]:
            owners[link] = contenders[0][1]
    return owners


# --- simulated hardware ----------------------------------------------------------------


def usb_tty(
    kernel: str,
    vendor_id: str,
    product_id: str,
    product: str | None = None,
    serial: str = "0001",
    interface: str = "00",
    manufacturer: str | None = None,
    interface_string: str | None = None,
) -> Device:
    """A ttyUSB/ttyACM device: tty -> USB interface -> USB device. A device without
    a product (manufacturer, interface) string has no such file in sysfs."""
    usb_device = {"idVendor": vendor_id, "idProduct": product_id, "serial": serial}
    if product is not None:
        usb_device["product"] = product + "\n"  # sysfs values end in a newline
    if manufacturer is not None:
        usb_device["manufacturer"] = manufacturer + "\n"
    usb_interface = {"bInterfaceNumber": interface}
    if interface_string is not None:
        usb_interface["interface"] = interface_string + "\n"
    return Device(
        kernel=kernel,
        subsystem="tty",
        chain=[{"dev": "188:0\n"}, usb_interface, usb_device],
        # 60-serial.rules (usb_id) sets these before 70-smartos-radios.rules runs
        env={"ID_USB_INTERFACE_NUM": interface, "ID_VENDOR_ID": vendor_id.lower(),
             "ID_MODEL_ID": product_id.lower()},
    )


def stick_device(stick: dict[str, Any], kernel: str = "ttyUSB0") -> Device:
    return usb_tty(
        kernel,
        stick["vendor_id"],
        stick["product_id"],
        product=stick.get("product"),
        serial=stick.get("serial", "0001"),
        interface=stick.get("interface", "00"),
    )


def sticks() -> list[dict[str, Any]]:
    return [s for s in defaults()["radios__sticks"] if s.get("enabled", True)]


@pytest.fixture(scope="module")
def rules() -> list[list[Token]]:
    return parse(render())


# --- tests -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stick", sticks(), ids=lambda s: f"{s['name']}-{s['vendor_id']}:{s['product_id']}"
)
def test_each_listed_stick_gets_its_names_group_and_mode(
    rules: list[list[Token]], stick: dict[str, Any]
) -> None:
    result = apply(rules, stick_device(stick))

    assert result.symlinks == {f"radios/{stick['name']}", stick["kind"]}
    assert result.group == "dialout"
    assert result.mode == "0660"
    assert result.env == {"SMARTOS_RADIO": stick["name"], "SMARTOS_RADIO_KIND": stick["kind"]}


def test_sticks_sharing_the_cp210x_id_are_told_apart_by_product(
    rules: list[list[Token]],
) -> None:
    p = usb_tty("ttyUSB0", "10c4", "ea60", "Sonoff Zigbee 3.0 USB Dongle Plus")
    e = usb_tty("ttyUSB1", "10c4", "ea60", "Sonoff Zigbee 3.0 USB Dongle Plus V2")
    sky = usb_tty("ttyUSB2", "10c4", "ea60", "SkyConnect v1.0")
    zooz = usb_tty("ttyUSB3", "10c4", "ea60", "Zooz ZST10 700 Z-Wave Stick")

    assert apply(rules, p).symlinks == {"radios/sonoff-zbdongle-p", "zigbee"}
    # the V2 string starts with the ZBDongle-P's, which must not catch it
    assert apply(rules, e).symlinks == {"radios/sonoff-zbdongle-e", "zigbee"}
    assert apply(rules, sky).symlinks == {"radios/home-assistant-skyconnect", "zigbee"}
    assert apply(rules, zooz).symlinks == {"radios/zooz-zst10-700", "zwave"}


def test_sticks_sharing_the_ch9102_id_are_told_apart_by_product(
    rules: list[list[Token]],
) -> None:
    e = usb_tty("ttyACM0", "1a86", "55d4", "SONOFF Zigbee 3.0 USB Dongle Plus V2")
    zst39 = usb_tty("ttyACM1", "1a86", "55d4", "800 Z-Wave Stick")

    assert apply(rules, e).symlinks == {"radios/sonoff-zbdongle-e", "zigbee"}
    assert apply(rules, zst39).symlinks == {"radios/zooz-zst39-800", "zwave"}


def test_husbzb1_interface_00_is_zwave_and_01_is_zigbee(rules: list[list[Token]]) -> None:
    product = "HubZ Smart Home Controller"
    zwave = usb_tty("ttyUSB0", "10c4", "8a2a", product, serial="C0F003D3", interface="00")
    zigbee = usb_tty("ttyUSB1", "10c4", "8a2a", product, serial="C0F003D3", interface="01")

    assert apply(rules, zwave).symlinks == {"radios/nortek-husbzb-1-zwave", "zwave"}
    assert apply(rules, zigbee).symlinks == {"radios/nortek-husbzb-1-zigbee", "zigbee"}
    assert plug(rules, zwave, zigbee) == {
        "radios/nortek-husbzb-1-zwave": "ttyUSB0",
        "zwave": "ttyUSB0",
        "radios/nortek-husbzb-1-zigbee": "ttyUSB1",
        "zigbee": "ttyUSB1",
    }


@pytest.mark.parametrize(
    "product",
    [
        "CP2102N USB to UART Bridge Controller",  # ESP32 boards; also the Aeotec Z-Stick 7
        "CP2102 USB to UART Bridge Controller",
        "Some Lidar",
        None,
    ],
)
def test_unknown_cp210x_device_gets_no_radio_names(
    rules: list[list[Token]], product: str | None
) -> None:
    result = apply(rules, usb_tty("ttyUSB0", "10c4", "ea60", product))

    assert result == Result()


def test_rules_leave_other_devices_and_remove_events_alone(rules: list[list[Token]]) -> None:
    serial_port = Device("ttyS0", "tty", chain=[{"type": "4"}])
    # the USB device of a ZBDongle-P itself, not its tty
    usb_parent = usb_tty("1-1", "10c4", "ea60", "Sonoff Zigbee 3.0 USB Dongle Plus")
    usb_parent.subsystem = "usb"
    removed = usb_tty("ttyUSB0", "10c4", "ea60", "Sonoff Zigbee 3.0 USB Dongle Plus")
    removed.action = "remove"

    for dev in (serial_port, usb_parent, removed):
        assert apply(rules, dev) == Result(), dev.kernel


def test_first_listed_stick_of_a_kind_owns_the_generic_link(rules: list[list[Token]]) -> None:
    by_name = {s["name"]: s for s in sticks()}
    conbee = stick_device(by_name["conbee-ii"], "ttyACM0")
    sonoff = stick_device(by_name["sonoff-zbdongle-p"], "ttyUSB0")
    order = [s["name"] for s in sticks()]
    assert order.index("sonoff-zbdongle-p") < order.index("conbee-ii")

    for devices in ((conbee, sonoff), (sonoff, conbee)):  # plug order does not matter
        links = plug(rules, *devices)
        assert links["zigbee"] == "ttyUSB0"
        assert links["radios/sonoff-zbdongle-p"] == "ttyUSB0"
        assert links["radios/conbee-ii"] == "ttyACM0"


def test_extra_stick_pinned_by_serial_is_added_and_preferred() -> None:
    z_stick_7 = {
        "name": "aeotec-z-stick-7",
        "description": "Aeotec Z-Stick 7 in this house",
        "kind": "zwave",
        "vendor_id": "10c4",
        "product_id": "ea60",
        "product": "CP2102N USB to UART Bridge Controller",
        "serial": "40807fee5284e911a58b4992d6f3a178",
    }
    rules = parse(render(radios__extra_sticks=[z_stick_7]))
    stick = usb_tty("ttyUSB0", "10c4", "ea60", z_stick_7["product"], serial=z_stick_7["serial"])
    esp32 = usb_tty("ttyUSB1", "10c4", "ea60", z_stick_7["product"], serial="0001")
    gen5 = usb_tty("ttyACM0", "0658", "0200")

    assert apply(rules, stick).symlinks == {"radios/aeotec-z-stick-7", "zwave"}
    assert apply(rules, esp32) == Result()
    assert plug(rules, stick, esp32, gen5)["zwave"] == "ttyUSB0"


def test_device_matching_two_entries_keeps_its_most_preferred_priority() -> None:
    pinned = {
        "name": "zigbee-upstairs",
        "description": "The ZBDongle-P upstairs",
        "kind": "zigbee",
        "vendor_id": "10c4",
        "product_id": "ea60",
        "product": "Sonoff Zigbee 3.0 USB Dongle Plus",
        "serial": "4c014405c5e7ec118ee67860e89bdf6f",
    }
    rules = parse(render(radios__extra_sticks=[pinned]))
    upstairs = usb_tty("ttyUSB0", "10c4", "ea60", pinned["product"], serial=pinned["serial"])
    other = usb_tty("ttyUSB1", "10c4", "ea60", "Sonoff Zigbee 3.0 USB Dongle Plus V2")

    links = plug(rules, upstairs, other)

    assert apply(rules, upstairs).symlinks == {
        "radios/zigbee-upstairs",
        "radios/sonoff-zbdongle-p",
        "zigbee",
    }
    assert apply(rules, upstairs).env["SMARTOS_RADIO"] == "zigbee-upstairs"  # the preferred entry
    assert links["zigbee"] == "ttyUSB0"


def test_rendered_file_is_marked_managed_and_every_line_is_understood() -> None:
    text = render()

    assert text.startswith("#\n# Ansible managed\n#\n")
    rules = parse(text)  # raises on syntax the matcher does not model
    names = {t.value for rule in rules for t in rule if t.key == "SYMLINK"}
    assert "radios/aeotec-z-stick-7" not in names  # disabled: generic product string


def test_stick_list_is_well_formed_and_documented() -> None:
    entries = defaults()["radios__sticks"]
    doc = (REPO / "docs" / "radios.md").read_text()
    seen: dict[tuple[str, str, str | None, str | None], str] = {}
    kinds: dict[str, str] = {}
    for s in entries:
        assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", s["name"]), s
        assert s["kind"] in ("zigbee", "zwave"), s
        for id_key in ("vendor_id", "product_id"):
            assert isinstance(s[id_key], str) and re.fullmatch(r"[0-9a-f]{4}", s[id_key]), s
        match = (s["vendor_id"], s["product_id"], s.get("product"), s.get("interface"))
        assert match not in seen, f"{s['name']} matches the same devices as {seen[match]}"
        seen[match] = s["name"]
        assert kinds.setdefault(s["name"], s["kind"]) == s["kind"], s
        assert f"`{s['name']}`" in doc, f"{s['name']} is missing from docs/radios.md"


# --- Home Assistant's own USB matchers (image/radios.py) ----------------------------------

# A sample of homeassistant/generated/usb.py from Home Assistant 2026.2.3, as it reads there;
# the VM tests check every matcher of the release an image ships (test_appliance.py).
HA_MATCHERS = [
    {"description": "*skyconnect v1.0*", "domain": "homeassistant_sky_connect", "pid": "EA60", "vid": "10C4"},
    {"domain": "insteon", "vid": "10BF"},
    {"description": "*raven*", "domain": "rainforest_raven", "manufacturer": "*rainforest*",
     "pid": "8A28", "vid": "0403"},
    {"description": "*2652*", "domain": "zha", "pid": "EA60", "vid": "10C4"},
    {"description": "*sonoff*plus*", "domain": "zha", "pid": "55D4", "vid": "1A86"},
    {"description": "*zigbee*", "domain": "zha", "pid": "8A2A", "vid": "10C4"},
    {"domain": "zwave_js", "pid": "0200", "vid": "0658"},
    {"description": "*z-wave*", "domain": "zwave_js", "pid": "8A2A", "vid": "10C4"},
    {"description": "*sonoff*zwave*", "domain": "zwave_js", "manufacturer": "sonoff", "pid": "EA60",
     "vid": "10C4"},
]


def a_device_for(matcher: dict[str, str], kernel: str = "ttyUSB0") -> Device:
    """A stick as Home Assistant's matcher describes it, its strings in another case than the
    matcher's (Home Assistant compares lower-cased): every '*' becomes a word."""
    def text(key: str) -> str | None:
        return matcher[key].replace("*", " Any ").strip().swapcase() if key in matcher else None
    return usb_tty(kernel, matcher["vid"], matcher.get("pid", "1234"), product=text("description"),
                   manufacturer=text("manufacturer"), serial=text("serial_number") or "0001")


def uncovered(rules: list[list[Token]], matchers: list[dict[str, str]]) -> list[dict[str, str]]:
    """The matchers whose stick would get no SmartOS name."""
    return [m for m in matchers if not apply(rules, a_device_for(m)).env.get("SMARTOS_RADIO")]


def with_home_assistant_s(matchers: list[dict[str, str]], curated: str) -> list[list[Token]]:
    """The image's two rules files in udev's order: Home Assistant's (69-, written by the venv
    stage), then the role's curated table (70-)."""
    from smartos_image import radios

    return parse(radios.rules(radios.sticks(matchers), "2026.2.3")) + parse(curated)


@pytest.fixture(scope="module")
def ha_rules() -> list[list[Token]]:
    return with_home_assistant_s(HA_MATCHERS, render())


def test_every_stick_home_assistant_recognises_gets_a_name_whatever_the_case(
    ha_rules: list[list[Token]],
) -> None:
    assert uncovered(ha_rules, HA_MATCHERS) == []
    slae = apply(ha_rules, a_device_for(HA_MATCHERS[3]))  # "slae.sh cc2652rb stick"
    assert slae.symlinks == {"radios/zha-10c4-ea60-2652", "zigbee"}
    assert slae.env == {"SMARTOS_RADIO": "zha-10c4-ea60-2652", "SMARTOS_RADIO_KIND": "zigbee"}
    assert apply(ha_rules, usb_tty("ttyUSB0", "10c4", "ea60", "slae.sh CC2652RB stick")).symlinks \
        == {"radios/zha-10c4-ea60-2652", "zigbee"}


def test_integrations_other_than_zigbee_and_zwave_get_a_name_but_no_generic_link(
    ha_rules: list[list[Token]],
) -> None:
    insteon = apply(ha_rules, usb_tty("ttyUSB0", "10bf", "0001", "PowerLinc Modem"))
    assert insteon.symlinks == {"radios/insteon-10bf"}
    assert insteon.env["SMARTOS_RADIO_KIND"] == "insteon"


def test_a_manufacturer_glob_must_match_too(ha_rules: list[list[Token]]) -> None:
    raven = HA_MATCHERS[2]
    name = apply(ha_rules, a_device_for(raven)).env["SMARTOS_RADIO"]
    assert name == "rainforest-raven-0403-8a28-raven-rainforest"
    other = usb_tty("ttyUSB0", "0403", "8a28", "RAVEn USB", manufacturer="FTDI")
    assert apply(ha_rules, other) == Result()


def test_the_description_may_be_the_interface_s_string_as_on_the_husbzb1(
    ha_rules: list[list[Token]],
) -> None:
    """pyserial's description, which Home Assistant matches, is "product - interface"."""
    product = "HubZ Smart Home Controller"
    zigbee = usb_tty("ttyUSB1", "10c4", "8a2a", product, interface="01",
                     interface_string="HubZ ZigBee Com Port")
    zwave = usb_tty("ttyUSB0", "10c4", "8a2a", product, interface="00",
                    interface_string="HubZ Z-Wave Com Port")
    assert "radios/zha-10c4-8a2a-zigbee" in apply(ha_rules, zigbee).symlinks
    assert "radios/zwave-js-10c4-8a2a-z-wave" in apply(ha_rules, zwave).symlinks
    # the curated entries stay preferred: they name the stick and own the generic links
    assert apply(ha_rules, zigbee).env["SMARTOS_RADIO"] == "nortek-husbzb-1-zigbee"
    assert plug(ha_rules, zwave, zigbee)["zwave"] == "ttyUSB0"


def test_a_stick_both_tables_know_keeps_its_curated_name_and_priority(
    ha_rules: list[list[Token]],
) -> None:
    sky = usb_tty("ttyUSB0", "10c4", "ea60", "SkyConnect v1.0")
    slae = usb_tty("ttyUSB1", "10c4", "ea60", "slae.sh CC2652RB stick")
    result = apply(ha_rules, sky)
    assert result.env["SMARTOS_RADIO"] == "home-assistant-skyconnect"
    assert result.symlinks == {"radios/home-assistant-skyconnect", "zigbee",
                               "radios/homeassistant-sky-connect-10c4-ea60-skyconnect-v1-0"}
    assert plug(ha_rules, slae, sky)["zigbee"] == "ttyUSB0"  # curated beats Home Assistant's


@pytest.mark.parametrize("product", ["CP2102N USB to UART Bridge Controller", "Some Lidar", None])
def test_home_assistant_s_matchers_leave_unknown_bridges_alone(
    ha_rules: list[list[Token]], product: str | None
) -> None:
    assert apply(ha_rules, usb_tty("ttyUSB0", "10c4", "ea60", product)) == Result()


def test_a_matcher_udev_cannot_express_is_refused_by_name() -> None:
    from smartos_image import radios
    from smartos_image.errors import SmartOSError

    with pytest.raises(SmartOSError, match="zha"):
        radios.sticks([{"domain": "zha", "vid": "10C4", "pid": "EA60", "description": "*a|b*"}])
    with pytest.raises(SmartOSError, match="4 hex digits"):
        radios.sticks([{"domain": "zha", "vid": "10C", "pid": "EA60"}])
