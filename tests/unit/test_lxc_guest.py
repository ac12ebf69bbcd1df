"""LxcGuest's pure parts: only changed keys are sent, the generated MAC is kept, raw lines, drift."""

from __future__ import annotations

from providers.guests.lxc_guest import (
    LxcGuestInputs,
    LxcGuestProvider,
    hwaddr,
    keep_mac,
    merge_raw_lines,
    observed_params,
    param_changes,
    raw_lines_present,
    same_setting,
)

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
