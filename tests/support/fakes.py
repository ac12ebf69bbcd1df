"""Stand-ins for a host, for the providers' unit tests: a scripted executor and a local one.

:class:`ScriptedExecutor` is the one fake SSH channel: it answers argv patterns with scripted
:class:`~providers.channels.command.CommandResult`\\ s and records every call, so a test pins the exact
commands (and so the SSH sessions) of a provider operation without a host. :class:`LocalExecutor` runs
commands on this machine with the SSH contract (for tests that run a script the provider sends).
"""

from __future__ import annotations

import itertools
import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from providers.channels.command import Argv, CommandResult, display
from providers.channels.pve import root_only_operations
from providers.errors import CommandTimeoutError, PveError, PvePermissionError, PveTaskError


class _Any:
    """Matches any one argument in an :class:`Answer` pattern (a long script, a temp name)."""

    def __repr__(self) -> str:
        return "ANY"


ANY: Any = _Any()


@dataclass
class Answer:
    prefix: Sequence[Any]
    """Matches a command whose argv starts with these arguments; :data:`ANY` matches any one argument."""
    exit_status: int = 0
    stdout: str = ""
    stderr: str = ""

    def matches(self, argv: Sequence[str]) -> bool:
        pattern = list(self.prefix)
        return len(argv) >= len(pattern) and all(
            p is ANY or p == a for p, a in zip(pattern, argv, strict=False)
        )


@dataclass(frozen=True)
class Call:
    """One command the provider ran: its arguments (secrets unmasked), stdin and timeout."""

    argv: list[str]
    stdin: str | bytes | None = None
    timeout: float | None = None


@dataclass
class ScriptedExecutor:
    """An :class:`~providers.channels.command.Executor` that answers from a script and records calls.

    - ``strict`` (the default): commands are answered in script order, each must match the next answer,
      and a command past the end of the script fails the test: the test pins the exact sequence.
    - not ``strict``: a command gets the first answer it matches (used up once); any other command
      succeeds with no output: the test pins only the answers that matter and checks :attr:`calls`.
    """

    script: list[Answer] = field(default_factory=list)
    strict: bool = True
    host: str = "pve1"
    calls: list[Call] = field(default_factory=list)

    def run(
        self,
        argv: Argv,
        *,
        stdin: str | bytes | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> CommandResult:
        args = [str.__str__(a) for a in argv]
        self.calls.append(Call(args, stdin, timeout))
        answer = self._answer(args)
        result = CommandResult(
            self.host, display(argv), answer.exit_status, answer.stdout, answer.stderr, 0.0
        )
        return result.check() if check else result

    def _answer(self, args: list[str]) -> Answer:
        if self.strict:
            if not self.script:
                raise AssertionError(f"unscripted command: {args}")
            answer = self.script.pop(0)
            if not answer.matches(args):
                raise AssertionError(f"expected a command starting {list(answer.prefix)}, got {args}")
            return answer
        for answer in self.script:
            if answer.matches(args):
                self.script.remove(answer)
                return answer
        return Answer(args)

    @property
    def argvs(self) -> list[list[str]]:
        return [call.argv for call in self.calls]

    def done(self) -> bool:
        """Was every scripted answer used?"""
        return not self.script


def on(provider: Any, executor: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``provider`` with its SSH executor replaced by ``executor``."""
    monkeypatch.setattr(provider, "ssh", lambda: executor)
    return provider


class LocalExecutor:
    """Runs commands on this machine with the same contract as SSH (tests that run what a provider sends)."""

    def __init__(self, host: str = "localhost") -> None:
        self._host = host

    @property
    def host(self) -> str:
        return self._host

    def run(
        self,
        argv: Argv,
        *,
        stdin: str | bytes | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> CommandResult:
        data = stdin.encode() if isinstance(stdin, str) else stdin
        started = time.monotonic()
        try:
            proc = subprocess.run(
                [str.__str__(a) for a in argv], input=data, capture_output=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise CommandTimeoutError(self._host, display(argv), timeout or 0.0) from exc
        result = CommandResult(
            host=self._host,
            argv=display(argv),
            exit_status=proc.returncode,
            stdout=proc.stdout.decode(errors="replace"),
            stderr=proc.stderr.decode(errors="replace"),
            duration=time.monotonic() - started,
        )
        return result.check() if check else result


# ------------------------------------------------------------------ the fake PVE host (guest providers)

_GUEST = re.compile(r"^nodes/(?P<node>[^/]+)/(?P<kind>lxc|qemu)(?:/(?P<vmid>\d+)(?:/(?P<rest>.*))?)?$")
_TASK = re.compile(r"^nodes/(?P<node>[^/]+)/tasks/(?P<upid>[^/]+)/status$")
_COLD = re.compile(r"^(dev\d+|mp\d+|features|unprivileged)$")  # PVE keeps these pending on a running CT


@dataclass(frozen=True)
class ApiRequest:
    """One request a provider sent (task polling is the client's business, not recorded)."""

    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class FakeGuest:
    """One container (or VM) as the fake holds it: config, power state, snapshots, firewall, raw lines."""

    vmid: int
    kind: str = "lxc"
    config: dict[str, Any] = field(default_factory=dict)
    status: str = "stopped"
    pending: dict[str, Any] = field(default_factory=dict)
    raw_lines: list[str] = field(default_factory=list)
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    firewall_options: dict[str, Any] = field(
        default_factory=lambda: {"enable": 0, "policy_in": "DROP", "policy_out": "ACCEPT"}
    )
    firewall_rules: list[dict[str, Any]] = field(default_factory=list)

    @property
    def template(self) -> bool:
        return int(self.config.get("template", 0)) == 1


class FakePve:
    """The one fake PVE client of the guest providers' unit tests: PveClient's surface, an in-memory host.

    It answers like PVE from a model of guests (config, pending cold keys, power state, snapshots,
    firewall), ZFS volumes (each dataset's origin: a linked clone's is its template's ``@__base__``) and
    tasks (UPIDs), and records every request as an :class:`ApiRequest` (:attr:`calls`). PVE's own
    refusals are kept: starting a running guest, destroying a running one, a linked clone of a
    non-template, shrinking a disk, a token doing what only root@pam may. :meth:`shell` is the host's
    shell over the same model (``cat``/atomic write of ``/etc/pve/lxc/<vmid>.conf``, ``zfs get origin``,
    ``pct exec`` only into a running container), so both channels of one provider see one host.

    Faults: :meth:`fail` makes a request answer with an HTTP error or start a task that fails.
    """

    def __init__(
        self,
        *,
        node: str = "pve1",
        storage: str = "local-zfs",
        pool: str = "rpool/data",
        host: str = "pve1.lan",
        token_id: str | None = None,
    ) -> None:
        self.host, self.node, self.storage, self.pool = host, node, storage, pool
        self.token_id = token_id
        self.guests: dict[int, FakeGuest] = {}
        self.origins: dict[str, str] = {}  # ZFS dataset -> its origin ("-": none)
        self.tasks: dict[str, dict[str, Any]] = {}
        self.calls: list[ApiRequest] = []
        # Both channels in the order they were used: ("api", "PUT /path k=v") and ("ssh", "argv as shown"),
        # in the form phoenix plan prints them (providers.guests.common.plan_lines).
        self.timeline: list[tuple[str, str]] = []
        self.full_clones = False  # True: every clone is a full copy (the bash original's mistake)
        self.missing_devices: set[str] = set()  # host device nodes that are not there (DeviceCheck)
        self._faults: list[tuple[str, str, int | None, str, str | None, list[int]]] = []
        self._macs = itertools.count(1)
        self._clock = itertools.count(1_700_000_000)

    # -------------------------------------------------------------- building the host

    def add_guest(
        self,
        vmid: int,
        *,
        kind: str = "lxc",
        template: bool = False,
        status: str = "stopped",
        config: dict[str, Any] | None = None,
        origin: str = "-",
    ) -> FakeGuest:
        """A guest that is already there (a layer's template, a container from an earlier up)."""
        prefix = "basevol" if template else "subvol"
        volume = f"{self.storage}:{prefix}-{vmid}-disk-0,size=8G"
        guest = FakeGuest(vmid, kind, {"hostname": f"ct{vmid}", "rootfs": volume, **(config or {})}, status)
        if template:
            guest.config["template"] = 1
        self.guests[vmid] = guest
        self.origins[self.dataset(vmid)] = origin
        return guest

    def dataset(self, vmid: int) -> str:
        volid = str(self.guests[vmid].config["rootfs"])
        return f"{self.pool}/{volid.partition(':')[2].split(',', 1)[0].rsplit('/', 1)[-1]}"

    def fail(
        self,
        method: str,
        path: str,
        *,
        status: int | None = None,
        message: str = "",
        task_error: str | None = None,
        times: int = 1,
    ) -> None:
        """The next ``times`` ``method path`` requests fail: with HTTP ``status`` and ``message``, or by
        starting a task that ends in ``task_error`` (the request's effect is not applied)."""
        self._faults.append((method, path, status, message, task_error, [times]))

    # -------------------------------------------------------------- what was sent

    def requests(self, method: str | None = None, path: str | None = None) -> list[ApiRequest]:
        return [c for c in self.calls if method in (None, c.method) and path in (None, c.path)]

    @property
    def mutations(self) -> list[tuple[str, str]]:
        """``(method, path)`` of every request but reads, in order: what a provider changed."""
        return [(c.method, c.path) for c in self.calls if c.method != "GET"]

    # -------------------------------------------------------------- PveClient's surface

    @property
    def uses_token(self) -> bool:
        return self.token_id is not None

    def require_root_for(self, config: Mapping[str, object]) -> None:
        operations = root_only_operations(config)
        if operations and self.uses_token:
            raise PvePermissionError(self.host, f"{', '.join(operations)} is only allowed for root@pam")

    def get(self, path: str, **params: Any) -> Any:
        return self._request("GET", path, params)

    def create(self, path: str, **params: Any) -> Any:
        return self._request("POST", path, params)

    def set(self, path: str, **params: Any) -> Any:
        return self._request("PUT", path, params)

    def delete(self, path: str, **params: Any) -> Any:
        return self._request("DELETE", path, params)

    def run_task(self, method: str, path: str, *, timeout: float, step: str, **params: Any) -> dict[str, Any]:
        upid = self._request(method, path, params)
        if not (isinstance(upid, str) and upid.startswith("UPID:")):
            raise PveError(self.host, f"{step}: expected a task id, PVE answered {upid!r}", path=path)
        return self.wait_task(upid, timeout=timeout, step=step)

    def wait_task(self, upid: str, *, timeout: float, step: str) -> dict[str, Any]:
        status = self.tasks[upid]
        if status["exitstatus"] != "OK":
            raise PveTaskError(self.host, upid, status["exitstatus"], status["exitstatus"], step=step)
        return status

    def wait_if_task(self, answer: Any, *, timeout: float, step: str) -> Any:
        if isinstance(answer, str) and answer.startswith("UPID:"):
            return self.wait_task(answer, timeout=timeout, step=step)
        return answer

    # -------------------------------------------------------------- the model

    def _request(self, method: str, path: str, params: dict[str, Any]) -> Any:
        path = path.strip("/")
        self.calls.append(ApiRequest(method, path, dict(params)))
        args = " ".join(f"{k}={v}" for k, v in params.items())
        self.timeline.append(("api", f"{method} /{path}" + (f" {args}" if args else "")))
        task_error = self._fault(method, path)
        task = _TASK.match(path)
        if task:
            return self.tasks[task["upid"]]
        match = _GUEST.match(path)
        if match is None or match["node"] != self.node:
            raise PveError(self.host, f"no such path {path}", status=501, path=path)
        kind, vmid, rest = match["kind"], match["vmid"], match["rest"] or ""
        if task_error is not None:
            return self._task(kind, vmid or "", task_error)
        if vmid is None:
            return self._collection(method, kind, params, path)
        return self._guest(method, kind, int(vmid), rest, params, path)

    def _fault(self, method: str, path: str) -> str | None:
        for fault in self._faults:
            f_method, f_path, status, message, task_error, left = fault
            if (f_method, f_path) == (method, path) and left[0] > 0:
                left[0] -= 1
                if status is not None:
                    raise PveError(self.host, message, status=status, path=path)
                return task_error
        return None

    def _task(self, kind: str, vmid: int | str, exitstatus: str = "OK") -> str:
        pid, start = len(self.tasks) + 1, next(self._clock)
        upid = f"UPID:{self.node}:{pid:08X}:00000000:{start:08X}:{kind}:{vmid}:root@pam:"
        self.tasks[upid] = {"status": "stopped", "exitstatus": exitstatus, "upid": upid}
        return upid

    def _refuse(self, kind: str, vmid: int | str, why: str) -> str:
        """PVE ran the task and it failed: a UPID whose status is ``why``."""
        return self._task(kind, vmid, why)

    def _missing(self, kind: str, vmid: int, path: str) -> PveError:
        message = f"Configuration file 'nodes/{self.node}/{kind}/{vmid}.conf' does not exist"
        return PveError(self.host, message, status=500, path=path)

    def _collection(self, method: str, kind: str, params: dict[str, Any], path: str) -> Any:
        if method == "GET":
            return [
                {"vmid": g.vmid, "name": g.config.get("hostname"), "status": g.status}
                for g in self.guests.values()
                if g.kind == kind
            ]
        vmid = int(params["vmid"])
        if vmid in self.guests:
            return self._refuse(kind, vmid, f"CT {vmid} already exists on node '{self.node}'")
        size = str(params.get("rootfs", "x:8")).rpartition(":")[2]
        config = {k: v for k, v in params.items() if k not in ("vmid", "ostemplate", "rootfs")}
        config["rootfs"] = f"{self.storage}:subvol-{vmid}-disk-0,size={size}G"
        guest = self.guests[vmid] = FakeGuest(vmid, kind, config)
        self._with_mac(guest)
        self.origins[self.dataset(vmid)] = "-"
        return self._task(kind, vmid)

    def _guest(self, method: str, kind: str, vmid: int, rest: str, params: dict[str, Any], path: str) -> Any:
        guest = self.guests.get(vmid)
        if guest is None or guest.kind != kind:
            raise self._missing(kind, vmid, path)
        action = (method, rest)
        if action == ("GET", "config"):
            return {**guest.config, **({"digest": "d"} if guest.config else {})}
        if action == ("PUT", "config"):
            return self._configure(guest, params)
        if action == ("GET", "status/current"):
            return {"vmid": vmid, "status": guest.status}
        if method == "POST" and rest in ("status/start", "status/stop", "status/shutdown"):
            return self._power(guest, rest.rpartition("/")[2])
        if action == ("POST", "clone"):
            return self._clone(guest, int(params["newid"]), params)
        if action == ("POST", "template"):
            return self._template(guest)
        if action == ("PUT", "resize"):
            return self._resize(guest, str(params["size"]))
        if action == ("DELETE", ""):
            if guest.status == "running":
                return self._refuse(kind, vmid, f"CT {vmid} is running - destroy failed")
            del self.guests[vmid]
            self.origins.pop(f"{self.pool}/subvol-{vmid}-disk-0", None)
            self.origins.pop(f"{self.pool}/basevol-{vmid}-disk-0", None)
            return self._task(kind, vmid)
        if rest == "snapshot" or rest.startswith("snapshot/"):
            return self._snapshot(guest, method, rest.partition("/")[2], params)
        if rest.startswith("firewall/"):
            return self._firewall(guest, method, rest.removeprefix("firewall/"), params)
        raise PveError(self.host, f"no such path {path}", status=501, path=path)

    def _with_mac(self, guest: FakeGuest) -> None:
        """PVE gives a NIC without ``hwaddr`` a generated MAC."""
        net = guest.config.get("net0")
        if isinstance(net, str) and "hwaddr=" not in net:
            guest.config["net0"] = f"{net},hwaddr=BC:24:11:00:00:{next(self._macs):02X}"

    def _configure(self, guest: FakeGuest, params: dict[str, Any]) -> None:
        deletes = [k for k in str(params.get("delete", "")).split(",") if k]
        running = guest.status == "running"
        for key, value in params.items():
            if key == "delete":
                continue
            (guest.pending if running and _COLD.match(key) else guest.config)[key] = value
        for key in deletes:
            if running and _COLD.match(key):
                guest.pending[key] = None
            else:
                guest.config.pop(key, None)
        self._with_mac(guest)
        return None

    def _power(self, guest: FakeGuest, action: str) -> str:
        if action == "start":
            if guest.template:
                return self._refuse(guest.kind, guest.vmid, "CT is a template - start failed")
            if guest.status == "running":
                return self._refuse(guest.kind, guest.vmid, f"CT {guest.vmid} already running")
            for key, value in guest.pending.items():  # cold keys take effect at start
                if value is None:
                    guest.config.pop(key, None)
                else:
                    guest.config[key] = value
            guest.pending.clear()
            guest.status = "running"
        else:
            if guest.status != "running":
                return self._refuse(guest.kind, guest.vmid, f"CT {guest.vmid} not running")
            guest.status = "stopped"
        return self._task(guest.kind, guest.vmid)

    def _clone(self, source: FakeGuest, newid: int, params: dict[str, Any]) -> str:
        if newid in self.guests:
            return self._refuse(source.kind, newid, f"CT {newid} already exists on node '{self.node}'")
        full = self.full_clones or bool(int(params.get("full", 0)))
        if not full and not source.template:
            return self._refuse(
                source.kind, newid, f"linked clone feature for 'CT {source.vmid}' is not available"
            )
        config = {k: v for k, v in source.config.items() if k not in ("template", "net0")}
        size = str(source.config["rootfs"]).partition(",")[2] or "size=8G"
        if full:
            config["rootfs"] = f"{self.storage}:subvol-{newid}-disk-0,{size}"
        else:
            config["rootfs"] = f"{self.storage}:basevol-{source.vmid}-disk-0/subvol-{newid}-disk-0,{size}"
        if "net0" in source.config:  # a clone gets a new MAC
            config["net0"] = ",".join(
                p for p in str(source.config["net0"]).split(",") if not p.startswith("hwaddr=")
            )
        config["hostname"] = params.get("hostname", f"ct{newid}")
        clone = self.guests[newid] = FakeGuest(newid, source.kind, config, raw_lines=list(source.raw_lines))
        self._with_mac(clone)
        base = f"{self.pool}/basevol-{source.vmid}-disk-0@__base__"
        self.origins[self.dataset(newid)] = "-" if full else base
        return self._task(source.kind, newid)

    def _template(self, guest: FakeGuest) -> None:
        if guest.status == "running":
            raise PveError(self.host, f"CT {guest.vmid} is running", status=500)
        dataset = self.dataset(guest.vmid)
        guest.config["template"] = 1
        guest.config["rootfs"] = str(guest.config["rootfs"]).replace(
            f"subvol-{guest.vmid}-disk-0", f"basevol-{guest.vmid}-disk-0"
        )
        self.origins[self.dataset(guest.vmid)] = self.origins.pop(dataset)
        return None

    def _resize(self, guest: FakeGuest, size: str) -> str:
        volume, _, options = str(guest.config["rootfs"]).partition(",")
        now = int(re.search(r"size=(\d+)G", options or "size=8G").group(1))  # type: ignore[union-attr]
        want = int(size.rstrip("G"))
        if want < now:
            return self._refuse(guest.kind, guest.vmid, "unable to shrink disk size")
        guest.config["rootfs"] = f"{volume},size={want}G"
        return self._task(guest.kind, guest.vmid)

    def _snapshot(self, guest: FakeGuest, method: str, name: str, params: dict[str, Any]) -> Any:
        if method == "GET":
            return [*(dict(s) for s in guest.snapshots), {"name": "current", "description": "You are here!"}]
        if method == "POST":
            snapname = str(params["snapname"])
            if any(s["name"] == snapname for s in guest.snapshots):
                return self._refuse(guest.kind, guest.vmid, f"snapshot name '{snapname}' already used")
            snapshot = {"name": snapname, "snaptime": next(self._clock)}
            if params.get("description"):
                snapshot["description"] = params["description"]
            guest.snapshots.append(snapshot)
            return self._task(guest.kind, guest.vmid)
        if not any(s["name"] == name for s in guest.snapshots):
            return self._refuse(guest.kind, guest.vmid, f"snapshot '{name}' does not exist")
        guest.snapshots = [s for s in guest.snapshots if s["name"] != name]
        return self._task(guest.kind, guest.vmid)

    def _firewall(self, guest: FakeGuest, method: str, rest: str, params: dict[str, Any]) -> Any:
        if rest == "options":
            if method == "GET":
                return dict(guest.firewall_options)
            guest.firewall_options.update(params)
            return None
        if rest == "rules" and method == "GET":
            return [{**r, "pos": n} for n, r in enumerate(guest.firewall_rules)]
        if rest == "rules" and method == "POST":
            guest.firewall_rules.insert(0, dict(params))  # PVE inserts a new rule at position 0
            return None
        del guest.firewall_rules[int(rest.rpartition("/")[2])]
        return None

    # -------------------------------------------------------------- the host's shell

    def conf(self, vmid: int) -> str:
        """``/etc/pve/lxc/<vmid>.conf`` as pmxcfs renders it: the keys, the raw lines, the snapshots."""
        guest = self.guests[vmid]
        lines = [f"{k}: {v}" for k, v in guest.config.items()]
        text = "\n".join([*lines, *guest.raw_lines]) + "\n"
        for snapshot in guest.snapshots:
            text += f"\n[{snapshot['name']}]\nsnaptime: {snapshot['snaptime']}\n"
        return text

    def shell(self, fallback: ScriptedExecutor | None = None) -> PveShell:
        return PveShell(self, fallback or ScriptedExecutor(strict=False, host=self.host))

    def serve(self, provider: Any, shell: PveShell | None = None) -> PveShell:
        """Point ``provider``'s PVE client and SSH executor at this host; the shell it uses comes back."""
        shell = shell or self.shell()
        provider.pve = lambda: self
        provider.ssh = lambda: shell
        return shell


class PveShell:
    """The fake host's shell: what the guest providers run over SSH, answered from :class:`FakePve`.

    ``cat``/atomic write of a guest's config file, ``zfs get origin`` and ``pct exec`` (refused unless
    the container runs) come from the model; every other command, and a ``pct exec`` into a running
    container, goes to ``fallback`` (a :class:`ScriptedExecutor`: script its failures there).
    """

    def __init__(self, pve: FakePve, fallback: ScriptedExecutor) -> None:
        self.pve, self.fallback = pve, fallback
        self.calls: list[Call] = []

    @property
    def host(self) -> str:
        return self.pve.host

    @property
    def argvs(self) -> list[list[str]]:
        return [call.argv for call in self.calls]

    def run(
        self,
        argv: Argv,
        *,
        stdin: str | bytes | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> CommandResult:
        args = [str.__str__(a) for a in argv]
        self.calls.append(Call(args, stdin, timeout))
        self.pve.timeline.append(("ssh", display(argv)))
        answered = self._answer(args, stdin)
        if answered is None:
            return self.fallback.run(argv, stdin=stdin, check=check, timeout=timeout)
        exit_status, stdout, stderr = answered
        result = CommandResult(self.host, display(argv), exit_status, stdout, stderr, 0.0)
        return result.check() if check else result

    def _conf_vmid(self, path: str) -> int | None:
        match = re.fullmatch(r".*/(\d+)\.conf", path)
        return int(match.group(1)) if match and int(match.group(1)) in self.pve.guests else None

    def _answer(self, args: list[str], stdin: str | bytes | None) -> tuple[int, str, str] | None:
        if args[:1] == ["cat"] and len(args) == 2:
            vmid = self._conf_vmid(args[1])
            return (
                (0, self.pve.conf(vmid), "") if vmid is not None else (1, "", f"cat: {args[1]}: No such file")
            )
        if args[:2] == ["sh", "-c"] and args[3:4] == ["phoenix-write"] and args[4].endswith(".conf"):
            vmid = self._conf_vmid(args[4])
            if vmid is None:
                return 1, "", f"mktemp: {args[4]}: No such file"
            self._write_conf(vmid, stdin.decode() if isinstance(stdin, bytes) else stdin or "")
            return 0, "", ""
        if args[:2] == ["sh", "-c"] and args[3:4] == ["phoenix-devices"]:
            return 0, "".join(f"{path}\n" for path in args[4:] if path in self.pve.missing_devices), ""
        if args[:6] == ["zfs", "get", "-H", "-o", "value", "origin"]:
            origin = self.pve.origins.get(args[6])
            return (
                (0, f"{origin}\n", "")
                if origin
                else (1, "", f"cannot open '{args[6]}': dataset does not exist")
            )
        if args[:2] == ["pct", "exec"]:
            guest = self.pve.guests.get(int(args[2]))
            if guest is None or guest.status != "running":
                return 255, "", f"container '{args[2]}' not running!"
        return None

    def _write_conf(self, vmid: int, text: str) -> None:
        """pmxcfs takes the file whole: its main section is the config, ``lxc.*`` lines the raw lines."""
        guest = self.pve.guests[vmid]
        main = text.partition("\n[")[0]
        config: dict[str, Any] = {}
        raw: list[str] = []
        for line in main.splitlines():
            key, sep, value = line.partition(":")
            if not sep:
                continue
            if key.strip().startswith("lxc."):
                raw.append(line.strip())
            else:
                config[key.strip()] = value.strip()
        # Numbers come back as PVE's API would give them.
        guest.config = {k: int(v) if v.isdigit() else v for k, v in config.items()}
        guest.raw_lines = raw
