"""ZfsClone: check, the diff table, and create/read over a scripted executor (update and delete are the
dataset provider's, tested there)."""

from __future__ import annotations

from typing import Any

import pytest

from providers.zfs.clone import (
    PROVIDER_VERSION,
    CloneOriginError,
    ZfsClone,
    ZfsCloneArgs,
    ZfsCloneProvider,
)
from providers.zfs.common import (
    DatasetExistsError,
    DatasetNotFoundError,
    ZfsError,
    clone_argv,
    filesystem_props,
    get_argv,
)
from providers.zfs.dataset import diff_filesystem
from tests.support.capture import capture
from tests.support.fakes import Answer, ScriptedExecutor, on
from tests.unit.zfs_fakes import TARGET, fixture, missing, unknown

NAME = "rpool/data/vllm-301-models"
ORIGIN = "rpool/data/models@v1"
PROPS = {"org.phoenix:role": "clone"}
READ = get_argv([NAME], filesystem_props(PROPS))
LIVE = fixture("get-clone.txt")
WANT = {"origin": ORIGIN, "name": NAME, "properties": PROPS, "version": PROVIDER_VERSION}
STORED = {**WANT, "mountpoint": f"/rpool/data/{NAME.rsplit('/', 1)[1]}", "guid": "4052038418837539724"}


def provider(fake: ScriptedExecutor, monkeypatch: pytest.MonkeyPatch) -> ZfsCloneProvider:
    p: ZfsCloneProvider = on(ZfsCloneProvider(ssh_target=TARGET), fake, monkeypatch)
    return p


def test_check_tolerates_an_origin_known_only_after_its_snapshot_is_made() -> None:
    checked = ZfsCloneProvider().check({}, {"origin": unknown(), "name": NAME})
    assert checked.failures == []
    assert checked.inputs["properties"] == {} and checked.inputs["version"] == PROVIDER_VERSION


@pytest.mark.parametrize(
    ("news", "field", "says"),
    [
        ({"origin": "rpool/data/models", "name": NAME}, "origin", "expected a snapshot"),
        ({"origin": "tank/models@v1", "name": NAME}, "name", "a clone lives in its origin's pool (tank)"),
        ({"origin": ORIGIN, "name": "rpool/data/x y"}, "name", "component 'x y'"),
        ({"name": NAME}, "origin", "origin is required"),
        ({"origin": ORIGIN, "name": NAME, "properties": {"origin": "x"}}, "properties", "read-only"),
    ],
)
def test_check_failures_name_the_field(news: dict[str, Any], field: str, says: str) -> None:
    failures = ZfsCloneProvider().check({}, news).failures
    assert [(f.property, says in f.reason) for f in failures] == [(field, True)]


def news(**changes: Any) -> dict[str, Any]:
    return {**WANT, "__provider": "p", **changes}


@pytest.mark.parametrize(
    ("new", "changes", "replaces", "delete_first"),
    [
        (news(), False, [], False),
        (news(properties={"org.phoenix:role": "x"}), True, [], False),
        (news(origin="rpool/data/models@v2"), True, ["origin"], True),  # same name: the old clone goes first
        (news(name="rpool/data/vllm-302-models"), True, ["name"], False),
        (
            news(origin="rpool/data/models@v2", name="rpool/data/vllm-302-models"),
            True,
            ["origin", "name"],
            False,
        ),
        (news(origin=unknown()), True, ["origin"], True),
    ],
    ids=["same", "property", "new-origin", "new-name", "both", "unknown-origin"],
)
def test_diff_table(new: dict[str, Any], changes: bool, replaces: list[str], delete_first: bool) -> None:
    result = diff_filesystem(STORED, new, identity=["origin", "name"], host="pve1")
    assert (result.changes, result.replaces, result.delete_before_replace) == (
        changes,
        replaces,
        delete_first,
    )


def test_create_clones_then_verifies_the_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ScriptedExecutor([Answer(clone_argv(ORIGIN, NAME, PROPS)), Answer(READ, stdout=LIVE)])
    result = provider(fake, monkeypatch).create(dict(WANT))
    assert fake.argvs == [["zfs", "clone", "-o", "org.phoenix:role=clone", ORIGIN, NAME], READ]
    assert (result.id, result.outs) == (NAME, STORED)


def test_a_clone_that_came_out_as_a_copy_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    copy = LIVE.replace(f"origin\t{ORIGIN}", "origin\t-")
    fake = ScriptedExecutor(
        [Answer(["zfs", "clone"]), Answer(READ, stdout=copy), Answer(["zfs", "destroy", NAME])]
    )
    with pytest.raises(CloneOriginError, match=f"cloning {ORIGIN} to {NAME}: ZFS reports origin - for"):
        provider(fake, monkeypatch).create(dict(WANT))
    assert fake.done()  # what it made is not left behind unrecorded


def test_a_copy_that_cannot_be_removed_keeps_the_origin_error_and_notes_the_leftover(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    copy = LIVE.replace(f"origin\t{ORIGIN}", "origin\t-")
    fake = ScriptedExecutor(
        [
            Answer(["zfs", "clone"]),
            Answer(READ, stdout=copy),
            Answer(["zfs", "destroy", NAME], 1, stderr="boom\n"),
        ]
    )
    with pytest.raises(CloneOriginError, match="ZFS reports origin - for") as caught:
        provider(fake, monkeypatch).create(dict(WANT))
    (note,) = caught.value.__notes__
    assert note.startswith(f"removing {NAME} (remove it by hand) also failed: ") and "boom" in note


def test_create_adopts_a_clone_of_the_same_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ScriptedExecutor(
        [Answer(["zfs", "clone"], 1, stderr=fixture("err-clone-exists.txt")), Answer(READ, stdout=LIVE)]
    )
    assert provider(fake, monkeypatch).create(dict(WANT)).outs == STORED


@pytest.mark.parametrize(
    ("origin_line", "says"),
    [
        (
            "origin\trpool/data/models@v0",
            "it is a clone of rpool/data/models@v0, not a clone of rpool/data/models@v1",
        ),
        ("origin\t-", "it is an independent filesystem (no origin), not a clone of rpool/data/models@v1"),
    ],
)
def test_create_never_adopts_another_origin(
    monkeypatch: pytest.MonkeyPatch, origin_line: str, says: str
) -> None:
    other = LIVE.replace(f"origin\t{ORIGIN}", origin_line)
    fake = ScriptedExecutor(
        [Answer(["zfs", "clone"], 1, stderr=fixture("err-clone-exists.txt")), Answer(READ, stdout=other)]
    )
    with pytest.raises(DatasetExistsError) as raised:
        provider(fake, monkeypatch).create(dict(WANT))
    assert f"not adopted: {says}" in str(raised.value)
    assert fake.done()


def test_a_missing_origin_snapshot_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ScriptedExecutor([Answer(["zfs", "clone"], 1, stderr=fixture("err-missing-origin.txt"))])
    with pytest.raises(DatasetNotFoundError) as raised:
        provider(fake, monkeypatch).create({**WANT, "origin": "rpool/data/models@v9"})
    assert raised.value.dataset == "rpool/data/models@v9"


def test_read_reports_the_live_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    promoted = LIVE.replace(f"origin\t{ORIGIN}", "origin\t-")  # after an out-of-band `zfs promote`
    result = provider(ScriptedExecutor([Answer(READ, stdout=promoted)]), monkeypatch).read(NAME, STORED)
    assert result.outs == {**STORED, "origin": ""}
    gone = provider(ScriptedExecutor([Answer(READ, 1, stderr=missing(NAME))]), monkeypatch).read(NAME, STORED)
    assert (gone.id, gone.outs) == (None, {})


def test_delete_says_clone(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ScriptedExecutor(
        [Answer(["zfs", "get"], stdout=LIVE), Answer(["zfs", "destroy", NAME], 1, stderr="boom\n")]
    )
    with pytest.raises(ZfsError, match=f"destroying clone {NAME}: zfs failed"):
        provider(fake, monkeypatch).delete(NAME, STORED)


def test_resource_token_and_inputs() -> None:
    args = ZfsCloneArgs(origin=ORIGIN, name=NAME, properties={"readonly": True})
    reg = capture(lambda: ZfsClone("c", args, ssh_target=TARGET))["c"]
    assert reg.type == "pulumi-python:dynamic/zfs:Clone"
    assert {k: v for k, v in reg.inputs.items() if k != "__provider"} == {
        "origin": ORIGIN,
        "name": NAME,
        "properties": {"readonly": True},
        "version": PROVIDER_VERSION,
    }
