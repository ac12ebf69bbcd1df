"""The lab's ZFS (zfs-fuse on a file-backed pool): the semantics Phoenix's ZFS providers rely on are real."""

from __future__ import annotations

import pytest

from tests.lab.zfs import LabZpool

pytestmark = pytest.mark.lab


def test_pool_looks_like_pve_local_zfs(lab_zfs: LabZpool) -> None:
    assert lab_zfs.pool == "rpool"
    assert lab_zfs.exists("rpool/data")
    assert lab_zfs.mountpoint("rpool/data") == lab_zfs.mount_root / "data"


def test_clone_of_snapshot_has_the_snapshot_as_origin_and_its_files(lab_zfs: LabZpool) -> None:
    base = f"{lab_zfs.data}/basevol-9000-disk-0"
    lab_zfs.zfs("create", base)
    (lab_zfs.mountpoint(base) / "layer").write_text("base\n")
    lab_zfs.zfs("snapshot", f"{base}@__base__")

    clone = f"{lab_zfs.data}/subvol-9001-disk-0"
    lab_zfs.zfs("clone", f"{base}@__base__", clone)

    assert lab_zfs.get(clone, "origin") == f"{base}@__base__"
    assert lab_zfs.get(base, "origin") == "-"
    assert (lab_zfs.mountpoint(clone) / "layer").read_text() == "base\n"


def test_destroying_a_snapshot_with_dependent_clones_fails(lab_zfs: LabZpool) -> None:
    base = f"{lab_zfs.data}/basevol-9002-disk-0"
    lab_zfs.zfs("create", base)
    lab_zfs.zfs("snapshot", f"{base}@__base__")
    lab_zfs.zfs("clone", f"{base}@__base__", f"{lab_zfs.data}/subvol-9003-disk-0")

    proc = lab_zfs.zfs("destroy", f"{base}@__base__", check=False)

    assert proc.returncode != 0
    assert "has dependent clones" in proc.stderr
    assert lab_zfs.exists(f"{base}@__base__")


def test_creating_an_existing_dataset_fails(lab_zfs: LabZpool) -> None:
    name = f"{lab_zfs.data}/subvol-9004-disk-0"
    lab_zfs.zfs("create", name)

    proc = lab_zfs.zfs("create", name, check=False)

    assert proc.returncode != 0
    assert "dataset already exists" in proc.stderr


def test_destroy_all_but_removes_new_datasets_snapshots_and_clones(lab_zfs: LabZpool) -> None:
    before = set(lab_zfs.datasets())
    base = f"{lab_zfs.data}/basevol-9005-disk-0"
    lab_zfs.zfs("create", base)
    lab_zfs.zfs("snapshot", f"{base}@__base__")
    lab_zfs.zfs("clone", f"{base}@__base__", f"{lab_zfs.data}/subvol-9006-disk-0")

    lab_zfs.destroy_all_but(before)

    assert set(lab_zfs.datasets()) == before


def test_renaming_a_mounted_dataset_moves_its_files_and_mount(lab_zfs: LabZpool) -> None:
    # What `pct template` does on ZFS (subvol -> basevol); zfs-fuse needs the lab's zfs wrapper for it.
    old, new = f"{lab_zfs.data}/subvol-9007-disk-0", f"{lab_zfs.data}/basevol-9007-disk-0"
    lab_zfs.zfs("create", old)
    (lab_zfs.mountpoint(old) / "layer").write_text("base\n")

    lab_zfs.zfs("rename", old, new)

    assert not lab_zfs.exists(old)
    assert lab_zfs.get(new, "mounted") == "yes"
    assert (lab_zfs.mountpoint(new) / "layer").read_text() == "base\n"
