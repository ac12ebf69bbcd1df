"""GuestFeatures: a workload LXC guest's own feature scripts, run inside the started container.

A layer's features are baked into its template at build time (providers.guests.template_layer); a guest's
``features`` (guests.json ``containers[].features``) run on top, in that one guest, with that guest's
parameters: its environment values (the chain's pins plus ``feature_env``) and the files rendered from
its config (``feature_files``), written before the first feature runs. (A VM's features run through its
cloud-init user-data instead: phoenix_components.components.guests.user_data.)

Steps are data (:func:`feature_steps`, computed from the inputs alone): ``create`` and ``update`` execute
exactly them over the pinned SSH executor, through ``pct exec``, and ``phoenix plan`` prints exactly them.
Each feature runs through one fixed runner (:data:`RUN`) that keeps the script in the guest, appends its
output to ``/var/log/phoenix/features/<name>.log`` and, only when it succeeded, records the hash of what
it ran (script, environment, files) as ``/var/lib/phoenix/features/<name>.sha256``. A failing feature
stops the run and raises :class:`GuestFeatureError` naming the guest, the feature and the log's tail.

Feature scripts promise to be idempotent (every product script is), so an update simply runs the whole
list again, in order: a changed script, environment value or file runs them in the same container, never
replacing the guest. ``guest_instance`` is LxcGuest's per-container token: a replaced guest keeps its
vmid, and the new instance is what tells this resource the new container has none of its features yet.

``read`` compares each recorded hash marker with what the inputs would run; a marker gone or different
(a feature that failed by hand, a guest restored from an old snapshot) shows as drift on that feature's
script, and the next ``up`` runs the features again. ``delete`` changes nothing in the guest: what a
feature installed cannot be undone generically, and the guest itself is deleted or replaced by its own
resource.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, ReadResult, UpdateResult

from providers.base import (
    Inputs,
    convert,
    has_unknowns,
    require,
)
from providers.channels.command import Executor, sha256_text, write_file_argv
from providers.channels.pct import exec_argv
from providers.channels.steps import HostCommand
from providers.errors import HostError, RemoteCommandError, tail
from providers.guests.common import (
    GuestProvider,
    GuestResource,
)

PROVIDER_VERSION = "1"
STATE_DIR = "/var/lib/phoenix/features"  # the scripts as run and their hash markers
LOG_DIR = "/var/log/phoenix/features"  # one log per feature, appended to by every run
LOG_TAIL_LINES = 40
# Feature names end up in paths inside the guest; the config's own Name rule, checked again here because
# the provider must not trust its inputs to have come through the config.
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
MODE = re.compile(r"^0[0-7]{3}$")

# The runner: $1 feature name, $2 hash of what runs, $3 STATE_DIR, $4 LOG_DIR; the script on stdin, the
# environment from `env K=V` before it. The script is kept (what ran is inspectable) and written
# atomically; its output goes to the log, never to SSH, and on failure the log's tail goes to stderr. The
# old marker goes before the script runs and the new one comes only after success, so a feature that
# failed (or was cut off) half-way has no marker and shows as drift on refresh.
RUN = (
    'set -eu; mkdir -p "$3" "$4"; s="$3/$1.sh"; log="$4/$1.log"; '
    'tmp=$(mktemp "$s.XXXXXX"); cat > "$tmp"; chmod 0755 "$tmp"; mv -f "$tmp" "$s"; '
    'printf "=== %s phoenix feature %s sha256=%s\\n" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$1" "$2" >> "$log"; '
    'rm -f "$3/$1.sha256"; set +e; bash "$s" >> "$log" 2>&1; rc=$?; set -e; '
    f'if [ "$rc" -ne 0 ]; then tail -n {LOG_TAIL_LINES} "$log" >&2; exit "$rc"; fi; '
    'printf "%s\\n" "$2" > "$3/$1.sha256.tmp"; mv -f "$3/$1.sha256.tmp" "$3/$1.sha256"'
)
# Prints "<name> <marker or missing>" per feature named in the arguments; $1 is STATE_DIR.
STATUS = (
    'd=$1; shift; for n in "$@"; do m=$(cat "$d/$n.sha256" 2>/dev/null) || m=missing; '
    'printf "%s %s\\n" "$n" "${m:-missing}"; done'
)


@dataclass(frozen=True)
class GuestFeature:
    name: str
    script: str
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GuestFile:
    """A file rendered from the guest's config, written into the guest before its features run."""

    path: str
    content: str
    mode: str = "0644"


def _features(value: Any) -> list[GuestFeature]:
    return [
        GuestFeature(
            str(f["name"]), str(f["script"]), {str(k): str(v) for k, v in (f.get("env") or {}).items()}
        )
        for f in value
    ]


def _files(value: Any) -> list[GuestFile]:
    return [GuestFile(str(f["path"]), str(f["content"]), str(f.get("mode") or "0644")) for f in value]


@dataclass(frozen=True)
class GuestFeaturesInputs(Inputs):
    node: str
    vmid: int
    features: list[GuestFeature] = field(metadata=convert(_features))
    files: list[GuestFile] = field(default_factory=list, metadata=convert(_files))
    guest_instance: str | None = None  # the container they run in (LxcGuest's instance output)
    guest_name: str = ""  # the guest's hostname, for messages only (never a change on its own)
    feature_timeout_s: int = 3600
    version: str = PROVIDER_VERSION

    @property
    def guest(self) -> str:
        return f"CT {self.vmid} ({self.guest_name})" if self.guest_name else f"CT {self.vmid}"


class GuestFeatureError(HostError):
    """A guest's feature (or a file its features read) failed; the features after it did not run.

    ``step`` is ``feature <name>`` or ``file <path>``; ``log`` is the feature's log inside the guest, whose
    tail (the runner prints it on failure) is ``stderr_tail``.
    """

    def __init__(
        self,
        host: str,
        vmid: int,
        guest_name: str,
        step: str,
        argv: str,
        exit_status: int | None,
        stderr: str,
        log: str = "",
    ) -> None:
        self.vmid, self.guest_name, self.step, self.log = vmid, guest_name, step, log
        self.argv, self.exit_status, self.stderr_tail = argv, exit_status, tail(stderr, LOG_TAIL_LINES)
        guest = f"CT {vmid} ({guest_name})" if guest_name else f"CT {vmid}"
        status = "did not finish" if exit_status is None else f"exited {exit_status}"
        kept = f" (full log in the guest: {log})" if log else ""
        detail = f"\n--- output (tail) ---\n{self.stderr_tail}" if self.stderr_tail else ""
        super().__init__(host, f"{step} in {guest} {status}{kept}: `{argv}`{detail}")


# ------------------------------------------------------------------ steps, as data


def marker(feature: GuestFeature, files: list[GuestFile]) -> str:
    """The hash of exactly what a feature's run depends on: its script, its environment, the guest's files."""
    material = {
        "script": sha256_text(feature.script),
        "env": dict(sorted(feature.env.items())),
        "files": [[f.path, f.mode, sha256_text(f.content)] for f in files],
    }
    return sha256_text(json.dumps(material, sort_keys=True))


def feature_steps(inputs: GuestFeaturesInputs) -> list[HostCommand]:
    """Every command a create/update sends, in order: the files, then each feature through :data:`RUN`."""
    steps: list[HostCommand] = []
    for f in inputs.files:
        steps.append(
            HostCommand(f"file {f.path}", exec_argv(inputs.vmid, ["mkdir", "-p", posixpath.dirname(f.path)]))
        )
        steps.append(
            HostCommand(
                f"file {f.path}",
                exec_argv(inputs.vmid, write_file_argv(f.path, int(f.mode, 8))),
                f.content,
                f"{f.path} from guests.json (sha256 {sha256_text(f.content)[:12]})",
            )
        )
    for feature in inputs.features:
        run = [
            "sh",
            "-c",
            RUN,
            "phoenix-feature",
            feature.name,
            marker(feature, inputs.files),
            STATE_DIR,
            LOG_DIR,
        ]
        steps.append(
            HostCommand(
                f"feature {feature.name}",
                exec_argv(inputs.vmid, run, feature.env),
                feature.script,
                f"features/{feature.name}.sh (sha256 {sha256_text(feature.script)[:12]})",
                f"{LOG_DIR}/{feature.name}.log",
            )
        )
    return steps


def status_argv(inputs: GuestFeaturesInputs) -> list[str]:
    return exec_argv(
        inputs.vmid, ["sh", "-c", STATUS, "phoenix-status", STATE_DIR, *(f.name for f in inputs.features)]
    )


def parse_status(stdout: str) -> dict[str, str | None]:
    """``name marker`` lines: feature name → recorded marker, or None where there is none."""
    markers: dict[str, str | None] = {}
    for line in stdout.splitlines():
        name, _, value = line.strip().partition(" ")
        if name:
            markers[name] = None if value.strip() in ("", "missing") else value.strip()
    return markers


def applied(inputs: GuestFeaturesInputs) -> dict[str, str]:
    """The marker each feature leaves after a successful run of ``inputs``."""
    return {f.name: marker(f, inputs.files) for f in inputs.features}


def drifted(inputs: GuestFeaturesInputs, recorded: dict[str, str | None]) -> list[str]:
    """Features whose marker in the guest is not the one these inputs leave (gone, failed, other run)."""
    want = applied(inputs)
    return [name for name, sha in want.items() if recorded.get(name) != sha]


# ------------------------------------------------------------------ provider


@dataclass
class GuestFeaturesProvider(GuestProvider):
    inputs_class = GuestFeaturesInputs
    # Everything a run depends on is an update (run again in the same container); only another node or
    # vmid is another guest. The timeout and the guest's name do not change what runs.
    replace_on = ("node", "vmid")
    update_on = ("features", "files", "guest_instance")

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = require(news, ["node", "vmid", "features"])
        if not has_unknowns(news) and not failures:
            names = [f.get("name") for f in news["features"]]
            for name in names:
                if not isinstance(name, str) or not NAME.match(name):
                    failures.append(CheckFailure("features", f"feature name {name!r} is not a Phoenix name"))
            if len(set(names)) != len(names):
                failures.append(CheckFailure("features", "a feature is listed twice"))
            for f in news.get("files") or []:
                path, mode = str(f.get("path", "")), str(f.get("mode") or "0644")
                if not path.startswith("/") or ".." in path.split("/"):
                    failures.append(CheckFailure("files", f"{path!r} is not an absolute path without .."))
                if not MODE.match(mode):
                    failures.append(CheckFailure("files", f"mode {mode!r} of {path} is not octal like 0644"))
        return self.checked(news, failures)

    def create(self, props: dict[str, Any]) -> CreateResult:
        inputs = GuestFeaturesInputs.from_props(props)
        return CreateResult(f"{inputs.vmid}/features", self._run(inputs))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(self._run(GuestFeaturesInputs.from_props(news)))

    def _run(self, inputs: GuestFeaturesInputs) -> dict[str, Any]:
        ssh = self.ssh()
        for step in feature_steps(inputs):
            self._execute(ssh, inputs, step)
        return {**inputs.to_props(), "applied": applied(inputs)}

    def _execute(self, ssh: Executor, inputs: GuestFeaturesInputs, step: HostCommand) -> None:
        try:
            result = ssh.run(step.argv, stdin=step.stdin, timeout=inputs.feature_timeout_s, check=False)
        except RemoteCommandError as error:  # ran past the deadline, or the connection dropped
            raise GuestFeatureError(
                ssh.host,
                inputs.vmid,
                inputs.guest_name,
                step.what,
                error.argv,
                None,
                error.stderr_tail,
                step.log,
            ) from error
        if not result.ok:
            raise GuestFeatureError(
                ssh.host,
                inputs.vmid,
                inputs.guest_name,
                step.what,
                result.argv,
                result.exit_status,
                result.stderr or result.stdout,
                step.log,
            )

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        inputs = GuestFeaturesInputs.from_props(props)
        result = self.ssh().run(status_argv(inputs), check=False)
        if not result.ok:  # the guest is gone or stopped: none of its features can be said to be there
            return ReadResult(None, {})
        recorded = parse_status(result.stdout)
        stale = set(drifted(inputs, recorded))
        # A feature whose marker is not ours shows as a different script (drift on `features`), so the next
        # up runs the features again; the others are reported as they are.
        features = [
            {
                **asdict(f),
                "script": f"# not applied in the guest (marker {recorded.get(f.name) or 'missing'})\n",
            }
            if f.name in stale
            else asdict(f)
            for f in inputs.features
        ]
        observed = {name: sha for name, sha in recorded.items() if sha is not None}
        return ReadResult(id_, {**props, "features": features, "applied": observed})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        """Nothing is undone in the guest: features have no generic inverse, and the guest itself goes (or
        is replaced) through its own resource. The logs and markers stay with the guest."""


@dataclass(frozen=True)
class GuestFeaturesArgs:
    """A guest's features as :class:`GuestFeaturesInputs` documents each field."""

    node: pulumi.Input[str]
    vmid: pulumi.Input[int]
    features: pulumi.Input[Sequence[Mapping[str, Any]]]
    """``{"name", "script", "env"}`` per feature, run in this order."""
    files: pulumi.Input[Sequence[Mapping[str, Any]]] = ()
    """``{"path", "content", "mode"}`` per file, written before the first feature runs."""
    guest_instance: pulumi.Input[str] | None = None
    guest_name: pulumi.Input[str] = ""
    feature_timeout_s: pulumi.Input[int] = 3600


class GuestFeatures(GuestResource[GuestFeaturesArgs], module="phoenix", name="GuestFeatures"):
    """A guest's feature scripts, run in it. Token ``pulumi-python:dynamic/phoenix:GuestFeatures``."""

    applied: pulumi.Output[dict[str, str]]

    provider_class = GuestFeaturesProvider
    provider_version = PROVIDER_VERSION
