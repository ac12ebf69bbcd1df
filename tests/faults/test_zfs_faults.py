"""ZFS faults under the real Pulumi engine and its state: a name taken out of band by a clone of
another origin ("exists": refused, never adopted), and a dataset kept busy past the deadline ("busy").

The direct-call versions (tests/provider/test_zfs_providers.py) check the errors; these check the state a
user is left with, and that the next ``up`` converges once the cause is gone.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pulumi.automation import CommandError

from providers.zfs.clone import ZfsClone, ZfsCloneArgs
from providers.zfs.dataset import ZfsDataset, ZfsDatasetArgs
from providers.zfs.snapshot import ZfsSnapshot, ZfsSnapshotArgs
from tests.faults.test_ssh_faults import ssh_only_engine
from tests.lab.sshd import LabSshd
from tests.lab.zfs import LabZpool
from tests.support.engine import Engine

pytestmark = [pytest.mark.lab, pytest.mark.cli]

BUSY_TIMEOUT_S = 1.0


@pytest.fixture
def prefix(lab_zfs: LabZpool) -> str:
    """A fresh dataset name; lab_zfs destroys what the test leaves."""
    return f"{lab_zfs.data}/zf-{secrets.token_hex(3)}"


@pytest.fixture
def harness(lab_sshd: LabSshd, pulumi_bin: Path, tmp_path: Path) -> Iterator[Engine]:
    """The stack under the real engine (named for what it replaces, the stand-in harness)."""
    yield ssh_only_engine(lab_sshd, tmp_path)


def models_program(lab_sshd: LabSshd, prefix: str, *, keep: bool = True) -> Callable[[], dict[str, Any]]:
    """Model weights: a dataset, its snapshot, a clone for a container; ``keep=False`` declares nothing."""

    def run() -> dict[str, Any]:
        if not keep:
            return {}
        target = lab_sshd.target()
        dataset = ZfsDataset(
            "models", ZfsDatasetArgs(name=prefix), ssh_target=target, busy_timeout=BUSY_TIMEOUT_S
        )
        snap = ZfsSnapshot(
            "models-v1", ZfsSnapshotArgs(dataset=dataset.name, snapshot="v1"), ssh_target=target
        )
        clone = ZfsClone("models-ct", ZfsCloneArgs(origin=snap.name, name=f"{prefix}-ct"), ssh_target=target)
        return {"origin": clone.origin}

    return run


def recorded(harness: Engine) -> list[str]:
    return sorted(urn.rsplit("::", 1)[-1] for urn in harness.resources())


def test_a_name_taken_by_another_origin_is_refused_never_adopted(
    lab_sshd: LabSshd, lab_zfs: LabZpool, prefix: str, harness: Engine
) -> None:
    other = f"{prefix}-other"
    lab_zfs.zfs("create", other)
    lab_zfs.zfs("snapshot", f"{other}@x")
    lab_zfs.zfs("clone", f"{other}@x", f"{prefix}-ct")  # out of band, before Phoenix ever ran
    guid = lab_zfs.get(f"{prefix}-ct", "guid")

    with pytest.raises(CommandError) as raised:
        harness.up(models_program(lab_sshd, prefix))

    assert "DatasetExistsError" in str(raised.value)
    assert f"not a clone of {prefix}@v1" in str(raised.value)
    assert recorded(harness) == ["models", "models-v1"]  # the clone is not in state
    assert lab_zfs.get(f"{prefix}-ct", "origin") == f"{other}@x"  # and the stranger is untouched
    assert lab_zfs.get(f"{prefix}-ct", "guid") == guid

    # Once the operator removes the stranger, the next up makes the clone, and only it.
    lab_zfs.zfs("destroy", "-R", other)  # the stranger, its snapshot and its clone
    converged = harness.up(models_program(lab_sshd, prefix))
    assert converged.changed == {harness.resource("models-ct").urn: "create"}
    assert lab_zfs.get(f"{prefix}-ct", "origin") == f"{prefix}@v1"
    harness.destroy()
    assert not any(lab_zfs.exists(n) for n in (prefix, f"{prefix}-ct"))


def test_a_busy_dataset_past_the_deadline_is_typed_and_stays_recorded(
    lab_sshd: LabSshd, lab_zfs: LabZpool, prefix: str, harness: Engine
) -> None:
    harness.up(models_program(lab_sshd, prefix))
    clone = f"{prefix}-ct"
    holder = subprocess.Popen(["sleep", "60"], cwd=lab_zfs.mountpoint(clone))  # a shell sitting in the mount
    try:
        started = time.monotonic()
        with pytest.raises(CommandError) as raised:
            harness.up(
                models_program(lab_sshd, prefix, keep=False)
            )  # deletes: clone first, then snap, dataset
        assert "DatasetBusyError" in str(raised.value)
        assert time.monotonic() - started >= BUSY_TIMEOUT_S  # retried until the deadline
        # The busy clone is still in state (as a pending delete), and so is everything it depends on.
        left = sorted(
            r.urn.rsplit("::", 1)[-1] for r in [*harness.pending_deletes(), *harness.resources().values()]
        )
        assert left == ["models", "models-ct", "models-v1"]
        assert lab_zfs.exists(clone) and lab_zfs.exists(f"{prefix}@v1") and lab_zfs.exists(prefix)
    finally:
        holder.kill()
        holder.wait()

    converged = harness.up(models_program(lab_sshd, prefix, keep=False))
    assert sorted(converged.changed.values()) == ["delete", "delete", "delete"]
    assert harness.resources() == {} and harness.pending_deletes() == []
    assert not any(lab_zfs.exists(n) for n in (prefix, clone))
