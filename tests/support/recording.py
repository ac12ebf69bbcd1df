"""Pulumi mocks that record every registration with its parent and dependencies (structure tests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
from google.protobuf import json_format
from pulumi.runtime import rpc, settings
from pulumi.runtime.mocks import MockMonitor


@dataclass(frozen=True)
class Registration:
    urn: str
    type: str
    name: str
    parent: str
    dependencies: tuple[str, ...]
    custom: bool
    inputs: dict[str, Any] = field(repr=False)
    delete_before_replace: bool = False
    replacement_trigger: Any = None
    """The ``replacement_trigger`` option's value (the engine replaces the resource when it changes)."""
    retain_on_delete: bool = False
    """The ``retain_on_delete`` option: a destroy only forgets the resource."""
    source: tuple[str, int] | None = None
    """The source position the SDK sent (file URI, line): the user code that built the resource."""


class EchoMocks(pulumi.runtime.Mocks):
    """Outputs = inputs plus what the real provider would compute; the id is ``<name>-id``.

    Computed outputs matter: Pulumi drops an input whose value is ``None`` together with its dependency
    edge, so a layer's ``vmid`` must be known for the child layer's ``parent_vmid`` to depend on it.
    No CRUD runs under mocks.
    """

    def __init__(self, gpu_inventory: list[dict[str, Any]] | None = None) -> None:
        self._layer_vmids: dict[str, int] = {}
        # What NvidiaHostDriver's batched read reports; by default minor == index (a common host). Tests of
        # the devN rule pass a host whose minors differ.
        self.gpu_inventory = (
            gpu_inventory
            if gpu_inventory is not None
            else [
                {"index": i, "minor": i, "pci_bus_id": None, "device": f"/dev/nvidia{i}"} for i in range(16)
            ]
        )

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        outs = dict(args.inputs)
        if args.typ.endswith("phoenix:TemplateLayer"):
            vmid = int(outs["vmid_start"]) + len(self._layer_vmids)
            self._layer_vmids[args.name] = vmid
            outs.update(vmid=vmid, verified=True, dataset=f"{outs['pool']}/basevol-{vmid}-disk-0")
        elif args.typ.endswith("zfs:Clone") or args.typ.endswith("zfs:Dataset"):
            outs.update(mountpoint=f"/{outs['name']}", origin=outs.get("origin") or "-")
        elif args.typ.endswith("zfs:Snapshot"):
            outs["name"] = f"{outs['dataset']}@{outs['snapshot']}"
        elif args.typ.endswith("phoenix:NvidiaHostDriver"):
            outs.update(gpus=[dict(g) for g in self.gpu_inventory], majors={"nvidia": 195, "nvidia-uvm": 511})
        elif args.typ.endswith("phoenix:LxcGuest"):
            # An adopted guest is no layer's clone (providers/guests/lxc_guest.adopted_outputs).
            origin = (
                "adopted"
                if outs.get("adopt")
                else f"rpool/data/basevol-{outs['template_vmid']}-disk-0@__base__"
            )
            outs.update(mac="BC:24:11:00:00:01", origin=origin)
        return f"{args.name}-id", outs

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        return {}


class RecordingMonitor(MockMonitor):
    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.registrations: list[Registration] = []
        self.outputs: dict[str, dict[str, Any]] = {}  # urn -> what the component registered

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.registrations.append(
                Registration(
                    urn=response.urn,
                    type=request.type,
                    name=request.name,
                    parent=request.parent,
                    dependencies=tuple(request.dependencies),
                    custom=bool(request.custom),
                    inputs=rpc.deserialize_properties(request.object),
                    delete_before_replace=bool(request.deleteBeforeReplace),
                    retain_on_delete=bool(request.retainOnDelete),
                    source=(
                        (request.sourcePosition.uri, request.sourcePosition.line)
                        if request.HasField("sourcePosition")
                        else None
                    ),
                    replacement_trigger=(
                        json_format.MessageToDict(request.replacement_trigger)
                        if request.HasField("replacement_trigger")
                        else None
                    ),
                )
            )
        return response

    def RegisterResourceOutputs(self, request: Any) -> Any:
        self.outputs[request.urn] = rpc.deserialize_properties(request.outputs)
        return super().RegisterResourceOutputs(request)

    def by_name(self) -> dict[str, Registration]:
        return {r.name: r for r in self.registrations}


def install(
    stack: str,
    config: dict[str, str] | None = None,
    project: str = "phoenix",
    mocks: pulumi.runtime.Mocks | None = None,
    secret_keys: list[str] | None = None,
) -> RecordingMonitor:
    """Fresh mocks for one test: call from a fixture, never at import (the last set_mocks wins)."""
    monitor = RecordingMonitor(mocks or EchoMocks())
    settings.ROOT.set(None)  # a fresh root Stack for this stack name; set_mocks keeps an existing one
    pulumi.runtime.set_mocks(monitor.mocks, project=project, stack=stack, preview=False, monitor=monitor)
    pulumi.runtime.set_all_config(dict(config or {}), secret_keys or [])
    return monitor
