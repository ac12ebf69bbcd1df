"""Pulumi mocks that record every registration with its parent and dependencies (structure tests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
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


class EchoMocks(pulumi.runtime.Mocks):
    """Outputs = inputs; the id is ``<name>-id``. No CRUD runs under mocks."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        return f"{args.name}-id", dict(args.inputs)

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
) -> RecordingMonitor:
    """Fresh mocks for one test: call from a fixture, never at import (the last set_mocks wins)."""
    monitor = RecordingMonitor(mocks or EchoMocks())
    settings.ROOT.set(None)  # a fresh root Stack for this stack name; set_mocks keeps an existing one
    pulumi.runtime.set_mocks(monitor.mocks, project=project, stack=stack, preview=False, monitor=monitor)
    pulumi.runtime.set_all_config(dict(config or {}))
    return monitor
