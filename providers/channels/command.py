"""The one seam between providers and a host: argv lists in, :class:`CommandResult` out.

Commands are sequences of arguments, quoted exactly once (here, by :func:`render`) when they become a
shell line for SSH. A :class:`Masked` argument is sent as its value but shown as ``***`` wherever a
command is printed, logged or put into an error.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from providers.errors import CommandTimeoutError, RemoteCommandError


class Masked(str):
    """A secret argument: its value goes to the host, ``***`` goes everywhere else."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Masked('***')"


Arg = str | Masked
Argv = Sequence[Arg]


def render(argv: Argv) -> str:
    """The shell line the host runs: each argument quoted once. ``["echo", "a b"] -> "echo 'a b'"``."""
    if not argv:
        raise ValueError("empty command")
    return " ".join(shlex.quote(str.__str__(a)) for a in argv)


def display(argv: Argv) -> str:
    """The same line with every :class:`Masked` argument shown as ``***``; safe for logs and errors."""
    return " ".join("***" if isinstance(a, Masked) else shlex.quote(a) for a in argv)


def mask_text(text: str, secrets: Sequence[str]) -> str:
    """Remove secret values from free text (stderr echoing a password, say)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


@dataclass(frozen=True)
class CommandResult:
    """What one command did. ``argv`` is the masked display form."""

    host: str
    argv: str
    exit_status: int
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def check(self, what: str = "") -> CommandResult:
        """Return self, or raise :class:`RemoteCommandError` carrying host, argv, exit code, stderr tail."""
        if self.exit_status != 0:
            raise RemoteCommandError(self.host, self.argv, self.exit_status, self.stderr or self.stdout, what)
        return self


class Executor(Protocol):
    """Runs argv commands on one host (SSH in production, :class:`LocalExecutor` locally)."""

    @property
    def host(self) -> str: ...

    def run(
        self,
        argv: Argv,
        *,
        stdin: str | bytes | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run one command; with ``check`` a non-zero exit raises :class:`RemoteCommandError`."""
        ...


def write_file_argv(path: str, mode: int = 0o644) -> list[str]:
    """A command that atomically replaces ``path`` with its stdin: temp file in the same dir, then rename.

    A reader (apparmor_parser, pct) never sees a half-written file, and a dropped connection leaves the
    old file in place.
    """
    script = 'set -e; tmp=$(mktemp "$1.XXXXXX"); cat > "$tmp"; chmod "$2" "$tmp"; mv -f "$tmp" "$1"'
    return ["sh", "-c", script, "phoenix-write", path, format(mode, "o")]


class LocalExecutor:
    """Runs commands on this machine with the same contract as SSH (benchmarks, local tooling)."""

    def __init__(self, host: str = "localhost") -> None:
        self._host = host

    @property
    def host(self) -> str:
        return self._host

    def run(
        self,
        argv: Argv,
        *,
        stdin: str | bytes | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> CommandResult:
        data = stdin.encode() if isinstance(stdin, str) else stdin
        started = time.monotonic()
        try:
            proc = subprocess.run(
                [str.__str__(a) for a in argv], input=data, capture_output=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise CommandTimeoutError(self._host, display(argv), timeout or 0.0) from exc
        result = CommandResult(
            host=self._host,
            argv=display(argv),
            exit_status=proc.returncode,
            stdout=proc.stdout.decode(errors="replace"),
            stderr=proc.stderr.decode(errors="replace"),
            duration=time.monotonic() - started,
        )
        return result.check() if check else result
