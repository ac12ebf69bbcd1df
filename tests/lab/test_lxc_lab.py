"""The lab's `pct` shim on real LXC containers whose rootfs is a guest's ZFS dataset.

The shim runs directly here; the SSH path to it is covered with the sshd fixture.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lab.lxc import LabLxc

pytestmark = pytest.mark.lab


def test_started_guest_runs_commands_with_stdin_and_exit_codes(lab_lxc: LabLxc) -> None:
    lab_lxc.make_guest(9101)
    assert lab_lxc.pct("status", "9101").stdout == "status: stopped\n"

    started = lab_lxc.pct("start", "9101")
    assert started.returncode == 0, started.stderr
    assert lab_lxc.pct("status", "9101").stdout == "status: running\n"

    version = lab_lxc.pct("exec", "9101", "--", "cat", "/etc/debian_version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("12.")

    script = lab_lxc.pct("exec", "9101", "--", "bash", "-s", input='echo "in $(hostname)"\nexit 7\n')
    assert script.stdout == "in CT9101\n"
    assert script.returncode == 7

    assert lab_lxc.pct("stop", "9101").returncode == 0
    assert lab_lxc.pct("status", "9101").stdout == "status: stopped\n"


def test_start_and_stop_twice_fail_like_pve(lab_lxc: LabLxc) -> None:
    lab_lxc.make_guest(9102)
    assert lab_lxc.pct("start", "9102").returncode == 0

    again = lab_lxc.pct("start", "9102")
    assert (again.returncode, again.stderr) == (255, "CT 9102 already running\n")

    assert lab_lxc.pct("stop", "9102").returncode == 0
    stopped = lab_lxc.pct("stop", "9102")
    assert (stopped.returncode, stopped.stderr) == (255, "CT 9102 not running\n")


def test_unknown_vmid_reports_a_missing_config(lab_lxc: LabLxc) -> None:
    for args in (["status", "9199"], ["start", "9199"], ["exec", "9199", "--", "true"]):
        proc = lab_lxc.pct(*args)
        assert proc.returncode == 255
        assert "lxc/9199.conf' does not exist" in proc.stderr
        assert proc.stderr.startswith("Configuration file 'nodes/")


def test_linked_clone_of_a_template_boots_with_the_parents_files(lab_lxc: LabLxc) -> None:
    zfs = lab_lxc.zpool
    parent = lab_lxc.make_guest(9103)
    lab_lxc.pct("start", "9103")
    written = lab_lxc.pct("exec", "9103", "--", "bash", "-c", "echo gpu-layer > /root/layer")
    assert written.returncode == 0, written.stderr
    lab_lxc.pct("stop", "9103")
    # What `pct template` does on ZFS: rename to basevol-*, snapshot __base__; then a linked clone.
    template = f"{zfs.data}/basevol-9103-disk-0"
    zfs.zfs("rename", parent, template)
    zfs.zfs("snapshot", f"{template}@__base__")
    clone = f"{zfs.data}/subvol-9104-disk-0"
    zfs.zfs("clone", f"{template}@__base__", clone)

    refused = lab_lxc.pct("start", "9103")
    assert (refused.returncode, refused.stderr) == (255, "you can't start a CT if it's a template\n")
    started = lab_lxc.pct("start", "9104")
    assert started.returncode == 0, started.stderr
    layer = lab_lxc.pct("exec", "9104", "--", "cat", "/root/layer")
    assert layer.stdout == "gpu-layer\n"
    assert zfs.get(clone, "origin") == f"{template}@__base__"


def test_push_and_pull_copy_files_into_a_running_guest(lab_lxc: LabLxc, tmp_path: Path) -> None:
    lab_lxc.make_guest(9105)
    local = tmp_path / "unit.service"
    local.write_text("[Unit]\nDescription=lab\n")
    refused = lab_lxc.pct("push", "9105", str(local), "/etc/lab.service")
    assert (refused.returncode, refused.stderr) == (255, "can only push files to a running CT\n")
    lab_lxc.pct("start", "9105")

    pushed = lab_lxc.pct("push", "9105", str(local), "/etc/lab.service", "--perms", "0640")
    assert pushed.returncode == 0, pushed.stderr
    listing = lab_lxc.pct("exec", "9105", "--", "stat", "-c", "%a %U", "/etc/lab.service")
    assert listing.stdout == "640 root\n"
    pulled = lab_lxc.pct("pull", "9105", "/etc/lab.service", str(tmp_path / "back"))
    assert pulled.returncode == 0, pulled.stderr
    assert (tmp_path / "back").read_text() == local.read_text()


def test_guest_dataset_is_a_full_copy_without_origin(lab_lxc: LabLxc) -> None:
    dataset = lab_lxc.make_guest(9106)

    assert dataset == f"{lab_lxc.zpool.data}/subvol-9106-disk-0"
    assert lab_lxc.zpool.get(dataset, "origin") == "-"
    assert not lab_lxc.zpool.exists(f"{dataset}@seed")
    assert (lab_lxc.zpool.mountpoint(dataset) / "bin" / "bash").exists()


def test_a_running_guests_dataset_cannot_be_destroyed(lab_lxc: LabLxc) -> None:
    dataset = lab_lxc.make_guest(9107)
    lab_lxc.pct("start", "9107")

    proc = lab_lxc.zpool.zfs("destroy", dataset, check=False)

    assert proc.returncode != 0
    assert "busy" in proc.stderr
    assert lab_lxc.pct("exec", "9107", "--", "test", "-x", "/bin/bash").returncode == 0
