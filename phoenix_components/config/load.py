"""Load one environment's config and check every fact that relates records, before any host is touched.

``load_environment(config_dir, "dev")`` reads ``chain.json``, ``environments/dev/host.json`` and
``environments/dev/guests.json``, validates each against its model, then runs the cross-record checks
listed in config/README.md ("Checks before anything touches a host"). Every mistake found — not just the
first — becomes one ``file: json.path: message`` line in a single
:class:`~phoenix_components.config.errors.ConfigError`. Nothing here opens a socket or runs a command.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from phoenix_components.config.errors import ConfigError
from phoenix_components.config.features import FRESH_GUEST, feature_env, fresh_guest_scripts, layer_order
from phoenix_components.config.models import (
    ESCAPABLE_PROFILES,
    PATTERN_RULES,
    PVE_BUILTIN_PROFILES,
    ROOT_USER,
    UNCONFINED,
    BindMount,
    Chain,
    Container,
    DatasetCloneMount,
    Guests,
    Host,
    Layer,
    Network,
    Startup,
    VllmEngine,
    Vm,
    VolumeMount,
)
from phoenix_components.config.promotion import PromotionLock, check_lock, load_lock
from phoenix_components.config.stack_files import ReadDocument, StackFiles, StackSettings, load_stacks
from providers.channels.command import sha256_text

CHAIN_FILE = "chain.json"
HOST_FILE = "host.json"
GUESTS_FILE = "guests.json"
ENVIRONMENTS_DIR = "environments"
FEATURES_DIR = "features"
# AppArmor profiles ship beside config/, in the repository's apparmor/ folder.
APPARMOR_DIR = Path("..") / "apparmor"

M = TypeVar("M", bound=BaseModel)
G = TypeVar("G", Container, Vm)


@dataclass(frozen=True)
class Problem:
    file: str
    path: str
    message: str
    guest: str = ""  # "CT 201 vllm-qwen": the guest the path is in, as a person names it

    def __str__(self) -> str:
        where = f"{self.path} ({self.guest})" if self.guest else self.path
        return f"{self.file}: {where}: {self.message}"


# `containers[1]` or `vms[0]`, with the rest of a JSON path after it (`.network.ip`, `.gpus[0]`).
_GUEST_REF = re.compile(r"\b(?:containers|vms)\[\d+\]((?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])*)")


def guest_labels(data: Any) -> dict[str, str]:
    """``{"containers[0]": "CT 201 vllm-qwen", "vms[0]": "VM 231 docker-vm"}`` from a guests document,
    parsed or raw (a raw one may be missing keys: what is there is used)."""
    if isinstance(data, Guests):
        data = data.model_dump()
    labels: dict[str, str] = {}
    if not isinstance(data, dict):
        return labels
    for key, kind, name_key in (("containers", "CT", "hostname"), ("vms", "VM", "name")):
        entries = data.get(key)
        if not isinstance(entries, list):
            continue
        for i, entry in enumerate(entries):
            if isinstance(entry, dict):
                vmid, name = entry.get("vmid"), entry.get(name_key)
                label = f"{kind} {vmid if isinstance(vmid, int) else '?'}"
                if isinstance(name, str):  # a name that is itself the mistake is quoted, not echoed
                    label += f" {name}" if re.fullmatch(r"[A-Za-z0-9.-]{1,64}", name) else f" {name!r}"
                labels[f"{key}[{i}]"] = label
    return labels


def name_guests(problems: Iterable[Problem], file: str, labels: Mapping[str, str]) -> list[Problem]:
    """Each problem in ``file`` that sits in a guest names it, and so does every guest it refers to."""

    def label(ref: re.Match[str]) -> str:
        base = ref.group(0)[: len(ref.group(0)) - len(ref.group(1))]
        return f"{ref.group(0)} ({labels[base]})" if base in labels else ref.group(0)

    named = []
    for problem in problems:
        if problem.file != file:
            named.append(problem)
            continue
        own = _GUEST_REF.match(problem.path)
        base = own.group(0)[: len(own.group(0)) - len(own.group(1))] if own else ""
        named.append(
            replace(problem, guest=labels.get(base, ""), message=_GUEST_REF.sub(label, problem.message))
        )
    return named


@dataclass(frozen=True)
class Environment:
    """One validated environment: the three documents plus the feature scripts and profiles they name."""

    name: str
    config_dir: Path
    host: Host
    chain: Chain
    guests: Guests
    feature_scripts: Mapping[str, str] = field(repr=False)
    apparmor_profiles: Mapping[str, str] = field(repr=False)
    promotion: PromotionLock | None = None  # layers verified in the environment below (see promotion.py)
    stacks: Mapping[str, StackFiles] = field(default_factory=dict, repr=False)  # guests.json `stacks`, loaded

    def layer_order(self) -> list[str]:
        """Layer names, parents before children (checked acyclic at load)."""
        return layer_order(self.chain.layers)

    def built_layers(self) -> list[str]:
        """The layers this environment builds, parents first: those its containers run on, and their
        ancestors. chain.json is shared by every environment, so a layer no guest here runs on (a model
        server only another environment uses, say) is not built here: nothing would use it."""
        used = {
            n for ct in self.guests.containers if ct.layer is not None for n in self.layer_lineage(ct.layer)
        }
        return [name for name in self.layer_order() if name in used]

    def reuses_promoted_templates(self) -> bool:
        """Promoted templates can be reused only where they are: on the node they were built on."""
        lock = self.promotion
        return lock is not None and all(layer.node == self.host.node for layer in lock.layers.values())

    def layer_lineage(self, name: str) -> list[str]:
        """``vllm -> [base, gpu, docker, vllm]``."""
        lineage = [name]
        while (parent := self.chain.layers[lineage[0]].parent) is not None:
            lineage.insert(0, parent)
        return lineage

    def layer_feature_env(self, name: str, feature: str) -> dict[str, str]:
        """The environment layer ``name``'s build sends with ``feature``: the target, **this layer's own**
        pins (``PHOENIX_<NAME>_VERSION``) and, for the nvidia feature, the host driver's source.

        Pins belong to the layer that declares them: two layers that run the same feature with different
        pins each send their own, and a layer that pins nothing sends no version at all.
        """
        return feature_env("lxc", feature, self.chain.layers[name].versions, self.host.nvidia)

    def layer_key(self, name: str) -> str:
        """Content address of a layer: parent's key, origin, and exactly what its build runs — each feature
        script's contents with the environment sent with it — then the smoke test and build resources.

        Anything that changes what a layer contains changes its key; nothing else does (not the vmid, not
        the environment's name), so the same chain on the same driver has the same keys in dev, staging
        and prod.
        """
        layer = self.chain.layers[name]
        origin: Any
        if layer.parent is not None:
            origin = {"parent": self.layer_key(layer.parent)}
        else:
            assert layer.os_template is not None  # one of the two, checked by the model
            template = self.host.os_templates[layer.os_template]
            origin = {"os_template": template.file, "sha512": template.sha512}
        material = {
            "origin": origin,
            "features": [
                [f, sha256_text(self.feature_scripts[f]), self.layer_feature_env(name, f)]
                for f in layer.features
            ],
            "smoke_test": layer.smoke_test,
            "build": layer.build.model_dump(),
        }
        return sha256_text(json.dumps(material, sort_keys=True))[:16]


def environment_names(config_dir: Path) -> list[str]:
    root = config_dir / ENVIRONMENTS_DIR
    return sorted(p.name for p in root.iterdir() if (p / HOST_FILE).is_file()) if root.is_dir() else []


def load_environment(config_dir: Path | str, environment: str, *, promotion: bool = True) -> Environment:
    """Validated config for ``environment``, or :class:`ConfigError` listing every problem found.

    With ``promotion`` (the default) the environment's promotion lock is loaded and checked against the
    chain; ``phoenix promote`` turns it off to write a new lock over a stale one.
    """
    config_dir = Path(config_dir)
    problems: list[Problem] = []
    env_dir = config_dir / ENVIRONMENTS_DIR / environment
    if not (env_dir / HOST_FILE).is_file():
        known = ", ".join(environment_names(config_dir)) or "none"
        raise ConfigError(
            [f"{_rel(env_dir, config_dir)}: $: no environment {environment!r} (known: {known})"]
        )

    chain = _load(config_dir, Path(CHAIN_FILE), Chain, problems)
    host = _load(config_dir, env_dir.relative_to(config_dir) / HOST_FILE, Host, problems)
    guests = _load(config_dir, env_dir.relative_to(config_dir) / GUESTS_FILE, Guests, problems)
    if chain is None or host is None or guests is None:  # cross-checks need all three documents
        raise ConfigError([str(p) for p in problems])

    scripts = _read_dir(config_dir / FEATURES_DIR, ".sh")
    profiles = _read_dir(config_dir / APPARMOR_DIR, "")
    files = _Files(
        chain=CHAIN_FILE,
        host=_rel(env_dir / HOST_FILE, config_dir),
        guests=_rel(env_dir / GUESTS_FILE, config_dir),
    )
    fresh = fresh_guest_scripts(scripts)
    checked = check_environment(host, chain, guests, set(scripts), set(profiles), files, fresh_guest=fresh)
    problems.extend(name_guests(checked, files.guests, guest_labels(guests)))
    stacks, stack_problems = load_stacks(config_dir, chain, guests, files.guests, _reader(config_dir))
    problems += [Problem(p.file, p.path, p.message, p.guest) for p in stack_problems]
    if problems:
        raise ConfigError([str(p) for p in problems])
    env = Environment(
        name=environment,
        config_dir=config_dir,
        host=host,
        chain=chain,
        # The boot order PVE gets for guests in a dependency that give none (see start_orders).
        guests=with_start_orders(guests),
        feature_scripts=scripts,
        apparmor_profiles={name: profiles[name] for name in host.apparmor_profiles},
        stacks=stacks,
    )
    lock = load_lock(config_dir, environment) if promotion else None
    if lock is None:
        return env
    lock_problems = check_lock(lock, {name: env.layer_key(name) for name in env.built_layers()}, environment)
    if lock_problems:
        raise ConfigError(lock_problems)
    return replace(env, promotion=lock)


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _read_dir(directory: Path, suffix: str) -> dict[str, str]:
    if not directory.is_dir():
        return {}
    return {
        p.name.removesuffix(suffix): p.read_text()
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name.endswith(suffix) and not p.name.startswith(".")
    }


def _reader(config_dir: Path) -> ReadDocument:
    """:func:`_load` as a function of (relative path, model): how stack_files reads its JSON documents."""

    def read(relative: Path, model: type[StackSettings]) -> tuple[StackSettings | None, list[Problem]]:
        problems: list[Problem] = []
        return _load(config_dir, relative, model, problems), problems

    return read


def _load(config_dir: Path, relative: Path, model: type[M], problems: list[Problem]) -> M | None:
    """Parse and validate one JSON document; append its problems instead of raising."""
    name = str(relative)
    path = config_dir / relative
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        problems.append(Problem(name, "$", "file not found"))
        return None
    data, json_problems = parse_json(raw)
    if json_problems:
        problems.extend(Problem(name, where, message) for where, message in json_problems)
        return None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        found = [Problem(name, json_path(err["loc"], data), _message(err)) for err in exc.errors()]
        problems.extend(name_guests(found, name, guest_labels(data)) if model is Guests else found)
        return None


class _DuplicateKeys:
    """object_pairs_hook that remembers every object with a key given twice (JSON would keep the last)."""

    def __init__(self) -> None:
        self.found: list[tuple[dict[str, Any], str]] = []

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, value in pairs:
            if key in obj:
                self.found.append((obj, key))
            obj[key] = value
        return obj


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (Python's json accepts it, other tools do not)")


def _path_of(target: object, data: Any, at: str = "") -> str | None:
    """The JSON path of the object ``target`` (by identity) inside ``data``."""
    if data is target:
        return at or "$"
    children = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, child in children:
        step = f"[{key}]" if isinstance(key, int) else (f".{key}" if at else str(key))
        found = _path_of(target, child, at + step)
        if found is not None:
            return found
    return None


def _lone_surrogates(data: Any, at: str = "") -> Iterator[str]:
    """Paths of strings (keys or values) with a ``\\ud800``-style escape that is half a character."""
    if isinstance(data, str):
        if any("\ud800" <= c <= "\udfff" for c in data):
            yield at or "$"
    elif isinstance(data, dict):
        for key, value in data.items():
            step = f".{key}" if at else key
            yield from _lone_surrogates(key, step)
            yield from _lone_surrogates(value, at + step if at else step)
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _lone_surrogates(value, f"{at}[{i}]")


def parse_json(raw: bytes) -> tuple[Any, list[tuple[str, str]]]:
    """Decode and parse one config file, refusing what would parse ambiguously; ``(data, [(where, why)])``.

    Refused: bytes that are not UTF-8 (RFC 8259 requires it), a key given twice in one object (JSON
    parsers disagree on which one wins; Python keeps the last, silently), ``NaN``/``Infinity`` (not JSON),
    and escapes that decode to half a UTF-16 surrogate pair (no character at all).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return None, [(f"line {line}", f"not UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start}")]
    if text.startswith("\ufeff"):
        return None, [("line 1", "starts with a byte-order mark; save the file as UTF-8 without BOM")]
    hook = _DuplicateKeys()
    try:
        data = json.loads(text, object_pairs_hook=hook, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        return None, [(f"line {exc.lineno} column {exc.colno}", f"invalid JSON: {exc.msg}")]
    except ValueError as exc:
        return None, [("$", str(exc))]
    problems = []
    for obj, key in hook.found:
        at = _path_of(obj, data) or "$"
        where = key if at == "$" else f"{at}.{key}"
        problems.append(
            (where, f"key {key!r} is given twice in one object; JSON parsers disagree on which one counts")
        )
    problems += [
        (where, "a \\u escape that is half a character (a lone surrogate)")
        for where in _lone_surrogates(data)
    ]
    return data, problems


def json_path(loc: Sequence[int | str], data: Any) -> str:
    """Turn a pydantic error location into the JSON path of the input: ``containers[0].network.mac``.

    Pydantic adds discriminator tags (``volume``) and ``[key]`` markers to locations; they are not part of
    the document, so they are dropped by walking the real input alongside.
    """
    parts: list[str] = []
    current = data
    for i, element in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(element, int) and isinstance(current, list):
            parts.append(f"[{element}]")
            current = current[element] if element < len(current) else None
        elif isinstance(element, str) and isinstance(current, dict) and (element in current or last):
            parts.append(f".{element}" if parts else element)
            current = current.get(element)
        elif element == "[key]":
            parts.append(" (key)")
        # anything else is a pydantic-internal tag (union member, discriminator value): skip it
    return "".join(parts) or "$"


def _message(err: Any) -> str:
    kind, msg = err["type"], str(err["msg"])
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return "unknown key (not in the schema; a typo?)"
    msg = msg.removeprefix("Value error, ")
    if kind == "string_pattern_mismatch":
        # The rule in words (models.PATTERN_RULES); the regex itself only where no words are known.
        pattern = str(err.get("ctx", {}).get("pattern", ""))
        rule = PATTERN_RULES.get(pattern, f"text matching {pattern}")
        return f"must be {rule} (got {err.get('input')!r})"
    if kind in ("value_error", "assertion_error") or isinstance(err.get("input"), dict | list):
        return msg
    return f"{msg} (got {err.get('input')!r})"


@dataclass(frozen=True)
class _Files:
    chain: str
    host: str
    guests: str


def check_environment(
    host: Host,
    chain: Chain,
    guests: Guests,
    scripts: set[str],
    profiles: set[str],
    files: _Files,
    *,
    fresh_guest: frozenset[str],
) -> list[Problem]:
    """Every cross-record fact config/README.md lists. Pure: the inputs are already-parsed documents.
    ``fresh_guest``: the scripts among ``scripts`` that need a fresh guest (``# phoenix: fresh-guest``)."""
    return [
        *_check_host(host, chain, profiles, files),
        *_check_chain(host, chain, scripts, files),
        *_check_guests(host, chain, guests, scripts, files, fresh_guest),
        *_check_gpu_sharing(host, guests, files),
        *_check_dependencies(guests, files),
        *_check_capacity(host, chain, guests, files),
    ]


def _listed_twice(f: str, at: str, items: Sequence[object], what: str) -> Iterator[Problem]:
    """A list where an item given twice means nothing more (a feature run twice, a profile loaded twice)."""
    for where, value, first in _duplicates([(f"{at}[{i}]", item) for i, item in enumerate(items)]):
        yield Problem(f, where, f"{what} {value} is already listed at {first}")


def _duplicates(items: Sequence[tuple[str, object]]) -> Iterator[tuple[str, object, str]]:
    """For (path, value) pairs, yield (path, value, first path) for every value seen before."""
    seen: dict[object, str] = {}
    for path, value in items:
        if value in seen:
            yield path, value, seen[value]
        else:
            seen[value] = path


def _check_host(host: Host, chain: Chain, profiles: set[str], files: _Files) -> Iterator[Problem]:
    f = files.host
    ranges = host.vmid_ranges
    if ranges.layers.overlaps(ranges.guests):
        yield Problem(f, "vmid_ranges", "the layers and guests ranges overlap")
    # Create-before-delete needs a free vmid for every layer while the old one still exists.
    room = ranges.layers.end - ranges.layers.start + 1
    # VM templates made from cloud images take the top of the range, one per image.
    if room < 2 * len(chain.layers) + len(host.cloud_images):
        yield Problem(
            f,
            "vmid_ranges.layers",
            f"{room} vmids for {len(chain.layers)} layers and {len(host.cloud_images)} cloud image "
            "templates; replacing needs 2 per layer",
        )
    for path, value, first in _duplicates([(f"gpus[{i}].index", g.index) for i, g in enumerate(host.gpus)]):
        yield Problem(f, path, f"GPU index {value} is already listed at {first}")
    declared = [(f"gpus[{i}].minor", g.minor) for i, g in enumerate(host.gpus) if g.minor is not None]
    for path, value, first in _duplicates(declared):
        yield Problem(f, path, f"device minor {value} (/dev/nvidia{value}) is already declared at {first}")
    for path, value, first in _duplicates(
        [(f"bridges[{i}].name", b.name) for i, b in enumerate(host.bridges)]
    ):
        yield Problem(f, path, f"bridge {value} is already listed at {first}")
    for i, bridge in enumerate(host.bridges):
        if bridge.gateway is not None and ipaddress.IPv4Address(bridge.gateway) not in ipaddress.IPv4Network(
            bridge.cidr
        ):
            yield Problem(f, f"bridges[{i}].gateway", f"{bridge.gateway} is outside {bridge.cidr}")
    yield from _listed_twice(f, "apparmor_profiles", host.apparmor_profiles, "profile")
    for i, name in enumerate(host.apparmor_profiles):
        if name not in profiles:
            yield Problem(f, f"apparmor_profiles[{i}]", f"no profile file apparmor/{name}")


def _check_chain(host: Host, chain: Chain, scripts: set[str], files: _Files) -> Iterator[Problem]:
    f = files.chain
    layers = chain.layers
    for name, layer in layers.items():
        at = f"layers.{name}"
        if layer.os_template is not None and layer.os_template not in host.os_templates:
            yield Problem(
                f, f"{at}.os_template", f"{layer.os_template!r} is not in {files.host} os_templates"
            )
        for i, feature in enumerate(layer.features):
            if feature not in scripts:
                yield Problem(f, f"{at}.features[{i}]", f"no feature script features/{feature}.sh")
        yield from _listed_twice(f, f"{at}.features", layer.features, "feature")
        parent = layers.get(layer.parent) if layer.parent is not None else None
        if parent is not None and layer.build.disk_gib < parent.build.disk_gib:
            yield Problem(
                f,
                f"{at}.build.disk_gib",
                f"{layer.build.disk_gib} GiB is smaller than its parent {layer.parent}'s "
                f"{parent.build.disk_gib} GiB: a linked clone starts at its parent's size and PVE cannot "
                "shrink a disk",
            )
        if "nvidia" in _inherited_features(layers, name):
            pinned = layer.versions.get("nvidia") if "nvidia" in layer.features else None
            if "nvidia" in layer.features and host.nvidia is None:
                yield Problem(f, f"{at}.features", f"the nvidia feature needs `nvidia` in {files.host}")
            elif pinned is not None and host.nvidia is not None and pinned != host.nvidia.version:
                yield Problem(
                    f,
                    f"{at}.versions.nvidia",
                    f"container userspace {pinned} differs from the host driver "
                    f"{host.nvidia.version} in {files.host}; they must match",
                )
            elif "nvidia" in layer.features and pinned is None:
                yield Problem(f, f"{at}.versions", "the nvidia feature needs a pinned versions.nvidia")
        if layer.build.gpus and not host.gpus:
            yield Problem(f, f"{at}.build.gpus", f"{files.host} lists no GPUs to pass in")
        elif layer.build.gpus and host.nvidia is not None and not host.nvidia.manage:
            yield from _undeclared_minors(
                host, [g.index for g in host.gpus], f"{at}.build.gpus", f, files.host
            )
    yield from chain_structure_problems(chain)


def chain_structure_problems(chain: Chain) -> Iterator[Problem]:
    """Parents that do not exist, and parent cycles: the chain's own shape, the same for every environment
    (on-prem and cloud alike, so ``phoenix validate`` prints each once)."""
    layers = chain.layers
    for name, layer in layers.items():
        if layer.parent is not None and layer.parent not in layers:
            yield Problem(
                CHAIN_FILE,
                f"layers.{name}.parent",
                f"no layer named {layer.parent!r} (layers: {', '.join(layers)})",
            )
    for cycle in _cycles(layers):
        yield Problem(
            CHAIN_FILE, f"layers.{cycle[0]}.parent", "parent cycle: " + " -> ".join([*cycle, cycle[0]])
        )


def _undeclared_minors(host: Host, gpus: Sequence[int], at: str, f: str, host_file: str) -> Iterator[Problem]:
    """Without a managed driver nothing reads the host's device minors, so host.json must say them."""
    declared = {g.index: g.minor for g in host.gpus}
    missing = [gpu for gpu in gpus if gpu in declared and declared[gpu] is None]
    if missing:
        yield Problem(
            f,
            at,
            f"GPU {', '.join(map(str, missing))} has no `minor` in {host_file} gpus, and nvidia.manage is "
            "false, so nothing reads its /dev/nvidiaN: add the `Device Minor` from "
            "/proc/driver/nvidia/gpus/<pci>/information",
        )


def _inherited_features(layers: Mapping[str, Layer], name: str) -> list[str]:
    features: list[str] = []
    seen: set[str] = set()
    current: str | None = name
    while current is not None and current in layers and current not in seen:
        seen.add(current)
        features[:0] = layers[current].features
        current = layers[current].parent
    return features


def _cycles(layers: Mapping[str, Layer]) -> list[list[str]]:
    cycles: list[list[str]] = []
    done: set[str] = set()
    for start in layers:
        path: list[str] = []
        current: str | None = start
        while current is not None and current in layers and current not in done:
            if current in path:
                cycle = path[path.index(current) :]
                if not any(set(cycle) == set(c) for c in cycles):
                    cycles.append(cycle)
                break
            path.append(current)
            current = layers[current].parent
        done.update(path)
    return cycles


def _check_guests(
    host: Host, chain: Chain, guests: Guests, scripts: set[str], files: _Files, fresh_guest: frozenset[str]
) -> Iterator[Problem]:
    f = files.guests
    entries: list[tuple[str, Container | Vm]] = [
        *((f"containers[{i}]", c) for i, c in enumerate(guests.containers)),
        *((f"vms[{i}]", v) for i, v in enumerate(guests.vms)),
    ]
    for path, vmid, first in _duplicates([(f"{p}.vmid", g.vmid) for p, g in entries]):
        yield Problem(f, path, f"vmid {vmid} is already used at {first}")
    # DNS names are case-insensitive: Web01 and web01 are one name.
    names = [
        (f"{p}.hostname" if isinstance(g, Container) else f"{p}.name", _guest_name(g).lower())
        for p, g in entries
    ]
    for path, name, first in _duplicates(names):
        yield Problem(f, path, f"hostname {name} is already used at {first}")
    nic_paths = [(p, at, net) for p, g in entries for at, net in _nics(g)]
    addresses = [(f"{p}.{at}.ip", net.address) for p, at, net in nic_paths if net.address is not None]
    for path, address, first in _duplicates(addresses):
        yield Problem(f, path, f"IP address {address} is already used at {first}")
    macs = [(f"{p}.{at}.mac", net.mac.upper()) for p, at, net in nic_paths if net.mac is not None]
    for path, mac, first in _duplicates(macs):
        yield Problem(f, path, f"MAC {mac} is already used at {first}")

    bridges = {b.name: b for b in host.bridges}
    gpu_indices = {g.index for g in host.gpus}
    vm_gpus: dict[int, str] = {}
    for path, guest in entries:
        # An adopted container was numbered by someone else: any vmid outside the layers range will do.
        adopted = isinstance(guest, Container) and guest.adopt
        if guest.vmid not in host.vmid_ranges.guests and not adopted:
            r = host.vmid_ranges.guests
            yield Problem(
                f,
                f"{path}.vmid",
                f"{guest.vmid} is outside the guests range {r.start}-{r.end} of {files.host}",
            )
        yield from _check_network(guest, path, bridges, f, files.host)
        for i, feature in enumerate(guest.features):
            if feature not in scripts:
                yield Problem(f, f"{path}.features[{i}]", f"no feature script features/{feature}.sh")
            elif feature in fresh_guest and isinstance(guest, Container) and (guest.adopt or guest.retained):
                # Its change replaces the container, and a replacement of a container Phoenix keeps on
                # destroy (or adopts again) would either collide with the old one's vmid or be the old one.
                kept = "adopt: true" if guest.adopt else "retain_on_delete: true"
                yield Problem(
                    f,
                    f"{path}.features[{i}]",
                    f"{feature} needs a fresh guest when it changes ({FRESH_GUEST}), and Phoenix cannot "
                    f"replace this container ({kept}); run it in a guest Phoenix makes and may destroy",
                )
        yield from _listed_twice(f, f"{path}.features", guest.features, "feature")
        yield from _check_firewall(guest, path, f)
        if isinstance(guest, Vm):
            yield from _listed_twice(f, f"{path}.gpus", guest.gpus, "GPU")
            keys = guest.cloud_init.ssh_authorized_keys
            yield from _listed_twice(f, f"{path}.cloud_init.ssh_authorized_keys", keys, "key")
        for i, gpu in enumerate(guest.gpus):
            if gpu not in gpu_indices:
                yield Problem(
                    f,
                    f"{path}.gpus[{i}]",
                    f"GPU {gpu} is not on the host (host GPUs: {sorted(gpu_indices) or 'none'})",
                )
            elif isinstance(guest, Vm):
                if next(g for g in host.gpus if g.index == gpu).pci is None:
                    yield Problem(f, f"{path}.gpus[{i}]", f"GPU {gpu} has no `pci` address in {files.host}")
                if gpu in vm_gpus:
                    yield Problem(
                        f, f"{path}.gpus[{i}]", f"GPU {gpu} is already passed through to {vm_gpus[gpu]}"
                    )
                vm_gpus[gpu] = path
        yield from _check_ports(guest, path, f)
        if isinstance(guest, Container):
            yield from _check_container(host, chain, guests, guest, path, files)
        elif guest.image not in host.cloud_images:
            yield Problem(f, f"{path}.image", f"{guest.image!r} is not in {files.host} cloud_images")
    for path, guest in entries:
        if isinstance(guest, Container) and any(g in vm_gpus for g in guest.gpus):
            shared = sorted(g for g in guest.gpus if g in vm_gpus)
            yield Problem(
                f,
                f"{path}.gpus",
                f"GPU {shared} is passed through to a VM ({vm_gpus[shared[0]]}); "
                "a passed-through GPU is exclusive",
            )


def _guest_name(guest: Container | Vm) -> str:
    return guest.hostname if isinstance(guest, Container) else guest.name


def _guest_label(guest: Container | Vm) -> str:
    """``CT 201 vllm-qwen``, ``VM 231 docker-vm``: how a person names a guest in a message."""
    return f"{'CT' if isinstance(guest, Container) else 'VM'} {guest.vmid} {_guest_name(guest)}"


def _dependency_cycles(by_vmid: Mapping[int, Container | Vm]) -> list[list[int]]:
    """Each cycle of ``after`` edges once, as the vmids along it (the first repeated at the end)."""
    cycles: list[list[int]] = []
    done: set[int] = set()
    for start in sorted(by_vmid):
        stack: list[tuple[int, list[int]]] = [(start, [start])]
        while stack:
            vmid, trail = stack.pop()
            for dep in by_vmid[vmid].after:
                if dep not in by_vmid or dep == vmid:
                    continue  # reported on its own: an unknown vmid, a guest after itself
                if dep in trail:
                    cycle = trail[trail.index(dep) :] + [dep]
                    if not set(cycle) & done:
                        cycles.append(cycle)
                        done.update(cycle)
                elif dep not in done:
                    stack.append((dep, [*trail, dep]))
        done.add(start)
    return cycles


def dependency_order(guests: Sequence[Container | Vm]) -> list[Container | Vm]:
    """``guests`` with each one after every guest it is ``after`` (stable: file order otherwise).
    The ``after`` graph is acyclic (validated)."""
    by_vmid = {g.vmid: g for g in guests}
    placed: dict[int, Container | Vm] = {}

    def place(guest: Container | Vm) -> None:
        if guest.vmid not in placed:
            for dep in guest.after:
                if dep in by_vmid:
                    place(by_vmid[dep])
            placed[guest.vmid] = guest

    for guest in guests:
        place(guest)
    return list(placed.values())


def start_orders(guests: Guests) -> dict[int, int]:
    """vmid -> the PVE boot ``order`` of each guest that takes part in an ``after`` dependency.

    The rule: a guest's own ``startup.order`` when it gives one; otherwise 0 for a guest that waits for
    none, and one more than the highest order among the guests it is ``after`` (its dependency depth, when
    no order is given anywhere). PVE starts lower orders first at boot, and guests without an order after
    every guest with one, so a guest in no dependency keeps no order. Needs an acyclic ``after`` graph
    (checked by :func:`check_environment` first).
    """
    everyone: list[Container | Vm] = [*guests.containers, *guests.vms]
    by_vmid = {g.vmid: g for g in everyone}
    involved = {g.vmid for g in by_vmid.values() if g.after} | {
        dep for g in by_vmid.values() for dep in g.after
    }
    orders: dict[int, int] = {}

    def order(vmid: int) -> int:
        if vmid not in orders:
            guest = by_vmid[vmid]
            if guest.startup is not None and guest.startup.order is not None:
                orders[vmid] = guest.startup.order
            else:
                orders[vmid] = max((order(dep) + 1 for dep in guest.after), default=0)
        return orders[vmid]

    return {vmid: order(vmid) for vmid in sorted(involved) if vmid in by_vmid}


def with_start_orders(guests: Guests) -> Guests:
    """``guests`` with the derived boot order (:func:`start_orders`) filled into the ``startup`` of each
    guest in a dependency that gives none, so the guest resources and ``phoenix plan`` send it to PVE."""
    orders = start_orders(guests)

    def ordered(guest: G) -> G:
        if guest.vmid not in orders or (guest.startup is not None and guest.startup.order is not None):
            return guest
        delays = guest.startup.model_dump(exclude={"order"}) if guest.startup is not None else {}
        return guest.model_copy(update={"startup": Startup(order=orders[guest.vmid], **delays)})

    return guests.model_copy(
        update={
            "containers": [ordered(c) for c in guests.containers],
            "vms": [ordered(v) for v in guests.vms],
        }
    )


def _check_dependencies(guests: Guests, files: _Files) -> Iterator[Problem]:
    """``after``: every vmid names another guest of this file, no cycle, and a given boot order agrees."""
    f = files.guests
    entries: list[tuple[str, Container | Vm]] = [
        *((f"containers[{i}]", c) for i, c in enumerate(guests.containers)),
        *((f"vms[{i}]", v) for i, v in enumerate(guests.vms)),
    ]
    by_vmid = {g.vmid: g for _, g in entries}
    if len(by_vmid) != len(entries):
        return  # duplicate vmids are reported on their own; `after` would be ambiguous
    broken = False
    for path, guest in entries:
        for i, dep in enumerate(guest.after):
            if dep == guest.vmid:
                broken = True
                yield Problem(f, f"{path}.after[{i}]", "a guest cannot start after itself")
            elif dep not in by_vmid:
                broken = True
                known = ", ".join(str(v) for v in sorted(by_vmid))
                yield Problem(f, f"{path}.after[{i}]", f"no guest with vmid {dep} in {f} (vmids: {known})")
    paths = {g.vmid: p for p, g in entries}
    for cycle in _dependency_cycles(by_vmid):
        broken = True
        trail = " -> ".join(_guest_label(by_vmid[v]) for v in cycle)
        yield Problem(f, f"{paths[cycle[0]]}.after", f"the guests' `after` lists form a cycle: {trail}")
    if broken:
        return
    orders = start_orders(guests)
    for path, guest in entries:
        if guest.startup is None or guest.startup.order is None:
            continue
        for dep in guest.after:
            if orders[dep] >= guest.startup.order:
                # Equal orders would leave the sequence to PVE's tie-break, not to the dependency.
                yield Problem(
                    f,
                    f"{path}.startup.order",
                    f"{_guest_label(guest)} has order {guest.startup.order} but starts after "
                    f"{_guest_label(by_vmid[dep])}, whose order is {orders[dep]}: PVE boots lower orders "
                    "first, so give it a higher order (or none, and Phoenix derives one)",
                )


def _nics(guest: Container | Vm) -> list[tuple[str, Network]]:
    """(JSON key, NIC) of each of the guest's NICs: ``network`` (net0), then ``networks[i]``."""
    return [("network", guest.network), *((f"networks[{i}]", n) for i, n in enumerate(guest.networks))]


def _check_network(
    guest: Container | Vm, path: str, bridges: Mapping[str, Any], f: str, host_file: str
) -> Iterator[Problem]:
    for at, net in _nics(guest):
        yield from _check_nic(net, f"{path}.{at}", bridges, f, host_file)


def _check_nic(
    net: Network, path: str, bridges: Mapping[str, Any], f: str, host_file: str
) -> Iterator[Problem]:
    bridge = bridges.get(net.bridge)
    if bridge is None:
        yield Problem(f, f"{path}.bridge", f"bridge {net.bridge} is not in {host_file} bridges")
        return
    if net.vlan is not None and not bridge.vlan_aware:
        yield Problem(f, f"{path}.vlan", f"bridge {net.bridge} is not vlan_aware in {host_file}")
    if net.address is not None:
        interface = ipaddress.IPv4Interface(net.ip)
        subnet = ipaddress.IPv4Network(bridge.cidr)
        if net.vlan is None and interface.network != subnet:
            yield Problem(f, f"{path}.ip", f"{net.ip} is not in {net.bridge}'s subnet {bridge.cidr}")
        if bridge.gateway is not None and net.address == bridge.gateway:
            yield Problem(f, f"{path}.ip", f"{net.address} is the gateway of {net.bridge}")


def _check_firewall(guest: Container | Vm, path: str, f: str) -> Iterator[Problem]:
    """Rules that PVE would store and never apply are refused rather than silently doing nothing; a
    service port (``ports[]``) is such a rule too: it opens that port inbound."""
    fw = guest.firewall
    if fw.rules:
        where, what = f"{path}.firewall.rules", f"{len(fw.rules)} rule(s)"
        remove, has = "the rules", "firewall rules"
    elif guest.ports:
        where, what = f"{path}.ports", f"{len(guest.ports)} port(s), each an inbound ACCEPT rule,"
        remove, has = "the ports", "ports to open"
    else:
        return
    if not fw.enabled:
        yield Problem(
            f,
            where,
            f"{what} with firewall.enabled false are never applied; enable the firewall or remove {remove}",
        )
    elif not guest.network.firewall:
        yield Problem(
            f,
            f"{path}.network.firewall",
            f"the guest has {has} but its NIC has no firewall flag, so PVE applies none of them; "
            "set network.firewall true",
        )


def _check_ports(guest: Container | Vm, path: str, f: str) -> Iterator[Problem]:
    listening = [(f"{path}.ports[{i}].port", f"{p.port}/{p.proto}") for i, p in enumerate(guest.ports)]
    engine = guest.engine() if isinstance(guest, Container) else None
    if engine is not None:
        key, config = engine
        where = f"{path}.vllm.server.port" if key == "vllm" else f"{path}.{key}.port"
        listening.insert(0, (where, f"{config.listen_port}/tcp"))
    for where, port, first in _duplicates(listening):
        yield Problem(f, where, f"port {port} clashes with {first}")
    for where, name, first in _duplicates(
        [(f"{path}.ports[{i}].name", p.name) for i, p in enumerate(guest.ports)]
    ):
        yield Problem(f, where, f"port name {name} is already used at {first}")


def _check_container(
    host: Host, chain: Chain, guests: Guests, ct: Container, path: str, files: _Files
) -> Iterator[Problem]:
    f = files.guests
    if ct.layer is None and not ct.adopt:  # only an adopted guest may come from no Phoenix layer
        yield Problem(f, f"{path}.layer", "required: the layer it is cloned from (or adopt: true)")
    if ct.layer is not None and ct.layer not in chain.layers:
        yield Problem(f, f"{path}.layer", f"no layer named {ct.layer!r} in {files.chain}")
    served = ct.engine()
    if ct.layer is None and ct.adopt and served is not None:  # any model server: its layer installs it
        yield Problem(
            f,
            f"{path}.{served[0]}",
            f"an adopted guest without a layer has no {served[1].TITLE} from Phoenix; name its layer",
        )
    if ct.adopt and ct.vmid in host.vmid_ranges.layers:
        r = host.vmid_ranges.layers
        yield Problem(
            f, f"{path}.vmid", f"{ct.vmid} is in the layers range {r.start}-{r.end}: layers are not adopted"
        )
    profile = ct.apparmor_profile
    if profile == UNCONFINED:
        if ct.insecure.unconfined_apparmor is None:
            yield Problem(
                f,
                f"{path}.apparmor_profile",
                '`unconfined` needs the explicit opt-out insecure.unconfined_apparmor: "<reason>"',
            )
    elif profile in ESCAPABLE_PROFILES and ct.insecure.unconfined_apparmor is None:
        yield Problem(
            f,
            f"{path}.apparmor_profile",
            f"{profile!r} lets a process in the container change to `unconfined`; use Phoenix's "
            '`phoenix-lxc-nesting`, or opt out with insecure.unconfined_apparmor: "<reason>"',
        )
    elif profile not in PVE_BUILTIN_PROFILES and profile not in host.apparmor_profiles:
        yield Problem(
            f,
            f"{path}.apparmor_profile",
            f"profile {profile!r} is neither PVE's own nor loaded by {files.host} apparmor_profiles",
        )
    if ct.gpus and host.nvidia is None:
        yield Problem(f, f"{path}.gpus", f"GPUs need the host driver: `nvidia` in {files.host}")
    elif ct.gpus and host.nvidia is not None and not host.nvidia.manage:
        yield from _undeclared_minors(host, ct.gpus, f"{path}.gpus", f, files.host)
    if ct.layer in chain.layers:
        lineage = _inherited_features(chain.layers, ct.layer)
        engine = ct.engine()
        if engine is not None and engine[1].FEATURE not in lineage:
            key, config = engine
            yield Problem(
                f,
                f"{path}.{key}",
                f"layer {ct.layer} does not install {config.TITLE} (its chain runs {', '.join(lineage)}); "
                f"use a layer with the {config.FEATURE} feature",
            )
        layer_disk = chain.layers[ct.layer].build.disk_gib
        if ct.disk_gib is not None and ct.disk_gib < layer_disk:
            yield Problem(
                f,
                f"{path}.disk_gib",
                f"{ct.disk_gib} GiB is smaller than layer {ct.layer}'s {layer_disk} GiB: the clone starts at "
                "the layer's size and PVE cannot shrink a disk",
            )
    if ct.vllm is not None:
        extra = [
            (f"{path}.vllm.extra_args[{i}]", a.partition("=")[0]) for i, a in enumerate(ct.vllm.extra_args)
        ]
        for where, flag, first in _duplicates([(w, a) for w, a in extra if a.startswith("-")]):
            yield Problem(f, where, f"{flag} is already given at {first}")
        tp = ct.vllm.parallel.tensor_parallel_size
        if not ct.gpus:
            yield Problem(f, f"{path}.vllm", "vLLM needs at least one GPU in gpus")
        elif tp > len(ct.gpus):
            yield Problem(
                f,
                f"{path}.vllm.parallel.tensor_parallel_size",
                f"{tp} is more than the {len(ct.gpus)} GPU(s) assigned in gpus",
            )
    yield from _check_engine_budget(ct, path, f)
    mount_paths = [(f"{path}.mounts[{i}].path", _canonical(m.path)) for i, m in enumerate(ct.mounts)]
    for where, mount_path, first in _duplicates(mount_paths):
        yield Problem(f, where, f"{mount_path} is already mounted at {first}")
    for i, mount in enumerate(ct.mounts):
        at = f"{path}.mounts[{i}]"
        if _canonical(mount.path) == "/":
            yield Problem(f, f"{at}.path", "cannot mount over the root filesystem")
        for field_name, value in (("path", mount.path), ("host_path", getattr(mount, "host_path", None))):
            if value is not None and not _dot_free(value):
                yield Problem(
                    f,
                    f"{at}.{field_name}",
                    f"{value} has a `.` or `..` component, which PVE refuses in a mount path: "
                    "it would mean another directory than it says",
                )
        if (
            isinstance(mount, BindMount)
            and not mount.read_only
            and _dot_free(mount.host_path)
            and _host_system_path(mount.host_path)
            and ct.insecure.writable_host_system_mount is None
        ):
            yield Problem(
                f,
                f"{at}.read_only",
                f"a read-write bind mount of the host's {mount.host_path} lets the guest change the host; "
                'mount it read_only, or give insecure.writable_host_system_mount: "<reason>"',
            )
        if isinstance(mount, DatasetCloneMount) and mount.dataset not in guests.datasets:
            yield Problem(
                f, f"{path}.mounts[{i}].dataset", f"no dataset {mount.dataset!r} in guests.datasets"
            )
    if not host.api.root_login:
        suffix = f"PVE allows this only to {ROOT_USER}, not to {host.api.login}; use auth 'password'"
        for at, what in ct.root_only_settings():
            yield Problem(f, f"{path}.{at}", f"{what}: {suffix}")


# Host directories a guest must not write to without an explicit, reasoned opt-out: the system itself,
# PVE's cluster filesystem and state, and the kernel's interfaces.
HOST_SYSTEM_PATHS = (
    "/etc",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
    "/boot",
    "/root",
    "/dev",
    "/proc",
    "/sys",
    "/run",
    "/var/lib",
    "/var/log",
)


def _dot_free(path: str) -> bool:
    """No ``.`` or ``..`` component: pve-container refuses those in mount paths (they would mean another
    directory than the one written)."""
    return all(part not in (".", "..") for part in path.split("/"))


def _canonical(path: str) -> str:
    """``//etc/pve/`` -> ``/etc/pve``: what the kernel resolves, for comparisons (PVE takes either)."""
    return "/" + "/".join(part for part in path.split("/") if part)


def _host_system_path(path: str) -> bool:
    path = _canonical(path)
    return path == "/" or any(path == p or path.startswith(p + "/") for p in HOST_SYSTEM_PATHS)


def _check_engine_budget(ct: Container, path: str, f: str) -> Iterator[Problem]:
    """An ollama or llama.cpp server on GPUs declares the MiB it may use there (vLLM's is its
    ``gpu_memory_utilization``); a budget without a GPU would count against nothing."""
    engine = ct.engine()
    if engine is None or engine[0] == "vllm":
        return
    key, config = engine
    budget = getattr(config, "gpu_memory_mib", None)
    if ct.gpus and budget is None:
        yield Problem(
            f,
            f"{path}.{key}.gpu_memory_mib",
            f"{config.TITLE} on GPU(s) {', '.join(map(str, ct.gpus))} needs gpu_memory_mib: the MiB it may "
            "use on each, counted with every other engine there against host gpus[].memory_mib",
        )
    elif budget is not None and not ct.gpus:
        yield Problem(f, f"{path}.{key}.gpu_memory_mib", "a GPU memory budget without gpus: give the GPUs")


@dataclass(frozen=True)
class GpuShare:
    """One engine's budget on one GPU (:func:`gpu_accounting`)."""

    guest: str  # "containers[0]"
    at: str  # the config path of its budget, under the guest
    engine: str  # "vllm"
    mib: float
    given: str  # as the config says it, in MiB: "0.9 = 44226 MiB" (of the GPU) or "4096 MiB"


def gpu_accounting(host: Host, guests: Guests) -> dict[int, list[GpuShare]]:
    """Every model server's GPU memory budget, per GPU: vLLM's ``gpu_memory_utilization`` x the GPU's
    memory_mib, ollama's and llama.cpp's ``gpu_memory_mib``. Validation and ``phoenix plan`` read this."""
    memory = {g.index: g.memory_mib for g in host.gpus}
    users: dict[int, list[GpuShare]] = defaultdict(list)
    for i, ct in enumerate(guests.containers):
        engine = ct.engine()
        if engine is None:
            continue
        key, config = engine
        for gpu in ct.gpus:
            mib = config.gpu_budget_mib(memory.get(gpu, 0))
            if mib is None:
                continue
            if isinstance(config, VllmEngine):
                at = "vllm.cache.gpu_memory_utilization"
                given = f"{config.cache.gpu_memory_utilization:g} = {mib:.0f} MiB"
            else:
                at, given = f"{key}.gpu_memory_mib", f"{mib:g} MiB"
            users[gpu].append(GpuShare(f"containers[{i}]", at, key, mib, given))
    return dict(sorted(users.items()))


def _check_gpu_sharing(host: Host, guests: Guests, files: _Files) -> Iterator[Problem]:
    """The engines' budgets on each GPU, summed, must fit its memory (host.json gpus[].memory_mib)."""
    memory = {g.index: g.memory_mib for g in host.gpus}
    for gpu, shares in gpu_accounting(host, guests).items():
        total = sum(share.mib for share in shares)
        if gpu in memory and total > memory[gpu] + 1e-6:
            detail = ", ".join(f"{s.guest} {s.engine} {s.given}" for s in shares)
            last = shares[-1]
            yield Problem(
                files.guests,
                f"{last.guest}.{last.at}",
                f"GPU {gpu} is oversubscribed: {total:.0f} MiB > its {memory[gpu]} MiB ({detail})",
            )


def concurrent_builds(chain: Chain, size: Callable[[Layer], int]) -> int:
    """The most ``size`` the layer builds can hold at one moment.

    A layer builds once its parent is a template, in a build container that becomes the template (it runs
    no more); the engine builds every layer whose parent is done at once. So the builds that can overlap
    are layers none of which is another's ancestor, and the worst moment is the heaviest such set: for a
    layer, the larger of its own build and the worst of its children's subtrees together. (A chain that
    is one line of layers, like the shipped one, builds one layer at a time.)
    """
    children: dict[str | None, list[str]] = defaultdict(list)
    for name, layer in chain.layers.items():
        children[layer.parent if layer.parent in chain.layers else None].append(name)

    def worst(name: str) -> int:
        return max(size(chain.layers[name]), sum(worst(child) for child in children[name]))

    return sum(worst(root) for root in children[None])


def _check_capacity(host: Host, chain: Chain, guests: Guests, files: _Files) -> Iterator[Problem]:
    """The guests' memory, cores and storage summed against ``capacity`` × ``overcommit`` (host.json).

    Every guest counts, running or not (a stopped one starts at the next boot), plus the layer builds that
    can run at the same time (:func:`concurrent_builds`): a changed layer is rebuilt while the guests run.
    Storage counts each container's rootfs (its own size, else its layer's), its volumes and each VM's
    disk at their declared size; a linked clone shares its layer's blocks, so this is the most the guests
    may write, not what they use on the day.
    """
    if host.capacity is None or _cycles(chain.layers):
        return  # nothing to check against; a cyclic chain is reported on its own
    cap, ratio = host.capacity, host.overcommit
    everyone: list[Container | Vm] = [*guests.containers, *guests.vms]

    def disk(guest: Container | Vm) -> int:
        if isinstance(guest, Vm):
            return guest.disk_gib
        layer = chain.layers.get(guest.layer) if guest.layer is not None else None
        own = guest.disk_gib or (layer.build.disk_gib if layer is not None else 0)
        return own + sum(m.size_gib for m in guest.mounts if isinstance(m, VolumeMount))

    Check = tuple[str, str, int, float, Callable[[Container | Vm], int], Callable[[Layer], int]]
    checks: list[Check] = [
        ("memory", "MiB of memory", cap.memory_mib, ratio.memory, lambda g: g.memory_mib, _build_memory),
        ("cores", "cores", cap.cores, ratio.cores, lambda g: g.cores, lambda layer: layer.build.cores),
    ]
    if cap.storage_gib is not None:
        checks.append(("storage", "GiB of storage", cap.storage_gib, 1.0, disk, _build_disk))
    for what, unit, have, allowed, size, build in checks:
        own = sum(size(g) for g in everyone)
        builds = concurrent_builds(chain, build)
        limit = have * allowed
        if own + builds <= limit:
            continue
        biggest = sorted(everyone, key=lambda g: (-size(g), g.vmid))[:3]
        named = ", ".join(f"{_guest_label(g)} {size(g)}" for g in biggest)
        key = {"memory": "memory_mib", "cores": "cores", "storage": "storage_gib"}[what]
        over = f" × overcommit.{what} {allowed:g} = {limit:g}" if what != "storage" else ""
        yield Problem(
            files.host,
            f"capacity.{key}",
            f"the guests and layer builds ask {own + builds} {unit} ({own} for {len(everyone)} guests, "
            f"{builds} for the layer builds that can run at once), more than {have}{over}; "
            f"the biggest guests: {named}",
        )


def _build_memory(layer: Layer) -> int:
    return layer.build.memory_mib


def _build_disk(layer: Layer) -> int:
    return layer.build.disk_gib
