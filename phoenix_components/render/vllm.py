"""The vLLM engine config as the command line of ``vllm serve``; pure, so plan, the unit and tests agree."""

from __future__ import annotations

from collections.abc import Mapping

from phoenix_components.config.models import VllmEngine
from phoenix_components.render.systemd import service_unit, systemd_quote, systemd_text

__all__ = ["UNIT_PATH", "VLLM_BIN", "engine_args", "render_unit", "systemd_quote", "systemd_text"]

VLLM_BIN = "/opt/vllm/bin/vllm"  # where features/vllm.sh installs it


def engine_args(engine: VllmEngine) -> list[str]:
    """``vllm serve`` argv: the model first, then every section flattened to ``--kebab-case`` flags.

    ``True`` becomes a bare flag, ``False`` and unset values are left out (vLLM's defaults apply), and
    ``extra_args`` come last so they can add what the sections do not model.
    """
    argv = [VLLM_BIN, "serve", engine.model.model]
    for section in (engine.model, engine.cache, engine.parallel, engine.server):
        for name, value in section.model_dump().items():
            if section is engine.model and name == "model":
                continue
            flag = "--" + name.replace("_", "-")
            if value is True:
                argv.append(flag)
            elif value is False or value is None:
                continue
            else:
                argv += [flag, str(value)]
    return argv + list(engine.extra_args)


UNIT_PATH = "/etc/systemd/system/vllm.service"


def render_unit(engine: VllmEngine, *, environment: Mapping[str, str] | None = None) -> str:
    """The systemd unit that runs ``vllm serve`` for ``engine`` inside the guest: the engine's own
    ``environment``, then ``environment`` over it."""
    return service_unit(
        "VllmService",
        f"vLLM serving {engine.server.served_model_name}",
        engine_args(engine),
        {**engine.environment, **(environment or {})},
    )
