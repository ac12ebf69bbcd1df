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
from dataclasses import asdict, dataclass, field
from typing import Any

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    UpdateResult,
)

from providers.base import (
    DynamicResource,
    HostProvider,
    as_int,
    diff_inputs,
    has_unknowns,
    require,
    with_defaults,
)
from providers.channels.pct import exec_argv, script_argv
from providers.channels.pve import is_missing
from providers.channels.targets import ApiTarget, SshTarget
from providers.errors import HostError, PhoenixError, PveError

PROVIDER_VERSION = "1"
BASE_SNAPSHOT = "__base__"  # PVE's ZFS plugin names a template's snapshot this way
BUILT_OUTPUTS: tuple[str, ...] = ("vmid", "volume", "dataset", "origin", "verified", "smoke_output")


@dataclass(frozen=True)
class Feature:
    name: str
    script: str
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TemplateLayerInputs:
    node: str
    layer: str
    key: str
    hostname: str
    vmid_start: int
    vmid_end: int
    storage: str  # the zfspool storage id, e.g. local-zfs
    pool: str  # the dataset that storage points at, e.g. rpool/data
    features: list[Feature]
    smoke_test: list[str]
    cores: int = 2
    memory_mib: int = 2048
    disk_gib: int = 8
    nesting: bool = False
    build_devices: list[str] = field(default_factory=list)  # devN values while building (GPUs)
    net0: str = ""
    parent_vmid: int | None = None
    os_template: str | None = None  # volid, e.g. local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst
    task_timeout_s: int = 600
    feature_timeout_s: int = 3600
    version: str = PROVIDER_VERSION

    @classmethod
    def from_props(cls, props: dict[str, Any]) -> TemplateLayerInputs:
        ints = (
            "vmid_start",
            "vmid_end",
            "cores",
            "memory_mib",
            "disk_gib",
            "task_timeout_s",
            "feature_timeout_s",
        )
        values = {k: props[k] for k in cls.__dataclass_fields__ if k in props}
        for key in ints:
            if key in values:
                values[key] = as_int(values[key])
        if values.get("parent_vmid") is not None:
            values["parent_vmid"] = as_int(values["parent_vmid"])
        values["features"] = [
            Feature(f["name"], f["script"], dict(f.get("env") or {})) for f in props["features"]
        ]
        values["smoke_test"] = list(props["smoke_test"])
        values["build_devices"] = list(props.get("build_devices") or [])
        return cls(**values)

    def to_props(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------ pure logic


class LayerBuildError(HostError):
    """A layer build failed at a named step; the half-made container was removed."""

    def __init__(self, host: str, layer: str, vmid: int, step: str, cause: Exception) -> None:
        self.layer, self.vmid, self.step = layer, vmid, step
        super().__init__(host, f"layer {layer!r} (CT {vmid}) failed at {step}: {cause}")


class LinkedCloneError(PhoenixError):
    """The layer's volume is not a clone of its parent's base snapshot (a full copy, or wrong parent)."""


def free_vmid(used: set[int], start: int, end: int) -> int:
    """The lowest vmid in ``[start, end]`` not in ``used``."""
    for vmid in range(start, end + 1):
        if vmid not in used:
            return vmid
    raise PhoenixError(f"no free vmid in the layer range {start}-{end}: all {end - start + 1} are in use")


def volume_dataset(volid: str, pool: str) -> str:
    """ZFS dataset of a PVE zfspool volume.

    ``local-zfs:basevol-9000-disk-0/subvol-9001-disk-0`` → ``<pool>/subvol-9001-disk-0``.

    A linked clone's volume names its base first; the dataset itself is the last path component.
    """
    _storage, _, name = volid.partition(":")
    volume = name.split(",", 1)[0]
    return f"{pool}/{volume.rsplit('/', 1)[-1]}"


def expected_origin(pool: str, parent_vmid: int | None) -> str:
    """``-`` for a layer made from an OS template, else the parent template's base snapshot."""
    return "-" if parent_vmid is None else f"{pool}/basevol-{parent_vmid}-disk-0@{BASE_SNAPSHOT}"


def check_linked(dataset: str, origin: str, parent_vmid: int | None, pool: str) -> None:
    want = expected_origin(pool, parent_vmid)
    if origin.strip() != want:
        what = "a full copy (no origin)" if origin.strip() in ("", "-") else f"a clone of {origin.strip()}"
        raise LinkedCloneError(f"{dataset} is {what}, expected a linked clone of {want}")


def build_config(inputs: TemplateLayerInputs) -> dict[str, Any]:
    """Resources and build-only devices of the build container."""
    config: dict[str, Any] = {"cores": inputs.cores, "memory": inputs.memory_mib}
    if inputs.nesting:
        config["features"] = "nesting=1"
    for i, device in enumerate(inputs.build_devices):
        config[f"dev{i}"] = device
    return config


# ------------------------------------------------------------------ provider

_ALLOCATE = threading.Lock()  # two layers built at once in one provider host must not pick the same vmid


@dataclass
class TemplateLayerProvider(HostProvider):
    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = require(news, ["node", "layer", "key", "features", "smoke_test", "storage", "pool"])
        if (
            not has_unknowns(news)
            and not failures
            and (news.get("parent_vmid") is None) == (news.get("os_template") is None)
        ):
            failures.append(CheckFailure("parent_vmid", "exactly one of parent_vmid and os_template"))
        return CheckResult(with_defaults(news, TemplateLayerInputs), failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return diff_inputs(
            olds,
            news,
            replace_on=["node", "key", "parent_vmid", "os_template", "storage", "pool"],
            update_on=["hostname", "vmid_start", "vmid_end", "task_timeout_s", "feature_timeout_s"],
        )

    def create(self, props: dict[str, Any]) -> CreateResult:
        inputs = TemplateLayerInputs.from_props(props)
        api = self.pve()
        node = inputs.node
        with _ALLOCATE:
            used = {as_int(g["vmid"]) for kind in ("lxc", "qemu") for g in api.get(f"nodes/{node}/{kind}")}
            vmid = free_vmid(used, inputs.vmid_start, inputs.vmid_end)
            step = "create" if inputs.parent_vmid is None else "linked clone"
            try:
                self._create_container(inputs, vmid)
            except PhoenixError as error:
                raise LayerBuildError(api.host, inputs.layer, vmid, step, error) from error
        try:
            outputs = self._build(inputs, vmid)
        except PhoenixError as error:
            self._discard(inputs, vmid)
            raise LayerBuildError(
                api.host, inputs.layer, vmid, getattr(error, "step", "build"), error
            ) from error
        return CreateResult(str(vmid), outputs)

    def _create_container(self, inputs: TemplateLayerInputs, vmid: int) -> None:
        api, node = self.pve(), inputs.node
        if inputs.parent_vmid is None:
            params: dict[str, Any] = {
                "vmid": vmid,
                "hostname": inputs.hostname,
                "ostemplate": inputs.os_template,
                "rootfs": f"{inputs.storage}:{inputs.disk_gib}",
                "unprivileged": 1,
            }
            if inputs.net0:
                params["net0"] = inputs.net0
            api.run_task("POST", f"nodes/{node}/lxc", timeout=inputs.task_timeout_s, step="create", **params)
        else:
            api.run_task(
                "POST",
                f"nodes/{node}/lxc/{inputs.parent_vmid}/clone",
                timeout=inputs.task_timeout_s,
                step="linked clone",
                newid=vmid,
                hostname=inputs.hostname,
                full=0,
            )

    def _build(self, inputs: TemplateLayerInputs, vmid: int) -> dict[str, Any]:
        api, ssh, node = self.pve(), self.ssh(), inputs.node
        path = f"nodes/{node}/lxc/{vmid}"
        api.set(f"{path}/config", **build_config(inputs))
        api.run_task("POST", f"{path}/status/start", timeout=inputs.task_timeout_s, step="start")
        for feature in inputs.features:
            run = ssh.run(
                script_argv(vmid, feature.env),
                stdin=feature.script,
                timeout=inputs.feature_timeout_s,
                check=False,
            )
            run.check(f"feature {feature.name}")
        smoke = ssh.run(exec_argv(vmid, inputs.smoke_test), timeout=inputs.task_timeout_s, check=False)
        smoke.check("smoke test")
        api.run_task("POST", f"{path}/status/stop", timeout=inputs.task_timeout_s, step="stop")
        if inputs.build_devices:  # a clone of this template must not inherit the build's GPUs
            api.set(f"{path}/config", delete=",".join(f"dev{i}" for i in range(len(inputs.build_devices))))
        self._template(path, inputs)
        volid = str(api.get(f"{path}/config")["rootfs"])
        dataset = volume_dataset(volid, inputs.pool)
        origin = ssh.run(["zfs", "get", "-H", "-o", "value", "origin", dataset]).check("verify linked clone")
        check_linked(dataset, origin.stdout, inputs.parent_vmid, inputs.pool)
        return {
            **inputs.to_props(),
            "vmid": vmid,
            "volume": volid,
            "dataset": dataset,
            "origin": origin.stdout.strip(),
            "verified": True,
            "smoke_output": smoke.stdout[-2000:],
        }

    def _template(self, path: str, inputs: TemplateLayerInputs) -> None:
        result = self.pve().create(f"{path}/template")
        if isinstance(result, str) and result.startswith("UPID:"):
            self.pve().wait_task(result, timeout=inputs.task_timeout_s, step="template")

    def _discard(self, inputs: TemplateLayerInputs, vmid: int) -> None:
        """Remove a failed build. Its own failure is logged, not raised: the build error is the one to see."""
        api, path, timeout = self.pve(), f"nodes/{inputs.node}/lxc/{vmid}", inputs.task_timeout_s
        try:
            if api.get(f"{path}/status/current").get("status") == "running":
                api.run_task("POST", f"{path}/status/stop", timeout=timeout, step="stop failed build")
            api.run_task("DELETE", path, timeout=timeout, step="destroy failed build")
        except PveError as error:
            pulumi.log.warn(f"layer {inputs.layer}: could not remove the failed build CT {vmid}: {error}")

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        # Only non-identity inputs change in place (timeouts, range); the built template is untouched.
        built = {k: olds[k] for k in BUILT_OUTPUTS if k in olds}
        return UpdateResult({**TemplateLayerInputs.from_props(news).to_props(), **built})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        api = self.pve()
        try:
            config = api.get(f"nodes/{props['node']}/lxc/{id_}/config")
        except PveError as error:
            if is_missing(error):
                return ReadResult(None, {})
            raise
        if as_int(config.get("template", 0)) != 1 or config.get("hostname") != props.get("hostname"):
            return ReadResult(None, {})  # the vmid now holds something else: the layer is gone
        return ReadResult(id_, {**props, "volume": str(config.get("rootfs", props.get("volume")))})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        api = self.pve()
        path = f"nodes/{props['node']}/lxc/{id_}"
        try:
            api.run_task(
                "DELETE", path, timeout=as_int(props.get("task_timeout_s", 600)), step="destroy layer"
            )
        except PveError as error:
            if not is_missing(error):
                raise


class TemplateLayerResource(DynamicResource, module="phoenix", name="TemplateLayer"):
    """The dynamic resource behind a ``TemplateLayer`` component."""

    vmid: pulumi.Output[int]
    key: pulumi.Output[str]
    volume: pulumi.Output[str]
    dataset: pulumi.Output[str]
    origin: pulumi.Output[str]
    verified: pulumi.Output[bool]

    def __init__(
        self,
        name: str,
        inputs: dict[str, Any],
        ssh_target: SshTarget,
        api_target: ApiTarget,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        provider = TemplateLayerProvider(ssh_target=ssh_target, api_target=api_target)
        outputs = {
            "vmid": None,
            "volume": None,
            "dataset": None,
            "origin": None,
            "verified": None,
            "smoke_output": None,
        }
        super().__init__(provider, name, {**inputs, "version": PROVIDER_VERSION, **outputs}, opts)
