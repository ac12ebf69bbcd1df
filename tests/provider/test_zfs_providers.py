"""ZfsDataset, ZfsSnapshot and ZfsClone over SSH to the lab sshd, on the lab's real zfs-fuse pool
(lab-marked, except the check tests at the end, which need no host): their lifecycle under the real Pulumi
engine (cli-marked), and the provider's errors through the real provider host, RPC by RPC, with the
inputs the engine would send (tests/support/capture.py).

Every assertion about the host is made with the lab's own ``zfs`` (``LabZpool``), never with the
provider's outputs alone. Each test's datasets are destroyed by the ``lab_zfs`` fixture afterwards, and
the programs' destroy must leave the pool exactly as it was before.
"""

from __future__ import annotations

import secrets
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pulumi.automation import CommandError

from providers.zfs.clone import ZfsClone, ZfsCloneArgs
from providers.zfs.dataset import ZfsDataset, ZfsDatasetArgs
from providers.zfs.snapshot import ZfsSnapshot, ZfsSnapshotArgs
from tests.lab.sshd import LabSshd
from tests.lab.zfs import LabZpool
from tests.support.capture import Registration, capture
from tests.support.dynhost import UNKNOWN, DynHost, ProviderError, secret
from tests.support.engine import Drift, Engine, Report

lab = pytest.mark.lab
cli = pytest.mark.cli


@pytest.fixture(scope="module")
def host(lab_sshd: LabSshd) -> Iterator[DynHost]:
    """The provider host itself, for the direct-call tests."""
    with DynHost(config={"phoenix:sshPrivateKey": secret(lab_sshd.user_private_key)}) as running:
        yield running


@pytest.fixture
def engine(lab_sshd: LabSshd, pulumi_bin: Path, tmp_path: Path) -> Engine:
    """A stack under the real engine, the lab user's key as its secret config."""
    return Engine(
        tmp_path / "engine",
        "zfs",
        secrets={"phoenix:sshPrivateKey": lab_sshd.user_private_key},
        bin_dir=pulumi_bin,
    )


RESOURCE_CALLS = ("Check", "Diff", "Create", "Update", "Delete", "Read")


def resource_calls(calls: Counter[str]) -> dict[str, int]:
    """The engine's calls about resources (the plugin's handshake and configuration left out)."""
    return {m: n for m, n in calls.items() if m in RESOURCE_CALLS and n}


def stored_files(engine: Engine) -> str:
    """Every file the engine keeps for the stack (the file backend's state, history and backups, the CLI's
    home, the workspace's stack config), the driver's gRPC debug logs aside (they record Configure's
    config in the clear, as ``PULUMI_DEBUG_GRPC`` does for anyone who turns it on)."""
    roots = [engine.root, Path(engine.stack.workspace.work_dir)]
    return "".join(
        f.read_text(errors="replace")
        for root in roots
        for f in sorted(root.rglob("*"))
        if f.is_file() and not f.name.startswith("grpc-")
    )


@pytest.fixture
def prefix(lab_zfs: LabZpool) -> str:
    """A fresh dataset name under rpool/data for this test."""
    return f"{lab_zfs.data}/zt-{secrets.token_hex(3)}"


def models_program(
    lab_sshd: LabSshd,
    prefix: str,
    *,
    properties: dict[str, Any] | None = None,
    clone: str = "clone",
    origin_snapshot: str = "v1",
) -> Callable[[], dict[str, Any]]:
    """A model-weights dataset, snapshotted once and cloned for a vLLM container (DESIGN.md, chain 4)."""

    def run() -> dict[str, Any]:
        target = lab_sshd.target()
        props = properties if properties is not None else {"quota": "256M", "org.phoenix:role": "models"}
        dataset = ZfsDataset("models", ZfsDatasetArgs(name=prefix, properties=props), ssh_target=target)
        snap = ZfsSnapshot(
            "models-v1", ZfsSnapshotArgs(dataset=dataset.name, snapshot=origin_snapshot), ssh_target=target
        )
        cloned = ZfsClone(
            "models-clone",
            ZfsCloneArgs(
                origin=snap.name, name=f"{prefix}-{clone}", properties={"org.phoenix:role": "clone"}
            ),
            ssh_target=target,
        )
        return {"origin": cloned.origin, "clone": cloned.name, "mountpoint": dataset.mountpoint}

    return run


@lab
@cli
def test_up_again_change_rename_and_destroy(
    engine: Engine, lab_sshd: LabSshd, lab_zfs: LabZpool, prefix: str
) -> None:
    before = set(lab_zfs.datasets())
    runs: list[Report] = []

    # Preview: the clone's origin is unknown until the snapshot exists; check lets it through.
    assert engine.preview(models_program(lab_sshd, prefix)) == {"create": 4}  # three and the stack
    assert set(lab_zfs.datasets()) == before

    created = engine.up(models_program(lab_sshd, prefix))
    runs.append(created)

    assert created.summary == {"create": 4}
    assert [created.op(n) for n in ("models", "models-v1", "models-clone")] == ["create"] * 3
    assert lab_zfs.get(f"{prefix}-clone", "origin") == f"{prefix}@v1"  # a clone, not a copy
    assert created.exports["origin"] == f"{prefix}@v1"
    assert lab_zfs.get(prefix, "quota") == str(256 * 2**20)
    assert lab_zfs.get(prefix, "org.phoenix:role") == "models"
    assert created.exports["mountpoint"] == str(lab_zfs.mount_root / "data" / prefix.rsplit("/", 1)[1])
    guid = lab_zfs.get(prefix, "guid")

    again = engine.up(models_program(lab_sshd, prefix))
    runs.append(again)
    assert again.changed == {} and again.changes == 0
    assert again.provider_mutations == 0
    assert resource_calls(again.provider_calls) == {"Check": 3, "Diff": 3}

    # A changed quota and a dropped user property: an update in place (same dataset: same guid).
    changed = engine.up(models_program(lab_sshd, prefix, properties={"quota": "512M"}))
    runs.append(changed)
    assert changed.changed == {engine.resource("models").urn: "update"}
    assert lab_zfs.get(prefix, "quota") == str(512 * 2**20)
    assert lab_zfs.get(prefix, "org.phoenix:role") == "-"  # inherited from nowhere: unset
    assert lab_zfs.get(prefix, "guid") == guid
    assert engine.resource("models").outputs["properties"] == {"quota": str(512 * 2**20)}

    # A new clone name is a new identity: the new clone is made, then the old one destroyed.
    renamed = engine.up(models_program(lab_sshd, prefix, properties={"quota": "512M"}, clone="clone2"))
    runs.append(renamed)
    assert renamed.changed == {engine.resource("models-clone").urn: "replace"}
    steps = [op for op, urn in renamed.steps if urn.endswith("::models-clone")]
    assert steps == ["create-replacement", "replace", "delete-replaced"]  # create-before-delete
    assert lab_zfs.exists(f"{prefix}-clone2")
    assert not lab_zfs.exists(f"{prefix}-clone")
    assert lab_zfs.get(f"{prefix}-clone2", "origin") == f"{prefix}@v1"

    stored = engine.export_text() + stored_files(engine)
    destroyed = engine.destroy()
    runs.append(destroyed)
    assert destroyed.summary == {"delete": 4}
    assert destroyed.provider_calls["Delete"] == 3
    assert set(lab_zfs.datasets()) == before
    key_line = lab_sshd.user_private_key.splitlines()[1]
    assert key_line not in stored + stored_files(engine), "the key in the stack's state or config"
    assert key_line not in "".join(run.stdout for run in runs), "the key in the engine's output"


@lab
@cli
def test_refresh_sees_drift_and_out_of_band_destroy(
    engine: Engine, lab_sshd: LabSshd, lab_zfs: LabZpool, prefix: str
) -> None:
    program = models_program(lab_sshd, prefix)
    engine.up(program)
    dataset, clone = engine.resource("models"), engine.resource("models-clone")

    lab_zfs.zfs("set", "quota=1G", prefix)
    lab_zfs.zfs("destroy", f"{prefix}-clone")
    drift = engine.refresh()

    assert drift[dataset.urn] == Drift("changed", ("properties",))
    assert engine.resource("models").outputs["properties"]["quota"] == str(2**30)  # the live value
    assert drift[clone.urn] == Drift("gone")
    assert drift[engine.resource("models-v1").urn] == Drift("same")

    repaired = engine.up(program)
    assert repaired.changed == {dataset.urn: "update", clone.urn: "create"}
    assert lab_zfs.get(prefix, "quota") == str(256 * 2**20)
    assert lab_zfs.get(f"{prefix}-clone", "origin") == f"{prefix}@v1"
    engine.destroy()


# --- direct provider calls, as the engine makes them ------------------------------------------------------


def registration(factory: Callable[[], object], name: str) -> Registration:
    return capture(factory)[name]


def create(host: DynHost, reg: Registration) -> tuple[str, dict[str, Any]]:
    checked = host.check(reg.urn, {}, reg.inputs)
    assert checked.failures == ()
    return host.create(reg.urn, checked.inputs)


def dataset_reg(lab_sshd: LabSshd, name: str, **props: Any) -> Registration:
    args = ZfsDatasetArgs(name=name, properties=props)
    return registration(lambda: ZfsDataset("ds", args, ssh_target=lab_sshd.target(), busy_timeout=1.0), "ds")


def snapshot_reg(lab_sshd: LabSshd, dataset: str, snapshot: str, *, recursive: bool = False) -> Registration:
    args = ZfsSnapshotArgs(dataset=dataset, snapshot=snapshot, recursive=recursive)
    return registration(lambda: ZfsSnapshot("snap", args, ssh_target=lab_sshd.target()), "snap")


def clone_reg(lab_sshd: LabSshd, origin: str, name: str, **props: Any) -> Registration:
    args = ZfsCloneArgs(origin=origin, name=name, properties=props)
    return registration(lambda: ZfsClone("clone", args, ssh_target=lab_sshd.target()), "clone")


@lab
def test_deleting_a_snapshot_with_a_dependent_clone_names_the_clone(
    host: DynHost, lab_sshd: LabSshd, lab_zfs: LabZpool, prefix: str
) -> None:
    lab_zfs.zfs("create", prefix)
    lab_zfs.zfs("create", f"{prefix}/child")
    snap = snapshot_reg(lab_sshd, prefix, "v1")
    snap_id, snap_out = create(host, snap)
    clone_id, _ = create(host, clone_reg(lab_sshd, snap_id, f"{prefix}-c1"))

    with pytest.raises(ProviderError) as raised:
        host.delete(snap_id, snap.urn, snap_out)
    assert "DependentClonesError" in raised.value.details
    assert f"snapshot has dependent clones: {clone_id}" in raised.value.details
    assert lab_zfs.exists(snap_id) and lab_zfs.exists(clone_id)

    # `destroy -r` says only "snapshot is cloned": the provider finds the clone of the child's snapshot.
    rsnap = snapshot_reg(lab_sshd, prefix, "r1", recursive=True)
    rsnap_id, rsnap_out = create(host, rsnap)
    assert lab_zfs.exists(f"{prefix}/child@r1")
    child_clone_id, _ = create(host, clone_reg(lab_sshd, f"{prefix}/child@r1", f"{prefix}-c2"))
    with pytest.raises(ProviderError) as raised:
        host.delete(rsnap_id, rsnap.urn, rsnap_out)
    assert f"snapshot has dependent clones: {child_clone_id}" in raised.value.details
    assert lab_zfs.exists(f"{prefix}/child@r1")

    # Without the clones, deletes go through, and deleting again is a no-op (already gone).
    lab_zfs.zfs("destroy", clone_id)
    lab_zfs.zfs("destroy", child_clone_id)
    host.delete(rsnap_id, rsnap.urn, rsnap_out)
    assert not lab_zfs.exists(rsnap_id) and not lab_zfs.exists(f"{prefix}/child@r1")
    host.delete(snap_id, snap.urn, snap_out)
    host.delete(snap_id, snap.urn, snap_out)
    assert not lab_zfs.exists(snap_id)


@lab
def test_create_adopts_the_same_identity_and_refuses_another(
    host: DynHost, lab_sshd: LabSshd, lab_zfs: LabZpool, prefix: str
) -> None:
    lab_zfs.zfs("create", prefix)
    lab_zfs.zfs("snapshot", f"{prefix}@v1")
    lab_zfs.zfs("snapshot", f"{prefix}@v2")
    # As if an earlier create ran but its answer was lost (a dropped connection): same origin -> adopted.
    lab_zfs.zfs("clone", f"{prefix}@v1", f"{prefix}-c")
    clone_id, outputs = create(host, clone_reg(lab_sshd, f"{prefix}@v1", f"{prefix}-c", atime="off"))
    assert outputs["origin"] == f"{prefix}@v1"
    assert outputs["guid"] == lab_zfs.get(clone_id, "guid")
    assert lab_zfs.get(clone_id, "atime") == "off"  # the declared properties were applied on adoption

    # Another origin under the name is never adopted.
    with pytest.raises(ProviderError) as raised:
        create(host, clone_reg(lab_sshd, f"{prefix}@v2", f"{prefix}-c"))
    assert "DatasetExistsError" in raised.value.details
    assert f"not a clone of {prefix}@v2" in raised.value.details
    # Nor is a clone where an independent dataset is asked for.
    with pytest.raises(ProviderError) as raised:
        create(host, dataset_reg(lab_sshd, f"{prefix}-c"))
    assert f"it is a clone of {prefix}@v1, not an independent filesystem" in raised.value.details
    assert lab_zfs.get(clone_id, "origin") == f"{prefix}@v1"  # untouched

    # A missing origin snapshot and a missing parent are clear errors.
    with pytest.raises(ProviderError) as raised:
        create(host, clone_reg(lab_sshd, f"{prefix}@v9", f"{prefix}-d"))
    assert "DatasetNotFoundError" in raised.value.details and f"'{prefix}@v9'" in raised.value.details
    with pytest.raises(ProviderError) as raised:
        create(host, dataset_reg(lab_sshd, f"{prefix}-nope/child"))
    assert "ParentMissingError" in raised.value.details


@lab
def test_busy_dataset_is_retried_then_a_typed_error(
    host: DynHost, lab_sshd: LabSshd, lab_zfs: LabZpool, prefix: str
) -> None:
    reg = dataset_reg(lab_sshd, prefix)  # busy_timeout=1.0
    ds_id, outputs = create(host, reg)
    holder = subprocess.Popen(["sleep", "60"], cwd=outputs["mountpoint"])  # keeps the mount in use
    try:
        started = time.monotonic()
        with pytest.raises(ProviderError) as raised:
            host.delete(ds_id, reg.urn, outputs)
        assert "DatasetBusyError" in raised.value.details
        assert time.monotonic() - started >= 1.0  # it retried until the deadline
        assert lab_zfs.exists(ds_id)

        # Freed while the provider retries: the delete succeeds.
        threading.Timer(0.3, holder.kill).start()
        host.delete(ds_id, reg.urn, outputs)
        assert not lab_zfs.exists(ds_id)
    finally:
        holder.kill()
        holder.wait()


@lab
def test_delete_refuses_a_dataset_replaced_out_of_band(
    host: DynHost, lab_sshd: LabSshd, lab_zfs: LabZpool, prefix: str
) -> None:
    reg = dataset_reg(lab_sshd, prefix)
    ds_id, outputs = create(host, reg)
    lab_zfs.zfs("destroy", ds_id)
    lab_zfs.zfs("create", ds_id)  # someone else's dataset now has the name

    with pytest.raises(ProviderError) as raised:
        host.delete(ds_id, reg.urn, outputs)
    assert "DatasetReplacedError" in raised.value.details
    assert lab_zfs.exists(ds_id)


# --- check through the host (no lab needed) ------------------------------------------------------------


@pytest.fixture(scope="module")
def bare_host() -> Iterator[DynHost]:
    with DynHost() as running:
        yield running


def test_check_names_the_bad_field_through_the_host(bare_host: DynHost, tmp_path: Path) -> None:
    from providers.channels.targets import SshTarget

    target = SshTarget("127.0.0.1", 22, "root", "SHA256:" + "A" * 43)
    args = ZfsDatasetArgs(name="rpool/data/bad name", properties={"quota": "lots", "used": "1"})
    reg = registration(lambda: ZfsDataset("ds", args, ssh_target=target), "ds")
    checked = bare_host.check(reg.urn, {}, reg.inputs)
    fields = dict(checked.failures)
    assert set(fields) == {"name", "properties"}
    assert "component 'bad name'" in fields["name"]
    reasons = [reason for field, reason in checked.failures if field == "properties"]
    assert any("quota: 'lots' is not a size" in r for r in reasons)
    assert any("'used' is read-only" in r for r in reasons)


def test_check_tolerates_an_origin_unknown_at_preview(bare_host: DynHost) -> None:
    from providers.channels.targets import SshTarget

    target = SshTarget("127.0.0.1", 22, "root", "SHA256:" + "A" * 43)
    args = ZfsCloneArgs(origin="rpool/data/m@v1", name="rpool/data/m-c", properties={"recordsize": "16K"})
    reg = registration(lambda: ZfsClone("clone", args, ssh_target=target), "clone")
    checked = bare_host.check(reg.urn, {}, {**reg.inputs, "origin": UNKNOWN})
    assert checked.failures == ()
    assert checked.inputs["origin"] == UNKNOWN
    assert checked.inputs["properties"] == {"recordsize": "16384"}


@cli
def test_a_bad_name_stops_up_before_any_host_call(pulumi_bin: Path, tmp_path: Path) -> None:
    from providers.channels.targets import SshTarget

    target = SshTarget("127.0.0.1", 1, "root", "SHA256:" + "A" * 43)  # nothing listens: no call may run
    engine = Engine(tmp_path / "engine", "zfs-check", bin_dir=pulumi_bin)

    def program() -> None:
        ZfsSnapshot("snap", ZfsSnapshotArgs(dataset="rpool/data/m", snapshot="v/1"), ssh_target=target)

    with pytest.raises(CommandError) as raised:
        engine.up(program)
    details = str(raised.value)
    assert "property snapshot value {v/1} has a problem" in details and "'v/1'" in details
    assert "snap **failed**" in details  # refused at check: no create step ran ("**creating failed")
    assert "SshConnectError" not in details and "Connection refused" not in details  # nor any host call
    assert engine.resources() == {}
