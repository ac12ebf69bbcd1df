"""TemplateLayer: its pure parts (vmid allocation, volume → dataset, the linked-clone check, the diff) and
its CRUD against the fake PVE host."""

from __future__ import annotations

import pytest

from providers.channels.pct import exec_argv, script_argv
from providers.errors import PhoenixError
from providers.guests.common import (
    LinkedCloneError,
    check_linked,
    expected_origin,
    plan_lines,
    volume_dataset,
)
from providers.guests.template_layer import (
    BUILT_OUTPUTS,
    LayerBuildError,
    TemplateLayerInputs,
    TemplateLayerProvider,
    build_config,
    free_vmid,
    plan_steps,
)
from tests.support.fakes import ANY, Answer, FakePve, PveShell, ScriptedExecutor

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


# ------------------------------------------------------------------ CRUD against the fake PVE host

GPU = Answer(["pct", "exec", ANY, "--", "nvidia-smi"], stdout="GPU 0: NVIDIA H200\n")


def lab(*answers: Answer) -> tuple[FakePve, TemplateLayerProvider, PveShell]:
    """A host whose layer range 9000-9099 holds the parent template 9000 (and a VM on 9001)."""
    pve = FakePve(node="pve")
    pve.add_guest(9000, template=True, config={"hostname": "layer-base", "cores": 1, "memory": 512})
    pve.add_guest(9001, kind="qemu")
    provider = TemplateLayerProvider()
    shell = pve.serve(provider, pve.shell(ScriptedExecutor([GPU, *answers], strict=False)))
    return pve, provider, shell


def test_create_builds_on_the_lowest_free_vmid_as_a_verified_linked_clone_template() -> None:
    pve, provider, shell = lab()
    result = provider.create(provider.check({}, dict(PROPS)).inputs)

    assert result.id == "9002", "9000 is the parent, 9001 a VM: containers and VMs share the vmid space"
    layer = pve.guests[9002]
    assert layer.template and layer.status == "stopped"
    assert "dev0" not in layer.config, "a clone of the template must not inherit the build's GPUs"
    assert layer.config["cores"] == 4 and layer.config["hostname"] == "layer-gpu-abc123"
    (feature,) = [c for c in shell.calls if c.argv[-2:] == ["bash", "-s"]]
    assert feature.argv == script_argv(9002, {"PHOENIX_TARGET": "lxc"}) and feature.stdin == "echo hi"
    assert feature.timeout == 3600
    outs = result.outs
    assert outs["vmid"] == 9002 and outs["verified"] is True
    assert outs["dataset"] == "rpool/data/basevol-9002-disk-0"
    assert outs["origin"] == "rpool/data/basevol-9000-disk-0@__base__"
    assert outs["volume"] == layer.config["rootfs"] and outs["smoke_output"] == "GPU 0: NVIDIA H200\n"


def test_the_build_runs_exactly_the_plan_the_provider_gives_phoenix_plan() -> None:
    pve, provider, _shell = lab()
    props = provider.check({}, dict(PROPS)).inputs
    provider.create(props)
    planned = [
        (channel, line.split("  < ")[0])
        for channel, line in plan_lines(plan_steps(TemplateLayerInputs.from_props(props), 9002))
        if not line.startswith("(")
    ]
    assert pve.timeline == planned


def test_a_first_layer_is_a_new_container_from_the_os_template_with_no_origin() -> None:
    pve, provider, _shell = lab()
    props = {
        **PROPS,
        "parent_vmid": None,
        "os_template": "local:vztmpl/debian-12.tar.zst",
        "net0": "name=eth0",
    }
    result = provider.create(provider.check({}, props).inputs)
    (create,) = pve.requests("POST", "nodes/pve/lxc")
    assert create.params == {
        "vmid": 9002,
        "hostname": "layer-gpu-abc123",
        "ostemplate": "local:vztmpl/debian-12.tar.zst",
        "rootfs": "local-zfs:8",
        "unprivileged": 1,
        "net0": "name=eth0",
    }
    assert result.outs["origin"] == "-" and pve.guests[9002].template


def test_a_failing_feature_names_the_layer_and_removes_the_half_built_container() -> None:
    pve, provider, _shell = lab(Answer(["pct", "exec", ANY, "--", "env"], exit_status=3, stderr="apt: boom"))
    with pytest.raises(LayerBuildError, match=r"layer 'gpu' \(CT 9002\) failed at feature nvidia") as raised:
        provider.create(provider.check({}, dict(PROPS)).inputs)
    assert "apt: boom" in str(raised.value)
    assert raised.value.vmid == 9002 and 9002 not in pve.guests
    assert pve.mutations[-2:] == [
        ("POST", "nodes/pve/lxc/9002/status/stop"),
        ("DELETE", "nodes/pve/lxc/9002"),
    ]


def test_a_failed_task_is_named_by_its_step_and_a_failed_cleanup_is_a_note() -> None:
    pve, provider, _shell = lab()
    pve.fail("POST", "nodes/pve/lxc/9002/status/start", task_error="startup for container '9002' failed")
    pve.fail("DELETE", "nodes/pve/lxc/9002", task_error="can't lock file")
    with pytest.raises(LayerBuildError, match="failed at start") as raised:
        provider.create(provider.check({}, dict(PROPS)).inputs)
    assert raised.value.step == "start"
    (note,) = raised.value.__notes__
    assert "removing the failed build CT 9002 also failed" in note and "can't lock file" in note


def test_a_failed_clone_made_nothing_to_remove() -> None:
    pve, provider, _shell = lab()
    pve.fail("POST", "nodes/pve/lxc/9000/clone", task_error="clone failed: unexpected error")
    with pytest.raises(LayerBuildError, match="failed at linked clone"):
        provider.create(provider.check({}, dict(PROPS)).inputs)
    assert pve.mutations == [("POST", "nodes/pve/lxc/9000/clone")]


def test_a_full_copy_is_refused_loudly_and_removed() -> None:
    pve, provider, _shell = lab()
    pve.full_clones = True
    with pytest.raises(LayerBuildError, match="is a full copy") as raised:
        provider.create(provider.check({}, dict(PROPS)).inputs)
    assert isinstance(raised.value.__cause__, LinkedCloneError) and 9002 not in pve.guests


def test_update_changes_nothing_on_the_host_and_keeps_the_built_outputs() -> None:
    pve, provider, _shell = lab()
    outs = dict(provider.create(provider.check({}, dict(PROPS)).inputs).outs)
    pve.calls.clear()
    news = provider.check(outs, {**PROPS, "task_timeout_s": 900.0}).inputs
    after = provider.update("9002", outs, news).outs
    assert pve.calls == []
    assert after["task_timeout_s"] == 900
    assert {k: after[k] for k in BUILT_OUTPUTS} == {k: outs[k] for k in BUILT_OUTPUTS}


def test_read_finds_the_template_and_a_vmid_holding_something_else_is_gone() -> None:
    pve, provider, _shell = lab()
    outs = dict(provider.create(provider.check({}, dict(PROPS)).inputs).outs)
    assert provider.read("9002", outs).outs["volume"] == outs["volume"]
    pve.guests[9002].config["hostname"] = "someone-else"
    assert provider.read("9002", outs).id is None
    del pve.guests[9002]
    assert provider.read("9002", outs).id is None


def test_delete_destroys_the_template_and_a_template_gone_is_no_error() -> None:
    pve, provider, _shell = lab()
    outs = dict(provider.create(provider.check({}, dict(PROPS)).inputs).outs)
    pve.calls.clear()
    provider.delete("9002", outs)
    assert pve.mutations == [("DELETE", "nodes/pve/lxc/9002")] and 9002 not in pve.guests
    provider.delete("9002", outs)


def test_the_plan_can_name_vmids_that_are_only_allocated_at_build_time() -> None:
    inputs = TemplateLayerInputs.from_props({**PROPS, "parent_vmid": None})
    lines = plan_lines(plan_steps(inputs, "$vmid(gpu)", "$vmid(base)"))
    assert (
        "api",
        "POST /nodes/pve/lxc/$vmid(base)/clone newid=$vmid(gpu) hostname=layer-gpu-abc123 full=0",
    ) in lines
    assert ("api", "POST /nodes/pve/lxc/$vmid(gpu)/status/stop") in lines
    assert lines[-1] == ("ssh", "(must be rpool/data/basevol-$vmid(base)-disk-0@__base__)")
