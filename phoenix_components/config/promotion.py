"""Promotion dev → staging → prod: a stack deploys only layers the stack below verified.

``phoenix promote --from dev --to staging`` reads the source stack's outputs (``pulumi stack output
--json``, or a file saved from it) and writes ``config/environments/staging/promotion.lock.json``: per
layer its content key, the template vmid and node, and that its smoke test passed. A layer that was not
verified is refused, and so is a source whose keys no longer match chain.json (it ran an older chain).

The target stack then never rebuilds a verified layer:

- on the **same node** (environments sharing one Proxmox host), it reuses the promoted templates
  themselves: the layers are not built again, guests are cloned from the promoted vmids;
- on **another node**, a template cannot be shared, so each layer is built once there from exactly the
  verified definition — ``phoenix validate`` refuses a chain.json whose keys differ from the lock.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from phoenix_components.config.errors import ConfigError, PromotionError
from phoenix_components.config.models import PATTERN_RULES, Document, Model, Name, VmId

LOCK_FILE = "promotion.lock.json"


class LockedLayer(Model):
    """One layer of a promotion lock: its key, and the template that was verified with it, where."""

    key: str = Field(pattern=r"^[0-9a-f]{16}$")
    vmid: VmId
    node: str
    verified: bool


class PromotionLock(Document):
    source: Name = Field(description="the environment the layers were verified in")
    promoted_at: str
    layers: dict[Name, LockedLayer]


def lock_path(config_dir: Path, environment: str) -> Path:
    return config_dir / "environments" / environment / LOCK_FILE


def load_lock(config_dir: Path, environment: str) -> PromotionLock | None:
    """The environment's promotion lock, if it has one; a malformed lock is a config error."""
    path = lock_path(config_dir, environment)
    if not path.is_file():
        return None
    name = f"environments/{environment}/{LOCK_FILE}"
    try:
        return PromotionLock.model_validate(json.loads(path.read_text()))
    except json.JSONDecodeError as exc:
        raise ConfigError(
            [f"{name}: line {exc.lineno} column {exc.colno}: invalid JSON: {exc.msg}"]
        ) from None
    except ValidationError as exc:
        problems = [f"{name}: {'.'.join(str(p) for p in e['loc']) or '$'}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(problems) from None


def check_lock(lock: PromotionLock, keys: Mapping[str, str], environment: str) -> list[str]:
    """Problems with deploying ``keys`` (this chain's layer keys) under ``lock``."""
    name = f"environments/{environment}/{LOCK_FILE}"
    problems = []
    for layer, key in keys.items():
        promoted = lock.layers.get(layer)
        if promoted is None:
            problems.append(f"{name}: layers: layer {layer!r} was not promoted from {lock.source}")
        elif promoted.key != key:
            problems.append(
                f"chain.json: layers.{layer}: key {key} is not the key {promoted.key} verified in "
                f"{lock.source}; verify it there and run `phoenix promote --from {lock.source} --to "
                f"{environment}` again"
            )
        elif not promoted.verified:
            problems.append(f"{name}: layers.{layer}.verified: not verified in {lock.source}")
    return problems


def promote(
    outputs: Mapping[str, Any], keys: Mapping[str, str], source: str, *, now: datetime | None = None
) -> PromotionLock:
    """A lock from the source stack's outputs (``layers``, ``layer_vmids``, ``layer_verified``, ``node``).

    ``keys`` are the layer keys of the chain in this checkout: the source must have deployed exactly them.
    """
    built, vmids = outputs.get("layers") or {}, outputs.get("layer_vmids") or {}
    verified, node = outputs.get("layer_verified") or {}, outputs.get("node")
    problems = []
    for layer, key in keys.items():
        if layer not in built:
            problems.append(f"layer {layer!r}: the {source} stack has not built it")
        elif built[layer] != key:
            problems.append(
                f"layer {layer!r}: {source} runs key {built[layer]}, chain.json has {key}; up {source} first"
            )
        elif verified.get(layer) is not True:
            problems.append(
                f"layer {layer!r}: its smoke test has not passed in {source}; it cannot be promoted"
            )
        elif not isinstance(vmids.get(layer), int | float):
            problems.append(f"layer {layer!r}: {source} reports no template vmid")
    if not isinstance(node, str) or not node:
        problems.append(f"the {source} stack's outputs name no node")
    if problems:
        raise PromotionError(f"cannot promote from {source}:\n" + "\n".join(f"  {p}" for p in problems))
    return PromotionLock(
        source=source,
        promoted_at=(now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        layers={
            layer: LockedLayer(key=keys[layer], vmid=int(vmids[layer]), node=str(node), verified=True)
            for layer in keys
        },
    )


def write_lock(config_dir: Path, environment: str, lock: PromotionLock) -> Path:
    path = lock_path(config_dir, environment)
    data = {
        "$schema": "../../schema/promotion.schema.json",
        **lock.model_dump(mode="json", exclude={"schema_ref"}),
    }
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


PATTERN_RULES[r"^[0-9a-f]{16}$"] = "a layer key: 16 lower-case hex digits"
