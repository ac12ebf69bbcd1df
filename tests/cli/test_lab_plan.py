"""`phoenix plan` is what a first `up` runs: the plan of the lab stack, compared with what the lab recorded.

Issue 12, point 5. The stack is this module's own ``lab_stack`` (tests/lab/e2e.py): the product chain and
two vLLM guests, deployed from an empty state by the real engine. The plan is
:func:`phoenix_components.cli.plan.build_plan` of the same config, made before the ``up`` and from the
config alone; each planned resource's ``calls`` are its provider's own steps.

What was recorded, by two observers outside Phoenix:

- the PVE API: every request fakepve received during the ``up`` (``FakePve.requests``, with the body);
- SSH: every command the lab's sshd was asked to run during the ``up``, recorded by its TEST-ONLY
  ForceCommand wrapper (tests/lab/sshd_record/record-command), with the ``timeout ...`` prefix the SSH
  channel adds for a command with a deadline taken off.

The comparison rule, in a normalized form:

- **resources**: the planned resources are exactly the dynamic resources the engine created (plan names
  map to the program's: ``layer-X`` is ``layer-X-template``, ``ct-N`` is ``ct-N-container``, ``vllm-N`` is
  ``ct-N-vllm``; the others are the same names);
- **placeholders**: ``$vmid(<layer>)`` is replaced by the vmid that layer's build took (its output), and
  ``$mountpoint(<dataset>)`` by the clone's mountpoint as ZFS reported it (its output);
- **reads are left out of the API comparison**: a GET is not compared, planned or not (the plan lists the
  reads a step makes, but the client also polls task status and the lab's observers read); the login
  (``POST access/ticket``) is the client's, no step's. Every SSH command is compared, reads too;
- **each planned step was recorded, in the plan's order for its resource** (per channel: API calls and
  SSH commands are two logs with no common clock), with the same method, path and parameters, or the
  same argv;
- **nothing was recorded that no step planned**, with two stated exceptions: a probe the plan marks as
  repeated until ready (vLLM's health check) matches every time it ran, and a task-starting call PVE
  refused because the guest was locked is started again by the client (``PveClient.run_task``): such an
  identical repeat is counted and printed, not failed.
"""

from __future__ import annotations

import shlex
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from phoenix_components.cli.plan import LAYER_VMID, MOUNTPOINT, PlannedResource, build_plan
from providers.channels.command import write_file_argv
from providers.channels.steps import ApiCall, HostCommand
from providers.guests.common import CONF_MODE, DeviceCheck, LinkedCheck, RawLines, origin_argv
from tests.cli.test_lab_e2e import dynamic_ops, outputs, short
from tests.lab.e2e import LabStack

pytestmark = [pytest.mark.lab, pytest.mark.cli]

ApiItem = tuple[str, str, tuple[tuple[str, str], ...]]  # method, path, sorted params
SshItem = tuple[str, ...]  # argv


def engine_name(planned: str) -> str:
    """The program's resource name for a planned one (see the module docstring)."""
    if planned.startswith("layer-"):
        return f"{planned}-template"
    if planned.startswith("vllm-"):
        return f"ct-{planned.removeprefix('vllm-')}-vllm"
    parts = planned.split("-")
    if len(parts) == 2 and parts[0] == "ct":
        return f"{planned}-container"
    return planned


@dataclass
class Expected:
    """One resource's planned steps, normalized: the API mutations and the SSH argvs, in order."""

    name: str
    api: list[tuple[ApiItem, bool]] = field(default_factory=list)  # (call, may be retried on a lock)
    ssh: list[tuple[SshItem, bool]] = field(default_factory=list)  # (argv, repeated until ready)


def expected(resource: PlannedResource, placeholders: dict[str, str]) -> Expected:
    def sub(value: object) -> str:
        text = str(value)
        for placeholder, real in placeholders.items():
            text = text.replace(placeholder, real)
        return text

    def argv(words: Sequence[str]) -> SshItem:
        return tuple(sub(w) for w in words)

    out = Expected(engine_name(resource.name))
    for step in resource.calls:
        if isinstance(step, ApiCall):
            if step.method != "GET":
                params = tuple(sorted((k, sub(v)) for k, v in step.params.items()))
                out.api.append(((step.method, sub(step.path), params), step.wait == "task"))
        elif isinstance(step, HostCommand):
            out.ssh.append((argv(step.argv), bool(step.until)))
        elif isinstance(step, RawLines):
            out.ssh += [
                (argv(["cat", step.path]), False),
                (argv(write_file_argv(step.path, CONF_MODE)), False),
            ]
        elif isinstance(step, LinkedCheck):  # its GET of the config is a read; the origin check is a command
            out.ssh.append((argv(origin_argv(step.expected_dataset)), False))
        elif isinstance(step, DeviceCheck):  # one command: the nodes the guest passes through
            out.ssh.append((argv(step.argv()), False))
        else:
            raise AssertionError(f"{resource.name}: a step the comparison does not know: {step!r}")
    return out


def recorded_api(requests: Sequence[tuple[str, str, Any]]) -> list[ApiItem]:
    items: list[ApiItem] = []
    for method, path, body in requests:
        path = path.split("/api2/json/", 1)[-1].lstrip("/")
        if method == "GET" or path == "access/ticket":
            continue
        text = body.decode() if isinstance(body, bytes) else str(body or "")
        params = tuple(sorted(urllib.parse.parse_qsl(text, keep_blank_values=True)))
        items.append((method, path, params))
    return items


def recorded_ssh(lines: Sequence[str]) -> list[SshItem]:
    """Each recorded command line as the argv the provider sent (the deadline's ``timeout`` taken off)."""
    items = []
    for line in lines:
        words = shlex.split(line)
        if len(words) > 3 and words[0] == "timeout" and words[1].startswith("--kill-after="):
            words = words[3:]
        items.append(tuple(words))
    return items


@dataclass
class Match:
    missing: list[str] = field(default_factory=list)
    unplanned: list[str] = field(default_factory=list)
    matched: int = 0
    repeats: int = 0  # probes repeated until ready, and lock retries


def compare(plan: list[Expected], recorded: Sequence[Any], channel: str) -> Match:
    """Each resource's steps found in ``recorded`` in its order (greedy, each record used once)."""
    used = [False] * len(recorded)
    result = Match()
    repeatable: set[Any] = set()
    for resource in plan:
        steps = resource.api if channel == "api" else resource.ssh
        at = 0
        for item, repeats in steps:
            found = next((i for i in range(at, len(recorded)) if not used[i] and recorded[i] == item), None)
            if found is None:
                result.missing.append(f"{resource.name}: {item}")
                continue
            used[found], at = True, found + 1
            result.matched += 1
            if repeats:
                repeatable.add(item)
    for i, item in enumerate(recorded):
        if used[i]:
            continue
        if item in repeatable:
            result.repeats += 1
        else:
            result.unplanned.append(str(item))
    return result


def test_the_plan_of_a_first_up_is_what_the_up_ran(lab_stack: LabStack) -> None:
    env = lab_stack.environment()
    plan = build_plan(env)  # from the config alone, before anything exists
    fake = lab_stack.host.pve
    since = len(fake.requests())
    assert lab_stack.first is None and not lab_stack.engine.resources(), "this test needs the first up"
    with lab_stack.host.sshd.server.recording() as commands:
        report = lab_stack.ensure_up()
    requests = fake.call(lambda: list(fake.pve.requests[since:]))

    ops = dynamic_ops(report)
    assert set(ops.values()) == {"create"}
    planned = {engine_name(r.name) for r in plan}
    assert planned == set(ops), f"planned {sorted(planned)}, created {sorted(ops)}"

    placeholders = {
        LAYER_VMID.format(layer): str(outputs(lab_stack, f"layer-{layer}-template")["vmid"])
        for layer in env.built_layers()
    }
    for name in ops:
        if short(lab_stack.engine.resource(name).urn).endswith("-models"):
            out = outputs(lab_stack, name)
            placeholders[MOUNTPOINT.format(out["name"])] = str(out["mountpoint"])
    wanted = [expected(r, placeholders) for r in plan]
    # Lock retries are the client's, for calls that start a task; a repeated probe is the plan's own.
    retried = {item for e in wanted for item, task in e.api if task}
    api = compare(
        [Expected(e.name, api=[(i, i in retried) for i, _ in e.api]) for e in wanted],
        recorded_api(requests),
        "api",
    )
    ssh = compare(wanted, recorded_ssh(commands), "ssh")
    print(
        f"\nplan vs first up: {len(plan)} planned resources = {len(ops)} created; "
        f"PVE API: {api.matched} planned mutations recorded in order, {api.repeats} lock retries, "
        f"{len(api.unplanned)} unplanned, {len(api.missing)} missing (reads not compared: "
        f"{sum(1 for m, _p, _b in requests if m == 'GET')} GETs); "
        f"SSH: {ssh.matched} planned commands recorded in order, {ssh.repeats} repeated health probes, "
        f"{len(ssh.unplanned)} unplanned, {len(ssh.missing)} missing (of {len(commands)} recorded)"
    )
    assert api.missing == [] and ssh.missing == [], "\n".join(api.missing + ssh.missing)
    assert api.unplanned == [] and ssh.unplanned == [], "\n".join(api.unplanned + ssh.unplanned)
    assert api.matched and ssh.matched and len(commands) == ssh.matched + ssh.repeats
