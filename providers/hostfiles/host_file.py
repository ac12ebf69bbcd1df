"""HostFile: a file Phoenix owns on the Proxmox host (a VM's cloud-init snippet), written over pinned SSH.

Why not pulumi-proxmoxve's ``FileLegacy``: it uploads snippets through that provider's own SSH client,
which knows nothing of Phoenix's pinned host key. Through the executor here the upload is as trusted as
every other host command: atomic (temp file + rename, so PVE never reads half a snippet), one session.

Lifecycle (one SSH session per operation):

- **identity** is ``path``: a new path replaces (the new file is written, then the old one removed);
  new ``content`` or ``mode`` rewrites the file in place;
- **create/update**: :func:`write_argv`, the content on stdin;
- **read** (refresh): the file's sha256 against the declared content: an edit by hand is drift (the
  content shows as changed and the next ``up`` writes it back), a deleted file is gone;
- **delete**: ``rm -f`` of the stored path alone.

Token ``pulumi-python:dynamic/phoenix:HostFile``.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import CheckFailure, ReadResult

from providers.base import (
    VERSION_KEY,
    ConvergingProvider,
    DynamicResource,
    Inputs,
    Options,
    is_unknown,
    stored,
)
from providers.channels.command import sh_argv, sha256_text, write_file_argv
from providers.channels.steps import HostCommand
from providers.channels.targets import SshTarget

PROVIDER_VERSION = "1"
MISSING = "missing"

# --- 1. inputs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostFileInputs(Inputs):
    path: str
    """Absolute path on the host (identity)."""
    content: str
    mode: int = 0o640
    version: str = PROVIDER_VERSION


# --- 2. pure logic -------------------------------------------------------------------------------------


def path_problem(path: object) -> str | None:
    if not isinstance(path, str) or not path.startswith("/") or posixpath.normpath(path) != path:
        return "an absolute, normalised path (no `..`, no trailing /)"
    return None


def write_argv(inputs: HostFileInputs) -> list[str]:
    """The atomic write of the file (its content goes on stdin)."""
    return write_file_argv(inputs.path, inputs.mode)


def create_steps(inputs: HostFileInputs) -> list[HostCommand]:
    """Create and update alike: the one atomic write, the content on stdin. ``phoenix plan`` renders
    it; ``converge`` runs it."""
    label = f"{len(inputs.content)} bytes (sha256 {sha256_text(inputs.content)[:12]})"
    return [HostCommand(f"writing {inputs.path}", write_argv(inputs), inputs.content, label)]


def read_argv(path: str) -> list[str]:
    """One session: the file's sha256, or ``missing``."""
    return sh_argv('if [ -f "$1" ]; then sha256sum "$1"; else echo missing; fi', "phoenix-read", path)


def parse_read(stdout: str) -> str:
    return stdout.split()[0] if stdout.strip() else MISSING


def delete_argv(path: str) -> list[str]:
    return ["rm", "-f", "--", path]


def outputs(inputs: HostFileInputs) -> dict[str, Any]:
    """Every output once the file holds ``inputs.content``."""
    return {**inputs.to_props(), "sha256": sha256_text(inputs.content)}


def observed(props: Mapping[str, Any], found: str) -> dict[str, Any] | None:
    """The stored outputs as the host has the file now (``found``: its sha256 or ``missing``); None if gone.

    A file edited on the host keeps its hash, and its content shows as changed, so the next ``up``
    writes the declared content back.
    """
    if found == MISSING:
        return None
    inputs = HostFileInputs.from_props(props)
    same = found == sha256_text(inputs.content)
    content = inputs.content if same else f"# changed on the host (sha256 {found})\n"
    return {**stored(props), "content": content, "sha256": found}


# --- 3. the provider -----------------------------------------------------------------------------------


@dataclass
class HostFileProvider(ConvergingProvider):
    inputs_type = HostFileInputs
    required = ("path", "content")
    replace_on = ("path",)
    update_on = ("content", "mode")

    def validate(self, news: Mapping[str, Any]) -> list[CheckFailure]:
        path = news.get("path")
        problem = path_problem(path) if path is not None and not is_unknown(path) else None
        return [CheckFailure("path", problem)] if problem else []

    def resource_id(self, inputs: HostFileInputs) -> str:
        return inputs.path

    def converge(self, inputs: HostFileInputs) -> dict[str, Any]:
        ssh = self.ssh()
        for step in create_steps(inputs):
            ssh.run(step.argv, stdin=step.stdin)
        return outputs(inputs)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        path = HostFileInputs.from_props(props).path
        found = self.ssh().run(read_argv(path)).stdout
        outs = observed(props, parse_read(found))
        return ReadResult(id_ if outs is not None else None, outs or {})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        self.ssh().run(delete_argv(HostFileInputs.from_props(props).path))


# --- 4. the resource -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostFileArgs:
    path: pulumi.Input[str]
    """Absolute path on the host, e.g. ``/var/lib/vz/snippets/phoenix-231-user-data.yaml``."""
    content: pulumi.Input[str]
    mode: pulumi.Input[int] = 0o640


class HostFile(DynamicResource, module="phoenix", name="HostFile"):
    """A file on the host (see the module docstring)."""

    path: pulumi.Output[str]
    content: pulumi.Output[str]
    """The declared content, or a line naming the host's sha256 when the file was edited there."""
    sha256: pulumi.Output[str]
    """The file's sha256 as ``sha256sum`` reads it on the host."""

    def __init__(self, name: str, args: HostFileArgs, *, ssh_target: SshTarget, opts: Options = None) -> None:
        props = {**vars(args), VERSION_KEY: PROVIDER_VERSION}
        self._register(HostFileProvider(ssh_target=ssh_target), name, props, opts)
