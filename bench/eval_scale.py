"""Program evaluation at scale, under Pulumi mocks: Phoenix's program for N guests against the bare-SDK floor.

For N = 50 and 500 workload containers (the dev example's vLLM guest, copied with unique vmid, hostname,
IP and MAC), this times ``phoenix_components.program.build`` under mocks, counts the resources it
registers, then times a bare program that registers the same number of plain ``CustomResource``s — the
floor the SDK itself costs. It prints Phoenix / floor at each size (DESIGN.md target: ≤ 1.5×).

The synthetic environment is built from validated models directly (the checks that would refuse 500
guests on one 2-GPU host, like GPU memory, are not the point here). Nothing touches a host.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import settings

from phoenix_components.config.load import Environment, load_environment
from phoenix_components.config.models import Container
from phoenix_components.program import build

ROOT = Path(__file__).resolve().parents[1]


class _Mocks(pulumi.runtime.Mocks):
    """Echo inputs, plus the computed outputs the program reads (a layer's vmid, a clone's mountpoint)."""

    def __init__(self) -> None:
        self.count = 0
        self.inputs: list[dict[str, Any]] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.count += 1
        self.inputs.append(dict(args.inputs))
        outs = dict(args.inputs)
        if args.typ.endswith("TemplateLayer"):
            outs["vmid"] = 9000 + self.count
        elif args.typ.endswith("zfs:Clone"):
            outs["mountpoint"] = f"/{outs['name']}"
        elif args.typ.endswith("zfs:Snapshot"):
            outs["name"] = f"{outs['dataset']}@{outs['snapshot']}"
        elif args.typ.endswith("NvidiaHostDriver"):  # the GPU inventory the devN lines are built from
            outs["gpus"] = [{"index": i, "minor": i, "pci_bus_id": None} for i in range(16)]
        return f"{args.name}-id", outs

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        return {}


def scaled(env: Environment, guests: int) -> Environment:
    """``env`` with ``guests`` copies of its first container, each with its own identity."""
    template = env.guests.containers[0]
    network = ipaddress.IPv4Network("10.128.0.0/16")
    containers: list[Container] = []
    for i in range(guests):
        vmid = 10_000 + i
        address = network.network_address + 10 + i
        net = template.network.model_copy(
            update={
                "ip": f"{address}/16",
                "gateway": str(network.network_address + 1),
                "mac": f"BC:24:11:{(i >> 16) & 255:02X}:{(i >> 8) & 255:02X}:{i & 255:02X}",
            }
        )
        containers.append(
            template.model_copy(update={"vmid": vmid, "hostname": f"guest-{i}", "network": net})
        )
    return replace(env, guests=env.guests.model_copy(update={"containers": containers, "vms": []}))


def _run(program: Callable[[], Any], mocks: _Mocks) -> float:
    settings.ROOT.set(None)
    pulumi.runtime.set_mocks(mocks, project="phoenix", stack="bench", preview=False)
    pulumi.runtime.set_all_config({"phoenix:environment": "dev"})

    @pulumi.runtime.test
    def body() -> Any:
        program()
        return pulumi.Output.from_input(True)

    started = time.perf_counter()
    body()
    return time.perf_counter() - started


def floor(count: int) -> Callable[[], None]:
    """The bare floor: ``count`` plain resources with two small inputs each."""

    def program() -> None:
        for i in range(count):
            pulumi.CustomResource("bench:index:Plain", f"r{i}", {"n": i, "name": f"r{i}"})

    return program


def same_inputs_floor(inputs: list[dict[str, Any]]) -> Callable[[], None]:
    """Plain resources carrying exactly the inputs Phoenix registered: what the SDK costs for that data."""

    def program() -> None:
        for i, props in enumerate(inputs):
            pulumi.CustomResource(
                "bench:index:Plain", f"r{i}", {k: v for k, v in props.items() if v is not None}
            )

    return program


def measure(guests: int, rounds: int) -> tuple[float, float, float, int]:
    env = scaled(load_environment(ROOT / "config", "dev"), guests)
    phoenix_times, floor_times, same_times, count = [], [], [], 0
    for _ in range(rounds):
        mocks = _Mocks()
        phoenix_times.append(_run(lambda: build(env), mocks))
        count = mocks.count
        floor_times.append(_run(floor(count), _Mocks()))
        same_times.append(_run(same_inputs_floor(mocks.inputs), _Mocks()))
    return min(phoenix_times), min(floor_times), min(same_times), count


def main(quick: bool = False) -> None:
    print("== eval_scale: program evaluation under mocks, Phoenix vs the bare-SDK floor (best of rounds)")
    rounds = 1 if quick else 3
    for guests in (50, 500):
        phoenix, bare, same, count = measure(guests, rounds)
        print(
            f"  {guests:4d} guests: {count:5d} resources  phoenix {phoenix:6.2f}s  bare floor {bare:6.2f}s  "
            f"phoenix/floor = {phoenix / bare:.2f}x (target <= 1.5x)  |  same-inputs floor {same:6.2f}s  "
            f"phoenix/same-inputs = {phoenix / same:.2f}x"
        )


if __name__ == "__main__":
    main()
