"""A Docker Compose stack end to end on the lab under the real engine: it goes up in CT 801 (a guest of the
vllm layer, which descends from the docker layer) running exactly the commands ``phoenix plan`` lists for
it, a second up changes nothing, a changed environment and a changed Compose file each update it in place
(checked inside the guest), a service stopped by hand is drift that refresh reports and the next up
repairs, a stack that never gets healthy fails the deploy with Compose's output and leaves nothing behind,
a secret stays out of the state's plain text and out of every command line, and removing the stack leaves
nothing of it in the guest.

**Docker in the lab, what happened** (the brief asked to try a real engine first, for at most 15
minutes). Debian bookworm's docker.io 20.10.24 (with its containerd and runc) runs on the lab machine
itself: ``dockerd --storage-driver=vfs --bridge=none --iptables=false`` started in about a second and ran
an imported busybox image (``docker run --rm --network none``). Inside an LXC container made the way the
lab's ``pct`` shim makes them (the lab's rootfs, privileged, ``lxc.net.0.type = none``, ``sleep
infinity`` as init; docker.io, containerd, runc and their libraries unpacked into it) the same daemon
stops at once: ``failed to start daemon: Devices cgroup isn't mounted`` — the lab kernel's hierarchy is
cgroup v1, and the container gets no cgroup mount (not even with ``lxc.mount.auto = cgroup:rw``). Two
more reasons it could not be the lab's engine: Debian bookworm ships no Compose v2 (``docker compose``,
the plugin that has ``up --wait``); its ``docker-compose`` 1.29.2 is Compose v1, which has neither the
``docker compose`` subcommand nor ``--wait``, and the lab's containers have no network from which to
fetch the v2 plugin (Docker's apt repository or GitHub); and they share the host's network namespace,
so a daemon there would change this shared machine's networking. So the docker layer's TEST-ONLY
stand-in (tests/lab/standins/features/docker.sh) carries a ``docker compose`` stand-in implementing
exactly what Phoenix calls (``up -d --wait``, ``ps --all --format json``, ``down``), a process per
service with its state in ``/var/lib/phoenix-lab-compose/<project>/state.json``; the exact commands
Phoenix sends are unit-tested in tests/unit/test_compose_stack.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pulumi import automation as auto
from pulumi.automation.errors import CommandError

from phoenix_components.cli.plan import build_plan
from providers.channels.steps import HostCommand
from tests.cli.test_lab_e2e import dynamic_ops, outputs
from tests.cli.test_lab_plan import recorded_ssh
from tests.lab.e2e import LabGuest, LabStack, write_stack

pytestmark = [pytest.mark.lab, pytest.mark.cli]

VMID = 801
STACK = "apps"
RESOURCE = f"stack-{STACK}-compose"
TOKEN = "lab-token-9d3c51f0a7"  # a test value, sent as the stack's Pulumi config secret
COMPOSE = """services:
  web:
    image: nginx:1.27
    ports:
      - "18080:80"
    environment:
      GREETING: ${GREETING}
      API_TOKEN: ${API_TOKEN}
  worker:
    image: busybox:1.36
"""
STATE = f"/var/lib/phoenix-lab-compose/{STACK}/state.json"
DIRECTORY = f"/opt/phoenix/stacks/{STACK}"


def settings(greeting: str) -> dict[str, Any]:
    return {"environment": {"GREETING": greeting}, "secrets": ["API_TOKEN"], "wait_timeout_s": 60}


@pytest.fixture(scope="module")
def stack(lab_stack: LabStack) -> LabStack:
    """One vLLM guest (801) and the stack on it; the secret in the stack's config."""
    lab_stack.set_guests([LabGuest(VMID, gpu=0, served="tiny-a")])
    write_stack(lab_stack.config, STACK, COMPOSE, settings("hello"))
    lab_stack.set_stacks([(STACK, VMID)])
    secret = json.dumps({STACK: {"API_TOKEN": TOKEN}})
    lab_stack.engine.stack.set_config("phoenix:stackSecrets", auto.ConfigValue(value=secret, secret=True))
    return lab_stack


def in_guest(stack: LabStack, *argv: str) -> str:
    result = stack.guest_exec(VMID, *argv)
    assert result.returncode == 0, result.stderr
    return result.stdout


def compose_state(stack: LabStack) -> dict[str, Any]:
    """What the compose stand-in in the guest holds: services, their pids, the env it read."""
    state: dict[str, Any] = json.loads(in_guest(stack, "cat", STATE))
    return state


def alive(stack: LabStack, pid: int) -> bool:
    """A process in the guest that runs (the guest's init, `sleep infinity`, reaps nothing: a stopped
    service may stay a zombie, which is not running)."""
    probe = 'test -e "/proc/$1/stat" && ! grep -q ") Z " "/proc/$1/stat"'
    return stack.guest_exec(VMID, "sh", "-c", probe, "alive", str(pid)).returncode == 0


def running_services(stack: LabStack) -> dict[str, str]:
    listed = in_guest(stack, "docker", "compose", "-p", STACK, "ps", "--all", "--format", "json").splitlines()
    return {item["Service"]: item["State"] for item in map(json.loads, listed)}


def test_the_stack_goes_up_in_the_guest_after_it_with_its_environment_and_secret(stack: LabStack) -> None:
    (planned,) = [r for r in build_plan(stack.environment()) if r.name == f"stack-{STACK}"]
    assert stack.first is None, "this test needs the first up (it compares the plan with it)"
    with stack.host.sshd.server.recording() as commands:
        report = stack.ensure_up()
    # `phoenix plan`'s steps for the stack are the commands the up ran for it, in order, and no others
    # (the lab sshd's TEST-ONLY recorder saw them; a secret is in no argv, only in the env file's stdin).
    recorded = recorded_ssh(commands)
    steps = [tuple(step.argv) for step in planned.calls if isinstance(step, HostCommand)]
    ours = [argv for argv in recorded if any(DIRECTORY in word for word in argv)]
    print(f"\nplan vs up for stack-{STACK}: {len(steps)} planned commands, {len(ours)} recorded for it")
    assert ours == steps
    assert not any(TOKEN in word for argv in recorded for word in argv)
    ops = dynamic_ops(report)
    assert ops[RESOURCE] == "create" and ops[f"ct-{VMID}-vllm"] == "create"
    assert running_services(stack) == {"web": "running", "worker": "running"}
    state = compose_state(stack)
    assert state["env"] == {"API_TOKEN": TOKEN, "GREETING": "hello"}
    assert state["file"] == f"{DIRECTORY}/compose.yaml"
    assert in_guest(stack, "cat", f"{DIRECTORY}/compose.yaml") == COMPOSE
    assert in_guest(stack, "stat", "-c", "%a", f"{DIRECTORY}/phoenix.env").strip() == "600"
    out = outputs(stack, RESOURCE)
    assert out["state"] == "running" and out["service_states"] == {"web": "running", "worker": "running"}
    assert report.exports["stacks"] == {STACK: {"guest": VMID, "state": "running"}}
    # The secret: in the guest's env file, in no plain text of the state.
    assert TOKEN not in stack.engine.export_text()


def test_a_second_up_changes_nothing(stack: LabStack) -> None:
    stack.ensure_up()
    pids = {name: s["pid"] for name, s in compose_state(stack)["services"].items()}
    report = stack.up()
    print(f"\nsecond up: {report.changes} changes, provider calls {dict(report.provider_calls)}")
    assert report.changes == 0 and report.provider_mutations == 0
    assert {name: s["pid"] for name, s in compose_state(stack)["services"].items()} == pids


def test_a_changed_environment_updates_the_stack_in_place(stack: LabStack) -> None:
    stack.ensure_up()
    key = outputs(stack, RESOURCE)["content_key"]
    write_stack(stack.config, STACK, COMPOSE, settings("hello again"))
    report = stack.up()
    assert {n: op for n, op in dynamic_ops(report).items() if op != "same"} == {RESOURCE: "update"}
    assert compose_state(stack)["env"]["GREETING"] == "hello again"
    assert outputs(stack, RESOURCE)["content_key"] != key


def test_a_changed_compose_file_updates_it_and_a_removed_service_goes(stack: LabStack) -> None:
    stack.ensure_up()
    changed = COMPOSE.replace("  worker:\n    image: busybox:1.36\n", "  cache:\n    image: redis:7\n")
    write_stack(stack.config, STACK, changed, settings("hello again"))
    report = stack.up()
    assert {n: op for n, op in dynamic_ops(report).items() if op != "same"} == {RESOURCE: "update"}
    assert running_services(stack) == {"web": "running", "cache": "running"}  # worker removed (orphan)
    assert in_guest(stack, "cat", f"{DIRECTORY}/compose.yaml") == changed


def test_a_service_stopped_in_the_guest_is_drift_and_the_next_up_starts_it(stack: LabStack) -> None:
    stack.ensure_up()
    pid = compose_state(stack)["services"]["web"]["pid"]
    in_guest(stack, "sh", "-c", 'kill "$1"', "kill", str(pid))  # minbase has no kill binary
    assert not alive(stack, pid)
    drift = {urn.rsplit("::", 1)[-1]: d for urn, d in stack.engine.refresh().items()}
    print(f"\nrefresh after killing web: {drift[RESOURCE]}")
    assert drift[RESOURCE].kind == "changed" and "state" in drift[RESOURCE].changed
    assert outputs(stack, RESOURCE)["state"] == "web exited"
    assert TOKEN not in stack.engine.export_text()  # what read returned is stored sealed too
    report = stack.up()
    assert dynamic_ops(report)[RESOURCE] == "update"
    assert running_services(stack)["web"] == "running"
    assert stack.up().changes == 0


def test_a_stack_that_never_gets_healthy_fails_the_deploy_and_leaves_nothing_behind(stack: LabStack) -> None:
    stack.ensure_up()
    # The compose stand-in's `phoenix-lab/unhealthy` image never passes its healthcheck (up --wait fails).
    write_stack(stack.config, "broken", "services:\n  bad:\n    image: phoenix-lab/unhealthy\n")
    stack.set_stacks([(STACK, VMID), ("broken", VMID)])
    try:
        with pytest.raises(CommandError) as caught:
            stack.up()
        details = str(caught.value)
        headline = next(line for line in details.splitlines() if "Compose stack" in line)
        print(f"\nunhealthy stack: {headline.strip()}")
        assert (
            "Compose stack 'broken' in CT 801 (lab-vllm-801) is not up: `docker compose up --wait` exited 1"
            in details
        )
        assert "--- docker compose (tail) ---" in details and "container broken-bad-1 is unhealthy" in details
        # The failed first up was taken down again: nothing in the guest that state does not know.
        assert stack.guest_exec(VMID, "test", "-e", "/opt/phoenix/stacks/broken").returncode == 1
        assert stack.guest_exec(VMID, "test", "-e", "/var/lib/phoenix-lab-compose/broken").returncode == 1
        assert "stack-broken-compose" not in {r.rsplit("::", 1)[-1] for r in stack.engine.resources()}
    finally:
        stack.set_stacks([(STACK, VMID)])
    report = stack.up()  # the failed stack's component leaves the state; the healthy stack is untouched
    assert dynamic_ops(report)[RESOURCE] == "same"
    assert {n: op for n, op in dynamic_ops(report).items() if op != "same"} == {}


def test_destroy_takes_the_stack_down_and_removes_its_files(stack: LabStack) -> None:
    stack.ensure_up()
    pids = [s["pid"] for s in compose_state(stack)["services"].values()]
    # Only the stack: the guest stays, so what is left in it can be looked at.
    stack.set_stacks([])
    report = stack.up()
    assert dynamic_ops(report)[RESOURCE] == "delete"
    assert stack.guest_exec(VMID, "test", "-e", DIRECTORY).returncode == 1
    assert stack.guest_exec(VMID, "test", "-e", STATE).returncode == 1
    for pid in pids:
        assert not alive(stack, pid), f"pid {pid} still runs"
    destroyed = stack.engine.destroy()
    assert destroyed.provider_mutations > 0 and not stack.engine.resources()
