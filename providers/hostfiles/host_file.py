"""HostFile: a file Phoenix owns on the Proxmox host (a VM's cloud-init snippet), written over pinned SSH.

Why not pulumi-proxmoxve's ``FileLegacy``: it uploads snippets through that provider's own SSH client,
which knows nothing of Phoenix's pinned host key. Through the executor here the upload is as trusted as
every other host command: atomic (temp file + rename, so PVE never reads half a snippet), one session.

``read`` compares the file's sha256 with the declared content (an edit by hand is drift; a deleted file
is gone); ``delete`` removes the file from the stored path alone.
"""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import asdict, dataclass
from typing import Any

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, ReadResult, UpdateResult

from providers.base import DynamicResource, HostProvider, as_int, diff_inputs, require, with_defaults
from providers.channels.command import write_file_argv
from providers.channels.targets import SshTarget

PROVIDER_VERSION = "1"
MISSING = "missing"


@dataclass(frozen=True)
class HostFileInputs:
    path: str
    content: str
    mode: int = 0o640
    version: str = PROVIDER_VERSION

    @classmethod
    def from_props(cls, props: dict[str, Any]) -> HostFileInputs:
        values = {k: props[k] for k in cls.__dataclass_fields__ if k in props}
        if "mode" in values:
            values["mode"] = as_int(values["mode"])
        return cls(**values)


def sha256(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()


def read_argv(path: str) -> list[str]:
    """One session: the file's sha256, or ``missing``."""
    return ["sh", "-c", 'if [ -f "$1" ]; then sha256sum "$1"; else echo missing; fi', "phoenix-read", path]


def parse_read(stdout: str) -> str:
    return stdout.split()[0] if stdout.strip() else MISSING


def path_problem(path: object) -> str | None:
    if not isinstance(path, str) or not path.startswith("/") or posixpath.normpath(path) != path:
        return "an absolute, normalised path (no `..`, no trailing /)"
    return None


@dataclass
class HostFileProvider(HostProvider):
    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = require(news, ["path", "content"])
        problem = path_problem(news.get("path")) if "path" in news else None
        if problem is not None and isinstance(news.get("path"), str):
            failures.append(CheckFailure("path", problem))
        return CheckResult(with_defaults(news, HostFileInputs), failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return diff_inputs(olds, news, replace_on=["path"], update_on=["content", "mode"])

    def _write(self, inputs: HostFileInputs) -> dict[str, Any]:
        self.ssh().run(write_file_argv(inputs.path, inputs.mode), stdin=inputs.content)
        return {**asdict(inputs), "sha256": sha256(inputs.content)}

    def create(self, props: dict[str, Any]) -> CreateResult:
        inputs = HostFileInputs.from_props(props)
        return CreateResult(inputs.path, self._write(inputs))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(self._write(HostFileInputs.from_props(news)))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        inputs = HostFileInputs.from_props(props)
        found = parse_read(self.ssh().run(read_argv(inputs.path)).stdout)
        if found == MISSING:
            return ReadResult(None, {})
        content = (
            inputs.content if found == sha256(inputs.content) else f"# changed on the host (sha256 {found})\n"
        )
        return ReadResult(id_, {**props, "content": content, "sha256": found})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        self.ssh().run(["rm", "-f", "--", HostFileInputs.from_props(props).path])


class HostFile(DynamicResource, module="phoenix", name="HostFile"):
    """A file on the host. Token ``pulumi-python:dynamic/phoenix:HostFile``."""

    path: pulumi.Output[str]
    sha256: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        inputs: dict[str, Any],
        ssh_target: SshTarget,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        provider = HostFileProvider(ssh_target=ssh_target)
        super().__init__(provider, name, {**inputs, "version": PROVIDER_VERSION, "sha256": None}, opts)
