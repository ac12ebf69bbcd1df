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

**Adoption** (``adopt``): a container that already runs (made by hand or by another tool) is taken
into state without a clone. ``create`` reads its config, its raw lines and its power state, refuses it
when its identity differs (hostname; the MAC of ``net0`` when one is declared) with
:class:`AdoptionError` before anything is sent, then sends only the declared keys whose live value
differs (:func:`adoption_changes`, one PUT), and restarts it only when one of those is a cold key. An
adopted guest records ``origin: "adopted"`` (no layer's snapshot is its origin). ``retain_on_delete``
makes ``delete`` only forget the guest (the default for adopted guests: keep what Phoenix did not make).

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
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, ReadResult, UpdateResult

from providers.base import (
    Inputs,
    as_int,
    attach_cleanup,
    convert,
    is_unknown,
    kept_replacement_refusal,
    require,
)
from providers.channels.pve import parse_property_string, size_gib
from providers.channels.steps import ApiCall, HostCommand
from providers.errors import HostError, PhoenixError, UnreplaceableError
from providers.guests.common import (
    DeviceCheck,
    GuestProvider,
    LinkedCheck,
    LinkedCloneResource,
    RawLines,
    Step,
    StepRunner,
    device_paths,
    family,
    guest_path,
    is_running,
    raw_keys,
    stop_and_destroy,
    take_snapshot_steps,
    unless_missing,
    volume_dataset,
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
    template_vmid: int | None  # None: an adopted guest that came from no Phoenix layer
    params: dict[str, Any] = field(metadata=convert(_params))
    storage: str
    pool: str
    raw_lines: list[str] = field(default_factory=list, metadata=convert(list))
    disk_gib: int | None = None
    start: bool = True
    snapshot_before_update: bool = False
    snapshot_retention: int = 3  # pre-update snapshots kept; older ones are pruned
    pve_config_dir: str = "/etc/pve/lxc"
    dev_root: str = "/dev"  # where the host's device nodes are looked for (DeviceCheck); a host's /dev
    task_timeout_s: int = 600
    # New inputs default to what a guest made before them is: created by Phoenix, destroyed with it.
    adopt: bool = False
    retain_on_delete: bool = False
    version: str = PROVIDER_VERSION

    @classmethod
    def from_props(cls, props: Mapping[str, Any]) -> LxcGuestInputs:
        # Pulumi leaves a None input out of the props: an adopted guest's absent template is None.
        return super().from_props({"template_vmid": None, **props})

    @property
    def path(self) -> str:
        return guest_path(self.node, self.vmid)

    @property
    def conf_path(self) -> str:
        return f"{self.pve_config_dir}/{self.vmid}.conf"


# ------------------------------------------------------------------ pure logic


class GuestError(HostError):
    """A workload guest could not be brought to its declared state."""


class AdoptionError(GuestError):
    """The container to adopt is missing, or is not the one declared (hostname, MAC): nothing was changed."""


ADOPTED = "adopted"  # the ``origin`` output of a guest taken in rather than cloned


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
    keys = raw_keys(lines)
    return [line.strip() for line in main if line.split(":", 1)[0].strip() in keys]


def same_volume_mount(live: Any, declared: Any) -> bool:
    """A declared new volume (``local-zfs:8,mp=/data,backup=0``: storage and size in GiB) against PVE's
    allocated one (``local-zfs:subvol-205-disk-1,mp=/data,size=8G``): the same storage, size and keys.
    Sending the declared form to a guest that has it would allocate a second volume."""
    want_pos, want = parse_property_string(declared)
    live_pos, have = parse_property_string(live)
    storage, _, size = want_pos.partition(":")
    if not size.isdigit() or live_pos.partition(":")[0] != storage:
        return False
    have = {"backup": "0", **have}  # PVE's default for a mount point
    return size_gib(have.get("size")) == float(size) and all(have.get(k) == v for k, v in want.items())


def adopted_setting(live: Any, declared: Any) -> bool:
    """Does the live value already carry the declared one (:func:`same_setting`, or a volume mount)?"""
    return same_setting(live, declared) or same_volume_mount(live, declared)


def identity_problem(inputs: LxcGuestInputs, config: Mapping[str, Any]) -> str | None:
    """Why the container found at the vmid is not the declared one, or None. The hostname must match, and
    the MAC of ``net0`` when the declaration fixes one."""
    found = str(config.get("hostname", ""))
    if found != inputs.hostname:
        return f"its hostname is {found or '(none)'!r}, the declaration says {inputs.hostname!r}"
    want = hwaddr(str(inputs.params.get("net0", "")))
    have = hwaddr(str(config.get("net0", "")))
    if want is not None and want != have:
        return f"the MAC of its net0 is {have or '(none)'}, the declaration says {want}"
    return None


# Raw lines PVE applies when the file has none: an unprivileged container runs under this profile.
RAW_DEFAULTS = {"lxc.apparmor.profile": ["lxc-container-default-cgns"]}


def _raw_values(lines: Sequence[str]) -> dict[str, list[str]]:
    """Each key's values, in order: a key such as ``lxc.environment`` takes several lines, and a change
    to any of them is a change."""
    values: dict[str, list[str]] = {}
    for key, _, value in (line.partition(":") for line in lines):
        values.setdefault(key.strip(), []).append(value.strip())
    return values


@dataclass(frozen=True)
class Adoption:
    """What adopting a live container changes: the declared keys PVE has otherwise (``sets``), whether
    the raw lines must be written (``raw_write``) and whether that changes what the guest runs under
    (``raw_cold``: a restart), a disk to grow, and the power state found."""

    sets: dict[str, Any]
    raw_write: bool
    raw_cold: bool
    resize: bool
    running: bool

    @property
    def cold(self) -> bool:
        return self.raw_cold or any(COLD_KEYS.match(k) for k in self.sets)


def adoption_changes(
    inputs: LxcGuestInputs, config: Mapping[str, Any], conf: str, *, running: bool, host: str = ""
) -> Adoption:
    """The live container (``config`` from the API, ``conf`` its config file) against the declaration.

    Keys Phoenix does not declare are never sent, so adoption leaves them as they are. The raw lines are
    compared as values, a missing line counting as PVE's default (:data:`RAW_DEFAULTS`): writing a line
    that names the profile the guest already runs under needs no restart. A smaller declared disk is
    refused (PVE cannot shrink one)."""
    sets = {
        key: want
        for key, want in inputs.params.items()
        if key not in config or not adopted_setting(config[key], want)
    }
    present = raw_lines_present(conf, inputs.raw_lines)
    live = {**RAW_DEFAULTS, **_raw_values(present)}
    declared = _raw_values(inputs.raw_lines)
    raw_cold = any(live.get(key) != value for key, value in declared.items())
    raw_write = sorted(present) != sorted(line.strip() for line in inputs.raw_lines)
    resize = False
    if inputs.disk_gib is not None:
        size = size_gib(parse_property_string(config.get("rootfs", ""))[1].get("size"))
        if size is not None and size > inputs.disk_gib:
            raise AdoptionError(
                host,
                f"CT {inputs.vmid}: its rootfs is {size:g}G, the declaration says {inputs.disk_gib}G "
                "(disks only grow)",
            )
        resize = size != inputs.disk_gib
    return Adoption(sets, raw_write, raw_cold, resize, running)


def replacement_refusal(
    olds: Mapping[str, Any], news: Mapping[str, Any], replaces: Sequence[str]
) -> str | None:
    """Why the replacement ``replaces`` asks for cannot be made (:func:`kept_replacement_refusal`), or None.
    ``olds`` are the stored outputs, whose ``retain_on_delete`` the delete follows; a new vmid is a new
    container, which collides with nothing."""
    if not is_unknown(news.get("vmid")) and olds.get("vmid") != news.get("vmid"):
        return None
    who = f"CT {as_int(olds['vmid'])} ({olds.get('hostname')})"
    retained, adopting = bool(olds.get("retain_on_delete")), bool(news.get("adopt"))
    return kept_replacement_refusal(who, "container", replaces, retained=retained, adopting=adopting)


def adopt_read_steps(inputs: LxcGuestInputs) -> list[Step]:
    """What adoption reads before it changes anything: the config, the power state, the config file."""
    return [
        ApiCall("GET", f"{inputs.path}/config", step="read config"),
        ApiCall("GET", f"{inputs.path}/status/current", step="read power state"),
        HostCommand("read config file", ["cat", inputs.conf_path]),
    ]


def adopt_steps(inputs: LxcGuestInputs, change: Adoption) -> list[Step]:
    """After the reads: a shutdown only for cold changes of a running guest, the differing keys in one PUT,
    the disk, the raw lines, and a start when it is declared running and is not (or was stopped here)."""
    steps: list[Step] = []
    if change.cold and change.running:
        steps.append(shutdown_step(inputs, "stop for adoption"))
    if change.sets:
        steps.append(ApiCall("PUT", f"{inputs.path}/config", dict(change.sets), step="configure"))
    if change.resize:
        steps.append(resize_step(inputs))
    if change.raw_write:
        steps.append(RawLines(inputs.conf_path, list(inputs.raw_lines)))
    if inputs.start and (not change.running or change.cold):
        steps.append(start_step(inputs))
    return checked_devices(inputs, steps)


def adopted_outputs(inputs: LxcGuestInputs, config: Mapping[str, Any]) -> dict[str, Any]:
    """An adopted container's outputs: as if created, its origin ``adopted`` (it is no layer's clone)."""
    volume = str(config.get("rootfs", "")).split(",", 1)[0]
    return {
        **stored_inputs(inputs),
        "mac": hwaddr(str(config.get("net0", ""))) or hwaddr(str(inputs.params.get("net0", ""))),
        "volume": volume,
        "dataset": volume_dataset(volume, inputs.pool) if volume else "",
        "origin": ADOPTED,
        "instance": uuid.uuid4().hex,
    }


# ------------------------------------------------------------------ steps, as data


def start_step(inputs: LxcGuestInputs) -> ApiCall:
    return ApiCall("POST", f"{inputs.path}/status/start", step="start", wait="task")


def device_check(inputs: LxcGuestInputs) -> DeviceCheck | None:
    """The check that the guest's ``devN`` nodes exist on the host; None when it passes none through."""
    paths = device_paths(inputs.params)
    guest = f"CT {inputs.vmid} ({inputs.hostname})"
    return DeviceCheck(guest, paths, inputs.dev_root) if paths else None


def before_clone(inputs: LxcGuestInputs) -> list[Step]:
    """What a create runs before its clone: the device check, when the guest is declared running (a guest
    that could not start is not made)."""
    check = device_check(inputs) if inputs.start else None
    return [check] if check is not None else []


def checked_devices(inputs: LxcGuestInputs, steps: list[Step]) -> list[Step]:
    """``steps``, with the device check first when they start the guest: before a shutdown, so a guest
    whose nodes are gone is never stopped for a start that cannot succeed."""
    check = device_check(inputs)
    starts = any(isinstance(s, ApiCall) and s.path == f"{inputs.path}/status/start" for s in steps)
    return [check, *steps] if check is not None and starts else steps


def shutdown_step(inputs: LxcGuestInputs, step: str) -> ApiCall:
    """A clean shutdown (the guest's own init stops its services), unlike a destroy's hard stop."""
    return ApiCall("POST", f"{inputs.path}/status/shutdown", step=step, wait="task")


def clone_step(inputs: LxcGuestInputs, template: int | str | None = None) -> ApiCall:
    source = inputs.template_vmid if template is None else template
    if source is None:  # check() requires a template unless adopting; a clone cannot do without one
        raise ValueError(f"CT {inputs.vmid}: a clone needs template_vmid (only an adopted guest has none)")
    return ApiCall(
        "POST",
        f"{guest_path(inputs.node, source)}/clone",
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


@dataclass(frozen=True)
class AdoptConfigure:
    """For the plan only: adoption's one PUT carries those of the declared keys whose live value differs,
    which only the host can say (``phoenix plan`` reads nothing). ``create`` sends :func:`adopt_steps`."""

    path: str
    params: dict[str, Any]

    def plan_lines(self, compact: bool = False) -> list[tuple[str, str]]:
        keys = " ".join(f"{k}={v}" for k, v in self.params.items())
        return [("api", f"PUT /{self.path}/config  (only the keys that differ of: {keys})")]


def plan_steps(inputs: LxcGuestInputs, template: int | str | None = None) -> list[Step | AdoptConfigure]:
    """Every step of a first ``up``: the linked clone, then :func:`create_steps`. ``template`` names the
    layer's template where its vmid is not known yet (``phoenix plan``: ``$vmid(vllm)``). An adopted
    guest: the reads, then only what differs (:class:`AdoptConfigure`), the raw lines when they differ;
    a restart only for a cold key."""
    if inputs.adopt:
        return [
            *adopt_read_steps(inputs),
            AdoptConfigure(inputs.path, dict(inputs.params)),
            RawLines(inputs.conf_path, list(inputs.raw_lines)),
        ]
    return [*before_clone(inputs), clone_step(inputs, template), *create_steps(inputs, template)]


@dataclass(frozen=True)
class Changes:
    """What an update changes: the config keys to set and delete, the raw lines, the disk."""

    sets: dict[str, Any]
    deletes: list[str]
    raw: bool
    resize: bool
    raw_retired: tuple[str, ...] = ()  # raw keys the old inputs set and the new ones do not

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
    retired = tuple(sorted(raw_keys(old.raw_lines) - raw_keys(new.raw_lines)))
    return Changes(sets, deletes, raw, resize, retired)


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
        steps.append(RawLines(new.conf_path, list(new.raw_lines), change.raw_retired))
    if new.start and (not running or change.cold):
        steps.append(start_step(new))
    elif not new.start and running and not change.cold:
        steps.append(shutdown_step(new, "stop"))
    return checked_devices(new, steps)


ADOPTION_INPUTS = ("adopt", "retain_on_delete")


def stored_inputs(inputs: LxcGuestInputs) -> dict[str, Any]:
    """The inputs as outputs; ``adopt``/``retain_on_delete`` only when set, so a guest Phoenix created keeps
    exactly the outputs it had before they existed (a missing one reads as false)."""
    return {k: v for k, v in inputs.to_props().items() if k not in ADOPTION_INPUTS or v}


def created_outputs(inputs: LxcGuestInputs, linked: Mapping[str, Any]) -> dict[str, Any]:
    """A new container's outputs, from its linked-clone check (its config, volume, dataset, origin)."""
    return {
        **stored_inputs(inputs),
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
    update_on = ("hostname", "params", "raw_lines", "disk_gib", "start", "pve_config_dir", "retain_on_delete")
    delete_before_replace = True  # the vmid is fixed: two guests cannot hold it at once

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """State from before an input existed lacks it: it holds the default, so it is no change. A
        replacement that cannot be made (:func:`replacement_refusal`) is refused here, before any step."""
        defaults = LxcGuestInputs.defaults()
        olds, news = {**defaults, **olds}, {**defaults, **news}
        result = super().diff(_id, olds, news)
        refusal = replacement_refusal(olds, news, result.replaces or [])
        if refusal is not None:
            raise UnreplaceableError(self.host_name, refusal)
        return result

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        required = ["node", "vmid", "hostname", "params", "storage", "pool"]
        failures = require(news, required if news.get("adopt") else [*required, "template_vmid"])
        params = news.get("params")
        if isinstance(params, dict) and "hostname" in params:
            failures.append(CheckFailure("params", "hostname is its own input, not a config param"))
        return self.checked(news, failures)

    def create(self, props: dict[str, Any]) -> CreateResult:
        inputs = LxcGuestInputs.from_props(props)
        if inputs.adopt:
            return self._adopt(inputs)
        runner = self.runner(inputs.task_timeout_s)
        api = runner.api
        api.require_root_for(inputs.params)  # before the clone: nothing is made that cannot be finished
        for step in before_clone(inputs):  # likewise: a guest that could not start is not made
            runner.one(step)
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

    def _adopt(self, inputs: LxcGuestInputs) -> CreateResult:
        """Take the live container in (the module docstring): read, verify, send only what differs."""
        runner = self.runner(inputs.task_timeout_s)
        api = runner.api
        who = f"CT {inputs.vmid} ({inputs.hostname})"
        read_config, read_status, read_conf = adopt_read_steps(inputs)
        config = unless_missing(lambda: runner.one(read_config))
        if config is None:
            raise AdoptionError(
                api.host, f"{who}: adopt is set, but node {inputs.node} has no CT {inputs.vmid}"
            )
        if problem := identity_problem(inputs, config):
            raise AdoptionError(api.host, f"{who}: not adopted, nothing changed: {problem}")
        running = dict(runner.one(read_status)).get("status") == "running"
        conf = runner.one(read_conf).stdout
        change = adoption_changes(inputs, config, conf, running=running, host=api.host)
        api.require_root_for(change.sets)
        self._run_restarting(runner, inputs, adopt_steps(inputs, change), running and change.cold, "adoption")
        return CreateResult(str(inputs.vmid), adopted_outputs(inputs, config))

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
        self._run_restarting(runner, new, steps, running and change.cold, "update")
        return UpdateResult({**stored_inputs(new), **{k: olds.get(k) for k in GENERATED}})

    def _run_restarting(
        self, runner: StepRunner, inputs: LxcGuestInputs, steps: list[Step], stops: bool, what: str
    ) -> None:
        """Run ``steps``; when they stop a running guest (``stops``) and fail, start it again (a note on the
        error if that fails too)."""
        try:
            runner.run(steps)
        except PhoenixError as error:
            if stops:
                attach_cleanup(
                    error,
                    lambda: self._restart_if_stopped(runner, inputs),
                    f"starting CT {inputs.vmid} again after the failed {what}",
                )
            raise

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
            # Declared running and found stopped (a host rebooted before its nodes were there, say) is
            # drift: the next up starts it, through the device check.
            "start": is_running(api, guest_path(inputs.node, id_)),
        }
        return ReadResult(id_, outputs)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        inputs = LxcGuestInputs.from_props(props)
        if inputs.retain_on_delete:
            return  # only forgotten: the guest keeps running (an adopted guest, by default)
        runner = self.runner(inputs.task_timeout_s, ssh=False)
        stop_and_destroy(runner, guest_path(inputs.node, id_), purge=True)


@dataclass(frozen=True)
class LxcGuestResourceArgs:
    """An :class:`LxcGuest`'s inputs. ``ResourceArgs``, since the component beside it
    (``phoenix_components.components.guests.LxcGuest``) has the ``LxcGuestArgs``."""

    node: pulumi.Input[str]
    vmid: pulumi.Input[int]
    hostname: pulumi.Input[str]
    template_vmid: pulumi.Input[int] | None
    """The layer's template (``TemplateLayer.vmid``); a new one replaces the guest. None: adopted from no
    layer."""
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
    adopt: pulumi.Input[bool] = False
    """Take the running container with this vmid in instead of cloning (identity checked first)."""
    retain_on_delete: pulumi.Input[bool] = False
    """Delete only forgets the guest; it keeps running."""


class LxcGuest(LinkedCloneResource[LxcGuestResourceArgs], module="phoenix", name="LxcGuest"):
    """A workload container (the module docstring). Token ``pulumi-python:dynamic/phoenix:LxcGuest``."""

    mac: pulumi.Output[str]
    instance: pulumi.Output[str]
    """New for every container ``create`` makes; a replaced guest keeps its vmid but not this."""

    provider_class = LxcGuestProvider
    provider_version = PROVIDER_VERSION
