"""Home Assistant release choice and the offline requirement set, from PyPI-shaped data and a
wheel built here with the same layout as Home Assistant's."""

import json
import zipfile
from pathlib import Path

import pytest
from smartos_image import hass
from smartos_image.errors import SmartOSError


def release(requires: str, packagetype: str = "bdist_wheel", yanked: bool = False) -> dict:
    return {"packagetype": packagetype, "requires_python": requires, "yanked": yanked,
            "url": "../../packages/x/homeassistant.whl", "digests": {"sha256": "ab" * 32}}


TABLE = {"base": "https://pypi.example/pypi/homeassistant/json", "releases": {
    "2026.1.4": [release(">=3.13.2")],
    "2026.2.3": [release(">=3.13.2"), release(">=3.13.2", "sdist")],
    "2026.3.0": [release(">=3.14.2")],
    "2026.4.0b1": [release(">=3.13.2")],
    "2026.5.0": [release(">=3.13.2", yanked=True)],
}}


def test_latest_is_the_newest_release_the_python_supports() -> None:
    assert hass.pick_release(TABLE, "3.13.5").version == "2026.2.3"
    assert hass.pick_release(TABLE, "3.14.2").version == "2026.3.0"


def test_wheel_url_is_resolved_against_the_index() -> None:
    assert hass.pick_release(TABLE, "3.13.5").wheel_url == "https://pypi.example/packages/x/homeassistant.whl"


def test_a_pinned_release_that_needs_a_newer_python_is_refused() -> None:
    with pytest.raises(SmartOSError, match=r"2026\.3\.0 needs Python >=3\.14\.2, the image has 3\.13\.5"):
        hass.pick_release(TABLE, "3.13.5", "2026.3.0")


def test_a_release_may_run_on_a_pinned_runtime_latest_too() -> None:
    assert hass.pick_release(TABLE, "3.13.5", "2026.3.0", also=["3.14.8"]).version == "2026.3.0"
    assert hass.pick_release(TABLE, "3.13.5", also=["3.14.8"]).version == "2026.3.0"
    assert [r.version for r in hass.candidates(TABLE, "3.13.5", also=["3.14.8"])] == \
        ["2026.3.0", "2026.2.3", "2026.1.4"]  # newest first; no pre-release, nothing yanked
    with pytest.raises(SmartOSError, match=r"needs Python >=3\.14\.2, the image has 3\.13\.5, or 3\.14\.1 "
                                           r"\(pinned runtime\)"):
        hass.pick_release(TABLE, "3.13.5", "2026.3.0", also=["3.14.1"])


def test_an_unknown_release_is_refused() -> None:
    with pytest.raises(SmartOSError, match="no release 2020.1.1"):
        hass.pick_release(TABLE, "3.13.5", "2020.1.1")


def manifest(domain: str, **fields: object) -> tuple[str, str]:
    return f"homeassistant/components/{domain}/manifest.json", json.dumps({"domain": domain, **fields})


@pytest.fixture
def wheel(tmp_path: Path) -> Path:
    path = tmp_path / "homeassistant-2026.2.3-py3-none-any.whl"
    files = dict([
        ("homeassistant/bootstrap.py",
         'CORE_INTEGRATIONS = {"homeassistant"}\n'
         'DEFAULT_INTEGRATIONS: set[str] = {\n    "backup",  # comment\n}\n'
         "type Unparsable = dict[str, int]  # newer syntax than the host's Python\n"),
        ("homeassistant/requirements.py", 'DISCOVERY_INTEGRATIONS: dict[str, Iterable[str]] = {\n'
                                          '    "zeroconf": ("zeroconf", "homekit"),\n}\n'),
        ("homeassistant/package_constraints.txt", "aiohttp==3.13.0\n"),
        ("homeassistant/auth/mfa_modules/totp.py", 'REQUIREMENTS = ["pyotp==2.9.0"]\n'),
        manifest("homeassistant"),
        manifest("backup", requirements=["securetar==1"], dependencies=["http"]),
        manifest("http", requirements=["aiohttp_cors==0.8"]),
        manifest("default_config", dependencies=["cloud"]),
        manifest("cloud", requirements=["hass-nabucasa==1"], after_dependencies=["alexa"]),
        manifest("alexa", homekit={"models": ["x"]}),
        manifest("zeroconf", requirements=["zeroconf==0.148.0"]),
        manifest("zha", requirements=["zha==0.0.90"]),
        manifest("unrelated", requirements=["never-installed==1"]),
    ])
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


def test_requirements_follow_dependencies_after_dependencies_and_discovery(wheel: Path) -> None:
    reqs = hass.derive(wheel, "2026.2.3", seeds=("default_config", "zha"))
    assert reqs.requirements[0] == "homeassistant==2026.2.3"
    assert set(reqs.requirements[1:]) == {
        "securetar==1", "aiohttp_cors==0.8", "hass-nabucasa==1", "zeroconf==0.148.0",
        "zha==0.0.90", "pyotp==2.9.0", *hass.APPLIANCE_EXTRAS}
    # alexa is reached through cloud's after_dependencies, zeroconf through alexa's homekit key
    assert {"alexa", "zeroconf", "http"} <= set(reqs.integrations)
    assert "unrelated" not in reqs.integrations
    assert reqs.constraints == "aiohttp==3.13.0\n"


def test_a_bootstrap_set_made_of_the_entity_platforms_is_followed(tmp_path: Path) -> None:
    """Since 2026.10, DEFAULT_INTEGRATIONS unpacks BASE_PLATFORMS (the entity platform enum); an
    entity platform with requirements (infrared) is then set up on every start."""
    path = tmp_path / "homeassistant-2026.10.4-py3-none-any.whl"
    files = dict([
        ("homeassistant/bootstrap.py",
         'DEFAULT_INTEGRATIONS = {\n    "backup",\n    *(BASE_PLATFORMS - {"calendar", "todo"}),\n}\n'),
        ("homeassistant/generated/entity_platforms.py",
         'class EntityPlatforms(StrEnum):\n    """Available entity platforms."""\n\n'
         '    CALENDAR = "calendar"\n    INFRARED = "infrared"\n    LIGHT = "light"\n\n'),
        ("homeassistant/requirements.py", 'DISCOVERY_INTEGRATIONS = {"zeroconf": ("zeroconf",)}\n'),
        ("homeassistant/package_constraints.txt", ""),
        manifest("backup"), manifest("light"), manifest("calendar", requirements=["never==1"]),
        manifest("infrared", requirements=["infrared-protocols==10.1.0"]),
    ])
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    reqs = hass.derive(path, "2026.10.4", seeds=())
    assert set(reqs.integrations) == {"backup", "infrared", "light"}
    assert "infrared-protocols==10.1.0" in reqs.requirements and "never==1" not in reqs.requirements


def test_a_bootstrap_set_of_another_shape_is_an_error_not_a_smaller_set(tmp_path: Path) -> None:
    path = tmp_path / "homeassistant-2027.1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("homeassistant/bootstrap.py", 'DEFAULT_INTEGRATIONS = {"backup", *load_more()}\n')
        zf.writestr("homeassistant/requirements.py", 'DISCOVERY_INTEGRATIONS = {"zeroconf": ("zeroconf",)}\n')
    with pytest.raises(SmartOSError, match="DEFAULT_INTEGRATIONS changed shape"):
        hass.derive(path, "2027.1.0", seeds=())
