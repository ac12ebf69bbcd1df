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


def test_each_planned_resource_holds_its_providers_own_create_steps() -> None:
    """The plan's steps are the providers' step functions fed the components' inputs (issue 12, point 5):
    what a hand-written plan got wrong is now whatever the provider does."""
    from providers.channels.steps import HostCommand
    from providers.hostfiles.apparmor import load_argv
    from providers.nvidia_driver import (
        NODES_UNIT,
        PERSISTENCED_UNIT,
        PREREQUISITES,
        NvidiaHostDriverInputs,
        NvidiaHostPaths,
        install_argv,
        read_argv,
    )
    from providers.zfs.common import create_argv

    env = load_environment(ROOT / "config", "dev")
    plan = {r.name: r for r in build_plan(env)}
    for resource in plan.values():
        if resource.kind in ("download.File", "VmLegacy", "PromotedLayer"):
            assert resource.calls == (), "pulumi-proxmoxve resources have no Phoenix steps"
        else:
            assert resource.calls, f"{resource.name} has its provider's steps"
            assert len(resource.steps) >= len(resource.calls)
    # ZFS: no `zfs create -p` (the provider never creates parents); properties as check stores them.
    data = env.guests.datasets["models"]
    made = plan["dataset-models"].calls[0]
    assert isinstance(made, HostCommand)
    assert made.argv == create_argv(data.dataset, {"compression": data.compression, "quota": "536870912000"})
    # A layer is stopped (status/stop) before it becomes a template, as the build does.
    layer = [str(s) for s in plan["layer-base"].steps]
    assert any(s.endswith("/status/stop") for s in layer) and not any("shutdown" in s for s in layer)
    # AppArmor: what host.json's apparmor_load says.
    profile = next(iter(env.apparmor_profiles))
    load = plan[f"apparmor-{profile}"].calls[1]
    assert isinstance(load, HostCommand)
    assert load.argv == load_argv(f"/etc/apparmor.d/{profile}", env.host.apparmor_load)
    # NVIDIA: the provider's batched read, the host preparation (prerequisites, nouveau), the install, the
    # read again, the device-node units.
    nvidia = env.host.nvidia
    assert nvidia is not None and nvidia.manage
    driver = [c.argv for c in plan[f"nvidia-driver-{env.host.node}"].calls if isinstance(c, HostCommand)]
    paths = NvidiaHostPaths()
    assert driver[0] == read_argv(paths) == driver[6]
    assert driver[1][3] == "phoenix-nvidia-host-read"
    assert driver[2][2:6] == ["apt-get", "install", "-y", "--no-install-recommends"]
    assert driver[2][6:] == ["proxmox-headers-<uname -r>", *PREREQUISITES[1:]]
    assert driver[3][4] == "/etc/modprobe.d/blacklist-nouveau.conf"
    assert driver[4] == ["update-initramfs", "-u"]
    pinned = NvidiaHostDriverInputs(env.host.ssh.host, nvidia.version, nvidia.runfile_url, nvidia.sha256)
    assert driver[5] == install_argv(pinned, paths)
    assert driver[-1] == ["systemctl", "enable", "--now", NODES_UNIT, PERSISTENCED_UNIT]


def test_an_unmanaged_driver_is_not_planned(tmp_path: Path) -> None:
    """The baseline makes the driver resource only when ``nvidia.manage``; the plan agrees."""
    import json
    import shutil

    shutil.copytree(ROOT / "config", tmp_path / "config")
    shutil.copytree(ROOT / "apparmor", tmp_path / "apparmor")
    host_file = tmp_path / "config/environments/dev/host.json"
    host = json.loads(host_file.read_text())
    host["nvidia"]["manage"] = False
    host["gpus"] = [{**g, "minor": g["index"]} for g in host["gpus"]]
    host_file.write_text(json.dumps(host))
    env = load_environment(tmp_path / "config", "dev")
    plan = build_plan(env)
    assert not [r for r in plan if r.kind == "NvidiaHostDriver"]
    assert not any("nvidia-driver" in dep for r in plan for dep in r.depends_on)
