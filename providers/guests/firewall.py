"""GuestFirewall: a guest's PVE firewall — its options (enable, policies) and its ordered rule list.

Why Phoenix's own provider and not pulumi-proxmoxve's ``firewall.OptionsLegacy``/``RulesLegacy``: the
rules are the one guest setting the on-prem program needed that plugin for, and the plugin cannot be
built on these machines (its Go module is refused by the module proxy). Through Phoenix's PVE client the
firewall is real in the lab too (fakepve keeps guest firewall configs as pve-firewall does) and its steps
are data that ``phoenix plan`` can show.

The rules are owned whole: ``create``/``update`` make the guest's rule list exactly the declared one, in
order, and ``read`` reports any difference (a rule added, removed or edited by hand in the web UI) as
drift. PVE's rule API inserts a new rule at the top, so the declared list is posted last rule first.
``delete`` removes every rule and turns the guest's firewall off.

PVE removes a guest's firewall config when the guest is destroyed (``pct destroy``), and a replaced LXC
guest keeps its vmid: ``guest_instance`` (the LxcGuest's per-container token) is what tells this
resource that the container is a new one whose firewall must be written again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, ReadResult, UpdateResult

from providers.base import Inputs, convert, require
from providers.channels.steps import ApiCall
from providers.guests.common import (
    GuestProvider,
    GuestResource,
    guest_path,
    unless_missing,
)

PROVIDER_VERSION = "1"
TASK_TIMEOUT_S = 600  # the firewall API answers at once; no call of this provider starts a task
POLICIES = ("ACCEPT", "DROP", "REJECT")
# The rule fields Phoenix declares, in PVE's own names; everything else PVE reports (pos, digest,
# ipversion, log) is not compared.
RULE_FIELDS = ("type", "action", "proto", "dport", "source", "dest", "comment")


def normalise_rule(rule: Mapping[str, Any]) -> dict[str, str]:
    """A rule as compared: only the declared fields, no empty ones, all strings (PVE's own form)."""
    return {k: str(rule[k]) for k in RULE_FIELDS if rule.get(k) not in (None, "")}


def _rules(value: Any) -> list[dict[str, str]]:
    return [normalise_rule(rule) for rule in value]


@dataclass(frozen=True)
class GuestFirewallInputs(Inputs):
    node: str
    vmid: int
    kind: str = "lxc"  # or "qemu": the API path differs, the firewall does not
    enabled: bool = True
    policy_in: str = "DROP"
    policy_out: str = "ACCEPT"
    rules: list[dict[str, str]] = field(default_factory=list, metadata=convert(_rules))
    guest_instance: str = ""
    version: str = PROVIDER_VERSION

    @property
    def base(self) -> str:
        return f"{guest_path(self.node, self.vmid, self.kind)}/firewall"


# ------------------------------------------------------------------ steps, as data


def options_call(inputs: GuestFirewallInputs) -> ApiCall:
    return ApiCall(
        "PUT",
        f"{inputs.base}/options",
        {"enable": int(inputs.enabled), "policy_in": inputs.policy_in, "policy_out": inputs.policy_out},
    )


def rule_calls(inputs: GuestFirewallInputs, current: int) -> list[ApiCall]:
    """Make the rule list exactly ``inputs.rules`` when the guest has ``current`` rules now.

    Deletes go from the bottom up so each position still names the rule it meant; creates go in reverse
    because PVE inserts every new rule at position 0.
    """
    deletes = [ApiCall("DELETE", f"{inputs.base}/rules/{pos}") for pos in reversed(range(current))]
    creates = [
        ApiCall("POST", f"{inputs.base}/rules", {**rule, "enable": 1}) for rule in reversed(inputs.rules)
    ]
    return [*deletes, *creates]


def apply_steps(
    inputs: GuestFirewallInputs,
    current_rules: list[dict[str, Any]],
    current_options: Mapping[str, Any] | None = None,
) -> list[ApiCall]:
    """The calls that bring a guest whose rules are ``current_rules`` and options ``current_options`` to
    ``inputs``; each is left alone when it already matches (an adopted guest's firewall, say), the options
    sent when they are not known."""
    steps = []
    declared = (inputs.enabled, inputs.policy_in, inputs.policy_out)
    if current_options is None or tuple(observed(current_options, [])[k] for k in OPTIONS) != declared:
        steps.append(options_call(inputs))
    if [normalise_rule(r) for r in current_rules] != inputs.rules or not all(
        str(r.get("enable", "0")) == "1" for r in current_rules
    ):
        steps.extend(rule_calls(inputs, len(current_rules)))
    return steps


def rules_step(inputs: GuestFirewallInputs) -> ApiCall:
    return ApiCall("GET", f"{inputs.base}/rules")


def options_step(inputs: GuestFirewallInputs) -> ApiCall:
    return ApiCall("GET", f"{inputs.base}/options")


def plan_steps(inputs: GuestFirewallInputs) -> list[ApiCall]:
    """The steps of a first ``up`` (a new guest has no rules, and its firewall is off): what ``phoenix
    plan`` shows."""
    return [rules_step(inputs), options_step(inputs), *apply_steps(inputs, [], {})]


OPTIONS = ("enabled", "policy_in", "policy_out")  # the outputs the options PUT sets


def observed(options: Mapping[str, Any], rules: list[dict[str, Any]]) -> dict[str, Any]:
    """The outputs that describe the firewall as PVE has it."""
    return {
        "enabled": str(options.get("enable", "0")) == "1",
        "policy_in": str(options.get("policy_in", "DROP")),
        "policy_out": str(options.get("policy_out", "ACCEPT")),
        "rules": [normalise_rule(r) for r in rules],
    }


# ------------------------------------------------------------------ provider


@dataclass
class GuestFirewallProvider(GuestProvider):
    inputs_class = GuestFirewallInputs
    replace_on = ("node", "kind", "vmid")
    update_on = ("enabled", "policy_in", "policy_out", "rules", "guest_instance")

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = require(news, ["node", "vmid"])
        for key in ("policy_in", "policy_out"):
            if key in news and news[key] not in POLICIES:
                failures.append(CheckFailure(key, f"one of {', '.join(POLICIES)}"))
        if news.get("kind", "lxc") not in ("lxc", "qemu"):
            failures.append(CheckFailure("kind", "lxc or qemu"))
        return self.checked(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        olds = {**olds, "rules": [normalise_rule(r) for r in olds.get("rules") or []]}
        news = {**news, "rules": [normalise_rule(r) for r in news.get("rules") or []]}
        return super().diff(_id, olds, news)

    def _apply(self, inputs: GuestFirewallInputs) -> dict[str, Any]:
        runner = self.runner(TASK_TIMEOUT_S, ssh=False)
        rules, options = runner.one(rules_step(inputs)), runner.one(options_step(inputs))
        runner.run(apply_steps(inputs, rules, options))
        return inputs.to_props()

    def create(self, props: dict[str, Any]) -> CreateResult:
        inputs = GuestFirewallInputs.from_props(props)
        return CreateResult(f"{inputs.kind}/{inputs.vmid}/firewall", self._apply(inputs))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(self._apply(GuestFirewallInputs.from_props(news)))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        inputs = GuestFirewallInputs.from_props(props)
        runner = self.runner(TASK_TIMEOUT_S, ssh=False)
        found = unless_missing(lambda: (runner.one(options_step(inputs)), runner.one(rules_step(inputs))))
        if found is None:
            return ReadResult(None, {})
        return ReadResult(id_, {**props, **observed(*found)})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        inputs = GuestFirewallInputs.from_props(props)
        runner = self.runner(TASK_TIMEOUT_S, ssh=False)
        current = unless_missing(lambda: runner.one(rules_step(inputs)))
        if current is not None:  # else the guest went first: its firewall went with it
            runner.run(delete_steps(inputs, len(current)))


def delete_steps(inputs: GuestFirewallInputs, current: int) -> list[ApiCall]:
    """Every rule removed, then the firewall off."""
    off = GuestFirewallInputs(node=inputs.node, vmid=inputs.vmid, kind=inputs.kind, enabled=False)
    return [*rule_calls(off, current), options_call(off)]


@dataclass(frozen=True)
class GuestFirewallArgs:
    """A guest's firewall as :class:`GuestFirewallInputs` documents each field."""

    node: pulumi.Input[str]
    vmid: pulumi.Input[int]
    kind: pulumi.Input[str] = "lxc"
    enabled: pulumi.Input[bool] = True
    policy_in: pulumi.Input[str] = "DROP"
    policy_out: pulumi.Input[str] = "ACCEPT"
    rules: pulumi.Input[Sequence[Mapping[str, Any]]] = ()
    """PVE's own rule fields (type, action, proto, dport, source, dest, comment), in order."""
    guest_instance: pulumi.Input[str] = ""
    """LxcGuest's instance: a new container (same vmid) gets its firewall written again."""


class GuestFirewall(GuestResource[GuestFirewallArgs], module="phoenix", name="GuestFirewall"):
    """A guest's PVE firewall. Token ``pulumi-python:dynamic/phoenix:GuestFirewall``."""

    enabled: pulumi.Output[bool]
    rules: pulumi.Output[list[dict[str, str]]]

    provider_class = GuestFirewallProvider
    provider_version = PROVIDER_VERSION
