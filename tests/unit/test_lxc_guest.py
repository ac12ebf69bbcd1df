"""LxcGuest: its pure parts (only changed keys are sent, the generated MAC is kept, raw lines, drift) and
its CRUD against the fake PVE host, every branch of ``update`` included."""

from __future__ import annotations

from typing import Any

import pytest

from providers.channels.command import display
from providers.errors import MissingDeviceNodeError, PveError, PvePermissionError
from providers.guests.common import LinkedCloneError, merge_raw_lines, plan_lines
from providers.guests.lxc_guest import (
    GuestError,
    LxcGuestInputs,
    LxcGuestProvider,
    changes,
    device_check,
    hwaddr,
    keep_mac,
    observed_params,
    param_changes,
    plan_steps,
    raw_lines_present,
    same_setting,
    update_steps,
)
from tests.support.fakes import FakePve, PveShell

NET = "name=eth0,bridge=vmbr0,ip=10.0.10.5/24,gw=10.0.10.1,firewall=1"
PROPS = {
    "node": "pve",
    "vmid": 201.0,
    "hostname": "vllm-a",
    "template_vmid": 9003.0,
    "params": {"cores": 8.0, "memory": 32768.0, "net0": NET, "dev0": "/dev/nvidia0,mode=0666"},
    "raw_lines": ["lxc.apparmor.profile: phoenix-lxc-gpu-docker"],
    "storage": "local-zfs",
    "pool": "rpool/data",
    "version": "1",
}


def test_inputs_come_back_as_ints() -> None:
    inputs = LxcGuestInputs.from_props(PROPS)
    assert (inputs.vmid, inputs.template_vmid, inputs.params["cores"]) == (201, 9003, 8)
    assert LxcGuestInputs.from_props(inputs.to_props()) == inputs


def test_generated_mac_is_kept_unless_the_config_fixes_one() -> None:
    assert hwaddr("name=eth0,hwaddr=bc:24:11:aa:bb:cc,ip=dhcp") == "BC:24:11:AA:BB:CC"
    assert keep_mac({"net0": NET}, "BC:24:11:AA:BB:CC")["net0"] == f"{NET},hwaddr=BC:24:11:AA:BB:CC"
    fixed = f"{NET},hwaddr=BC:24:11:00:00:01"
    assert keep_mac({"net0": fixed}, "BC:24:11:AA:BB:CC")["net0"] == fixed


def test_only_changed_keys_are_sent_and_removed_keys_deleted() -> None:
    old = {"cores": 8, "memory": 1024, "dev0": "/dev/nvidia0", "dev1": "/dev/nvidiactl"}
    new = {"cores": 8, "memory": 2048, "dev0": "/dev/nvidia0"}
    assert param_changes(old, new) == ({"memory": 2048}, ["dev1"])
    assert param_changes(new, new) == ({}, [])


def test_raw_lines_replace_their_key_in_the_main_section_only() -> None:
    conf = (
        "arch: amd64\nlxc.apparmor.profile: unconfined\ncores: 2\n"
        "\n[before-upgrade]\nlxc.apparmor.profile: x\n"
    )
    merged = merge_raw_lines(conf, ["lxc.apparmor.profile: phoenix-lxc-confined"])
    main, _, snapshot = merged.partition("\n[")
    assert main.splitlines().count("lxc.apparmor.profile: phoenix-lxc-confined") == 1
    assert "unconfined" not in main
    assert snapshot == "before-upgrade]\nlxc.apparmor.profile: x\n"
    assert raw_lines_present(merged, ["lxc.apparmor.profile: phoenix-lxc-confined"]) == [
        "lxc.apparmor.profile: phoenix-lxc-confined"
    ]
    assert merge_raw_lines(merged, ["lxc.apparmor.profile: phoenix-lxc-confined"]) == merged


def test_pve_normalisation_is_not_drift_but_a_changed_value_is() -> None:
    live_net = (
        "name=eth0,bridge=vmbr0,firewall=1,gw=10.0.10.1,hwaddr=BC:24:11:AA:BB:CC,ip=10.0.10.5/24,type=veth"
    )
    assert same_setting(live_net, NET)
    assert not same_setting(live_net.replace("vmbr0", "vmbr1"), NET)
    assert same_setting(8, 8) and not same_setting(4, 8)
    observed = observed_params(
        {"cores": 4, "net0": live_net, "memory": 32768}, {"cores": 8, "net0": NET, "memory": 32768}
    )
    assert observed == {"cores": 4, "net0": NET, "memory": 32768}


def test_a_new_layer_replaces_the_guest_deleting_first() -> None:
    provider = LxcGuestProvider()
    relayered = provider.diff("201", PROPS, {**PROPS, "template_vmid": 9007.0})
    assert (relayered.replaces, relayered.delete_before_replace) == (["template_vmid"], True)
    resized = provider.diff("201", PROPS, {**PROPS, "params": {**PROPS["params"], "cores": 4}})
    assert (resized.changes, resized.replaces, resized.delete_before_replace) == (True, [], False)
    assert provider.diff("201", PROPS, dict(PROPS)).changes is False


def test_check_refuses_hostname_inside_params() -> None:
    result = LxcGuestProvider().check({}, {**PROPS, "params": {"hostname": "x"}})
    assert [f.property for f in result.failures] == ["params"]


# ------------------------------------------------------------------ CRUD against the fake PVE host

LINE = "lxc.apparmor.profile: phoenix-lxc-gpu-docker"
BASE = "rpool/data/basevol-9003-disk-0@__base__"


def lab(token_id: str | None = None) -> tuple[FakePve, LxcGuestProvider, PveShell]:
    """A host with the layer template 9003, and a provider wired to it."""
    pve = FakePve(node="pve", token_id=token_id)
    pve.add_guest(9003, template=True, config={"hostname": "layer-vllm", "arch": "amd64", "cores": 2})
    provider = LxcGuestProvider()
    return pve, provider, pve.serve(provider)


def created(pve: FakePve, provider: LxcGuestProvider, **over: Any) -> dict[str, Any]:
    """The stored outputs of a guest created from PROPS (+ ``over``), the fake's log cleared after."""
    props = provider.check({}, {**PROPS, **over}).inputs
    outs = dict(provider.create(props).outs)
    pve.calls.clear()
    pve.timeline.clear()
    provider.ssh().calls.clear()  # type: ignore[attr-defined]  # the fake's shell
    return outs


def test_create_clones_configures_writes_raw_lines_before_the_first_start_and_verifies() -> None:
    pve, provider, _shell = lab()
    result = provider.create(provider.check({}, dict(PROPS)).inputs)

    assert result.id == "201"
    guest = pve.guests[201]
    assert guest.status == "running"
    assert guest.config["cores"] == 8 and isinstance(guest.config["cores"], int), "8, never 8.0"
    assert guest.raw_lines == [LINE]
    steps = [line for _channel, line in pve.timeline]
    write = next(n for n, line in enumerate(steps) if "phoenix-write" in line)
    start = steps.index("POST /nodes/pve/lxc/201/status/start")
    assert write < start, "the AppArmor line is in the config before the container first runs"
    outs = result.outs
    assert outs["mac"] == hwaddr(str(guest.config["net0"])) and outs["mac"]
    assert (outs["dataset"], outs["origin"]) == ("rpool/data/subvol-201-disk-0", BASE)
    assert outs["volume"] == guest.config["rootfs"]
    assert len(outs["instance"]) == 32


def test_the_create_runs_exactly_the_plan_the_provider_gives_phoenix_plan() -> None:
    pve, provider, _shell = lab()
    props = provider.check({}, dict(PROPS)).inputs
    provider.create(props)
    planned = [
        (channel, line.split("  < ")[0])
        for channel, line in plan_lines(plan_steps(LxcGuestInputs.from_props(props)))
        if not line.startswith("(")
    ]
    assert pve.timeline == planned


def test_a_full_copy_is_refused_and_the_half_made_container_removed() -> None:
    pve, provider, _shell = lab()
    pve.full_clones = True
    with pytest.raises(GuestError, match="is a full copy") as raised:
        provider.create(provider.check({}, dict(PROPS)).inputs)
    assert isinstance(raised.value.__cause__, LinkedCloneError)
    assert 201 not in pve.guests
    assert ("POST", "nodes/pve/lxc/201/status/start") not in pve.mutations


def test_a_cleanup_that_fails_too_is_a_note_on_the_original_error() -> None:
    pve, provider, _shell = lab()
    pve.fail("PUT", "nodes/pve/lxc/201/config", status=500, message="unable to parse net0")
    pve.fail("DELETE", "nodes/pve/lxc/201", task_error="can't lock file '/run/lock/lxc/pve-config-201.lock'")
    with pytest.raises(GuestError, match="unable to parse net0") as raised:
        provider.create(provider.check({}, dict(PROPS)).inputs)
    (note,) = raised.value.__notes__
    assert "removing the half-made CT 201 also failed" in note and "can't lock file" in note


def test_a_token_cannot_pass_devices_and_nothing_is_cloned() -> None:
    pve, provider, _shell = lab(token_id="root@pam!phoenix")
    with pytest.raises(PvePermissionError, match="device passthrough"):
        provider.create(provider.check({}, dict(PROPS)).inputs)
    assert pve.mutations == []


def update(provider: LxcGuestProvider, outs: dict[str, Any], **over: Any) -> dict[str, Any]:
    news = provider.check(outs, {**PROPS, **over}).inputs
    assert provider.diff("201", outs, news).replaces == []
    return dict(provider.update("201", outs, news).outs)


def test_update_a_live_key_sends_only_it_and_keeps_the_guest_running() -> None:
    pve, provider, _shell = lab()
    outs = created(pve, provider)
    after = update(provider, outs, params={**PROPS["params"], "memory": 65536.0})
    assert pve.mutations == [("PUT", "nodes/pve/lxc/201/config")]
    assert pve.calls[-1].params == {"memory": 65536}
    assert pve.guests[201].status == "running" and pve.guests[201].config["memory"] == 65536
    assert {k: after[k] for k in ("mac", "instance", "origin")} == {
        k: outs[k] for k in ("mac", "instance", "origin")
    }


def test_update_a_cold_key_stops_applies_and_starts_again() -> None:
    pve, provider, _shell = lab()
    outs = created(pve, provider)
    params = {**PROPS["params"], "dev1": "/dev/nvidiactl,mode=0666"}
    update(provider, outs, params=params)
    assert pve.mutations == [
        ("POST", "nodes/pve/lxc/201/status/shutdown"),
        ("PUT", "nodes/pve/lxc/201/config"),
        ("POST", "nodes/pve/lxc/201/status/start"),
    ]
    guest = pve.guests[201]
    assert guest.config["dev1"] == "/dev/nvidiactl,mode=0666" and guest.pending == {}
    assert guest.status == "running"


def test_update_a_removed_key_is_deleted() -> None:
    pve, provider, _shell = lab()
    outs = created(pve, provider)
    params = {k: v for k, v in PROPS["params"].items() if k != "memory"}
    update(provider, outs, params=params)
    assert [c.params for c in pve.requests("PUT")] == [{"delete": "memory"}]
    assert "memory" not in pve.guests[201].config


def test_update_raw_lines_rewrites_the_file_with_a_stop_and_start() -> None:
    pve, provider, shell = lab()
    outs = created(pve, provider)
    confined = "lxc.apparmor.profile: phoenix-lxc-confined"
    update(provider, outs, raw_lines=[confined])
    assert pve.guests[201].raw_lines == [confined]
    assert [line.split()[0] + " " + line.split()[-1] for ch, line in pve.timeline if ch == "api"] == [
        "GET /nodes/pve/lxc/201/status/current",
        "POST /nodes/pve/lxc/201/status/shutdown",
        "POST /nodes/pve/lxc/201/status/start",
    ]
    assert pve.guests[201].status == "running"
    writes = [c for c in shell.calls if "phoenix-write" in c.argv]
    assert len(writes) == 1 and confined in str(writes[0].stdin)


def test_update_removing_the_last_environment_line_removes_it_from_the_file() -> None:
    """``lxc.environment`` takes several lines; when a change leaves none, the old ones go too (a key the
    new raw lines no longer set is retired), so the file keeps nothing the config stopped declaring."""
    pve, provider, _shell = lab()
    confined = "lxc.apparmor.profile: phoenix-lxc-confined"
    env = [
        "lxc.environment: A=1",
        "lxc.environment: B=two words",
        "lxc.environment: PHOENIX_GUEST_ENVIRONMENT=A,B",
    ]
    outs = created(pve, provider, raw_lines=[confined, *env])
    assert pve.guests[201].raw_lines == [confined, *env]
    outs = update(
        provider, outs, raw_lines=[confined, env[0], "lxc.environment: PHOENIX_GUEST_ENVIRONMENT=A"]
    )
    assert pve.guests[201].raw_lines == [confined, env[0], "lxc.environment: PHOENIX_GUEST_ENVIRONMENT=A"]
    update(provider, outs, raw_lines=[confined])
    assert pve.guests[201].raw_lines == [confined]


def test_a_missing_device_node_is_a_typed_error_before_the_clone() -> None:
    """pve-container checks every devN at start; Phoenix asks first, so nothing is cloned for a guest that
    could not start, and the error names the guest, each missing node and what creates them."""
    pve, provider, _shell = lab()
    pve.missing_devices = {"/dev/nvidia0"}
    with pytest.raises(
        MissingDeviceNodeError,
        match=r"CT 201 \(vllm-a\): device nodes missing on the host: "
        r"/dev/nvidia0\. .*phoenix-nvidia-nodes\.service",
    ) as caught:
        provider.create(provider.check({}, dict(PROPS)).inputs)
    assert caught.value.missing == ["/dev/nvidia0"]
    assert pve.mutations == [] and 201 not in pve.guests


def test_a_restart_for_an_update_checks_the_nodes_before_the_shutdown() -> None:
    pve, provider, _shell = lab()
    outs = created(pve, provider)
    pve.missing_devices = {"/dev/nvidia0"}
    with pytest.raises(MissingDeviceNodeError):
        update(provider, outs, raw_lines=["lxc.apparmor.profile: phoenix-lxc-confined"])
    assert pve.mutations == [] and pve.guests[201].status == "running", "never stopped for a doomed start"
    # A live change starts nothing, so the nodes do not matter to it.
    update(provider, outs, params={**PROPS["params"], "memory": 4096.0})
    assert pve.mutations == [("PUT", "nodes/pve/lxc/201/config")]


def test_the_device_check_reads_the_devn_paths_under_the_host_root() -> None:
    inputs = LxcGuestInputs.from_props(
        {
            **PROPS,
            "params": {**PROPS["params"], "dev1": "path=/dev/nvidia-uvm,gid=44"},
            "dev_root": "/lab/dev",
        }
    )
    check = device_check(inputs)
    assert check is not None and check.paths == ["/dev/nvidia0", "/dev/nvidia-uvm"]
    assert check.argv()[-2:] == ["/lab/dev/nvidia0", "/lab/dev/nvidia-uvm"]
    no_gpus = {k: v for k, v in PROPS["params"].items() if k != "dev0"}
    assert device_check(LxcGuestInputs.from_props({**PROPS, "params": no_gpus})) is None


def test_update_a_bigger_disk_resizes_live_and_a_smaller_one_is_refused_before_anything() -> None:
    pve, provider, _shell = lab()
    outs = created(pve, provider, disk_gib=8.0)
    outs = update(provider, outs, disk_gib=16.0)
    assert pve.mutations == [("PUT", "nodes/pve/lxc/201/resize")]
    assert pve.calls[-1].params == {"disk": "rootfs", "size": "16G"}
    assert "size=16G" in pve.guests[201].config["rootfs"] and pve.guests[201].status == "running"
    pve.calls.clear()
    with pytest.raises(GuestError, match="disks only grow"):
        update(provider, outs, disk_gib=4.0, params={**PROPS["params"], "dev1": "/dev/nvidiactl"})
    assert pve.mutations == [], "refused before the stop, the config or the resize"


def test_update_takes_a_restore_point_first_and_prunes_to_the_retention() -> None:
    pve, provider, _shell = lab()
    outs = created(pve, provider, snapshot_before_update=True, snapshot_retention=2.0)
    guest = pve.guests[201]
    guest.snapshots = [
        {"name": "pre-update-20260101T000000", "snaptime": 10},
        {"name": "pre-update-20260102T000000", "snaptime": 20},
        {"name": "by-hand", "snaptime": 5},
    ]
    update(
        provider,
        outs,
        snapshot_before_update=True,
        snapshot_retention=2.0,
        params={**PROPS["params"], "memory": 1024.0},
    )
    methods = [(m, p.rsplit("/", 1)[-1] if "snapshot/" in p else p) for m, p in pve.mutations]
    assert methods == [
        ("POST", "nodes/pve/lxc/201/snapshot"),
        ("DELETE", "pre-update-20260101T000000"),
        ("PUT", "nodes/pve/lxc/201/config"),
    ], "the restore point comes before the change; only the oldest of the family beyond 2 goes"
    names = [s["name"] for s in guest.snapshots]
    assert "by-hand" in names and "pre-update-20260102T000000" in names and len(names) == 3


def test_update_without_a_change_takes_no_restore_point() -> None:
    pve, provider, _shell = lab()
    outs = created(pve, provider, snapshot_before_update=True)
    update(provider, outs, snapshot_before_update=True, task_timeout_s=900.0)
    assert pve.mutations == [] and pve.guests[201].snapshots == []


def test_update_of_net0_keeps_the_mac_pve_generated() -> None:
    pve, provider, _shell = lab()
    outs = created(pve, provider)
    mac = outs["mac"]
    net = NET.replace("10.0.10.5", "10.0.10.6")
    update(provider, outs, params={**PROPS["params"], "net0": net})
    (sent,) = pve.requests("PUT")
    assert sent.params == {"net0": f"{net},hwaddr={mac}"}
    assert hwaddr(str(pve.guests[201].config["net0"])) == mac


def test_update_of_the_hostname_is_sent_live() -> None:
    pve, provider, _shell = lab()
    outs = created(pve, provider)
    update(provider, outs, hostname="vllm-b")
    assert [c.params for c in pve.requests("PUT")] == [{"hostname": "vllm-b"}]
    assert pve.guests[201].config["hostname"] == "vllm-b" and pve.guests[201].status == "running"


def test_update_the_power_state_follows_start() -> None:
    pve, provider, _shell = lab()
    outs = created(pve, provider)
    outs = update(provider, outs, start=False)
    assert pve.mutations == [("POST", "nodes/pve/lxc/201/status/shutdown")]
    assert pve.guests[201].status == "stopped"
    pve.calls.clear()
    update(provider, outs, start=True, params={**PROPS["params"], "memory": 2048.0})
    assert pve.mutations == [("PUT", "nodes/pve/lxc/201/config"), ("POST", "nodes/pve/lxc/201/status/start")]
    assert pve.guests[201].status == "running"


def test_a_failed_update_starts_the_guest_it_stopped_again() -> None:
    pve, provider, _shell = lab()
    outs = created(pve, provider)
    pve.fail("PUT", "nodes/pve/lxc/201/config", status=500, message="unable to parse dev1")
    with pytest.raises(PveError, match="unable to parse dev1") as raised:
        update(provider, outs, params={**PROPS["params"], "dev1": "bad"})
    assert not getattr(raised.value, "__notes__", [])
    assert pve.mutations[-1] == ("POST", "nodes/pve/lxc/201/status/start")
    assert pve.guests[201].status == "running" and "dev1" not in pve.guests[201].config


def test_a_failed_restart_after_a_failed_update_is_a_note_on_the_update_error() -> None:
    pve, provider, _shell = lab()
    outs = created(pve, provider)
    pve.fail("PUT", "nodes/pve/lxc/201/config", status=500, message="unable to parse dev1")
    pve.fail("POST", "nodes/pve/lxc/201/status/start", task_error="startup for container '201' failed")
    with pytest.raises(PveError, match="unable to parse dev1") as raised:
        update(provider, outs, params={**PROPS["params"], "dev1": "bad"})
    (note,) = raised.value.__notes__
    assert "starting CT 201 again after the failed update also failed" in note
    assert "startup for container '201' failed" in note


def test_read_reports_drift_made_by_hand_and_a_missing_guest_as_gone() -> None:
    pve, provider, _shell = lab()
    outs = created(pve, provider)
    same = provider.read("201", outs)
    assert provider.diff("201", same.outs, provider.check(outs, dict(PROPS)).inputs).changes is False
    pve.guests[201].config["cores"] = 4
    pve.guests[201].raw_lines = []
    drift = provider.read("201", outs).outs
    assert drift["params"]["cores"] == 4 and drift["raw_lines"] == []
    assert provider.diff("201", drift, provider.check(outs, dict(PROPS)).inputs).changes is True
    del pve.guests[201]
    assert provider.read("201", outs).id is None


def test_a_guest_found_stopped_is_drift_and_the_next_update_starts_it_after_the_device_check() -> None:
    """After a host reboot that left a declared-running guest stopped, refresh says so, and up starts it;
    with its nodes gone, the typed error comes first and nothing is started."""
    pve, provider, _shell = lab()
    outs = created(pve, provider)
    pve.guests[201].status = "stopped"
    found = provider.read("201", outs).outs
    assert found["start"] is False
    news = provider.check(found, dict(PROPS)).inputs
    assert provider.diff("201", found, news).changes is True
    pve.missing_devices = {"/dev/nvidia0"}
    with pytest.raises(MissingDeviceNodeError):
        provider.update("201", found, news)
    assert pve.mutations == [] and pve.guests[201].status == "stopped"
    pve.missing_devices = set()
    provider.update("201", found, news)
    assert pve.mutations == [("POST", "nodes/pve/lxc/201/status/start")]
    assert pve.guests[201].status == "running"


def test_delete_stops_then_destroys_with_purge_and_a_guest_gone_is_no_error() -> None:
    pve, provider, _shell = lab()
    outs = created(pve, provider)
    provider.delete("201", outs)
    assert pve.mutations == [("POST", "nodes/pve/lxc/201/status/stop"), ("DELETE", "nodes/pve/lxc/201")]
    assert pve.requests("DELETE")[0].params == {"purge": 1}
    assert 201 not in pve.guests
    provider.delete("201", outs)  # already gone: nothing to do, no error


def test_update_steps_are_pure_data_from_the_inputs_and_what_was_read() -> None:
    old = LxcGuestInputs.from_props(PROPS)
    new = LxcGuestInputs.from_props({**PROPS, "params": {**PROPS["params"], "dev1": "/dev/nvidiactl"}})
    change = changes(old, new, "BC:24:11:AA:BB:CC")
    assert change.cold and change.sets == {"dev1": "/dev/nvidiactl"}
    assert update_steps(new, change, running=False) == update_steps(new, change, running=False)
    stopped = [s.label for s in update_steps(new, change, running=False)]
    running = [s.label for s in update_steps(new, change, running=True)]
    # The guest passes a GPU through: its nodes are checked before anything that ends in a start.
    assert stopped == ["check device nodes", "configure", "start"]
    assert running == ["check device nodes", "stop for update", "configure", "start"]


def test_the_plan_can_name_the_layer_template_by_a_placeholder() -> None:
    lines = plan_lines(plan_steps(LxcGuestInputs.from_props(PROPS), "$vmid(vllm)"))
    assert lines[0] == ("ssh", display(device_check(LxcGuestInputs.from_props(PROPS)).argv()))  # type: ignore[union-attr]
    assert lines[1] == ("api", "POST /nodes/pve/lxc/$vmid(vllm)/clone newid=201 hostname=vllm-a full=0")
    assert ("ssh", "(must be rpool/data/basevol-$vmid(vllm)-disk-0@__base__)") in lines
    assert lines[-1] == ("api", "POST /nodes/pve/lxc/201/status/start")
