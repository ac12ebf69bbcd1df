"""ZfsSnapshot: check, the diff table, and each CRUD method's exact commands over a scripted executor."""

from __future__ import annotations

from typing import Any

import pytest

from providers.zfs.common import DependentClonesError, ZfsError, get_argv, parse_get
from providers.zfs.snapshot import (
    PROVIDER_VERSION,
    SNAPSHOT_FACTS,
    ZfsSnapshot,
    ZfsSnapshotArgs,
    ZfsSnapshotProvider,
    clones_of,
    diff_snapshot,
)
from tests.support.capture import capture
from tests.support.fakes import Answer, ScriptedExecutor, on
from tests.unit.zfs_fakes import TARGET, fixture, missing, unknown

NAME = "rpool/data/models@v1"
READ = get_argv([NAME], SNAPSHOT_FACTS)
LIVE = fixture("get-snapshot.txt")
WANT = {"dataset": "rpool/data/models", "snapshot": "v1", "recursive": False, "version": PROVIDER_VERSION}
STORED = {**WANT, "name": NAME, "guid": "15048739279619356687", "creation": "1795655957"}


def provider(fake: ScriptedExecutor, monkeypatch: pytest.MonkeyPatch) -> ZfsSnapshotProvider:
    p: ZfsSnapshotProvider = on(ZfsSnapshotProvider(ssh_target=TARGET, busy_timeout=0.2), fake, monkeypatch)
    return p


def test_check_defaults_and_failures() -> None:
    checked = ZfsSnapshotProvider().check({}, {"dataset": "rpool/data/models", "snapshot": "v1"})
    assert (checked.inputs, checked.failures) == (WANT, [])
    bad = ZfsSnapshotProvider().check(
        {}, {"dataset": "rpool/data/m@x", "snapshot": "v 1", "recursive": "yes"}
    )
    assert [f.property for f in bad.failures] == ["dataset", "snapshot", "recursive"]
    at_preview = ZfsSnapshotProvider().check({}, {"dataset": unknown(), "snapshot": "__base__"})
    assert at_preview.failures == []


def news(**changes: Any) -> dict[str, Any]:
    return {**WANT, "__provider": "p", **changes}


@pytest.mark.parametrize(
    ("new", "changes", "replaces", "delete_first"),
    [
        (news(), False, [], False),
        (news(version="2"), True, [], False),
        (news(snapshot="v2"), True, ["snapshot"], False),
        (news(dataset="rpool/data/other"), True, ["dataset"], False),
        (news(recursive=True), True, ["recursive"], True),  # same name: the old one must go first
        (news(dataset=unknown()), True, ["dataset"], False),
    ],
    ids=["same", "version", "new-name", "new-dataset", "recursive-only", "unknown"],
)
def test_diff_table(new: dict[str, Any], changes: bool, replaces: list[str], delete_first: bool) -> None:
    result = diff_snapshot(STORED, new)
    assert (result.changes, result.replaces, result.delete_before_replace) == (
        changes,
        replaces,
        delete_first,
    )


def test_create_snapshots_then_reads_back(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ScriptedExecutor([Answer(["zfs", "snapshot", NAME]), Answer(READ, stdout=LIVE)])
    result = provider(fake, monkeypatch).create(dict(WANT))
    assert (result.id, result.outs) == (NAME, STORED)
    assert len(fake.calls) == 2


def test_create_recursive_uses_r(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ScriptedExecutor([Answer(["zfs", "snapshot", "-r", NAME]), Answer(READ, stdout=LIVE)])
    outs = provider(fake, monkeypatch).create({**WANT, "recursive": True}).outs or {}
    assert outs["recursive"] is True


def test_create_adopts_the_snapshot_of_an_earlier_try(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ScriptedExecutor(
        [Answer(["zfs", "snapshot"], 1, stderr=fixture("err-snapshot-exists.txt")), Answer(READ, stdout=LIVE)]
    )
    assert provider(fake, monkeypatch).create(dict(WANT)).outs == STORED


def test_create_of_a_missing_dataset_is_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ScriptedExecutor([Answer(["zfs", "snapshot"], 1, stderr=missing("rpool/data/models"))])
    with pytest.raises(ZfsError, match="snapshotting rpool/data/models@v1: dataset does not exist"):
        provider(fake, monkeypatch).create(dict(WANT))


def test_read_gone_and_present(monkeypatch: pytest.MonkeyPatch) -> None:
    gone = provider(ScriptedExecutor([Answer(READ, 1, stderr=missing(NAME))]), monkeypatch).read(NAME, STORED)
    assert (gone.id, gone.outs) == (None, {})
    retaken = LIVE.replace("15048739279619356687", "77")
    seen = provider(ScriptedExecutor([Answer(READ, stdout=retaken)]), monkeypatch).read(NAME, STORED)
    assert seen.outs == {**STORED, "guid": "77"}  # destroyed and retaken out of band: visible as drift


def test_update_only_records_the_version(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ScriptedExecutor()
    outs = (
        provider(fake, monkeypatch)
        .update(NAME, {**STORED, "__provider": "old"}, {**WANT, "version": "2"})
        .outs
    )
    assert outs == {**STORED, "version": "2"}
    assert fake.argvs == []


def test_delete_with_dependent_clones_names_them_from_zfs_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ScriptedExecutor(
        [
            Answer(["zfs", "get"], stdout=LIVE),
            Answer(["zfs", "destroy", NAME], 1, stderr=fixture("err-dependent-clones.txt")),
        ]
    )
    with pytest.raises(DependentClonesError) as raised:
        provider(fake, monkeypatch).delete(NAME, STORED)
    assert raised.value.clones == ("rpool/data/vllm-301-models",)
    assert (
        "destroying snapshot rpool/data/models@v1: snapshot has dependent clones: rpool/data/vllm-301-models"
        in str(raised.value)
    )
    assert len(fake.calls) == 2


def test_recursive_delete_finds_the_clones_zfs_does_not_name(monkeypatch: pytest.MonkeyPatch) -> None:
    origins = get_argv(["rpool"], ["origin"], recursive=True)
    fake = ScriptedExecutor(
        [
            Answer(["zfs", "get"], stdout=LIVE),
            Answer(["zfs", "destroy", "-r", NAME], 1, stderr=fixture("err-snapshot-is-cloned.txt")),
            Answer(origins, stdout=fixture("get-origins-recursive.txt")),
        ]
    )
    with pytest.raises(DependentClonesError) as raised:
        provider(fake, monkeypatch).delete(NAME, {**STORED, "recursive": True})
    assert raised.value.clones == ("rpool/data/vllm-301-models",)


def test_delete_of_a_snapshot_already_gone_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ScriptedExecutor([Answer(["zfs", "get"], 1, stderr=missing(NAME))])
    provider(fake, monkeypatch).delete(NAME, STORED)
    assert fake.done()


def test_clones_of_matches_descendants_only_when_recursive() -> None:
    facts = parse_get(
        "a/c1\torigin\ta/m@v1\t-\n"
        "a/c2\torigin\ta/m/child@v1\t-\n"
        "a/c3\torigin\ta/mm@v1\t-\n"
        "a/c4\torigin\ta/m@v2\t-\n"
        "a/m\torigin\t-\t-\n"
    )
    assert clones_of(facts, "a/m@v1", recursive=False) == ["a/c1"]
    assert clones_of(facts, "a/m@v1", recursive=True) == ["a/c1", "a/c2"]


def test_resource_token_and_name_output() -> None:
    reg = capture(
        lambda: ZfsSnapshot("s", ZfsSnapshotArgs(dataset="rpool/data/m", snapshot="v1"), ssh_target=TARGET)
    )
    assert reg["s"].type == "pulumi-python:dynamic/zfs:Snapshot"
    assert reg["s"].inputs["recursive"] is False
