"""NvidiaHostDriver through the real provider host, over SSH to the lab sshd, against a fake driver.

The lab has no GPU: tests/lab/fake_nvidia.py (TEST-ONLY) serves fake runfiles over HTTP and plays the
installed driver. Downloads (curl), ``sha256sum -c``, the install script and the batched read run for real.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from providers.nvidia_driver import NvidiaContainerUserspace, NvidiaHostDriver, NvidiaHostDriverArgs
from tests.lab.fake_nvidia import FakeNvidia
from tests.lab.sshd import LabSshd
from tests.support.dynhost import UNKNOWN, DynHost, ProviderError, secret
from tests.support.harness import CheckFailedError, Drift, Harness, capture

pytestmark = pytest.mark.lab

OLD, NEW = "575.64.05", "580.76.05"
DRIVER = "gpu-host-driver"


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeNvidia]:
    with FakeNvidia.running(tmp_path / "nvidia") as running:
        yield running


@pytest.fixture
def harness(lab_sshd: LabSshd, tmp_path: Path) -> Iterator[Harness]:
    with DynHost(config={"phoenix:sshPrivateKey": secret(lab_sshd.user_private_key)}) as host:
        yield Harness(tmp_path / "state.json", host)


def program(
    lab_sshd: LabSshd,
    fake: FakeNvidia,
    version: str,
    *,
    sha256: str | None = None,
    uninstall_on_delete: bool = False,
    container_version: str | None = None,
) -> Callable[[], dict[str, Any]]:
    url, served_sha = fake.runfile(version)

    def run() -> dict[str, Any]:
        args: NvidiaHostDriverArgs = {
            "driver_version": version,
            "runfile_url": url,
            "sha256": sha256 or served_sha,
            "uninstall_on_delete": uninstall_on_delete,
        }
        driver = NvidiaHostDriver(DRIVER, args, ssh_target=lab_sshd.target(), paths=fake.paths)
        if container_version is not None:
            NvidiaContainerUserspace(
                "ct-901-nvidia",
                {
                    "vmid": 901,
                    "driver_version": container_version,
                    "host_driver_version": driver.driver_version,
                    "runfile_url": url,
                    "sha256": served_sha,
                },
            )
        return {"driver_version": driver.driver_version, "gpus": driver.gpus, "majors": driver.majors}

    return run


def test_the_pinned_version_already_installed_runs_no_install(
    lab_sshd: LabSshd, fake: FakeNvidia, harness: Harness
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
    assert again.changed == {} and again.mutations == 0
    assert fake.installs() == []


def test_a_version_bump_installs_exactly_once_then_up_again_changes_nothing(
    lab_sshd: LabSshd, fake: FakeNvidia, harness: Harness
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
    assert again.changed == {} and again.mutations == 0
    assert len(fake.installs()) == 1


def test_a_bare_host_gets_the_driver_once(lab_sshd: LabSshd, fake: FakeNvidia, harness: Harness) -> None:
    report = harness.up(program(lab_sshd, fake, NEW))
    assert report.op(DRIVER) == "create" and report.exports["driver_version"] == NEW
    assert len(fake.installs()) == 1 and len(fake.requests) == 1


def test_a_checksum_mismatch_is_typed_and_the_runfile_never_runs(
    lab_sshd: LabSshd, fake: FakeNvidia, harness: Harness
) -> None:
    wrong = "0123456789abcdef" * 4
    with pytest.raises(ProviderError) as caught:
        harness.up(program(lab_sshd, fake, NEW, sha256=wrong))
    assert "ChecksumMismatchError" in caught.value.details
    assert (
        f"pinned {wrong}" in caught.value.message and "nothing from the file was run" in caught.value.message
    )
    assert len(fake.requests) == 1  # it was downloaded...
    assert fake.runs() == [] and fake.installed_version() is None  # ...and never executed
    assert fake.cache_files() == []  # neither kept in the cache nor left half-downloaded
    assert harness.resources() == {}  # a failed create records nothing


def test_a_container_userspace_other_than_the_host_driver_is_refused_at_check(
    lab_sshd: LabSshd, fake: FakeNvidia, harness: Harness
) -> None:
    fake.preinstall(NEW)
    with pytest.raises(CheckFailedError) as caught:
        harness.up(program(lab_sshd, fake, NEW, container_version=OLD))
    ((prop, reason),) = caught.value.failures
    assert prop == "driver_version"
    assert f"container NVIDIA userspace {OLD} differs from the host driver {NEW}" in reason

    matching = harness.up(program(lab_sshd, fake, NEW, container_version=NEW))
    assert matching.op("ct-901-nvidia") == "create"
    feature_env = harness.resource("ct-901-nvidia").outputs["feature_env"]
    assert feature_env["PHOENIX_NVIDIA_VERSION"] == NEW and feature_env["PHOENIX_TARGET"] == "lxc"


def test_container_check_lets_an_unknown_host_version_through_at_preview(
    lab_sshd: LabSshd, fake: FakeNvidia, harness: Harness
) -> None:
    url, sha = fake.runfile(NEW)
    args = {"vmid": 901, "driver_version": OLD, "host_driver_version": NEW, "runfile_url": url, "sha256": sha}
    registered = capture(lambda: NvidiaContainerUserspace("ct", args))["ct"]  # type: ignore[arg-type]
    news = {**registered.inputs, "__provider": registered.provider, "host_driver_version": UNKNOWN}
    assert harness.host.check(registered.urn, {}, news).failures == ()
    known = harness.host.check(registered.urn, {}, {**news, "host_driver_version": NEW}).failures
    assert [prop for prop, _ in known] == ["driver_version"]


def test_delete_leaves_the_driver_unless_asked(lab_sshd: LabSshd, fake: FakeNvidia, harness: Harness) -> None:
    harness.up(program(lab_sshd, fake, NEW))
    harness.destroy()
    assert fake.installed_version() == NEW and fake.uninstalls() == []
    assert harness.resources() == {}

    harness.up(program(lab_sshd, fake, NEW, uninstall_on_delete=True))
    harness.destroy()
    assert fake.uninstalls() == ["uninstall --silent"] and fake.installed_version() is None
    assert len(fake.installs()) == 1  # the second up adopted the installed driver


def test_refresh_reports_an_out_of_band_version_change_and_up_restores_the_pin(
    lab_sshd: LabSshd, fake: FakeNvidia, harness: Harness
) -> None:
    urn = next(iter(harness.up(program(lab_sshd, fake, NEW)).ops))
    fake.change_version_out_of_band(OLD)

    drift = harness.refresh()[urn]
    assert drift.kind == "changed" and "driver_version" in drift.changed
    assert harness.resource(DRIVER).outputs["driver_version"] == OLD

    restored = harness.up(program(lab_sshd, fake, NEW))
    assert restored.op(DRIVER) == "update" and fake.installed_version() == NEW
    assert len(fake.installs()) == 2
    assert harness.refresh()[urn] == Drift("same")


def test_refresh_of_a_removed_driver_says_gone_and_a_failing_one_says_why(
    lab_sshd: LabSshd, fake: FakeNvidia, harness: Harness
) -> None:
    urn = next(iter(harness.up(program(lab_sshd, fake, NEW)).ops))
    fake.break_driver(
        "Failed to initialize NVML: Driver/library version mismatch\nNVML library version: 580.76\n"
    )
    with pytest.raises(ProviderError) as caught:
        harness.refresh()
    assert "NvidiaDriverError" in caught.value.details
    assert (
        "nvidia-smi exited 18: Failed to initialize NVML: Driver/library version mismatch"
        in caught.value.details
    )

    fake.remove_out_of_band()
    assert harness.refresh()[urn] == Drift("gone")
    assert harness.resources() == {}
