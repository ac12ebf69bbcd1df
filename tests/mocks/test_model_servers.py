"""The model servers' wiring under Pulumi mocks: an ollama and a llama.cpp guest beside the dev config's vLLM
guests. Each engine's server is a ModelServer child of its guest's component, after its container and
features, with the inputs ``phoenix plan`` plans from the same render function; the vLLM guests keep their
VllmService (type token, name, inputs) exactly as before the engines existed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pulumi
import pytest

from phoenix_components.cli.plan import build_plan, service_inputs
from phoenix_components.config.load import Environment, load_environment
from phoenix_components.program import build
from phoenix_components.render.engines import server_inputs
from providers.model_server import ModelServerInputs, deploy_steps
from tests.support.recording import Registration, install

ROOT = Path(__file__).resolve().parents[2]
MODEL_SERVER = "pulumi-python:dynamic/phoenix:ModelServer"
VLLM_SERVICE = "pulumi-python:dynamic/phoenix:VllmService"
ENGINE_GUESTS = [
    {
        "vmid": 203,
        "hostname": "ollama-a",
        "layer": "ollama",
        "network": {"bridge": "vmbr0", "ip": "10.0.10.203/24", "gateway": "10.0.10.1"},
        "gpus": [1],
        "features": ["docker"],  # a guest feature: the server waits for it too
        "ollama": {
            "model": "llama3.2:3b",
            "gpu_memory_mib": 2048,
            "environment": {"OLLAMA_KEEP_ALIVE": "1h"},
        },
    },
    {
        "vmid": 204,
        "hostname": "llama-a",
        "layer": "llamacpp",
        "network": {"bridge": "vmbr0", "ip": "10.0.10.204/24", "gateway": "10.0.10.1"},
        "gpus": [1],
        "llamacpp": {"model_path": "/models/q.gguf", "served_model_name": "q", "gpu_memory_mib": 2048},
    },
]


def registered(env: Environment) -> dict[str, Registration]:
    monitor = install("dev", {"phoenix:environment": "dev"})

    @pulumi.runtime.test
    def program() -> Any:
        build(env)
        return pulumi.Output.from_input(True)

    program()
    return monitor.by_name()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Environment:
    root = tmp_path_factory.mktemp("engines")
    shutil.copytree(ROOT / "config", root / "config")
    shutil.copytree(ROOT / "apparmor", root / "apparmor")
    path = root / "config/environments/dev/guests.json"
    doc = json.loads(path.read_text())
    doc["containers"] += ENGINE_GUESTS
    path.write_text(json.dumps(doc))
    return load_environment(root / "config", "dev")


def test_each_engine_is_a_model_server_child_of_its_guest_after_its_features(env: Environment) -> None:
    regs = registered(env)
    for vmid, engine in ((203, "ollama"), (204, "llamacpp")):
        server = regs[f"ct-{vmid}-{engine}"]
        assert server.type == MODEL_SERVER
        assert server.parent == regs[f"ct-{vmid}"].urn
        assert f"ct-{vmid}-vllm" not in regs
    # With features of its own, the server waits for them. (The mocks record no edge to the container,
    # for this server as for the vLLM guests' VllmService; the plan's order below shows it.)
    assert regs["ct-203-features"].urn in regs["ct-203-ollama"].dependencies


def test_the_servers_inputs_are_the_ones_phoenix_plan_plans(env: Environment) -> None:
    regs = registered(env)
    plan = {r.name: r for r in build_plan(env)}
    for ct in env.guests.containers:
        engine = ct.engine()
        assert engine is not None
        if engine[0] == "vllm":
            sent = regs[f"ct-{ct.vmid}-vllm"]
            assert sent.type == VLLM_SERVICE
            assert service_inputs(env, ct) == {
                k: v for k, v in sent.inputs.items() if k not in ("__provider", "version", "guest_instance")
            }
            continue
        sent = regs[f"ct-{ct.vmid}-{engine[0]}"]
        planned = server_inputs(env, ct)
        assert planned == {
            k: v for k, v in sent.inputs.items() if k not in ("__provider", "version", "guest_instance")
        }
        steps = deploy_steps(ModelServerInputs.from_props(planned))
        assert plan[f"{engine[0]}-{ct.vmid}"].calls == tuple(steps)
    assert regs["ct-203-ollama"].inputs["pull"][-2:] == ["pull", "llama3.2:3b"]
    assert regs["ct-203-ollama"].inputs["model"] == "llama3.2:3b"
    assert 'Environment="OLLAMA_KEEP_ALIVE=1h"' in regs["ct-203-ollama"].inputs["unit"]
    assert regs["ct-204-llamacpp"].inputs["checks"] == [
        {"path": "/health"},
        {"path": "/v1/models", "list": "data.id"},
    ]


def test_the_plan_orders_each_server_after_its_guest_and_the_guests_features(env: Environment) -> None:
    plan = {r.name: r for r in build_plan(env)}
    assert plan["ollama-203"].depends_on == ("ct-203", "ct-203-features")
    assert plan["llamacpp-204"].depends_on == ("ct-204",)
    assert plan["ollama-203"].kind == "ModelServer" and plan["ollama-203"].label == "llama3.2:3b"


def test_every_model_server_is_in_the_model_endpoints_export_by_hostname(env: Environment) -> None:
    exports: dict[str, Any] = {}

    @pulumi.runtime.test
    def program() -> Any:
        exports.update(build(env))
        return pulumi.Output.from_input(True)

    install("dev", {"phoenix:environment": "dev"})
    program()
    served = {
        ct.hostname: (key, engine.served_name, f"http://{ct.network.address}:{engine.listen_port}/v1")
        for ct in env.guests.containers
        if (found := ct.engine()) is not None
        for key, engine in [found]
    }
    assert {"ollama-a", "llama-a"} <= set(served) and any(key == "vllm" for key, _m, _u in served.values())
    got = {host: (e["engine"], e["model"], e["url"]) for host, e in exports["model_endpoints"].items()}
    assert got == served
    assert got["ollama-a"] == ("ollama", "llama3.2:3b", "http://10.0.10.203:11434/v1")
