"""Workload guests as Pulumi components: ``phoenix:guest:LxcGuest`` and ``phoenix:guest:VmGuest``.

Named from the vmid (``ct-201``, ``vm-231``), never from list position, so reordering guests.json changes
nothing. An LXC guest depends on the layer it is cloned from. The PVE resources, the ZFS clone of the
model weights and the vLLM service become children here as their providers land.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from phoenix_components.chain import TemplateLayer
from phoenix_components.models import Container, Vm


@dataclass(frozen=True)
class LxcGuestArgs:
    spec: Container
    layer: TemplateLayer


class LxcGuest(pulumi.ComponentResource):
    def __init__(self, name: str, args: LxcGuestArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("phoenix:guest:LxcGuest", name, None, opts)
        spec = args.spec
        self.vmid = spec.vmid
        self.address = spec.network.address
        self.endpoint: str | None = None
        if spec.vllm is not None and self.address is not None:
            self.endpoint = f"http://{self.address}:{spec.vllm.server.port}/v1"
        self.register_outputs(
            {
                "vmid": spec.vmid,
                "hostname": spec.hostname,
                "layer_key": args.layer.key,
                "ip": spec.network.ip,
                "gpus": list(spec.gpus),
                "endpoint": self.endpoint,
            }
        )


@dataclass(frozen=True)
class VmGuestArgs:
    spec: Vm


class VmGuest(pulumi.ComponentResource):
    def __init__(self, name: str, args: VmGuestArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("phoenix:guest:VmGuest", name, None, opts)
        spec = args.spec
        self.vmid = spec.vmid
        self.register_outputs({"vmid": spec.vmid, "name": spec.name, "ip": spec.network.ip})
