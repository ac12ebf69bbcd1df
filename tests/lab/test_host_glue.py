"""The lab host's glue: guest operations through the PVE API act on the real ZFS pool as PVE's ZFS plugin does
it.

Everything is driven through Phoenix's own API client (providers/channels/pve.py) and checked on the pool
itself (zfs list/get, the files in the dataset), in the fake's guest config, and, for a linked clone, inside
the running container through the lab's ``pct`` shim.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from providers.channels.pve import PveClient
from providers.errors import PveTaskError
from tests.lab.host import LabHost, StorageAction, clean_pool
from tests.lab.pve import NODE, OS_TEMPLATE, ZFS_STORAGE

pytestmark = pytest.mark.lab

CT = f"nodes/{NODE}/lxc"
TASK_TIMEOUT = 120.0  # a create copies a whole Debian rootfs through FUSE
DATA = "rpool/data"
BASE = "__base__"


@pytest.fixture
def client(lab_host: LabHost) -> PveClient:
    return lab_host.client()


def create(client: PveClient, vmid: int, *, size: int = 1) -> None:
    client.run_task(
        "POST",
        CT,
        timeout=TASK_TIMEOUT,
        step=f"create CT {vmid}",
        vmid=vmid,
        ostemplate=OS_TEMPLATE,
        rootfs=f"{ZFS_STORAGE}:{size}",
        hostname=f"ct{vmid}",
    )


def template(client: PveClient, vmid: int) -> None:
    client.run_task("POST", f"{CT}/{vmid}/template", timeout=TASK_TIMEOUT, step=f"template CT {vmid}")


def clone(client: PveClient, vmid: int, newid: int, *, full: bool) -> None:
    client.run_task(
        "POST",
        f"{CT}/{vmid}/clone",
        timeout=TASK_TIMEOUT,
        step=f"clone CT {vmid} to {newid}",
        newid=newid,
        full=int(full),
    )


def destroy(client: PveClient, vmid: int) -> None:
    client.run_task("DELETE", f"{CT}/{vmid}", timeout=TASK_TIMEOUT, step=f"destroy CT {vmid}")


def rootfs(client: PveClient, vmid: int) -> str:
    return str(client.get(f"{CT}/{vmid}/config")["rootfs"])


def make_template(client: PveClient, vmid: int) -> None:
    create(client, vmid)
    template(client, vmid)


def debian_version(host: LabHost) -> str:
    return (host.rootfs / "etc" / "debian_version").read_text()


# ------------------------------------------------------------------------------------------ create


def test_create_from_os_template_makes_a_filled_dataset_with_refquota(
    lab_host: LabHost, client: PveClient
) -> None:
    create(client, 200, size=2)

    dataset = f"{DATA}/subvol-200-disk-0"
    pool = lab_host.zpool
    assert pool.exists(dataset)
    assert pool.get(dataset, "refquota") == str(2 * 1024**3)
    assert pool.get(dataset, "origin") == "-"
    assert (pool.mountpoint(dataset) / "etc" / "debian_version").read_text() == debian_version(lab_host)
    assert rootfs(client, 200) == f"{ZFS_STORAGE}:subvol-200-disk-0,size=2G"
    seed = lab_host.glue.storage.seed
    assert lab_host.actions == [
        StorageAction("create", seed, dataset),
        StorageAction("refquota", dataset, str(2 * 1024**3)),
    ]


def test_a_failed_create_leaves_no_guest_and_says_what_zfs_said(lab_host: LabHost, client: PveClient) -> None:
    lab_host.zpool.zfs("create", f"{DATA}/subvol-201-disk-0")  # in the way, as a leftover would be

    with pytest.raises(PveTaskError) as caught:
        create(client, 201)

    dataset = f"{DATA}/subvol-201-disk-0"
    assert caught.value.task_status == (
        f"unable to create CT 201 - zfs error: cannot create '{dataset}': dataset already exists"
    )
    assert 201 not in [int(ct["vmid"]) for ct in client.get(CT)]
    assert lab_host.zpool.exists(f"{DATA}/subvol-201-disk-0")  # not ours: left alone
    assert lab_host.actions == []


# ---------------------------------------------------------------------------------------- template


def test_template_renames_to_basevol_and_snapshots_base(lab_host: LabHost, client: PveClient) -> None:
    create(client, 210)
    template(client, 210)

    pool, base = lab_host.zpool, f"{DATA}/basevol-210-disk-0"
    assert not pool.exists(f"{DATA}/subvol-210-disk-0")
    assert pool.exists(base) and pool.exists(f"{base}@{BASE}")
    assert (pool.mountpoint(base) / "etc" / "debian_version").is_file()
    config = client.get(f"{CT}/210/config")
    assert config["rootfs"] == f"{ZFS_STORAGE}:basevol-210-disk-0,size=1G"
    assert config["template"] == 1
    assert lab_host.actions[-2:] == [
        StorageAction("rename", f"{DATA}/subvol-210-disk-0", base),
        StorageAction("snapshot", base, f"{base}@{BASE}"),
    ]


# ------------------------------------------------------------------------------------------ clones


def test_linked_clone_is_a_zfs_clone_of_base_named_as_pve_names_it(
    lab_host: LabHost, client: PveClient
) -> None:
    make_template(client, 220)
    clone(client, 220, 221, full=False)

    pool, dataset = lab_host.zpool, f"{DATA}/subvol-221-disk-0"
    origin = f"{DATA}/basevol-220-disk-0@{BASE}"
    assert pool.get(dataset, "origin") == origin
    assert pool.get(dataset, "refquota") == str(1024**3)  # the base's, as clone_image sets it
    volid = f"{ZFS_STORAGE}:basevol-220-disk-0/subvol-221-disk-0"
    assert rootfs(client, 221) == f"{volid},size=1G"
    content = client.get(f"nodes/{NODE}/storage/{ZFS_STORAGE}/content")
    assert volid in [item["volid"] for item in content]
    assert lab_host.actions[-1] == StorageAction("clone", origin, dataset)


def test_linked_clone_runs_in_lxc_through_the_pct_shim(lab_host: LabHost, client: PveClient) -> None:
    make_template(client, 225)
    clone(client, 225, 226, full=False)

    started = lab_host.pct("start", "226")
    assert started.returncode == 0, started.stderr
    try:
        shown = lab_host.pct("exec", "226", "--", "cat", "/etc/debian_version")
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout == debian_version(lab_host)
        wrote = lab_host.pct("exec", "226", "--", "sh", "-c", "echo clone-only > /root/mark")
        assert wrote.returncode == 0, wrote.stderr
    finally:
        assert lab_host.pct("stop", "226").returncode == 0
    base = lab_host.zpool.mountpoint(f"{DATA}/basevol-225-disk-0")
    assert not (base / "root" / "mark").exists()  # the template's files are the clone's origin, not shared


def test_full_clone_is_an_independent_copy(lab_host: LabHost, client: PveClient) -> None:
    make_template(client, 230)
    clone(client, 230, 231, full=True)

    pool, dataset = lab_host.zpool, f"{DATA}/subvol-231-disk-0"
    assert pool.get(dataset, "origin") == "-"
    assert pool.get(dataset, "refquota") == str(1024**3)
    assert (pool.mountpoint(dataset) / "etc" / "debian_version").read_text() == debian_version(lab_host)
    assert rootfs(client, 231) == f"{ZFS_STORAGE}:subvol-231-disk-0,size=1G"
    assert StorageAction("copy", f"{DATA}/basevol-230-disk-0", dataset) in lab_host.actions


def test_a_layer_chain_clones_each_layer_from_the_one_below(lab_host: LabHost, client: PveClient) -> None:
    """base -> layer (linked clone, templated) -> workload: each origin is the direct parent's @__base__."""
    make_template(client, 240)
    clone(client, 240, 241, full=False)
    template(client, 241)
    clone(client, 241, 242, full=False)

    pool = lab_host.zpool
    assert pool.get(f"{DATA}/basevol-241-disk-0", "origin") == f"{DATA}/basevol-240-disk-0@{BASE}"
    assert pool.exists(f"{DATA}/basevol-241-disk-0@{BASE}")
    assert pool.get(f"{DATA}/subvol-242-disk-0", "origin") == f"{DATA}/basevol-241-disk-0@{BASE}"
    assert rootfs(client, 241) == f"{ZFS_STORAGE}:basevol-240-disk-0/basevol-241-disk-0,size=1G"
    assert rootfs(client, 242) == f"{ZFS_STORAGE}:basevol-241-disk-0/subvol-242-disk-0,size=1G"


def test_resize_of_a_linked_clone_sets_refquota(lab_host: LabHost, client: PveClient) -> None:
    make_template(client, 245)
    clone(client, 245, 246, full=False)

    client.run_task("PUT", f"{CT}/246/resize", timeout=TASK_TIMEOUT, step="resize", disk="rootfs", size="3G")

    assert lab_host.zpool.get(f"{DATA}/subvol-246-disk-0", "refquota") == str(3 * 1024**3)
    assert rootfs(client, 246) == f"{ZFS_STORAGE}:basevol-245-disk-0/subvol-246-disk-0,size=3G"


# ----------------------------------------------------------------------------------------- destroy


def test_destroying_a_template_with_a_linked_clone_is_refused(lab_host: LabHost, client: PveClient) -> None:
    make_template(client, 250)
    clone(client, 250, 251, full=False)
    before = lab_host.zpool.datasets(DATA)

    with pytest.raises(PveTaskError) as caught:
        destroy(client, 250)

    assert caught.value.task_status == "base volume 'basevol-250-disk-0' is still in use by linked clones"
    assert lab_host.zpool.datasets(DATA) == before
    config = client.get(f"{CT}/250/config")
    assert config["template"] == 1 and "lock" not in config  # untouched, as PVE leaves it
    assert StorageAction("refuse", f"{DATA}/basevol-250-disk-0", caught.value.task_status) in lab_host.actions

    destroy(client, 251)
    destroy(client, 250)

    assert lab_host.zpool.datasets(DATA) == [DATA]
    assert lab_host.actions[-2:] == [
        StorageAction("destroy", f"{DATA}/subvol-251-disk-0", ""),
        StorageAction("destroy", f"{DATA}/basevol-250-disk-0", ""),
    ]
    assert {int(ct["vmid"]) for ct in client.get(CT)} == set()


# ------------------------------------------------------------------------------- power, time, load


def test_api_start_and_stop_drive_the_real_container(lab_host: LabHost, client: PveClient) -> None:
    """TemplateLayer starts through the API and then runs `pct exec` over SSH: both must see one container."""
    create(client, 270)

    client.run_task("POST", f"{CT}/270/status/start", timeout=TASK_TIMEOUT, step="start")
    try:
        assert lab_host.pct("status", "270").stdout.strip() == "status: running"
        shown = lab_host.pct("exec", "270", "--", "cat", "/etc/debian_version")
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout == debian_version(lab_host)
    finally:
        client.run_task("POST", f"{CT}/270/status/stop", timeout=TASK_TIMEOUT, step="stop")

    assert lab_host.pct("status", "270").stdout.strip() == "status: stopped"
    assert client.get(f"{CT}/270/status/current")["status"] == "stopped"
    assert [a for a in lab_host.actions if a.op in ("start", "stop")] == [
        StorageAction("start", "270", ""),
        StorageAction("stop", "270", ""),
    ]


def test_destroy_force_of_a_running_container_stops_it_first(lab_host: LabHost, client: PveClient) -> None:
    create(client, 275)
    client.run_task("POST", f"{CT}/275/status/start", timeout=TASK_TIMEOUT, step="start")

    client.run_task("DELETE", f"{CT}/275", timeout=TASK_TIMEOUT, step="destroy", force=1)

    assert not lab_host.zpool.exists(f"{DATA}/subvol-275-disk-0")
    assert [a.op for a in lab_host.actions][-2:] == ["stop", "destroy"]


def test_destroy_of_a_container_running_behind_the_api_is_refused(
    lab_host: LabHost, client: PveClient
) -> None:
    """Started by `pct start` over SSH, the fake still says stopped; PVE asks the host and refuses."""
    create(client, 276)
    assert lab_host.pct("start", "276").returncode == 0
    try:
        with pytest.raises(PveTaskError) as caught:
            destroy(client, 276)
        assert caught.value.task_status == "unable to destroy CT 276 - container is running"
        assert lab_host.zpool.exists(f"{DATA}/subvol-276-disk-0")
        assert "lock" not in client.get(f"{CT}/276/config")
    finally:
        assert lab_host.pct("stop", "276").returncode == 0


def test_tasks_that_take_time_act_on_the_pool_too(lab_host: LabHost, client: PveClient) -> None:
    """With time_scale > 0 the fake runs task bodies after the request returned (another asyncio task): the
    request's values (full=0) must still reach the storage work."""
    lab_host.pve.set_time_scale(0.05)
    lab_host.pve.call(lab_host.pve.pve.ct_secs.update, {"create": 2, "clone": 2, "template": 2, "destroy": 2})

    make_template(client, 280)
    clone(client, 280, 281, full=False)

    assert lab_host.zpool.get(f"{DATA}/subvol-281-disk-0", "origin") == f"{DATA}/basevol-280-disk-0@{BASE}"
    destroy(client, 281)
    assert not lab_host.zpool.exists(f"{DATA}/subvol-281-disk-0")


def test_parallel_linked_clones_of_one_template(lab_host: LabHost) -> None:
    """Fan-out: clones of one template in parallel (the fake locks the source, the client retries)."""
    setup = lab_host.client()
    make_template(setup, 290)
    newids = [291, 292, 293, 294]

    def fan_out(newid: int) -> None:
        own = lab_host.client()
        try:
            clone(own, 290, newid, full=False)
        finally:
            own.close()

    with ThreadPoolExecutor(max_workers=len(newids)) as pool:
        for done in [pool.submit(fan_out, newid) for newid in newids]:
            done.result(timeout=TASK_TIMEOUT)  # re-raises a clone's error here
    origin = f"{DATA}/basevol-290-disk-0@{BASE}"
    for newid in newids:
        assert lab_host.zpool.get(f"{DATA}/subvol-{newid}-disk-0", "origin") == origin
        assert rootfs(setup, newid) == f"{ZFS_STORAGE}:basevol-290-disk-0/subvol-{newid}-disk-0,size=1G"


def test_leftovers_of_a_crashed_test_are_cleaned_up(lab_host: LabHost, client: PveClient) -> None:
    """What a test that died halfway leaves (a running linked clone, its template, a stray dataset) is gone
    after the cleanup that runs before and after every lab_host test."""
    make_template(client, 310)
    clone(client, 310, 311, full=False)
    client.run_task("POST", f"{CT}/311/status/start", timeout=TASK_TIMEOUT, step="start")
    lab_host.zpool.zfs("create", f"{DATA}/subvol-312-disk-0")

    clean_pool(lab_host.glue.storage, lab_host.zpool)

    assert lab_host.zpool.datasets(DATA) == [DATA]
    assert lab_host.pct("status", "311").returncode != 0  # no dataset, so no container either


# ------------------------------------------------------------------------------------------ snapshots


def snapshot(client: PveClient, vmid: int, name: str) -> None:
    client.run_task("POST", f"{CT}/{vmid}/snapshot", timeout=TASK_TIMEOUT, step="snapshot", snapname=name)


def test_snapshots_rollback_and_a_full_clone_from_a_snapshot(lab_host: LabHost, client: PveClient) -> None:
    create(client, 320)
    dataset = f"{DATA}/subvol-320-disk-0"
    marker = lab_host.zpool.mountpoint(dataset) / "root" / "marker"
    snapshot(client, 320, "before")
    marker.write_text("after\n")
    snapshot(client, 320, "after")
    assert lab_host.zpool.exists(f"{dataset}@before") and lab_host.zpool.exists(f"{dataset}@after")

    with pytest.raises(PveTaskError) as caught:  # ZFS can only roll back to the latest snapshot
        client.run_task("POST", f"{CT}/320/snapshot/before/rollback", timeout=TASK_TIMEOUT, step="rollback")
    assert caught.value.task_status == (
        f"can't rollback, 'before' is not most recent snapshot on '{ZFS_STORAGE}:subvol-320-disk-0'"
    )

    client.run_task(  # a CT that is not a template clones in full (rsync in PVE; the snapshot sent here)
        "POST", f"{CT}/320/clone", timeout=TASK_TIMEOUT, step="clone", newid=321, snapname="before"
    )
    copy = lab_host.zpool.mountpoint(f"{DATA}/subvol-321-disk-0")
    assert not (copy / "root" / "marker").exists() and (copy / "etc" / "debian_version").is_file()
    assert lab_host.zpool.get(f"{DATA}/subvol-321-disk-0", "origin") == "-"

    client.run_task("DELETE", f"{CT}/320/snapshot/after", timeout=TASK_TIMEOUT, step="delete snapshot")
    assert not lab_host.zpool.exists(f"{dataset}@after")
    client.run_task("POST", f"{CT}/320/snapshot/before/rollback", timeout=TASK_TIMEOUT, step="rollback")
    assert not (lab_host.zpool.mountpoint(dataset) / "root" / "marker").exists()
    assert StorageAction("rollback", f"{dataset}@before", dataset) in lab_host.actions


# --------------------------------------------------------------------------------- /etc/pve/lxc mirror


def test_guest_configs_are_mirrored_to_etc_pve_keeping_raw_lxc_lines(
    lab_host: LabHost, client: PveClient
) -> None:
    make_template(client, 9200)
    conf = lab_host.pve_conf(9200)
    assert conf.read_text().splitlines().count(f"rootfs: {ZFS_STORAGE}:basevol-9200-disk-0,size=1G") == 1
    assert "template: 1" in conf.read_text().splitlines()

    clone(client, 9200, 9201, full=False)
    clone_conf = lab_host.pve_conf(9201)
    assert f"rootfs: {ZFS_STORAGE}:basevol-9200-disk-0/subvol-9201-disk-0,size=1G" in clone_conf.read_text()
    # What Phoenix does over SSH (the API cannot set raw lines); a later API change keeps the line.
    clone_conf.write_text(clone_conf.read_text() + "lxc.apparmor.profile: phoenix-lxc-confined\n")
    client.set(f"{CT}/9201/config", cores=3)
    lines = clone_conf.read_text().splitlines()
    assert "cores: 3" in lines
    assert lines[-1] == "lxc.apparmor.profile: phoenix-lxc-confined"

    destroy(client, 9201)
    assert not clone_conf.exists()
    assert conf.exists()
