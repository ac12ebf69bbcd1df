"""The firewall of a guest as the GuestFirewall resource takes it: pure, shared by guests.py and plan.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from phoenix_components.config.models import Firewall, FirewallRule, ServicePort


def firewall_rule(rule: FirewallRule) -> dict[str, str]:
    """One rule in PVE's field names (``type`` is the direction); unset fields are left out."""
    fields = {
        "type": rule.direction,
        "action": rule.action,
        "proto": rule.proto,
        "dport": rule.dport,
        "source": rule.source,
        "dest": rule.dest,
        "comment": rule.comment,
    }
    return {k: v for k, v in fields.items() if v is not None}


def port_rule(port: ServicePort) -> dict[str, str]:
    """The inbound ACCEPT rule a declared service port opens (``ports[]``), named after the port."""
    return {
        "type": "in",
        "action": "ACCEPT",
        "proto": port.proto,
        "dport": str(port.port),
        "comment": f"port {port.name}",
    }


def guest_rules(fw: Firewall, ports: Sequence[ServicePort] = ()) -> list[dict[str, str]]:
    """The declared rules, then one per service port that no declared rule already accepts (same
    direction, protocol and port), so a port listed in both places is one rule in PVE."""
    rules = [firewall_rule(rule) for rule in fw.rules]
    accepted = {(r["type"], r.get("proto"), r.get("dport")) for r in rules if r["action"] == "ACCEPT"}
    rules += [r for p in ports if ((r := port_rule(p))["type"], r["proto"], r["dport"]) not in accepted]
    return rules


def firewall_inputs(
    node: str, kind: str, vmid: Any, fw: Firewall, guest_instance: Any = "", ports: Sequence[ServicePort] = ()
) -> dict[str, Any]:
    """GuestFirewall's inputs for a guest whose ``firewall`` is enabled (``guest_instance``: the LXC
    guest's container token, so a replaced container gets its firewall written again; ``ports``: the
    guest's service ports, each opened inbound)."""
    return {
        "guest_instance": guest_instance,
        "node": node,
        "kind": kind,
        "vmid": vmid,
        "enabled": fw.enabled,
        "policy_in": fw.policy_in,
        "policy_out": fw.policy_out,
        "rules": guest_rules(fw, ports),
    }
