"""`phoenix import --from-host --stack S [--out FILE] [--report FILE]`: the guests of a live host that
Phoenix does not manage yet, as guests.json entries to adopt.

Read-only, on both channels: the PVE API (``GET /nodes/{node}/lxc``, each container's ``config`` and its
firewall ``options`` and ``rules``) and, over SSH with the pinned host key, ``cat /etc/pve/lxc/<vmid>.conf``
(the raw ``lxc.*`` lines are only there); on a host whose NVIDIA driver Phoenix manages (host.json then
declares no GPU minors), the driver resource's own read-only inventory, for the minors devN lines are
mapped by. Nothing on the host changes: no POST, PUT or DELETE is sent and no command but those reads runs.

Which containers: every one on the stack's node that is not declared in the environment's guests.json
(containers and VMs), not a template, and not in host.json's layers vmid range. Each is mapped by
:func:`phoenix_components.render.from_host.container_from_pve` to an entry with ``adopt: true`` and no
layer; the report (stderr, and ``--report FILE`` as JSON) lists by guest and key what could not be mapped
and why, what the entry's first ``up`` would send (the provider's own adoption diff: normally nothing),
and what validation would refuse of an entry: the model's own rules, and the cross-record checks of
``phoenix validate`` with the entries beside the declared guests (a bridge host.json lacks, an address
already used, the host's capacity). The entries are a guests.json document
(``{"containers": [...]}``) on stdout, or in ``--out FILE``: add them to the environment's guests.json.

Credentials, as ``pulumi up`` gets them: the stack's secret config (``phoenix:pvePassword`` or
``phoenix:pveTokenSecret``, ``phoenix:sshPrivateKey`` or ``phoenix:sshKeyFile``) read with
``pulumi config --show-secrets --json --stack S`` in the project directory, else the ``PHOENIX_*``
environment variables (``PHOENIX_PVE_PASSWORD``, ``PHOENIX_PVE_TOKEN_SECRET``, ``PHOENIX_SSH_PRIVATE_KEY``,
``PHOENIX_SSH_KEY_FILE``). Secrets are never printed.

Exit 0 when the host was read (even if some guests could not be imported: the report says why); 2 for a
config error, a missing credential or a failed read.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from phoenix_components.components.targets import api_target, ssh_target
from phoenix_components.config.errors import ConfigError
from phoenix_components.config.features import fresh_guest_scripts
from phoenix_components.config.load import (
    CHAIN_FILE,
    ENVIRONMENTS_DIR,
    GUESTS_FILE,
    HOST_FILE,
    Environment,
    _Files,
    check_environment,
    load_environment,
)
from phoenix_components.config.models import Container, HostGpu
from phoenix_components.config.stacks import stack_environment
from phoenix_components.render.from_host import Imported, adoption_sends, container_from_pve
from phoenix_components.render.lxc import inventory_minors
from providers.channels.command import Executor
from providers.channels.pve import PveClient
from providers.channels.ssh import executor_for
from providers.channels.targets import Credentials
from providers.errors import PhoenixError
from providers.nvidia_driver import NvidiaHostPaths, parse_read, read_step

EXIT_INVALID = 2


# ------------------------------------------------------------------ credentials


def stack_config(stack: str, project: Path) -> dict[str, str]:
    """The stack's ``phoenix:*`` config, secrets in clear, keyed without the namespace; empty when the
    Pulumi CLI is not on PATH (the environment variables are used then). A failing CLI is an error: it
    would otherwise hide a wrong stack name behind "missing credentials"."""
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        return {}
    run = subprocess.run(
        [pulumi, "config", "--show-secrets", "--json", "--stack", stack, "--non-interactive"],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        raise ConfigError(
            [f"Pulumi.{stack}.yaml: $: `pulumi config --stack {stack}` failed: {run.stderr.strip()}"]
        )
    values: dict[str, Any] = json.loads(run.stdout or "{}")
    return {
        key.removeprefix("phoenix:"): str(item["value"])
        for key, item in values.items()
        if key.startswith("phoenix:") and isinstance(item, dict) and item.get("value") is not None
    }


# ------------------------------------------------------------------ reading the host


@dataclass
class LiveGuest:
    """One container as the host has it: what the mapping takes."""

    vmid: int
    config: dict[str, Any]
    conf: str
    firewall_options: dict[str, Any] = field(default_factory=dict)
    firewall_rules: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Skipped:
    vmid: int
    reason: str


def managed_vmids(env: Environment) -> set[int]:
    return {ct.vmid for ct in env.guests.containers} | {vm.vmid for vm in env.guests.vms}


def read_host(api: PveClient, ssh: Executor, env: Environment) -> tuple[list[LiveGuest], list[Skipped]]:
    """Every container on the node Phoenix does not manage (module docstring), read with GETs and ``cat``."""
    node = env.host.node
    managed, layers = managed_vmids(env), env.host.vmid_ranges.layers
    found: list[LiveGuest] = []
    skipped: list[Skipped] = []
    listed: list[dict[str, Any]] = api.get(f"nodes/{node}/lxc")
    for vmid in sorted(int(ct["vmid"]) for ct in listed):
        if vmid in managed:
            continue  # declared already: Phoenix manages it
        if vmid in layers:
            skipped.append(Skipped(vmid, f"in the layers range {layers.start}-{layers.end}: a Phoenix layer"))
            continue
        base = f"nodes/{node}/lxc/{vmid}"
        config: dict[str, Any] = api.get(f"{base}/config")
        if str(config.get("template", "0")) == "1":
            skipped.append(Skipped(vmid, "a template, not a guest"))
            continue
        conf = ssh.run(["cat", f"/etc/pve/lxc/{vmid}.conf"]).stdout
        found.append(
            LiveGuest(
                vmid, config, conf, api.get(f"{base}/firewall/options"), api.get(f"{base}/firewall/rules")
            )
        )
    return found, skipped


def host_gpus(env: Environment, ssh: Executor) -> list[HostGpu]:
    """host.json's GPUs with the device minors a guest's devN lines are mapped by.

    As declared, unless Phoenix manages the host's driver: host.json declares no minors then, and they are
    read as the NvidiaHostDriver resource reads them (its one batched read: nvidia-smi's queries and the
    kernel's ``/proc`` files; nothing is changed). With no driver installed yet there are none, and a
    devN line is reported unmapped.
    """
    nvidia = env.host.nvidia
    if nvidia is None or not nvidia.manage or not env.host.gpus:
        return list(env.host.gpus)
    step = read_step(NvidiaHostPaths())
    facts = parse_read(ssh.run(step.argv, timeout=step.timeout_s).stdout)
    if not facts.installed:
        return list(env.host.gpus)
    minors = inventory_minors(env.host.gpus, [gpu.to_props() for gpu in facts.gpus])
    return [
        gpu.model_copy(update={"minor": int(minors[str(gpu.index)])}) if str(gpu.index) in minors else gpu
        for gpu in env.host.gpus
    ]


# ------------------------------------------------------------------ the report


@dataclass
class GuestReport:
    vmid: int
    hostname: str
    imported: bool
    unmapped: list[dict[str, str]]
    first_up_sends: dict[str, list[Any]]
    invalid: list[str]


def import_guest(
    live: LiveGuest, env: Environment, gpus: Sequence[HostGpu] | None = None
) -> tuple[Imported, GuestReport]:
    """Map one guest, validate its entry against the model and say what adopting it would send.
    ``gpus``: :func:`host_gpus` (default: host.json's as declared)."""
    gpus = env.host.gpus if gpus is None else gpus
    result = container_from_pve(
        live.vmid,
        live.config,
        live.conf,
        gpus=gpus,
        firewall_options=live.firewall_options,
        firewall_rules=live.firewall_rules,
    )
    invalid: list[str] = []
    sends: dict[str, list[Any]] = {}
    if result.entry is not None:
        try:
            ct = Container.model_validate(result.entry)
        except ValidationError as error:
            invalid = [
                f"{'.'.join(str(p) for p in e['loc']) or '$'}: {e['msg']}"
                for e in error.errors(include_url=False)
            ]
        else:
            sends = {k: list(v) for k, v in adoption_sends(ct, live.config, live.conf, gpus=gpus).items()}
    report = GuestReport(
        live.vmid,
        result.hostname,
        result.entry is not None,
        [{"key": u.key, "reason": u.reason} for u in result.unmapped],
        sends,
        invalid,
    )
    return result, report


def environment_problems(
    env: Environment, imported: list[Container]
) -> tuple[dict[int, list[str]], list[str]]:
    """What Phoenix's validation would refuse once the imported containers join guests.json (a bridge
    host.json lacks, an address or MAC already used, the host's capacity): the cross-record checks
    ``phoenix validate`` runs, over the declared guests plus these. Only problems the imports bring: by
    vmid for an entry's own, the rest (capacity) apart."""
    env_dir = f"{ENVIRONMENTS_DIR}/{env.name}"
    files = _Files(chain=CHAIN_FILE, host=f"{env_dir}/{HOST_FILE}", guests=f"{env_dir}/{GUESTS_FILE}")

    def problems(guests: Any) -> list[Any]:
        scripts, profiles = set(env.feature_scripts), set(env.apparmor_profiles)
        fresh = fresh_guest_scripts(env.feature_scripts)
        return check_environment(env.host, env.chain, guests, scripts, profiles, files, fresh_guest=fresh)

    before = {str(p) for p in problems(env.guests)}
    first = len(env.guests.containers)
    merged = env.guests.model_copy(update={"containers": [*env.guests.containers, *imported]})
    by_vmid: dict[int, list[str]] = {}
    rest: list[str] = []
    for problem in problems(merged):
        if str(problem) in before:
            continue
        index = re.match(r"containers\[(\d+)\]", problem.path)
        if index is not None and int(index.group(1)) >= first:
            ct = imported[int(index.group(1)) - first]
            by_vmid.setdefault(ct.vmid, []).append(
                f"{problem.path.partition(']')[2].lstrip('.') or '$'}: {problem.message}"
            )
        else:
            rest.append(str(problem))
    return by_vmid, rest


def print_report(reports: list[GuestReport], skipped: list[Skipped]) -> None:
    out = sys.stderr
    for r in reports:
        what = "imported" if r.imported else "NOT imported"
        print(f"CT {r.vmid} ({r.hostname or '-'}): {what}", file=out)
        for item in r.unmapped:
            print(f"  not mapped: {item['key']}: {item['reason']}", file=out)
        for line in r.invalid:
            print(f"  refused by validation (fix the entry before adding it): {line}", file=out)
        for key, (live, declared) in r.first_up_sends.items():
            print(f"  the first up would send {key}: {live!r} -> {declared!r}", file=out)
    for s in skipped:
        print(f"CT {s.vmid}: skipped: {s.reason}", file=out)
    if not reports:
        print("no container on the host that Phoenix does not manage already", file=out)


def import_from_host(args: argparse.Namespace) -> int:
    project = Path.cwd() if (Path.cwd() / "Pulumi.yaml").is_file() else Path(__file__).resolve().parents[2]
    stack = args.stack or "dev"
    try:
        name = getattr(args, "environment", None) or stack_environment(project, stack)
        env = load_environment(args.config, name)
        creds = Credentials.from_sources(stack_config(stack, project))
    except ConfigError as error:
        print("\n".join(error.problems), file=sys.stderr)
        return EXIT_INVALID
    try:
        api = PveClient(api_target(env.host), creds)
        try:
            ssh = executor_for(ssh_target(env.host), creds)
            live, skipped = read_host(api, ssh, env)
            gpus = host_gpus(env, ssh) if live else list(env.host.gpus)
        finally:
            api.close()
    except PhoenixError as error:
        print(f"phoenix import --from-host: reading {env.host.node} failed: {error}", file=sys.stderr)
        return EXIT_INVALID
    entries: list[dict[str, Any]] = []
    reports: list[GuestReport] = []
    valid: list[Container] = []
    for guest in live:
        result, report = import_guest(guest, env, gpus)
        reports.append(report)
        if result.entry is not None:
            entries.append(result.entry)
            if not report.invalid:
                valid.append(Container.model_validate(result.entry))
    by_vmid, environment = environment_problems(env, valid)
    for report in reports:
        report.invalid += by_vmid.get(report.vmid, [])
    document = json.dumps({"containers": entries}, indent=2) + "\n"
    if args.out is not None:
        args.out.write_text(document)
        print(f"wrote {args.out}: {len(entries)} containers to adopt", file=sys.stderr)
    else:
        sys.stdout.write(document)
    print_report(reports, skipped)
    for line in environment:
        print(f"validation, with the imported guests added: {line}", file=sys.stderr)
    if args.report is not None:
        args.report.write_text(
            json.dumps(
                {
                    "guests": [asdict(r) for r in reports],
                    "skipped": [asdict(s) for s in skipped],
                    "environment": environment,
                },
                indent=2,
            )
        )
    return 0
