"""The config layer's errors: what the config files (and the stack files that select them) say wrongly.

Only mistakes a person fixes by editing a file are a :class:`ConfigError`; ``phoenix`` prints them as
"invalid config" with one ``file: json.path: message`` line each. Problems met while running — a secret
the stack lacks, a host that does not answer, a GPU inventory that contradicts host.json, AWS refusing a
call — have their own types in the layer that meets them (``render/errors.py``, ``aws/errors.py``,
``providers/errors.py``), so they are never reported as a config mistake.

All of them derive from :class:`providers.errors.PhoenixError`, the root of every error Phoenix raises on
purpose: dependencies point down (docs/architecture.md, "What each folder may import"), so
one ``except PhoenixError`` catches them all.
"""

from __future__ import annotations

from collections.abc import Sequence

from providers.errors import PhoenixError


class ConfigError(PhoenixError):
    """The declarative config is invalid. ``problems`` holds one ``file: json.path: message`` per mistake."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid config:\n" + "\n".join(f"  {p}" for p in self.problems))


class PromotionError(PhoenixError):
    """The source stack cannot be promoted (a layer unverified, missing, or built from another chain)."""
