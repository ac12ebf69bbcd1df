"""cloud-init user-data that runs feature scripts: the one renderer for VMs (render/vm.py) and EC2
(render/cloud.py).

The document writes each feature script and a runner, and runs the runner once at first boot. The
runner runs each feature in order with its own environment and stops at the first failure
(cloud-init's ``runcmd`` would run every entry even after one failed, hence one runner with ``set -e``).

Everything is built as data: each runner line is an argv list quoted once (``shlex.join``), so a value —
a runfile URL with ``;cmd;#`` in it, say — stays one argument of ``env`` and can never become a command
or a comment; the document is serialised by a ``yaml.SafeDumper``, so a value can only ever be a YAML
scalar and an SSH key with a line break in it cannot add a key, a user or a ``sudo`` rule.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import yaml

from phoenix_components.render.errors import UserDataError

HEADER = "#cloud-config\n"


@dataclass(frozen=True)
class WriteFile:
    """One ``write_files`` entry."""

    path: str
    content: str
    permissions: str = "0644"


def runner(
    features: Sequence[str],
    variables: Mapping[str, Mapping[str, str]],
    features_dir: str,
    then: Sequence[Sequence[str]] = (),
) -> str:
    """The first-boot script: ``env <variables> bash <features_dir>/<feature>.sh`` per feature, in order,
    then the ``then`` commands; the first failure stops it."""
    lines = [
        "#!/usr/bin/env bash",
        "# Phoenix: the feature scripts, in order, each with its own environment, as `pct exec` runs them.",
        "set -euo pipefail",
    ]
    for feature in features:
        assignments = [f"{k}={v}" for k, v in variables[feature].items()]
        lines.append(shlex.join(["env", *assignments, "bash", f"{features_dir}/{feature}.sh"]))
    lines += [shlex.join(argv) for argv in then]
    return "\n".join(lines) + "\n"


class _Dumper(yaml.SafeDumper):
    """``yaml.safe_dump``'s dumper, with multi-line strings as literal blocks so the scripts read on the
    host or in the console as they are in the repo. PyYAML falls back to a quoted scalar wherever a block
    cannot carry the text exactly (trailing spaces, control characters), so every value round-trips."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def cloud_config(
    *,
    features: Sequence[str],
    scripts: Mapping[str, str],
    variables: Mapping[str, Mapping[str, str]],
    features_dir: str,
    runner_path: str,
    then: Sequence[Sequence[str]] = (),
    files: Sequence[WriteFile] = (),
    users: Sequence[object] | None = None,
    comment: str = "",
) -> str:
    """``#cloud-config`` that writes ``features``' scripts (0755) under ``features_dir``, the runner at
    ``runner_path`` and ``files``, and runs the runner once; there is no runner when there is nothing to
    run. ``users`` becomes cloud-init's ``users`` list; ``comment`` is one line after the header."""
    if "\n" in comment or "\r" in comment:
        raise UserDataError(f"a cloud-init comment is one line, not {comment!r}")
    written = [WriteFile(f"{features_dir}/{f}.sh", scripts[f], "0755") for f in features]
    document: dict[str, object] = {}
    run = bool(features or then)
    if run:
        written.append(WriteFile(runner_path, runner(features, variables, features_dir, then), "0755"))
    written += files
    if written:
        document["write_files"] = [
            {"path": f.path, "permissions": f.permissions, "content": f.content} for f in written
        ]
    if run:
        document["runcmd"] = [["bash", runner_path]]
    if users is not None:
        document["users"] = list(users)
    header = HEADER + (f"# {comment}\n" if comment else "")
    return header + yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=1000)
