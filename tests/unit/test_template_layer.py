"""TemplateLayer's pure parts: vmid allocation, volume → dataset, the linked-clone check, the diff."""

from __future__ import annotations

import pytest

from providers.channels.pct import exec_argv, script_argv
from providers.errors import PhoenixError
from providers.guests.template_layer import (
    LinkedCloneError,
    TemplateLayerInputs,
    TemplateLayerProvider,
    build_config,
    check_linked,
    expected_origin,
    free_vmid,
    volume_dataset,
)

PROPS = {
    "node": "pve",
    "layer": "gpu",
    "key": "abc123",
    "hostname": "layer-gpu-abc123",
    "vmid_start": 9000.0,
    "vmid_end": 9099.0,
    "storage": "local-zfs",
    "pool": "rpool/data",
    "features": [{"name": "nvidia", "script": "echo hi", "env": {"PHOENIX_TARGET": "lxc"}}],
    "smoke_test": ["nvidia-smi"],
    "cores": 4.0,
    "build_devices": ["/dev/nvidia0,mode=0666"],
    "parent_vmid": 9000.0,
    "version": "1",
}


def test_free_vmid_is_the_lowest_unused_in_range() -> None:
    assert free_vmid({9000, 9001, 9003}, 9000, 9005) == 9002
    with pytest.raises(PhoenixError, match="no free vmid in the layer range 9000-9001"):
        free_vmid({9000, 9001}, 9000, 9001)


@pytest.mark.parametrize(
    ("volid", "dataset"),
    [
        ("local-zfs:subvol-9000-disk-0,size=8G", "rpool/data/subvol-9000-disk-0"),
        ("local-zfs:basevol-9000-disk-0", "rpool/data/basevol-9000-disk-0"),
        ("local-zfs:basevol-9000-disk-0/basevol-9001-disk-0,size=8G", "rpool/data/basevol-9001-disk-0"),
    ],
)
def test_volume_dataset_follows_pve_naming(volid: str, dataset: str) -> None:
    assert volume_dataset(volid, "rpool/data") == dataset


def test_linked_clone_check_refuses_a_full_copy_and_a_wrong_parent() -> None:
    check_linked(
        "rpool/data/basevol-9001-disk-0", "rpool/data/basevol-9000-disk-0@__base__\n", 9000, "rpool/data"
    )
    check_linked("rpool/data/basevol-9000-disk-0", "-", None, "rpool/data")
    with pytest.raises(LinkedCloneError, match="is a full copy"):
        check_linked("rpool/data/basevol-9001-disk-0", "-", 9000, "rpool/data")
    with pytest.raises(LinkedCloneError, match="a clone of rpool/data/basevol-8999-disk-0@__base__"):
        check_linked(
            "rpool/data/basevol-9001-disk-0", "rpool/data/basevol-8999-disk-0@__base__", 9000, "rpool/data"
        )
    assert expected_origin("tank", 5) == "tank/basevol-5-disk-0@__base__"


def test_inputs_round_trip_with_wire_floats() -> None:
    inputs = TemplateLayerInputs.from_props(PROPS)
    assert (inputs.vmid_start, inputs.cores, inputs.parent_vmid) == (9000, 4, 9000)
    assert TemplateLayerInputs.from_props(inputs.to_props()) == inputs


def test_build_config_passes_build_devices_and_nesting() -> None:
    inputs = TemplateLayerInputs.from_props({**PROPS, "nesting": True})
    assert build_config(inputs) == {
        "cores": 4,
        "memory": 2048,
        "features": "nesting=1",
        "dev0": "/dev/nvidia0,mode=0666",
    }


def test_diff_key_or_parent_replaces_and_nothing_else_does() -> None:
    provider = TemplateLayerProvider()
    same = provider.diff("9001", {**PROPS, "vmid": 9001}, dict(PROPS))
    assert (same.changes, same.replaces) == (False, [])
    rekeyed = provider.diff("9001", PROPS, {**PROPS, "key": "def456"})
    assert rekeyed.replaces == ["key"]
    reparented = provider.diff("9001", PROPS, {**PROPS, "parent_vmid": 9005.0})
    assert reparented.replaces == ["parent_vmid"]
    timeout = provider.diff("9001", PROPS, {**PROPS, "task_timeout_s": 900.0})
    assert (timeout.changes, timeout.replaces) == (True, [])


def test_check_wants_exactly_one_origin() -> None:
    provider = TemplateLayerProvider()
    both = provider.check({}, {**PROPS, "os_template": "local:vztmpl/x.tar.zst"})
    assert [f.property for f in both.failures] == ["parent_vmid"]
    assert provider.check({}, dict(PROPS)).failures == []


def test_pct_argv_puts_the_environment_after_the_separator() -> None:
    assert script_argv(9001, {"B": "2", "A": "1"}) == [
        "pct",
        "exec",
        "9001",
        "--",
        "env",
        "A=1",
        "B=2",
        "bash",
        "-s",
    ]
    assert exec_argv(9001, ["true"]) == ["pct", "exec", "9001", "--", "true"]


def test_inputs_left_out_get_their_defaults_so_up_again_is_no_change() -> None:
    """State holds the full input set (check fills defaults); otherwise a default like task_timeout_s,
    present in the outputs but absent from the program's inputs, would show as an update every time."""
    provider = TemplateLayerProvider()
    checked = provider.check({}, dict(PROPS)).inputs
    assert checked["task_timeout_s"] == 600 and checked["feature_timeout_s"] == 3600
    outputs = {**TemplateLayerInputs.from_props(checked).to_props(), "vmid": 9001}
    again = provider.check(outputs, dict(PROPS)).inputs
    assert provider.diff("9001", outputs, again).changes is False
