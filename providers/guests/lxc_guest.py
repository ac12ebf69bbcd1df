"""LxcGuest: a workload container, a ZFS linked clone of a template layer, configured through both channels.

The PVE API does the clone, the config keys (cores, memory, net0, devN for GPUs, mpN mounts, features)
and the power state. SSH does what the API cannot: the raw ``lxc.*`` lines (``lxc.apparmor.profile``)
in ``/etc/pve/lxc/<vmid>.conf``, written *before the first start* so the container never runs under the
wrong profile, and the check that the rootfs really is a linked clone of the layer.

Each container made by ``create`` gets a new ``instance`` token (an output kept by updates): the vmid
stays the same when the guest is replaced, so what lives *inside* the container (its vLLM service) keys
on the instance to know it must be deployed again.

Updates send PVE only the keys that changed, and keep the MAC PVE generated when the config gives none
(a ``net0`` sent without ``hwaddr`` would get a new one). Changes a running container cannot take live
(devices, mounts, feature flags, raw lines) are applied with a stop/start. A new layer (template vmid)
replaces the guest; the vmid is fixed, so the old one is deleted first.

Steps are data (:func:`create_steps`, :func:`update_steps`, computed from the inputs and, for an update,
from what was read first: the power state, the snapshots): the provider executes exactly them and
``phoenix plan`` renders :func:`plan_steps`. A failed create removes its half-made container; a failed
update starts again a guest it had stopped for the update. In both, a failure of that cleanup is a note
on the original error, never instead of it.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, ReadResult, UpdateResult

from providers.base import (
    Inputs,
    attach_cleanup,
    convert,
    require,
)
from providers.channels.pve import parse_property_string
from providers.channels.steps import ApiCall
from providers.errors import HostError, PhoenixError
from providers.guests.common import (
    GuestProvider,
    LinkedCheck,
    LinkedCloneResource,
    RawLines,
    Step,
    StepRunner,
    family,
    guest_path,
    is_running,
    stop_and_destroy,
    take_snapshot_steps,
    unless_missing,
)

PROVIDER_VERSION = "1"
# Keys a running container cannot take without a restart.
COLD_KEYS = re.compile(r"^(dev\d+|mp\d+|features|unprivileged)$")
GENERATED = ("mac", "volume", "dataset", "origin", "instance")
PRE_UPDATE = "pre-update"  # prefix of the snapshots taken before an update


def _plain(value: Any) -> Any:
    """Numbers come back from gRPC as floats; PVE wants ``8``, not ``8.0``."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _params(value: Any) -> dict[str, Any]:
    return {k: _plain(v) for k, v in dict(value).items()}


@dataclass(frozen=True)
class LxcGuestInputs(Inputs):
    node: str
    vmid: int
    hostname: str
    template_vmid: int
    params: dict[str, Any] = field(metadata=convert(_params))
    storage: str
    pool: str
    raw_lines: list[str] = field(default_factory=list, metadata=convert(list))
    disk_gib: int | None = None
    start: bool = True
    snapshot_before_update: bool = False
    snapshot_retention: int = 3  # pre-update snapshots kept; older ones are pruned
    pve_config_dir: str = "/etc/pve/lxc"
    task_timeout_s: int = 600
    version: str = PROVIDER_VERSION

    @property
    def path(self) -> str:
        return guest_path(self.node, self.vmid)

    @property
    def conf_path(self) -> str:
        return f"{self.pve_config_dir}/{self.vmid}.conf"


# ------------------------------------------------------------------ pure logic


class GuestError(HostError):
    """A workload guest could not be brought to its declared state."""


def hwaddr(net: str) -> str | None:
    """The MAC in a PVE ``netN`` value (``name=eth0,bridge=vmbr0,hwaddr=BC:24:11:...``)."""
    match = re.search(r"(?:^|,)hwaddr=([0-9A-Fa-f:]{17})(?:,|$)", net)
    return match.group(1).upper() if match else None


def keep_mac(params: dict[str, Any], mac: str | None) -> dict[str, Any]:
    """``params`` with the generated MAC put back into ``net0`` when the config did not fix one."""
    net = params.get("net0")
    if mac and isinstance(net, str) and hwaddr(net) is None:
        return {**params, "net0": f"{net},hwaddr={mac}"}
    return dict(params)


def param_changes(old: dict[str, Any], new: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """What to send: the keys whose value changed, and the keys to delete. Unchanged keys are never sent."""
    sets = {k: v for k, v in new.items() if old.get(k) != v}
    deletes = sorted(k for k in old if k not in new)
    return sets, deletes


def same_setting(live: Any, declared: Any) -> bool:
    """Does PVE's value carry everything declared? PVE reorders property strings and adds defaults
    (``type=veth``, a generated ``hwaddr``), so only the declared parts are compared."""
    if str(live) == str(declared):
        return True
    if "=" not in str(declared):
        return False
    live_pos, live_keyed = parse_property_string(live)
    want_pos, want_keyed = parse_property_string(declared)
    return live_pos == want_pos and all(live_keyed.get(k) == v for k, v in want_keyed.items())


def observed_params(config: dict[str, Any], declared: dict[str, Any]) -> dict[str, Any]:
    """The declared keys as PVE has them now: the declared value where equivalent, else the live one
    (drift that ``pulumi refresh`` shows and the next ``up`` puts back); a missing key is left out."""
    return {
        key: (want if same_setting(config[key], want) else _plain(config[key]))
        for key, want in declared.items()
        if key in config
    }


def raw_lines_present(conf: str, lines: list[str]) -> list[str]:
    """The managed lines as they are in the file now (for drift): only the main section counts."""
    main = conf.partition("\n[")[0].splitlines()
    keys = {line.split(":", 1)[0].strip() for line in lines}
    return [line.strip() for line in main if line.split(":", 1)[0].strip() in keys]


# ------------------------------------------------------------------ steps, as data


def start_step(inputs: LxcGuestInputs) -> ApiCall:
    return ApiCall("POST", f"{inputs.path}/status/start", step="start", wait="task")


def shutdown_step(inputs: LxcGuestInputs, step: str) -> ApiCall:
    """A clean shutdown (the guest's own init stops its services), unlike a destroy's hard stop."""
    return ApiCall("POST", f"{inputs.path}/status/shutdown", step=step, wait="task")


def clone_step(inputs: LxcGuestInputs, template: int | str | None = None) -> ApiCall:
    return ApiCall(
        "POST",
        f"{guest_path(inputs.node, inputs.template_vmid if template is None else template)}/clone",
        {"newid": inputs.vmid, "hostname": inputs.hostname, "full": 0},
        step="linked clone",
        wait="task",
    )


def resize_step(inputs: LxcGuestInputs) -> ApiCall:
    return ApiCall(
        "PUT",
        f"{inputs.path}/resize",
        {"disk": "rootfs", "size": f"{inputs.disk_gib}G"},
        step="resize",
        wait="upid",
    )


def create_steps(inputs: LxcGuestInputs, template: int | str | None = None) -> list[Step]:
    """After the clone: the config keys, the disk size, the raw lines (before the first start, so the
    guest never runs under the wrong AppArmor profile), the linked-clone check, the start."""
    steps: list[Step] = []
    if inputs.params:
        steps.append(ApiCall("PUT", f"{inputs.path}/config", dict(inputs.params), step="configure"))
    if inputs.disk_gib is not None:
        steps.append(resize_step(inputs))
    steps.append(RawLines(inputs.conf_path, list(inputs.raw_lines)))
    steps.append(
        LinkedCheck(
            f"{inputs.path}/config",
            inputs.pool,
            inputs.template_vmid if template is None else template,
            f"{inputs.pool}/subvol-{inputs.vmid}-disk-0",
        )
    )
    if inputs.start:
        steps.append(start_step(inputs))
    return steps


def plan_steps(inputs: LxcGuestInputs, template: int | str | None = None) -> list[Step]:
    """Every step of a first ``up``: the linked clone, then :func:`create_steps`. ``template`` names the
    layer's template where its vmid is not known yet (``phoenix plan``: ``$vmid(vllm)``)."""
    return [clone_step(inputs, template), *create_steps(inputs, template)]


@dataclass(frozen=True)
class Changes:
    """What an update changes: the config keys to set and delete, the raw lines, the disk."""

    sets: dict[str, Any]
    deletes: list[str]
    raw: bool
    resize: bool

    @property
    def config(self) -> bool:
        return bool(self.sets or self.deletes)

    @property
    def restore_point(self) -> bool:
        """Worth a snapshot first (when asked for): the config or the raw lines change; a bigger disk alone
        loses nothing."""
        return self.config or self.raw

    @property
    def cold(self) -> bool:
        """Needs the guest stopped: raw lines are read at start, cold keys cannot change live."""
        return self.raw or any(COLD_KEYS.match(k) for k in [*self.sets, *self.deletes])


def changes(old: LxcGuestInputs, new: LxcGuestInputs, mac: str | None, host: str = "") -> Changes:
    """The changes from ``old`` to ``new``, keeping the MAC PVE generated. A shrinking disk is refused
    here, before anything is sent (PVE cannot shrink a volume)."""
    sets, deletes = param_changes(keep_mac(old.params, mac), keep_mac(new.params, mac))
    if new.hostname != old.hostname:
        sets["hostname"] = new.hostname
    resize = new.disk_gib is not None and new.disk_gib != old.disk_gib
    if resize and old.disk_gib is not None and new.disk_gib is not None and new.disk_gib < old.disk_gib:
        raise GuestError(host, f"CT {new.vmid}: disks only grow ({old.disk_gib}G → {new.disk_gib}G)")
    raw = old.raw_lines != new.raw_lines or old.pve_config_dir != new.pve_config_dir
    return Changes(sets, deletes, raw, resize)


def update_steps(
    new: LxcGuestInputs,
    change: Changes,
    *,
    running: bool,
    snapshots: Sequence[Mapping[str, Any]] = (),
    now: float = 0.0,
) -> list[Step]:
    """The update, in order: a restore point (when asked, and the config or raw lines change), a shutdown
    for cold changes, the config, the disk, the raw lines, then the power state declared.

    ``running``: the guest's power state now; ``snapshots``: its snapshots now (PVE's list), for the
    restore point's name and pruning; ``now``: the time the restore point is named after.
    """
    steps: list[Step] = []
    if new.snapshot_before_update and change.restore_point:
        taken, _family = take_snapshot_steps(
            new.path,
            family([dict(s) for s in snapshots], PRE_UPDATE),
            PRE_UPDATE,
            new.snapshot_retention,
            now,
            step="snapshot before update",
            prune_step="prune snapshot",
        )
        steps.extend(taken)
    if change.cold and running:
        steps.append(shutdown_step(new, "stop for update"))
    if change.config:
        delete = {"delete": ",".join(change.deletes)} if change.deletes else {}
        steps.append(ApiCall("PUT", f"{new.path}/config", {**change.sets, **delete}, step="configure"))
    if change.resize:
        steps.append(resize_step(new))
    if change.raw:
        steps.append(RawLines(new.conf_path, list(new.raw_lines)))
    if new.start and (not running or change.cold):
        steps.append(start_step(new))
    elif not new.start and running and not change.cold:
        steps.append(shutdown_step(new, "stop"))
    return steps


def created_outputs(inputs: LxcGuestInputs, linked: Mapping[str, Any]) -> dict[str, Any]:
    """A new container's outputs, from its linked-clone check (its config, volume, dataset, origin)."""
    return {
        **inputs.to_props(),
        "mac": hwaddr(str(linked["config"].get("net0", ""))),
        "volume": linked["volume"],
        "dataset": linked["dataset"],
        "origin": linked["origin"],
        "instance": uuid.uuid4().hex,  # this container, as opposed to a later one with the same vmid
    }


# ------------------------------------------------------------------ provider


@dataclass
class LxcGuestProvider(GuestProvider):
    inputs_class = LxcGuestInputs
    replace_on = ("node", "vmid", "template_vmid", "storage", "pool")
    update_on = ("hostname", "params", "raw_lines", "disk_gib", "start", "pve_config_dir")
    delete_before_replace = True  # the vmid is fixed: two guests cannot hold it at once

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = require(news, ["node", "vmid", "hostname", "template_vmid", "params", "storage", "pool"])
        params = news.get("params")
        if isinstance(params, dict) and "hostname" in params:
            failures.append(CheckFailure("params", "hostname is its own input, not a config param"))
        return self.checked(news, failures)

    def create(self, props: dict[str, Any]) -> CreateResult:
        inputs = LxcGuestInputs.from_props(props)
        runner = self.runner(inputs.task_timeout_s)
        api = runner.api
        api.require_root_for(inputs.params)  # before the clone: nothing is made that cannot be finished
        runner.one(clone_step(inputs))
        try:
            answers = runner.run(create_steps(inputs))
        except PhoenixError as error:
            failure = GuestError(api.host, f"CT {inputs.vmid} ({inputs.hostname}): {error}")
            attach_cleanup(
                failure,
                lambda: stop_and_destroy(runner, inputs.path, purge=True),
                f"removing the half-made CT {inputs.vmid}",
            )
            raise failure from error
        return CreateResult(str(inputs.vmid), created_outputs(inputs, answers["verify linked clone"]))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        old, new = LxcGuestInputs.from_props(olds), LxcGuestInputs.from_props(news)
        runner = self.runner(new.task_timeout_s)
        api = runner.api
        change = changes(old, new, olds.get("mac"), api.host)
        api.require_root_for(change.sets)
        running = is_running(api, new.path)
        restore_point = new.snapshot_before_update and change.restore_point
        snapshots = api.get(f"{new.path}/snapshot") if restore_point else []
        steps = update_steps(new, change, running=running, snapshots=snapshots, now=time.time())
        try:
            runner.run(steps)
        except PhoenixError as error:
            if running and change.cold:
                attach_cleanup(
                    error,
                    lambda: self._restart_if_stopped(runner, new),
                    f"starting CT {new.vmid} again after the failed update",
                )
            raise
        return UpdateResult({**new.to_props(), **{k: olds.get(k) for k in GENERATED}})

    @staticmethod
    def _restart_if_stopped(runner: StepRunner, inputs: LxcGuestInputs) -> None:
        """The guest ran before the update stopped it: a failed update must not leave it down."""
        if not is_running(runner.api, inputs.path):
            runner.one(start_step(inputs))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        inputs = LxcGuestInputs.from_props(props)
        api = self.pve()
        config = unless_missing(lambda: api.get(f"{guest_path(inputs.node, id_)}/config"))
        if config is None:
            return ReadResult(None, {})
        conf = self.ssh().run(["cat", inputs.conf_path], check=False).stdout
        outputs = {
            **props,
            "hostname": config.get("hostname", inputs.hostname),
            "params": observed_params(config, inputs.params),
            "raw_lines": raw_lines_present(conf, inputs.raw_lines),
        }
        return ReadResult(id_, outputs)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        inputs = LxcGuestInputs.from_props(props)
        runner = self.runner(inputs.task_timeout_s, ssh=False)
        stop_and_destroy(runner, guest_path(inputs.node, id_), purge=True)


@dataclass(frozen=True)
class LxcGuestResourceArgs:
    """An :class:`LxcGuest`'s inputs. ``ResourceArgs``, since the component beside it
    (``phoenix_components.components.guests.LxcGuest``) has the ``LxcGuestArgs``."""

    node: pulumi.Input[str]
    vmid: pulumi.Input[int]
    hostname: pulumi.Input[str]
    template_vmid: pulumi.Input[int]
    """The layer's template (``TemplateLayer.vmid``); a new one replaces the guest."""
    params: pulumi.Input[Mapping[str, Any]]
    """PVE config keys (cores, memory, net0, devN, mpN, features); never ``hostname``."""
    raw_lines: pulumi.Input[Sequence[str]]
    storage: pulumi.Input[str]
    pool: pulumi.Input[str]
    disk_gib: pulumi.Input[int] | None = None
    start: pulumi.Input[bool] = True
    snapshot_before_update: pulumi.Input[bool] = False
    snapshot_retention: pulumi.Input[int] = 3
    pve_config_dir: pulumi.Input[str] = "/etc/pve/lxc"
    task_timeout_s: pulumi.Input[int] = 600


class LxcGuest(LinkedCloneResource[LxcGuestResourceArgs], module="phoenix", name="LxcGuest"):
    """A workload container (the module docstring). Token ``pulumi-python:dynamic/phoenix:LxcGuest``."""

    mac: pulumi.Output[str]
    instance: pulumi.Output[str]
    """New for every container ``create`` makes; a replaced guest keeps its vmid but not this."""

    provider_class = LxcGuestProvider
    provider_version = PROVIDER_VERSION
