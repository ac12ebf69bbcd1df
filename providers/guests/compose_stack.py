"""ComposeStack: a Docker Compose stack deployed into a guest, gated on its services' health.

``create``/``update`` write the Compose file and the environment file into
``/opt/phoenix/stacks/<project>/`` inside the guest, then run
``docker compose -p <project> -f <file> --env-file <env> up -d --wait --wait-timeout <s> --remove-orphans``:
``--wait`` returns once every service is running and, where it has a healthcheck, healthy; the deadline
is Compose's ``--wait-timeout`` with the SSH command's own timeout behind it. A stack that is not up by
then fails the deploy with :class:`ComposeStackError`, naming the guest and carrying the tail of Compose's
output (secret values masked). A stack whose first ``up`` fails is taken down again, so a failed create
leaves nothing in the guest that state does not know about.

How commands reach the guest (``guest_kind``):

- ``lxc``: ``pct exec <vmid> -- ...`` on the host over SSH (``providers.channels.pct``);
- ``qemu``: ``qm guest exec <vmid> --pass-stdin 1 --timeout <s> -- ...`` on the host over the same SSH:
  the QEMU guest agent runs it in the VM (Phoenix's VMs enable the agent), so no SSH key into the VM and no
  route to it is needed. ``qm guest exec`` answers JSON (``exitcode``, ``out-data``, ``err-data``), which
  :func:`unwrap` turns back into a command result. (Not exercised in the lab: its VMs are
  pulumi-proxmoxve resources, which the lab cannot run.)

The environment file holds the plain values and the secrets (mode 0600, values in single quotes, which
Compose reads literally); the secrets arrive as a Pulumi secret input and are a secret output
(``additional_secret_outputs``); the plan shows only how many there are.

``read`` (refresh) reports drift: ``docker compose ps --all --format json`` lists each service's state; a
service not running (or unhealthy) or missing, or a file edited in the guest, makes ``state`` say so and
the next ``up`` deploys again. ``delete`` runs ``docker compose down --remove-orphans`` and removes the
directory.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pulumi
from pulumi.dynamic import CheckFailure, CreateResult, DiffResult, ReadResult

from providers.base import (
    VERSION_KEY,
    ConvergingProvider,
    DynamicResource,
    Inputs,
    Options,
    cleanup_on_failure,
    diff_inputs,
    is_unknown,
    stored,
)
from providers.channels.command import CommandResult, Executor, mask_text, sha256_text, write_file_argv
from providers.channels.pct import exec_argv
from providers.channels.steps import HostCommand
from providers.channels.targets import SshTarget
from providers.errors import HostError, RemoteCommandError, tail

PROVIDER_VERSION = "1"
STACKS_ROOT = "/opt/phoenix/stacks"
ENV_FILE = "phoenix.env"
RUNNING = "running"
# Seconds the SSH command may run past Compose's own --wait-timeout before it is killed.
DEADLINE_MARGIN_S = 60
GuestKind = Literal["lxc", "qemu"]

# Prints the sha256 of the Compose file and of the environment file (or `missing`), one per line.
STATUS = (
    'for f in "$1/$2" "$1/$3"; do if [ -f "$f" ]; then sha256sum < "$f" | cut -d" " -f1; '
    "else echo missing; fi; done"
)
# Down with whatever is still there (the file, the env file), then the directory. Values arrive as $1..$4.
DOWN = (
    'd=$1 f=$2 e=$3 p=$4; set -- -p "$p"; [ -f "$d/$f" ] && set -- "$@" -f "$d/$f"; '
    '[ -f "$d/$e" ] && set -- "$@" --env-file "$d/$e"; '
    'docker compose "$@" down --remove-orphans && rm -rf -- "$d"'
)
# What `pct exec` / `qm guest exec` say when the guest is gone: delete has nothing left to remove.
GONE = ("does not exist", "No such file or directory: '/etc/pve")


# --- 1. inputs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ComposeStackInputs(Inputs):
    node: str
    vmid: int
    project: str
    compose: str
    compose_file: str = "compose.yaml"
    environment: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)  # a Pulumi secret, in and out
    services: list[str] = field(default_factory=list)  # what the Compose file declares: `ps` must list them
    content_key: str = ""  # the stack's identity (config.stack_files.content_key): secrets by hash only
    wait_timeout_s: int = 300
    guest_kind: str = "lxc"
    state: str = RUNNING  # always `running` as an input; `read` puts the drift it saw here
    guest_instance: str | None = None  # LxcGuest.instance, or a VM's user-data hash: a new guest, a new up
    guest_name: str = ""  # for messages only
    version: str = PROVIDER_VERSION

    @property
    def directory(self) -> str:
        return f"{STACKS_ROOT}/{self.project}"

    @property
    def compose_path(self) -> str:
        return f"{self.directory}/{self.compose_file}"

    @property
    def env_path(self) -> str:
        return f"{self.directory}/{ENV_FILE}"

    @property
    def guest(self) -> str:
        kind = "CT" if self.guest_kind == "lxc" else "VM"
        return f"{kind} {self.vmid}" + (f" ({self.guest_name})" if self.guest_name else "")


class ComposeStackError(HostError):
    """``docker compose up --wait`` failed or ran past its deadline; the deploy stops here."""

    def __init__(self, host: str, guest: str, project: str, exit_status: int | None, output: str) -> None:
        self.guest, self.project, self.exit_status, self.output_tail = (
            guest,
            project,
            exit_status,
            tail(output, 20),
        )
        status = "did not finish" if exit_status is None else f"exited {exit_status}"
        super().__init__(
            host,
            f"Compose stack {project!r} in {guest} is not up: `docker compose up --wait` {status}"
            f"\n--- docker compose (tail) ---\n{self.output_tail}",
        )


# --- 2. pure logic -------------------------------------------------------------------------------------


def in_guest(inputs: ComposeStackInputs, argv: Sequence[str], timeout_s: int = 60) -> list[str]:
    """``argv`` run inside the guest, as a host command: ``pct exec`` or ``qm guest exec``."""
    if inputs.guest_kind == "lxc":
        return exec_argv(inputs.vmid, argv)
    return [
        "qm",
        "guest",
        "exec",
        str(inputs.vmid),
        "--pass-stdin",
        "1",
        "--timeout",
        str(timeout_s),
        "--",
        *argv,
    ]


def unwrap(inputs: ComposeStackInputs, result: CommandResult) -> CommandResult:
    """``qm guest exec`` exits 0 and reports the command's own exit code and output as JSON; a
    ``pct exec`` result is already the command's."""
    if inputs.guest_kind == "lxc" or not result.ok:
        return result
    try:
        answer = json.loads(result.stdout)
    except json.JSONDecodeError:
        return result
    if not isinstance(answer, dict):
        return result
    if "exitcode" not in answer:
        # Past its --timeout qm answers only the pid (`exited` 0): the command may still run in the VM.
        if "pid" in answer and not answer.get("exited"):
            return CommandResult(
                result.host,
                result.argv,
                124,
                "",
                f"qm guest exec: no exit within its --timeout (pid {answer['pid']} in the VM)",
                result.duration,
            )
        return result
    return CommandResult(
        result.host,
        result.argv,
        int(answer["exitcode"]),
        str(answer.get("out-data", "")),
        str(answer.get("err-data", "")),
        result.duration,
    )


def compose_argv(inputs: ComposeStackInputs, *command: str) -> list[str]:
    """``docker compose -p <project> -f <file> --env-file <env> COMMAND...`` (inside the guest)."""
    return [
        "docker",
        "compose",
        "-p",
        inputs.project,
        "-f",
        inputs.compose_path,
        "--env-file",
        inputs.env_path,
        *command,
    ]


def env_text(inputs: ComposeStackInputs) -> str:
    """The environment file: ``NAME='value'`` lines, plain values and secrets, sorted by name."""
    values = {**inputs.environment, **inputs.secrets}
    return "".join(f"{name}='{value}'\n" for name, value in sorted(values.items()))


def up_argv(inputs: ComposeStackInputs) -> list[str]:
    up = compose_argv(
        inputs, "up", "-d", "--wait", "--wait-timeout", str(inputs.wait_timeout_s), "--remove-orphans"
    )
    return in_guest(inputs, up, inputs.wait_timeout_s + DEADLINE_MARGIN_S)


def ps_argv(inputs: ComposeStackInputs) -> list[str]:
    return in_guest(inputs, compose_argv(inputs, "ps", "--all", "--format", "json"))


def status_argv(inputs: ComposeStackInputs) -> list[str]:
    return in_guest(
        inputs, ["sh", "-c", STATUS, "phoenix-stack-status", inputs.directory, inputs.compose_file, ENV_FILE]
    )


def down_argv(inputs: ComposeStackInputs) -> list[str]:
    return in_guest(
        inputs,
        [
            "sh",
            "-c",
            DOWN,
            "phoenix-stack-down",
            inputs.directory,
            inputs.compose_file,
            ENV_FILE,
            inputs.project,
        ],
        inputs.wait_timeout_s,
    )


def deploy_steps(inputs: ComposeStackInputs) -> list[HostCommand]:
    """Create and update alike: the directory, the two files (atomically), ``up --wait``, then ``ps`` to
    record each service's state. ``phoenix plan`` renders these; ``converge`` runs them."""
    plain, secret = len(inputs.environment), len(inputs.secrets)
    return [
        HostCommand(
            f"make {inputs.directory} in {inputs.guest}",
            in_guest(inputs, ["mkdir", "-p", "-m", "0700", inputs.directory]),
        ),
        HostCommand(
            f"write {inputs.compose_file} in {inputs.guest}",
            in_guest(inputs, write_file_argv(inputs.compose_path, 0o644)),
            inputs.compose,
            f"the Compose file (sha256 {sha256_text(inputs.compose)[:12]})",
        ),
        HostCommand(
            f"write {ENV_FILE} in {inputs.guest}",
            in_guest(inputs, write_file_argv(inputs.env_path, 0o600)),
            env_text(inputs),
            f"the environment file ({plain} plain values, {secret} secrets, never shown)",
        ),
        HostCommand(
            f"docker compose up {inputs.project} in {inputs.guest}",
            up_argv(inputs),
            # Past Compose's own deadline and qm's --timeout: SSH ends the command only as a last resort.
            timeout_s=inputs.wait_timeout_s + 2 * DEADLINE_MARGIN_S,
        ),
        HostCommand(f"docker compose ps {inputs.project} in {inputs.guest}", ps_argv(inputs)),
    ]


def parse_ps(stdout: str) -> dict[str, str]:
    """``docker compose ps --format json``: one JSON object per line (Compose >= 2.21) or one JSON array
    (older); ``{service: "running" | "running (unhealthy)" | "exited" ...}``. Several containers of one
    service (replicas) count as running only when all are."""
    items: list[Any] = []
    text = stdout.strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError:
            items = []
    else:
        for line in text.splitlines():
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    states: dict[str, str] = {}
    for item in items:
        if not isinstance(item, dict) or "Service" not in item:
            continue
        state = str(item.get("State", "unknown"))
        health = str(item.get("Health") or "")
        shown = state if health in ("", "healthy") else f"{state} ({health})"
        service = str(item["Service"])
        if states.get(service, RUNNING) == RUNNING:  # a replica not running makes the service not running
            states[service] = shown
    return states


def drift(services: Sequence[str], states: Mapping[str, str]) -> str:
    """``running``, or what is wrong: ``web exited; db missing``."""
    wrong = [
        f"{s} {states[s]}" if s in states else f"{s} missing" for s in services if states.get(s) != RUNNING
    ]
    return "; ".join(wrong) or RUNNING


def deployed(inputs: ComposeStackInputs, states: Mapping[str, str]) -> dict[str, Any]:
    """Every output once the stack is up."""
    return {
        **inputs.to_props(),
        "compose_sha256": sha256_text(inputs.compose),
        "service_states": dict(states),
    }


def observed(props: Mapping[str, Any], status: str, states: Mapping[str, str]) -> dict[str, Any] | None:
    """The stored outputs as the guest has the stack now; None when it is gone (no file, no container)."""
    inputs = ComposeStackInputs.from_props(props)
    lines = [*status.split(), "missing", "missing"]
    compose_sha, env_sha = lines[0], lines[1]
    if compose_sha == "missing" and not states:
        return None
    found = drift(inputs.services, states)
    problems = [] if found == RUNNING else [found]
    compose = inputs.compose
    if compose_sha != sha256_text(inputs.compose):
        compose = f"# edited in the guest (sha256 {compose_sha})\n"
        problems.append(f"{inputs.compose_file} {'missing' if compose_sha == 'missing' else 'edited'}")
    if env_sha != sha256_text(env_text(inputs)):
        problems.append(f"{ENV_FILE} {'missing' if env_sha == 'missing' else 'edited'}")
    return {
        **stored(props),
        "compose": compose,
        "compose_sha256": compose_sha,
        "service_states": dict(states),
        "state": "; ".join(problems) or RUNNING,
    }


def unquotable(secrets: Mapping[str, Any]) -> list[str]:
    """Secret names whose value cannot go into the env file (a single quote or a line break)."""
    return sorted(
        name
        for name, value in secrets.items()
        if not is_unknown(value) and isinstance(value, str) and any(c in value for c in "'\n\r\0")
    )


# --- 3. the provider -----------------------------------------------------------------------------------


@dataclass
class ComposeStackProvider(ConvergingProvider):
    inputs_type = ComposeStackInputs
    required = ("node", "vmid", "project", "compose")
    replace_on = ("node", "vmid", "project", "guest_kind")
    update_on = (
        "compose",
        "compose_file",
        "environment",
        "secrets",
        "services",
        "content_key",
        "wait_timeout_s",
        "state",
        "guest_instance",
    )

    def validate(self, news: Mapping[str, Any]) -> list[CheckFailure]:
        secrets = news.get("secrets")
        if not isinstance(secrets, Mapping):
            return []
        return [
            CheckFailure(
                "secrets",
                f"secret {name} of stack {news.get('project')} holds a single quote or a line break, "
                "which the env file cannot carry (the value is not shown)",
            )
            for name in unquotable(secrets)
        ]

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # The old stack goes first: the new one (another project, or the same on another guest's vmid)
        # would often publish the same ports, and two stacks with one port cannot both be up.
        return diff_inputs(
            olds, news, replace_on=self.replace_on, update_on=self.update_on, delete_before_replace=True
        )

    def resource_id(self, inputs: ComposeStackInputs) -> str:
        return f"{inputs.vmid}/{inputs.project}"

    def create(self, props: dict[str, Any]) -> CreateResult:
        inputs = ComposeStackInputs.from_props(props)
        # A first up that fails is taken down again: state will not know this stack.
        with cleanup_on_failure(lambda: self._down(inputs), f"taking stack {inputs.project} down again"):
            outputs = self.converge(inputs)
        return CreateResult(self.resource_id(inputs), outputs)

    def converge(self, inputs: ComposeStackInputs) -> dict[str, Any]:
        ssh = self.ssh()
        secrets = list(inputs.secrets.values())
        *files, up, ps = deploy_steps(inputs)
        for step in files:
            self._run(ssh, inputs, step).check(step.what)
        result = self._run(ssh, inputs, up, check=False)
        if not result.ok:
            output = mask_text(f"{result.stdout}\n{result.stderr}", secrets)
            raise ComposeStackError(ssh.host, inputs.guest, inputs.project, result.exit_status, output)
        listed = self._run(ssh, inputs, ps)
        listed.check(ps.what)
        states = parse_ps(listed.stdout)
        found = drift(inputs.services, states)
        if found != RUNNING:  # --wait said yes, ps says no: a service that exits at once, say
            raise ComposeStackError(
                ssh.host,
                inputs.guest,
                inputs.project,
                0,
                mask_text(f"after up: {found}\n{listed.stdout}", secrets),
            )
        return deployed(inputs, states)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        inputs = ComposeStackInputs.from_props(props)
        ssh = self.ssh()
        status = unwrap(inputs, ssh.run(status_argv(inputs), check=False))
        if not status.ok:  # the guest is gone or stopped: the stack went with it
            return ReadResult(None, {})
        listed = unwrap(inputs, ssh.run(ps_argv(inputs), check=False))
        states = parse_ps(listed.stdout) if listed.ok else {}
        outs = observed(props, status.stdout, states)
        return ReadResult(id_ if outs is not None else None, outs or {})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        try:
            self._down(ComposeStackInputs.from_props(props))
        except RemoteCommandError as error:
            if not any(marker in error.stderr_tail for marker in GONE):  # the guest went first
                raise

    def _down(self, inputs: ComposeStackInputs) -> None:
        result = unwrap(inputs, self.ssh().run(down_argv(inputs), check=False, timeout=inputs.wait_timeout_s))
        if not result.ok:
            stderr = mask_text(result.stderr or result.stdout, inputs.secrets.values())
            raise RemoteCommandError(
                result.host, result.argv, result.exit_status, stderr, f"docker compose down {inputs.project}"
            )

    @staticmethod
    def _run(
        ssh: Executor, inputs: ComposeStackInputs, step: HostCommand, *, check: bool = False
    ) -> CommandResult:
        # Always a stdin, even an empty one: the write steps `cat` it, and only a sent stdin is closed.
        result = ssh.run(step.argv, stdin=step.stdin, check=False, timeout=step.timeout_s)
        result = unwrap(inputs, result)
        if check:
            result.check(step.what)
        return result


# --- 4. the resource -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ComposeStackArgs:
    node: pulumi.Input[str]
    vmid: pulumi.Input[int]
    """The guest it runs in (``LxcGuest.vmid`` or the VM's vmid)."""
    project: pulumi.Input[str]
    """The Compose project name (the stack's name)."""
    compose: pulumi.Input[str]
    """The Compose file's text, as config/stacks/<name>/ holds it."""
    compose_file: pulumi.Input[str] = "compose.yaml"
    environment: pulumi.Input[Mapping[str, str]] = field(default_factory=dict)
    """Plain variables for the env file."""
    secrets: pulumi.Input[Mapping[str, str]] = field(default_factory=dict)
    """Secret variables for the env file: a Pulumi secret."""
    services: pulumi.Input[Sequence[str]] = ()
    content_key: pulumi.Input[str] = ""
    wait_timeout_s: pulumi.Input[int] = 300
    guest_kind: GuestKind = "lxc"
    guest_instance: pulumi.Input[str] | None = None
    """A container's ``LxcGuest.instance`` or a VM's user-data hash: a replaced guest gets the stack
    deployed again."""
    guest_name: str = ""


class ComposeStack(DynamicResource, module="phoenix", name="ComposeStack"):
    """A Docker Compose stack in a guest (see the module docstring). Token
    ``pulumi-python:dynamic/phoenix:ComposeStack``."""

    compose_sha256: pulumi.Output[str]
    """The Compose file's sha256 in the guest (another one on refresh: edited there)."""
    service_states: pulumi.Output[dict[str, str]]
    """Each service's state as ``docker compose ps`` last listed it."""
    state: pulumi.Output[str]
    """``running``, or the drift a refresh found."""

    def __init__(
        self, name: str, args: ComposeStackArgs, *, ssh_target: SshTarget, opts: Options = None
    ) -> None:
        props = {
            **vars(args),
            "services": list(args.services) if isinstance(args.services, tuple) else args.services,
        }
        props = {**props, "state": RUNNING, VERSION_KEY: PROVIDER_VERSION}
        # The secrets are an output too: without this the engine would store them in plain text.
        secret = pulumi.ResourceOptions(additional_secret_outputs=["secrets"])
        self._register(
            ComposeStackProvider(ssh_target=ssh_target),
            name,
            props,
            pulumi.ResourceOptions.merge(secret, opts),
        )
