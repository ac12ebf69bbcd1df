"""A test-only two-layer chain for the fault suite: the real TemplateLayer provider under the real Pulumi
engine (inline programs through pulumi.automation), stand-in features.

``base`` is made from the OS template (vmids 9100-9104), ``child`` is a linked clone of it (9110-9114), so
with a fresh fake each lands on the first vmid of its range. The feature scripts are stand-ins that run in
the lab's minimal Debian rootfs (bash, coreutils): they write a marker the smoke test reads back. ``child``
can be given a slow feature (``slow_s``) that first writes ``/phoenix-started`` so a test can tell it is
running, then sleeps: the window in which the SSH connection is cut.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi

from providers.guests.template_layer import TemplateLayer, TemplateLayerResourceArgs
from tests.lab.host import LabHost
from tests.lab.pve import NODE, OS_TEMPLATE, ZFS_STORAGE
from tests.support.engine import Engine

BASE_RANGE = (9100, 9104)
CHILD_RANGE = (9110, 9114)
STARTED_MARKER = "/phoenix-started"
TASK_TIMEOUT_S = 120  # a create from the OS template copies a Debian rootfs through FUSE


def feature(name: str, script: str) -> dict[str, Any]:
    return {"name": name, "script": script, "env": {"PHOENIX_TARGET": "lxc"}}


def marker_feature(layer: str) -> dict[str, Any]:
    return feature(f"{layer}-marker", f"set -eu\necho {layer} >> /etc/phoenix-layers\n")


def slow_feature(seconds: float) -> dict[str, Any]:
    return feature("slow", f"set -eu\ntouch {STARTED_MARKER}\nsleep {seconds:g}\necho ok\n")


def layer_inputs(
    host: LabHost, layer: str, vmids: tuple[int, int], features: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "node": NODE,
        "layer": layer,
        "key": f"{layer}-key-1",
        "hostname": f"layer-{layer}",
        "vmid_start": vmids[0],
        "vmid_end": vmids[1],
        "storage": ZFS_STORAGE,
        "pool": host.zpool.data,
        "features": features,
        "smoke_test": ["cat", "/etc/phoenix-layers"],
        "cores": 1,
        "memory_mib": 256,
        "disk_gib": 1,
        "task_timeout_s": TASK_TIMEOUT_S,
        "feature_timeout_s": 60,
    }


@dataclass(frozen=True)
class Chain:
    """Which layers the program declares; the test flips these between runs."""

    child: bool = True
    slow_s: float | None = None
    child_features: list[dict[str, Any]] = field(default_factory=list)


def chain_program(host: LabHost, chain: Chain = Chain()) -> Callable[[], dict[str, Any]]:
    def run() -> dict[str, Any]:
        ssh, api = host.ssh_target(), host.target()
        base_inputs = layer_inputs(host, "base", BASE_RANGE, [marker_feature("base")])
        base = TemplateLayer(
            "base",
            TemplateLayerResourceArgs(**base_inputs, os_template=OS_TEMPLATE),
            ssh_target=ssh,
            api_target=api,
        )
        exports: dict[str, Any] = {"base": base.vmid}
        if chain.child:
            features = [marker_feature("child"), *chain.child_features]
            if chain.slow_s is not None:
                features.append(slow_feature(chain.slow_s))
            child = TemplateLayer(
                "child",
                TemplateLayerResourceArgs(
                    **layer_inputs(host, "child", CHILD_RANGE, features), parent_vmid=base.vmid
                ),
                ssh_target=ssh,
                api_target=api,
                opts=pulumi.ResourceOptions(depends_on=[base]),
            )
            exports["child"] = child.vmid
        return exports

    return run


def chain_engine(host: LabHost, root: Path, **env: str) -> Engine:
    """An empty stack run by the real Pulumi engine, the lab's secrets as its secret config and lab-fast
    PVE retries in the environment of the provider processes the engine starts."""
    return Engine(
        root,
        "faults",
        program=chain_program(host, Chain(child=False)),
        secrets={
            "phoenix:sshPrivateKey": host.sshd.user_private_key,
            "phoenix:pvePassword": host.pve.password,
        },
        env={"PHOENIX_PVE_LOCK_BUDGET_S": "1.5", "PHOENIX_PVE_RETRY_DELAY_S": "0.05", **env},
    )


def guests(host: LabHost) -> list[int]:
    """The vmids the fake holds now."""
    return sorted(host.pve.call(lambda: [ct.vmid for ct in host.pve.pve.cts]))


def guest_volumes(host: LabHost) -> list[str]:
    """Guest datasets and snapshots on the pool (PVE's names), sorted."""
    return sorted(
        name
        for name in host.zpool.datasets(host.zpool.data)
        if name.rsplit("/", 1)[-1].startswith(("subvol-", "basevol-"))
    )
