"""Lab fixtures `lab_lxc_seed` (session) and `lab_lxc` (per test): guest datasets and real LXC containers.

A guest is what `pct create` from an OS template leaves on PVE's ZFS storage: an independent dataset
`rpool/data/subvol-<vmid>-disk-0` holding a Debian rootfs (no `origin`). The lab's `pct` shim
(tests/lab/bin/pct) runs it as an LXC container under `.lab/lxc`. Teardown stops containers and removes
only their LXC config directories: never `lxc-destroy`, which would delete the rootfs, i.e. ZFS data the
container does not own.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.lab.common import LAB_BIN, LXC_PATH, LabError, run
from tests.lab.requirements import require_lab

if TYPE_CHECKING:  # fixtures are wired by name; a runtime import would tie plugin registration order
    from tests.lab.zfs import LabZpool

PCT = LAB_BIN / "pct"
SEED = "lab/rootfs-bookworm"  # under the pool but outside rpool/data, so PVE's storage never lists it


def pct(*args: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the lab's pct shim directly (the SSH path is the sshd fixture's). Never raises on exit status."""
    env = {**os.environ, "PATH": f"{PCT.parent}{os.pathsep}{os.environ.get('PATH', '')}:/usr/sbin:/sbin"}
    return subprocess.run(
        [str(PCT), *args], input=input, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


@dataclass(frozen=True)
class LabLxc:
    """Guests on the lab pool, started and entered through the `pct` shim."""

    zpool: LabZpool
    seed: str
    """Snapshot holding the cached rootfs, received (`zfs send | zfs recv`) into each new guest."""
    lxcpath: Path = LXC_PATH

    def dataset(self, vmid: int) -> str:
        """PVE's name for a container's root disk on `local-zfs`."""
        return f"{self.zpool.data}/subvol-{vmid}-disk-0"

    def make_guest(self, vmid: int) -> str:
        """A new guest dataset holding the Debian rootfs: a full, independent copy, like `pct create`."""
        dataset = self.dataset(vmid)
        # zfs send | zfs recv is ~2.5x faster than copying files through FUSE, and leaves no origin behind.
        with subprocess.Popen([str(LAB_BIN / "zfs"), "send", self.seed], stdout=subprocess.PIPE) as send:
            recv = subprocess.run(
                [str(LAB_BIN / "zfs"), "recv", dataset],
                stdin=send.stdout,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        if recv.returncode != 0 or send.returncode != 0:
            raise LabError(f"zfs send {self.seed} | zfs recv {dataset} failed: {recv.stderr.strip()}")
        self.zpool.zfs(
            "destroy", f"{dataset}@{self.seed.partition('@')[2]}"
        )  # recv copies the seed snapshot too
        return dataset

    def pct(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return pct(*args, input=input)

    def running(self, vmid: int) -> bool:
        return self.pct("status", str(vmid)).stdout.strip() == "status: running"


def seed_rootfs(zpool: LabZpool, rootfs: Path) -> str:
    """Copy the cached rootfs into `<pool>/lab/rootfs-bookworm` and snapshot it; returns the snapshot,
    which every new guest volume is received from (the `lab_lxc_seed` fixture and the demo box)."""
    dataset = f"{zpool.pool}/{SEED}"
    zpool.zfs("create", "-p", dataset)
    run(["cp", "-a", f"{rootfs}/.", str(zpool.mountpoint(dataset))], timeout=300)
    zpool.zfs("snapshot", f"{dataset}@seed")
    return f"{dataset}@seed"


@pytest.fixture(scope="session")
def lab_lxc_seed(lab_zpool: LabZpool, lab_rootfs: Path) -> str:
    """`rpool/lab/rootfs-bookworm@seed`: the cached rootfs copied into the pool once per session."""
    require_lab("lxc-start")
    return seed_rootfs(lab_zpool, lab_rootfs)


@pytest.fixture
def lab_lxc(lab_lxc_seed: str, lab_zfs: LabZpool) -> Iterator[LabLxc]:
    """Make guests with `make_guest(vmid)`; at the end the containers on datasets the test created are
    stopped and those datasets destroyed (by `lab_zfs`, whose `before` set must include the seed)."""
    yield LabLxc(zpool=lab_zfs, seed=lab_lxc_seed)
