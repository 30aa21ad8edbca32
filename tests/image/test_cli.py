"""The builder's CLI: `check` validates without root or a build; errors exit 2 with the key named."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from smartos_image import hass, venv
from smartos_image.cli import main


def test_check_prints_resolved_settings_as_json(tmp_path: Path) -> None:
    conf = tmp_path / "c.yaml"
    conf.write_text("hostname: kitchen\nextra_packages: [htop]\n")
    result = CliRunner().invoke(main, ["--config", str(conf), "--set", "partitions.data=1GiB",
                                       "check", "--json", "--offline"])
    assert result.exit_code == 0, result.output
    settings = json.loads(result.stdout)
    assert settings["hostname"] == "kitchen"
    assert settings["extra_packages"] == ["htop"]
    assert settings["partitions"]["data"] == 1024
    assert settings["resolved"]["python"] == "3.13.5"


def release_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PyPI unreachable, and its last release list (as PyPI shapes it) in the cache."""
    monkeypatch.setattr(hass, "PYPI", "http://127.0.0.1:9")
    def wheel(requires: str) -> list[dict[str, object]]:
        return [{"packagetype": "bdist_wheel", "requires_python": requires, "url": "x.whl",
                 "digests": {"sha256": "ab" * 32}}]
    table = {"2026.2.3": wheel(">=3.13.2"), "2026.11.0": wheel(">=3.14.2")}
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "pypi-homeassistant.json").write_text(json.dumps({"releases": table}))
    return cache


@pytest.mark.parametrize(("version", "release", "python", "why"), [
    ("latest", "2026.2.3", "3.13.5", "Debian trixie's python3 3.13.5 meets Requires-Python >=3.13.2"),
    ("2026.11.0", "2026.11.0", "3.14.", "Requires-Python is >=3.14.2: the runtime pinned from Debian forky"),
])
def test_check_says_which_release_and_python_and_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     version: str, release: str, python: str,
                                                     why: str) -> None:
    """With a stand-in for the resolver (uv against PyPI, which test_python_runtime.py runs for
    real): 2026.11.0's requirements do not resolve, as on PyPI on 2026-12-03."""
    cache = release_list(tmp_path, monkeypatch)
    monkeypatch.setattr(venv, "installable", lambda cache_dir, arch: lambda r, c: (
        "there is no version of universal-silabs-flasher==1.3.0" if r.version == "2026.11.0" else ""))
    result = CliRunner().invoke(main, ["check", "--json", "--set", f"cache_dir={cache}",
                                       "--set", f"homeassistant.version={version}"])
    assert result.exit_code == 0, result.output
    resolved = json.loads(result.stdout)["resolved"]
    assert resolved["homeassistant"] == release
    assert resolved["python"].startswith(python)
    assert why in resolved["python_why"]
    if version == "latest":
        assert resolved["homeassistant_passed_over"] == [
            "2026.11.0: there is no version of universal-silabs-flasher==1.3.0"]


def test_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    conf = tmp_path / "c.yaml"
    conf.write_text("partitions:\n  root: lots\n")
    result = CliRunner().invoke(main, ["--config", str(conf), "check", "--offline"])
    assert result.exit_code == 2
    assert "partitions.root: expected a size such as 512MiB or 2GiB, got 'lots'" in result.output


def test_unknown_board_is_refused_by_the_cli() -> None:
    result = CliRunner().invoke(main, ["--board", "amiga", "check", "--offline"])
    assert result.exit_code == 2
    assert "amiga" in result.output


def test_settings_options_also_follow_the_verb(tmp_path: Path) -> None:
    conf = tmp_path / "c.yaml"
    conf.write_text("hostname: kitchen\n")
    result = CliRunner().invoke(main, ["--set", "hostname=first", "check", "--config", str(conf),
                                       "--board", "x86-64", "--set", "hostname=garage", "--json",
                                       "--offline"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["hostname"] == "garage"
