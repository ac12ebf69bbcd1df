"""Can this machine run the lab (a Proxmox host in a box)? Each lab fixture skips with the exact reason."""

from __future__ import annotations

import os
import shutil

import pytest

LAB_BINARIES = {
    "sshd": "openssh-server",
    "zfs-fuse": "zfs-fuse",
    "zfs": "zfs-fuse",
    "apparmor_parser": "apparmor",
    "lxc-start": "lxc",
    "debootstrap": "debootstrap",
}


def lab_missing(*binaries: str) -> str | None:
    """Why the lab cannot run here, or None. CI installs everything (see .ci/run), so CI never skips."""
    if os.geteuid() != 0:
        return "the lab needs root (zfs-fuse, lxc, sshd on loopback)"
    for binary in binaries:
        if shutil.which(binary) is None and not os.path.exists(f"/usr/sbin/{binary}"):
            return f"`{binary}` not found: install Debian's {LAB_BINARIES.get(binary, binary)} (see .ci/run)"
    if "zfs-fuse" in binaries and not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing: zfs-fuse cannot run"
    return None


def require_lab(*binaries: str) -> None:
    """Skip the calling test/fixture with the reason when the lab cannot run. Fails instead under CI."""
    reason = lab_missing(*binaries)
    if reason is None:
        return
    if os.environ.get("CI") and not os.environ.get("PHOENIX_ALLOW_LAB_SKIP"):
        pytest.fail(f"lab unavailable in CI: {reason}")
    pytest.skip(reason)
