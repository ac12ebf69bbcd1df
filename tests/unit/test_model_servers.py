"""Model servers as engines: each engine's argv, unit and checks; the shared probe against real HTTP servers
speaking each engine's endpoints; the ModelServer provider's steps over a scripted executor; and the GPU
memory accounting across every engine on a GPU."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from phoenix_components.config.errors import ConfigError
from phoenix_components.config.load import gpu_accounting, load_environment
from phoenix_components.config.models import ENGINE_KEYS, Container, LlamaCppEngine, OllamaEngine
from phoenix_components.render.engines import ENGINES, llamacpp, ollama
from providers.channels.command import sha256_text
from providers.errors import RemoteCommandError
from providers.model_server import (
    PROBE_CODE,
    ModelServerInputs,
    ModelServerNotReadyError,
    ModelServerProvider,
    deploy_steps,
    parse_probe,
    probe_of,
    ready,
    server_probe_argv,
)
from tests.support.fakes import Answer, ScriptedExecutor, on

ROOT = Path(__file__).resolve().parents[2]


def test_the_registry_has_one_engine_per_container_key() -> None:
    assert tuple(ENGINES) == ENGINE_KEYS == ("vllm", "ollama", "llamacpp")
    assert {k: s.service for k, s in ENGINES.items()} == {
        "vllm": "vllm.service",
        "ollama": "ollama.service",
        "llamacpp": "llama-server.service",
    }


# --- ollama ---------------------------------------------------------------------------------------------


def test_ollama_serves_on_ollama_host_and_pulls_through_loopback() -> None:
    engine = OllamaEngine(model="llama3.2:3b", port=11500, environment={"OLLAMA_KEEP_ALIVE": "24h"})
    unit = ollama.render_unit(engine)
    assert 'ExecStart="/usr/local/bin/ollama" "serve"' in unit
    assert 'Environment="OLLAMA_HOST=0.0.0.0:11500"' in unit
    assert 'Environment="OLLAMA_KEEP_ALIVE=24h"' in unit
    assert "User=ollama" in unit
    # The client reaches a server on every address through loopback, one on a given address there.
    assert ollama.pull_argv(engine) == [
        "env",
        "OLLAMA_HOST=127.0.0.1:11500",
        "/usr/local/bin/ollama",
        "pull",
        "llama3.2:3b",
    ]
    bound = engine.model_copy(update={"host": "10.0.10.5"})
    assert ollama.pull_argv(bound)[1] == "OLLAMA_HOST=10.0.10.5:11500"


@pytest.mark.parametrize(
    ("model", "listed"),
    [
        ("llama3.2", "llama3.2:latest"),
        ("llama3.2:3b", "llama3.2:3b"),
        ("hf.co/a/B-GGUF:Q4_K_M", "hf.co/a/B-GGUF:Q4_K_M"),
    ],
)
def test_ollama_lists_a_model_without_a_tag_as_latest(model: str, listed: str) -> None:
    assert OllamaEngine(model=model).served_name == listed


def test_ollama_host_is_the_engines_own_field() -> None:
    with pytest.raises(ValidationError, match="OLLAMA_HOST: set from the engine's own fields"):
        OllamaEngine(model="m", environment={"OLLAMA_HOST": "0.0.0.0:1"})


# --- llama.cpp ------------------------------------------------------------------------------------------


def test_llamacpp_argv_takes_the_model_alias_address_and_the_options_that_are_set() -> None:
    engine = LlamaCppEngine(
        model_path="/models/q.gguf",
        served_model_name="q",
        port=8081,
        ctx_size=8192,
        n_gpu_layers=99,
        parallel=4,
    )
    assert llamacpp.engine_args(engine) == [
        "/usr/local/bin/llama-server",
        *("-m", "/models/q.gguf", "--alias", "q", "--host", "0.0.0.0", "--port", "8081"),
        *("-c", "8192", "-ngl", "99", "-np", "4"),
    ]
    hf = LlamaCppEngine(
        hf_repo="ggml-org/gemma-3-1b-it-GGUF:Q4_K_M", served_model_name="g", extra_args=["--flash-attn"]
    )
    assert llamacpp.engine_args(hf)[1:3] == ["-hf", "ggml-org/gemma-3-1b-it-GGUF:Q4_K_M"]
    assert llamacpp.engine_args(hf)[-1] == "--flash-attn" and "-c" not in llamacpp.engine_args(hf)
    unit = llamacpp.render_unit(hf.model_copy(update={"environment": {"LLAMA_CACHE": "/models/cache"}}))
    assert 'Environment="LLAMA_CACHE=/models/cache"' in unit  # the config's own value wins over the default


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"served_model_name": "q"}, "exactly one of model_path"),
        ({"served_model_name": "q", "model_path": "/m.gguf", "hf_repo": "a/b"}, "exactly one of model_path"),
        (
            {"served_model_name": "q", "model_path": "/m.gguf", "extra_args": ["-ngl=10"]},
            "sets --n-gpu-layers",
        ),
        ({"served_model_name": "q", "model_path": "/m.gguf", "extra_args": ["--alias"]}, "sets --alias"),
    ],
)
def test_llamacpp_refuses_an_ambiguous_model_and_a_managed_flag(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        LlamaCppEngine.model_validate(config)


def test_a_container_runs_at_most_one_engine() -> None:
    base = {
        "vmid": 203,
        "hostname": "x",
        "layer": "ollama",
        "network": {"bridge": "vmbr0", "ip": "10.0.10.9/24"},
    }
    ct = Container.model_validate({**base, "ollama": {"model": "m"}})
    assert ct.engine() == ("ollama", ct.ollama)
    with pytest.raises(ValidationError, match="one model server per container: ollama and llamacpp"):
        Container.model_validate(
            {
                **base,
                "ollama": {"model": "m"},
                "llamacpp": {"model_path": "/m.gguf", "served_model_name": "q"},
            }
        )


# --- the probe, for real, against servers speaking each engine's endpoints ----------------------------------


class _Server:
    """TEST-ONLY HTTP server answering fixed (status, JSON) per path."""

    def __init__(self, answers: dict[str, tuple[int, Any]]) -> None:
        self.answers = answers
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, data = owner.answers.get(self.path, (404, {"error": "not found"}))
                body = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server() -> Iterator[_Server]:
    made = _Server({})
    yield made
    made.httpd.shutdown()
    made.httpd.server_close()


def probe(port: int, key: str) -> dict[str, Any]:
    """PROBE_CODE as the guest runs it (argv: port, the engine's checks), with this interpreter."""
    checks = json.dumps([dict(c) for c in ENGINES[key].checks])
    out = subprocess.run(
        [sys.executable, "-c", PROBE_CODE, str(port), checks],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return parse_probe(out.stdout)


def test_probe_ollama_lists_a_model_only_when_both_endpoints_list_it(server: _Server) -> None:
    server.answers = {"/api/tags": (200, {"models": []}), "/v1/models": (200, {"data": []})}
    assert probe(server.port, "ollama") == {"health": 200, "models": []}  # up, nothing pulled yet
    server.answers["/api/tags"] = (200, {"models": [{"name": "llama3.2:latest"}, {"name": "other:1b"}]})
    server.answers["/v1/models"] = (200, {"object": "list", "data": [{"id": "llama3.2:latest"}]})
    got = probe(server.port, "ollama")
    assert (
        got["models"] == ["llama3.2:latest"] and ready(got, "llama3.2:latest") and not ready(got, "other:1b")
    )


def test_probe_llamacpp_is_not_ready_while_the_model_loads(server: _Server) -> None:
    server.answers = {"/health": (503, {"error": {"code": 503, "message": "Loading model"}})}
    loading = probe(server.port, "llamacpp")
    assert loading["health"] == 503 and "/health: 503" in loading["error"] and not ready(loading, "q")
    server.answers = {"/health": (200, {"status": "ok"}), "/v1/models": (200, {"data": [{"id": "q"}]})}
    assert ready(probe(server.port, "llamacpp"), "q")


def test_probe_of_a_server_that_is_not_there_is_health_0() -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as taken:
        port = taken.server_address[1]
    got = probe(port, "vllm")  # the port was free again once closed
    assert got["health"] == 0 and got["models"] == [] and "refused" in got["error"].lower()


# --- the provider over a scripted executor ---------------------------------------------------------------

PROPS = {
    "node": "pve",
    "vmid": 203.0,
    "engine": "ollama",
    "service": "ollama.service",
    "unit": "u",
    "unit_path": "/etc/systemd/system/ollama.service",
    "port": 11434.0,
    "model": "llama3.2:latest",
    "checks": [dict(c) for c in ollama.CHECKS],
    "pull": ["env", "OLLAMA_HOST=127.0.0.1:11434", "/usr/local/bin/ollama", "pull", "llama3.2"],
    "startup_timeout_s": 0,  # ready or not at the first probe: a zero deadline never sleeps
    "guest_name": "ol",
}
INPUTS = ModelServerInputs.from_props(PROPS)
UP = json.dumps({"health": 200, "models": []})
SERVING = json.dumps({"health": 200, "models": ["llama3.2:latest"]})


def test_the_steps_install_wait_for_the_server_pull_then_wait_for_the_model() -> None:
    install, answers, pull, serving = deploy_steps(INPUTS)
    assert install.stdin == "u" and install.argv[:4] == ["pct", "exec", "203", "--"]
    assert answers.until == "/api/tags answers 200, at most 0s"
    assert pull.argv == ["pct", "exec", "203", "--", *PROPS["pull"]] and pull.timeout_s == 3600
    assert serving.until == "/api/tags lists llama3.2:latest and /v1/models lists llama3.2:latest, at most 0s"
    no_pull = ModelServerInputs.from_props({**PROPS, "pull": []})
    assert [s.what for s in deploy_steps(no_pull)] == [
        "install ollama.service in CT 203",
        "probe ollama in CT 203",
    ]


def test_create_pulls_once_the_server_answers_and_returns_what_it_serves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    install, answers, pull, serving = deploy_steps(INPUTS)
    fake = ScriptedExecutor(
        [
            Answer(install.argv),
            Answer(answers.argv, stdout=UP),
            Answer(pull.argv, stdout="success\n"),
            Answer(serving.argv, stdout=SERVING),
        ]
    )
    result = on(ModelServerProvider(), fake, monkeypatch).create({**INPUTS.to_props(), "__provider": "p"})
    assert result.id == "203/ollama.service"
    assert result.outs == {
        **INPUTS.to_props(),
        "unit_sha256": sha256_text("u"),
        "active": True,
        "models": ["llama3.2:latest"],
    }
    assert fake.done()


def test_a_failed_pull_stops_the_deploy_naming_the_step(monkeypatch: pytest.MonkeyPatch) -> None:
    install, answers, pull, _serving = deploy_steps(INPUTS)
    fake = ScriptedExecutor(
        [
            Answer(install.argv),
            Answer(answers.argv, stdout=UP),
            Answer(pull.argv, 1, stderr="Error: pull model manifest: file does not exist\n"),
        ]
    )
    with pytest.raises(RemoteCommandError, match="pull llama3.2:latest in CT 203") as caught:
        on(ModelServerProvider(), fake, monkeypatch).create(INPUTS.to_props())
    assert "file does not exist" in caught.value.stderr_tail and fake.done()


def test_a_server_that_never_lists_the_model_fails_with_its_journal(monkeypatch: pytest.MonkeyPatch) -> None:
    no_pull = ModelServerInputs.from_props(
        {**PROPS, "pull": [], "engine": "llamacpp", "service": "llama-server.service"}
    )
    install, serving = deploy_steps(no_pull)
    fake = ScriptedExecutor(
        [
            Answer(install.argv),
            Answer(serving.argv, stdout=json.dumps({"health": 503, "models": []})),
            Answer(
                ["pct", "exec", "203", "--", "journalctl", "-u", "llama-server.service"],
                stdout="CUDA error: out of memory\n",
            ),
        ]
    )
    with pytest.raises(ModelServerNotReadyError) as caught:
        on(ModelServerProvider(), fake, monkeypatch).create(no_pull.to_props())
    message = str(caught.value)
    assert "llama.cpp server in CT 203 (ol) did not serve 'llama3.2:latest'" in message
    assert "journalctl -u llama-server.service" in message and "out of memory" in caught.value.journal_tail


def test_a_failed_update_puts_the_previous_unit_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """State keeps the previous inputs after a failed update: the guest gets the previous unit again."""
    new = ModelServerInputs.from_props({**PROPS, "unit": "new", "model": "missing:latest"})
    install, answers, pull, _serving = deploy_steps(new)
    restore = deploy_steps(INPUTS)[0]
    fake = ScriptedExecutor(
        [
            Answer(install.argv),
            Answer(answers.argv, stdout=UP),
            Answer(pull.argv, 1, stderr="Error: pull model manifest: file does not exist\n"),
            Answer(restore.argv),
        ]
    )
    with pytest.raises(RemoteCommandError, match="pull missing:latest") as caught:
        on(ModelServerProvider(), fake, monkeypatch).update("x", INPUTS.to_props(), new.to_props())
    assert [c.stdin for c in fake.calls] == ["new", None, None, "u"] and fake.done()
    assert not getattr(caught.value, "__notes__", [])  # the restore itself worked


def test_a_failed_restore_is_a_note_on_the_original_error(monkeypatch: pytest.MonkeyPatch) -> None:
    new = ModelServerInputs.from_props({**PROPS, "unit": "new", "pull": []})
    install, serving = deploy_steps(new)
    fake = ScriptedExecutor(
        [
            Answer(install.argv, 1, stderr="Failed to restart ollama.service\n"),
            Answer(deploy_steps(INPUTS)[0].argv, 255, stderr="CT 203 is not running\n"),
        ]
    )
    with pytest.raises(RemoteCommandError, match="install ollama.service in CT 203") as caught:
        on(ModelServerProvider(), fake, monkeypatch).update("x", INPUTS.to_props(), new.to_props())
    assert any(
        "restoring the previous ollama.service in CT 203 also failed" in n for n in caught.value.__notes__
    )


def test_a_new_unit_or_model_updates_and_a_new_guest_or_engine_replaces() -> None:
    provider = ModelServerProvider()
    for key, value in (("unit", "v"), ("model", "qwen3:8b"), ("pull", []), ("guest_instance", "9a")):
        moved = provider.diff("x", PROPS, {**PROPS, key: value})
        assert (moved.changes, moved.replaces) == (True, []), key
    for key, value in (("vmid", 204.0), ("engine", "llamacpp")):
        assert provider.diff("x", PROPS, {**PROPS, key: value}).replaces == [key]
    assert provider.diff("x", PROPS, dict(PROPS)).changes is False


def test_the_probe_argv_carries_the_checks_and_interpreters_as_data() -> None:
    argv = server_probe_argv(probe_of(INPUTS))
    assert argv[:6] == ["pct", "exec", "203", "--", "sh", "-c"]
    assert argv[-3:] == ["11434", json.dumps(PROPS["checks"], separators=(",", ":")), "python3"]


# --- GPU memory, counted across every engine on a GPU ---------------------------------------------------


def _with_engines(tmp_path: Path, llamacpp_mib: int) -> Path:
    """The dev config with an ollama and a llama.cpp guest on GPU 1 beside vLLM's 0.85 of its 49140 MiB."""
    config = tmp_path / "config"
    shutil.copytree(ROOT / "config", config)
    shutil.copytree(ROOT / "apparmor", tmp_path / "apparmor")
    path = config / "environments/dev/guests.json"
    doc = json.loads(path.read_text())
    net = {"bridge": "vmbr0", "gateway": "10.0.10.1"}
    doc["containers"] += [
        {
            "vmid": 203,
            "hostname": "ollama-a",
            "layer": "ollama",
            "network": {**net, "ip": "10.0.10.203/24"},
            "gpus": [1],
            "ollama": {"model": "llama3.2:3b", "gpu_memory_mib": 4096},
        },
        {
            "vmid": 204,
            "hostname": "llamacpp-a",
            "layer": "llamacpp",
            "network": {**net, "ip": "10.0.10.204/24"},
            "gpus": [1],
            "llamacpp": {"hf_repo": "a/b", "served_model_name": "b", "gpu_memory_mib": llamacpp_mib},
        },
    ]
    path.write_text(json.dumps(doc))
    return config


def test_the_engines_on_a_gpu_may_fill_it_exactly_and_one_more_mib_is_refused(tmp_path: Path) -> None:
    vllm_share = 0.85 * 49140  # 41769 MiB
    fits = int(49140 - vllm_share - 4096)  # what is left on GPU 1 for the llama.cpp server: 3275 MiB
    env = load_environment(_with_engines(tmp_path / "a", fits), "dev")
    shares = gpu_accounting(env.host, env.guests)[1]
    assert [(s.engine, round(s.mib)) for s in shares] == [
        ("vllm", 41769),
        ("ollama", 4096),
        ("llamacpp", fits),
    ]
    assert sum(s.mib for s in shares) == pytest.approx(49140)

    with pytest.raises(ConfigError) as refused:
        load_environment(_with_engines(tmp_path / "b", fits + 1), "dev")
    assert (
        "containers[3].llamacpp.gpu_memory_mib (CT 204 llamacpp-a): GPU 1 is oversubscribed: 49141 MiB > its "
        "49140 MiB (containers[1] (CT 202 vllm-granite) vllm 0.85 = 41769 MiB, containers[2] (CT 203 "
        f"ollama-a) ollama 4096 MiB, containers[3] (CT 204 llamacpp-a) llamacpp {fits + 1} MiB)"
    ) in str(refused.value)
