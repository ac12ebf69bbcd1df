"""NvidiaHostDriver under the real Pulumi engine, over SSH to the lab sshd, against a fake driver.

The lab has no GPU: tests/lab/fake_nvidia.py (TEST-ONLY) serves fake runfiles over HTTP and plays the
installed driver. Downloads (curl), ``sha256sum -c``, the install script and the batched read run for real.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pulumi.automation import CommandError

from providers.nvidia_driver import (
    BLACKLIST,
    NODES_UNIT,
    PREREQUISITES,
    NvidiaHostDriver,
    NvidiaHostDriverArgs,
)
from tests.lab.fake_nvidia import FakeNvidia
from tests.lab.sshd import LabSshd
from tests.support.engine import Drift, Engine

pytestmark = [pytest.mark.lab, pytest.mark.cli]

OLD, NEW = "575.64.05", "580.76.05"
DRIVER = "gpu-host-driver"


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeNvidia]:
    with FakeNvidia.running(tmp_path / "nvidia") as running:
        yield running


@pytest.fixture
def harness(lab_sshd: LabSshd, pulumi_bin: Path, tmp_path: Path) -> Iterator[Engine]:
    """A stack under the real engine (named for what it replaces, the stand-in harness)."""
    yield Engine(tmp_path / "engine", "driver", secrets={"phoenix:sshPrivateKey": lab_sshd.user_private_key})


def program(
    lab_sshd: LabSshd,
    fake: FakeNvidia,
    version: str,
    *,
    sha256: str | None = None,
    uninstall_on_delete: bool = False,
    **preparation: Any,
) -> Callable[[], dict[str, Any]]:
    url, served_sha = fake.runfile(version)

    def run() -> dict[str, Any]:
        args = NvidiaHostDriverArgs(
            driver_version=version,
            runfile_url=url,
            sha256=sha256 or served_sha,
            uninstall_on_delete=uninstall_on_delete,
            **preparation,
        )
        driver = NvidiaHostDriver(DRIVER, args, ssh_target=lab_sshd.target(), paths=fake.paths)
        return {"driver_version": driver.driver_version, "gpus": driver.gpus, "majors": driver.majors}

    return run


def test_the_pinned_version_already_installed_runs_no_install(
    lab_sshd: LabSshd, fake: FakeNvidia, harness: Engine
) -> None:
    fake.preinstall(NEW)
    first = harness.up(program(lab_sshd, fake, NEW))
    assert first.op(DRIVER) == "create"
    assert fake.installs() == [] and fake.requests == []  # not even downloaded
    exports = first.exports
    assert exports["driver_version"] == NEW
    assert [(g["index"], g["device"], g["memory_mib"]) for g in exports["gpus"]] == [
        (0, "/dev/nvidia0", 16311),
        (1, "/dev/nvidia1", 16311),
    ]
    assert exports["majors"]["nvidia"] == 195 and exports["majors"]["nvidia-uvm"] == 243

    again = harness.up(program(lab_sshd, fake, NEW))
    assert again.changed == {} and again.changes == 0
    assert fake.installs() == []


def test_a_version_bump_installs_exactly_once_then_up_again_changes_nothing(
    lab_sshd: LabSshd, fake: FakeNvidia, harness: Engine
) -> None:
    fake.preinstall(OLD)
    assert harness.up(program(lab_sshd, fake, OLD)).op(DRIVER) == "create"
    assert fake.installs() == []

    bumped = harness.up(program(lab_sshd, fake, NEW))
    assert bumped.op(DRIVER) == "update" and bumped.exports["driver_version"] == NEW
    assert fake.installs() == [f"run {NEW} --dkms --silent --no-questions --ui=none"]
    assert fake.installed_version() == NEW
    assert fake.cache_files() == [f"NVIDIA-Linux-x86_64-{NEW}.run"]  # verified copy kept, no temp left

    again = harness.up(program(lab_sshd, fake, NEW))
    assert again.changed == {} and again.changes == 0
    assert len(fake.installs()) == 1


def test_a_bare_host_gets_the_driver_once(lab_sshd: LabSshd, fake: FakeNvidia, harness: Engine) -> None:
    report = harness.up(program(lab_sshd, fake, NEW))
    assert report.op(DRIVER) == "create" and report.exports["driver_version"] == NEW
    assert len(fake.installs()) == 1 and len(fake.requests) == 1


def test_a_checksum_mismatch_is_typed_and_the_runfile_never_runs(
    lab_sshd: LabSshd, fake: FakeNvidia, harness: Engine
) -> None:
    wrong = "0123456789abcdef" * 4
    with pytest.raises(CommandError) as caught:
        harness.up(program(lab_sshd, fake, NEW, sha256=wrong))
    details = str(caught.value)
    assert "ChecksumMismatchError" in details
    assert f"pinned {wrong}" in details and "nothing from the file was run" in details
    assert len(fake.requests) == 1  # it was downloaded...
    assert fake.runs() == [] and fake.installed_version() is None  # ...and never executed
    assert fake.cache_files() == []  # neither kept in the cache nor left half-downloaded
    assert harness.resources() == {}  # a failed create records nothing


def test_delete_leaves_the_driver_unless_asked(lab_sshd: LabSshd, fake: FakeNvidia, harness: Engine) -> None:
    harness.up(program(lab_sshd, fake, NEW))
    harness.destroy()
    assert fake.installed_version() == NEW and fake.uninstalls() == []
    assert harness.resources() == {}

    harness.up(program(lab_sshd, fake, NEW, uninstall_on_delete=True))
    harness.destroy()
    assert fake.uninstalls() == ["uninstall --silent"] and fake.installed_version() is None
    assert len(fake.installs()) == 1  # the second up adopted the installed driver


def test_refresh_reports_an_out_of_band_version_change_and_up_restores_the_pin(
    lab_sshd: LabSshd, fake: FakeNvidia, harness: Engine
) -> None:
    harness.up(program(lab_sshd, fake, NEW))
    urn = harness.resource(DRIVER).urn
    fake.change_version_out_of_band(OLD)

    drift = harness.refresh()[urn]
    assert drift.kind == "changed" and "driver_version" in drift.changed
    assert harness.resource(DRIVER).outputs["driver_version"] == OLD

    restored = harness.up(program(lab_sshd, fake, NEW))
    assert restored.op(DRIVER) == "update" and fake.installed_version() == NEW
    assert len(fake.installs()) == 2
    assert harness.refresh()[urn] == Drift("same")


def test_refresh_of_a_removed_driver_says_gone_and_a_failing_one_says_why(
    lab_sshd: LabSshd, fake: FakeNvidia, harness: Engine
) -> None:
    harness.up(program(lab_sshd, fake, NEW))
    urn = harness.resource(DRIVER).urn
    fake.break_driver(
        "Failed to initialize NVML: Driver/library version mismatch\nNVML library version: 580.76\n"
    )
    with pytest.raises(CommandError) as caught:
        harness.refresh()
    details = str(caught.value)
    assert "NvidiaDriverError" in details
    assert "nvidia-smi exited 18: Failed to initialize NVML: Driver/library version mismatch" in details

    fake.remove_out_of_band()
    assert harness.refresh()[urn] == Drift("gone")
    assert harness.resources() == {}


# -- host preparation (issue 16) -------------------------------------------------------------------------


def prepared(
    lab_sshd: LabSshd, fake: FakeNvidia, *, allow_reboot: bool = False, kernel_pin: str | None = None
) -> Callable[[], dict[str, Any]]:
    """The driver as the host baseline declares it: prerequisites, device-node units, the options."""
    return program(
        lab_sshd,
        fake,
        NEW,
        prerequisites=list(PREREQUISITES),
        nodes_unit=True,
        allow_reboot=allow_reboot,
        kernel_pin=kernel_pin,
    )


NODES = ["nvidia-uvm", "nvidia-uvm-tools", "nvidia0", "nvidia1", "nvidiactl"]


def test_a_fresh_host_gets_prerequisites_then_the_driver_then_the_nodes_unit(
    lab_sshd: LabSshd, fake: FakeNvidia, harness: Engine
) -> None:
    fake.fresh_host()
    report = harness.up(prepared(lab_sshd, fake, kernel_pin=FakeNvidia.KERNEL))
    assert report.op(DRIVER) == "create" and report.exports["driver_version"] == NEW
    assert sorted(fake.installed_packages()) == sorted(FakeNvidia.ARCHIVE)
    runs = fake.runs()
    apt = next(i for i, line in enumerate(runs) if line.startswith("apt-get install"))
    install = runs.index(f"run {NEW} --dkms --silent --no-questions --ui=none")
    modprobe = runs.index("nvidia-modprobe -u -c=0")
    assert apt < install < modprobe and "nvidia-modprobe -u -c=1" in runs
    assert runs[apt].endswith(" ".join(FakeNvidia.ARCHIVE))  # the headers resolved for the running kernel
    assert f"proxmox-boot-tool kernel pin {FakeNvidia.KERNEL}" in runs
    assert "Before=pve-guests.service" in fake.unit(NODES_UNIT).splitlines()
    assert fake.device_nodes() == NODES
    outputs = harness.resource(DRIVER).outputs
    assert outputs["prerequisites"] == list(PREREQUISITES) and outputs["nodes_unit"] is True
    assert outputs["dkms_kernels"] == [FakeNvidia.KERNEL] and outputs["module_for_running_kernel"] is True
    assert outputs["kernel_pin"] == FakeNvidia.KERNEL and outputs["missing_nodes"] == []

    again = harness.up(prepared(lab_sshd, fake, kernel_pin=FakeNvidia.KERNEL))
    assert again.changed == {} and again.changes == 0
    assert fake.runs() == runs  # nothing ran again


def test_nouveau_loaded_writes_the_blacklist_and_asks_for_a_reboot(
    lab_sshd: LabSshd, fake: FakeNvidia, harness: Engine
) -> None:
    fake.fresh_host(nouveau=True)
    with pytest.raises(CommandError) as caught:
        harness.up(prepared(lab_sshd, fake))
    details = str(caught.value)
    assert "RebootRequiredError" in details
    assert "write " in details and "blacklist-nouveau.conf; rebuild the initramfs" in details
    assert fake.blacklist() == BLACKLIST and "update-initramfs -u" in fake.runs()
    assert fake.installs() == [] and fake.nouveau_loaded()  # never rebooted silently

    fake.reboot()  # the user reboots: the blacklist takes effect
    assert not fake.nouveau_loaded()
    assert harness.up(prepared(lab_sshd, fake)).exports["driver_version"] == NEW


def test_allow_reboot_reboots_waits_and_goes_on(lab_sshd: LabSshd, fake: FakeNvidia, harness: Engine) -> None:
    fake.fresh_host(nouveau=True)
    report = harness.up(prepared(lab_sshd, fake, allow_reboot=True))
    assert report.exports["driver_version"] == NEW
    runs = fake.runs()
    assert runs.index("systemctl reboot") < runs.index(f"run {NEW} --dkms --silent --no-questions --ui=none")
    assert not fake.nouveau_loaded() and fake.device_nodes() == NODES


def test_secure_boot_on_is_a_typed_error_and_nothing_is_installed(
    lab_sshd: LabSshd, fake: FakeNvidia, harness: Engine
) -> None:
    fake.fresh_host(secure_boot=True)
    with pytest.raises(CommandError) as caught:
        harness.up(prepared(lab_sshd, fake))
    details = str(caught.value)
    assert "SecureBootError" in details and "sign the module" in details and "turn Secure" in details
    assert fake.runs() == [] and fake.installed_packages() == [] and fake.requests == []
    assert harness.resources() == {}


def test_after_a_reboot_the_unit_brings_the_nodes_back_and_refresh_sees_missing_ones(
    lab_sshd: LabSshd, fake: FakeNvidia, harness: Engine
) -> None:
    fake.fresh_host()
    harness.up(prepared(lab_sshd, fake))
    urn = harness.resource(DRIVER).urn

    fake.reboot()  # nodes gone at boot, then systemd runs the enabled unit
    assert fake.device_nodes() == NODES
    assert harness.refresh()[urn] == Drift("same")

    fake.remove_device_nodes()  # as if the unit had not run
    drift = harness.refresh()[urn]
    assert drift.kind == "changed" and "missing_nodes" in drift.changed
    assert harness.resource(DRIVER).outputs["missing_nodes"] == [
        f"{fake.paths.dev}/{n}" for n in NODES[2:4]
    ] + [f"{fake.paths.dev}/{n}" for n in ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools")]
    restored = harness.up(prepared(lab_sshd, fake))
    assert restored.op(DRIVER) == "update" and fake.device_nodes() == NODES
    assert len(fake.installs()) == 1


def test_a_vm_gpu_sharing_its_iommu_group_is_refused_naming_the_other_device(
    lab_sshd: LabSshd, fake: FakeNvidia, harness: Engine
) -> None:
    fake.fresh_host()
    fake.pci_group(12, ["0000:41:00.0", "0000:41:00.1", "0000:40:01.0"])  # a root port shares the group
    with pytest.raises(CommandError) as caught:
        harness.up(
            program(lab_sshd, fake, NEW, prerequisites=list(PREREQUISITES), passthrough=["0000:41:00.0"])
        )
    details = str(caught.value)
    assert "IommuError" in details and "IOMMU group 12 also holds 0000:40:01.0" in details
    assert fake.runs() == [] and fake.installed_packages() == []  # refused before anything changed

    fake.pci_group(13, ["0000:81:00.0", "0000:81:00.1"])  # isolated: the GPU and its audio function
    report = harness.up(
        program(lab_sshd, fake, NEW, prerequisites=list(PREREQUISITES), passthrough=["0000:81:00.0"])
    )
    assert report.exports["driver_version"] == NEW
    assert harness.resource(DRIVER).outputs["passthrough"] == ["0000:81:00.0"]
