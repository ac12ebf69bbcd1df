"""The ZFS providers' unit-test vocabulary: captured outputs they replay and the lab-free target.

The executor is tests/support/fakes.ScriptedExecutor (strict: every command must be scripted, so the
tests pin the exact argv sequence, and so the number of SSH sessions, of each provider operation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pulumi.output import Unknown

from providers.channels.targets import SshTarget

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "zfs"
TARGET = SshTarget("pve1", 22, "root", "SHA256:" + "A" * 43)


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def get_rows(name: str, props: dict[str, tuple[str, str]]) -> str:
    """``zfs get -H -p -o name,property,value,source`` output for one dataset."""
    return "".join(f"{name}\t{key}\t{value}\t{source}\n" for key, (value, source) in props.items())


def missing(name: str) -> str:
    return f"cannot open '{name}': dataset does not exist\n"


def unknown() -> Any:
    """A value not known yet at preview, as ``check`` and ``diff`` receive it."""
    return Unknown()  # type: ignore[no-untyped-call]  # the SDK's class is unannotated
