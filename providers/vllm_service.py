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
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import ReadResult

from providers.base import VERSION_KEY, ConvergingProvider, DynamicResource, Inputs, Options, stored
from providers.channels.command import Executor, sh_argv, sha256_text, write_file_argv
from providers.channels.pct import exec_argv
from providers.channels.steps import HostCommand
from providers.channels.targets import SshTarget
from providers.errors import HostError, RemoteCommandError, tail

PROVIDER_VERSION = "1"
SERVICE = "vllm.service"

# Run once the unit file is in place (atomically): one session for the whole change. ``$3`` is the unit.
RESTART = 'systemctl daemon-reload; systemctl enable "$3" >/dev/null; systemctl restart "$3"'
REMOVE = 'systemctl disable --now "$2" 2>/dev/null || true; rm -f "$1"; systemctl daemon-reload || true'
# Asks the server inside the guest; prints one JSON line. Python: vLLM's venv, else the system one.
PROBE_CODE = """
import json, sys, urllib.request
base = "http://127.0.0.1:%s" % sys.argv[1]
out = {"health": 0, "models": []}
try:
    out["health"] = urllib.request.urlopen(base + "/health", timeout=5).status
    data = json.load(urllib.request.urlopen(base + "/v1/models", timeout=5))
    out["models"] = [m.get("id") for m in data.get("data", [])]
except Exception as e:  # noqa: BLE001 - any failure means "not ready yet"
    out["error"] = str(e)[:200]
print(json.dumps(out))
"""
PROBE = (
    'for py in /opt/vllm/bin/python python3; do command -v "$py" >/dev/null 2>&1 && exec "$py" -c "$1" "$2"; '
    "done; echo 'no python in the guest' >&2; exit 127"
)
STATUS = 'sha256sum "$1" 2>/dev/null || echo "missing -"; systemctl is-active "$2" || true'


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


class VllmNotReadyError(HostError):
    """The server did not become ready before its deadline; the deploy stops here."""

    def __init__(
        self, host: str, vmid: int, served: str, waited: float, last: str, journal: str, guest_name: str = ""
    ) -> None:
        self.vmid, self.served, self.journal_tail = vmid, served, tail(journal, 20)
        guest = f"CT {vmid} ({guest_name})" if guest_name else f"CT {vmid}"
        super().__init__(
            host,
            f"vLLM in {guest} did not serve {served!r} within {waited:.0f}s (last probe: {last})"
            f"\n--- journalctl -u {SERVICE} (tail) ---\n{self.journal_tail}",
        )


# --- 2. pure logic -------------------------------------------------------------------------------------


def install_argv(inputs: VllmServiceInputs) -> list[str]:
    """Write the unit (stdin) atomically inside the guest, then enable and (re)start the service."""
    return exec_argv(inputs.vmid, write_file_argv(inputs.unit_path, 0o644, then=RESTART, args=[SERVICE]))


def probe_argv(inputs: VllmServiceInputs) -> list[str]:
    return exec_argv(inputs.vmid, sh_argv(PROBE, "phoenix-probe", PROBE_CODE, str(inputs.port)))


def journal_argv(inputs: VllmServiceInputs) -> list[str]:
    return exec_argv(inputs.vmid, ["journalctl", "-u", SERVICE, "-n", "30", "--no-pager"])


def status_argv(inputs: VllmServiceInputs) -> list[str]:
    return exec_argv(inputs.vmid, sh_argv(STATUS, "phoenix-status", inputs.unit_path, SERVICE))


def remove_argv(inputs: VllmServiceInputs) -> list[str]:
    return exec_argv(inputs.vmid, sh_argv(REMOVE, "phoenix-vllm-rm", inputs.unit_path, SERVICE))


def deploy_steps(inputs: VllmServiceInputs) -> list[HostCommand]:
    """Create and update alike: the unit written and the service (re)started in one session, then the
    probe, repeated until the server serves the model (or the deadline). ``phoenix plan`` renders these;
    ``converge`` runs them."""
    install = HostCommand(
        f"install {SERVICE} in CT {inputs.vmid}",
        install_argv(inputs),
        inputs.unit,
        f"the unit (sha256 {sha256_text(inputs.unit)[:12]})",
    )
    until = (
        f"/health is 200 and /v1/models lists {inputs.served_model_name}, at most {inputs.startup_timeout_s}s"
    )
    probe = HostCommand(f"probe vLLM in CT {inputs.vmid}", probe_argv(inputs), timeout_s=30, until=until)
    return [install, probe]


def parse_probe(stdout: str) -> dict[str, Any]:
    """The probe's JSON line; anything unparsable counts as not ready."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            parsed: dict[str, Any] = json.loads(line)
            return parsed
        except json.JSONDecodeError:
            continue
    return {"health": 0, "models": [], "error": f"unreadable probe output: {stdout[-200:]!r}"}


def ready(probe: dict[str, Any], served: str) -> bool:
    return probe.get("health") == 200 and served in (probe.get("models") or [])


def wait_until_ready(
    probe: Callable[[], dict[str, Any]],
    served: str,
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


def deployed(inputs: VllmServiceInputs, probe: Mapping[str, Any]) -> dict[str, Any]:
    """Every output once the server is ready (``probe`` is its last, good probe)."""
    return {
        **inputs.to_props(),
        "unit_sha256": sha256_text(inputs.unit),
        "active": True,
        "models": probe["models"],
    }


def observed(props: Mapping[str, Any], stdout: str) -> dict[str, Any] | None:
    """The stored outputs as the guest has the service now (``stdout`` of :func:`status_argv`); None if
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
        result = self.ssh().run(status_argv(VllmServiceInputs.from_props(props)), check=False)
        # A guest that is gone or stopped takes its service with it.
        outs = observed(props, result.stdout) if result.ok else None
        return ReadResult(id_ if outs is not None else None, outs or {})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        try:
            self.ssh().run(remove_argv(VllmServiceInputs.from_props(props)))
        except RemoteCommandError as error:
            if "does not exist" not in error.stderr_tail:  # the guest went first: nothing left to remove
                raise

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
        result = ssh.run(probe.argv, check=False, timeout=probe.timeout_s)
        return probe_result(result.ok, result.stdout, result.stderr)


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
        super().__init__(VllmServiceProvider(ssh_target=ssh_target), name, props, opts)
