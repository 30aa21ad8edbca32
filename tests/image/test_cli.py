"""The builder's CLI: `check` validates without root or a build; errors exit 2 with the key named."""

import json
from pathlib import Path

from click.testing import CliRunner
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
