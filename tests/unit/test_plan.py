"""`phoenix plan` / `graph`: every declared resource, dependencies first, the calls each makes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from phoenix_components.cli.plan import build_plan, render_dot, render_mermaid, render_plan
from phoenix_components.config.load import load_environment
from phoenix_components.config.models import VllmEngine
from phoenix_components.render.vllm import engine_args

ROOT = Path(__file__).resolve().parents[2]


def test_plan_is_in_dependency_order_and_names_come_from_identity() -> None:
    env = load_environment(ROOT / "config", "dev")
    plan = build_plan(env)
    position = {r.name: i for i, r in enumerate(plan)}
    assert len(position) == len(plan), "resource names are unique"
    for resource in plan:
        for dep in resource.depends_on:
            assert position[dep] < position[resource.name], f"{resource.name} is planned before {dep}"
    names = set(position)
    assert {"layer-base", "layer-gpu", "layer-docker", "layer-vllm"} <= names
    assert {f"ct-{ct.vmid}" for ct in env.guests.containers} <= names
    assert {f"vllm-{ct.vmid}" for ct in env.guests.containers if ct.vllm} <= names
    assert {f"vm-{vm.vmid}" for vm in env.guests.vms} <= names
    assert {f"apparmor-{p}" for p in env.host.apparmor_profiles} <= names


def test_layers_clone_their_parent_and_verify_the_linked_clone() -> None:
    plan = {r.name: r for r in build_plan(load_environment(ROOT / "config", "dev"))}
    gpu = plan["layer-gpu"]
    assert "layer-base" in gpu.depends_on
    steps = [str(s) for s in gpu.steps]
    assert any("lxc/$vmid(base)/clone" in s and "full=0" in s for s in steps)
    assert any("zfs get -H -o value origin" in s for s in steps)
    assert any("basevol-$vmid(base)-disk-0@__base__" in s for s in steps)
    assert any("pct exec" in s and "features/nvidia.sh" in s for s in steps)


def test_a_gpu_container_gets_its_devices_and_apparmor_line_before_start() -> None:
    env = load_environment(ROOT / "config", "dev")
    ct = env.guests.containers[1]
    plan = {r.name: r for r in build_plan(env)}
    steps = [str(s) for s in plan[f"ct-{ct.vmid}"].steps]
    config = next(s for s in steps if s.startswith("api  PUT") and "/config" in s)
    # The driver is managed: its device minor is read at deploy time, and the plan says so.
    assert f"dev0=/dev/nvidia<minor of GPU {ct.gpus[0]}>,mode=0666" in config
    apparmor = next(i for i, s in enumerate(steps) if "lxc.apparmor.profile" in s)
    start = next(i for i, s in enumerate(steps) if s.endswith("status/start"))
    assert apparmor < start


def test_vllm_engine_config_is_flattened_to_flags() -> None:
    engine = VllmEngine.model_validate(
        {
            "model": {
                "model": "org/m",
                "dtype": "bfloat16",
                "max_model_len": 4096,
                "trust_remote_code": True,
            },
            "cache": {"quantization": "awq", "gpu_memory_utilization": 0.5},
            "parallel": {"tensor_parallel_size": 2},
            "server": {"port": 8001, "served_model_name": "m"},
            "extra_args": ["--enable-prefix-caching"],
        }
    )
    argv = engine_args(engine)
    assert argv[:3] == ["/opt/vllm/bin/vllm", "serve", "org/m"]
    flags = " ".join(argv[3:])
    assert "--dtype bfloat16 --max-model-len 4096 --trust-remote-code" in flags
    assert "--quantization awq --gpu-memory-utilization 0.5" in flags
    assert "--tensor-parallel-size 2 --host 0.0.0.0 --port 8001 --served-model-name m" in flags
    assert argv[-1] == "--enable-prefix-caching"
    assert "--revision" not in flags and "--kv-cache-dtype" not in flags  # unset: vLLM's default


def test_false_booleans_are_left_out() -> None:
    engine = VllmEngine.model_validate({"model": {"model": "m"}, "server": {"served_model_name": "m"}})
    assert "--trust-remote-code" not in engine_args(engine)


def test_graph_renders_every_edge() -> None:
    env = load_environment(ROOT / "config", "prod")
    plan = build_plan(env)
    mermaid, dot = render_mermaid(plan), render_dot(plan)
    edges = [(d, r.name) for r in plan for d in r.depends_on]
    assert mermaid.startswith("flowchart LR")
    assert dot.startswith("digraph phoenix {")
    for dep, name in edges:
        assert f"{dep.replace('-', '_')} --> {name.replace('-', '_')}" in mermaid
        assert f'"{dep}" -> "{name}";' in dot
    assert "nothing is executed" in render_plan(env, plan)


def test_the_offline_plan_loads_no_component_and_no_pulumi_proxmoxve() -> None:
    """`phoenix plan` needs config, render and the providers' step functions only: importing the
    components would load pulumi_proxmoxve and every provider for nothing (a fresh interpreter shows it)."""
    probe = (
        "import sys, phoenix_components.cli.main\n"
        "print(sorted(m for m in sys.modules if m == 'pulumi_proxmoxve'"
        " or m.startswith('phoenix_components.components')))"
    )
    run = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"
