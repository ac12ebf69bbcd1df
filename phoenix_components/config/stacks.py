"""Which environment a Pulumi stack deploys: ``phoenix:environment`` in ``Pulumi.<stack>.yaml``."""

from __future__ import annotations

from pathlib import Path

import yaml

from phoenix_components.config.errors import ConfigError

ENVIRONMENT_KEY = "phoenix:environment"


def stack_file(project_dir: Path, stack: str) -> Path:
    return project_dir / f"Pulumi.{stack}.yaml"


def stack_names(project_dir: Path) -> list[str]:
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in project_dir.glob("Pulumi.*.yaml"))


def stack_environment(project_dir: Path, stack: str) -> str:
    """The environment a stack file selects; the stack's own name when the file does not say."""
    path = stack_file(project_dir, stack)
    if not path.is_file():
        known = ", ".join(stack_names(project_dir)) or "none"
        raise ConfigError([f"{path.name}: $: no such stack file (stacks: {known})"])
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path.name}: $: invalid YAML: {exc}"]) from None
    config = data.get("config") or {}
    value = config.get(ENVIRONMENT_KEY, stack)
    if not isinstance(value, str):
        raise ConfigError([f"{path.name}: config.{ENVIRONMENT_KEY}: must be a string"])
    return value
