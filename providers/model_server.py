"""ModelServer: an OpenAI-compatible model server (ollama, llama.cpp's llama-server) in a workload guest, as a
systemd unit, gated on the engine's own health endpoints.

One provider for every engine: it executes plain data the engine modules render
(``phoenix_components/render/engines/``): the unit's text and path, the service name, the probe (which
endpoints must answer 200 and which of them must list the model) and an optional pull command run once the
server answers (``ollama pull``). ``create``/``update`` write the unit and (re)start the service in one SSH
session, wait until the server answers, run the pull, then wait until every probed endpoint lists the
model. A server not ready by its deadline fails the deploy with :class:`ModelServerNotReadyError`, naming
the guest and carrying the tail of the service's journal. Probes run inside the guest (``pct exec``).

vLLM keeps its own resource (``providers/vllm_service.py``: type token, inputs and state of existing
stacks), built on the functions here.

``guest_instance``: as for VllmService, a replaced guest (same vmid) is an update that deploys again. A
failed update puts the previous unit back (state keeps the previous inputs), so host and state agree.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.dynamic import ReadResult, UpdateResult

from providers.base import (
    VERSION_KEY,
    ConvergingProvider,
    DynamicResource,
    Inputs,
    Options,
    cleanup_on_failure,
    stored,
)
from providers.channels.command import Executor, sh_argv, sha256_text, write_file_argv
from providers.channels.pct import exec_argv
from providers.channels.steps import HostCommand
from providers.channels.targets import SshTarget
from providers.errors import HostError, RemoteCommandError, tail

PROVIDER_VERSION = "1"

# Run once the unit file is in place (atomically): one session for the whole change. ``$3`` is the unit.
RESTART = 'systemctl daemon-reload; systemctl enable "$3" >/dev/null; systemctl restart "$3"'
REMOVE = 'systemctl disable --now "$2" 2>/dev/null || true; rm -f "$1"; systemctl daemon-reload || true'
# Asks the server inside the guest; prints one JSON line: ``health`` is 200 when every endpoint answered
# 200 (else the first other status, 0 when unreachable), ``models`` the names every listing endpoint
# lists. argv: port, then the checks as JSON: [{"path": "/v1/models", "list": "data.id"}, ...].
PROBE_CODE = """
import json, sys, urllib.error, urllib.request
base = "http://127.0.0.1:%s" % sys.argv[1]
out = {"health": 200, "models": None}
try:
    for check in json.loads(sys.argv[2]):
        try:
            reply = urllib.request.urlopen(base + check["path"], timeout=5)
        except urllib.error.HTTPError as e:
            out["health"], out["error"] = e.code, "%s: %s" % (check["path"], e.code)
            break
        body = reply.read()
        if check.get("list"):
            key, _, name = check["list"].partition(".")
            listed = [m.get(name) for m in json.loads(body).get(key) or []]
            out["models"] = listed if out["models"] is None else [m for m in out["models"] if m in listed]
except Exception as e:  # noqa: BLE001 - any failure means "not ready yet"
    out["health"], out["error"] = 0, str(e)[:200]
out["models"] = out["models"] or []
print(json.dumps(out))
"""
# The interpreter for the probe: the first of ``$3 ...`` present (an engine's venv, else the system one).
PROBE = (
    'code=$1; port=$2; checks=$3; shift 3; for py in "$@"; do command -v "$py" >/dev/null 2>&1 && '
    'exec "$py" -c "$code" "$port" "$checks"; done; echo "no python in the guest" >&2; exit 127'
)
STATUS = 'sha256sum "$1" 2>/dev/null || echo "missing -"; systemctl is-active "$2" || true'


# --- 1. inputs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelServerInputs(Inputs):
    node: str
    vmid: int
    engine: str  # "ollama", "llamacpp": the registry key, for messages and plan
    service: str  # the unit's name, e.g. "ollama.service"
    unit: str
    unit_path: str
    port: int
    model: str  # the name the listing endpoints must list
    checks: list[dict[str, str]] = field(default_factory=list)  # [{"path": ..., "list": "data.id"}]
    pull: list[str] = field(default_factory=list)  # argv in the guest once the server answers; [] = none
    pull_timeout_s: int = 3600
    python: list[str] = field(default_factory=lambda: ["python3"])  # the probe's interpreters, in order
    startup_timeout_s: int = 900
    guest_instance: str | None = None  # the container it runs in (LxcGuest's instance output)
    guest_name: str = ""  # the guest's hostname, for messages only (never a change on its own)
    version: str = PROVIDER_VERSION


@dataclass(frozen=True)
class Probe:
    """What :func:`probe_argv` asks, as plain data (a VllmService's or a ModelServer's)."""

    vmid: int
    port: int
    checks: Sequence[Mapping[str, str]]
    python: Sequence[str]


class ModelServerNotReadyError(HostError):
    """The server did not become ready before its deadline; the deploy stops here."""

    def __init__(
        self,
        host: str,
        vmid: int,
        what: str,
        served: str,
        waited: float,
        last: str,
        journal: str,
        *,
        service: str,
        guest_name: str = "",
    ) -> None:
        self.vmid, self.served, self.service, self.journal_tail = vmid, served, service, tail(journal, 20)
        guest = f"CT {vmid} ({guest_name})" if guest_name else f"CT {vmid}"
        super().__init__(
            host,
            f"{what} in {guest} did not serve {served!r} within {waited:.0f}s (last probe: {last})"
            f"\n--- journalctl -u {service} (tail) ---\n{self.journal_tail}",
        )


# --- 2. pure logic -------------------------------------------------------------------------------------


def unit_install_argv(vmid: int, unit_path: str, service: str) -> list[str]:
    """Write the unit (stdin) atomically inside the guest, then enable and (re)start the service."""
    return exec_argv(vmid, write_file_argv(unit_path, 0o644, then=RESTART, args=[service]))


def server_probe_argv(probe: Probe) -> list[str]:
    checks = json.dumps(list(map(dict, probe.checks)), separators=(",", ":"))
    return exec_argv(
        probe.vmid, sh_argv(PROBE, "phoenix-probe", PROBE_CODE, str(probe.port), checks, *probe.python)
    )


def service_journal_argv(vmid: int, service: str) -> list[str]:
    return exec_argv(vmid, ["journalctl", "-u", service, "-n", "30", "--no-pager"])


def service_status_argv(vmid: int, unit_path: str, service: str) -> list[str]:
    return exec_argv(vmid, sh_argv(STATUS, "phoenix-status", unit_path, service))


def service_remove_argv(vmid: int, unit_path: str, service: str, label: str) -> list[str]:
    return exec_argv(vmid, sh_argv(REMOVE, label, unit_path, service))


def probe_of(inputs: ModelServerInputs) -> Probe:
    return Probe(inputs.vmid, inputs.port, inputs.checks, inputs.python)


def install_step(vmid: int, unit_path: str, service: str, unit: str) -> HostCommand:
    return HostCommand(
        f"install {service} in CT {vmid}",
        unit_install_argv(vmid, unit_path, service),
        unit,
        f"the unit (sha256 {sha256_text(unit)[:12]})",
    )


def probe_step(probe: Probe, what: str, until: str) -> HostCommand:
    return HostCommand(
        f"probe {what} in CT {probe.vmid}", server_probe_argv(probe), timeout_s=30, until=until
    )


def listing(checks: Sequence[Mapping[str, str]], model: str, timeout_s: int) -> str:
    paths = " and ".join(c["path"] + (f" lists {model}" if c.get("list") else " is 200") for c in checks)
    return f"{paths}, at most {timeout_s}s"


def deploy_steps(inputs: ModelServerInputs) -> list[HostCommand]:
    """Create and update alike: the unit written and the service (re)started in one session; with a pull,
    the probe until the server answers, then the pull; then the probe until every listing endpoint lists
    the model (or the deadline). ``phoenix plan`` renders these; ``converge`` runs them."""
    probe = probe_of(inputs)
    steps = [install_step(inputs.vmid, inputs.unit_path, inputs.service, inputs.unit)]
    if inputs.pull:
        answers = f"{inputs.checks[0]['path']} answers 200, at most {inputs.startup_timeout_s}s"
        steps.append(
            probe_step(Probe(probe.vmid, probe.port, inputs.checks[:1], probe.python), inputs.engine, answers)
        )
        steps.append(
            HostCommand(
                f"pull {inputs.model} in CT {inputs.vmid}",
                exec_argv(inputs.vmid, list(inputs.pull)),
                timeout_s=inputs.pull_timeout_s,
            )
        )
    steps.append(
        probe_step(probe, inputs.engine, listing(inputs.checks, inputs.model, inputs.startup_timeout_s))
    )
    return steps


def parse_probe(stdout: str) -> dict[str, Any]:
    """The probe's JSON line; anything unparsable counts as not ready."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            parsed: dict[str, Any] = json.loads(line)
            return parsed
        except json.JSONDecodeError:
            continue
    return {"health": 0, "models": [], "error": f"unreadable probe output: {stdout[-200:]!r}"}


def ready(probe: Mapping[str, Any], served: str | None) -> bool:
    """Every endpoint answered 200 and (``served`` given) every listing endpoint lists it."""
    return probe.get("health") == 200 and (served is None or served in (probe.get("models") or []))


def wait_until_ready(
    probe: Callable[[], dict[str, Any]],
    served: str | None,
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[bool, dict[str, Any]]:
    """Probe until ready or the deadline passes; intervals grow from 1 s to 10 s. Returns the last probe."""
    deadline = clock() + timeout
    interval = 1.0
    while True:
        last = probe()
        if ready(last, served):
            return True, last
        remaining = deadline - clock()
        if remaining <= 0:
            return False, last
        sleep(min(interval, remaining))
        interval = min(interval * 1.5, 10.0)


def parse_status(stdout: str) -> tuple[str | None, str]:
    """``sha256sum`` line (or ``missing -``) then ``systemctl is-active``: (sha or None, state)."""
    lines = stdout.strip().splitlines() or ["missing -"]
    sha = lines[0].split()[0]
    return (None if sha == "missing" else sha), (lines[1].strip() if len(lines) > 1 else "unknown")


def deployed(props: Mapping[str, Any], unit: str, probe: Mapping[str, Any]) -> dict[str, Any]:
    """Every output once the server is ready (``probe`` is its last, good probe)."""
    return {**props, "unit_sha256": sha256_text(unit), "active": True, "models": probe["models"]}


def observed(props: Mapping[str, Any], stdout: str) -> dict[str, Any] | None:
    """The stored outputs as the guest has the service now (``stdout`` of the status command); None if
    the unit is gone. A unit edited in the guest shows as a different unit (drift); the next up writes
    ours back."""
    sha, state = parse_status(stdout)
    if sha is None:
        return None
    unit = str(props.get("unit") or "")
    shown = unit if sha == sha256_text(unit) else f"# edited on the host (sha256 {sha})\n"
    return {**stored(props), "unit": shown, "unit_sha256": sha, "active": state == "active"}


def probe_result(ok: bool, stdout: str, stderr: str) -> dict[str, Any]:
    return parse_probe(stdout) if ok else {"health": 0, "error": tail(stderr, 3)}


def run_probe(ssh: Executor, step: HostCommand) -> dict[str, Any]:
    result = ssh.run(step.argv, check=False, timeout=step.timeout_s)
    return probe_result(result.ok, result.stdout, result.stderr)


def read_service(ssh: Executor, id_: str, props: dict[str, Any], status: list[str]) -> ReadResult:
    result = ssh.run(status, check=False)
    # A guest that is gone or stopped takes its service with it.
    outs = observed(props, result.stdout) if result.ok else None
    return ReadResult(id_ if outs is not None else None, outs or {})


def restoring(
    ssh: Callable[[], Executor], install: HostCommand, service: str, vmid: int
) -> AbstractContextManager[None]:
    """Around an update: on failure, ``install`` (the previous unit's step) runs again, then the original
    error is raised (a failed restore is a note on it). Pulumi keeps the previous inputs of a failed update,
    so the guest must run what they say; a config set back to them is then really "no change"."""

    def reinstall() -> None:
        ssh().run(install.argv, stdin=install.stdin, check=False).check(install.what)

    return cleanup_on_failure(reinstall, f"restoring the previous {service} in CT {vmid}")


def remove_service(ssh: Executor, remove: list[str]) -> None:
    try:
        ssh.run(remove)
    except RemoteCommandError as error:
        if "does not exist" not in error.stderr_tail:  # the guest went first: nothing left to remove
            raise


# --- 3. the provider -----------------------------------------------------------------------------------

ENGINE_TITLES = {"ollama": "ollama", "llamacpp": "llama.cpp server"}


@dataclass
class ModelServerProvider(ConvergingProvider):
    inputs_type = ModelServerInputs
    required = ("node", "vmid", "engine", "service", "unit", "unit_path", "port", "model")
    replace_on = ("node", "vmid", "engine", "service")
    update_on = (
        "unit",
        "unit_path",
        "port",
        "model",
        "checks",
        "pull",
        "pull_timeout_s",
        "python",
        "startup_timeout_s",
        "guest_instance",
    )

    def resource_id(self, inputs: ModelServerInputs) -> str:
        return f"{inputs.vmid}/{inputs.service}"

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        inputs = ModelServerInputs.from_props(props)
        return read_service(
            self.ssh(), id_, props, service_status_argv(inputs.vmid, inputs.unit_path, inputs.service)
        )

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        inputs = ModelServerInputs.from_props(props)
        remove = service_remove_argv(
            inputs.vmid, inputs.unit_path, inputs.service, f"phoenix-{inputs.engine}-rm"
        )
        remove_service(self.ssh(), remove)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        """Deploy ``news``; if that fails, the previous unit goes back (and is restarted): a failed update
        keeps the old inputs in state, so the guest must run what they say, and a config set back to them
        is then really "no change"."""
        old = ModelServerInputs.from_props(olds)
        with restoring(self.ssh, deploy_steps(old)[0], old.service, old.vmid):
            return UpdateResult(self.converge(ModelServerInputs.from_props(news)))

    def converge(self, inputs: ModelServerInputs) -> dict[str, Any]:
        """Install the unit and (re)start the server, pull the model once it answers, then wait until it
        serves the model."""
        ssh = self.ssh()
        steps = deploy_steps(inputs)
        install, final = steps[0], steps[-1]
        ssh.run(install.argv, stdin=install.stdin, check=False).check(install.what)
        if inputs.pull:
            answers, pull = steps[1], steps[2]
            ok, last = wait_until_ready(lambda: run_probe(ssh, answers), None, inputs.startup_timeout_s)
            if not ok:
                raise self._not_ready(ssh, inputs, last)
            ssh.run(pull.argv, check=False, timeout=pull.timeout_s).check(pull.what)
        ok, last = wait_until_ready(lambda: run_probe(ssh, final), inputs.model, inputs.startup_timeout_s)
        if not ok:
            raise self._not_ready(ssh, inputs, last)
        return deployed(inputs.to_props(), inputs.unit, last)

    def _not_ready(
        self, ssh: Executor, inputs: ModelServerInputs, last: dict[str, Any]
    ) -> ModelServerNotReadyError:
        journal = ssh.run(service_journal_argv(inputs.vmid, inputs.service), check=False)
        return ModelServerNotReadyError(
            ssh.host,
            inputs.vmid,
            ENGINE_TITLES.get(inputs.engine, inputs.engine),
            inputs.model,
            inputs.startup_timeout_s,
            json.dumps(last),
            journal.stdout or journal.stderr,
            service=inputs.service,
            guest_name=inputs.guest_name,
        )


# --- 4. the resource -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelServerArgs:
    node: pulumi.Input[str]
    vmid: pulumi.Input[int]
    """The container the server runs in (``LxcGuest.vmid``: the data edge orders this after it)."""
    engine: str
    """The engine's registry key (``ollama``, ``llamacpp``)."""
    service: str
    """The systemd unit's name, e.g. ``ollama.service``."""
    unit: pulumi.Input[str]
    """The unit's text (``phoenix_components.render.engines``)."""
    unit_path: str
    port: pulumi.Input[int]
    model: str
    """The name each listing endpoint must list before the deploy counts as done."""
    checks: list[dict[str, str]]
    """The endpoints probed: ``{"path": "/health"}`` must answer 200, ``"list": "data.id"`` list the model."""
    pull: list[str]
    """Run in the guest once the server answers (``ollama pull``); empty: nothing to fetch."""
    pull_timeout_s: int = 3600
    python: list[str] = field(default_factory=lambda: ["python3"])
    startup_timeout_s: pulumi.Input[int] = 900
    guest_instance: pulumi.Input[str] | None = None
    """The LxcGuest's ``instance`` output: a replaced guest gets the service deployed again."""
    guest_name: str = ""
    """The guest's hostname, for messages only."""


class ModelServer(DynamicResource, module="phoenix", name="ModelServer"):
    """A model server in a guest (see the module docstring).
    Token ``pulumi-python:dynamic/phoenix:ModelServer``."""

    unit_sha256: pulumi.Output[str]
    """The unit file's sha256 in the guest (a different one on refresh: edited there)."""
    active: pulumi.Output[bool]
    models: pulumi.Output[list[str]]
    """What the listing endpoints served when the deploy finished."""

    def __init__(
        self, name: str, args: ModelServerArgs, *, ssh_target: SshTarget, opts: Options = None
    ) -> None:
        props = {**vars(args), VERSION_KEY: PROVIDER_VERSION}
        self._register(ModelServerProvider(ssh_target=ssh_target), name, props, opts)
