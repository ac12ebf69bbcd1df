"""A file-backed dynamic provider that exists only to prove the test machinery (never shipped).

Resource ``pulumi-python:dynamic/example:Note``: the file ``<root>/<filename>`` holding a JSON document.

- Identity: ``root`` and ``filename``. A change replaces the note, create-before-delete, or
  delete-before-create when ``exclusive`` is set (as a fixed CTID would need).
- ``body``, ``token`` (a secret input), ``version`` and ``fail_on`` change in place (update).
- ``fail_on`` = ``"create"`` / ``"update"`` / ``"delete"`` makes that method raise :class:`NoteFailure`.
- The credential comes from ``configure()`` through :class:`providers.base.HostProvider` (stack config
  ``phoenix:sshPrivateKey`` or ``PHOENIX_SSH_PRIVATE_KEY``); only its fingerprint is written to the file,
  never to state.
- State (outputs): every input plus ``path`` and ``sha`` (sha256 of ``body``).
- Every mutating call appends ``{"op", "filename", "id"}`` to ``<root>/.oplog``: tests count and order
  provider mutations from the provider's side.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    UpdateResult,
)
from pulumi.output import Unknown

from providers.base import HostProvider

OPLOG = ".oplog"
IDENTITY = frozenset({"root", "filename"})
MUTABLE = frozenset({"body", "token", "version", "fail_on", "exclusive"})
FAIL_POINTS = ("create", "update", "delete")


class NoteFailure(RuntimeError):
    """Raised on purpose when ``fail_on`` names the running method."""


def fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_oplog(root: Path) -> list[dict[str, str]]:
    path = root / OPLOG
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def validate(news: dict[str, Any]) -> list[CheckFailure]:
    """Failures for known values; unknowns (preview) pass."""
    failures = []
    filename, fail_on = news.get("filename"), news.get("fail_on")
    if not isinstance(filename, Unknown) and (
        not isinstance(filename, str) or not filename or "/" in filename or filename.startswith(".")
    ):
        failures.append(CheckFailure("filename", "must be a plain, non-hidden file name"))
    if fail_on is not None and not isinstance(fail_on, Unknown) and fail_on not in FAIL_POINTS:
        failures.append(CheckFailure("fail_on", f"must be one of {', '.join(FAIL_POINTS)}"))
    return failures


@dataclass
class NoteProvider(HostProvider):
    """Holds nothing but the inherited plain targets: the note's root travels as an input."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        inputs = {"body": "", "version": "1", "exclusive": False, **news}
        return CheckResult(inputs, validate(inputs))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # olds are the stored outputs; __provider is deliberately not compared.
        changed = {
            k for k in IDENTITY | MUTABLE if isinstance(news.get(k), Unknown) or olds.get(k) != news.get(k)
        }
        replaces = sorted(changed & IDENTITY)
        return DiffResult(
            changes=bool(changed),
            replaces=replaces,
            delete_before_replace=bool(replaces) and news.get("exclusive") is True,
        )

    def create(self, props: dict[str, Any]) -> CreateResult:
        self._maybe_fail("create", props)
        path = self._write(props)
        self._log(props, "create", path)
        return CreateResult(str(path), self._outputs(props, path))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        path = Path(id_)
        if not path.exists():
            return ReadResult(None, {})
        document = json.loads(path.read_text())
        seen = {**props, "body": document["body"], "version": document["version"]}
        return ReadResult(id_, self._outputs(seen, path))

    def update(self, id_: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        self._maybe_fail("update", news)
        path = self._write(news)
        self._log(news, "update", path)
        return UpdateResult(self._outputs(news, path))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        self._maybe_fail("delete", props)
        Path(id_).unlink(missing_ok=True)  # idempotent: a note removed by hand is already deleted
        self._log(props, "delete", Path(id_))

    def _write(self, props: dict[str, Any]) -> Path:
        path = Path(props["root"]) / str(props["filename"])
        key = self.credentials.ssh_private_key
        document = {
            "body": props["body"],
            "version": props["version"],
            "token_fingerprint": fingerprint(props["token"]) if props.get("token") else None,
            "credential_fingerprint": fingerprint(key) if key else None,
        }
        path.write_text(json.dumps(document, sort_keys=True))
        return path

    @staticmethod
    def _outputs(props: dict[str, Any], path: Path) -> dict[str, Any]:
        outs = {k: v for k, v in props.items() if k != "__provider"}
        return {**outs, "path": str(path), "sha": hashlib.sha256(props["body"].encode()).hexdigest()}

    @staticmethod
    def _maybe_fail(method: str, props: dict[str, Any]) -> None:
        if props.get("fail_on") == method:
            raise NoteFailure(f"injected failure in {method} of note {props['filename']}")

    @staticmethod
    def _log(props: dict[str, Any], op: str, path: Path) -> None:
        entry = {"op": op, "filename": props["filename"], "id": str(path)}
        with open(Path(props["root"]) / OPLOG, "a") as log:
            log.write(json.dumps(entry) + "\n")
        # Something on stderr, so tests checking that secrets stay out of logs have logs to check.
        print(f"note {op}: {path} (pid {os.getpid()})", file=sys.stderr)


class NoteArgs(TypedDict, total=False):
    root: pulumi.Input[str]
    """Directory holding the notes (identity)."""
    filename: pulumi.Input[str]
    """File name inside ``root`` (identity)."""
    body: pulumi.Input[str]
    token: pulumi.Input[str]
    """A secret input: pass ``pulumi.Output.secret(...)``."""
    version: pulumi.Input[str]
    """Provider behaviour version; bump to force an update."""
    fail_on: pulumi.Input[str]
    exclusive: pulumi.Input[bool]


class Note(Resource, module="example", name="Note"):
    """A note file. Token ``pulumi-python:dynamic/example:Note``."""

    root: pulumi.Output[str]
    filename: pulumi.Output[str]
    body: pulumi.Output[str]
    path: pulumi.Output[str]
    sha: pulumi.Output[str]

    def __init__(self, name: str, args: NoteArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        props: dict[str, Any] = {"body": None, "version": None, **args, "path": None, "sha": None}
        super().__init__(NoteProvider(), name, props, opts)
