"""Stand-ins for a host, for the providers' unit tests: a scripted executor and a local one.

:class:`ScriptedExecutor` is the one fake SSH channel: it answers argv patterns with scripted
:class:`~providers.channels.command.CommandResult`\\ s and records every call, so a test pins the exact
commands (and so the SSH sessions) of a provider operation without a host. :class:`LocalExecutor` runs
commands on this machine with the SSH contract (for tests that run a script the provider sends).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from providers.channels.command import Argv, CommandResult, display
from providers.errors import CommandTimeoutError


class _Any:
    """Matches any one argument in an :class:`Answer` pattern (a long script, a temp name)."""

    def __repr__(self) -> str:
        return "ANY"


ANY: Any = _Any()


@dataclass
class Answer:
    prefix: Sequence[Any]
    """Matches a command whose argv starts with these arguments; :data:`ANY` matches any one argument."""
    exit_status: int = 0
    stdout: str = ""
    stderr: str = ""

    def matches(self, argv: Sequence[str]) -> bool:
        pattern = list(self.prefix)
        return len(argv) >= len(pattern) and all(
            p is ANY or p == a for p, a in zip(pattern, argv, strict=False)
        )


@dataclass(frozen=True)
class Call:
    """One command the provider ran: its arguments (secrets unmasked), stdin and timeout."""

    argv: list[str]
    stdin: str | bytes | None = None
    timeout: float | None = None


@dataclass
class ScriptedExecutor:
    """An :class:`~providers.channels.command.Executor` that answers from a script and records calls.

    - ``strict`` (the default): commands are answered in script order, each must match the next answer,
      and a command past the end of the script fails the test: the test pins the exact sequence.
    - not ``strict``: a command gets the first answer it matches (used up once); any other command
      succeeds with no output: the test pins only the answers that matter and checks :attr:`calls`.
    """

    script: list[Answer] = field(default_factory=list)
    strict: bool = True
    host: str = "pve1"
    calls: list[Call] = field(default_factory=list)

    def run(
        self,
        argv: Argv,
        *,
        stdin: str | bytes | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> CommandResult:
        args = [str.__str__(a) for a in argv]
        self.calls.append(Call(args, stdin, timeout))
        answer = self._answer(args)
        result = CommandResult(
            self.host, display(argv), answer.exit_status, answer.stdout, answer.stderr, 0.0
        )
        return result.check() if check else result

    def _answer(self, args: list[str]) -> Answer:
        if self.strict:
            if not self.script:
                raise AssertionError(f"unscripted command: {args}")
            answer = self.script.pop(0)
            if not answer.matches(args):
                raise AssertionError(f"expected a command starting {list(answer.prefix)}, got {args}")
            return answer
        for answer in self.script:
            if answer.matches(args):
                self.script.remove(answer)
                return answer
        return Answer(args)

    @property
    def argvs(self) -> list[list[str]]:
        return [call.argv for call in self.calls]

    def done(self) -> bool:
        """Was every scripted answer used?"""
        return not self.script


def on(provider: Any, executor: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``provider`` with its SSH executor replaced by ``executor``."""
    monkeypatch.setattr(provider, "ssh", lambda: executor)
    return provider


class LocalExecutor:
    """Runs commands on this machine with the same contract as SSH (tests that run what a provider sends)."""

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
