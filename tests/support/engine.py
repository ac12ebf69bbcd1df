"""The real Pulumi engine, driven from pytest: the Go-built CLI through ``pulumi.automation``.

Everything a user's ``pulumi up`` does happens here for real: the CLI's engine plans and orders the steps
(create-before-delete, parallelism, pending deletes), the language host runs the program (``__main__.py``
for a project directory, or an inline program function), and ``pulumi-resource-pulumi-python`` runs the
dynamic providers. State lives in a file backend under the test's directory, secrets are Pulumi secrets
sealed with a test passphrase, and nothing reaches out to the internet (plugin acquisition and update
checks are off, and the CLI's home is the test's own).

:class:`Engine` answers with :class:`Report` (the engine's own events and change summary) and
:class:`Drift` (what ``pulumi refresh`` found), the vocabulary the lab tests assert on.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pulumi
import pytest
from pulumi import automation as auto
from pulumi.automation.events import EngineEvent, OpType

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "tools" / "pulumi" / "build.sh"
PASSPHRASE = "phoenix-test-passphrase"  # seals the test stacks' secrets; a test value, not a secret
Op = str
# The step kinds of one replacement, as the engine emits them; a report counts the whole as "replace".
_REPLACE_STEPS = {OpType.REPLACE, OpType.CREATE_REPLACEMENT, OpType.DELETE_REPLACED}


def cli_dir() -> Path | None:
    """The directory holding the ``pulumi`` the tests use: ``$PHOENIX_PULUMI_BIN``, else the one
    ``make pulumi`` built (tools/pulumi/build.sh), else the one on PATH; None when there is none."""
    explicit = os.environ.get("PHOENIX_PULUMI_BIN")
    if explicit:
        return Path(explicit) if (Path(explicit) / "pulumi").exists() else None
    built = subprocess.run(["bash", str(BUILD_SCRIPT), "--bin-dir"], capture_output=True, text=True)
    if built.returncode == 0 and (Path(built.stdout.strip()) / "pulumi").exists():
        return Path(built.stdout.strip())
    found = shutil.which("pulumi")
    return Path(found).parent if found else None


def engine_env(home: Path, bin_dir: Path, python: str = sys.executable) -> dict[str, str]:
    """The environment of every CLI run: offline, this test's home, the test passphrase, and the
    virtualenv's Python for the program and the dynamic providers.

    ``PULUMI_PYTHON_CMD``: the language host make pulumi builds (sdk/v3 v3.79, see docs/pulumi-cli.md)
    takes Pulumi.yaml's ``virtualenv`` only as a command-line flag, which today's CLI no longer passes.
    """
    return {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PULUMI_HOME": str(home),
        "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        "PULUMI_PYTHON_CMD": python,
        "PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK": "true",  # the CLI is newer than the SDK's floor anyway
    }


@dataclass
class Report:
    """What one ``up`` (or ``destroy``) did, from the engine's own events."""

    ops: dict[str, Op] = field(default_factory=dict)
    """URN → the operation on it; a replacement (any of its steps) is ``replace``."""
    steps: list[tuple[Op, str]] = field(default_factory=list)
    """Every step the engine finished, in order: (op, URN), replacements as their own steps."""
    summary: dict[str, int] = field(default_factory=dict)
    """The engine's change summary (``resource_changes``): op → count."""
    outputs: dict[str, Any] = field(default_factory=dict)
    stdout: str = ""
    provider_calls: Counter[str] = field(default_factory=Counter)
    """ResourceProvider methods the engine called during the operation (``PULUMI_DEBUG_GRPC``'s log):
    ``Check``, ``Diff``, ``Create``, ... — the lab's "nothing was asked to change" evidence."""

    @property
    def exports(self) -> dict[str, Any]:
        return self.outputs

    @property
    def provider_mutations(self) -> int:
        """Create/Update/Delete calls the engine made to providers."""
        return sum(self.provider_calls[m] for m in ("Create", "Update", "Delete"))

    @property
    def counts(self) -> Counter[Op]:
        return Counter(self.ops.values())

    @property
    def changed(self) -> dict[str, Op]:
        return {urn: op for urn, op in self.ops.items() if op != "same"}

    @property
    def changes(self) -> int:
        """The engine's own count of resources it changed (everything but ``same``)."""
        return sum(n for op, n in self.summary.items() if op != "same")

    def op(self, name: str) -> Op:
        (op,) = [op for urn, op in self.ops.items() if urn.rsplit("::", 1)[-1] == name]
        return op


@dataclass(frozen=True)
class Drift:
    """What ``pulumi refresh`` found for one resource: the same, changed outputs (named), or gone."""

    kind: Literal["same", "changed", "gone"]
    changed: tuple[str, ...] = ()


@dataclass(frozen=True)
class StateResource:
    urn: str
    type: str
    id: str
    outputs: dict[str, Any]
    custom: bool

    @property
    def name(self) -> str:
        return self.urn.rsplit("::", 1)[-1]

    @property
    def dynamic(self) -> bool:
        return self.type.startswith("pulumi-python:dynamic")


def provider_calls(log: Path) -> Counter[str]:
    """Count the ResourceProvider RPCs in a ``PULUMI_DEBUG_GRPC`` log (one JSON object per line)."""
    calls: Counter[str] = Counter()
    if not log.exists():
        return calls
    for line in log.read_text().splitlines():
        entry = json.loads(line) if line.strip() else {}
        if entry.get("progress") != "request_started":  # each call is logged as started, then completed
            continue
        service, _, name = str(entry.get("method", "")).rpartition("/")
        if service.endswith("pulumirpc.ResourceProvider"):
            calls[name] += 1
    return calls


class _Events:
    """Collects the engine's step events of one operation."""

    def __init__(self) -> None:
        self.steps: list[tuple[Op, str, tuple[str, ...]]] = []

    def __call__(self, event: EngineEvent) -> None:
        done = event.res_outputs_event
        # Provider resources (the default pulumi-python provider) are the engine's bookkeeping, not the
        # program's resources; the engine's own change summary leaves them out too.
        if done is not None and not done.metadata.type.startswith("pulumi:providers:"):
            meta = done.metadata
            self.steps.append((OpType(meta.op).value, meta.urn, tuple(meta.diffs or ())))

    def report(
        self, summary: Mapping[Any, int] | None, outputs: Mapping[str, Any], stdout: str, calls: Counter[str]
    ) -> Report:
        ops: dict[str, Op] = {}
        for op, urn, _diffs in self.steps:
            ops[urn] = "replace" if OpType(op) in _REPLACE_STEPS else op
        return Report(
            ops=ops,
            steps=[(op, urn) for op, urn, _ in self.steps],
            summary={str(getattr(k, "value", k)): int(v) for k, v in (summary or {}).items()},
            outputs=dict(outputs),
            stdout=stdout,
            provider_calls=calls,
        )


class Engine:
    """One stack on a file backend under ``root``, run by the real CLI.

    Either a project directory (``work_dir``: Pulumi.yaml and ``__main__.py``, run by the language host as
    ``pulumi up`` does) or an inline program (``program``, set again per ``up`` by the fault tests).
    ``config`` and ``secrets`` become the stack's config (secrets as Pulumi secrets); ``env`` reaches the
    CLI and so the provider processes it starts.
    """

    def __init__(
        self,
        root: Path,
        stack: str,
        *,
        work_dir: Path | None = None,
        program: Callable[[], Any] | None = None,
        project: str = "phoenix",
        config: Mapping[str, str] | None = None,
        secrets: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        bin_dir: Path | None = None,
    ) -> None:
        bin_dir = bin_dir or cli_dir()
        if bin_dir is None:
            raise RuntimeError("no Pulumi CLI: run `make pulumi` (tools/pulumi/build.sh)")
        self.bin_dir = bin_dir
        self.root = root
        backend = root / "backend"
        backend.mkdir(parents=True, exist_ok=True)
        home = root / "pulumi-home"
        home.mkdir(exist_ok=True)
        self.env = {**engine_env(home, bin_dir), "PULUMI_BACKEND_URL": f"file://{backend}", **(env or {})}
        command = auto.PulumiCommand(root=str(bin_dir.parent), skip_version_check=True)
        if work_dir is None:  # an inline program: its workspace here, not a new /tmp/automation-* each time
            (root / "workspace").mkdir(exist_ok=True)
        options = auto.LocalWorkspaceOptions(
            work_dir=str(work_dir or root / "workspace"),
            pulumi_home=str(home),
            pulumi_command=command,
            env_vars=self.env,
            project_settings=None if work_dir else auto.ProjectSettings(name=project, runtime="python"),
            secrets_provider="passphrase",
        )
        if work_dir is not None:
            self.stack = auto.create_or_select_stack(stack_name=stack, work_dir=str(work_dir), opts=options)
        else:
            self.stack = auto.create_or_select_stack(
                stack_name=stack, project_name=project, program=lambda: None, opts=options
            )
            if program is not None:
                self.set_program(program)
        for key, value in (config or {}).items():
            self.stack.set_config(key, auto.ConfigValue(value=value))
        for key, value in (secrets or {}).items():
            self.stack.set_config(key, auto.ConfigValue(value=value, secret=True))

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The CLI itself, as a user types it, in this engine's environment and project directory."""
        return subprocess.run(
            [str(self.bin_dir / "pulumi"), *args, "--non-interactive"],
            cwd=self.stack.workspace.work_dir,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            check=check,
        )

    @property
    def name(self) -> str:
        return self.stack.name

    last_provider_calls: Counter[str]
    """The ResourceProvider RPCs of the latest CLI run, failed ones included."""

    @contextlib.contextmanager
    def _counting(self) -> Iterator[Callable[[], Counter[str]]]:
        """One CLI run with ``PULUMI_DEBUG_GRPC`` on, its provider calls counted afterwards.

        The engine logs every RPC in full, the Configure call's config (the stack's secrets) included,
        so the log is read and deleted as soon as the run ends, failed or not: no secret stays on disk.
        """
        self._runs = getattr(self, "_runs", 0) + 1
        log = self.root / f"grpc-{self._runs}.jsonl"
        self.stack.workspace.env_vars["PULUMI_DEBUG_GRPC"] = str(log)
        self.last_provider_calls = Counter()
        try:
            yield lambda: self.last_provider_calls
        finally:
            self.stack.workspace.env_vars.pop("PULUMI_DEBUG_GRPC", None)  # later runs log nothing
            self.last_provider_calls = provider_calls(log)
            log.unlink(missing_ok=True)

    def set_program(self, program: Callable[[], Any]) -> None:
        """The inline program of the next runs. A dict it returns becomes its stack outputs, as if it had
        called ``pulumi.export`` for each (the fault and driver programs are written that way)."""

        def exporting() -> None:
            result = program()
            if isinstance(result, dict):
                for key, value in result.items():
                    pulumi.export(key, value)

        self.stack.workspace.program = exporting

    def up(self, program: Callable[[], Any] | None = None) -> Report:
        if program is not None:
            self.set_program(program)
        events = _Events()
        with self._counting() as calls:
            result = self.stack.up(on_event=events, color="never", suppress_progress=True)
        outputs = {k: v.value for k, v in result.outputs.items()}
        return events.report(result.summary.resource_changes, outputs, result.stdout, calls())

    def preview(
        self, program: Callable[[], Any] | None = None, *, expect_no_changes: bool = False
    ) -> dict[str, int]:
        """``pulumi preview``: the engine's change summary (op → count); nothing is changed."""
        if program is not None:
            self.set_program(program)
        with self._counting():
            result = self.stack.preview(color="never", expect_no_changes=expect_no_changes)
        return {str(getattr(k, "value", k)): int(v) for k, v in result.change_summary.items()}

    def refresh(self) -> dict[str, Drift]:
        """URN → what ``pulumi refresh`` found, for every resource in the state."""
        before = self.resources()
        with self._counting():
            self.stack.refresh(color="never", suppress_progress=True)
        after = self.resources()
        drift: dict[str, Drift] = {}
        for urn, old in before.items():
            if urn not in after:
                drift[urn] = Drift("gone")
                continue
            new = after[urn].outputs
            keys = sorted(k for k in set(old.outputs) | set(new) if old.outputs.get(k) != new.get(k))
            drift[urn] = Drift("changed", tuple(keys)) if keys else Drift("same")
        return drift

    def destroy(self) -> Report:
        events = _Events()
        with self._counting() as calls:
            result = self.stack.destroy(on_event=events, color="never", suppress_progress=True)
        return events.report(result.summary.resource_changes, {}, result.stdout, calls())

    def export(self) -> dict[str, Any]:
        """The deployment, as the automation API's ``export_stack`` gives it: ``pulumi stack export
        --show-secrets``, so secret values are shown in plaintext (:meth:`export_text` is the sealed form a
        user would paste; never write this one anywhere that is kept)."""
        deployment: dict[str, Any] = self.stack.export_stack().deployment or {}
        return deployment

    def import_state(self, deployment: Mapping[str, Any]) -> None:
        """``pulumi stack import``: the stack's state replaced by ``deployment`` (an export's shape)."""
        self.stack.import_stack(auto.Deployment(version=3, deployment=dict(deployment)))

    def export_text(self) -> str:
        """``pulumi stack export`` as the CLI prints it (what a user would paste or store)."""
        return self.cli("stack", "export", "--stack", self.name).stdout

    def state_text(self) -> str:
        """The program's resources as stored (URN, type, id, inputs, outputs, dependencies, pending
        delete), for "state unchanged" comparisons. Left out: provider resources (the engine gives the
        default provider a new id per run), source positions and timestamps."""
        kept = ("urn", "type", "id", "inputs", "outputs", "dependencies", "delete")
        resources = [
            {k: r.get(k) for k in kept}
            for r in self.export().get("resources") or []
            if not r["type"].startswith("pulumi:providers:")
        ]
        return json.dumps(resources, sort_keys=True)

    def resources(self) -> dict[str, StateResource]:
        """URN → each custom resource in the state, its outputs unsealed (``pulumi stack export
        --show-secrets``), components and the stack itself left out."""
        shown = json.loads(self.cli("stack", "export", "--show-secrets", "--stack", self.name).stdout)
        found: dict[str, StateResource] = {}
        for resource in shown.get("deployment", {}).get("resources") or []:
            if not resource.get("custom") or resource["type"].startswith("pulumi:providers:"):
                continue
            if resource.get("delete"):  # a pending delete: see pending_deletes
                continue
            found[resource["urn"]] = StateResource(
                urn=resource["urn"],
                type=resource["type"],
                id=str(resource.get("id", "")),
                outputs=_unwrap(resource.get("outputs") or {}),
                custom=True,
            )
        return found

    def pending_deletes(self) -> list[StateResource]:
        """Resources the state still holds to delete (a replaced or removed one whose delete failed)."""
        return [
            StateResource(r["urn"], r["type"], str(r.get("id", "")), {}, bool(r.get("custom")))
            for r in self.export().get("resources") or []
            if r.get("delete")
        ]

    def resource(self, name: str) -> StateResource:
        (found,) = [r for r in self.resources().values() if r.name == name]
        return found

    def remove(self) -> None:
        """The stack and its history gone from the backend (after a destroy)."""
        self.stack.workspace.remove_stack(self.name)


def _unwrap(value: Any) -> Any:
    """Outputs from ``--show-secrets``: a revealed secret is ``{sig, plaintext}``; take the value."""
    if isinstance(value, dict):
        if "plaintext" in value and len(value) <= 2:
            return json.loads(value["plaintext"])
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


@pytest.fixture(scope="session")
def pulumi_bin() -> Path:
    """The Pulumi CLI's directory. Without one the test skips, saying how to get one; under CI it fails
    instead (``.ci/run`` runs ``make pulumi`` first), so CI never passes by skipping the engine."""
    found = cli_dir()
    if found is None:
        message = "no Pulumi CLI: `make pulumi` builds it (tools/pulumi/build.sh), or put one on PATH"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must build it: .ci/run runs make pulumi)")
        pytest.skip(message)
    return found
