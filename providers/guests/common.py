"""PVE operations the guest providers share, and their steps as data.

A guest provider (template layer, LXC guest, guest snapshot, firewall, features) computes what it will
do as a list of :data:`Step` values from its inputs and what it has read from the host (is the guest
running, which snapshots exist), then hands the list to :class:`StepRunner`. ``phoenix plan`` renders
the same lists (each step's :meth:`plan_lines`), so the plan is the provider's own and cannot drift.

Five kinds of step:

- :class:`ApiCall`: one PVE API request, optionally a task that is waited for;
- :class:`HostCommand`: one argv command over SSH;

(these two are every provider's, from ``providers/channels/steps.py``; re-exported here)
- :class:`RawLines`: put Phoenix's raw ``lxc.*`` lines into a guest's config file (read, merge, write);
- :class:`LinkedCheck`: verify that a guest's root volume is a ZFS linked clone of the expected base;
- :class:`DeviceCheck`: the host device nodes a container passes through exist, before it starts.

The last three read before they act; they are steps (data) all the same, and ``plan`` shows the commands
they run. Also here: the linked-clone rule, volume → dataset, snapshot naming, and stop-then-destroy.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Generic, TypeVar

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, DiffResult

from providers.base import VERSION_KEY, DynamicResource, HostProvider, as_int, diff_inputs, with_defaults
from providers.channels.command import CommandResult, Executor, display, sh_argv, write_file_argv
from providers.channels.pve import PveClient, is_missing, parse_property_string
from providers.channels.steps import ApiCall, HostCommand, shown_argv
from providers.channels.steps import plan_lines as plan_lines  # re-exported for the guests and tests
from providers.channels.targets import ApiTarget, SshTarget
from providers.errors import MissingDeviceNodeError, NoTargetError, PhoenixError, PveError

BASE_SNAPSHOT = "__base__"  # PVE's ZFS plugin names a template's snapshot this way
CONF_MODE = 0o640  # /etc/pve/lxc/<vmid>.conf as pmxcfs shows it

T = TypeVar("T")
ArgsT = TypeVar("ArgsT")


# ------------------------------------------------------------------ paths, volumes, linked clones


class LinkedCloneError(PhoenixError):
    """A guest's volume is not a clone of its parent's base snapshot (a full copy, or the wrong parent)."""


def guest_path(node: str, vmid: int | str, kind: str = "lxc") -> str:
    """``nodes/<node>/<kind>/<vmid>``: the API path of one guest."""
    return f"nodes/{node}/{kind}/{vmid}"


def volume_dataset(volid: str, pool: str) -> str:
    """ZFS dataset of a PVE zfspool volume.

    ``local-zfs:basevol-9000-disk-0/subvol-9001-disk-0`` → ``<pool>/subvol-9001-disk-0``.

    A linked clone's volume names its base first; the dataset itself is the last path component.
    """
    _storage, _, name = volid.partition(":")
    volume = name.split(",", 1)[0]
    return f"{pool}/{volume.rsplit('/', 1)[-1]}"


def expected_origin(pool: str, parent_vmid: int | str | None) -> str:
    """``-`` for a guest made from an OS template, else the parent template's base snapshot."""
    return "-" if parent_vmid is None else f"{pool}/basevol-{parent_vmid}-disk-0@{BASE_SNAPSHOT}"


def check_linked(dataset: str, origin: str, parent_vmid: int | str | None, pool: str) -> None:
    want = expected_origin(pool, parent_vmid)
    if origin.strip() != want:
        what = "a full copy (no origin)" if origin.strip() in ("", "-") else f"a clone of {origin.strip()}"
        raise LinkedCloneError(f"{dataset} is {what}, expected a linked clone of {want}")


def origin_argv(dataset: str) -> list[str]:
    return ["zfs", "get", "-H", "-o", "value", "origin", dataset]


def unless_missing(read: Callable[[], T]) -> T | None:
    """``read()``, or None when PVE says the object it reads is not there (a guest deleted by hand)."""
    try:
        return read()
    except PveError as error:
        if is_missing(error):
            return None
        raise


# ------------------------------------------------------------------ snapshot naming


def family(snapshots: list[dict[str, Any]], prefix: str) -> list[str]:
    """The snapshots named ``<prefix>-<UTC time>``, oldest first. PVE's pseudo-snapshot ``current`` and
    snapshots taken by hand are never part of it."""
    pattern = re.compile(rf"^{re.escape(prefix)}-\d{{8}}T\d{{6}}(-\d+)?$")
    ours = [s for s in snapshots if pattern.match(str(s.get("name", "")))]
    ours.sort(key=lambda s: (as_int(s.get("snaptime", 0)), str(s["name"])))
    return [str(s["name"]) for s in ours]


def to_prune(names: list[str], keep: int) -> list[str]:
    """The oldest of ``names`` (oldest first) beyond the newest ``keep``."""
    return names[: max(0, len(names) - keep)]


def next_name(prefix: str, existing: list[str], now: float) -> str:
    base = f"{prefix}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}"
    name, n = base, 1
    while name in existing:  # two triggers within one second
        n += 1
        name = f"{base}-{n}"
    return name


def take_snapshot_steps(
    path: str,
    existing: list[str],
    prefix: str,
    keep: int,
    now: float,
    *,
    description: str = "",
    step: str = "snapshot",
    prune_step: str = "prune",
) -> tuple[list[ApiCall], list[str]]:
    """Take ``<prefix>-<UTC time>`` of the guest at ``path`` whose family is ``existing`` (oldest first),
    then prune the family to the newest ``keep``: the calls, and the family as it will be."""
    name = next_name(prefix, existing, now)
    params: dict[str, Any] = {"snapname": name, **({"description": description} if description else {})}
    take = ApiCall("POST", f"{path}/snapshot", params, step=step, wait="task")
    names = [*existing, name]
    return [take, *prune_steps(path, names, keep, step=prune_step)], names[-keep:]


def prune_steps(path: str, names: list[str], keep: int, *, step: str = "prune") -> list[ApiCall]:
    return [
        ApiCall("DELETE", f"{path}/snapshot/{name}", step=step, wait="task") for name in to_prune(names, keep)
    ]


# ------------------------------------------------------------------ steps, as data


@dataclass(frozen=True)
class RawLines:
    """Phoenix's raw ``lxc.*`` lines in a guest's config file, each key exactly once (the PVE API cannot
    set them). Two SSH sessions: read the file PVE wrote, write it back atomically with the lines in it;
    the write is skipped when nothing changes. The answer is whether it wrote."""

    path: str
    lines: list[str]
    # Keys the previous inputs set and these do not (the last `lxc.environment` removed, say): their lines
    # go too, or the file would keep what the config no longer declares.
    retired: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return "raw lines"

    def plan_lines(self, compact: bool = False) -> list[tuple[str, str]]:
        shown = "`, `".join(self.lines)
        argv = write_file_argv(self.path, CONF_MODE)
        write = shown_argv(argv) if compact else display(argv)
        without = f", without its `{'`, `'.join(self.retired)}` lines" if self.retired else ""
        return [
            ("ssh", display(["cat", self.path])),
            ("ssh", write + f"  < the config plus `{shown}`{without}"),
        ]


@dataclass(frozen=True)
class LinkedCheck:
    """Read the guest's root volume from its config and refuse it unless its dataset is a clone of
    ``parent_vmid``'s base snapshot (``None``: made from an OS template, so no origin). The answer is
    ``{"volume", "dataset", "origin", "config"}`` (the config as read)."""

    config_path: str
    pool: str
    parent_vmid: int | str | None  # a str only in a plan, naming a vmid allocated at build time
    expected_dataset: str = ""  # for the plan only: the real one is read from the config

    @property
    def label(self) -> str:
        return "verify linked clone"

    def plan_lines(self, compact: bool = False) -> list[tuple[str, str]]:
        dataset = self.expected_dataset or "<dataset of rootfs>"
        return [
            ("api", f"GET /{self.config_path}"),
            ("ssh", display(origin_argv(dataset))),
            ("ssh", f"(must be {expected_origin(self.pool, self.parent_vmid)})"),
        ]


# Prints each path given that is not a character or block device (PVE passes only those through).
DEVICE_CHECK = 'for d do [ -c "$d" ] || [ -b "$d" ] || printf "%s\\n" "$d"; done'


@dataclass(frozen=True)
class DeviceCheck:
    """Before a container is made or started: every host device node its ``devN`` keys pass through
    exists. pve-container checks them at start and fails with a bare path; this names the guest, every
    missing node and what makes them (:class:`MissingDeviceNodeError`), before anything changes.

    ``root`` is where the host's ``/dev`` is looked for (``/dev`` on a host; the lab's TEST-ONLY fake
    driver keeps its nodes elsewhere)."""

    guest: str
    paths: list[str]
    root: str = "/dev"

    @property
    def label(self) -> str:
        return "check device nodes"

    def argv(self) -> list[str]:
        return sh_argv(DEVICE_CHECK, "phoenix-devices", *(self.host_path(p) for p in self.paths))

    def host_path(self, path: str) -> str:
        return self.root.rstrip("/") + path[len("/dev") :] if path.startswith("/dev/") else path

    def plan_lines(self, compact: bool = False) -> list[tuple[str, str]]:
        argv = self.argv()
        return [("ssh", shown_argv(argv) if compact else display(argv))]


def device_paths(params: Mapping[str, Any]) -> list[str]:
    """The host paths of a container's ``devN`` keys (``/dev/nvidia0,gid=44``: the path is the first
    part, or ``path=``), in key order."""
    paths = []
    for key in sorted((k for k in params if re.fullmatch(r"dev\d+", k)), key=lambda k: int(k[3:])):
        positional, options = parse_property_string(str(params[key]))
        paths.append(options.get("path") or positional)
    return paths


Step = ApiCall | HostCommand | RawLines | LinkedCheck | DeviceCheck


def raw_keys(lines: Sequence[str]) -> set[str]:
    """The ``lxc.*`` keys raw lines set (``lxc.environment`` may appear on several lines)."""
    return {line.split(":", 1)[0].strip() for line in lines}


def merge_raw_lines(conf: str, lines: list[str], retired: Sequence[str] = ()) -> str:
    """The guest's config file with Phoenix's raw lines in its main section.

    Every line of a key the lines set is replaced by them (a key such as ``lxc.environment`` may take
    several lines), and the lines of ``retired`` keys are removed; snapshot sections (``[name]``) are left
    untouched.
    """
    keys = raw_keys(lines) | set(retired)
    main, sep, rest = conf.partition("\n[")
    kept = [line for line in main.splitlines() if line.split(":", 1)[0].strip() not in keys]
    body = "\n".join([*kept, *lines]) + "\n"
    return body + ("\n[" + rest if sep else "")


class StepRunner:
    """Executes steps in order against one host; stops at the first failure (its error propagates).

    ``timeout`` bounds each PVE task. :meth:`run` returns each step's answer by its label (the PVE data,
    the :class:`CommandResult`, ...), so a provider computes its outputs from what the steps saw.
    """

    def __init__(self, api: PveClient | None, ssh: Executor | None, *, timeout: float) -> None:
        self._api, self._ssh, self.timeout = api, ssh, timeout
        self.failed: str | None = None  # the label of the step that raised, for the error's message

    @property
    def api(self) -> PveClient:
        if self._api is None:
            raise NoTargetError("a step needs the PVE API, and this provider has no api_target")
        return self._api

    @property
    def ssh(self) -> Executor:
        if self._ssh is None:
            raise NoTargetError("a step needs SSH, and this provider has no ssh_target")
        return self._ssh

    def run(self, steps: Sequence[Step]) -> dict[str, Any]:
        answers: dict[str, Any] = {}
        for step in steps:
            answers[step.label] = self.one(step)
        return answers

    def one(self, step: Step) -> Any:
        try:
            if isinstance(step, ApiCall):
                return self.call(step)
            if isinstance(step, HostCommand):
                return self.command(step)
            if isinstance(step, RawLines):
                return self.raw_lines(step)
            if isinstance(step, DeviceCheck):
                return self.device_check(step)
            return self.linked_check(step)
        except Exception:
            self.failed = step.label
            raise

    def call(self, call: ApiCall) -> Any:
        api = self.api
        if call.wait == "task":
            return api.run_task(call.method, call.path, timeout=self.timeout, step=call.label, **call.params)
        send = {"GET": api.get, "POST": api.create, "PUT": api.set, "DELETE": api.delete}[call.method]
        answer = send(call.path, **call.params)
        if call.wait == "upid":
            return api.wait_if_task(answer, timeout=self.timeout, step=call.label)
        return answer

    def command(self, command: HostCommand) -> CommandResult:
        result = self.ssh.run(command.argv, stdin=command.stdin, timeout=command.timeout_s, check=False)
        return result.check(command.what)

    def raw_lines(self, step: RawLines) -> bool:
        current = self.ssh.run(["cat", step.path]).stdout
        merged = merge_raw_lines(current, step.lines, step.retired)
        if merged == current:
            return False
        self.ssh.run(write_file_argv(step.path, CONF_MODE), stdin=merged)
        return True

    def device_check(self, step: DeviceCheck) -> None:
        missing = self.ssh.run(step.argv()).check(step.label).stdout.split()
        if missing:
            raise MissingDeviceNodeError(self.ssh.host, step.guest, missing)

    def linked_check(self, step: LinkedCheck) -> dict[str, Any]:
        config: dict[str, Any] = self.api.get(step.config_path)
        volid = str(config["rootfs"])
        dataset = volume_dataset(volid, step.pool)
        origin = self.ssh.run(origin_argv(dataset)).check(step.label).stdout.strip()
        check_linked(dataset, origin, step.parent_vmid, step.pool)
        return {"volume": volid, "dataset": dataset, "origin": origin, "config": config}


# ------------------------------------------------------------------ stop, then destroy


def destroy_steps(path: str, running: bool, *, what: str = "", purge: bool = False) -> list[ApiCall]:
    """Stop (hard: the guest is going) if it runs, then destroy. ``what`` prefixes the step names."""
    prefix = f"{what} " if what else ""
    steps = [ApiCall("POST", f"{path}/status/stop", step=f"stop {prefix}".strip(), wait="task")]
    destroy = ApiCall(
        "DELETE", path, {"purge": 1} if purge else {}, step=f"destroy {prefix}".strip(), wait="task"
    )
    return [*(steps if running else []), destroy]


def is_running(api: PveClient, path: str) -> bool:
    status: dict[str, Any] = api.get(f"{path}/status/current")
    return status.get("status") == "running"


def stop_and_destroy(runner: StepRunner, path: str, *, what: str = "", purge: bool = False) -> None:
    """Destroy the guest at ``path``, stopping it first; a guest already gone is not an error."""

    def destroy() -> None:
        runner.run(destroy_steps(path, is_running(runner.api, path), what=what, purge=purge))

    unless_missing(destroy)


# ------------------------------------------------------------------ the providers and resources


@dataclass
class GuestProvider(HostProvider):
    """Base of the guest providers: the diff rules as data, ``check``'s defaults, a step runner.

    A subclass sets :attr:`inputs_class` and the keys that replace (:attr:`replace_on`: another guest)
    and update in place (:attr:`update_on`); no instance field is added, so stored providers unpickle.
    """

    inputs_class: ClassVar[type]
    replace_on: ClassVar[tuple[str, ...]]
    update_on: ClassVar[tuple[str, ...]]
    delete_before_replace: ClassVar[bool] = False

    def checked(self, news: dict[str, Any], failures: list[CheckFailure]) -> CheckResult:
        """``check``'s answer: the inputs with every default filled in, so state holds them all."""
        return CheckResult(with_defaults(news, self.inputs_class), failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return diff_inputs(
            olds,
            news,
            replace_on=self.replace_on,
            update_on=self.update_on,
            delete_before_replace=self.delete_before_replace,
        )

    def runner(self, timeout: float, *, ssh: bool = True) -> StepRunner:
        """A runner over this host's PVE API, and its SSH unless ``ssh`` is False (API-only steps)."""
        return StepRunner(self.pve(), self.ssh() if ssh else None, timeout=timeout)


class GuestResource(DynamicResource, Generic[ArgsT]):
    """Base of the guest resources: typed Args (a frozen dataclass) in, the provider made from the targets.

    A subclass names its provider class and logic version and declares its outputs as ``pulumi.Output``
    annotations (:class:`DynamicResource` registers them); the Args' fields become the props as they are
    (they may be ``pulumi.Output``s, so no deep copy as ``dataclasses.asdict`` would make).
    """

    provider_class: ClassVar[type[HostProvider]]
    provider_version: ClassVar[str]

    def __init__(
        self,
        name: str,
        args: ArgsT,
        *,
        ssh_target: SshTarget | None = None,
        api_target: ApiTarget | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        provider = self.provider_class(ssh_target=ssh_target, api_target=api_target)
        props = {f.name: getattr(args, f.name) for f in fields(args)}  # type: ignore[arg-type]
        self._register(provider, name, {**props, VERSION_KEY: self.provider_version}, opts)


class LinkedCloneResource(GuestResource[ArgsT]):
    """A guest resource whose root volume is a verified ZFS linked clone (:class:`LinkedCheck`'s answer)."""

    vmid: pulumi.Output[int]
    volume: pulumi.Output[str]
    """The PVE volume id of the root disk, e.g. ``local-zfs:basevol-9000-disk-0/subvol-201-disk-0``."""
    dataset: pulumi.Output[str]
    origin: pulumi.Output[str]
    """The dataset's ZFS origin: the parent template's ``@__base__`` (``-`` for a first layer)."""
