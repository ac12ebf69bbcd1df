"""VllmService: the vLLM server of a workload guest, as a systemd unit, gated on its health check.

``create``/``update`` write the unit rendered from the engine config into the guest and (re)start it in
one SSH session, then wait until ``/health`` answers 200 *and* ``/v1/models`` lists the served model
name. A server that is not ready by the deadline fails the deploy with a typed error naming the guest and
carrying the last lines of its journal. Probes run inside the guest (``pct exec``), so they work whatever
network sits between the Pulumi machine and the guest.

``guest_instance`` is the LxcGuest's ``instance`` output: a replaced guest keeps its vmid, so without it
the service would look unchanged while the new container has no unit at all. A new instance is an
update (deploy again into the new container), not a replace: a replace's late delete would run
``disable --now`` in the new container, on the service just deployed there.

A failed update puts the previous unit back (Pulumi keeps the previous inputs in state), as ModelServer
does. The steps are the shared model server's (``providers/model_server.py``) with vLLM's service name,
checks and interpreter; this resource keeps its own inputs, type token and provider class so stored
states keep working unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import ReadResult, UpdateResult

from providers.base import VERSION_KEY, ConvergingProvider, DynamicResource, Inputs, Options
from providers.channels.command import Executor
from providers.channels.steps import HostCommand
from providers.channels.targets import SshTarget
from providers.model_server import (
    RESTART,
    ModelServerNotReadyError,
    Probe,
    install_step,
    listing,
    observed,
    parse_probe,
    parse_status,
    probe_result,
    probe_step,
    read_service,
    ready,
    remove_service,
    restoring,
    run_probe,
    server_probe_argv,
    service_journal_argv,
    service_remove_argv,
    service_status_argv,
    unit_install_argv,
    wait_until_ready,
)
from providers.model_server import deployed as server_deployed

__all__ = ["RESTART", "observed", "parse_probe", "parse_status", "probe_result", "ready", "wait_until_ready"]

PROVIDER_VERSION = "1"
SERVICE = "vllm.service"
# vLLM's health gate: /health answers 200 and /v1/models lists the served name. The probe's Python: vLLM's
# venv, else the system one.
CHECKS = ({"path": "/health"}, {"path": "/v1/models", "list": "data.id"})
PYTHON = ("/opt/vllm/bin/python", "python3")


# --- 1. inputs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VllmServiceInputs(Inputs):
    node: str
    vmid: int
    unit: str
    unit_path: str
    served_model_name: str
    port: int
    startup_timeout_s: int = 900
    guest_instance: str | None = None  # the container it runs in (LxcGuest's instance output)
    guest_name: str = ""  # the guest's hostname, for messages only (never a change on its own)
    version: str = PROVIDER_VERSION


class VllmNotReadyError(ModelServerNotReadyError):
    """The server did not become ready before its deadline; the deploy stops here."""

    def __init__(
        self, host: str, vmid: int, served: str, waited: float, last: str, journal: str, guest_name: str = ""
    ) -> None:
        super().__init__(
            host, vmid, "vLLM", served, waited, last, journal, service=SERVICE, guest_name=guest_name
        )


# --- 2. pure logic: the shared model server's, with vLLM's service, probe and interpreter ---------------


def install_argv(inputs: VllmServiceInputs) -> list[str]:
    """Write the unit (stdin) atomically inside the guest, then enable and (re)start the service."""
    return unit_install_argv(inputs.vmid, inputs.unit_path, SERVICE)


def _probe(inputs: VllmServiceInputs) -> Probe:
    return Probe(inputs.vmid, inputs.port, CHECKS, PYTHON)


def probe_argv(inputs: VllmServiceInputs) -> list[str]:
    return server_probe_argv(_probe(inputs))


def journal_argv(inputs: VllmServiceInputs) -> list[str]:
    return service_journal_argv(inputs.vmid, SERVICE)


def status_argv(inputs: VllmServiceInputs) -> list[str]:
    return service_status_argv(inputs.vmid, inputs.unit_path, SERVICE)


def remove_argv(inputs: VllmServiceInputs) -> list[str]:
    return service_remove_argv(inputs.vmid, inputs.unit_path, SERVICE, "phoenix-vllm-rm")


def deploy_steps(inputs: VllmServiceInputs) -> list[HostCommand]:
    """Create and update alike: the unit written and the service (re)started in one session, then the
    probe, repeated until the server serves the model (or the deadline). ``phoenix plan`` renders these;
    ``converge`` runs them."""
    install = install_step(inputs.vmid, inputs.unit_path, SERVICE, inputs.unit)
    until = listing(CHECKS, inputs.served_model_name, inputs.startup_timeout_s)
    return [install, probe_step(_probe(inputs), "vLLM", until)]


def deployed(inputs: VllmServiceInputs, probe: Mapping[str, Any]) -> dict[str, Any]:
    """Every output once the server is ready (``probe`` is its last, good probe)."""
    return server_deployed(inputs.to_props(), inputs.unit, probe)


# --- 3. the provider -----------------------------------------------------------------------------------


@dataclass
class VllmServiceProvider(ConvergingProvider):
    inputs_type = VllmServiceInputs
    required = ("node", "vmid", "unit", "unit_path", "served_model_name", "port")
    replace_on = ("node", "vmid")
    update_on = ("unit", "unit_path", "served_model_name", "port", "startup_timeout_s", "guest_instance")

    def resource_id(self, inputs: VllmServiceInputs) -> str:
        return f"{inputs.vmid}/{SERVICE}"

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return read_service(self.ssh(), id_, props, status_argv(VllmServiceInputs.from_props(props)))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        remove_service(self.ssh(), remove_argv(VllmServiceInputs.from_props(props)))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        """Deploy ``news``; on failure the previous unit goes back (see ``model_server.restoring``)."""
        old = VllmServiceInputs.from_props(olds)
        with restoring(self.ssh, deploy_steps(old)[0], SERVICE, old.vmid):
            return UpdateResult(self.converge(VllmServiceInputs.from_props(news)))

    def converge(self, inputs: VllmServiceInputs) -> dict[str, Any]:
        """Install the unit and (re)start the server, then wait until it serves the model."""
        ssh = self.ssh()
        install, probe = deploy_steps(inputs)
        installed = ssh.run(install.argv, stdin=install.stdin, check=False)
        installed.check(install.what)  # the error says which step failed
        ok, last = wait_until_ready(
            lambda: self._probe(ssh, probe), inputs.served_model_name, inputs.startup_timeout_s
        )
        if not ok:
            journal = ssh.run(journal_argv(inputs), check=False)
            raise VllmNotReadyError(
                ssh.host,
                inputs.vmid,
                inputs.served_model_name,
                inputs.startup_timeout_s,
                json.dumps(last),
                journal.stdout or journal.stderr,
                inputs.guest_name,
            )
        return deployed(inputs, last)

    def _probe(self, ssh: Executor, probe: HostCommand) -> dict[str, Any]:
        return run_probe(ssh, probe)


# --- 4. the resource -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VllmServiceArgs:
    node: pulumi.Input[str]
    vmid: pulumi.Input[int]
    """The container the server runs in (``LxcGuest.vmid``: the data edge orders this after it)."""
    unit: pulumi.Input[str]
    """The systemd unit's text (``phoenix_components.render.vllm.render_unit``)."""
    unit_path: pulumi.Input[str]
    """Where the unit goes inside the guest, e.g. ``/etc/systemd/system/vllm.service``."""
    served_model_name: pulumi.Input[str]
    """The name ``/v1/models`` must list before the deploy counts as done."""
    port: pulumi.Input[int]
    startup_timeout_s: pulumi.Input[int] = 900
    """Seconds the server may take to load the model and answer."""
    guest_instance: pulumi.Input[str] | None = None
    """The LxcGuest's ``instance`` output: a replaced guest gets the service deployed again."""
    guest_name: str = ""
    """The guest's hostname, for messages only."""


class VllmService(DynamicResource, module="phoenix", name="VllmService"):
    """vLLM serving in a guest (see the module docstring). Token ``pulumi-python:dynamic/phoenix:VllmService``
    (unchanged from when the class was VllmServiceResource, so stored states keep their resources)."""

    unit_sha256: pulumi.Output[str]
    """The unit file's sha256 in the guest (a different one on refresh: edited there)."""
    active: pulumi.Output[bool]
    models: pulumi.Output[list[str]]
    """What ``/v1/models`` served when the deploy finished."""

    def __init__(
        self, name: str, args: VllmServiceArgs, *, ssh_target: SshTarget, opts: Options = None
    ) -> None:
        props = {**vars(args), VERSION_KEY: PROVIDER_VERSION}
        self._register(VllmServiceProvider(ssh_target=ssh_target), name, props, opts)
