"""devN paths come from the GPU minors the host's NVIDIA inventory reads, never from the GPU index.

The host here has its minors the other way round from nvidia-smi's indices (the kernel probed the GPUs
in another order than PCI enumeration): GPU 0 is /dev/nvidia1 and GPU 1 is /dev/nvidia0. That inventory
goes from the driver's batched read (parse_read) through the driver resource's outputs into the
guests' and layer builds' devN lines, pure and under Pulumi mocks (the whole dev program).
"""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import pytest

from phoenix_components.components.chain import build_devices
from phoenix_components.config.load import load_environment
from phoenix_components.render.errors import GpuMinorError
from phoenix_components.render.lxc import container_params, inventory_minors
from providers.nvidia_driver import NvidiaHostDriverInputs, driver_outputs, parse_read
from tests.mocks.test_program import run_program
from tests.support.recording import EchoMocks, install

ROOT = Path(__file__).resolve().parents[2]
DEV = load_environment(ROOT / "config", "dev")  # GPU 0 at 0000:41:00.0, GPU 1 at 0000:42:00.0
CONTROLS = ["/dev/nvidiactl,mode=0666", "/dev/nvidia-uvm,mode=0666", "/dev/nvidia-uvm-tools,mode=0666"]

# What the batched read prints on that host: minors swapped against the indices.
READ = """@@driver_version 0
580.76.05
580.76.05
@@gpus 0
0, GPU-aaaaaaaa-0000-0000-0000-000000000000, NVIDIA RTX A6000, 49140, 00000000:41:00.0
1, GPU-bbbbbbbb-0000-0000-0000-000000000000, NVIDIA RTX A6000, 49140, 00000000:42:00.0
@@devices
Character devices:
195 nvidia
508 nvidia-uvm
@@information
Model: NVIDIA RTX A6000
Bus Location: 0000:42:00.0
Device Minor: 0
@@information
Model: NVIDIA RTX A6000
Bus Location: 0000:41:00.0
Device Minor: 1
"""


def swapped_inventory() -> list[dict[str, Any]]:
    """``NvidiaHostDriver.gpus`` as the provider would output it after that read."""
    assert DEV.host.nvidia is not None
    inputs = NvidiaHostDriverInputs(
        host="pve-dev.lan",
        driver_version=DEV.host.nvidia.version,
        runfile_url=DEV.host.nvidia.runfile_url,
        sha256=DEV.host.nvidia.sha256,
    )
    gpus: list[dict[str, Any]] = driver_outputs(inputs, parse_read(READ))["gpus"]
    return gpus


def devices(params: dict[str, str | int]) -> list[str | int]:
    return [params[k] for k in sorted(params) if k.startswith("dev")]


def test_the_inventory_maps_each_index_to_the_minor_the_kernel_gave_it() -> None:
    assert inventory_minors(DEV.host.gpus, swapped_inventory()) == {"0": 1, "1": 0}


def test_a_guest_on_gpu_1_gets_dev_nvidia0_on_that_host() -> None:
    minors = inventory_minors(DEV.host.gpus, swapped_inventory())
    granite = DEV.guests.containers[1]  # gpus [1]
    assert granite.gpus == [1]
    assert devices(container_params(granite, {"models": "/m"}, minors)) == [
        "/dev/nvidia0,mode=0666",
        *CONTROLS,
    ]
    qwen = DEV.guests.containers[0]  # gpus [0]
    assert devices(container_params(qwen, {"models": "/m"}, minors)) == ["/dev/nvidia1,mode=0666", *CONTROLS]


def test_a_layer_built_with_gpus_gets_every_gpu_by_its_minor() -> None:
    minors = inventory_minors(DEV.host.gpus, swapped_inventory())
    assert build_devices(DEV, "gpu", minors) == [
        "/dev/nvidia1,mode=0666",
        "/dev/nvidia0,mode=0666",
        *CONTROLS,
    ]
    assert build_devices(DEV, "base", minors) == []


def test_a_gpu_the_host_does_not_have_is_an_error_naming_the_guest() -> None:
    one = [g for g in swapped_inventory() if g["index"] == 0]
    minors = inventory_minors(DEV.host.gpus, one)
    with pytest.raises(GpuMinorError, match=r"CT 202 \(vllm-granite\): no device minor for GPU 1"):
        container_params(DEV.guests.containers[1], {"models": "/m"}, minors)


def test_host_json_that_contradicts_the_inventory_is_an_error() -> None:
    declared = [g.model_copy(update={"minor": g.index}) for g in DEV.host.gpus]  # says minor == index
    with pytest.raises(
        GpuMinorError, match=r"GPU 0 is /dev/nvidia1 on the host, host.json gpus declares minor 0"
    ):
        inventory_minors(declared, swapped_inventory())
    moved = [DEV.host.gpus[0].model_copy(update={"pci": "0000:81:00.0"})]
    with pytest.raises(GpuMinorError, match=r"GPU 0 is at 0000:41:00.0 on the host"):
        inventory_minors(moved, swapped_inventory())


def test_the_dev_program_sends_the_inventory_minors_under_mocks() -> None:
    """The whole dev program: the driver resource's output reaches the guests' and the layers' devN."""
    monitor = install(
        "dev", {"phoenix:environment": "dev"}, mocks=EchoMocks(gpu_inventory=swapped_inventory())
    )
    run_program(lambda: runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__"))
    regs = monitor.by_name()
    assert devices(regs["ct-201-container"].inputs["params"])[0] == "/dev/nvidia1,mode=0666"
    assert devices(regs["ct-202-container"].inputs["params"])[0] == "/dev/nvidia0,mode=0666"
    assert regs["layer-gpu-template"].inputs["build_devices"][:2] == [
        "/dev/nvidia1,mode=0666",
        "/dev/nvidia0,mode=0666",
    ]
    # and the guests wait for the driver whose inventory they use
    driver = regs["nvidia-driver-pve-dev"].urn
    assert driver in regs["ct-202-container"].dependencies
