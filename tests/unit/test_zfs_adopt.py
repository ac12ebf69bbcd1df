"""ZfsDataset adoption (``adopt``) and ``retain_on_delete``: an existing filesystem is read and taken in,
never created; another kind of dataset, or none, is refused before anything is set; delete of a retained
dataset sends nothing. The exact commands over a scripted executor (tests/support/fakes.ScriptedExecutor:
strict, every command scripted)."""

from __future__ import annotations

import pytest

from providers.errors import UnreplaceableError
from providers.zfs.common import apply_argv, filesystem_props, get_argv
from providers.zfs.dataset import (
    PROVIDER_VERSION,
    DatasetAdoptionError,
    ZfsDatasetProvider,
    create_steps,
    diff_filesystem,
    plan_inputs,
)
from tests.support.fakes import Answer, ScriptedExecutor, on
from tests.unit.zfs_fakes import TARGET, fixture, missing

NAME = "rpool/data/models"
PROPS = {"quota": "268435456", "org.phoenix:role": "model weights", "recordsize": "16384"}
READ = get_argv([NAME], filesystem_props(PROPS))
LIVE = fixture("get-dataset.txt")  # the lab's answer to READ
WANT = {
    "name": NAME,
    "properties": PROPS,
    "version": PROVIDER_VERSION,
    "adopt": True,
    "retain_on_delete": True,
}
STORED = {**WANT, "mountpoint": "/rpool/data/models", "guid": "18396935636183793178"}


def provider(fake: ScriptedExecutor, monkeypatch: pytest.MonkeyPatch) -> ZfsDatasetProvider:
    p: ZfsDatasetProvider = on(ZfsDatasetProvider(ssh_target=TARGET, busy_timeout=0.2), fake, monkeypatch)
    return p


def test_an_adopted_dataset_is_read_and_never_created(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ScriptedExecutor([Answer(READ, stdout=LIVE)])
    result = provider(fake, monkeypatch).create(dict(WANT))
    assert fake.argvs == [READ], "one read; no zfs create, no zfs set (it already matches)"
    assert result.outs == STORED


def test_adoption_sets_only_the_properties_that_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    stale = LIVE.replace("quota\t268435456\tlocal", "quota\t0\tdefault")
    apply = apply_argv(NAME, [("set", "quota=268435456")], filesystem_props(PROPS))
    fake = ScriptedExecutor([Answer(READ, stdout=stale), Answer(apply, stdout=LIVE)])
    assert provider(fake, monkeypatch).create(dict(WANT)).outs == STORED
    assert fake.argvs == [READ, apply]


def test_adopting_a_missing_dataset_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ScriptedExecutor([Answer(READ, 1, stderr=missing(NAME))])
    with pytest.raises(DatasetAdoptionError, match="adopting rpool/data/models: it does not exist"):
        provider(fake, monkeypatch).create(dict(WANT))
    assert fake.argvs == [READ]


def test_adopting_a_clone_is_refused_with_nothing_set(monkeypatch: pytest.MonkeyPatch) -> None:
    as_clone = LIVE.replace("origin\t-\t-", "origin\trpool/data/base@v1\t-")
    fake = ScriptedExecutor([Answer(READ, stdout=as_clone)])
    with pytest.raises(DatasetAdoptionError, match="it is a clone of rpool/data/base@v1"):
        provider(fake, monkeypatch).create(dict(WANT))
    assert fake.argvs == [READ]


def test_a_retained_dataset_is_only_forgotten_and_another_destroyed(monkeypatch: pytest.MonkeyPatch) -> None:
    kept = ScriptedExecutor([])
    provider(kept, monkeypatch).delete(NAME, STORED)
    assert kept.argvs == []
    guid_read = get_argv([NAME], ["guid"])
    gone = ScriptedExecutor([Answer(guid_read, stdout=LIVE), Answer(["zfs", "destroy", NAME])])
    provider(gone, monkeypatch).delete(NAME, {**STORED, "retain_on_delete": False})
    assert gone.argvs == [guid_read, ["zfs", "destroy", NAME]]


def test_state_from_before_the_inputs_sees_no_change_and_a_flip_is_an_update() -> None:
    old = {"name": NAME, "properties": PROPS, "version": PROVIDER_VERSION}
    assert (
        diff_filesystem(
            old, {**old, "retain_on_delete": False, "adopt": False}, identity=["name"], host="pve1"
        ).changes
        is False
    )
    flipped = diff_filesystem(old, {**old, "retain_on_delete": True}, identity=["name"], host="pve1")
    assert (flipped.changes, flipped.replaces) == (True, [])


def test_the_plan_of_an_adoption_is_the_read() -> None:
    steps = create_steps(plan_inputs({"name": NAME, "properties": PROPS, "adopt": True}))
    assert [step.argv for step in steps] == [READ]


def test_a_create_only_change_of_a_kept_dataset_is_refused_and_a_rename_is_not() -> None:
    kept = {
        "name": NAME,
        "properties": PROPS,
        "version": PROVIDER_VERSION,
        "adopt": True,
        "retain_on_delete": True,
    }
    recased = {**kept, "properties": {**PROPS, "casesensitivity": "insensitive"}}
    with pytest.raises(UnreplaceableError, match=f"dataset {NAME}: properties changed.*retain_on_delete"):
        diff_filesystem(kept, recased, identity=["name"], host="pve1")
    destroyed_then_adopted = {**kept, "retain_on_delete": False}
    with pytest.raises(UnreplaceableError, match="adopt is set"):
        diff_filesystem(
            destroyed_then_adopted, {**recased, "retain_on_delete": False}, identity=["name"], host="pve1"
        )
    renamed = diff_filesystem(kept, {**kept, "name": f"{NAME}-2"}, identity=["name"], host="pve1")
    assert (renamed.replaces, renamed.delete_before_replace) == (["name"], False), (
        "another name: no collision"
    )
    given_up = {**kept, "adopt": False, "retain_on_delete": False}
    rebuilt = diff_filesystem(
        given_up, {**recased, "adopt": False, "retain_on_delete": False}, identity=["name"], host="pve1"
    )
    assert rebuilt.replaces == ["properties"]
