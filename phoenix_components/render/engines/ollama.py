"""ollama: ``ollama serve`` on OLLAMA_HOST, the model pulled once the server answers, gated on /api/tags
and /v1/models both listing it (a pulled model is listed by both)."""

from __future__ import annotations

from phoenix_components.config.models import OllamaEngine
from phoenix_components.render.engines.spec import EngineSpec
from phoenix_components.render.systemd import service_unit

OLLAMA_BIN = "/usr/local/bin/ollama"  # where features/ollama.sh installs it
# The feature's system user: the models live under its home (OLLAMA_MODELS defaults to ~/.ollama/models).
SERVICE_LINES = ("User=ollama", "Group=ollama")


def client_address(engine: OllamaEngine) -> str:
    """Where a client in the guest reaches the server: loopback when it listens on every address."""
    host = "127.0.0.1" if engine.host == "0.0.0.0" else engine.host
    return f"{host}:{engine.port}"


def engine_args(_engine: OllamaEngine) -> list[str]:
    return [OLLAMA_BIN, "serve"]


def environment(engine: OllamaEngine) -> dict[str, str]:
    """The service's environment: the engine's own, and OLLAMA_HOST (which validation keeps out of it)."""
    return {**engine.environment, "OLLAMA_HOST": f"{engine.host}:{engine.port}"}


def render_unit(engine: OllamaEngine) -> str:
    return service_unit(
        "ModelServer",
        f"ollama serving {engine.model}",
        engine_args(engine),
        environment(engine),
        service=SERVICE_LINES,
    )


def pull_argv(engine: OllamaEngine) -> list[str]:
    """``ollama pull`` through the running server (it skips what is already there)."""
    return ["env", f"OLLAMA_HOST={client_address(engine)}", OLLAMA_BIN, "pull", engine.model]


CHECKS = ({"path": "/api/tags", "list": "models.name"}, {"path": "/v1/models", "list": "data.id"})
ENGINE = EngineSpec("ollama", "ollama.service", render_unit, CHECKS, pull=pull_argv)
