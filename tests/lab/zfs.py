"""Lab fixtures `lab_zpool` (session) and `lab_zfs` (per test): real ZFS from zfs-fuse on a file-backed pool.

The pool is named `rpool` with a `rpool/data` dataset, which is what PVE's `local-zfs` storage points at, so
Phoenix's providers see PVE's names. Files live under `.lab/zfs/` (pool.img, mnt/, the daemon's pid file).
One pool per machine: a file lock makes concurrent test sessions in one checkout take turns, and a pool left
by a crashed run (and the containers on it) is destroyed before a new one is made.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.lab.common import (
    LAB_BIN,
    LAB_DIR,
    LabError,
    file_lock,
    mounts_under,
    remove_tree,
    run,
    stop_containers,
    wait_until,
)
from tests.lab.requirements import require_lab

POOL = "rpool"
ZFS_DIR = LAB_DIR / "zfs"
POOL_SIZE = "6G"  # sparse: only what tests write takes disk space
DAEMON_TIMEOUT_S = 30
DAEMON_STOP_S = 10  # it exits in ~1 s; longer means a mount is held, and SIGKILL follows (next run cleans up)
# Another session's whole lab run may be ahead of us; several engineers sharing one machine can raise it.
SESSION_LOCK_TIMEOUT_S = float(os.environ.get("PHOENIX_LAB_LOCK_TIMEOUT_S", "600"))
SESSION_LOCK = ZFS_DIR / "session.lock"


@dataclass(frozen=True)
class LabZpool:
    """The lab's pool. `zfs()` runs the real CLI; helpers raise LabError with zfs's own stderr on failure."""

    pool: str
    """Pool name, `rpool` as on a default PVE install."""
    data: str
    """`rpool/data`: the dataset PVE's `local-zfs` storage (type zfspool) uses for guest disks."""
    mount_root: Path
    """Where the pool is mounted; `rpool/data` is `<mount_root>/data`."""
    image: Path
    """The file backing the pool's single vdev."""

    def zfs(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The lab's zfs wrapper (tests/lab/bin/zfs): the real CLI, minus zfs-fuse's spurious "busy"."""
        return run([str(LAB_BIN / "zfs"), *args], check=check)

    def exists(self, name: str) -> bool:
        return self.zfs("list", "-H", "-o", "name", "-t", "all", name, check=False).returncode == 0

    def get(self, name: str, prop: str) -> str:
        """One property's parsable value, e.g. get("rpool/data/subvol-101-disk-0", "origin") -> "-"."""
        return self.zfs("get", "-H", "-p", "-o", "value", prop, name).stdout.strip()

    def mountpoint(self, name: str) -> Path:
        return Path(self.get(name, "mountpoint"))

    def datasets(self, root: str | None = None) -> list[str]:
        """Every filesystem, volume and snapshot at or below root (default: the pool)."""
        out = self.zfs("list", "-H", "-o", "name", "-t", "all", "-r", root or self.pool).stdout
        return out.splitlines()

    def destroy_all_but(self, keep: set[str]) -> None:
        """Destroy what is not in keep, stopping lab containers on it first; clones go with origins (-R)."""
        extra = [name for name in self.datasets() if name not in keep]
        if not extra:
            return
        listing = self.zfs("list", "-H", "-o", "name,mountpoint", "-t", "filesystem", "-r", self.pool).stdout
        mounts = dict(line.split("\t") for line in listing.splitlines())
        stop_containers([Path(mounts[name]) for name in extra if mounts.get(name, "").startswith("/")])
        # Shortest names first: destroying a parent with -R takes its children and dependent clones along.
        for name in sorted(extra, key=lambda n: (n.count("/"), "@" in n, n)):
            if self.exists(name):
                self.zfs("destroy", "-R", name)


def daemon_alive() -> bool:
    return run(["zpool", "list", "-H", "-o", "name"], check=False).returncode == 0


def start_daemon(pidfile: Path) -> bool:
    """Start zfs-fuse unless it runs; True when the lab owns it (started now, or by a crashed lab run)."""
    if daemon_alive():
        return _lab_pid(pidfile) is not None
    pidfile.unlink(missing_ok=True)
    # It forks and the parent exits at once; no /zfs-kstat mount, the lab never reads it.
    run(["zfs-fuse", "--no-kstat-mount", "--pidfile", str(pidfile)])
    wait_until(daemon_alive, timeout=DAEMON_TIMEOUT_S, what="the zfs-fuse daemon to answer `zpool list`")
    return True


def _lab_pid(pidfile: Path) -> int | None:
    """The pid in the lab's pid file if that process is a live zfs-fuse."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"zfs-fuse" in cmdline and _alive(pid) else None


def stop_daemon(pidfile: Path) -> None:
    pid = _lab_pid(pidfile)
    if pid is None:
        return
    pidfile.unlink(missing_ok=True)
    # SIGTERM takes ~4 s (it waits out its sync thread); with no pool imported nothing is lost by SIGKILL.
    idle = run(["zpool", "list", "-H", "-o", "name"], check=False).stdout.strip() == ""
    for sig in (signal.SIGKILL,) if idle else (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        try:
            wait_until(lambda: not _alive(pid), timeout=DAEMON_STOP_S, what=f"zfs-fuse (pid {pid}) to exit")
        except LabError:
            if sig == signal.SIGKILL:
                raise
        else:
            return


def _alive(pid: int) -> bool:
    """True while pid runs; a zombie (exited, not yet reaped by its parent) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def destroy_stale_pool(pool: str, image: Path, mount_root: Path) -> None:
    """Remove what a crashed run left: its containers, its pool (only if backed by our image), dead mounts."""
    stop_containers([mount_root])
    status = run(["zpool", "status", pool], check=False)
    if status.returncode == 0:
        if str(image) not in status.stdout:
            raise LabError(f"a pool named {pool!r} exists that the lab did not create:\n{status.stdout}")
        # zfs-fuse unmounts asynchronously, so the first tries may answer "pool is busy".
        wait_until(
            lambda: run(["zpool", "destroy", "-f", pool], check=False).returncode == 0,
            timeout=DAEMON_TIMEOUT_S,
            what=f"`zpool destroy -f {pool}` to succeed",
            interval=0.2,
        )
    for mount in reversed(mounts_under(mount_root)):
        run(["umount", "-l", mount], check=False)
    remove_tree(mount_root)
    image.unlink(missing_ok=True)


def create_pool(pool: str, image: Path, mount_root: Path) -> LabZpool:
    image.parent.mkdir(parents=True, exist_ok=True)
    mount_root.mkdir(parents=True, exist_ok=True)
    run(["truncate", "-s", POOL_SIZE, str(image)])
    run(["zpool", "create", "-m", str(mount_root), pool, str(image)])
    lab = LabZpool(pool=pool, data=f"{pool}/data", mount_root=mount_root, image=image)
    lab.zfs("create", lab.data)
    return lab


def session_lock(timeout: float = SESSION_LOCK_TIMEOUT_S) -> contextlib.AbstractContextManager[None]:
    """The one lock every user of the lab pool holds for as long as it uses it: a pytest session
    (`lab_zpool`) or the demo box (tests/lab/box.py), so no two of them ever share the pool."""
    return file_lock(SESSION_LOCK, timeout=timeout, what="the lab pool")


@contextlib.contextmanager
def fresh_pool() -> Iterator[LabZpool]:
    """A fresh `rpool` (with `rpool/data`), zfs-fuse started if needed; destroyed, with its image, on exit
    (and zfs-fuse stopped if this block started it). Only under :func:`session_lock`."""
    pidfile = ZFS_DIR / "zfs-fuse.pid"
    image, mount_root = ZFS_DIR / "pool.img", ZFS_DIR / "mnt"
    started = start_daemon(pidfile)
    try:
        destroy_stale_pool(POOL, image, mount_root)
        yield create_pool(POOL, image, mount_root)
    finally:
        try:
            destroy_stale_pool(POOL, image, mount_root)
        finally:
            if started:
                stop_daemon(pidfile)


@pytest.fixture(scope="session")
def lab_zpool() -> Iterator[LabZpool]:
    """A fresh `rpool` (with `rpool/data`) for the session; destroyed, with its image, at the end."""
    require_lab("zfs-fuse", "zfs")
    with session_lock(), fresh_pool() as pool:
        yield pool


@pytest.fixture
def lab_zfs(lab_zpool: LabZpool) -> Iterator[LabZpool]:
    """The session pool; datasets and snapshots the test creates are destroyed when it ends."""
    before = set(lab_zpool.datasets())
    yield lab_zpool
    lab_zpool.destroy_all_but(before)
