"""The model server engines: one module each (``vllm``, ``ollama``, ``llamacpp``), each describing, as
plain data and pure functions, what the shared provider runs for it: the unit (argv, environment), where
it goes, the service's name, the health checks on the engine's own endpoints, the interpreter the probe
uses, and an optional pull once the server answers.

The config side of an engine (its pydantic model, the layer feature that installs it, its GPU memory
budget) is in ``phoenix_components/config/models.py`` (``Container.engine()``); validation, the program
and ``phoenix plan`` go through :data:`ENGINES` and :func:`server_inputs`.

vLLM deploys through its own resource (``VllmService``, kept for existing state); the others through
``ModelServer`` (``providers/model_server.py``), whose inputs :func:`server_inputs` builds.
"""

from __future__ import annotations

from phoenix_components.config.load import Environment
from phoenix_components.config.models import Container
from phoenix_components.render.engines import llamacpp, ollama, vllm
from phoenix_components.render.engines.spec import EngineSpec

ENGINES: dict[str, EngineSpec] = {spec.key: spec for spec in (vllm.ENGINE, ollama.ENGINE, llamacpp.ENGINE)}
"""Registry key (the Container field) -> the engine's render side."""


def server_inputs(env: Environment, ct: Container) -> dict[str, object]:
    """The ModelServer resource's inputs for ``ct``'s engine (not vLLM, which has VllmService), as the
    program passes them, without the guest's ``instance`` (known once the guest exists)."""
    engine = ct.engine()
    assert engine is not None and engine[0] != "vllm", "vLLM deploys through VllmService"
    key, config = engine
    spec = ENGINES[key]
    return {
        "node": env.host.node,
        "vmid": ct.vmid,
        "engine": key,
        "service": spec.service,
        "unit": spec.unit(config),
        "unit_path": spec.unit_path,
        "port": config.listen_port,
        "model": config.served_name,
        "checks": [dict(check) for check in spec.checks],
        "pull": spec.pull(config),
        "pull_timeout_s": getattr(config, "pull_timeout_s", 3600),
        "python": list(spec.python),
        "startup_timeout_s": config.startup_timeout_s,
        "guest_name": ct.hostname,
    }
