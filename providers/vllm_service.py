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

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import pulumi
from pulumi.dynamic import CheckResult, CreateResult, DiffResult, ReadResult, UpdateResult

from providers.base import DynamicResource, HostProvider, as_int, diff_inputs, require, with_defaults
from providers.channels.command import CommandResult, Executor
from providers.channels.pct import exec_argv
from providers.channels.targets import ApiTarget, SshTarget
from providers.errors import HostError, RemoteCommandError, tail

PROVIDER_VERSION = "1"
SERVICE = "vllm.service"

# Installs the unit atomically and (re)starts the service: one session for the whole change.
INSTALL = (
    'set -e; tmp=$(mktemp "$1.XXXXXX"); cat > "$tmp"; chmod 644 "$tmp"; mv -f "$tmp" "$1"; '
    'systemctl daemon-reload; systemctl enable "$2" >/dev/null; systemctl restart "$2"'
)
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


@dataclass(frozen=True)
class VllmServiceInputs:
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

    @classmethod
    def from_props(cls, props: dict[str, Any]) -> VllmServiceInputs:
        values = {k: props[k] for k in cls.__dataclass_fields__ if k in props}
        for key in ("vmid", "port", "startup_timeout_s"):
            if key in values:
                values[key] = as_int(values[key])
        return cls(**values)

    def to_props(self) -> dict[str, Any]:
        return asdict(self)


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


# ------------------------------------------------------------------ pure logic


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


def unit_sha(unit: str) -> str:
    return hashlib.sha256(unit.encode()).hexdigest()


def parse_status(stdout: str) -> tuple[str | None, str]:
    """``sha256sum`` line (or ``missing -``) then ``systemctl is-active``: (sha or None, state)."""
    lines = stdout.strip().splitlines() or ["missing -"]
    sha = lines[0].split()[0]
    return (None if sha == "missing" else sha), (lines[1].strip() if len(lines) > 1 else "unknown")


# ------------------------------------------------------------------ provider


@dataclass
class VllmServiceProvider(HostProvider):
    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = require(news, ["node", "vmid", "unit", "unit_path", "served_model_name", "port"])
        return CheckResult(with_defaults(news, VllmServiceInputs), failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return diff_inputs(
            olds,
            news,
            replace_on=["node", "vmid"],
            update_on=[
                "unit",
                "unit_path",
                "served_model_name",
                "port",
                "startup_timeout_s",
                "guest_instance",
            ],
        )

    def create(self, props: dict[str, Any]) -> CreateResult:
        inputs = VllmServiceInputs.from_props(props)
        return CreateResult(f"{inputs.vmid}/{SERVICE}", self._deploy(inputs))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(self._deploy(VllmServiceInputs.from_props(news)))

    def _deploy(self, inputs: VllmServiceInputs) -> dict[str, Any]:
        ssh = self.ssh()
        install = ["sh", "-c", INSTALL, "phoenix-vllm", inputs.unit_path, SERVICE]
        ssh.run(exec_argv(inputs.vmid, install), stdin=inputs.unit).check(
            f"install {SERVICE} in CT {inputs.vmid}"
        )
        ok, last = wait_until_ready(
            lambda: self._probe(ssh, inputs), inputs.served_model_name, inputs.startup_timeout_s
        )
        if not ok:
            journal = ssh.run(
                exec_argv(inputs.vmid, ["journalctl", "-u", SERVICE, "-n", "30", "--no-pager"]), check=False
            )
            raise VllmNotReadyError(
                ssh.host,
                inputs.vmid,
                inputs.served_model_name,
                inputs.startup_timeout_s,
                json.dumps(last),
                journal.stdout or journal.stderr,
                inputs.guest_name,
            )
        return {
            **inputs.to_props(),
            "unit_sha256": unit_sha(inputs.unit),
            "active": True,
            "models": last["models"],
        }

    def _probe(self, ssh: Executor, inputs: VllmServiceInputs) -> dict[str, Any]:
        argv = exec_argv(inputs.vmid, ["sh", "-c", PROBE, "phoenix-probe", PROBE_CODE, str(inputs.port)])
        result: CommandResult = ssh.run(argv, check=False, timeout=30)
        return parse_probe(result.stdout) if result.ok else {"health": 0, "error": tail(result.stderr, 3)}

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        inputs = VllmServiceInputs.from_props(props)
        argv = exec_argv(inputs.vmid, ["sh", "-c", STATUS, "phoenix-status", inputs.unit_path, SERVICE])
        result = self.ssh().run(argv, check=False)
        if not result.ok:  # the guest itself is gone or stopped: so is its service
            return ReadResult(None, {})
        sha, state = parse_status(result.stdout)
        if sha is None:
            return ReadResult(None, {})
        # A unit edited on the host shows as a different unit (drift); the next up writes ours back.
        unit = inputs.unit if sha == unit_sha(inputs.unit) else f"# edited on the host (sha256 {sha})\n"
        return ReadResult(id_, {**props, "unit": unit, "unit_sha256": sha, "active": state == "active"})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        inputs = VllmServiceInputs.from_props(props)
        script = (
            'systemctl disable --now "$2" 2>/dev/null || true; rm -f "$1"; systemctl daemon-reload || true'
        )
        argv = exec_argv(inputs.vmid, ["sh", "-c", script, "phoenix-vllm-rm", inputs.unit_path, SERVICE])
        try:
            self.ssh().run(argv)
        except RemoteCommandError as error:
            if "does not exist" not in error.stderr_tail:  # the guest went first: nothing left to remove
                raise


class VllmServiceResource(DynamicResource, module="phoenix", name="VllmService"):
    unit_sha256: pulumi.Output[str]
    active: pulumi.Output[bool]
    models: pulumi.Output[list[str]]

    def __init__(
        self,
        name: str,
        inputs: dict[str, Any],
        ssh_target: SshTarget,
        api_target: ApiTarget | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        provider = VllmServiceProvider(ssh_target=ssh_target, api_target=api_target)
        props = {**inputs, "version": PROVIDER_VERSION, "unit_sha256": None, "active": None, "models": None}
        super().__init__(provider, name, props, opts)
