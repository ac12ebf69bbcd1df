"""The AppArmor VM's disk: a debootstrap rootfs as an ext4 image, built once and cached outside the tree.

The image holds Debian's userspace (apparmor, lxc, docker.io, python3), the host kernel's modules, the init
script the VM boots into, and a uid-shifted copy of itself for the unprivileged LXC container the nesting
test starts. It is keyed by a hash of everything that goes into it (package list, suite, kernel version,
this builder's recipe), so a changed list builds a new image and an unchanged one is reused.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import shutil
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# What the VM needs: AppArmor's parser and aa-exec, lxc (and its abstractions) for the container, Docker
# for the nesting test, python3 for the probes, busybox-static for the image the nested Docker runs,
# kmod for modprobe, util-linux for mount/unshare.
PACKAGES = (
    "apparmor",
    "busybox-static",
    "docker.io",
    "e2fsprogs",
    "kmod",
    "lxc",
    "procps",
    "python3",
    "util-linux",
)
# Bump when the recipe below changes in a way the key would not see.
RECIPE_VERSION = "1"
CONTAINER_NAME = "phoenix-ct"
# Unprivileged container: root inside is uid/gid 100000 outside, as on a PVE host.
ID_SHIFT = 100000
ID_RANGE = 65536
DEBOOTSTRAP_TIMEOUT_S = 1800

INIT_SCRIPT = """\
#!/bin/sh
# PID 1 of the AppArmor VM: mount what the probes and lxc need, run the session's driver from the second
# disk, power off. Everything the session changes lives on a -snapshot overlay, so the image stays clean.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t securityfs securityfs /sys/kernel/security
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm /dev/mqueue
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /lab
mount -o ro /dev/vdb /lab
hostname phoenix-apparmor-vm
/usr/bin/python3 /lab/driver.py /lab/plan.json /dev/ttyS1
echo "phoenix-lab-init: driver exited $?" > /dev/console
sync
echo o > /proc/sysrq-trigger
sleep 60
"""


class ImageBuildError(RuntimeError):
    """The rootfs image could not be built; the message names the step and its output."""


@dataclass(frozen=True)
class Kernel:
    version: str
    vmlinuz: Path
    initrd: Path
    modules: Path


def host_kernel() -> Kernel | None:
    """Debian's newest installed linux-image (/boot/vmlinuz-*), with its initrd and modules, or None."""
    found = []
    for vmlinuz in Path("/boot").glob("vmlinuz-*"):
        version = vmlinuz.name.removeprefix("vmlinuz-")
        initrd = Path("/boot") / f"initrd.img-{version}"
        modules = Path("/lib/modules") / version
        if initrd.is_file() and modules.is_dir() and os.access(vmlinuz, os.R_OK):
            found.append(Kernel(version, vmlinuz, initrd, modules))
    if not found:
        return None
    # Debian's versions sort by their numeric parts (6.1.0-57-amd64).
    return max(
        found, key=lambda k: [int(p) if p.isdigit() else 0 for p in k.version.replace("-", ".").split(".")]
    )


def debian_suite() -> str:
    """The host's Debian codename: the rootfs matches the host the packages come from."""
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    raise ImageBuildError("/etc/os-release has no VERSION_CODENAME: not a Debian host?")


def cache_root() -> Path:
    """PHOENIX_CACHE_DIR, else ~/.cache/phoenix: outside the tracked tree, kept between sessions."""
    env = os.environ.get("PHOENIX_CACHE_DIR")
    base = Path(env) if env else Path.home() / ".cache" / "phoenix"
    return base / "apparmor-vm"


def image_key(kernel: Kernel, suite: str, mirror: str) -> str:
    recipe = "\n".join([RECIPE_VERSION, suite, mirror, kernel.version, *PACKAGES, INIT_SCRIPT])
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def _run(step: str, argv: list[str], timeout: float) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-4000:]
        raise ImageBuildError(f"{step}: {argv[0]} exited {proc.returncode}:\n{tail}")


def _shifted_copy(src: Path, dst: Path, skip: set[str]) -> None:
    """Copy ``src`` to ``dst`` with every uid/gid moved up by ID_SHIFT (an unprivileged container's rootfs).

    Device nodes are not copied (lxc populates the container's /dev); setuid/setgid bits, which chown
    clears, are put back.
    """
    dst.mkdir(parents=True)
    for dirpath, dirnames, filenames in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        if str(rel) in skip:
            dirnames[:] = []
            filenames = []
        target_dir = dst / rel
        if rel != Path("."):
            target_dir.mkdir(exist_ok=True)
        for name in dirnames + filenames:
            s = Path(dirpath) / name
            d = target_dir / name
            st = s.lstat()
            if stat.S_ISLNK(st.st_mode):
                d.symlink_to(os.readlink(s))
            elif stat.S_ISREG(st.st_mode):
                shutil.copyfile(s, d, follow_symlinks=False)
            elif stat.S_ISDIR(st.st_mode):
                d.mkdir(exist_ok=True)
            else:
                continue  # device nodes, fifos, sockets
            os.lchown(d, st.st_uid + ID_SHIFT, st.st_gid + ID_SHIFT)
            if not stat.S_ISLNK(st.st_mode):
                os.chmod(d, stat.S_IMODE(st.st_mode))
    root_st = src.stat()
    os.chown(dst, root_st.st_uid + ID_SHIFT, root_st.st_gid + ID_SHIFT)
    os.chmod(dst, stat.S_IMODE(root_st.st_mode))


def _build(tree: Path, image: Path, kernel: Kernel, suite: str, mirror: str) -> None:
    _run(
        "debootstrap",
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            suite,
            str(tree),
            mirror,
        ],
        DEBOOTSTRAP_TIMEOUT_S,
    )
    # The host kernel boots the VM, so its modules (overlay, veth, ...) go in the rootfs.
    shutil.copytree(kernel.modules, tree / "lib" / "modules" / kernel.version, symlinks=True)
    init = tree / "sbin" / "phoenix-lab-init"
    init.write_text(INIT_SCRIPT)
    init.chmod(0o755)
    # The apt caches are not needed in the VM and double the copy below.
    for cache in (tree / "var" / "cache" / "apt" / "archives").glob("*.deb"):
        cache.unlink()
    ct_root = tree / "var" / "lib" / "lxc" / CONTAINER_NAME / "rootfs"
    _shifted_copy(tree, ct_root, skip={"lib/modules", "var/lib/lxc", "proc", "sys", "dev"})
    size_mib = int(
        sum(f.stat().st_size for f in tree.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20
    )
    # Room for Docker's layers and the session's writes (they go to the -snapshot overlay, but ext4 needs
    # free blocks to allocate them).
    size_mib = int(size_mib * 1.3) + 1536
    _run(
        "mkfs.ext4",
        ["mkfs.ext4", "-q", "-F", "-L", "phoenix-aa", "-d", str(tree), str(image), f"{size_mib}M"],
        600,
    )


def ensure_image(kernel: Kernel) -> tuple[Path, float]:
    """The cached rootfs image for ``kernel``, built if missing; returns (path, seconds spent building).

    A file lock serialises concurrent sessions; the image appears atomically (rename) once complete, so a
    build killed half-way leaves nothing a later session would mistake for an image.
    """
    suite = debian_suite()
    mirror = os.environ.get("PHOENIX_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    image = root / f"rootfs-{image_key(kernel, suite, mirror)}.ext4"
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if image.exists():
            return image, 0.0
        # Under the lock nobody else is building: what is left is a killed build or an image for an
        # older key, each about 2 GB.
        for stale in [*root.glob("build-*"), *root.glob("rootfs-*.ext4")]:
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink()
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=root, prefix="build-") as work:
            tree = Path(work) / "tree"
            partial = Path(work) / "rootfs.ext4"
            _build(tree, partial, kernel, suite, mirror)
            partial.rename(image)
        return image, time.monotonic() - started


def machine_problem() -> str | None:
    """Why this machine cannot run the AppArmor VM, or None."""
    if platform.machine() != "x86_64":
        return f"the AppArmor VM boots an amd64 kernel; this machine is {platform.machine()}"
    if os.geteuid() != 0:
        return "building the rootfs (debootstrap, uid-shifted copy) needs root"
    for binary, package in (
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("debootstrap", "debootstrap"),
        ("mkfs.ext4", "e2fsprogs"),
    ):
        if shutil.which(binary) is None and not Path("/usr/sbin", binary).exists():
            return f"`{binary}` not found: install Debian's {package} (make lab-deps)"
    if host_kernel() is None:
        return "no /boot/vmlinuz-* with initrd and /lib/modules: install linux-image-amd64 (make lab-deps)"
    return None
