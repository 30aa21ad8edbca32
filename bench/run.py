#!/usr/bin/env python3
"""SmartOS benchmarks: build times, image sizes and boot times on this machine.

    sudo ~/.cache/smartos/venv/bin/python bench/run.py [--boards x86-64,rpi4] [--skip-cold]
                                                       [--skip-boot] [--skip-release]

Prints one figure a line (and a JSON summary at the end) for docs/benchmarks.md:
  cold build   caches of built trees (bootstrap, roles, venv, builder) removed; the download
               caches (.deb files, uv's wheel cache, the Home Assistant wheel) kept
  rebuild      again, after changing one overlay file (only the later stages redo work)
  release      the same with compression: .img.xz, .bmap, checksums
  boot         QEMU (TCG) from power-on to an ssh banner and to Home Assistant's HTTP 200
               (rpi4: QEMU's arm64 virt machine through the image's U-Boot script)
With several boards, each cold build starts from the same state, and the ratio of each cold
build to the x86-64 one is printed. Wheels built under emulation for packages with no aarch64
wheel on PyPI (~/.cache/smartos/wheels) count as a download cache: they are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "smartos"
OUT = REPO / "out" / "bench"
BUILT_TREES = ("bootstrap", "configured", "hass-venv", "builder")


def smartos(board: str, *args: str) -> float:
    key = CACHE / "test-key" / "id_ed25519"
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    cli = Path(sys.executable).parent / "smartos"
    start = time.monotonic()
    subprocess.run([str(cli), "--board", board, "--set", f"output_dir={OUT / board}", "--set",
                    f"admin.ssh_key_files=[{key}.pub]", *args, "build"], check=True)
    return time.monotonic() - start


def mib(path: Path) -> float:
    return round(path.stat().st_size / 2**20, 1)


def used_mib(path: Path) -> float:
    return round(path.stat().st_blocks * 512 / 2**20, 1)


def boot(image: Path) -> dict[str, float]:
    sys.path.insert(0, str(REPO))
    from smartos_image.vm import Machine

    with tempfile.TemporaryDirectory(prefix="smartos-bench-") as tmp:
        m = Machine(image, Path(tmp), ssh_port=2322, http_port=8223)
        start = time.monotonic()
        m.start()
        try:
            m.wait_for_port(2322, 600)
            ssh = time.monotonic() - start
            m.wait_for_http("http://127.0.0.1:8223/manifest.json", 900)
            ha = time.monotonic() - start
        finally:
            m.stop()
    return {"boot_to_ssh_s": round(ssh, 1), "boot_to_ha_http_200_s": round(ha, 1)}


def bench_board(board: str, args: argparse.Namespace) -> dict[str, object]:
    figures: dict[str, object] = {}
    out = OUT / board
    if out.exists():
        shutil.rmtree(out)
    if not args.skip_cold:
        for kind in BUILT_TREES:
            shutil.rmtree(CACHE / kind, ignore_errors=True)
        figures["cold_build_s"] = round(smartos(board, "--set", "compress=false"), 1)
        manifest = json.loads(next(out.glob("smartos-*.manifest.json")).read_text())
        figures["cold_build_stages_s"] = manifest["timings_s"]
        print(f"{board}: cold build (warm download cache): {figures['cold_build_s']} s", flush=True)
    marker = REPO / "overlays" / "common" / "etc" / "smartos-bench-marker"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{time.time()}\n")
    try:
        figures["rebuild_one_overlay_change_s"] = round(smartos(board, "--set", "compress=false"), 1)
    finally:
        marker.unlink()
    print(f"{board}: rebuild after one overlay change: {figures['rebuild_one_overlay_change_s']} s",
          flush=True)
    raw = next(out.glob("smartos-*.img"))
    figures["raw_image_mib"] = mib(raw)
    figures["raw_image_allocated_mib"] = used_mib(raw)
    if not args.skip_boot:
        figures.update(boot(raw))
        print(f"{board}: boot: ssh after {figures['boot_to_ssh_s']} s, Home Assistant 200 after "
              f"{figures['boot_to_ha_http_200_s']} s", flush=True)
    if not args.skip_release:
        figures["release_build_s"] = round(smartos(board, "--set", "compress=true"), 1)
        xz = next(out.glob("smartos-*.img.xz"))
        figures["img_xz_mib"] = mib(xz)
        print(f"{board}: release build (with xz): {figures['release_build_s']} s, .img.xz "
              f"{figures['img_xz_mib']} MiB", flush=True)
    return figures


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--boards", default="x86-64", help="comma-separated, e.g. x86-64,rpi4")
    ap.add_argument("--skip-cold", action="store_true")
    ap.add_argument("--skip-boot", action="store_true")
    ap.add_argument("--skip-release", action="store_true")
    args = ap.parse_args()
    figures: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.node()} {platform.machine()}, "
        f"{os.cpu_count()} cores, {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') // 2**30} GiB"}
    boards = args.boards.split(",")
    for board in boards:
        figures[board] = bench_board(board, args)
    base = figures.get("x86-64")
    if isinstance(base, dict) and "cold_build_s" in base:
        for board in boards:
            other = figures[board]
            if board != "x86-64" and isinstance(other, dict) and "cold_build_s" in other:
                ratio = round(float(other["cold_build_s"]) / float(base["cold_build_s"]), 2)
                other["cold_build_ratio_to_x86_64"] = ratio
                print(f"{board}: cold build is {ratio}x the x86-64 cold build", flush=True)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
