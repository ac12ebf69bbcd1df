"""LxcGuest adoption (``adopt``): the pure diff of a live container against its declaration (which keys are
sent, when the raw lines are written, when a restart is needed) and create/delete against the fake PVE
host (tests/support/fakes.FakePve): no clone, no restart unless a declared change needs one, a wrong
identity refused with nothing changed, ``retain_on_delete`` keeping the guest."""

from __future__ import annotations

from typing import Any

import pytest

from providers.errors import UnreplaceableError
from providers.guests.common import plan_lines
from providers.guests.lxc_guest import (
    ADOPTED,
    AdoptionError,
    LxcGuestInputs,
    LxcGuestProvider,
    adopt_steps,
    adoption_changes,
    identity_problem,
    plan_steps,
    same_volume_mount,
)
from tests.support.fakes import FakePve

MAC = "BC:24:11:AA:00:05"
LIVE_NET = f"name=eth0,bridge=vmbr0,firewall=1,gw=10.0.10.1,hwaddr={MAC},ip=10.0.10.5/24,type=veth"
DECLARED_NET = f"name=eth0,bridge=vmbr0,ip=10.0.10.5/24,gw=10.0.10.1,hwaddr={MAC},firewall=1"
LIVE = {
    "hostname": "web",
    "cores": 2,
    "memory": 1024,
    "swap": 512,
    "net0": LIVE_NET,
    "onboot": 1,
    "features": "nesting=1",
    "mp0": "local-zfs:subvol-205-disk-1,mp=/data,size=8G",
    "rootfs": "local-zfs:subvol-205-disk-0,size=8G",
    "arch": "amd64",
    "ostype": "debian",
}
PROPS: dict[str, Any] = {
    "node": "pve",
    "vmid": 205,
    "hostname": "web",
    "template_vmid": None,
    "params": {
        "cores": 2,
        "memory": 1024,
        "swap": 512,
        "net0": DECLARED_NET,
        "onboot": 1,
        "features": "nesting=1",
        "mp0": "local-zfs:8,mp=/data,backup=0",
    },
    "raw_lines": ["lxc.apparmor.profile: lxc-container-default-cgns"],
    "storage": "local-zfs",
    "pool": "rpool/data",
    "disk_gib": 8,
    "adopt": True,
    "retain_on_delete": True,
}


def inputs(**over: Any) -> LxcGuestInputs:
    return LxcGuestInputs.from_props({**PROPS, **over})


def params(**over: Any) -> dict[str, Any]:
    return {**PROPS["params"], **over}


# ------------------------------------------------------------------ the pure diff


def test_a_matching_guest_needs_nothing_sent_and_no_restart() -> None:
    change = adoption_changes(inputs(), LIVE, "arch: amd64\n", running=True)
    assert (change.sets, change.raw_write, change.raw_cold, change.resize, change.cold) == (
        {},
        True,  # the default profile's line is written into the file ...
        False,  # ... but it names the profile the guest already runs under: no restart
        False,
        False,
    )
    assert [step.label for step in adopt_steps(inputs(), change)] == ["raw lines"]


def test_only_the_differing_keys_are_sent_and_a_live_key_keeps_it_running() -> None:
    change = adoption_changes(inputs(params=params(memory=4096, cores=4)), LIVE, "", running=True)
    assert change.sets == {"memory": 4096, "cores": 4}
    assert not change.cold
    steps = adopt_steps(inputs(params=params(memory=4096, cores=4)), change)
    assert [(s.label, getattr(s, "params", None)) for s in steps][0] == (
        "configure",
        {"memory": 4096, "cores": 4},
    )
    assert "start" not in [s.label for s in steps] and "stop for adoption" not in [s.label for s in steps]


def test_a_cold_key_or_another_profile_restarts_a_running_guest() -> None:
    cold = adoption_changes(inputs(params=params(features="nesting=1,keyctl=1")), LIVE, "", running=True)
    assert cold.sets == {"features": "nesting=1,keyctl=1"} and cold.cold
    labels = [s.label for s in adopt_steps(inputs(), cold)]
    assert labels[0] == "stop for adoption" and labels[-1] == "start"
    profile = adoption_changes(
        inputs(raw_lines=["lxc.apparmor.profile: phoenix-lxc-confined"]),
        LIVE,
        "lxc.apparmor.profile: lxc-container-default-cgns\n",
        running=True,
    )
    assert (profile.raw_write, profile.raw_cold, profile.cold) == (True, True, True)


def test_any_differing_line_of_a_key_with_several_restarts_the_guest() -> None:
    """``lxc.environment`` takes a line per variable; one of them differing (not only the last) is a
    change init reads at start, so the guest restarts; the same lines in any order are no change."""
    profile = "lxc.apparmor.profile: lxc-container-default-cgns"
    env = ["lxc.environment: A=1", "lxc.environment: B=2", "lxc.environment: PHOENIX_GUEST_ENVIRONMENT=A,B"]
    declared = inputs(raw_lines=[profile, *env])
    live = "\n".join([profile, "lxc.environment: A=0", *env[1:]]) + "\n"
    changed = adoption_changes(declared, LIVE, live, running=True)
    assert (changed.raw_write, changed.raw_cold) == (True, True)
    same = adoption_changes(declared, LIVE, "\n".join([profile, *env]) + "\n", running=True)
    assert (same.raw_write, same.raw_cold) == (False, False)


def test_a_stopped_guest_is_started_and_nothing_else_done() -> None:
    conf = "lxc.apparmor.profile: lxc-container-default-cgns\n"
    change = adoption_changes(inputs(), LIVE, conf, running=False)
    assert [s.label for s in adopt_steps(inputs(), change)] == ["start"]


def test_an_allocated_volume_is_the_declared_volume_mount_of_its_size() -> None:
    assert same_volume_mount(LIVE["mp0"], "local-zfs:8,mp=/data,backup=0")
    assert not same_volume_mount(LIVE["mp0"], "local-zfs:16,mp=/data,backup=0")  # another size
    assert not same_volume_mount(LIVE["mp0"], "local-zfs:8,mp=/srv,backup=0")  # another path
    assert not same_volume_mount(LIVE["mp0"], "tank:8,mp=/data,backup=0")  # another storage
    assert not same_volume_mount(LIVE["mp0"], "local-zfs:8,mp=/data,backup=1")
    assert not same_volume_mount("/srv/data,mp=/data", "/srv/data,mp=/data,ro=1")


def test_the_disk_grows_to_the_declared_size_and_never_shrinks() -> None:
    assert adoption_changes(inputs(disk_gib=16), LIVE, "", running=True).resize
    with pytest.raises(AdoptionError, match="its rootfs is 8G, the declaration says 4G"):
        adoption_changes(inputs(disk_gib=4), LIVE, "", running=True)


def test_identity_is_the_hostname_and_the_declared_mac() -> None:
    assert identity_problem(inputs(), LIVE) is None
    assert "hostname is 'web'" in str(identity_problem(inputs(hostname="db"), LIVE))
    other = params(net0=DECLARED_NET.replace(MAC, "BC:24:11:AA:00:06"))
    assert f"MAC of its net0 is {MAC}" in str(identity_problem(inputs(params=other), LIVE))
    no_mac = params(net0=DECLARED_NET.replace(f",hwaddr={MAC}", ""))
    assert identity_problem(inputs(params=no_mac), LIVE) is None  # no MAC declared: the hostname only


def test_old_state_without_the_new_inputs_reads_as_created_and_destroyed() -> None:
    old = {k: v for k, v in PROPS.items() if k not in ("adopt", "retain_on_delete")}
    read = LxcGuestInputs.from_props({**old, "template_vmid": 9003})
    assert (read.adopt, read.retain_on_delete) == (False, False)


def test_the_plan_of_an_adoption_reads_then_sends_only_what_differs() -> None:
    lines = plan_lines(plan_steps(inputs()))
    assert lines[:3] == [
        ("api", "GET /nodes/pve/lxc/205/config"),
        ("api", "GET /nodes/pve/lxc/205/status/current"),
        ("ssh", "cat /etc/pve/lxc/205.conf"),
    ]
    assert lines[3][1].startswith("PUT /nodes/pve/lxc/205/config  (only the keys that differ of: cores=2")
    assert not any("clone" in line for _c, line in lines)


# ------------------------------------------------------------------ create and delete on the fake host


def host(status: str = "running", **config: Any) -> tuple[FakePve, LxcGuestProvider]:
    """A host with CT 205 as a person made it (no layer), and a provider wired to it."""
    pve = FakePve(node="pve")
    pve.add_guest(205, status=status, config={**LIVE, **config})
    provider = LxcGuestProvider()
    pve.serve(provider)
    return pve, provider


def test_adoption_takes_the_guest_in_with_no_clone_and_no_restart() -> None:
    pve, provider = host()
    pve.guests[205].raw_lines = ["lxc.apparmor.profile: lxc-container-default-cgns"]
    result = provider.create(provider.check({}, dict(PROPS)).inputs)
    assert result.id == "205"
    assert pve.mutations == [], "a guest that matches its declaration is taken in untouched"
    outs = dict(result.outs or {})
    assert (outs["origin"], outs["mac"], outs["volume"]) == (ADOPTED, MAC, "local-zfs:subvol-205-disk-0")
    assert outs["dataset"] == "rpool/data/subvol-205-disk-0" and len(outs["instance"]) == 32


def test_a_declared_change_sends_only_that_key_in_one_put() -> None:
    pve, provider = host()
    pve.guests[205].raw_lines = ["lxc.apparmor.profile: lxc-container-default-cgns"]
    provider.create(provider.check({}, {**PROPS, "params": params(memory=2048)}).inputs)
    assert pve.mutations == [("PUT", "nodes/pve/lxc/205/config")]
    assert pve.calls[-1].params == {"memory": 2048}
    assert pve.guests[205].status == "running" and pve.guests[205].config["memory"] == 2048


def test_a_mismatched_identity_is_refused_and_nothing_changes() -> None:
    pve, provider = host(hostname="someone-else")
    with pytest.raises(AdoptionError, match="not adopted, nothing changed: its hostname is 'someone-else'"):
        provider.create(provider.check({}, {**PROPS, "params": params(memory=2048)}).inputs)
    assert pve.mutations == []


def test_adopting_a_vmid_that_is_not_there_is_refused() -> None:
    pve = FakePve(node="pve")
    provider = LxcGuestProvider()
    pve.serve(provider)
    with pytest.raises(AdoptionError, match="node pve has no CT 205"):
        provider.create(provider.check({}, dict(PROPS)).inputs)
    assert pve.mutations == []


def test_delete_follows_retain_on_delete() -> None:
    pve, provider = host()
    outs = dict(provider.create(provider.check({}, dict(PROPS)).inputs).outs or {})
    provider.delete("205", outs)
    assert 205 in pve.guests and pve.guests[205].status == "running", "retained: only forgotten"
    provider.delete("205", {**outs, "retain_on_delete": False})
    assert 205 not in pve.guests, "not retained: stopped and destroyed like a created guest"


def test_check_needs_a_template_unless_adopting() -> None:
    provider = LxcGuestProvider()
    assert provider.check({}, dict(PROPS)).failures == []
    refused = provider.check({}, {**PROPS, "adopt": False})
    assert [f.property for f in refused.failures] == ["template_vmid"]


def test_an_absent_template_reads_as_none_as_pulumi_leaves_a_none_input_out() -> None:
    props = {k: v for k, v in PROPS.items() if k != "template_vmid"}
    assert LxcGuestInputs.from_props(props).template_vmid is None


# ------------------------------------------------------------------ replacing a guest Phoenix keeps


def test_a_change_that_needs_a_new_container_is_refused_for_a_retained_guest() -> None:
    provider = LxcGuestProvider()
    olds = {**PROPS, "origin": ADOPTED}  # adopted, so retained by default
    with pytest.raises(
        UnreplaceableError,
        match=r"CT 205 \(web\): template_vmid changed, which needs a new container.*retain_on_delete",
    ):
        provider.diff("205", olds, {**PROPS, "template_vmid": 9003})
    created_but_kept = {**PROPS, "adopt": False, "template_vmid": 9001}
    with pytest.raises(UnreplaceableError, match="kept on destroy"):
        provider.diff("205", created_but_kept, {**created_but_kept, "storage": "tank"})


def test_flipping_retain_on_delete_in_the_same_up_as_the_replacement_is_still_refused() -> None:
    # The delete runs from the stored outputs, which still say retained: the old container would stay.
    provider = LxcGuestProvider()
    with pytest.raises(UnreplaceableError, match="first set retain_on_delete: false"):
        provider.diff(
            "205", dict(PROPS), {**PROPS, "adopt": False, "retain_on_delete": False, "template_vmid": 9003}
        )


def test_an_adopting_replacement_is_refused_even_when_the_old_guest_would_be_destroyed() -> None:
    provider = LxcGuestProvider()
    olds = {**PROPS, "retain_on_delete": False}
    with pytest.raises(UnreplaceableError, match="adopt is set"):
        provider.diff("205", olds, {**olds, "template_vmid": 9003})


def test_what_a_kept_guest_can_still_do_update_in_place_or_move_to_another_vmid() -> None:
    provider = LxcGuestProvider()
    updated = provider.diff("205", dict(PROPS), {**PROPS, "params": params(memory=2048)})
    assert (updated.changes, updated.replaces) == (True, [])
    moved = provider.diff("205", dict(PROPS), {**PROPS, "vmid": 206})
    assert moved.replaces == ["vmid"], "another vmid is another container: nothing collides"
    rebuilt = provider.diff(
        "205",
        {**PROPS, "retain_on_delete": False},
        {**PROPS, "adopt": False, "retain_on_delete": False, "template_vmid": 9003},
    )
    assert rebuilt.replaces == ["template_vmid"], "adoption given up and not retained: a normal replacement"
