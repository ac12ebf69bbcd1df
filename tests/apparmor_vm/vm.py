"""Boot Debian's kernel under QEMU with the cached rootfs, run the session's driver, read its JSON lines.

One boot per test session: the driver loads every profile, probes each, starts the nesting container and
powers off; the host reads the results port (the VM's second serial port, a file here) as JSON lines.
The rootfs drive is opened with ``snapshot=on``: the session's writes go to a temporary overlay, so the
cached image never changes. The session's inputs (driver, probes, profiles, plan) come on a second,
read-only ext4 drive made with ``mkfs.ext4 -d``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.apparmor_vm.image import CONTAINER_NAME, Kernel

GUEST_DIR = Path(__file__).parent / "guest"
# Measured on this project's 2-core CI machine under TCG: boot ~6 s, the whole session ~2 min with Docker.
# The deadline is generous so a slow machine fails with the console log rather than a hang.
BOOT_DEADLINE_S = 600.0
KVM_PROBE_TIMEOUT_S = 1.0


class VmError(RuntimeError):
    """The AppArmor VM did not run to its power-off; the message carries the console tail."""


@dataclass(frozen=True)
class ProfileUnderTest:
    name: str
    source: Path
    """On the host (shipped or fixture), or, for PVE/LXC builtins, a path inside the VM's rootfs."""
    in_rootfs: bool = False


@dataclass
class VmRun:
    """Everything one boot reported."""

    lines: list[dict[str, object]]
    console: str
    seconds: float
    accel: str
    events: dict[str, list[dict[str, object]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for line in self.lines:
            if "event" in line:
                self.events.setdefault(str(line["event"]), []).append(line)

    def probes(self, profile: str, context: str = "vm-root") -> list[dict[str, object]]:
        return [
            line
            for line in self.lines
            if "probe" in line and line.get("profile") == profile and line.get("context") == context
        ]

    def event(self, name: str) -> dict[str, object]:
        found = self.events.get(name)
        if not found:
            raise VmError(f"the VM never reported {name!r}; console tail:\n{self.console[-4000:]}")
        return found[-1]


def accel() -> str:
    """TCG unless PHOENIX_VM_ACCEL says otherwise: nested KVM was seen to hang in early boot on the CI kind
    of machine, and software emulation is what the measured numbers are for."""
    wanted = os.environ.get("PHOENIX_VM_ACCEL", "tcg")
    if wanted == "kvm" and not os.access("/dev/kvm", os.R_OK | os.W_OK):
        raise VmError("PHOENIX_VM_ACCEL=kvm but /dev/kvm is not usable")
    return wanted


def _inputs_image(work: Path, plan: dict[str, object], profiles: list[ProfileUnderTest]) -> Path:
    tree = work / "inputs"
    (tree / "profiles").mkdir(parents=True)
    for name in ("driver.py", "probe.py", "ct-init.sh"):
        shutil.copy(GUEST_DIR / name, tree / name)
    for p in profiles:
        if not p.in_rootfs:
            shutil.copy(p.source, tree / "profiles" / p.name)
    (tree / "plan.json").write_text(json.dumps(plan, indent=1))
    image = work / "inputs.ext4"
    proc = subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-d", str(tree), str(image), "16M"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise VmError(f"mkfs.ext4 of the inputs drive exited {proc.returncode}: {proc.stderr}")
    return image


def qemu_argv(
    kernel: Kernel, rootfs: Path, inputs: Path, console: Path, results: Path, how: str
) -> list[str]:
    cmdline = " ".join(
        [
            "root=/dev/vda",
            "rw",
            "rootfstype=ext4",
            "fsck.mode=skip",
            "console=ttyS0",
            "init=/sbin/phoenix-lab-init",
            "panic=-1",  # a panic reboots, and -no-reboot turns that into QEMU exiting
            "apparmor=1",
            "security=apparmor",
            "systemd.unified_cgroup_hierarchy=1",
            "loglevel=4",
        ]
    )
    return [
        "qemu-system-x86_64",
        "-accel",
        how,
        *(["-cpu", "max"] if how == "tcg" else ["-cpu", "host"]),
        "-smp",
        str(min(2, os.cpu_count() or 1)),
        "-m",
        "3072",
        "-display",
        "none",
        "-no-reboot",
        "-nic",
        "none",
        "-kernel",
        str(kernel.vmlinuz),
        "-initrd",
        str(kernel.initrd),
        "-append",
        cmdline,
        "-drive",
        f"file={rootfs},format=raw,if=virtio,snapshot=on",
        "-drive",
        f"file={inputs},format=raw,if=virtio,readonly=on",
        "-serial",
        f"file:{console}",
        "-serial",
        f"file:{results}",
    ]


def boot(
    kernel: Kernel,
    rootfs: Path,
    plan: dict[str, object],
    profiles: list[ProfileUnderTest],
    keep_dir: Path | None = None,
) -> VmRun:
    """One boot: returns what the driver reported; raises VmError when it did not reach ``done``."""
    how = accel()
    with tempfile.TemporaryDirectory(prefix="phoenix-aavm-") as tmp:
        work = Path(tmp)
        inputs = _inputs_image(work, plan, profiles)
        console, results = work / "console.log", work / "results.jsonl"
        argv = qemu_argv(kernel, rootfs, inputs, console, results, how)
        started = time.monotonic()
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=BOOT_DEADLINE_S, check=False)
        except subprocess.TimeoutExpired as exc:
            raise VmError(
                f"the AppArmor VM did not power off within {BOOT_DEADLINE_S:.0f} s; console tail:\n"
                + console.read_text(errors="replace")[-4000:]
            ) from exc
        seconds = time.monotonic() - started
        console_text = console.read_text(errors="replace") if console.exists() else ""
        if keep_dir is not None:
            keep_dir.mkdir(parents=True, exist_ok=True)
            for f in (console, results):
                if f.exists():
                    shutil.copy(f, keep_dir / f.name)
        if proc.returncode != 0:
            raise VmError(f"qemu exited {proc.returncode}: {proc.stderr[-2000:]}\n{console_text[-4000:]}")
        run = VmRun(list(_json_lines(results)), console_text, seconds, how)
        if "done" not in run.events:
            errors = run.events.get("driver_error", [])
            raise VmError(f"the driver did not finish ({errors}); console tail:\n{console_text[-4000:]}")
        return run


def _json_lines(path: Path) -> Iterator[dict[str, object]]:
    if not path.exists():
        return
    for raw in path.read_text(errors="replace").splitlines():
        raw = raw.strip("\r\x00 ")
        if raw.startswith("{"):
            try:
                yield json.loads(raw)
            except ValueError:
                continue  # a line torn by the power-off; the "done" check catches a short run


__all__ = ["CONTAINER_NAME", "ProfileUnderTest", "VmError", "VmRun", "boot"]
