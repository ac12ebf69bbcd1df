"""The shared diff rules every provider uses: identity replaces, the rest updates, unknowns are changes."""

from __future__ import annotations

import pytest
from pulumi.output import Unknown

from providers.base import as_int, changed, diff_inputs, require

OLD = {"pool": "rpool", "name": "data", "quota": 10, "version": "1", "__provider": "old-pickle"}


def test_no_change_is_no_change_even_with_floats_and_a_new_provider_pickle() -> None:
    news = {**OLD, "quota": 10.0, "__provider": "new-pickle"}
    result = diff_inputs(OLD, news, replace_on=["pool", "name"], update_on=["quota"])
    assert (result.changes, result.replaces) == (False, [])


def test_identity_change_replaces_and_property_change_updates() -> None:
    renamed = diff_inputs(OLD, {**OLD, "name": "other"}, replace_on=["pool", "name"], update_on=["quota"])
    assert (renamed.changes, renamed.replaces) == (True, ["name"])
    resized = diff_inputs(OLD, {**OLD, "quota": 20}, replace_on=["pool", "name"], update_on=["quota"])
    assert (resized.changes, resized.replaces) == (True, [])


def test_a_version_bump_is_an_update() -> None:
    result = diff_inputs(OLD, {**OLD, "version": "2"}, replace_on=["pool"], update_on=[])
    assert (result.changes, result.replaces) == (True, [])


def test_unknown_values_at_preview_count_as_changes() -> None:
    assert changed(OLD, {**OLD, "name": Unknown()}, ["name", "pool"]) == ["name"]


def test_delete_before_replace_only_when_replacing() -> None:
    kwargs = {"replace_on": ["name"], "update_on": ["quota"], "delete_before_replace": True}
    assert diff_inputs(OLD, {**OLD, "quota": 1}, **kwargs).delete_before_replace is False  # type: ignore[arg-type]
    assert diff_inputs(OLD, {**OLD, "name": "x"}, **kwargs).delete_before_replace is True  # type: ignore[arg-type]


def test_require_lets_unknowns_through_and_names_missing_keys() -> None:
    failures = require({"a": Unknown(), "b": None}, ["a", "b", "c"])
    assert [f.property for f in failures] == ["b", "c"]


def test_as_int() -> None:
    assert as_int(8.0) == 8
    with pytest.raises(ValueError):
        as_int(8.5)
    with pytest.raises(ValueError):
        as_int(True)


def test_many_dynamic_resources_do_not_grow_the_pickler() -> None:
    """pulumi's serialize_provider re-wraps pickle's _batch_setitems per resource and never restores it;
    DynamicResource puts it back, so a 500-guest program (≈1500 dynamic resources) can pickle at all."""
    import pickle

    import pulumi
    from pulumi.runtime import settings

    from providers.vllm_service import VllmService, VllmServiceArgs
    from tests.support.recording import install

    install("scale")
    before = pickle._Pickler._batch_setitems  # type: ignore[attr-defined]

    @pulumi.runtime.test
    def program() -> pulumi.Output[bool]:
        from providers.channels.targets import SshTarget

        target = SshTarget("h", 22, "root", "SHA256:" + "A" * 43)
        for i in range(1200):  # more than the ~980 that broke before the guard
            VllmService(
                f"svc-{i}",
                VllmServiceArgs(node="n", vmid=i, unit="", unit_path="/u", served_model_name="m", port=8000),
                ssh_target=target,
            )
        return pulumi.Output.from_input(True)

    program()
    assert pickle._Pickler._batch_setitems is before  # type: ignore[attr-defined]
    settings.ROOT.set(None)


def test_with_defaults_fills_only_what_is_missing() -> None:
    from dataclasses import dataclass, field

    from providers.base import with_defaults

    @dataclass
    class Inputs:
        name: str
        size: int = 8
        tags: list[str] = field(default_factory=list)

    assert with_defaults({"name": "a", "size": 16}, Inputs) == {"name": "a", "size": 16, "tags": []}


# --- the typed inputs base, declared outputs and the cleanup policy -----------------------------------

from dataclasses import dataclass, field  # noqa: E402

import pulumi  # noqa: E402

from providers.base import (  # noqa: E402
    DynamicResource,
    Inputs,
    attach_cleanup,
    cleanup_on_failure,
    convert,
    declared_outputs,
    stored,
)


@dataclass(frozen=True)
class _Sample(Inputs):
    name: str
    size: int = 8
    slot: int | None = None
    tags: list[str] = field(default_factory=list)
    digest: str = field(default="", metadata=convert(str.lower))
    version: str = "1"


def test_inputs_from_props_coerces_ints_fills_defaults_and_ignores_the_provider_and_outputs() -> None:
    props = {"name": "a", "size": 16.0, "slot": 2.0, "digest": "ABC", "__provider": "pickle", "guid": "9"}
    got = _Sample.from_props(props)
    assert got == _Sample(name="a", size=16, slot=2, digest="abc")
    assert isinstance(got.size, int) and isinstance(got.slot, int)
    assert _Sample.from_props({"name": "a", "size": None, "version": None}) == _Sample(name="a")


def test_inputs_round_trip_and_defaults() -> None:
    sample = _Sample(name="a", tags=["x"])
    assert _Sample.from_props(sample.to_props()) == sample
    assert sample.to_props() == {
        "name": "a",
        "size": 8,
        "slot": None,
        "tags": ["x"],
        "digest": "",
        "version": "1",
    }
    assert _Sample.defaults() == {"size": 8, "slot": None, "tags": [], "digest": "", "version": "1"}
    assert _Sample.from_props({"name": "a"}).tags is not _Sample.from_props({"name": "b"}).tags


def test_inputs_refuse_a_missing_required_field_and_a_fractional_int() -> None:
    with pytest.raises(ValueError, match="name is required"):
        _Sample.from_props({"size": 1})
    with pytest.raises(ValueError, match="expected an integer"):
        _Sample.from_props({"name": "a", "size": 1.5})


def test_stored_drops_only_the_provider() -> None:
    assert stored({"a": 1, "__provider": "p"}) == {"a": 1}


class _Base(DynamicResource, module="test", name="Base"):
    first: pulumi.Output[str]
    not_an_output: str


class _Child(_Base, module="test", name="Child"):
    second: pulumi.Output[int]


def test_outputs_are_the_output_annotations_of_the_class_and_its_bases() -> None:
    assert declared_outputs(_Child) == ("first", "second")
    assert declared_outputs(_Base) == ("first",)


def test_cleanup_failure_is_a_note_on_the_original_error() -> None:
    def failing_cleanup() -> None:
        raise OSError("rm failed")

    with (
        pytest.raises(RuntimeError, match="build failed") as caught,
        cleanup_on_failure(failing_cleanup, "removing CT 9001"),
    ):
        raise RuntimeError("build failed")
    assert caught.value.__notes__ == ["removing CT 9001 also failed: OSError: rm failed"]

    ran: list[str] = []
    error = ValueError("x")
    attach_cleanup(error, lambda: ran.append("ok"), "cleanup")
    assert ran == ["ok"] and not hasattr(error, "__notes__")


def test_cleanup_runs_only_on_failure() -> None:
    ran: list[str] = []
    with cleanup_on_failure(lambda: ran.append("cleanup"), "cleanup"):
        ran.append("body")
    assert ran == ["body"]
