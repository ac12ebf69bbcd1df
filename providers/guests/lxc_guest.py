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
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import asdict, dataclass
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

from providers.base import DynamicResource, HostProvider, as_int, changed, diff_inputs, require, with_defaults
from providers.channels.command import Executor, write_file_argv
from providers.channels.pve import PveClient, is_missing
from providers.channels.targets import ApiTarget, SshTarget
from providers.errors import HostError, PhoenixError, PveError
from providers.guests.snapshot import family, next_name, to_prune
from providers.guests.template_layer import check_linked, volume_dataset

PROVIDER_VERSION = "1"
# Keys a running container cannot take without a restart.
COLD_KEYS = re.compile(r"^(dev\d+|mp\d+|features|unprivileged)$")
GENERATED = ("mac", "volume", "dataset", "origin", "instance")
PRE_UPDATE = "pre-update"  # prefix of the snapshots taken before an update


@dataclass(frozen=True)
class LxcGuestInputs:
    node: str
    vmid: int
    hostname: str
    template_vmid: int
    params: dict[str, Any]
    raw_lines: list[str]
    storage: str
    pool: str
    disk_gib: int | None = None
    start: bool = True
    snapshot_before_update: bool = False
    snapshot_retention: int = 3  # pre-update snapshots kept; older ones are pruned
    pve_config_dir: str = "/etc/pve/lxc"
    task_timeout_s: int = 600
    version: str = PROVIDER_VERSION

    @classmethod
    def from_props(cls, props: dict[str, Any]) -> LxcGuestInputs:
        values = {k: props[k] for k in cls.__dataclass_fields__ if k in props}
        for key in ("vmid", "template_vmid", "task_timeout_s", "snapshot_retention"):
            if key in values:
                values[key] = as_int(values[key])
        if values.get("disk_gib") is not None:
            values["disk_gib"] = as_int(values["disk_gib"])
        values["params"] = {k: _plain(v) for k, v in dict(props.get("params") or {}).items()}
        values["raw_lines"] = list(props.get("raw_lines") or [])
        return cls(**values)

    def to_props(self) -> dict[str, Any]:
        return asdict(self)


def _plain(value: Any) -> Any:
    """Numbers come back from gRPC as floats; PVE wants ``8``, not ``8.0``."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


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


def merge_raw_lines(conf: str, lines: list[str]) -> str:
    """The guest's config file with Phoenix's raw lines in its main section, each key exactly once.

    Lines for the same ``lxc.*`` key are replaced; snapshot sections (``[name]``) are left untouched.
    """
    keys = {line.split(":", 1)[0].strip() for line in lines}
    main, sep, rest = conf.partition("\n[")
    kept = [line for line in main.splitlines() if line.split(":", 1)[0].strip() not in keys]
    body = "\n".join([*kept, *lines]) + "\n"
    return body + ("\n[" + rest if sep else "")


def _property_string(value: Any) -> tuple[str, dict[str, str]]:
    """PVE's ``a,key=value,...`` property strings: the positional part and the keyed parts."""
    positional, keyed = "", {}
    for part in str(value).split(","):
        key, eq, val = part.partition("=")
        if eq:
            keyed[key] = val
        else:
            positional = part
    return positional, keyed


def same_setting(live: Any, declared: Any) -> bool:
    """Does PVE's value carry everything declared? PVE reorders property strings and adds defaults
    (``type=veth``, a generated ``hwaddr``), so only the declared parts are compared."""
    if str(live) == str(declared):
        return True
    if "=" not in str(declared):
        return False
    live_pos, live_keyed = _property_string(live)
    want_pos, want_keyed = _property_string(declared)
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


# ------------------------------------------------------------------ provider


@dataclass
class LxcGuestProvider(HostProvider):
    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = require(news, ["node", "vmid", "hostname", "template_vmid", "params", "storage", "pool"])
        params = news.get("params")
        if isinstance(params, dict) and "hostname" in params:
            failures.append(CheckFailure("params", "hostname is its own input, not a config param"))
        return CheckResult(with_defaults(news, LxcGuestInputs), failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        result = diff_inputs(
            olds,
            news,
            replace_on=["node", "vmid", "template_vmid", "storage", "pool"],
            update_on=["hostname", "params", "raw_lines", "disk_gib", "start", "pve_config_dir"],
            delete_before_replace=True,  # the vmid is fixed: two guests cannot hold it at once
        )
        return result

    # -- create

    def create(self, props: dict[str, Any]) -> CreateResult:
        inputs = LxcGuestInputs.from_props(props)
        api, ssh = self.pve(), self.ssh()
        api.require_root_for(inputs.params)  # before the clone: nothing is made that cannot be finished
        path = f"nodes/{inputs.node}/lxc/{inputs.vmid}"
        api.run_task(
            "POST",
            f"nodes/{inputs.node}/lxc/{inputs.template_vmid}/clone",
            timeout=inputs.task_timeout_s,
            step="linked clone",
            newid=inputs.vmid,
            hostname=inputs.hostname,
            full=0,
        )
        try:
            outputs = self._configure_new(api, ssh, inputs, path)
        except PhoenixError as error:
            self._destroy(api, path, inputs.task_timeout_s)
            raise GuestError(api.host, f"CT {inputs.vmid} ({inputs.hostname}): {error}") from error
        return CreateResult(str(inputs.vmid), outputs)

    def _configure_new(
        self, api: PveClient, ssh: Executor, inputs: LxcGuestInputs, path: str
    ) -> dict[str, Any]:
        if inputs.params:
            api.set(f"{path}/config", **inputs.params)
        if inputs.disk_gib is not None:
            self._resize(api, path, inputs)
        self._write_raw_lines(ssh, inputs)
        config = api.get(f"{path}/config")
        volid = str(config["rootfs"])
        dataset = volume_dataset(volid, inputs.pool)
        origin = ssh.run(["zfs", "get", "-H", "-o", "value", "origin", dataset]).stdout.strip()
        check_linked(dataset, origin, inputs.template_vmid, inputs.pool)
        if inputs.start:
            api.run_task("POST", f"{path}/status/start", timeout=inputs.task_timeout_s, step="start")
        return {
            **inputs.to_props(),
            "mac": hwaddr(str(config.get("net0", ""))),
            "volume": volid,
            "dataset": dataset,
            "origin": origin,
            "instance": uuid.uuid4().hex,  # this container, as opposed to a later one with the same vmid
        }

    def _resize(self, api: PveClient, path: str, inputs: LxcGuestInputs) -> None:
        result = api.set(f"{path}/resize", disk="rootfs", size=f"{inputs.disk_gib}G")
        if isinstance(result, str) and result.startswith("UPID:"):
            api.wait_task(result, timeout=inputs.task_timeout_s, step="resize")

    def _conf_path(self, inputs: LxcGuestInputs) -> str:
        return f"{inputs.pve_config_dir}/{inputs.vmid}.conf"

    def _write_raw_lines(self, ssh: Executor, inputs: LxcGuestInputs) -> None:
        """Two SSH sessions: read the config PVE wrote, write it back atomically with our lines in it."""
        conf_path = self._conf_path(inputs)
        current = ssh.run(["cat", conf_path]).stdout
        merged = merge_raw_lines(current, inputs.raw_lines)
        if merged != current:
            ssh.run(write_file_argv(conf_path, 0o640), stdin=merged)

    # -- update

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        old, new = LxcGuestInputs.from_props(olds), LxcGuestInputs.from_props(news)
        api, ssh = self.pve(), self.ssh()
        path = f"nodes/{new.node}/lxc/{new.vmid}"
        mac = olds.get("mac")
        sets, deletes = param_changes(keep_mac(old.params, mac), keep_mac(new.params, mac))
        if new.hostname != old.hostname:
            sets["hostname"] = new.hostname
        api.require_root_for(sets)
        raw_changed = bool(changed(olds, news, ["raw_lines", "pve_config_dir"]))
        cold = raw_changed or any(COLD_KEYS.match(k) for k in [*sets, *deletes])
        running = api.get(f"{path}/status/current").get("status") == "running"
        if new.snapshot_before_update and (sets or deletes or raw_changed):
            self._snapshot(api, path, new)
        if cold and running:
            api.run_task(
                "POST", f"{path}/status/shutdown", timeout=new.task_timeout_s, step="stop for update"
            )
        if sets or deletes:
            api.set(f"{path}/config", **sets, **({"delete": ",".join(deletes)} if deletes else {}))
        if new.disk_gib is not None and new.disk_gib != old.disk_gib:
            if old.disk_gib is not None and new.disk_gib < old.disk_gib:
                raise GuestError(
                    api.host, f"CT {new.vmid}: disks only grow ({old.disk_gib}G → {new.disk_gib}G)"
                )
            self._resize(api, path, new)
        if raw_changed:
            self._write_raw_lines(ssh, new)
        if new.start and (not running or cold):
            api.run_task("POST", f"{path}/status/start", timeout=new.task_timeout_s, step="start")
        elif not new.start and running and not cold:
            api.run_task("POST", f"{path}/status/shutdown", timeout=new.task_timeout_s, step="stop")
        return UpdateResult({**new.to_props(), **{k: olds.get(k) for k in GENERATED}})

    def _snapshot(self, api: PveClient, path: str, inputs: LxcGuestInputs) -> None:
        """A restore point before the update, then the older pre-update snapshots beyond the retention."""
        existing = family(api.get(f"{path}/snapshot"), PRE_UPDATE)
        name = next_name(PRE_UPDATE, existing, time.time())
        timeout = inputs.task_timeout_s
        api.run_task(
            "POST", f"{path}/snapshot", timeout=timeout, step="snapshot before update", snapname=name
        )
        for old in to_prune([*existing, name], inputs.snapshot_retention):
            api.run_task("DELETE", f"{path}/snapshot/{old}", timeout=timeout, step="prune snapshot")

    # -- read / delete

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        inputs = LxcGuestInputs.from_props(props)
        api = self.pve()
        path = f"nodes/{inputs.node}/lxc/{id_}"
        try:
            config = api.get(f"{path}/config")
        except PveError as error:
            if is_missing(error):
                return ReadResult(None, {})
            raise
        conf = self.ssh().run(["cat", self._conf_path(inputs)], check=False).stdout
        outputs = {
            **props,
            "hostname": config.get("hostname", inputs.hostname),
            "params": observed_params(config, inputs.params),
            "raw_lines": raw_lines_present(conf, inputs.raw_lines),
        }
        return ReadResult(id_, outputs)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        inputs = LxcGuestInputs.from_props(props)
        self._destroy(self.pve(), f"nodes/{inputs.node}/lxc/{id_}", inputs.task_timeout_s)

    def _destroy(self, api: PveClient, path: str, timeout: int) -> None:
        try:
            if api.get(f"{path}/status/current").get("status") == "running":
                api.run_task("POST", f"{path}/status/stop", timeout=timeout, step="stop")
            api.run_task("DELETE", path, timeout=timeout, step="destroy", purge=1)
        except PveError as error:
            if not is_missing(error):
                raise


@dataclass(frozen=True)
class LxcGuestArgs:
    inputs: dict[str, Any]
    ssh_target: SshTarget
    api_target: ApiTarget


class LxcGuestResource(DynamicResource, module="phoenix", name="LxcGuest"):
    """The dynamic resource behind an ``LxcGuest`` component."""

    vmid: pulumi.Output[int]
    mac: pulumi.Output[str]
    dataset: pulumi.Output[str]
    origin: pulumi.Output[str]
    instance: pulumi.Output[str]
    """New for every container ``create`` makes; a replaced guest keeps its vmid but not this."""

    def __init__(self, name: str, args: LxcGuestArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        provider = LxcGuestProvider(ssh_target=args.ssh_target, api_target=args.api_target)
        props = {**args.inputs, "version": PROVIDER_VERSION, **dict.fromkeys(GENERATED)}
        super().__init__(provider, name, props, opts)
