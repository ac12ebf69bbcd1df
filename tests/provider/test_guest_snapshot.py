"""GuestSnapshot under the real Pulumi engine against the lab (fakepve whose storage is the real pool).

The snapshot must exist both in PVE's list and as a real ZFS snapshot of the guest's dataset.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from providers.channels.pve import PveClient
from providers.channels.targets import ApiTarget
from providers.guests.snapshot import GuestSnapshot, GuestSnapshotArgs
from tests.lab.host import LabHost
from tests.lab.pve import NODE, OS_TEMPLATE, ZFS_STORAGE
from tests.support.engine import Engine

pytestmark = [pytest.mark.lab, pytest.mark.cli]
CT = f"nodes/{NODE}/lxc"
VMID = 340


@pytest.fixture
def guest(lab_host: LabHost) -> PveClient:
    client = lab_host.client()
    client.run_task(
        "POST", CT, timeout=120, step="create", vmid=VMID, ostemplate=OS_TEMPLATE, rootfs=f"{ZFS_STORAGE}:1"
    )
    return client


@pytest.fixture
def engine(lab_host: LabHost, pulumi_bin: Path, tmp_path: Path) -> Engine:
    """A stack under the real engine, the fake's root@pam password as its secret config."""
    return Engine(
        tmp_path / "engine",
        "snapshots",
        secrets={"phoenix:pvePassword": lab_host.pve.password},
        bin_dir=pulumi_bin,
    )


def rolling(target: ApiTarget, trigger: str, retention: int = 2) -> Callable[[], Any]:
    def program() -> dict[str, Any]:
        snap = GuestSnapshot(
            "nightly",
            GuestSnapshotArgs(node=NODE, vmid=VMID, prefix="nightly", retention=retention, trigger=trigger),
            api_target=target,
        )
        return {"snapshots": snap.snapshots}

    return program


def listed(client: PveClient) -> list[str]:
    return sorted(str(s["name"]) for s in client.get(f"{CT}/{VMID}/snapshot") if s["name"] != "current")


def test_snapshot_on_trigger_retention_drift_and_destroy(
    lab_host: LabHost, guest: PveClient, engine: Engine
) -> None:
    dataset = lab_host.dataset(VMID)
    guest.run_task("POST", f"{CT}/{VMID}/snapshot", timeout=60, step="by hand", snapname="by-hand")

    first = engine.up(rolling(lab_host.target(), "v1"))
    assert first.op("nightly") == "create" and first.summary == {"create": 2}  # and the stack
    (taken,) = first.exports["snapshots"]
    assert set(listed(guest)) == {"by-hand", taken}
    assert lab_host.zpool.exists(f"{dataset}@{taken}"), "a real ZFS snapshot of the guest's volume"
    again = engine.up(rolling(lab_host.target(), "v1"))
    assert again.changes == 0 and again.provider_mutations == 0, "same trigger: no new snapshot"
    assert set(listed(guest)) == {"by-hand", taken}

    for trigger in ("v2", "v3"):  # within one second the names get -2, -3: still unique and ordered
        assert engine.up(rolling(lab_host.target(), trigger)).op("nightly") == "update"
    family = engine.up(rolling(lab_host.target(), "v3")).exports["snapshots"]
    assert len(family) == 2 and taken not in family, "retention 2 pruned the oldest"
    assert set(listed(guest)) == {"by-hand", *family}, "the snapshot taken by hand is never touched"
    assert not lab_host.zpool.exists(f"{dataset}@{taken}")

    for name in family:  # all deleted out of band: gone, and the next up takes one again
        guest.run_task("DELETE", f"{CT}/{VMID}/snapshot/{name}", timeout=60, step="out of band")
    assert [d.kind for d in engine.refresh().values()] == ["gone"]
    retaken = engine.up(rolling(lab_host.target(), "v3"))
    assert retaken.op("nightly") == "create" and len(retaken.exports["snapshots"]) == 1

    engine.destroy()
    assert listed(guest) == ["by-hand"]
    assert engine.resources() == {}
