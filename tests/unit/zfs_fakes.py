"""A scripted executor for the ZFS providers' unit tests, and the captured outputs they replay.

Every command must be scripted: an unexpected one fails the test, so tests pin the exact argv sequence
(and therefore the number of SSH sessions) of each provider operation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pulumi.output import Unknown

from providers.channels.command import Argv, CommandResult, display
from providers.channels.targets import SshTarget

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "zfs"
TARGET = SshTarget("pve1", 22, "root", "SHA256:" + "A" * 43)


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


@dataclass
class Answer:
    prefix: Sequence[str]
    """Matches a command whose argv starts with these arguments."""
    exit_status: int = 0
    stdout: str = ""
    stderr: str = ""


@dataclass
class FakeExecutor:
    """Answers commands in script order: each one must match the next answer's prefix."""

    script: list[Answer] = field(default_factory=list)
    calls: list[list[str]] = field(default_factory=list)
    host: str = "pve1"

    def run(
        self,
        argv: Argv,
        *,
        stdin: str | bytes | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> CommandResult:
        args = [str(a) for a in argv]
        self.calls.append(args)
        if not self.script:
            raise AssertionError(f"unscripted command: {args}")
        answer = self.script.pop(0)
        if args[: len(answer.prefix)] != list(answer.prefix):
            raise AssertionError(f"expected a command starting {list(answer.prefix)}, got {args}")
        result = CommandResult(
            self.host, display(argv), answer.exit_status, answer.stdout, answer.stderr, 0.0
        )
        return result.check() if check else result

    def done(self) -> bool:
        return not self.script


def on(provider: Any, fake: FakeExecutor, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``provider`` with its SSH executor replaced by ``fake``."""
    monkeypatch.setattr(provider, "ssh", lambda: fake)
    return provider


def get_rows(name: str, props: dict[str, tuple[str, str]]) -> str:
    """``zfs get -H -p -o name,property,value,source`` output for one dataset."""
    return "".join(f"{name}\t{key}\t{value}\t{source}\n" for key, (value, source) in props.items())


def missing(name: str) -> str:
    return f"cannot open '{name}': dataset does not exist\n"


def unknown() -> Any:
    """A value not known yet at preview, as ``check`` and ``diff`` receive it."""
    return Unknown()  # type: ignore[no-untyped-call]  # the SDK's class is unannotated
