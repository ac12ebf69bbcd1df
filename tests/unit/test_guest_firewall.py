"""GuestFirewall: the API calls it sends, that they leave PVE's rule list as declared, and its CRUD
against the fake PVE host."""

from __future__ import annotations

from typing import Any

import pytest

from providers.guests.firewall import (
    ApiCall,
    GuestFirewallInputs,
    GuestFirewallProvider,
    apply_steps,
    normalise_rule,
    observed,
    plan_steps,
    rule_calls,
)
from tests.support.fakes import FakePve

WEB = {"type": "in", "action": "ACCEPT", "proto": "tcp", "dport": "80,443"}
SSH = {"type": "in", "action": "ACCEPT", "proto": "tcp", "dport": "22", "source": "10.0.0.0/24"}
VLLM = {"type": "in", "action": "ACCEPT", "proto": "tcp", "dport": "8000:8010", "comment": "vLLM"}


def inputs(*rules: dict[str, str], **over: Any) -> GuestFirewallInputs:
    return GuestFirewallInputs.from_props({"node": "pve1", "vmid": 201.0, "rules": list(rules), **over})


def play(calls: list[ApiCall], rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """PVE's rule API as pve-firewall has it: a POST inserts at position 0, a DELETE removes one."""
    rules = [dict(r) for r in rules]
    for call in calls:
        if call.method == "POST" and call.path.endswith("/rules"):
            rules.insert(0, dict(call.params))
        elif call.method == "DELETE":
            del rules[int(call.path.rsplit("/", 1)[1])]
    return rules


@pytest.mark.parametrize(
    "current",
    [[], [SSH], [VLLM, WEB, SSH], [{**WEB, "enable": 0}]],
    ids=["none", "one-other", "three-reordered", "same-but-disabled"],
)
def test_applying_the_steps_leaves_exactly_the_declared_rules_in_order(current: list[dict[str, Any]]) -> None:
    declared = inputs(WEB, SSH, VLLM)
    after = play(apply_steps(declared, current), current)
    assert [normalise_rule(r) for r in after] == [WEB, SSH, VLLM]
    assert all(r["enable"] == 1 for r in after)


def test_matching_rules_are_left_alone_and_only_the_options_are_set() -> None:
    declared = inputs(WEB, SSH)
    current = [{**WEB, "enable": 1, "pos": 0, "digest": "x"}, {**SSH, "enable": 1, "pos": 1, "ipversion": 4}]
    assert apply_steps(declared, current) == [
        ApiCall(
            "PUT",
            "nodes/pve1/lxc/201/firewall/options",
            {"enable": 1, "policy_in": "DROP", "policy_out": "ACCEPT"},
        )
    ]


def test_options_already_as_declared_are_not_sent_again() -> None:
    """An adopted guest whose firewall PVE already has as declared gets no call at all."""
    declared = inputs(WEB)
    rules = [{**WEB, "enable": 1, "pos": 0}]
    live = {"enable": 1, "policy_in": "DROP", "policy_out": "ACCEPT", "digest": "x"}
    assert apply_steps(declared, rules, live) == []
    assert [c.method for c in apply_steps(declared, rules, {**live, "policy_in": "ACCEPT"})] == ["PUT"]
    assert [c.method for c in apply_steps(declared, rules, {})] == ["PUT"]  # PVE's default: off


def test_deletes_go_bottom_up_so_each_position_still_names_its_rule() -> None:
    calls = rule_calls(inputs(), current=3)
    assert [c.path.rsplit("/", 1)[1] for c in calls] == ["2", "1", "0"]


def test_a_vm_firewall_uses_the_qemu_path_and_the_plan_is_a_read_then_the_first_up() -> None:
    vm = inputs(WEB, kind="qemu")
    steps = plan_steps(vm)
    assert steps[:2] == [
        ApiCall("GET", "nodes/pve1/qemu/201/firewall/rules"),
        ApiCall("GET", "nodes/pve1/qemu/201/firewall/options"),
    ]
    assert [s.method for s in steps[2:]] == ["PUT", "POST"]
    assert (
        steps[3].render()
        == "POST /nodes/pve1/qemu/201/firewall/rules type=in action=ACCEPT proto=tcp dport=80,443 enable=1"
    )


def test_normalise_keeps_only_declared_fields_as_pve_strings() -> None:
    assert normalise_rule(
        {"type": "in", "action": "DROP", "dport": 22, "comment": "", "pos": 3, "log": "nolog"}
    ) == {
        "type": "in",
        "action": "DROP",
        "dport": "22",
    }


def test_observed_reports_what_pve_has() -> None:
    assert observed({"enable": 0, "policy_in": "ACCEPT"}, [{**WEB, "pos": 0}]) == {
        "enabled": False,
        "policy_in": "ACCEPT",
        "policy_out": "ACCEPT",
        "rules": [WEB],
    }


def test_diff_rules_and_a_new_container_update_in_place_a_new_vmid_replaces() -> None:
    provider = GuestFirewallProvider()
    old = {"node": "pve1", "vmid": 201, "kind": "lxc", "rules": [WEB], "guest_instance": "a", "version": "1"}
    assert provider.diff("id", old, {**old, "rules": [{**WEB, "dport": "443"}]}).replaces == []
    assert provider.diff("id", old, {**old, "rules": [{**WEB, "dport": "443"}]}).changes
    assert provider.diff("id", old, {**old, "guest_instance": "b"}).changes
    assert provider.diff("id", old, {**old, "vmid": 202}).replaces == ["vmid"]
    # The same rules as PVE returns them (numbers as strings, extra fields) are no change.
    assert not provider.diff("id", old, {**old, "rules": [{**WEB, "pos": 0}]}).changes


def test_check_refuses_an_unknown_policy_and_kind() -> None:
    failures = (
        GuestFirewallProvider()
        .check({}, {"node": "pve1", "vmid": 1, "policy_in": "allow", "kind": "vm"})
        .failures
    )
    assert sorted(f.property for f in failures) == ["kind", "policy_in"]


# ------------------------------------------------------------------ CRUD against the fake PVE host


def lab() -> tuple[FakePve, GuestFirewallProvider]:
    pve = FakePve()
    pve.add_guest(201, status="running")
    provider = GuestFirewallProvider()
    pve.serve(provider)
    return pve, provider


def props(*rules: dict[str, str], **over: Any) -> dict[str, Any]:
    return (
        GuestFirewallProvider()
        .check({}, {"node": "pve1", "vmid": 201.0, "rules": list(rules), **over})
        .inputs
    )


def test_create_turns_the_firewall_on_with_exactly_the_declared_rules_in_order() -> None:
    pve, provider = lab()
    result = provider.create(props(WEB, SSH, VLLM))
    guest = pve.guests[201]
    assert guest.firewall_options == {"enable": 1, "policy_in": "DROP", "policy_out": "ACCEPT"}
    assert [normalise_rule(r) for r in guest.firewall_rules] == [WEB, SSH, VLLM]
    assert result.id == "lxc/201/firewall" and result.outs["rules"] == [WEB, SSH, VLLM]


def test_update_rewrites_changed_rules_and_leaves_matching_ones_alone() -> None:
    pve, provider = lab()
    outs = dict(provider.create(props(WEB, SSH)).outs)
    pve.calls.clear()
    provider.update("x", outs, props(WEB, SSH, policy_in="REJECT"))
    assert pve.mutations == [("PUT", "nodes/pve1/lxc/201/firewall/options")]
    provider.update("x", outs, props(SSH))
    assert [normalise_rule(r) for r in pve.guests[201].firewall_rules] == [SSH]


def test_read_reports_a_rule_added_by_hand_as_drift_and_a_guest_gone_as_gone() -> None:
    pve, provider = lab()
    outs = dict(provider.create(props(WEB)).outs)
    assert provider.diff("x", provider.read("x", outs).outs, props(WEB)).changes is False
    pve.guests[201].firewall_rules.insert(0, {**SSH, "enable": 1})
    drift = provider.read("x", outs).outs
    assert drift["rules"] == [SSH, WEB]
    assert provider.diff("x", drift, props(WEB)).changes is True
    del pve.guests[201]
    assert provider.read("x", outs).id is None


def test_delete_removes_every_rule_and_turns_it_off_and_a_guest_gone_is_no_error() -> None:
    pve, provider = lab()
    outs = dict(provider.create(props(WEB, SSH)).outs)
    provider.delete("x", outs)
    guest = pve.guests[201]
    assert guest.firewall_rules == [] and guest.firewall_options["enable"] == 0
    del pve.guests[201]
    provider.delete("x", outs)
