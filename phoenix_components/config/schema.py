"""JSON Schema for the config files, generated from the models so editors validate as you type.

The files in config/schema/ are generated (``phoenix schema --write``) and checked in; a test fails when
they no longer match the models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from phoenix_components.config.cloud_models import Cloud
from phoenix_components.config.models import Chain, Guests, Host
from phoenix_components.config.promotion import PromotionLock
from phoenix_components.config.stack_files import StackSettings

SCHEMAS: dict[str, type[BaseModel]] = {
    "chain.schema.json": Chain,
    "host.schema.json": Host,
    "guests.schema.json": Guests,
    "cloud.schema.json": Cloud,
    "promotion.schema.json": PromotionLock,
    "stack.schema.json": StackSettings,  # config/stacks/<name>/stack.json
}


def render(model: type[BaseModel]) -> str:
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **model.model_json_schema(by_alias=True),
    }
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def stale(schema_dir: Path) -> list[str]:
    """Schema files that are missing or differ from what the models generate now."""
    return [
        name
        for name, model in SCHEMAS.items()
        if not (schema_dir / name).is_file() or (schema_dir / name).read_text() != render(model)
    ]


def write(schema_dir: Path) -> list[str]:
    schema_dir.mkdir(parents=True, exist_ok=True)
    changed = stale(schema_dir)
    for name in changed:
        (schema_dir / name).write_text(render(SCHEMAS[name]))
    return changed
