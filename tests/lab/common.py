"""Small helpers shared by the lab fixtures: where lab files live, deadline waits, cross-session locks."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
LAB_DIR = REPO_ROOT / ".lab"
"""Every lab runtime file lives here (gitignored; `make clean` removes it)."""
LAB_BIN = REPO_ROOT / "tests" / "lab" / "bin"
"""Test-only stand-ins the lab's sshd puts first on PATH: `pct` (LXC) and a `zfs` wrapper (zfs-fuse)."""
LXC_PATH = LAB_DIR / "lxc"
"""lxcpath of the lab's containers (the pct shim computes the same path from its own location)."""


def run(
    argv: list[str], *, check: bool = True, timeout: float = 60, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run argv with captured text output; on failure the error names argv and stderr, not just the status."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, input=input)
    if check and proc.returncode != 0:
        raise LabError(
            f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}"
        )
    return proc


class LabError(RuntimeError):
    """The lab could not be set up or torn down; the message carries the evidence."""


def wait_until(predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll predicate until true; raise LabError naming `what` once the deadline passes."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def file_lock(path: Path, *, timeout: float, what: str) -> Iterator[None]:
    """Hold an exclusive flock on path: pytest sessions in one checkout share one pool and one cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:

        def acquired() -> bool:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        wait_until(
            acquired, timeout=timeout, what=f"{what} (lock {path} held by another test session)", interval=0.2
        )
        yield
    finally:
        os.close(fd)  # closing releases the flock


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below path, parents first (from /proc/self/mountinfo)."""
    prefix = str(path.resolve())
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return sorted(p for p in points if p == prefix or p.startswith(prefix + "/"))


def remove_tree(path: Path) -> None:
    """rm -rf that never crosses into a mount: an interrupted debootstrap leaves /proc mounted inside, and a
    killed zfs-fuse leaves dead FUSE mounts behind."""
    for mount in reversed(mounts_under(path)):
        run(["umount", "-l", mount], check=False)
    run(["rm", "-rf", "--one-file-system", str(path)], timeout=300)


def container_rootfs(config: Path) -> Path | None:
    for line in config.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "lxc.rootfs.path" and value.strip().startswith("dir:"):
            return Path(value.strip().removeprefix("dir:"))
    return None


def stop_containers(roots: Sequence[Path] | None = None, lxcpath: Path = LXC_PATH) -> list[str]:
    """Kill lab containers whose rootfs lies at or below one of roots (None: all) and drop their configs.

    Returns the names handled. Safe when nothing runs or the pool is gone (a crashed run's leftovers).
    """
    handled = []
    for config in sorted(lxcpath.glob("*/config")) if lxcpath.is_dir() else []:
        rootfs = container_rootfs(config)
        if roots is not None and (rootfs is None or not any(rootfs.is_relative_to(r) for r in roots)):
            continue
        name = config.parent.name
        run(["lxc-stop", "-P", str(lxcpath), "-n", name, "--kill"], check=False, timeout=60)
        state = run(["lxc-info", "-P", str(lxcpath), "-n", name, "-s", "-H"], check=False).stdout.strip()
        if state == "RUNNING":
            raise LabError(f"lab container {name} is still running after lxc-stop --kill")
        run(["rm", "-rf", "--one-file-system", str(config.parent)])
        handled.append(name)
    return handled
