"""TemplateLayer: one immutable, content-addressed layer of the template chain, as a real PVE template.

Build (``create``): a linked clone of the parent layer's template (or a new container from the OS
template) → start → each feature script via ``pct exec`` (script on stdin, fail-fast) → smoke test →
stop → build-only devices removed → ``template`` → verify over SSH that the layer's ZFS dataset is a clone
of the parent's ``@__base__`` snapshot (a full copy is refused loudly: the bash original copied every
layer without noticing).

A layer never changes in place: its ``key`` hashes everything that shapes its contents, so a new key
(or a new parent) replaces it, create-before-delete, on a new vmid from the layer range. A failed build
destroys its half-made container before raising, so nothing is left on the host that state does not know.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, ReadResult, UpdateResult

from providers.base import (
    Inputs,
    as_int,
    attach_cleanup,
    convert,
    has_unknowns,
    require,
)
from providers.channels.pct import exec_argv, script_argv
from providers.channels.steps import ApiCall, HostCommand
from providers.errors import HostError, PhoenixError
from providers.guests.common import (
    GuestProvider,
    LinkedCheck,
    LinkedCloneResource,
    Step,
    guest_path,
    stop_and_destroy,
    unless_missing,
)

PROVIDER_VERSION = "1"
BUILT_OUTPUTS: tuple[str, ...] = ("vmid", "volume", "dataset", "origin", "verified", "smoke_output")
PLAN_VMID = "<vmid>"  # a layer's vmid is allocated at build time; the plan names it so


@dataclass(frozen=True)
class Feature:
    name: str
    script: str
    env: dict[str, str] = field(default_factory=dict)


def _features(value: Any) -> list[Feature]:
    return [Feature(f["name"], f["script"], dict(f.get("env") or {})) for f in value]


@dataclass(frozen=True)
class TemplateLayerInputs(Inputs):
    node: str
    layer: str
    key: str
    hostname: str
    vmid_start: int
    vmid_end: int
    storage: str  # the zfspool storage id, e.g. local-zfs
    pool: str  # the dataset that storage points at, e.g. rpool/data
    features: list[Feature] = field(metadata=convert(_features))
    smoke_test: list[str] = field(metadata=convert(list))
    cores: int = 2
    memory_mib: int = 2048
    disk_gib: int = 8
    nesting: bool = False
    build_devices: list[str] = field(default_factory=list, metadata=convert(list))  # devN while building
    net0: str = ""
    parent_vmid: int | None = None
    os_template: str | None = None  # volid, e.g. local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst
    task_timeout_s: int = 600
    feature_timeout_s: int = 3600
    version: str = PROVIDER_VERSION


# ------------------------------------------------------------------ pure logic


class LayerBuildError(HostError):
    """A layer build failed at a named step; the half-made container was removed."""

    def __init__(self, host: str, layer: str, vmid: int, step: str, cause: Exception) -> None:
        self.layer, self.vmid, self.step = layer, vmid, step
        super().__init__(host, f"layer {layer!r} (CT {vmid}) failed at {step}: {cause}")


def free_vmid(used: set[int], start: int, end: int) -> int:
    """The lowest vmid in ``[start, end]`` not in ``used``."""
    for vmid in range(start, end + 1):
        if vmid not in used:
            return vmid
    raise PhoenixError(f"no free vmid in the layer range {start}-{end}: all {end - start + 1} are in use")


def build_config(inputs: TemplateLayerInputs) -> dict[str, Any]:
    """Resources and build-only devices of the build container."""
    config: dict[str, Any] = {"cores": inputs.cores, "memory": inputs.memory_mib}
    if inputs.nesting:
        config["features"] = "nesting=1"
    for i, device in enumerate(inputs.build_devices):
        config[f"dev{i}"] = device
    return config


# ------------------------------------------------------------------ steps, as data


def allocation_steps(inputs: TemplateLayerInputs) -> list[ApiCall]:
    """The reads that find the vmids in use (containers and VMs share one vmid space)."""
    return [ApiCall("GET", f"nodes/{inputs.node}/{kind}", step=f"list {kind}") for kind in ("lxc", "qemu")]


def create_step(inputs: TemplateLayerInputs, vmid: int | str, parent: int | str | None = None) -> ApiCall:
    """The build container: a linked clone of the parent's template, or a new CT from the OS template."""
    node, parent = inputs.node, inputs.parent_vmid if parent is None else parent
    if parent is None:
        params: dict[str, Any] = {
            "vmid": vmid,
            "hostname": inputs.hostname,
            "ostemplate": inputs.os_template,
            "rootfs": f"{inputs.storage}:{inputs.disk_gib}",
            "unprivileged": 1,
        }
        if inputs.net0:
            params["net0"] = inputs.net0
        return ApiCall("POST", f"nodes/{node}/lxc", params, step="create", wait="task")
    return ApiCall(
        "POST",
        f"{guest_path(node, parent)}/clone",
        {"newid": vmid, "hostname": inputs.hostname, "full": 0},
        step="linked clone",
        wait="task",
    )


def build_steps(inputs: TemplateLayerInputs, vmid: int | str, parent: int | str | None = None) -> list[Step]:
    """Everything after the container exists: configure, start, each feature, smoke test, stop, drop the
    build-only devices, make it a template, verify it is a linked clone of its parent."""
    path = guest_path(inputs.node, vmid)
    steps: list[Step] = [
        ApiCall("PUT", f"{path}/config", build_config(inputs), step="configure"),
        ApiCall("POST", f"{path}/status/start", step="start", wait="task"),
    ]
    for feature in inputs.features:
        steps.append(
            HostCommand(
                f"feature {feature.name}",
                script_argv(vmid, feature.env),
                feature.script,
                f"features/{feature.name}.sh",
                timeout_s=inputs.feature_timeout_s,
            )
        )
    steps.append(
        HostCommand("smoke test", exec_argv(vmid, inputs.smoke_test), timeout_s=inputs.task_timeout_s)
    )
    steps.append(ApiCall("POST", f"{path}/status/stop", step="stop", wait="task"))
    if inputs.build_devices:  # a clone of this template must not inherit the build's GPUs
        devices = ",".join(f"dev{i}" for i in range(len(inputs.build_devices)))
        steps.append(ApiCall("PUT", f"{path}/config", {"delete": devices}, step="remove build devices"))
    steps.append(ApiCall("POST", f"{path}/template", step="template", wait="upid"))
    steps.append(
        LinkedCheck(
            f"{path}/config",
            inputs.pool,
            inputs.parent_vmid if parent is None else parent,
            f"{inputs.pool}/basevol-{vmid}-disk-0",
        )
    )
    return steps


def plan_steps(
    inputs: TemplateLayerInputs, vmid: int | str = PLAN_VMID, parent: int | str | None = None
) -> list[Step]:
    """Every step of a first ``up`` in order. ``vmid`` names the vmid the build will allocate, ``parent``
    the parent's where it is not known yet (``phoenix plan``: ``$vmid(base)``; default: the input's)."""
    return [
        *allocation_steps(inputs),
        create_step(inputs, vmid, parent),
        *build_steps(inputs, vmid, parent),
    ]


def built_outputs(inputs: TemplateLayerInputs, vmid: int, answers: Mapping[str, Any]) -> dict[str, Any]:
    """The outputs of a finished build, from what its steps answered."""
    return {
        **inputs.to_props(),
        "vmid": vmid,
        **{k: answers["verify linked clone"][k] for k in ("volume", "dataset", "origin")},
        "verified": True,
        "smoke_output": answers["smoke test"].stdout[-2000:],
    }


# ------------------------------------------------------------------ provider

_ALLOCATE = threading.Lock()  # two layers built at once in one provider host must not pick the same vmid


@dataclass
class TemplateLayerProvider(GuestProvider):
    inputs_class = TemplateLayerInputs
    replace_on = ("node", "key", "parent_vmid", "os_template", "storage", "pool")
    update_on = ("hostname", "vmid_start", "vmid_end", "task_timeout_s", "feature_timeout_s")

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = require(news, ["node", "layer", "key", "features", "smoke_test", "storage", "pool"])
        if (
            not has_unknowns(news)
            and not failures
            and (news.get("parent_vmid") is None) == (news.get("os_template") is None)
        ):
            failures.append(CheckFailure("parent_vmid", "exactly one of parent_vmid and os_template"))
        return self.checked(news, failures)

    def create(self, props: dict[str, Any]) -> CreateResult:
        inputs = TemplateLayerInputs.from_props(props)
        runner = self.runner(inputs.task_timeout_s)
        host = runner.api.host
        with _ALLOCATE:
            listed = runner.run(allocation_steps(inputs))
            used = {as_int(g["vmid"]) for guests in listed.values() for g in guests}
            vmid = free_vmid(used, inputs.vmid_start, inputs.vmid_end)
            create = create_step(inputs, vmid)
            try:
                runner.one(create)
            except PhoenixError as error:
                raise LayerBuildError(host, inputs.layer, vmid, create.label, error) from error
        try:
            answers = runner.run(build_steps(inputs, vmid))
        except PhoenixError as error:
            failure = LayerBuildError(host, inputs.layer, vmid, runner.failed or "build", error)
            path = guest_path(inputs.node, vmid)
            attach_cleanup(
                failure,
                lambda: stop_and_destroy(runner, path, what="failed build"),
                f"removing the failed build CT {vmid}",
            )
            raise failure from error
        return CreateResult(str(vmid), built_outputs(inputs, vmid, answers))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        # Only non-identity inputs change in place (timeouts, range); the built template is untouched.
        built = {k: olds[k] for k in BUILT_OUTPUTS if k in olds}
        return UpdateResult({**TemplateLayerInputs.from_props(news).to_props(), **built})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        api = self.pve()
        config = unless_missing(lambda: api.get(f"{guest_path(props['node'], id_)}/config"))
        if config is None:
            return ReadResult(None, {})
        if as_int(config.get("template", 0)) != 1 or config.get("hostname") != props.get("hostname"):
            return ReadResult(None, {})  # the vmid now holds something else: the layer is gone
        return ReadResult(id_, {**props, "volume": str(config.get("rootfs", props.get("volume")))})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        inputs = TemplateLayerInputs.from_props(props)
        runner = self.runner(inputs.task_timeout_s, ssh=False)
        stop_and_destroy(runner, guest_path(inputs.node, id_), what="layer")


@dataclass(frozen=True)
class TemplateLayerResourceArgs:
    """The inputs of a :class:`TemplateLayer` (named ``ResourceArgs`` because
    ``phoenix_components.components.chain.TemplateLayerArgs`` is the component's)."""

    node: pulumi.Input[str]
    layer: pulumi.Input[str]
    key: pulumi.Input[str]
    """The layer's content key (``Environment.layer_key``): a new key is a new template."""
    hostname: pulumi.Input[str]
    vmid_start: pulumi.Input[int]
    vmid_end: pulumi.Input[int]
    """The layer vmid range: the build takes its lowest free vmid."""
    storage: pulumi.Input[str]
    """The zfspool storage id (``local-zfs``); ``pool`` is the dataset it points at (``rpool/data``)."""
    pool: pulumi.Input[str]
    features: pulumi.Input[Sequence[Mapping[str, Any]]]
    """``{"name", "script", "env"}`` per feature, run in this order."""
    smoke_test: pulumi.Input[Sequence[str]]
    cores: pulumi.Input[int] = 2
    memory_mib: pulumi.Input[int] = 2048
    disk_gib: pulumi.Input[int] = 8
    nesting: pulumi.Input[bool] = False
    build_devices: pulumi.Input[Sequence[str]] = ()
    net0: pulumi.Input[str] = ""
    parent_vmid: pulumi.Input[int] | None = None
    """The parent layer's template (``TemplateLayer.vmid``); exactly one of this and ``os_template``."""
    os_template: pulumi.Input[str] | None = None
    task_timeout_s: pulumi.Input[int] = 600
    feature_timeout_s: pulumi.Input[int] = 3600


class TemplateLayer(LinkedCloneResource[TemplateLayerResourceArgs], module="phoenix", name="TemplateLayer"):
    """A layer's template (module docstring). Token ``pulumi-python:dynamic/phoenix:TemplateLayer``."""

    key: pulumi.Output[str]
    verified: pulumi.Output[bool]
    smoke_output: pulumi.Output[str]

    provider_class = TemplateLayerProvider
    provider_version = PROVIDER_VERSION
