"""The host baseline as a Pulumi component: ``phoenix:host:HostBaseline``.

What every guest on the host relies on and no guest owns: the AppArmor profiles containers run under,
the pinned NVIDIA driver (and its GPU inventory), and the data datasets (model weights) that guests
clone. Guests depend on the pieces they use, so a profile is loaded before the first container that
names it starts, and the driver is in place before a layer is built with GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from phoenix_components.components.targets import ssh_target
from phoenix_components.config.load import Environment
from phoenix_components.render.baseline import dataset_properties, driver_inputs, passthrough_addresses
from phoenix_components.render.lxc import GpuMinors, declared_minors, inventory_minors
from providers.hostfiles.apparmor import AppArmorProfile, AppArmorProfileArgs
from providers.nvidia_driver import NvidiaHostDriver, NvidiaHostDriverArgs
from providers.zfs.dataset import ZfsDataset, ZfsDatasetArgs
from providers.zfs.snapshot import ZfsSnapshot, ZfsSnapshotArgs


@dataclass(frozen=True)
class HostBaselineArgs:
    environment: Environment


class HostBaseline(pulumi.ComponentResource):
    """``profiles[name]``, ``driver`` (``None`` without GPUs) and ``snapshots[dataset key]`` (what guests
    clone their data from) are what guests depend on; ``gpu_minors`` (GPU index -> device minor) is
    where their devN lines come from: the driver's inventory, or host.json when the driver is not
    managed."""

    def __init__(self, name: str, args: HostBaselineArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("phoenix:host:HostBaseline", name, None, opts)
        env, host = args.environment, args.environment.host
        target = ssh_target(host)
        child = pulumi.ResourceOptions(parent=self)
        self.profiles: dict[str, AppArmorProfile] = {
            profile: AppArmorProfile(
                f"apparmor-{profile}",
                AppArmorProfileArgs(name=profile, content=text),
                ssh_target=target,
                load_mode=host.apparmor_load,
                opts=child,
            )
            for profile, text in env.apparmor_profiles.items()
        }
        self.driver: NvidiaHostDriver | None = None
        if host.nvidia is not None and host.nvidia.manage:
            self.driver = NvidiaHostDriver(
                f"nvidia-driver-{host.node}",
                NvidiaHostDriverArgs(
                    **driver_inputs(host.nvidia, passthrough_addresses(host, env.guests))  # type: ignore[arg-type]
                ),
                ssh_target=target,
                opts=child,
            )
        self.gpu_minors: pulumi.Output[GpuMinors] = (
            self.driver.gpus.apply(lambda inventory: inventory_minors(host.gpus, inventory))
            if self.driver is not None
            else pulumi.Output.from_input(None).apply(lambda _: declared_minors(host.gpus))
        )
        self.datasets: dict[str, ZfsDataset] = {}
        self.snapshots: dict[str, ZfsSnapshot] = {}
        for key, data in env.guests.datasets.items():
            dataset = ZfsDataset(
                f"dataset-{key}",
                ZfsDatasetArgs(
                    name=data.dataset,
                    properties=dataset_properties(data),
                    adopt=data.adopt,
                    retain_on_delete=data.retained,
                ),
                ssh_target=target,
                opts=child,
            )
            self.datasets[key] = dataset
            self.snapshots[key] = ZfsSnapshot(
                f"dataset-{key}-{data.snapshot}",
                ZfsSnapshotArgs(dataset=dataset.name, snapshot=data.snapshot),
                ssh_target=target,
                # A kept dataset keeps its snapshot too (it may be the user's own, taken before adoption).
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(retain_on_delete=True))
                if data.retained
                else child,
            )
        self.register_outputs(
            {
                "snapshots": {key: snap.name for key, snap in self.snapshots.items()},
                "profiles": {name: p.sha256 for name, p in self.profiles.items()},
                "driver_version": self.driver.driver_version if self.driver else None,
                "gpus": self.driver.gpus if self.driver else [],
            }
        )
