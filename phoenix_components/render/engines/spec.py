"""What one engine module describes (:class:`EngineSpec`); pure data and functions."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


def no_pull(_config: Any) -> list[str]:
    return []


@dataclass(frozen=True)
class EngineSpec:
    key: str
    """The Container field and registry key: ``ollama``."""
    service: str
    """The systemd unit's name: ``ollama.service``."""
    unit: Callable[[Any], str]
    """The engine config -> the unit's text."""
    checks: tuple[Mapping[str, str], ...]
    """The health gate: each ``path`` answers 200; one with ``list`` ("key.field" of its JSON) lists the
    served name. The first check is also "the server answers" (before a pull)."""
    python: tuple[str, ...] = ("python3",)
    """The probe's interpreters in the guest, the first present used."""
    pull: Callable[[Any], list[str]] = no_pull
    """The engine config -> argv run in the guest once the server answers (``[]``: nothing to fetch)."""

    @property
    def unit_path(self) -> str:
        return f"/etc/systemd/system/{self.service}"
