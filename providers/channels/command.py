"""The one seam between providers and a host: argv lists in, :class:`CommandResult` out.

Commands are sequences of arguments, quoted exactly once (here, by :func:`render`) when they become a
shell line for SSH. A :class:`Masked` argument is sent as its value but shown as ``***`` wherever a
command is printed, logged or put into an error.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from providers.errors import RemoteCommandError


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


def mask_text(text: str, secrets: Iterable[str | None]) -> str:
    """Remove secret values from free text (stderr echoing a password, say): every channel's one masker.

    Longest first, so a secret that contains another is not left half-masked.
    """
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def sha256_text(text: str) -> str:
    """The hex sha256 of ``text`` as UTF-8: what ``sha256sum`` prints for a file written with it."""
    return hashlib.sha256(text.encode()).hexdigest()


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
    """Runs argv commands on one host (SSH in production; tests/support/fakes.py has test stand-ins)."""

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


def sh_argv(script: str, name: str, *args: str) -> list[str]:
    """``sh -c SCRIPT NAME ARGS...``: a shell script whose values arrive as ``$1``... (``$0`` is ``name``,
    which ``ps`` and the tests see), so no value is ever spliced into shell text."""
    return ["sh", "-c", script, name, *args]


_WRITE_FILE = 'set -e; tmp=$(mktemp "$1.XXXXXX"); cat > "$tmp"; chmod "$2" "$tmp"; mv -f "$tmp" "$1"'


def write_file_argv(path: str, mode: int = 0o644, *, then: str = "", args: Sequence[str] = ()) -> list[str]:
    """A command that atomically replaces ``path`` with its stdin: temp file in the same dir, then rename.

    A reader (apparmor_parser, pct, systemd) never sees a half-written file, and a dropped connection
    leaves the old file in place. ``then`` is more shell for the same session, run only once the file is
    in place (``set -e``), with ``args`` as ``$3``...: ``then='systemctl restart "$3"', args=[unit]``.
    """
    script = f"{_WRITE_FILE}; {then}" if then else _WRITE_FILE
    return sh_argv(script, "phoenix-write", path, format(mode, "o"), *args)
