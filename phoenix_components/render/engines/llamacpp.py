"""llama.cpp: ``llama-server`` with a GGUF model (``-m`` path or ``-hf`` repo) under ``--alias``, gated on
/health (200 once the model is loaded, 503 while loading) and /v1/models listing the alias."""

from __future__ import annotations

from phoenix_components.config.models import LlamaCppEngine
from phoenix_components.render.engines.spec import EngineSpec
from phoenix_components.render.systemd import service_unit

LLAMA_SERVER_BIN = "/usr/local/bin/llama-server"  # where features/llamacpp.sh installs it
# -hf downloads into LLAMA_CACHE; systemd makes the directory (CacheDirectory=) under /var/cache.
CACHE = "/var/cache/llama.cpp"
SERVICE_LINES = ("CacheDirectory=llama.cpp",)


def engine_args(engine: LlamaCppEngine) -> list[str]:
    """``llama-server`` argv: the model, the alias, where to listen, then the typed options that are set
    (unset ones keep llama.cpp's defaults), ``extra_args`` last."""
    model = ["-m", engine.model_path] if engine.model_path is not None else ["-hf", str(engine.hf_repo)]
    argv = [LLAMA_SERVER_BIN, *model, "--alias", engine.served_model_name]
    argv += ["--host", engine.host, "--port", str(engine.port)]
    for flag, value in (("-c", engine.ctx_size), ("-ngl", engine.n_gpu_layers), ("-np", engine.parallel)):
        if value is not None:
            argv += [flag, str(value)]
    return argv + list(engine.extra_args)


def render_unit(engine: LlamaCppEngine) -> str:
    return service_unit(
        "ModelServer",
        f"llama.cpp serving {engine.served_model_name}",
        engine_args(engine),
        {"LLAMA_CACHE": CACHE, **engine.environment},
        service=SERVICE_LINES,
    )


CHECKS = ({"path": "/health"}, {"path": "/v1/models", "list": "data.id"})
ENGINE = EngineSpec("llamacpp", "llama-server.service", render_unit, CHECKS)
