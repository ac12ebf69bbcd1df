"""GuestSnapshot through the real provider host against the lab (fakepve whose storage is the real pool).

The snapshot must exist both in PVE's list and as a real ZFS snapshot of the guest's dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from providers.guest_snapshot import GuestSnapshot
from providers.host import ApiTarget
from providers.pve import PveClient
from tests.lab.host import LabHost
from tests.lab.pve import NODE, OS_TEMPLATE, ZFS_STORAGE
from tests.support.dynhost import DynHost, secret
from tests.support.harness import Harness

pytestmark = pytest.mark.lab
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
def host(lab_host: LabHost) -> Iterator[DynHost]:
    with DynHost(config={"phoenix:pvePassword": secret(lab_host.pve.password)}) as running:
        yield running


def rolling(target: ApiTarget, trigger: str, retention: int = 2) -> Callable[[], Any]:
    def program() -> dict[str, Any]:
        snap = GuestSnapshot(
            "nightly",
            {"node": NODE, "vmid": VMID, "prefix": "nightly", "retention": retention, "trigger": trigger},
            target,
        )
        return {"snapshots": snap.snapshots}

    return program


def listed(client: PveClient) -> list[str]:
    return sorted(str(s["name"]) for s in client.get(f"{CT}/{VMID}/snapshot") if s["name"] != "current")


def test_snapshot_on_trigger_retention_drift_and_destroy(
    lab_host: LabHost, guest: PveClient, host: DynHost, tmp_path: Path
) -> None:
    dataset = lab_host.dataset(VMID)
    guest.run_task("POST", f"{CT}/{VMID}/snapshot", timeout=60, step="by hand", snapname="by-hand")
    harness = Harness(tmp_path / "state.json", host)

    first = harness.up(rolling(lab_host.target(), "v1"))
    assert first.counts == {"create": 1}
    (taken,) = first.exports["snapshots"]
    assert set(listed(guest)) == {"by-hand", taken}
    assert lab_host.zpool.exists(f"{dataset}@{taken}"), "a real ZFS snapshot of the guest's volume"
    assert harness.up(rolling(lab_host.target(), "v1")).mutations == 0, "same trigger: no new snapshot"

    for trigger in ("v2", "v3"):  # within one second the names get -2, -3: still unique and ordered
        harness.up(rolling(lab_host.target(), trigger))
    family = harness.up(rolling(lab_host.target(), "v3")).exports["snapshots"]
    assert len(family) == 2 and taken not in family, "retention 2 pruned the oldest"
    assert set(listed(guest)) == {"by-hand", *family}, "the snapshot taken by hand is never touched"
    assert not lab_host.zpool.exists(f"{dataset}@{taken}")

    for name in family:  # all deleted out of band: gone, and the next up takes one again
        guest.run_task("DELETE", f"{CT}/{VMID}/snapshot/{name}", timeout=60, step="out of band")
    assert [d.kind for d in harness.refresh().values()] == ["gone"]
    assert len(harness.up(rolling(lab_host.target(), "v3")).exports["snapshots"]) == 1

    harness.destroy()
    assert listed(guest) == ["by-hand"]
