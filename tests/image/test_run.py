"""The one module that runs programs: failures carry the command and its output's tail."""

import lzma
from pathlib import Path

import pytest
from smartos_image.errors import SmartOSError
from smartos_image.run import filter_file, run


def test_failure_names_the_command_and_shows_its_output(tmp_path: Path) -> None:
    with pytest.raises(SmartOSError) as err:
        run(["sh", "-c", "echo something broke >&2; exit 3"], logfile=tmp_path / "log")
    assert "sh failed (exit 3)" in str(err.value)
    assert "something broke" in str(err.value)
    assert "something broke" in (tmp_path / "log").read_text()


def test_missing_program_is_a_clear_error() -> None:
    with pytest.raises(SmartOSError, match="no-such-tool is not installed"):
        run(["no-such-tool", "--help"])


def test_filter_file_streams_through_a_compressor(tmp_path: Path) -> None:
    src, dst = tmp_path / "in", tmp_path / "out.xz"
    src.write_bytes(b"smartos " * 10000)
    filter_file(["xz", "-T0", "-9", "-c"], src, dst)
    assert lzma.decompress(dst.read_bytes()) == src.read_bytes()
