"""Home Assistant Core's venv: the release, the Python it runs on (image/runtime.py), and the
packages it needs offline, all built on the host's own architecture and never under emulation.

For a foreign image uv picks the target's wheels (--python-platform) and the native interpreter
of the same version byte-compiles them (.pyc files do not depend on the CPU); the few packages
that publish no wheel for the target are cross-compiled natively, once, into a wheelhouse.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from . import cache, hass, host, radios, runtime, wheels
from .boards import board_module
from .chroot import chroot_env, mounted
from .context import Context
from .errors import SmartOSError
from .run import run
from .stages import builder_root, check_builder_python, cross_root

VENV = "/opt/smartos/venv"
SUITE_PYTHON = "/usr/bin/python3"
UV_ENV = {"UV_CACHE_DIR": "/var/cache/uv", "UV_LINK_MODE": "copy", "UV_PYTHON_DOWNLOADS": "never",
          "UV_HTTP_TIMEOUT": "180"}


def resolve_homeassistant(ctx: Context) -> None:
    """The release to install (ctx.homeassistant: its requirements and USB matchers, which the
    radios role names) and, in ctx.ha_python, the Python it runs on and why."""
    cfg = ctx.config
    with ctx.stage("Resolve Home Assistant"):
        release, ctx.ha_python = runtime.select(
            ctx.cache, cfg.debian.suite.value, ctx.python_version, cfg.homeassistant.version,
            installable=installable(ctx.cache, board_module(cfg.board).ARCH))
        for passed_over in ctx.ha_python.skipped:
            ctx.note(f"passed over Home Assistant {passed_over}")
        ctx.note(f"Home Assistant {release.version} on Python {ctx.ha_python.python}: "
                 f"{ctx.ha_python.reason}")
        wheel = hass.fetch_wheel(release, ctx.cache)
        ctx.homeassistant = hass.derive(wheel, release.version)


# What uv says when the index lacks what a release pins (anything else, a network error say, is
# an error of the build, not a reason to take an older release)
_UNRESOLVABLE = ("No solution found when resolving dependencies",)


def installable(cache_dir: Path, arch: str) -> Callable[[hass.Release, runtime.Choice], str]:
    """For runtime.select: whether a release's offline requirement set resolves for arch and its
    Python on the package index ("" when it does, else the resolver's reason). Resolved with the
    host's uv for the target platform: metadata only, nothing is built or installed."""
    def check(release: hass.Release, choice: runtime.Choice) -> str:
        reqs = hass.derive(hass.fetch_wheel(release, cache_dir), release.version)
        with tempfile.TemporaryDirectory(prefix="smartos-resolve-") as tmp:
            work = Path(tmp)
            (work / "requirements.txt").write_text("\n".join(reqs.requirements) + "\n")
            (work / "constraints.txt").write_text(reqs.constraints)
            env = {"UV_CACHE_DIR": str(cache_dir / "uv"), "UV_PYTHON_DOWNLOADS": "never",
                   "UV_HTTP_TIMEOUT": UV_ENV["UV_HTTP_TIMEOUT"]}
            proc = run([host.uv_binary(), "pip", "compile", "--quiet", "--no-header",
                        "--python-version", choice.python, "--python-platform", wheels.PLATFORMS[arch][0],
                        work / "requirements.txt", "-c", work / "constraints.txt",
                        "-o", work / "resolved.txt"], env=env, capture=True, check=False)
        if proc.returncode == 0:
            return ""
        if not any(marker in proc.stderr for marker in _UNRESOLVABLE):
            raise SmartOSError(f"cannot resolve Home Assistant {release.version}'s requirements: "
                               f"{proc.stderr.strip()[-800:]}")
        because = re.search(r"Because (.+?)(?:,| and| we can conclude|$)", proc.stderr, re.MULTILINE)
        return because[1].strip() if because else proc.stderr.strip().splitlines()[-1]
    return check


def install_homeassistant(ctx: Context) -> None:
    """Home Assistant Core in a venv, with everything a fresh install sets up offline (cached)."""
    with ctx.stage("Install Home Assistant Core venv"):
        reqs, choice = ctx.homeassistant, ctx.ha_python
        assert reqs is not None and choice is not None
        ctx.facts["homeassistant"] = reqs.version
        arch = board_module(ctx.config.board).ARCH
        parts: list[object] = ["venv-v6", arch, choice.python, reqs.requirements, reqs.constraints]
        if choice.runtime is not None:
            rt = choice.runtime
            parts += [rt.prefix, [d.sha256 for d in rt.debs]]
            # Bind-mounted read-only like the venv below; mkfs.ext4 -d reads it from the cache.
            prefix = ctx.rootfs / rt.prefix.lstrip("/")
            prefix.mkdir(parents=True, exist_ok=True)
            run(["mount", "--bind", "-o", "ro", runtime_tree(ctx, rt, arch), prefix], logfile=ctx.logfile)
            ctx.facts["python_runtime"] = rt.origin(arch)
        key = cache.digest(*parts)
        entry = cache.Entry(ctx.cache, "hass-venv", key)
        ctx.note(f"Home Assistant {reqs.version}: {len(reqs.requirements) - 1} integration "
                 f"requirements from {len(reqs.integrations)} integrations")
        if not entry.exists():
            _build_venv(ctx, entry, reqs)
        ctx.facts["venv_id"] = key
        ctx.facts["python_packages"] = json.loads((entry.path / "freeze.json").read_text())
        built = entry.path / "built-wheels.json"
        ctx.facts["built_wheels"] = json.loads(built.read_text()) if built.exists() else []
        target = ctx.rootfs / VENV.lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        # Bind-mounted, not copied: mkfs.ext4 -d reads it straight from the cache. Read-only,
        # which also keeps its access times (copied into the image) the same build after build.
        run(["mount", "--bind", "-o", "ro", entry.path / "venv", target], logfile=ctx.logfile)
        site = next((target / "lib").glob("python3*/site-packages"))
        ffmpeg = next(site.glob("imageio_ffmpeg/binaries/ffmpeg-*"), None)
        if ffmpeg is None:
            raise SmartOSError("the venv has no ffmpeg binary (imageio-ffmpeg)")
        link = ctx.rootfs / "usr/local/bin/ffmpeg"
        link.unlink(missing_ok=True)
        link.symlink_to(Path("/") / ffmpeg.relative_to(ctx.rootfs))
        (ctx.rootfs / "etc/smartos").mkdir(parents=True, exist_ok=True)
        (ctx.rootfs / "etc/smartos/venv-id").write_text(key + "\n")
        # every stick this release's USB discovery knows gets a stable name (docs/radios.md)
        rules = ctx.rootfs / radios.RULES
        rules.parent.mkdir(parents=True, exist_ok=True)
        rules.write_text(radios.rules(radios.sticks(reqs.usb), reqs.version))


def runtime_tree(ctx: Context, rt: runtime.Runtime, arch: str, build: bool = False,
                 cross: str | None = None) -> Path:
    """rt for arch, unpacked, its interpreter patched to start on its own loader, its standard
    library byte-compiled (cached). build: with the headers extensions compile against. cross:
    also the headers and build settings of that architecture, for cross-compiling wheels."""
    native = host.native_arch()
    roles = ("run", "build") if build or cross else ("run",)
    debs = [d for role in roles for d in rt.packages(arch, role)]
    extra = rt.packages(cross, "build") + rt.packages(cross, "run") if cross else []
    key = cache.digest("runtime-v1", rt.prefix, arch, cross, [d.sha256 for d in debs + extra], runtime.DROP)
    entry = cache.Entry(ctx.cache, "runtime", key)
    if entry.exists():
        return entry.path
    # A foreign runtime's byte code is compiled by the native one (the same version).
    compiler = None if arch == native else runtime_tree(ctx, rt, native)
    mirror = ctx.config.debian.mirror
    files = [p for role in roles for p in runtime.fetch(rt, arch, mirror, ctx.cache, role)]
    ctx.note(f"Python {rt.python} runtime for {arch}{f' (cross-compiling for {cross})' if cross else ''}: "
             f"{len(files)} packages from Debian {rt.suite}")
    tmp = entry.begin()
    runtime.unpack(rt, arch, files, tmp, ctx.logfile)
    if cross:
        foreign = ctx.workdir / f"runtime-{cross}"
        runtime.unpack(rt, cross, runtime.fetch(rt, cross, mirror, ctx.cache, "build")
                       + runtime.fetch(rt, cross, mirror, ctx.cache, "run"), foreign, ctx.logfile)
        runtime.add_cross_settings(rt, cross, foreign, tmp)
        shutil.rmtree(foreign)
    builder = builder_root(ctx, native)
    stage = "/build/runtime"
    with mounted(builder, binds=[(tmp, stage)]):
        patch = runtime.patchelf_args(rt, arch, f"{stage}/{rt.interpreter_path}")
        run(["chroot", builder, "patchelf", *patch], logfile=ctx.logfile)
    with mounted(builder, binds=[(tmp, stage)], read_only=[(compiler or tmp, rt.prefix)]):
        run(["chroot", builder, rt.interpreter, "-I", "-m", "compileall", "-q", "-j", "0",
             "-s", stage, "-p", rt.prefix, f"{stage}/usr/lib/python{rt.minor}"], logfile=ctx.logfile)
    entry.publish()
    entry.prune_others(keep=8)  # a runtime has up to four trees per version
    return entry.path


def _build_venv(ctx: Context, entry: cache.Entry, reqs: hass.Requirements) -> None:
    """The venv is always built by the host's own architecture; for a foreign image uv picks the
    target's wheels (--python-platform), and the few packages without one come from a wheelhouse
    cross-compiled once."""
    arch = board_module(ctx.config.board).ARCH
    native = host.native_arch()
    choice = ctx.ha_python
    assert choice is not None
    builder = builder_root(ctx, native)
    read_only: list[tuple[Path, str]] = []
    python = SUITE_PYTHON
    env = chroot_env(network=True) | UV_ENV
    if choice.runtime is None:
        check_builder_python(ctx, builder)
    else:
        rt = choice.runtime
        read_only.append((runtime_tree(ctx, rt, native, build=True), rt.prefix))
        python = rt.interpreter
        env |= runtime.build_env(rt)
    tmp = entry.begin()
    (tmp / "requirements.txt").write_text("\n".join(reqs.requirements) + "\n")
    (tmp / "constraints.txt").write_text(reqs.constraints)
    uv_cache = ctx.cache / "uv"
    uv_cache.mkdir(parents=True, exist_ok=True)
    shutil.copy(host.uv_binary(), builder / "usr/local/bin/uv")
    venv_in_builder = builder / VENV.lstrip("/")
    if venv_in_builder.exists():
        shutil.rmtree(venv_in_builder)
    binds = [(uv_cache, "/var/cache/uv"), (tmp, "/build")]
    target: list[str] = []
    if arch != native:
        wheelhouse = _foreign_wheelhouse(ctx, builder, tmp, arch, read_only)
        binds.append((wheelhouse, "/wheels"))
        target = ["--python-platform", wheels.PLATFORMS[arch][0], "--find-links", "/wheels", "--no-build"]
    with mounted(builder, binds=binds, network=True, read_only=read_only):
        run(["chroot", builder, "uv", "venv", "--seed", "--python", python, VENV],
            env=env, inherit_env=False, logfile=ctx.logfile)
        run(["chroot", builder, "uv", "pip", "install", "--python", f"{VENV}/bin/python", *target,
             "--compile-bytecode", "-r", "/build/requirements.txt", "-c", "/build/constraints.txt"],
            env=env, inherit_env=False, logfile=ctx.logfile)
        frozen = run(["chroot", builder, "uv", "pip", "list", "--python", f"{VENV}/bin/python",
                      "--format", "json"], env=env, inherit_env=False, capture=True).stdout
    _trim_venv(venv_in_builder)
    # Packages Home Assistant installs at run time live on the data partition (see
    # roles/homeassistant and overlays/common/usr/lib/smartos/prepare-data); this puts them on
    # sys.path.
    site = next((venv_in_builder / "lib").glob("python3*/site-packages"))
    (site / "smartos-runtime-deps.pth").write_text("/data/python-deps/current\n")
    shutil.move(venv_in_builder, tmp / "venv")
    (tmp / "freeze.json").write_text(frozen)
    (tmp / "built-wheels.json").write_text(json.dumps(ctx.facts.get("built_wheels", [])))
    entry.publish()
    entry.prune_others()


def _foreign_wheelhouse(ctx: Context, builder: Path, work: Path, arch: str,
                        read_only: list[tuple[Path, str]]) -> Path:
    """Wheels for the packages that publish none for arch, cross-compiled once at native speed
    (cross_root) and kept in the cache (wheels/<suite>-<arch>, or wheels/python<X.Y>-<arch> on a
    pinned runtime); the docs list which packages these are."""
    choice = ctx.ha_python
    assert choice is not None
    rt = choice.runtime
    shelf = f"python{rt.minor}" if rt else ctx.config.debian.suite.value
    wheelhouse = ctx.cache / "wheels" / f"{shelf}-{arch}"
    wheelhouse.mkdir(parents=True, exist_ok=True)
    env = chroot_env(network=True) | UV_ENV
    platform = wheels.PLATFORMS[arch][0]
    with mounted(builder, binds=[(ctx.cache / "uv", "/var/cache/uv"), (work, "/build")], network=True,
                 read_only=read_only):
        run(["chroot", builder, "uv", "pip", "compile", "--quiet", "--python-platform", platform,
             "--python-version", choice.python, "/build/requirements.txt",
             "-c", "/build/constraints.txt", "-o", "/build/pylock.toml"],
            env=env, inherit_env=False, logfile=ctx.logfile)
    tags = wheels.supported_tags(arch, choice.python)
    sdists = wheels.sdist_only(work / "pylock.toml", arch, choice.python)
    ctx.facts["built_wheels"] = [f"{s.name}=={s.version}" for s in sdists]
    missing = [s for s in sdists if not wheels.have_wheel(wheelhouse, s, tags)]
    if not missing:
        return wheelhouse
    ctx.note(f"cross-compiling {len(missing)} {arch} wheels (once): "
             + ", ".join(f"{s.name}=={s.version}" for s in missing))
    cross = cross_root(ctx, arch)
    python = SUITE_PYTHON
    cross_ro: list[tuple[Path, str]] = []
    build_env = wheels.cross_env(arch)
    if rt is None:
        check_builder_python(ctx, cross)
    else:
        cross_ro.append((runtime_tree(ctx, rt, host.native_arch(), cross=arch), rt.prefix))
        python = rt.interpreter
        build_env |= runtime.build_env(rt)
    src = work / "sdists"
    src.mkdir(exist_ok=True)
    for sdist in missing:
        wheels.download(sdist, src)
    shutil.copy(host.uv_binary(), cross / "usr/local/bin/uv")
    out = work / "built"
    out.mkdir(exist_ok=True)
    with mounted(cross, binds=[(ctx.cache / "uv", "/var/cache/uv"), (work, "/build")], network=True,
                 read_only=cross_ro):
        for sdist in missing:
            run(["chroot", cross, "uv", "build", "--python", python, "--wheel", "--out-dir", "/build/built",
                 f"/build/sdists/{sdist.filename}"], env=env | build_env,
                inherit_env=False, logfile=ctx.logfile)
    for whl in out.glob("*.whl"):
        shutil.copy(whl, wheelhouse / f".{whl.name}.tmp")
        (wheelhouse / f".{whl.name}.tmp").rename(wheelhouse / whl.name)
    still = [s.name for s in missing if not wheels.have_wheel(wheelhouse, s, tags)]
    if still:
        raise SmartOSError(f"no {arch} wheel came out of building {', '.join(still)}",
                           hint=f"see {ctx.logfile}")
    return wheelhouse


def _trim_venv(venv: Path) -> None:
    """Drop what no appliance user needs: test suites shipped inside packages, and the frontend's
    JavaScript source maps (50 MB, read only by a browser's developer tools) and pre-compressed
    copies (.br and .gz, 53 MB that xz cannot shrink any further). Without them aiohttp serves the
    plain files: a larger first load over a slow remote link, nothing else (the frontend's
    service worker caches it)."""
    site = next((venv / "lib").glob("python3*/site-packages"))
    for tests in list(site.glob("*/tests")) + list(site.glob("*/test")):
        if tests.is_dir() and tests.parent.name not in {"homeassistant"}:
            shutil.rmtree(tests)
    for pattern in ("hass_frontend/**/*.map", "hass_frontend/**/*.br", "hass_frontend/**/*.gz"):
        for extra in site.glob(pattern):
            extra.unlink()
    # botocore (boto3, for Home Assistant Cloud's sign-in) ships its 400-odd AWS service models
    # gzip-compressed one by one; it reads plain .json first. Plain, the image's xz compresses
    # them together: 8 MiB of the .img.xz instead of 15 MiB (the venv grows by 112 MB).
    for packed in site.glob("botocore/data/**/*.json.gz"):
        packed.with_suffix("").write_bytes(gzip.decompress(packed.read_bytes()))
        packed.unlink()
