"""Service ports (``ports[]``) open the guest's firewall: an inbound ACCEPT rule each, after declared ones."""

from __future__ import annotations

from phoenix_components.config.models import Firewall, FirewallRule, ServicePort
from phoenix_components.render.firewall import firewall_inputs, guest_rules


def test_each_port_becomes_an_inbound_accept_rule_after_the_declared_ones() -> None:
    fw = Firewall(rules=[FirewallRule(direction="in", action="ACCEPT", proto="tcp", dport="22")])
    ports = [ServicePort(name="metrics", port=9100), ServicePort(name="dns", port=53, proto="udp")]
    assert guest_rules(fw, ports) == [
        {"type": "in", "action": "ACCEPT", "proto": "tcp", "dport": "22"},
        {"type": "in", "action": "ACCEPT", "proto": "tcp", "dport": "9100", "comment": "port metrics"},
        {"type": "in", "action": "ACCEPT", "proto": "udp", "dport": "53", "comment": "port dns"},
    ]


def test_a_port_a_declared_rule_already_accepts_is_not_added_twice() -> None:
    fw = Firewall(
        rules=[FirewallRule(direction="in", action="ACCEPT", proto="tcp", dport="443", comment="apps")]
    )
    assert guest_rules(fw, [ServicePort(name="https", port=443)]) == [
        {"type": "in", "action": "ACCEPT", "proto": "tcp", "dport": "443", "comment": "apps"}
    ]


def test_a_declared_drop_of_the_same_port_does_not_swallow_the_port() -> None:
    """Only an ACCEPT of the same port makes the generated rule redundant; a DROP before it stays first."""
    fw = Firewall(rules=[FirewallRule(direction="in", action="DROP", proto="tcp", dport="9100")])
    rules = guest_rules(fw, [ServicePort(name="metrics", port=9100)])
    assert [r["action"] for r in rules] == ["DROP", "ACCEPT"]


def test_the_resource_inputs_carry_the_port_rules() -> None:
    inputs = firewall_inputs("pve1", "lxc", 201, Firewall(), ports=[ServicePort(name="metrics", port=9100)])
    assert inputs["rules"] == [
        {"type": "in", "action": "ACCEPT", "proto": "tcp", "dport": "9100", "comment": "port metrics"}
    ]
