"""vLLM: ``vllm serve`` (``phoenix_components/render/vllm.py``), gated on /health and /v1/models."""

from __future__ import annotations

from phoenix_components.render.engines.spec import EngineSpec
from phoenix_components.render.vllm import render_unit
from providers.vllm_service import CHECKS, PYTHON, SERVICE

ENGINE = EngineSpec("vllm", SERVICE, render_unit, CHECKS, PYTHON)
