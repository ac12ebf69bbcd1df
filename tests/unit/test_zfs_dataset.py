"""ZfsDataset: check, the diff table, and each CRUD method's exact commands over a scripted executor."""

from __future__ import annotations

import base64
from typing import Any

import dill
import pytest

from providers.zfs.common import (
    DatasetExistsError,
    DatasetHasChildrenError,
    DatasetReplacedError,
    ParentMissingError,
    apply_argv,
    create_argv,
    filesystem_props,
    get_argv,
)
from providers.zfs.dataset import (
    PROVIDER_VERSION,
    ZfsDataset,
    ZfsDatasetArgs,
    ZfsDatasetProvider,
    diff_filesystem,
)
from tests.support.capture import capture
from tests.support.fakes import Answer, ScriptedExecutor, on
from tests.unit.zfs_fakes import TARGET, fixture, get_rows, missing, unknown

NAME = "rpool/data/models"
PROPS = {"quota": "268435456", "org.phoenix:role": "model weights", "recordsize": "16384"}
READ = get_argv([NAME], filesystem_props(PROPS))
LIVE = fixture("get-dataset.txt")  # the lab's answer to READ (plus a few more properties)
WANT = {"name": NAME, "properties": PROPS, "version": PROVIDER_VERSION}
STORED = {
    **WANT,
    "mountpoint": "/rpool/data/models",
    "guid": "18396935636183793178",
}


def provider(fake: ScriptedExecutor, monkeypatch: pytest.MonkeyPatch) -> ZfsDatasetProvider:
    p: ZfsDatasetProvider = on(ZfsDatasetProvider(ssh_target=TARGET, busy_timeout=0.2), fake, monkeypatch)
    return p


# --- check -----------------------------------------------------------------------------------------------


def test_check_fills_defaults_and_stores_the_canonical_form() -> None:
    checked = ZfsDatasetProvider().check({}, {"name": NAME, "properties": {"quota": "256M", "atime": False}})
    assert checked.failures == []
    assert checked.inputs == {
        "name": NAME,
        "properties": {"quota": "268435456", "atime": "off"},
        "version": PROVIDER_VERSION,
    }
    assert ZfsDatasetProvider().check({}, {"name": NAME}).inputs["properties"] == {}


def test_check_names_each_bad_field() -> None:
    checked = ZfsDatasetProvider().check(
        {}, {"name": "rpool", "properties": {"type": "volume", "quota": "x"}}
    )
    assert [(f.property, f.reason) for f in checked.failures] == [
        ("name", "'rpool': a pool is not a dataset; name one below it, e.g. rpool/data"),
        ("properties", "'type' is read-only: ZFS computes it"),
        ("properties", "quota: 'x' is not a size (e.g. 512K, 16G or bytes)"),
    ]
    assert [f.property for f in ZfsDatasetProvider().check({}, {}).failures] == ["name"]


def test_check_lets_unknowns_through_at_preview() -> None:
    later = unknown()
    checked = ZfsDatasetProvider().check({}, {"name": later, "properties": {"quota": later, "atime": "off"}})
    assert checked.failures == []
    assert checked.inputs["name"] is later
    assert checked.inputs["properties"]["quota"] is later


# --- diff ------------------------------------------------------------------------------------------------


def news(**changes: Any) -> dict[str, Any]:
    return {**WANT, "__provider": "new-pickle", **changes}


@pytest.mark.parametrize(
    ("new", "changes", "replaces", "delete_first"),
    [
        (news(), False, [], False),
        (news(__provider="moved-module"), False, [], False),
        (news(properties={**PROPS, "quota": "536870912"}), True, [], False),
        (news(properties={"quota": "268435456"}), True, [], False),  # dropped properties: inherit
        (news(properties={**PROPS, "atime": "off"}), True, [], False),
        (news(version="2"), True, [], False),
        (news(properties={**PROPS, "quota": unknown()}), True, [], False),
        (news(name="rpool/data/models2"), True, ["name"], False),  # a new name coexists: create first
        (news(properties={**PROPS, "utf8only": "on"}), True, ["properties"], True),  # same name: delete first
        (news(name=unknown()), True, ["name"], False),
    ],
    ids=[
        "same",
        "provider-pickle-ignored",
        "property-changed",
        "property-dropped",
        "property-added",
        "version",
        "unknown-value",
        "rename",
        "create-only",
        "unknown-name",
    ],
)
def test_diff_table(new: dict[str, Any], changes: bool, replaces: list[str], delete_first: bool) -> None:
    result = diff_filesystem(STORED, new, identity=["name"], host="pve1")
    assert (result.changes, result.replaces, result.delete_before_replace) == (
        changes,
        replaces,
        delete_first,
    )


# --- create ----------------------------------------------------------------------------------------------


def test_create_is_two_sessions_and_reports_live_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ScriptedExecutor([Answer(create_argv(NAME, PROPS)), Answer(READ, stdout=LIVE)])
    result = provider(fake, monkeypatch).create(dict(WANT))
    assert fake.argvs == [create_argv(NAME, PROPS), READ]
    assert result.id == NAME
    assert result.outs == STORED


def test_create_adopts_an_existing_independent_filesystem_and_sets_what_differs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stale = LIVE.replace("quota\t268435456\tlocal", "quota\t0\tdefault")
    steps = [("set", "quota=268435456")]
    fake = ScriptedExecutor(
        [
            Answer(["zfs", "create"], 1, stderr=fixture("err-exists.txt")),
            Answer(READ, stdout=stale),
            Answer(apply_argv(NAME, steps, filesystem_props(PROPS)), stdout=LIVE),
        ]
    )
    assert provider(fake, monkeypatch).create(dict(WANT)).outs == STORED
    assert fake.done()


def test_create_adopts_without_a_write_when_already_converged(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ScriptedExecutor(
        [Answer(["zfs", "create"], 1, stderr=fixture("err-exists.txt")), Answer(READ, stdout=LIVE)]
    )
    assert provider(fake, monkeypatch).create(dict(WANT)).outs == STORED
    assert len(fake.calls) == 2


def test_create_never_adopts_a_clone(monkeypatch: pytest.MonkeyPatch) -> None:
    as_clone = LIVE.replace("origin\t-\t-", "origin\trpool/data/base@v1\t-")
    fake = ScriptedExecutor(
        [Answer(["zfs", "create"], 1, stderr=fixture("err-exists.txt")), Answer(READ, stdout=as_clone)]
    )
    with pytest.raises(DatasetExistsError) as raised:
        provider(fake, monkeypatch).create(dict(WANT))
    assert "not adopted: it is a clone of rpool/data/base@v1, not an independent filesystem" in str(
        raised.value
    )
    assert fake.done()  # nothing was set on it


def test_create_never_adopts_different_create_only_properties(monkeypatch: pytest.MonkeyPatch) -> None:
    want = {**WANT, "properties": {"utf8only": "on"}}
    read = get_argv([NAME], filesystem_props(["utf8only"]))
    live = get_rows(NAME, {"type": ("filesystem", "-"), "origin": ("-", "-"), "utf8only": ("off", "-")})
    fake = ScriptedExecutor(
        [Answer(["zfs", "create"], 1, stderr=fixture("err-exists.txt")), Answer(read, stdout=live)]
    )
    with pytest.raises(DatasetExistsError, match="create-only properties differ: utf8only"):
        provider(fake, monkeypatch).create(want)


def test_create_under_a_missing_parent_is_a_typed_error_without_a_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = ScriptedExecutor([Answer(["zfs", "create"], 1, stderr=fixture("err-parent-missing.txt"))])
    with pytest.raises(
        ParentMissingError, match="creating dataset rpool/data/models: parent dataset does not"
    ):
        provider(fake, monkeypatch).create(dict(WANT))
    assert len(fake.calls) == 1


# --- read, update, delete --------------------------------------------------------------------------------


def test_read_of_a_destroyed_dataset_says_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ScriptedExecutor([Answer(READ, 1, stderr=missing(NAME))])
    result = provider(fake, monkeypatch).read(NAME, {**STORED, "__provider": "x"})
    assert (result.id, result.outs) == (None, {})


def test_read_reports_live_values(monkeypatch: pytest.MonkeyPatch) -> None:
    drifted = LIVE.replace("quota\t268435456", "quota\t1073741824").replace("model weights", "other")
    fake = ScriptedExecutor([Answer(READ, stdout=drifted)])
    result = provider(fake, monkeypatch).read(NAME, {**STORED, "__provider": "x"})
    assert result.id == NAME
    assert result.outs == {
        **STORED,
        "properties": {**PROPS, "quota": "1073741824", "org.phoenix:role": "other"},
    }


def test_update_sets_and_unsets_in_one_session_and_returns_every_output(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    want = {"quota": "536870912", "recordsize": "16384"}
    steps = [("set", "quota=536870912"), ("inherit", "org.phoenix:role")]
    after = get_rows(
        NAME,
        {
            "type": ("filesystem", "-"),
            "origin": ("-", "-"),
            "guid": ("18396935636183793178", "-"),
            "mountpoint": ("/rpool/data/models", "inherited from rpool"),
            "quota": ("536870912", "local"),
            "recordsize": ("16384", "local"),
        },
    )
    fake = ScriptedExecutor([Answer(apply_argv(NAME, steps, filesystem_props(want)), stdout=after)])
    result = provider(fake, monkeypatch).update(NAME, STORED, {**WANT, "properties": want})
    assert result.outs == {**STORED, "properties": want}
    assert fake.done()


def test_delete_checks_the_guid_then_destroys(monkeypatch: pytest.MonkeyPatch) -> None:
    guid_read = get_argv([NAME], ["guid"])
    fake = ScriptedExecutor([Answer(guid_read, stdout=LIVE), Answer(["zfs", "destroy", NAME])])
    provider(fake, monkeypatch).delete(NAME, STORED)
    assert fake.argvs == [guid_read, ["zfs", "destroy", NAME]]


def test_delete_of_a_dataset_already_gone_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ScriptedExecutor([Answer(["zfs", "get"], 1, stderr=missing(NAME))])
    provider(fake, monkeypatch).delete(NAME, STORED)
    assert len(fake.calls) == 1
    # without a stored guid (state from before a read), "does not exist" from destroy is success too
    fake = ScriptedExecutor([Answer(["zfs", "destroy", NAME], 1, stderr=missing(NAME))])
    provider(fake, monkeypatch).delete(NAME, {**STORED, "guid": ""})


def test_delete_refuses_another_dataset_under_the_name(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ScriptedExecutor([Answer(["zfs", "get"], stdout=LIVE.replace("18396935636183793178", "42"))])
    with pytest.raises(DatasetReplacedError, match="guid 42, stored 18396935636183793178"):
        provider(fake, monkeypatch).delete(NAME, STORED)
    assert fake.done()  # no destroy was sent


def test_delete_never_takes_unmanaged_children_along(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ScriptedExecutor(
        [
            Answer(["zfs", "get"], stdout=LIVE),
            Answer(["zfs", "destroy", NAME], 1, stderr=fixture("err-has-children.txt")),
        ]
    )
    with pytest.raises(
        DatasetHasChildrenError, match=r"children \(rpool/data/models/child, rpool/data/models@v1\)"
    ):
        provider(fake, monkeypatch).delete(NAME, STORED)


# --- the resource ----------------------------------------------------------------------------------------


def test_resource_token_inputs_and_a_by_reference_provider_holding_plain_data() -> None:
    args = ZfsDatasetArgs(name=NAME, properties={"quota": "256M"})
    reg = capture(lambda: ZfsDataset("models", args, ssh_target=TARGET))["models"]
    assert reg.type == "pulumi-python:dynamic/zfs:Dataset"
    assert {k: v for k, v in reg.inputs.items() if k != "__provider"} == {
        "name": NAME,
        "properties": {"quota": "256M"},
        "adopt": False,
        "retain_on_delete": False,
        "version": PROVIDER_VERSION,
    }
    pickled = base64.b64decode(reg.provider)
    assert b"providers.zfs.dataset" in pickled and b"ZfsDatasetProvider" in pickled
    assert b"def create" not in pickled  # by reference: no code in state
    restored = dill.loads(pickled)
    assert (restored.ssh_target, restored.busy_timeout, restored._credentials) == (TARGET, 10.0, None)
