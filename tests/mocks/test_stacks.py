"""Compose stacks under mocks: the program registers one ComposeStack per placed stack, after the whole
component of the guest it runs in, with its secrets as Pulumi secrets (input and output), the inputs
``phoenix plan`` shows, and a missing secret stops the program naming the key before any resource."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pulumi
import pytest
from google.protobuf import json_format
from pulumi.runtime import rpc

from phoenix_components.cli.plan import SECRET
from phoenix_components.config.load import load_environment
from phoenix_components.program import build
from phoenix_components.render.stacks import stack_inputs
from tests.mocks.test_program import ROOT, run_program
from tests.support.recording import EchoMocks, RecordingMonitor, install

API_KEY = "mock-api-key-value"
SECRETS = {"phoenix:stackSecrets": json.dumps({"qdrant": {"QDRANT_API_KEY": API_KEY}})}


def is_wire_secret(value: Any) -> bool:
    """A value the SDK sent as a secret: ``{<sig key>: <secret sig>, "value": ...}`` on the wire."""
    return isinstance(value, dict) and value.get(rpc._special_sig_key) == rpc._special_secret_sig


class SecretsMonitor(RecordingMonitor):
    """RecordingMonitor that also keeps each resource's ``additionalSecretOutputs`` and whether its
    inputs were sent as secrets (TEST-ONLY)."""

    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.secret_outputs: dict[str, list[str]] = {}
        self.secret_inputs: dict[str, list[str]] = {}

    def RegisterResource(self, request: Any) -> Any:
        self.secret_outputs[request.name] = list(request.additionalSecretOutputs)
        raw = json_format.MessageToDict(request.object)
        self.secret_inputs[request.name] = sorted(k for k, v in raw.items() if is_wire_secret(v))
        return super().RegisterResource(request)


def config_with_stacks(tmp_path: Path, stacks: list[dict[str, Any]]) -> Path:
    shutil.copytree(ROOT / "config", tmp_path / "config")
    shutil.copytree(ROOT / "apparmor", tmp_path / "apparmor")
    guests_file = tmp_path / "config/environments/dev/guests.json"
    doc = json.loads(guests_file.read_text())
    doc["stacks"] = stacks
    guests_file.write_text(json.dumps(doc))
    return tmp_path / "config"


def run(config: Path, secrets: dict[str, str]) -> SecretsMonitor:
    env = load_environment(config, "dev")
    monitor = install("dev", {"phoenix:environment": "dev", **secrets}, mocks=EchoMocks())
    recording = SecretsMonitor(monitor.mocks)
    pulumi.runtime.set_mocks(
        recording.mocks, project="phoenix", stack="dev", preview=False, monitor=recording
    )
    run_program(lambda: build(env))
    return recording


def test_a_stack_on_a_vm_waits_for_the_vm_and_keeps_its_secret_secret(tmp_path: Path) -> None:
    monitor = run(config_with_stacks(tmp_path, [{"name": "qdrant", "guest": 231}]), SECRETS)
    regs = monitor.by_name()
    component, stack = regs["stack-qdrant"], regs["stack-qdrant-compose"]
    assert component.type == "phoenix:stacks:ComposeStack"
    assert stack.type == "pulumi-python:dynamic/phoenix:ComposeStack"
    assert stack.parent == component.urn
    # After the VM's whole component: the SDK turns it into every resource under it.
    children = {r.urn for r in regs.values() if r.parent == regs["vm-231"].urn and r.custom}
    assert regs["vm-231-vm"].urn in children and children <= set(stack.dependencies)
    assert stack.inputs["guest_kind"] == "qemu" and stack.inputs["vmid"] == 231
    assert is_wire_secret(stack.inputs["secrets"])  # sent as a secret, the value inside it
    assert stack.inputs["secrets"]["value"] == {"QDRANT_API_KEY": API_KEY}
    assert "secrets" in monitor.secret_inputs["stack-qdrant-compose"]
    assert monitor.secret_outputs["stack-qdrant-compose"] == ["secrets"]
    for name, registration in regs.items():  # the value is in no other input, in no plain form
        if name != "stack-qdrant-compose":
            assert API_KEY not in json.dumps(registration.inputs, default=str), name
    others = {k: v for k, v in stack.inputs.items() if k not in ("secrets", "__provider")}
    assert API_KEY not in json.dumps(others)


def test_the_plan_shows_the_inputs_the_program_sends_with_the_secret_a_placeholder(tmp_path: Path) -> None:
    config = config_with_stacks(tmp_path, [{"name": "qdrant", "guest": 201}])
    monitor = run(config, SECRETS)
    sent = monitor.by_name()["stack-qdrant-compose"].inputs
    env = load_environment(config, "dev")
    planned = stack_inputs(env, env.stacks["qdrant"], {"QDRANT_API_KEY": SECRET})
    differ = sorted(k for k in planned if planned[k] != sent.get(k))
    assert differ == ["content_key", "secrets"]  # the two that the secret's value feeds
    assert sent["guest_kind"] == "lxc"
    assert monitor.by_name()["ct-201-container"].urn not in sent  # sanity: inputs are values, not URNs
    regs = monitor.by_name()
    deps = set(regs["stack-qdrant-compose"].dependencies)
    # The container, its firewall and the vLLM health gate: Docker is there and the guest serves.
    assert {regs[n].urn for n in ("ct-201-container", "ct-201-vllm")} <= deps


def test_a_changed_secret_changes_the_content_key_and_the_key_never_holds_the_value(tmp_path: Path) -> None:
    config = config_with_stacks(tmp_path, [{"name": "qdrant", "guest": 231}])
    first = run(config, SECRETS).by_name()["stack-qdrant-compose"].inputs["content_key"]
    other = {"phoenix:stackSecrets": json.dumps({"qdrant": {"QDRANT_API_KEY": "another"}})}
    second = run(config, other).by_name()["stack-qdrant-compose"].inputs["content_key"]
    assert first != second and API_KEY not in first


def test_a_missing_secret_stops_the_program_naming_the_key(tmp_path: Path) -> None:
    config = config_with_stacks(tmp_path, [{"name": "qdrant", "guest": 231}])
    with pytest.raises(pulumi.RunError, match=r"phoenix:stackSecrets\.qdrant\.QDRANT_API_KEY"):
        run(config, {})


def test_no_stack_registers_nothing_for_stacks() -> None:
    env = load_environment(ROOT / "config", "dev")
    assert env.stacks == {}
    monitor = install("dev", {"phoenix:environment": "dev"})
    run_program(lambda: build(env))
    assert not [r for r in monitor.registrations if "ComposeStack" in r.type]


def test_a_replaced_vm_gets_the_stack_again(tmp_path: Path) -> None:
    """A VM is replaced when its cloud-init user-data changes (its vmid stays): the stack's guest_instance
    is that user-data's hash, so the stack updates (deploys again) into the new VM."""
    config = config_with_stacks(tmp_path, [{"name": "qdrant", "guest": 231}])
    before = run(config, SECRETS).by_name()
    guests_file = config / "environments/dev/guests.json"
    doc = json.loads(guests_file.read_text())
    doc["vms"][0]["feature_env"] = {"STACK": "changed"}
    guests_file.write_text(json.dumps(doc))
    after = run(config, SECRETS).by_name()
    assert before["vm-231-vm"].replacement_trigger != after["vm-231-vm"].replacement_trigger
    old, new = (r["stack-qdrant-compose"].inputs["guest_instance"] for r in (before, after))
    assert old and new and old != new
