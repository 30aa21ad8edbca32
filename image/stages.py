"""The build stages, in the order pipeline.STAGES runs them. Each takes the Context and says
what it does once, through ctx.stage()."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import lzma
import os
import shlex
import shutil
import uuid
from pathlib import Path
from typing import Any

import yaml

from . import __version__, cache, host, layout, native, release, wheels
from .boards import board_module
from .chroot import mounted, umount_below
from .context import Context
from .errors import SmartOSError
from .run import filter_file, run

HA_USER_UID = 8123  # fixed so the data partition's ownership is known at build time
DPKG_PATH_RULES = ("exclude=/usr/share/man/*", "exclude=/usr/share/info/*",
                   "exclude=/usr/share/locale/*", "include=/usr/share/locale/locale.alias",
                   "exclude=/usr/share/doc/*", "include=/usr/share/doc/*/copyright")
UPDATE_INITRAMFS = "/usr/sbin/update-initramfs"
BUILD_PACKAGES = ("python3-venv", "python3-dev", "gcc", "g++", "make", "pkg-config",
                  "ca-certificates", "libffi-dev", "libssl-dev")  # what building Python packages needs
BUILDER_PACKAGES = (*BUILD_PACKAGES,
                    # the native tools a foreign tree borrows (image/native.py)
                    "patchelf", "kmod", "zstd", "cpio", "dracut-install")
BUILTIN_LOCALE = "C.UTF-8"  # built into glibc; any other locale is generated (roles/base)


def _cp_tree(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    run(["cp", "-a", "--reflink=auto", src, dst])


def image_packages(ctx: Context) -> list[str]:
    """Everything mmdebstrap installs: the roles' packages, the board's, the user's extras, and
    the locales package only when the image's locale is not built into glibc (its postinst
    alone took 50 s under arm64 emulation)."""
    locale = [] if ctx.config.locale == BUILTIN_LOCALE else [
        _role_default(ctx, "base", "base__locale_package")]
    return [*role_packages(ctx), *board_module(ctx.config.board).PACKAGES,
            *ctx.config.extra_packages, *locale]


def _role_default(ctx: Context, role: str, key: str) -> str:
    defaults = yaml.safe_load((ctx.repo / "roles" / role / "defaults" / "main.yml").read_text())
    return str(defaults[key])


def role_packages(ctx: Context) -> list[str]:
    """Debian packages the roles declare (`<role>__packages` in defaults), so mmdebstrap installs
    them in one transaction and the roles only confirm them."""
    pkgs: list[str] = []
    for defaults in sorted((ctx.repo / "roles").glob("*/defaults/main.yml")):
        data = yaml.safe_load(defaults.read_text()) or {}
        for key, value in data.items():
            if key.endswith("__packages") and isinstance(value, list):
                pkgs += [str(v) for v in value]
    return pkgs


def check_host(ctx: Context) -> None:
    with ctx.stage("Check host tools"):
        host.ensure_tools(ctx.config.board, ctx.logfile, ctx.console, release=ctx.keys is not None)
        host.check_emulation(board_module(ctx.config.board).ARCH)
        host.ensure_space(ctx.cache, ctx.out, need_gib=12)


def _deb_cache(ctx: Context) -> Path:
    """Downloaded .deb files, shared by every build of the same suite and architecture."""
    return ctx.cache / "debs" / f"{ctx.config.debian.suite}-{board_module(ctx.config.board).ARCH}"


NO_OP = "#!/bin/sh\n# SmartOS: diverted by the image builder (see image/boards). Does nothing.\nexit 0\n"


def _divert_hooks(paths: tuple[str, ...]) -> list[str]:
    """mmdebstrap hooks that divert package files to <path>.distrib and put a no-op in their place
    before the packages install, for good."""
    hooks = []
    for path in paths:
        parent = str(Path(path).parent)
        hooks.append(f'--essential-hook=mkdir -p "$1{parent}" && chroot "$1" dpkg-divert --quiet --local '
                     f'--rename --add {path} && printf %s {shlex.quote(NO_OP)} > "$1{path}" && '
                     f'chmod 0755 "$1{path}"')
    return hooks


def _mmdebstrap(ctx: Context, target: Path, packages: list[str], deb_cache: Path, arch: str,
                components: tuple[str, ...], diverted: tuple[str, ...] = (),
                path_rules: tuple[str, ...] = (), foreign: tuple[str, ...] = ()) -> None:
    """mmdebstrap into target; a foreign-architecture tree borrows native tools while its packages
    install (image/native.py), which needs the native builder tree first."""
    deb_cache.mkdir(parents=True, exist_ok=True)
    env = host.emulation_env(arch)
    overlay: list[str] = []
    if arch != host.native_arch():
        native_tree = builder_root(ctx, host.native_arch())
        overlay = native.mmdebstrap_options(native_tree)
        env["PATH"] = f"{native.path_dir()}:{os.environ.get('PATH', '')}"
    try:
        _run_mmdebstrap(ctx, target, packages, deb_cache, ",".join((arch, *foreign)), components,
                        diverted, path_rules, overlay, env)
    finally:
        umount_below(target)


def _run_mmdebstrap(ctx: Context, target: Path, packages: list[str], deb_cache: Path, arch: str,
                    components: tuple[str, ...], diverted: tuple[str, ...], path_rules: tuple[str, ...],
                    overlay: list[str], env: dict[str, str]) -> None:
    cfg = ctx.config
    run(["mmdebstrap", "--mode=root", "--variant=minbase", f"--architectures={arch}",
         f"--components={','.join(components)}", "--skip=download/empty",
         "--skip=essential/unlink", "--aptopt=Acquire::Retries \"3\"",
         # No manuals, translations or docs on an appliance (copyright files stay); the rule
         # stays in the image's dpkg config, so packages installed later follow it too.
         *(f"--dpkgopt=path-{rule}" for rule in (*DPKG_PATH_RULES, *path_rules)),
         *_divert_hooks(diverted),
         *overlay,
         f"--include={','.join(sorted(set(packages)))}",
         '--setup-hook=mkdir -p "$1"/var/cache/apt/archives/',
         # No initramfs while packages install (the kernel's and initramfs-tools' own runs): the
         # base role builds the one the image keeps, with its settings. Under arm64 emulation
         # each run costs a minute.
         f"--essential-hook=chroot \"$1\" dpkg-divert --quiet --local --rename --add {UPDATE_INITRAMFS}"
         f" && ln -s /bin/true \"$1{UPDATE_INITRAMFS}\"",
         f"--customize-hook=rm \"$1{UPDATE_INITRAMFS}\" && chroot \"$1\" dpkg-divert --quiet --local "
         f"--rename --remove {UPDATE_INITRAMFS}",
         f"--setup-hook=sync-in {deb_cache} /var/cache/apt/archives/",
         f"--customize-hook=sync-out /var/cache/apt/archives {deb_cache}",
         '--customize-hook=rm -f "$1"/var/cache/apt/archives/*.deb',
         *([native.unmount_hook()] if overlay else []),  # the last hook: the tree as installed
         cfg.debian.suite.value, target, cfg.debian.mirror],
        env=env, logfile=ctx.logfile)


def bootstrap(ctx: Context) -> None:
    """Debian base system with every package the roles and the board need (cached)."""
    cfg = ctx.config
    board = board_module(cfg.board)
    packages = image_packages(ctx)
    key = cache.digest("bootstrap-v5", DPKG_PATH_RULES, board.PATH_RULES, board.DIVERTED, NO_OP,
                       cfg.debian.suite, cfg.debian.mirror, board.ARCH, board.COMPONENTS,
                       sorted(set(packages)))
    entry = cache.Entry(ctx.cache, "bootstrap", key)
    ctx.facts["bootstrap_key"] = key
    ctx.facts["bootstrap_dir"] = entry.path
    with ctx.stage(f"Bootstrap Debian {cfg.debian.suite} ({board.ARCH})"):
        if entry.exists():
            ctx.note(f"cached: {entry.path}")
        else:
            host.check_mirror(cfg.debian.mirror, cfg.debian.suite.value)
            tmp = entry.begin(create=False)
            _mmdebstrap(ctx, tmp, packages, _deb_cache(ctx), board.ARCH, board.COMPONENTS,
                        board.DIVERTED, board.PATH_RULES)
            _decompress_modules(ctx, tmp, board.ARCH)
            entry.publish()
            entry.prune_others()
        check_tree_arch(entry.path, board.ARCH)
        ctx.python_version = _python_version(entry.path)
        ctx.note(f"Python {ctx.python_version}")


def _decompress_modules(ctx: Context, root: Path, arch: str) -> None:
    """Kernel modules stored uncompressed. Debian xz-compresses each module on its own, which
    the image's xz (and an update bundle's compression) cannot shrink any further: compressed
    together they take 53 MiB of the rpi4 .img.xz instead of 77 MiB, and the initramfs, which
    copies them, shrinks too. kmod loads either form; the tree grows by about 290 MB."""
    versions = [d for d in (root / "usr/lib/modules").iterdir() if (d / "modules.dep").exists()]
    for version in versions:
        for packed in version.rglob("*.ko.xz"):
            packed.with_suffix("").write_bytes(lzma.decompress(packed.read_bytes()))
            shutil.copystat(packed, packed.with_suffix(""))
            packed.unlink()
    read_only: list[tuple[Path, str]] = []
    if arch != host.native_arch():
        read_only = [(builder_root(ctx, host.native_arch()), native.NATIVE_ROOT)]
    env = host.emulation_env(arch) | {"PATH": f"{native.path_dir()}:/usr/sbin:/usr/bin:/sbin:/bin"}
    with mounted(root, read_only=read_only):
        for version in versions:  # the tree's own depmod, or the native one for a foreign tree
            run(["chroot", root, "depmod", "-a", version.name], env=env, logfile=ctx.logfile)


def _package_field(root: Path, package: str, name: str) -> str | None:
    """A field of an installed package, from the tree's dpkg status file."""
    status = (root / "var/lib/dpkg/status").read_text()
    for block in status.split("\n\n"):
        if block.startswith(f"Package: {package}\n") or f"\nPackage: {package}\n" in block:
            for line in block.splitlines():
                if line.startswith(f"{name}: "):
                    return line.split()[1]
    return None


def tree_arch(root: Path) -> str:
    """The Debian architecture a root tree was bootstrapped for (dpkg's own record of it)."""
    arch = _package_field(root, "dpkg", "Architecture")
    if arch is None:
        raise SmartOSError(f"{root} has no dpkg package: not a Debian root tree")
    return arch


def check_tree_arch(root: Path, arch: str) -> None:
    found = tree_arch(root)
    if found != arch:
        raise SmartOSError(f"the cached root tree {root} is {found}, but this board needs {arch}",
                           hint=f"delete it (sudo rm -rf {root}) and build again")


def _python_version(root: Path) -> str:
    version = _package_field(root, "python3", "Version")
    if version is None:
        raise SmartOSError("the bootstrapped system has no python3 package")
    return version.split("-")[0]


def _ansible_vars(ctx: Context) -> dict[str, Any]:
    cfg = ctx.config
    keys = cfg.authorized_keys()
    return {
        "smartos__image_build": True,  # not the version: a release at another version reuses the
        # configured tree (the version is written after the roles, _write_os_release)
        "base__hostname": cfg.hostname,
        "base__timezone": cfg.timezone,
        "base__locale": cfg.locale,
        "base__board": cfg.board.value,
        "ssh__admin_user": cfg.admin.user,
        "ssh__authorized_keys": keys,
        "homeassistant__uid": HA_USER_UID,
    }


def ansible_command(ctx: Context, inventory: str, extra_vars: Path, *args: str) -> list[str]:
    playbook = ctx.repo / "roles" / "site.yml"
    return ["ansible-playbook", "-i", inventory, str(playbook), "-e", f"@{extra_vars}", *args]


def _ansible_env(ctx: Context) -> dict[str, str]:
    return host.emulation_env(board_module(ctx.config.board).ARCH) | {
        "ANSIBLE_ROLES_PATH": str(ctx.repo / "roles"), "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0", "ANSIBLE_HOST_KEY_CHECKING": "0",
        "ANSIBLE_LOCAL_TEMP": str(ctx.workdir / "ansible-tmp"),
        "ANSIBLE_STDOUT_CALLBACK": "default", "ANSIBLE_CALLBACKS_ENABLED": "profile_tasks",
        # One interpreter start per task instead of several shell commands around it: each
        # start is an emulated process for a foreign-architecture tree.
        "ANSIBLE_PIPELINING": "1"}


def apply_roles(ctx: Context) -> None:
    """Ansible roles through a chroot connection (cached by the roles' content and variables)."""
    variables = _ansible_vars(ctx)
    roles_dir = ctx.repo / "roles"
    key = cache.digest("roles-v2", ctx.facts["bootstrap_key"], variables,
                       files=cache.tree_files(roles_dir))
    entry = cache.Entry(ctx.cache, "configured", key)
    with ctx.stage("Apply Ansible roles"):
        if entry.exists():
            ctx.note("cached: roles unchanged")
        else:
            tmp = entry.begin(create=False)
            _cp_tree(ctx.facts["bootstrap_dir"], tmp)
            binds = [(_deb_cache(ctx), "/var/cache/apt/archives")]
            read_only: list[tuple[Path, str]] = []
            connection: dict[str, Any] = {"ansible_become": False}  # root in the chroot already
            if host.native_arch() != board_module(ctx.config.board).ARCH:
                native_tree = builder_root(ctx, host.native_arch())
                read_only = [(native_tree, native.NATIVE_ROOT), *native.overlays(native_tree, tmp)]
                connection["ansible_python_interpreter"] = _native_python(tmp)
            varfile = ctx.workdir / "ansible-vars.json"
            varfile.write_text(json.dumps(variables | connection))
            with mounted(tmp, binds=binds, read_only=read_only):
                run(ansible_command(ctx, f"{tmp},", varfile, "-c", "community.general.chroot"),
                    env=_ansible_env(ctx), logfile=ctx.logfile)
            for leftover in (tmp / "var/cache/apt/archives").glob("*.deb"):
                leftover.unlink()
            if "ansible_python_interpreter" in connection:
                (tmp / NATIVE_PYTHON.lstrip("/")).unlink()
                (tmp / native.NATIVE_ROOT.lstrip("/")).rmdir()
            entry.publish()
            entry.prune_others()
        _materialize(ctx, entry.path)


NATIVE_PYTHON = "/tmp/smartos-native-python"


def _native_python(root: Path) -> str:
    """An interpreter for Ansible's modules in a foreign-architecture tree: the host architecture's
    Python 3 from the builder tree (bind-mounted at NATIVE_ROOT), started through its own dynamic
    loader so that no library path leaks into the emulated programs the modules run. Under
    qemu-user every module's interpreter start took 5-8 s; natively it takes a fraction of one.
    The modules read and write the target tree as their root; only the programs they run
    (systemctl, useradd, update-initramfs, ...) are the target's, emulated."""
    triplet = {"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}[host.native_arch()]
    loader = {"amd64": "ld-linux-x86-64.so.2", "arm64": "ld-linux-aarch64.so.1"}[host.native_arch()]
    libs = f"{native.NATIVE_ROOT}/usr/lib/{triplet}"
    wrapper = root / NATIVE_PYTHON.lstrip("/")
    wrapper.write_text(f"#!/bin/sh\nexec {libs}/{loader} --library-path {libs} "
                       f"{native.NATIVE_ROOT}/usr/bin/python3 \"$@\"\n")
    wrapper.chmod(0o755)
    return NATIVE_PYTHON


def _materialize(ctx: Context, configured: Path) -> None:
    """The image's root tree: an overlay over the cached configured tree, so later stages write
    only what they change and the cache stays untouched (a plain copy where overlayfs fails)."""
    upper, scratch = ctx.workdir / "upper", ctx.workdir / "overlay-work"
    for d in (upper, scratch, ctx.rootfs):
        d.mkdir(parents=True, exist_ok=True)
    proc = run(["mount", "-t", "overlay", "overlay", "-o",
                f"lowerdir={configured},upperdir={upper},workdir={scratch}", ctx.rootfs],
               check=False, logfile=ctx.logfile)
    if proc.returncode != 0:
        ctx.note("overlayfs unavailable: copying the configured tree")
        ctx.rootfs.rmdir()
        _cp_tree(configured, ctx.rootfs)


def install_overlays(ctx: Context) -> None:
    """Static trees (overlays/common, overlays/<board>) and the systemd units, then presets; the
    update keyring and settings; last the user's extra_trees, which may override any of it."""
    with ctx.stage("Install overlays and systemd units"):
        for tree in (ctx.repo / "overlays" / "common", ctx.repo / "overlays" / ctx.config.board.value):
            if tree.is_dir():
                run(["cp", "-a", "--no-preserve=ownership", f"{tree}/.", ctx.rootfs])
        unit_dir = ctx.rootfs / "usr/lib/systemd/system"
        preset_dir = ctx.rootfs / "usr/lib/systemd/system-preset"
        preset_dir.mkdir(parents=True, exist_ok=True)
        units = []
        for unit in sorted((ctx.repo / "systemd").iterdir()):
            if unit.suffix == ".preset":
                shutil.copy(unit, preset_dir / unit.name)
            elif unit.is_file():
                shutil.copy(unit, unit_dir / unit.name)
                units.append(unit.name)
        run(["systemctl", f"--root={ctx.rootfs}", "preset", *units], logfile=ctx.logfile)
        # smartosctl and smartos-agent: run by the image's own python3 and Debian's python3-*
        package = ctx.rootfs / "usr/lib/python3/dist-packages/smartos_cli"
        shutil.copytree(ctx.repo / "cli" / "smartos_cli", package, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
        _compile_bytecode(ctx, package)
        # Its bash completion, made here once instead of by python3 at every ssh login.
        from smartos_cli.main import completion_script

        completions = ctx.rootfs / "usr/share/bash-completion/completions"
        completions.mkdir(parents=True, exist_ok=True)
        (completions / "smartosctl").write_text(completion_script("bash"))
        _write_os_release(ctx)
        _write_update_settings(ctx)
        for extra in ctx.config.extra_trees:
            ctx.note(f"extra tree {extra}")
            run(["cp", "-a", "--no-preserve=ownership", f"{extra}/.", ctx.rootfs], logfile=ctx.logfile)


def _compile_bytecode(ctx: Context, package: Path) -> None:
    """Byte-compile a package of the root tree by the native builder's Python (the image's
    version; .pyc files do not depend on the CPU): the root is read-only on a device, where
    Python would otherwise compile every module again at each start of smartosctl."""
    builder = builder_root(ctx, host.native_arch())
    check_builder_python(ctx, builder)
    target = f"/usr/lib/python3/dist-packages/{package.name}"
    with mounted(builder, binds=[(package, f"/build/{package.name}")]):
        run(["chroot", builder, "python3", "-m", "compileall", "-q", "-d", target, f"/build/{package.name}"],
            logfile=ctx.logfile)


def _write_update_settings(ctx: Context) -> None:
    """The CA the device trusts for update bundles, and where and how it looks for updates
    (read by smartosctl update; the owner's choices on /data override channel and policy)."""
    upd = ctx.config.update
    keyring = ctx.config.update_keyring()
    if keyring is not None:
        shutil.copyfile(keyring, ctx.rootfs / "etc/rauc/keyring.pem")
        (ctx.rootfs / "etc/rauc/keyring.pem").chmod(0o644)
    settings = {"url": upd.url, "channel": upd.channel.value, "policy": upd.policy.value,
                "compatible": release.compatible(ctx.config.board)}
    (ctx.rootfs / "etc/smartos/update.json").write_text(json.dumps(settings, indent=2) + "\n")


def _write_os_release(ctx: Context) -> None:
    cfg = ctx.config
    osr = ctx.rootfs / "etc/os-release"
    base = osr.resolve() if osr.is_symlink() else osr
    debian = dict(line.split("=", 1) for line in base.read_text().splitlines() if "=" in line)
    if osr.is_symlink():
        osr.unlink()
    osr.write_text(
        'NAME="SmartOS"\n'
        f'PRETTY_NAME="SmartOS {cfg.version} (Debian {debian.get("VERSION_CODENAME", "")})"\n'
        "ID=smartos\nID_LIKE=debian\n"
        f"VERSION_ID={cfg.version}\nVERSION=\"{cfg.version}\"\n"
        f"VERSION_CODENAME={debian.get('VERSION_CODENAME', '')}\n"
        f"SMARTOS_BOARD={cfg.board.value}\n"
        f"SMARTOS_BUILD_ID={ctx.facts.get('build_id', '')}\n"
    )


def builder_root(ctx: Context, arch: str) -> Path:
    """A cached Debian tree of the image's suite with compilers, for building the venv (on the
    host's architecture) and, under emulation, the few wheels a foreign target lacks. The native
    one also lends its tools to foreign trees (image/native.py)."""
    cfg = ctx.config
    key = cache.digest("builder-v2", cfg.debian.suite, cfg.debian.mirror, arch, BUILDER_PACKAGES,
                       native.OVERLAID, native.PATH_ONLY)
    entry = cache.Entry(ctx.cache, "builder", key)
    if not entry.exists():
        ctx.note(f"bootstrapping the {arch} builder (once per suite)")
        tmp = entry.begin(create=False)
        _mmdebstrap(ctx, tmp, list(BUILDER_PACKAGES), ctx.cache / "debs" / f"{cfg.debian.suite}-{arch}",
                    arch=arch, components=("main",))
        if arch == host.native_arch():
            native.install_tools(tmp, arch, ctx.logfile)
        entry.publish()
        entry.prune_others()
    return entry.path


def check_builder_python(ctx: Context, builder: Path) -> None:
    """What the builder's python3 compiles is loaded by the image's: the two must be the same."""
    builder_py = _python_version(builder)
    if builder_py != ctx.python_version:
        shutil.rmtree(builder)
        raise SmartOSError(f"the venv builder has Python {builder_py} but the image has "
                           f"{ctx.python_version} (the mirror moved on)", hint="run the build again")


def cross_root(ctx: Context, arch: str) -> Path:
    """A cached native Debian tree with arch's cross compilers and arch's Python headers and build
    settings (Debian's multiarch libpython3-dev, whose sysconfig data names the cross compiler):
    the few wheels PyPI lacks for arch are compiled here at native speed (wheels.cross_env)."""
    cfg = ctx.config
    native_arch = host.native_arch()
    packages = [*BUILD_PACKAGES, *wheels.cross_packages(arch)]
    key = cache.digest("cross-v1", cfg.debian.suite, cfg.debian.mirror, native_arch, arch, packages)
    entry = cache.Entry(ctx.cache, "cross", key)
    if not entry.exists():
        ctx.note(f"bootstrapping the {native_arch} tree that cross-compiles for {arch} (once per suite)")
        tmp = entry.begin(create=False)
        _mmdebstrap(ctx, tmp, packages, ctx.cache / "debs" / f"{cfg.debian.suite}-{native_arch}",
                    arch=native_arch, components=("main",), foreign=(arch,))
        entry.publish()
        entry.prune_others()
    return entry.path


DATA_LAYOUT = "usr/lib/tmpfiles.d/smartos-data.conf"  # in the root tree (overlays/common)


def prepare_data(ctx: Context) -> None:
    """The data partition's first contents: its layout, laid out by systemd-tmpfiles from the same
    file smartos-prepare applies at every boot (owners resolved in the image's /etc), and the
    journal's directory."""
    with ctx.stage("Prepare the data partition"):
        data = ctx.workdir / "data"
        scratch = ctx.workdir / "data-root"
        for d in (data, scratch):
            if d.exists():
                shutil.rmtree(d)
        (scratch / "etc").mkdir(parents=True)
        for name in ("passwd", "group"):
            shutil.copy(ctx.rootfs / "etc" / name, scratch / "etc" / name)
        run(["systemd-tmpfiles", f"--root={scratch}", "--create", ctx.rootfs / DATA_LAYOUT],
            logfile=ctx.logfile)
        (scratch / "data").rename(data)
        shutil.rmtree(scratch)
        (data / "journal").mkdir()  # bind-mounted over /var/log/journal (roles/base, fstab)
        (data / "smartos" / "README").write_text(
            "This partition keeps what survives an OS update: Home Assistant's configuration,\n"
            "runtime-installed Python packages, ssh host keys, network settings and the journal.\n")


def finalize_rootfs(ctx: Context) -> None:
    """Per-device state out (machine-id, host keys), build facts in."""
    with ctx.stage("Finalize the root filesystem"):
        root = ctx.rootfs
        (root / "etc/machine-id").write_text("")
        dbus_id = root / "var/lib/dbus/machine-id"
        if dbus_id.exists() or dbus_id.is_symlink():
            dbus_id.unlink()
        for key in (root / "etc/ssh").glob("ssh_host_*"):
            key.unlink()
        # The boot partition's mount points stay empty too: raspi-firmware's postinst copies the
        # firmware into /boot/firmware; the builder writes the real boot partition.
        for junk in ("var/lib/apt/lists", "var/cache/apt", "var/log/journal", "boot/firmware", "boot/efi"):
            for p in (root / junk).glob("*"):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
        (root / "etc/smartos/build.json").write_text(json.dumps({
            "version": ctx.config.version, "board": ctx.config.board.value,
            "build_id": ctx.facts["build_id"], "homeassistant": ctx.facts.get("homeassistant"),
        }, indent=2) + "\n")


def make_bootloader(ctx: Context) -> None:
    with ctx.stage("Install the bootloader"):
        esp = ctx.workdir / "esp"
        if esp.exists():
            shutil.rmtree(esp)
        esp.mkdir()
        board_module(ctx.config.board).make_esp(ctx.rootfs, esp, ctx.facts["layout"], ctx.logfile)


def assemble_disk(ctx: Context) -> None:
    """GPT, filesystems written straight into the image at their offsets: no loop devices."""
    plan: layout.Layout = ctx.facts["layout"]
    with ctx.stage("Assemble the disk image"):
        ctx.out.mkdir(parents=True, exist_ok=True)
        img = ctx.out / f".{ctx.image_name}.img.tmp"
        ctx.facts["tmp_image"] = img
        img.unlink(missing_ok=True)
        with img.open("wb") as fh:
            fh.truncate(plan.disk_mib * layout.MIB)
        run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", img],
            input_text=plan.sfdisk_script(), logfile=ctx.logfile)
        esp = plan.by_name(layout.ESP)
        esp_img = ctx.workdir / "esp.img"
        esp_img.unlink(missing_ok=True)
        run(["mkfs.fat", "-F", "32", "-n", "SMARTOS", "-C", esp_img, str(esp.size_mib * 1024)],
            logfile=ctx.logfile)
        run(["mcopy", "-s", "-i", esp_img, *sorted((ctx.workdir / "esp").iterdir()), "::/"],
            logfile=ctx.logfile)
        run(["dd", f"if={esp_img}", f"of={img}", "bs=1M", f"seek={esp.start_mib}",
             "conv=notrunc,sparse", "status=none"], logfile=ctx.logfile)
        _mkfs_ext4(ctx, img, plan.by_name(layout.ROOT_A), "smartos-root", ctx.rootfs,
                   reproducible=True)
        _mkfs_ext4(ctx, img, plan.by_name(layout.DATA), "smartos-data", ctx.workdir / "data")


def make_bundle(ctx: Context) -> None:
    """A release (`smartos release`): root slot A of the image, as a signed RAUC bundle."""
    if ctx.keys is None:
        return
    plan: layout.Layout = ctx.facts["layout"]
    with ctx.stage("Make the update bundle"):
        slot = plan.by_name(layout.ROOT_A)
        slot_image = ctx.workdir / "rootfs.ext4"
        run(["dd", f"if={ctx.facts['tmp_image']}", f"of={slot_image}", "bs=1M",
             f"skip={slot.start_mib}", f"count={slot.size_mib}", "conv=sparse", "status=none"],
            logfile=ctx.logfile)
        bundle = ctx.out / f".{ctx.image_name}.raucb.tmp"
        ha = ctx.facts.get("homeassistant") or "?"
        release.make_bundle(slot_image, bundle, board=ctx.config.board, version=ctx.config.version,
                            description=f"SmartOS {ctx.config.version} with Home Assistant {ha}",
                            build_id=ctx.facts["build_id"], keys=ctx.keys, workdir=ctx.workdir,
                            logfile=ctx.logfile, fast=ctx.fast_bundle)
        ctx.facts["tmp_bundle"] = bundle
        ctx.facts["manifest_hash"] = release.manifest_hash(
            bundle, board=ctx.config.board, keys=ctx.keys, workdir=ctx.workdir, logfile=ctx.logfile)


# GRUB and older tools read ext4 without these newer defaults; nothing here needs them.
EXT4_FEATURES = "^orphan_file,^metadata_csum_seed"


# The root filesystem's creation time, unless SOURCE_DATE_EPOCH says otherwise (2026-01-01).
ROOT_FS_EPOCH = 1767225600


def _mkfs_ext4(ctx: Context, img: Path, part: layout.Partition, label: str, tree: Path,
               reproducible: bool = False) -> None:
    """mkfs.ext4 -d, written into the image at the partition's offset.

    reproducible (the root slot): the same UUID and directory hash seed for every build of a
    board, and a fixed creation time. Left random, they are mixed into every metadata block
    (checksums, directory hashes), so two builds of the same tree would share almost no
    metadata; fixed, a patch release differs from the last one only where its files do, which
    is what RAUC's adaptive updates download (measured in docs/benchmarks.md).
    """
    blocks = part.size_mib * layout.MIB // 4096
    extended = f"offset={part.start_mib * layout.MIB},root_owner=0:0"
    args: list[str | Path] = []
    env: dict[str, str] = {}
    if reproducible:
        fs_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"smartos:{ctx.config.board.value}:root"))
        args = ["-U", fs_uuid]
        extended += f",hash_seed={fs_uuid}"
        env["E2FSPROGS_FAKE_TIME"] = os.environ.get("SOURCE_DATE_EPOCH", str(ROOT_FS_EPOCH))
    run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-L", label, "-O", EXT4_FEATURES, *args,
         "-E", extended, "-m", "1", "-d", tree, img, str(blocks)], env=env, logfile=ctx.logfile)


def publish(ctx: Context) -> None:
    """Compress, map, checksum and describe the image, then give everything its final name."""
    cfg = ctx.config
    tmp: Path = ctx.facts["tmp_image"]
    name = ctx.image_name
    with ctx.stage("Compress and publish" if cfg.compress else "Publish"):
        finals: list[Path] = []
        if cfg.compress:
            bmap_tmp = ctx.out / f".{name}.img.bmap.tmp"
            run(["bmaptool", "create", "-o", bmap_tmp, tmp], logfile=ctx.logfile)
            xz_tmp = ctx.out / f".{name}.img.xz.tmp"
            ctx.note(f"xz -T0 {XZ_LEVEL} {tmp.name}")
            filter_file(["xz", "-T0", XZ_LEVEL, "-c"], tmp, xz_tmp)
            pairs = [(xz_tmp, ctx.out / f"{name}.img.xz"), (bmap_tmp, ctx.out / f"{name}.img.bmap")]
        else:
            pairs = [(tmp, ctx.out / f"{name}.img")]
        if "tmp_bundle" in ctx.facts:
            pairs.append((ctx.facts["tmp_bundle"], ctx.out / f"{name}.raucb"))
        manifest_tmp = ctx.out / f".{name}.manifest.json.tmp"
        manifest_tmp.write_text(json.dumps(_manifest(ctx), indent=2) + "\n")
        pairs.append((manifest_tmp, ctx.out / f"{name}.manifest.json"))
        for src, dst in pairs:
            src.rename(dst)
            finals.append(dst)
        tmp.unlink(missing_ok=True)
        if cfg.compress:  # a raw image is a local try-out; reading 5 GiB for its sum is not worth it
            _write_sums(ctx.out, finals)
        ctx.facts["outputs"] = finals
        for f in finals:
            ctx.note(f"{f}  ({f.stat().st_size / layout.MIB:.1f} MiB)")


# -9: a 64 MiB dictionary finds repeats across the venv's many small files: 348 MiB against 361 MiB
# with -6 (measured 2026-11-25), for ~40% more time; ~700 MiB of memory per thread to compress.
XZ_LEVEL = "-9"


def _write_sums(out: Path, files: list[Path]) -> None:
    lines = []
    for f in sorted(files):
        if f.is_file():
            h = hashlib.sha256()
            with f.open("rb") as fh:
                while chunk := fh.read(1 << 22):
                    h.update(chunk)
            lines.append(f"{h.hexdigest()}  {f.name}")
    tmp = out / ".SHA256SUMS.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    tmp.rename(out / "SHA256SUMS")


def _debian_packages(root: Path) -> dict[str, str]:
    pkgs: dict[str, str] = {}
    name = ""
    for line in (root / "var/lib/dpkg/status").read_text().splitlines():
        if line.startswith("Package: "):
            name = line.split()[1]
        elif line.startswith("Version: ") and name:
            pkgs[name] = line.split()[1]
    return dict(sorted(pkgs.items()))


def _manifest(ctx: Context) -> dict[str, Any]:
    git = run(["git", "-C", ctx.repo, "describe", "--always", "--dirty", "--abbrev=12"],
              capture=True, check=False).stdout.strip() or "unknown"
    plan: layout.Layout = ctx.facts["layout"]
    settings = ctx.config.as_dict()
    settings["admin"]["ssh_keys"] = [k.split()[0] + " …" for k in ctx.config.authorized_keys()]
    return {
        "name": ctx.image_name,
        "version": ctx.config.version,
        "board": ctx.config.board.value,
        "build_id": ctx.facts["build_id"],
        "built_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "builder": {"smartos": __version__, "git": git},
        "homeassistant": ctx.facts.get("homeassistant"),
        "python": ctx.python_version,
        # Home Assistant's interpreter when it is not the suite's python3: where it comes from
        "python_runtime": ctx.facts.get("python_runtime"),
        "settings": settings,
        "partitions": [dataclasses.asdict(p) for p in plan.partitions],
        "debian_packages": _debian_packages(ctx.rootfs),
        "python_packages": {p["name"]: p["version"] for p in ctx.facts.get("python_packages", [])},
        # packages with no wheel for this architecture on PyPI, built by SmartOS's builder
        "built_wheels": ctx.facts.get("built_wheels", []),
        "timings_s": ctx.timings,
    }


def new_layout(ctx: Context) -> layout.Layout:
    board = board_module(ctx.config.board)
    uuids = {name: str(uuid.uuid4()) for name in (layout.ESP, layout.ROOT_A, layout.ROOT_B, layout.DATA)}
    return layout.plan(ctx.config.partitions, uuids, table=board.TABLE, disk_id=board.DISK_ID)
