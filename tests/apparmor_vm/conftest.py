"""The `apparmor_vm` fixture: one boot of Debian's kernel under QEMU per test session (see vm.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.apparmor_vm.image import CONTAINER_NAME, ensure_image, host_kernel, machine_problem
from tests.apparmor_vm.vm import ProfileUnderTest, VmRun, boot

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_DIR = REPO_ROOT / "apparmor"
FIXTURE_DIR = REPO_ROOT / "tests" / "fixtures" / "apparmor"

SHIPPED = sorted(p.name for p in SHIPPED_DIR.iterdir() if p.is_file())
# The profile the shipped guests used before the fix, kept to show the escape tests can fail.
ESCAPABLE_FIXTURE = "phoenix-lxc-gpu-docker-escapable"
# PVE's own profiles Phoenix lets a guest name (models.PVE_BUILTIN_PROFILES), as Debian's lxc ships them.
# Debian loads them all from lxc-containers, which supplies the tunables they need.
BUILTINS = ["lxc-container-default-cgns", "lxc-container-default-with-nesting"]
BUILTINS_FILE = "/etc/apparmor.d/lxc-containers"
NESTING_PROFILE = "phoenix-lxc-gpu-docker"

NVIDIA = 195  # NVIDIA's registered char major (Documentation/admin-guide/devices.txt)
NVIDIA_NODES = [
    {"path": "/dev/nvidia0", "type": "c", "major": NVIDIA, "minor": 0},
    {"path": "/dev/nvidia1", "type": "c", "major": NVIDIA, "minor": 1},
    {"path": "/dev/nvidiactl", "type": "c", "major": NVIDIA, "minor": 255},
    {"path": "/dev/nvidia-modeset", "type": "c", "major": NVIDIA, "minor": 254},
    # nvidia-uvm and nvidia-caps get dynamic majors on a real host; any unused major stands in here.
    {"path": "/dev/nvidia-uvm", "type": "c", "major": 511, "minor": 0},
    {"path": "/dev/nvidia-uvm-tools", "type": "c", "major": 511, "minor": 1},
    {"path": "/dev/nvidia-caps/nvidia-cap1", "type": "c", "major": 510, "minor": 1},
]
# Devices no Phoenix guest is given. Nodes the VM lacks are made with mknod at their usual names.
OTHER_DEVICES = [
    {"path": "/dev/vda", "type": "b", "major": 254, "minor": 0},  # the VM's real root disk
    {"path": "/dev/sda", "type": "b", "major": 8, "minor": 0},
    {"path": "/dev/nvme0n1", "type": "b", "major": 259, "minor": 0},
    {"path": "/dev/dm-0", "type": "b", "major": 253, "minor": 0},
    {"path": "/dev/zd0", "type": "b", "major": 230, "minor": 0},  # a ZFS zvol
    {"path": "/dev/loop0", "type": "b", "major": 7, "minor": 0},
    {"path": "/dev/mem", "type": "c", "major": 1, "minor": 1},
    {"path": "/dev/port", "type": "c", "major": 1, "minor": 4},
    {"path": "/dev/kvm", "type": "c", "major": 10, "minor": 232},
    {"path": "/dev/vfio/vfio", "type": "c", "major": 10, "minor": 196},
    {"path": "/dev/dri/card0", "type": "c", "major": 226, "minor": 0},
    {"path": "/dev/input/event0", "type": "c", "major": 13, "minor": 64},
]
# The nesting container is given GPU 0 and the control nodes, as a vLLM guest with `gpus: [0]` is.
GIVEN_TO_CONTAINER = ["/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"]
CHANGE_TARGETS = [
    "unconfined",
    "phoenix-lab-bystander",  # a permissive profile in the root namespace
    ":phoenix-lab-other:unconfined",  # another AppArmor namespace's unconfined
    "lxc-container-default-with-nesting",
]
SECURITYFS_PATHS = [
    "/sys/kernel/security/apparmor/.remove",
    "/sys/kernel/security/apparmor/.replace",
    "/sys/kernel/security/apparmor/.load",
]


def profiles_under_test() -> list[ProfileUnderTest]:
    return [
        *(ProfileUnderTest(name, SHIPPED_DIR / name) for name in SHIPPED),
        ProfileUnderTest(ESCAPABLE_FIXTURE, FIXTURE_DIR / ESCAPABLE_FIXTURE),
        *(ProfileUnderTest(name, Path(BUILTINS_FILE), in_rootfs=True) for name in BUILTINS),
    ]


def session_plan(profiles: list[ProfileUnderTest], docker: bool = True) -> dict[str, object]:
    return {
        "profiles": [
            {"name": p.name, "path": str(p.source) if p.in_rootfs else f"/lab/profiles/{p.name}"}
            for p in profiles
        ],
        "nodes": NVIDIA_NODES + OTHER_DEVICES,
        "probe": {
            "change_targets": CHANGE_TARGETS,
            "securityfs_paths": SECURITYFS_PATHS,
            "disk": "/dev/vda",
            "nvidia_nodes": [n["path"] for n in NVIDIA_NODES],
            "other_devices": [n["path"] for n in OTHER_DEVICES],
        },
        "container": CONTAINER_NAME,
        "nesting": {
            "profile": NESTING_PROFILE,
            "docker": docker,
            "timeout_s": 420,
            "devices": [n for n in NVIDIA_NODES if n["path"] in GIVEN_TO_CONTAINER],
        },
    }


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI") and not os.environ.get("PHOENIX_ALLOW_LAB_SKIP"):
        pytest.fail(f"AppArmor VM unavailable in CI: {reason}")
    pytest.skip(f"AppArmor VM unavailable: {reason}")


@pytest.fixture(scope="session")
def apparmor_vm(tmp_path_factory: pytest.TempPathFactory) -> VmRun:
    """Boots once per session; builds (and caches) the rootfs image first if needed.

    Skips with the reason on a machine that cannot run it (not root, not x86_64, packages missing), and
    fails instead under CI, which installs everything (make lab-deps).
    """
    problem = machine_problem()
    if problem is not None:
        _skip_or_fail(problem)
    kernel = host_kernel()
    assert kernel is not None  # machine_problem checked it
    image, build_s = ensure_image(kernel)
    profiles = profiles_under_test()
    started = time.monotonic()
    run = boot(
        kernel, image, session_plan(profiles), profiles, keep_dir=tmp_path_factory.mktemp("apparmor-vm")
    )
    print(
        f"\nAppArmor VM: kernel {kernel.version}, accel {run.accel}, rootfs build {build_s:.1f} s "
        f"(0 = cached), boot to driver {run.event('boot')['uptime']} s uptime, "
        f"whole session {time.monotonic() - started:.1f} s"
    )
    return run
