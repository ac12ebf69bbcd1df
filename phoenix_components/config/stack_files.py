"""Docker Compose stacks: ``config/stacks/<name>/`` loaded and checked against the guest that runs them.

A stack is a directory under ``config/stacks/`` holding

- ``compose.yaml`` (or ``compose.yml``, not both): the Compose file, deployed as it is written;
- ``stack.json`` (optional, :class:`StackSettings`): the variables Compose interpolates into it
  (``environment``, plain values), the names of those that are secrets (``secrets``: the values come from
  the stack's Pulumi config secrets, never from a file), and the deadline of ``up --wait``.

``guests.json`` places it: ``"stacks": [{"name": "qdrant", "guest": 231}]``. Only placed stacks are
loaded. The checks, each a problem naming the file, the JSON path (or line) and the guest: the directory
and the Compose file exist; the guest exists and runs Docker (a container whose layer, or a parent of it,
runs the ``docker`` feature, or a VM whose features include it); the Compose file is YAML, a mapping with
a non-empty ``services`` mapping; every ``${VAR}`` it uses without a default is declared; no name is both
plain and secret; no published port clashes with the guest's own ports, its vLLM port or another stack's.

Nothing here touches a host. The stack's identity (:func:`content_key`) is the hash of what the guest
gets: the Compose file and the environment, secrets by the hash of their values, never the values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol

import yaml
from pydantic import Field, field_validator

from phoenix_components.config.models import (
    Chain,
    Container,
    Document,
    FeatureEnvName,
    FeatureEnvValue,
    Guests,
    StackPlacement,
    Vm,
)
from providers.channels.command import sha256_text

STACKS_DIR = "stacks"
COMPOSE_NAMES = ("compose.yaml", "compose.yml")
SETTINGS_FILE = "stack.json"
DOCKER_FEATURE = "docker"
# `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:?error}`, `$NAME`; `$$` is a literal dollar.
_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)((?::?[-?+])[^}]*)?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


class StackSettings(Document):
    """``config/stacks/<name>/stack.json``."""

    environment: dict[FeatureEnvName, FeatureEnvValue] = Field(
        default={}, description="variables Compose interpolates into the Compose file (plain values)"
    )
    secrets: list[FeatureEnvName] = Field(
        default=[],
        description="variables whose values are Pulumi config secrets: "
        "`pulumi config set --secret --path 'phoenix:stackSecrets.<stack>.<NAME>' VALUE`",
    )
    wait_timeout_s: Annotated[int, Field(ge=10, le=3600)] = Field(
        default=300, description="seconds `docker compose up --wait` may take until every service is healthy"
    )

    @field_validator("environment")
    @classmethod
    def _quotable(cls, value: dict[str, str]) -> dict[str, str]:
        # The env file holds each value in single quotes, which Compose reads literally: no escape exists.
        for name, text in value.items():
            if "'" in text:
                raise ValueError(
                    f"{name}: a value may not contain a single quote (') (the env file quotes with it)"
                )
        return value

    @field_validator("secrets")
    @classmethod
    def _once(cls, value: list[str]) -> list[str]:
        twice = sorted({n for n in value if value.count(n) > 1})
        if twice:
            raise ValueError(f"secrets listed twice: {', '.join(twice)}")
        return value


@dataclass(frozen=True)
class PublishedPort:
    service: str
    port: int
    proto: str
    at: str  # the JSON path in the Compose file: services.web.ports[0]


@dataclass(frozen=True)
class StackFiles:
    """One placed stack, loaded and checked."""

    name: str
    guest: int
    compose_file: str  # the file's name in the stack directory (and in the guest)
    compose: str
    settings: StackSettings
    services: tuple[str, ...]
    ports: tuple[PublishedPort, ...] = ()

    @property
    def project(self) -> str:
        """The Compose project name: the stack's name (already lower-case letters, digits, `_`, `-`)."""
        return self.name


def content_key(compose: str, environment: Mapping[str, str], secret_hashes: Mapping[str, str]) -> str:
    """The stack's identity: the Compose file, the plain environment and each secret's sha256 (the value
    itself never enters the key, so it is safe to show)."""
    material = {"compose": compose, "environment": dict(environment), "secrets": dict(secret_hashes)}
    return sha256_text(json.dumps(material, sort_keys=True))[:16]


@dataclass(frozen=True)
class StackProblem:
    """A problem as :class:`phoenix_components.config.load.Problem` takes it (file, path, message, guest)."""

    file: str
    path: str
    message: str
    guest: str = ""


def guest_label(guest: Container | Vm) -> str:
    if isinstance(guest, Container):
        return f"CT {guest.vmid} {guest.hostname}"
    return f"VM {guest.vmid} {guest.name}"


def runs_docker(chain: Chain, guest: Container | Vm) -> bool:
    """A container whose layer (or a parent of it) runs the docker feature, or a VM that runs it."""
    if isinstance(guest, Vm):
        return DOCKER_FEATURE in guest.features
    name: str | None = guest.layer
    seen: set[str] = set()
    while name is not None and name in chain.layers and name not in seen:
        seen.add(name)
        if DOCKER_FEATURE in chain.layers[name].features:
            return True
        name = chain.layers[name].parent
    return DOCKER_FEATURE in guest.features


def load_stacks(
    config_dir: Path, chain: Chain, guests: Guests, guests_file: str, read: ReadDocument
) -> tuple[dict[str, StackFiles], list[StackProblem]]:
    """Every stack ``guests.json`` places, loaded and checked; ``(stacks by name, problems)``."""
    by_vmid: dict[int, tuple[str, Container | Vm]] = {
        **{vm.vmid: (f"vms[{i}]", vm) for i, vm in enumerate(guests.vms)},
        **{ct.vmid: (f"containers[{i}]", ct) for i, ct in enumerate(guests.containers)},
    }
    stacks: dict[str, StackFiles] = {}
    problems: list[StackProblem] = []
    seen: dict[str, str] = {}
    for i, placement in enumerate(guests.stacks):
        at = f"stacks[{i}]"
        entry = by_vmid.get(placement.guest)
        label = guest_label(entry[1]) if entry else ""
        if placement.name in seen:
            problems.append(
                StackProblem(
                    guests_file,
                    f"{at}.name",
                    f"stack {placement.name} is already placed at {seen[placement.name]}",
                    label,
                )
            )
            continue
        seen[placement.name] = at
        found: list[StackProblem] = []
        if entry is None:
            found.append(
                StackProblem(
                    guests_file, f"{at}.guest", f"no container or VM with vmid {placement.guest} in this file"
                )
            )
        elif not runs_docker(chain, entry[1]):
            path, guest = entry
            if isinstance(guest, Container) and guest.layer is not None:
                where = f"its layer {guest.layer!r} (and its parents) run no {DOCKER_FEATURE!r} feature"
            elif isinstance(guest, Container):  # adopted without a layer: only its own features tell
                where = f"it has no layer and its features do not include {DOCKER_FEATURE!r}"
            else:
                where = f"its features do not include {DOCKER_FEATURE!r}"
            found.append(
                StackProblem(guests_file, f"{at}.guest", f"{path} cannot run a Compose stack: {where}", label)
            )
        stack, file_problems = _load_stack(config_dir, placement, guests_file, at, label, read)
        found += file_problems
        if stack is not None and entry is not None:
            found += _port_clashes(stack, entry[0], entry[1], stacks.values(), label)
        problems += found
        if stack is not None and not found:
            stacks[placement.name] = stack
    return stacks, problems


def _load_stack(
    config_dir: Path, placement: StackPlacement, guests_file: str, at: str, label: str, read: ReadDocument
) -> tuple[StackFiles | None, list[StackProblem]]:
    rel = f"{STACKS_DIR}/{placement.name}"
    directory = config_dir / STACKS_DIR / placement.name
    if not directory.is_dir():
        return None, [
            StackProblem(
                guests_file, f"{at}.name", f"no stack directory {rel}/ (config/{rel}/compose.yaml)", label
            )
        ]
    present = [name for name in COMPOSE_NAMES if (directory / name).is_file()]
    if not present:
        return None, [StackProblem(f"{rel}/", "$", f"no Compose file: write {rel}/compose.yaml", label)]
    if len(present) > 1:
        return None, [
            StackProblem(
                f"{rel}/", "$", f"both {' and '.join(present)}: keep one (Compose would read only one)", label
            )
        ]
    compose_file = present[0]
    compose_rel = f"{rel}/{compose_file}"
    problems: list[StackProblem] = []
    settings = _load_settings(read, config_dir, f"{rel}/{SETTINGS_FILE}", label, problems)
    try:
        compose = (directory / compose_file).read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        return None, [
            StackProblem(compose_rel, "$", f"not UTF-8: {error.reason} at offset {error.start}", label)
        ]
    try:
        document = yaml.safe_load(compose)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark is not None else "$"
        reason = getattr(error, "problem", None) or str(error)
        return None, [StackProblem(compose_rel, where, f"invalid YAML: {reason}", label)]
    if not isinstance(document, dict):
        return None, [
            StackProblem(compose_rel, "$", "a Compose file is a mapping with `services` at the top", label)
        ]
    services = document.get("services")
    if not isinstance(services, dict) or not services:
        return None, [
            StackProblem(compose_rel, "services", "a mapping of at least one service is required", label)
        ]
    for name, service in services.items():
        if not isinstance(service, dict):
            problems.append(StackProblem(compose_rel, f"services.{name}", "a service is a mapping", label))
    if settings is not None:
        problems += _undeclared_variables(compose, settings, compose_rel, f"{rel}/{SETTINGS_FILE}", label)
    if problems or settings is None:
        return None, problems
    ports, port_problems = _published_ports(services, compose_rel, label)
    if port_problems:
        return None, port_problems
    return (
        StackFiles(
            name=placement.name,
            guest=placement.guest,
            compose_file=compose_file,
            compose=compose,
            settings=settings,
            services=tuple(str(s) for s in services),
            ports=tuple(ports),
        ),
        [],
    )


class ProblemLike(Protocol):
    @property
    def file(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def message(self) -> str: ...


ReadDocument = Callable[[Path, type[StackSettings]], tuple[StackSettings | None, Sequence[ProblemLike]]]
"""How ``load.py`` reads a JSON document (its one set of JSON rules): ``(path relative to the config
directory, model) -> (the document or None, its problems)``. Passed in: this module may not import load."""


def _load_settings(
    read: ReadDocument, config_dir: Path, rel: str, label: str, problems: list[StackProblem]
) -> StackSettings | None:
    if not (config_dir / rel).exists():
        return StackSettings()
    settings, found = read(Path(rel), StackSettings)
    problems += [StackProblem(p.file, p.path, p.message, label) for p in found]
    if settings is None:
        return None
    for i, name in enumerate(settings.secrets):
        if name in settings.environment:
            problems.append(
                StackProblem(
                    rel, f"secrets[{i}]", f"{name} is in environment too: a value is plain or secret", label
                )
            )
    return settings


def _undeclared_variables(
    compose: str, settings: StackSettings, compose_rel: str, settings_rel: str, label: str
) -> Iterator[StackProblem]:
    declared = {*settings.environment, *settings.secrets}
    reported: set[str] = set()
    for number, line in enumerate(compose.splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue
        for match in _VARIABLE.finditer(line):
            name = match.group(1) or match.group(3)
            default = match.group(2) or ""
            if (
                name is None
                or default.startswith((":-", "-", ":+", "+"))
                or name in declared
                or name in reported
            ):
                continue
            reported.add(name)
            yield StackProblem(
                compose_rel,
                f"line {number}",
                f"${{{name}}} is used but not declared: add it to {settings_rel} environment, or to its "
                "secrets (the value then comes from the stack's Pulumi config secret)",
                label,
            )


def _published_ports(
    services: Mapping[Any, Any], compose_rel: str, label: str
) -> tuple[list[PublishedPort], list[StackProblem]]:
    """The host ports (in the guest) each service publishes, from the short (``"8080:80/tcp"``,
    ``"127.0.0.1:8080:80"``) and the long (``{published, target, protocol}``) syntax."""
    ports: list[PublishedPort] = []
    problems: list[StackProblem] = []
    for name, service in services.items():
        entries = service.get("ports", []) if isinstance(service, dict) else []
        if not isinstance(entries, list):
            problems.append(StackProblem(compose_rel, f"services.{name}.ports", "ports is a list", label))
            continue
        for j, entry in enumerate(entries):
            at = f"services.{name}.ports[{j}]"
            published, proto = _published(entry)
            if published is None:
                continue  # a container port only (no host port): nothing to clash
            if not published.isdigit() or not 1 <= int(published) <= 65535:
                problems.append(
                    StackProblem(compose_rel, at, f"published port {published!r} is not 1-65535", label)
                )
                continue
            ports.append(PublishedPort(str(name), int(published), proto, at))
    return ports, problems


def _published(entry: object) -> tuple[str | None, str]:
    if isinstance(entry, dict):
        published = entry.get("published")
        return (None if published is None else str(published)), str(entry.get("protocol", "tcp"))
    text = str(entry)
    text, _, proto = text.partition("/")
    parts = text.rsplit(":", 2)
    if len(parts) == 1:
        return None, proto or "tcp"
    host_port = parts[-2]
    return (host_port or None), proto or "tcp"


def _port_clashes(
    stack: StackFiles, guest_path: str, guest: Container | Vm, others: Sequence[StackFiles] | Any, label: str
) -> Iterator[StackProblem]:
    compose_rel = f"{STACKS_DIR}/{stack.name}/{stack.compose_file}"
    taken: dict[str, str] = {}
    if isinstance(guest, Container) and guest.vllm is not None:
        taken[f"{guest.vllm.server.port}/tcp"] = f"{guest_path}.vllm.server.port"
    for i, port in enumerate(guest.ports):
        taken.setdefault(f"{port.port}/{port.proto}", f"{guest_path}.ports[{i}].port")
    for other in others:
        if other.guest == stack.guest:
            for p in other.ports:
                taken.setdefault(
                    f"{p.port}/{p.proto}", f"{STACKS_DIR}/{other.name}/{other.compose_file} {p.at}"
                )
    for p in stack.ports:
        key = f"{p.port}/{p.proto}"
        if key in taken:
            yield StackProblem(compose_rel, p.at, f"port {key} clashes with {taken[key]} ({label})", label)
        else:
            taken[key] = f"{compose_rel} {p.at}"
