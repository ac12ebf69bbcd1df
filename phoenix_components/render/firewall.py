"""The firewall of a guest as the GuestFirewall resource takes it: pure, shared by guests.py and plan.py."""

from __future__ import annotations

from typing import Any

from phoenix_components.config.models import Firewall, FirewallRule


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


def firewall_inputs(
    node: str, kind: str, vmid: Any, fw: Firewall, guest_instance: Any = ""
) -> dict[str, Any]:
    """GuestFirewall's inputs for a guest whose ``firewall`` is enabled (``guest_instance``: the LXC
    guest's container token, so a replaced container gets its firewall written again)."""
    return {
        "guest_instance": guest_instance,
        "node": node,
        "kind": kind,
        "vmid": vmid,
        "enabled": fw.enabled,
        "policy_in": fw.policy_in,
        "policy_out": fw.policy_out,
        "rules": [firewall_rule(rule) for rule in fw.rules],
    }
