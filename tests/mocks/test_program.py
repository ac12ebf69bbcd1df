"""The Pulumi program under mocks, for every stack file: components, names, parents, dependencies, exports."""

from __future__ import annotations

import json
import runpy
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi
import pytest
from pulumi.runtime import rpc

from phoenix_components.config.cloud import is_cloud_environment
from phoenix_components.config.load import load_environment
from phoenix_components.config.stacks import stack_environment, stack_names
from phoenix_components.program import build
from tests.support.recording import install

ROOT = Path(__file__).resolve().parents[2]
# Cloud stacks (a cloud.json environment) have their own tests in test_cloud.py.
STACKS = [
    s for s in stack_names(ROOT) if not is_cloud_environment(ROOT / "config", stack_environment(ROOT, s))
]


def run_program(fn: Callable[[], Any]) -> None:
    """Run ``fn`` as a Pulumi program under the installed mocks and wait for every registration."""

    @pulumi.runtime.test
    def program() -> Any:
        fn()
        return pulumi.Output.from_input(True)

    program()


def stack_outputs() -> dict[str, Any]:
    outputs: dict[str, Any] = {}

    @pulumi.runtime.test
    def collect() -> Any:
        root = pulumi.runtime.get_root_resource()
        assert root is not None
        keys = sorted(root.outputs)
        return pulumi.Output.all(*[root.outputs[k] for k in keys]).apply(
            lambda values: outputs.update(zip(keys, values, strict=True))
        )

    collect()
    return outputs


def test_every_environment_has_a_stack_file() -> None:
    assert {"dev", "staging", "prod", "lab"} <= set(STACKS)


@pytest.mark.parametrize("stack", STACKS)
def test_main_builds_for_every_stack(stack: str) -> None:
    env_name = stack_environment(ROOT, stack)
    env = load_environment(ROOT / "config", env_name)
    monitor = install(stack, {"phoenix:environment": env_name})

    run_program(lambda: runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__"))

    regs = monitor.by_name()
    chain = regs["chain"]
    assert chain.type == "phoenix:chain:TemplateChain"
    # Only the layers the environment's guests run on (and their ancestors) are built there.
    unused = set(env.layer_order()) - set(env.built_layers())
    assert not {n for n in unused if f"layer-{n}" in regs}, "a layer no guest here runs on is not built"
    for name in env.built_layers():
        layer = regs[f"layer-{name}"]
        template = regs[f"layer-{name}-template"]
        assert layer.type == "phoenix:chain:TemplateLayer"
        assert layer.parent == chain.urn, f"layer-{name} must be a child of the chain"
        assert template.type == "pulumi-python:dynamic/phoenix:TemplateLayer"
        assert template.parent == layer.urn
        assert template.inputs["key"] == env.layer_key(name)
        parent = env.chain.layers[name].parent
        if parent is not None:
            assert regs[f"layer-{parent}-template"].urn in template.dependencies, (
                f"{name} must wait for {parent}"
            )
        assert monitor.outputs[layer.urn]["lineage"] == env.layer_lineage(name)
    for ct in env.guests.containers:
        guest = regs[f"ct-{ct.vmid}"]
        container = regs[f"ct-{ct.vmid}-container"]
        assert guest.type == "phoenix:guest:LxcGuest"
        assert guest.parent == f"urn:pulumi:{stack}::phoenix::pulumi:pulumi:Stack::phoenix-{stack}"
        assert container.type == "pulumi-python:dynamic/phoenix:LxcGuest"
        assert regs[f"layer-{ct.layer}-template"].urn in container.dependencies, "cloned from its layer"
        if ct.apparmor_profile in env.host.apparmor_profiles:
            assert regs[f"apparmor-{ct.apparmor_profile}"].urn in container.dependencies
        if ct.gpus:
            assert regs[f"nvidia-driver-{env.host.node}"].urn in container.dependencies
        for mount in ct.mounts:
            if mount.type == "dataset_clone":
                clone = regs[f"ct-{ct.vmid}-{mount.dataset}"]
                assert clone.urn in container.dependencies
                assert regs[f"dataset-{mount.dataset}-{env.guests.datasets[mount.dataset].snapshot}"].urn in (
                    clone.dependencies
                )
        if ct.vllm is not None:
            service = regs[f"ct-{ct.vmid}-vllm"]
            assert container.urn in service.dependencies
            assert f'--served-model-name" "{ct.vllm.server.served_model_name}"' in service.inputs["unit"]
        if ct.snapshots is not None:
            snapshots = regs[f"ct-{ct.vmid}-snapshots"]
            assert container.urn in snapshots.dependencies
            assert (snapshots.inputs["retention"], snapshots.inputs["prefix"]) == (
                ct.snapshots.retention,
                ct.snapshots.prefix,
            )
        if ct.firewall.enabled:
            firewall = regs[f"ct-{ct.vmid}-firewall"]
            assert firewall.type == "pulumi-python:dynamic/phoenix:GuestFirewall"
            assert (firewall.inputs["kind"], firewall.inputs["vmid"]) == ("lxc", ct.vmid)
            assert len(firewall.inputs["rules"]) == len(ct.firewall.rules)
            assert container.urn in firewall.dependencies
    for vm in env.guests.vms:
        assert regs[f"vm-{vm.vmid}"].type == "phoenix:guest:VmGuest"
        machine = regs[f"vm-{vm.vmid}-vm"]
        assert machine.type == "proxmoxve:index/vmLegacy:VmLegacy"
        assert regs[f"cloud-image-{vm.image}-template"].urn in machine.dependencies
        assert regs[f"vm-{vm.vmid}-cloud-init"].urn in machine.dependencies

    outputs = stack_outputs()
    assert outputs["environment"] == env_name
    assert outputs["node"] == env.host.node
    assert outputs["layers"] == {name: env.layer_key(name) for name in env.built_layers()}
    served = {ct.vllm.server.served_model_name for ct in env.guests.containers if ct.vllm}
    assert set(outputs["vllm_endpoints"]) == served
    assert all(
        url.startswith("http://") and url.endswith("/v1") for url in outputs["vllm_endpoints"].values()
    )


@pytest.mark.parametrize("stack", STACKS)
def test_each_resource_s_source_position_is_the_component_line_that_built_it(stack: str) -> None:
    """The SDK records the frame above a resource's constructor as its source position. Phoenix's resources
    register through DynamicResource._register, so that frame is the component's line, not providers/."""
    env_name = stack_environment(ROOT, stack)
    monitor = install(stack, {"phoenix:environment": env_name})
    env = load_environment(ROOT / "config", env_name)

    run_program(lambda: build(env))

    components = (ROOT / "phoenix_components").as_uri()
    dynamic = [r for r in monitor.registrations if r.type.startswith("pulumi-python:dynamic/")]
    assert len(dynamic) > 10
    for reg in dynamic:
        assert reg.source is not None, f"{reg.name}: no source position"
        uri, line = reg.source
        assert uri.startswith(components + "/components/"), f"{reg.name} ({reg.type}): {uri}:{line}"
        built = Path(uri.removeprefix("file://")).read_text().splitlines()[line - 1]
        assert "(" in built, f"{reg.name}: {uri}:{line} is not a call: {built!r}"


def test_a_dynamic_resource_cannot_register_through_the_base_constructor() -> None:
    from providers.base import DynamicResource

    class _Bare(DynamicResource, module="test", name="Bare"):
        pass

    with pytest.raises(TypeError, match="_register"):
        _Bare("name", {})


def test_layer_keys_are_the_same_in_every_environment() -> None:
    """Promotion compares keys: the shared chain must hash identically for every host."""
    keys = {
        name: tuple(env.layer_key(layer) for layer in env.layer_order())
        for name in ("dev", "staging", "prod")
        for env in [load_environment(ROOT / "config", name)]
    }
    assert len(set(keys.values())) == 1, keys


def _urns_for(config_dir: Path) -> set[str]:
    monitor = install("dev", {"phoenix:environment": "dev"})
    env = load_environment(config_dir, "dev")
    run_program(lambda: build(env))
    return {r.urn for r in monitor.registrations}


def test_names_come_from_identity_not_list_order(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "config", tmp_path / "config")
    shutil.copytree(ROOT / "apparmor", tmp_path / "apparmor")
    before = _urns_for(tmp_path / "config")

    guests_file = tmp_path / "config/environments/dev/guests.json"
    guests = json.loads(guests_file.read_text())
    guests["containers"].reverse()
    guests_file.write_text(json.dumps(guests))
    chain_file = tmp_path / "config/chain.json"
    chain = json.loads(chain_file.read_text())
    chain["layers"] = dict(reversed(list(chain["layers"].items())))
    chain_file.write_text(json.dumps(chain))

    assert len(guests["containers"]) > 1
    assert _urns_for(tmp_path / "config") == before


def test_invalid_config_stops_the_program_before_any_resource(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "config", tmp_path / "config")
    shutil.copytree(ROOT / "apparmor", tmp_path / "apparmor")
    guests_file = tmp_path / "config/environments/dev/guests.json"
    guests = json.loads(guests_file.read_text())
    guests["containers"][1]["vmid"] = guests["containers"][0]["vmid"]
    guests_file.write_text(json.dumps(guests))

    from phoenix_components.program import load_stack_environment

    monitor = install("dev", {"phoenix:environment": "dev"})
    with pytest.raises(pulumi.RunError) as raised:
        load_stack_environment(tmp_path / "config")
    assert "environments/dev/guests.json: containers[1].vmid (CT 201 vllm-granite): vmid" in str(raised.value)
    assert monitor.registrations == []


def test_credentials_stay_secrets_and_reach_only_the_proxmox_provider() -> None:
    """The PVE password and SSH key are Pulumi secrets: the pulumi-proxmoxve provider gets the password
    marked secret and no SSH key at all; no dynamic resource input and no stack output carries either
    (dynamic providers read them in configure(), inside the provider host)."""
    password, key = "pve-hunter2-do-not-leak", "-----BEGIN OPENSSH PRIVATE KEY----- do-not-leak"
    monitor = install(
        "dev",
        {"phoenix:environment": "dev", "phoenix:pvePassword": password, "phoenix:sshPrivateKey": key},
        secret_keys=["phoenix:pvePassword", "phoenix:sshPrivateKey"],
    )
    run_program(lambda: runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__"))

    provider = next(r for r in monitor.registrations if r.type == "pulumi:providers:proxmoxve")
    assert "ssh" not in provider.inputs, "pulumi-proxmoxve gets no SSH access (its client would not pin keys)"
    assert rpc.is_rpc_secret(provider.inputs["password"])
    assert rpc.unwrap_rpc_secret(provider.inputs["password"]) == password
    others = [r for r in monitor.registrations if r is not provider]
    dumped = json.dumps([r.inputs for r in others], default=str)
    assert password not in dumped and key not in dumped
    outputs = json.dumps(stack_outputs(), default=str)
    assert password not in outputs and key not in outputs
