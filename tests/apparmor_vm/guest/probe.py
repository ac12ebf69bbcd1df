"""Escape probes, run INSIDE the AppArmor VM by a process under the confinement being tested.

Stdlib only (the VM has Debian's python3, not the project's venv). Each probe tries one way out and prints
one JSON line: {"probe": ..., "target": ..., "allowed": bool, "errno": name or null, ...}. "allowed" means
the kernel let the step through (AppArmor and everything else); the tests on the host decide what each
confinement must allow. Every attempt that could change the probing process itself (a profile change, a
mount) runs in a forked child, so one escape cannot taint the next probe.

Opening a file for writing is the step AppArmor mediates (it checks file access at open); nothing is
written, so a probe that succeeds leaves the kernel as it was.

    python3 probe.py <where> <json: {"nvidia_nodes": [...], "other_devices": [...], ...}>
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import sys

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
LIBC.unshare.argtypes = [ctypes.c_int]
CLONE_NEWNS = 0x00020000
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_BASE = "/tmp/phoenix-probe-mnt"

# sysctls that belong to the caller's own namespaces (UTS: hostname, domainname; IPC: msg*, sem*, shm*):
# LXC's container-base lets a container write them because they change only the container's view.
NAMESPACED_SYSCTLS = ("hostname", "domainname", "msg", "sem", "shm")


def errname(code: int | None) -> str | None:
    return None if code is None else errno.errorcode.get(code, str(code))


def emit(where: str, probe: str, target: str, allowed: bool, err: int | None = None, **extra: object) -> None:
    line = {"where": where, "probe": probe, "target": target, "allowed": allowed, "errno": errname(err)}
    line.update(extra)
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def label() -> str:
    with open("/proc/self/attr/current") as f:
        return f.read().strip("\x00\n ")


def in_child(fn) -> dict:  # type: ignore[no-untyped-def]
    """Run ``fn`` in a forked child; it returns a dict, passed back over a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            out = fn()
        except BaseException as exc:  # noqa: BLE001 - report, never let the child continue the parent's loop
            out = {"child_error": repr(exc)}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(b"".join(chunks) or b'{"child_error": "no output"}')


def change_profile(where: str, target: str, how: str) -> None:
    """``changeprofile`` (now) or ``exec`` (at the next exec) to ``target``; allowed = the kernel took the
    request (the write, and for ``exec`` the exec, succeeded). The label is reported too, but it cannot be
    the test: a task moved into another AppArmor namespace sees itself as that namespace's "unconfined".
    """

    def attempt() -> dict:
        before = label()
        attr = "/proc/self/attr/current" if how == "changeprofile" else "/proc/self/attr/exec"
        try:
            with open(attr, "w") as f:
                f.write(f"{how} {target}")
        except OSError as exc:
            return {"before": before, "errno": exc.errno, "after": label()}
        if how == "exec":
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.dup2(w, 1)
                try:
                    os.execv("/bin/cat", ["cat", "/proc/self/attr/current"])
                finally:
                    os._exit(127)
            os.close(w)
            data = os.read(r, 4096).decode().strip("\x00\n ")
            _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                return {"before": before, "errno": errno.EACCES, "after": before, "exec_failed": True}
            return {"before": before, "errno": None, "after": data}
        return {"before": before, "errno": None, "after": label()}

    out = in_child(attempt)
    if "child_error" in out:
        emit(where, f"change_profile_{how}", target, False, None, error=out["child_error"])
        return
    allowed = out["errno"] is None
    emit(
        where,
        f"change_profile_{how}",
        target,
        allowed,
        out["errno"],
        label_before=out["before"],
        label_after=out["after"],
    )


def try_open(where: str, probe: str, path: str, flags: int) -> None:
    """Open ``path`` with ``flags`` (O_WRONLY, O_RDONLY): allowed or the errno that refused it."""
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        emit(where, probe, path, False, exc.errno)
        return
    os.close(fd)
    emit(where, probe, path, True)


def open_device(where: str, path: str) -> None:
    """Open a device node read/write. The nodes are made with mknod and have no driver behind them, so a
    device AppArmor lets through fails later with ENXIO/ENODEV: only EACCES/EPERM mean "not reached".
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    except OSError as exc:
        reached = exc.errno not in (errno.EACCES, errno.EPERM)
        emit(where, "open_device", path, reached, exc.errno)
        return
    os.close(fd)
    emit(where, "open_device", path, True)


def try_mount(where: str, name: str, source: str, fstype: str | None, flags: int) -> None:
    """mount(2) in a private mount namespace (a child), onto a target outside every allowed one."""

    def attempt() -> dict:
        if LIBC.unshare(CLONE_NEWNS) != 0:
            return {"errno": ctypes.get_errno(), "stage": "unshare"}
        LIBC.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None)
        target = f"{MNT_BASE}/{name}"
        os.makedirs(target, exist_ok=True)
        rc = LIBC.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags, None)
        return {"errno": None if rc == 0 else ctypes.get_errno(), "target": target}

    out = in_child(attempt)
    if "child_error" in out:
        emit(where, "mount", name, False, None, error=out["child_error"])
        return
    emit(where, "mount", name, out["errno"] is None, out["errno"], stage=out.get("stage", "mount"))


def proc_at_allowed_target(where: str, target: str) -> None:
    """A procfs mounted where the profile allows it (Docker's rootfs) must keep /proc's denials: AppArmor
    matches paths, so /var/lib/docker/x/proc/sysrq-trigger is not /proc/sysrq-trigger unless the profile
    says so too."""

    def attempt() -> dict:
        if LIBC.unshare(CLONE_NEWNS) != 0:
            return {"mount_errno": ctypes.get_errno()}
        LIBC.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None)
        os.makedirs(target, exist_ok=True)
        if LIBC.mount(b"proc", target.encode(), b"proc", 0, None) != 0:
            return {"mount_errno": ctypes.get_errno()}
        results = {}
        for rel in ("sysrq-trigger", "sys/kernel/core_pattern", "sys/kernel/modprobe"):
            try:
                os.close(os.open(f"{target}/{rel}", os.O_WRONLY))
                results[rel] = None
            except OSError as exc:
                results[rel] = exc.errno
        return {"mount_errno": None, "opens": results}

    out = in_child(attempt)
    if out.get("mount_errno") is not None or "child_error" in out:
        emit(
            where, "proc_elsewhere_mount", target, False, out.get("mount_errno"), error=out.get("child_error")
        )
        return
    emit(where, "proc_elsewhere_mount", target, True)
    for rel, err in out["opens"].items():
        emit(where, "proc_elsewhere_write", rel, err is None, err)


SYS_FSOPEN, SYS_FSCONFIG, SYS_FSMOUNT = 430, 431, 432  # x86_64
FSCONFIG_CMD_CREATE = 6


def detached_procfs_sysctl(where: str, rel: str, probe: str = "detached_procfs_sysctl") -> None:
    """What runc >= 1.2.8 / 1.3.3 does for a container's sysctls (CVE-2025-52881): open a private procfs
    with the new mount API (fsopen/fsmount, never attached to any path) and write the sysctl relative to
    it. AppArmor sees that file as "/sys/net/..." (a disconnected path, no /proc prefix), so a profile
    that denies writes under /sys refuses it: the breakage Docker hit in unprivileged LXC in Nov 2025.
    """
    libc = LIBC
    libc.syscall.restype = ctypes.c_long
    fs = libc.syscall(SYS_FSOPEN, b"proc", 1)
    if fs < 0:
        emit(where, probe, rel, False, ctypes.get_errno(), stage="fsopen")
        return
    try:
        if libc.syscall(SYS_FSCONFIG, fs, FSCONFIG_CMD_CREATE, None, None, 0) < 0:
            emit(where, probe, rel, False, ctypes.get_errno(), stage="fsconfig")
            return
        mnt = libc.syscall(SYS_FSMOUNT, fs, 1, 0)
        if mnt < 0:
            emit(where, probe, rel, False, ctypes.get_errno(), stage="fsmount")
            return
    finally:
        os.close(fs)
    try:
        fd = os.open(rel, os.O_WRONLY, dir_fd=mnt)
    except OSError as exc:
        emit(where, probe, rel, False, exc.errno, stage="open")
        return
    finally:
        os.close(mnt)
    os.close(fd)
    emit(where, probe, rel, True, None, stage="open")


def main() -> None:
    where = sys.argv[1]
    spec = json.loads(sys.argv[2])
    emit(where, "label", "self", True, None, label=label())
    for target in spec["change_targets"]:
        change_profile(where, target, "changeprofile")
        change_profile(where, target, "exec")
    try_open(where, "write_proc", "/proc/sysrq-trigger", os.O_WRONLY)
    for path in spec["securityfs_paths"]:
        try_open(where, "write_securityfs", path, os.O_WRONLY)
    try_open(where, "read_securityfs", "/sys/kernel/security/apparmor/profiles", os.O_RDONLY)
    for name in sorted(os.listdir("/proc/sys/kernel")):
        path = f"/proc/sys/kernel/{name}"
        if os.path.isfile(path) and os.stat(path).st_mode & 0o200 and not name.startswith(NAMESPACED_SYSCTLS):
            try_open(where, "write_sysctl", path, os.O_WRONLY)
    for name, source, fstype, flags in (
        ("proc", "proc", "proc", 0),
        ("sysfs", "sysfs", "sysfs", 0),
        ("securityfs", "securityfs", "securityfs", 0),
        ("debugfs", "debugfs", "debugfs", 0),
        ("disk", spec["disk"], "ext4", 0),  # the root disk again, at a second place
        ("bind-proc", "/proc", None, MS_BIND),
        ("bind-sys", "/sys", None, MS_BIND),
        ("rbind-root", "/", None, MS_BIND | MS_REC),
    ):
        try_mount(where, name, source, fstype, flags)
    proc_at_allowed_target(where, "/var/lib/docker/phoenix-probe/proc")
    detached_procfs_sysctl(where, "sys/net/ipv4/ip_unprivileged_port_start")
    # The same detached procfs is a way round every @{PROC} denial: AppArmor sees these as /sysrq-trigger
    # and /sys/kernel/core_pattern. They must stay denied.
    for rel in ("sysrq-trigger", "sys/kernel/core_pattern", "sys/kernel/modprobe", "sys/vm/drop_caches"):
        detached_procfs_sysctl(where, rel, probe="detached_procfs_write")
    for path in spec["nvidia_nodes"] + spec["other_devices"]:
        if os.path.exists(path):
            open_device(where, path)
        else:
            emit(where, "open_device", path, False, errno.ENOENT, missing=True)
    emit(where, "done", "self", True)


if __name__ == "__main__":
    main()
