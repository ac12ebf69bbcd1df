"""`phoenix import --from-bash DIR --environment NAME`: the bash Phoenix's etc/ files as an environment.

Reads the four JSON files (``DIR`` is the ``etc/`` directory or the ``phoenix_hypervisor`` directory above
it), converts them with :func:`phoenix_components.config.bash_import.convert`, prints the report (every
input field carried, changed or dropped, and why) and the findings, writes ``host.json`` and
``guests.json`` under ``config/environments/NAME`` (or ``--out``), and loads the written environment with
Phoenix's own loader, exactly as ``phoenix validate`` does. ``--report FILE`` writes the report as JSON.

Exit 2: the input is not the bash format (a file missing, bad JSON), the environment exists (without
``--force``), or a finding needs the user's decision first (then nothing is written).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from phoenix_components.config.bash_import import (
    FILES,
    SHAPES,
    Conversion,
    Entry,
    Facts,
    Reference,
    convert,
)
from phoenix_components.config.errors import ConfigError
from phoenix_components.config.features import fresh_guest_scripts
from phoenix_components.config.load import (
    APPARMOR_DIR,
    CHAIN_FILE,
    ENVIRONMENTS_DIR,
    FEATURES_DIR,
    GUESTS_FILE,
    HOST_FILE,
    environment_names,
    load_environment,
    parse_json,
)
from phoenix_components.config.models import Chain

EXIT_INVALID = 2
ENV_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def bash_etc(directory: Path) -> Path:
    """``DIR`` itself, or ``DIR/etc`` when that holds the bash files (DIR is the phoenix_hypervisor root)."""
    nested = directory / "etc"
    return nested if (nested / FILES[1]).is_file() and not (directory / FILES[1]).is_file() else directory


def read_bash(etc: Path) -> dict[str, Any]:
    """The four parsed documents, or :class:`ConfigError` naming each file missing or not in the format."""
    docs: dict[str, Any] = {}
    problems: list[str] = []
    for name in FILES:
        path = etc / name
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            problems.append(f"{path}: $: file not found (is {etc} the bash Phoenix's etc/ directory?)")
            continue
        except OSError as exc:
            problems.append(f"{path}: $: cannot be read: {exc.strerror}")
            continue
        data, json_problems = parse_json(raw)
        if json_problems:
            problems += [f"{path}: {where}: {message}" for where, message in json_problems]
            continue
        key, kind = SHAPES[name]
        if not isinstance(data, dict):
            problems.append(f"{path}: $: not the bash format: the file is not a JSON object")
        elif not isinstance(data.get(key), kind):
            what = "an object" if kind is dict else "a list"
            problems.append(f"{path}: {key}: not the bash format: {key!r} must be {what}")
        else:
            docs[name] = data
    if problems:
        raise ConfigError(problems)
    return docs


def _raw(path: Path) -> Any:
    data, problems = parse_json(path.read_bytes())
    return None if problems else data


def reference(config: Path) -> Reference:
    """What the Phoenix config offers the import: the shared chain, the feature scripts and profiles, and
    from the existing environments the OS templates, a cloud image and the runfile checksums they pin."""
    chain_path = config / CHAIN_FILE
    try:
        chain = Chain.model_validate(_raw(chain_path))
    except (OSError, ValidationError) as exc:
        raise ConfigError(
            [f"{chain_path}: $: the chain the import maps templates onto is not valid ({exc})"]
        ) from None
    features = config / FEATURES_DIR
    texts = {p.stem: p.read_text() for p in features.glob("*.sh")} if features.is_dir() else {}
    scripts = frozenset(texts)
    apparmor = config / APPARMOR_DIR
    profiles = (
        frozenset(p.name for p in apparmor.iterdir() if p.is_file()) if apparmor.is_dir() else frozenset()
    )
    templates: dict[str, tuple[dict[str, Any], str]] = {}
    image: tuple[str, dict[str, Any], str] | None = None
    checksums: dict[str, tuple[str, str]] = {}
    for name in environment_names(config):
        source = f"{ENVIRONMENTS_DIR}/{name}/{HOST_FILE}"
        host = _raw(config / source)
        if not isinstance(host, dict):
            continue
        for key, template in (host.get("os_templates") or {}).items():
            templates.setdefault(key, (template, source))
        for key, cloud in (host.get("cloud_images") or {}).items():
            image = image or (key, cloud, source)
        nvidia = host.get("nvidia")
        if isinstance(nvidia, dict) and isinstance(nvidia.get("sha256"), str):
            checksums.setdefault(str(nvidia.get("runfile_url")), (nvidia["sha256"], source))
    return Reference(chain, scripts, fresh_guest_scripts(texts), profiles, templates, image, checksums)


def _schema_ref(out: Path, config: Path, name: str) -> str:
    return Path(os.path.relpath(config / "schema" / name, out)).as_posix()


def _write(out: Path, config: Path, conversion: Conversion) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for file, doc, schema in (
        (HOST_FILE, conversion.host, "host.schema.json"),
        (GUESTS_FILE, conversion.guests, "guests.schema.json"),
    ):
        body = {
            "$schema": _schema_ref(out, config, schema),
            **{k: v for k, v in doc.items() if k != "$schema"},
        }
        (out / file).write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n")


def _load_written(out: Path, config: Path, name: str) -> None:
    """Phoenix's own loader on what was written; outside config/environments it reads the same chain,
    features and profiles through a staging directory of links."""
    if out.resolve() == (config / ENVIRONMENTS_DIR / name).resolve():
        load_environment(config, name)
        return
    with tempfile.TemporaryDirectory(prefix="phoenix-import-") as tmp:
        stage = Path(tmp) / "config"
        (stage / ENVIRONMENTS_DIR).mkdir(parents=True)
        (stage / CHAIN_FILE).symlink_to((config / CHAIN_FILE).resolve())
        (stage / FEATURES_DIR).symlink_to((config / FEATURES_DIR).resolve())
        if (config / APPARMOR_DIR).is_dir():
            (Path(tmp) / "apparmor").symlink_to((config / APPARMOR_DIR).resolve())
        (stage / ENVIRONMENTS_DIR / name).symlink_to(out.resolve())
        load_environment(stage, name)


def render_report(conversion: Conversion, source: Path) -> str:
    counts = conversion.counts()
    lines = [
        f"Report: {len(conversion.entries)} fields of {source}: {counts['carried']} carried, "
        f"{counts['changed']} changed, {counts['dropped']} dropped",
    ]
    current = ""
    # Consecutive fields of one file with the same fate are one line: every path is still named.
    groups: list[list[Entry]] = []
    for entry in conversion.entries:
        fate = (entry.file, entry.disposition, entry.target, entry.reason)
        last = groups[-1][-1] if groups else None
        if last is not None and (last.file, last.disposition, last.target, last.reason) == fate:
            groups[-1].append(entry)
        else:
            groups.append([entry])
    for group in groups:
        first = group[0]
        if first.file != current:
            current = first.file
            lines += ["", current]
        paths = ", ".join(e.path for e in group)
        to = f" -> {first.target}" if first.target else ""
        why = f": {first.reason}" if first.reason else ""
        lines.append(f"  {first.disposition:8} {paths}{to}{why}")
    lines += [
        "",
        f"Findings ({len(conversion.findings)}): mistakes of the original, and what the importer did",
    ]
    lines += [f"  {finding}" for finding in conversion.findings] or ["  none"]
    return "\n".join(lines) + "\n"


def import_from_bash(args: argparse.Namespace) -> int:
    name = args.environment
    if name is None or not ENV_NAME.fullmatch(name):
        print(
            "phoenix import: --environment NAME is needed with --from-bash: lower-case letters, digits, "
            "`_` and `-`",
            file=sys.stderr,
        )
        return EXIT_INVALID
    config: Path = args.config
    out: Path = args.out or config / ENVIRONMENTS_DIR / name
    if out.exists() and any(out.iterdir()) and not args.force:
        print(f"phoenix import: {out} exists; pass --force to overwrite it", file=sys.stderr)
        return EXIT_INVALID
    etc = bash_etc(args.from_bash)
    docs = read_bash(etc)
    facts = Facts(args.node, args.ssh_host_key, args.nvidia_sha256, args.gpu_memory_mib)
    conversion = convert(docs, facts, reference(config))
    print(render_report(conversion, etc), end="")
    if args.report is not None:
        args.report.write_text(
            json.dumps(
                {
                    "source": str(etc),
                    "environment": name,
                    "written": not conversion.blocked,
                    "counts": conversion.counts(),
                    "entries": [asdict(e) for e in conversion.entries],
                    "findings": [asdict(f) for f in conversion.findings],
                },
                indent=2,
            )
            + "\n"
        )
    if conversion.blocked:
        print(
            f"\nNothing written: the findings marked above need a decision first "
            f"({', '.join(f.kind for f in conversion.findings if f.blocking)})",
            file=sys.stderr,
        )
        return EXIT_INVALID
    _write(out, config, conversion)
    _load_written(out, config, name)
    guests = conversion.guests
    print(
        f"\nwrote {out}/{HOST_FILE} and {GUESTS_FILE}: {len(guests['containers'])} containers, "
        f"{len(guests['vms'])} VMs; `phoenix validate --env {name}`: ok\n"
        f"Next: review the findings, then add Pulumi.<stack>.yaml with `phoenix:environment: {name}`."
    )
    return 0
