"""Model servers as engines, end to end on the lab under the real engine: an ollama guest and a llama.cpp
guest serve beside a vLLM guest, each gated on its own engine's endpoints, with GPU memory accounted across
all three on the one GPU they share.

The stack is this module's own ``lab_stack`` (tests/lab/e2e.py): the product chain on the lab (its ollama and
llamacpp layers run the TEST-ONLY stand-ins of tests/lab/standins/features) and three guests on GPU 0 of the
lab's two 16384 MiB GPUs: vLLM at 0.5 (8192 MiB), ollama 4096 MiB, llama.cpp 4096 MiB: the GPU exactly full.
What serves is asked directly over HTTP (the lab's containers share this machine's network namespace) and
inside the guests (``systemctl is-active`` of the lab's systemctl stand-in), not only from the outputs.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from pulumi.automation import CommandError

from phoenix_components.cli.plan import build_plan, render_plan
from phoenix_components.config.errors import ConfigError
from phoenix_components.config.load import gpu_accounting
from tests.cli.test_lab_e2e import assert_guest_serving, dynamic_ops, is_dynamic, short
from tests.lab.e2e import LabGuest, LabStack

pytestmark = [pytest.mark.lab, pytest.mark.cli]

VLLM = LabGuest(801, gpu=0, served="tiny-a", gpu_memory_utilization=0.5)
OLLAMA = LabGuest(803, gpu=0, served="tiny-ollama", engine="ollama", gpu_memory_mib=4096)
LLAMACPP = LabGuest(804, gpu=0, served="tiny-llama", engine="llamacpp", gpu_memory_mib=4096)
GUESTS = [VLLM, OLLAMA, LLAMACPP]
SERVICES = {"ollama": "ollama.service", "llamacpp": "llama-server.service"}


@pytest.fixture(scope="module")
def stack(lab_stack: LabStack) -> LabStack:
    lab_stack.set_guests(GUESTS)
    return lab_stack


def get(port: int, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_gpu_memory_is_counted_across_the_three_engines_and_one_more_mib_is_refused(stack: LabStack) -> None:
    env = stack.environment()
    shares = gpu_accounting(env.host, env.guests)
    assert list(shares) == [0]
    assert [(s.engine, s.mib) for s in shares[0]] == [("vllm", 8192.0), ("ollama", 4096), ("llamacpp", 4096)]
    plan = render_plan(env, build_plan(env))
    print("\n" + plan[plan.index("GPU memory") :])
    assert "  GPU 0: 16384 of 16384 MiB" in plan
    assert "CT 804 lab-llamacpp-804 llamacpp 4096 MiB" in plan

    try:
        stack.set_guests(
            [VLLM, OLLAMA, LabGuest(804, gpu=0, served="tiny-llama", engine="llamacpp", gpu_memory_mib=4097)]
        )
        with pytest.raises(ConfigError) as refused:
            stack.environment()
    finally:
        stack.set_guests(GUESTS)
    print(f"one more MiB: {refused.value}")
    assert "GPU 0 is oversubscribed: 16385 MiB > its 16384 MiB" in str(refused.value)
    assert "containers[2].llamacpp.gpu_memory_mib (CT 804 lab-llamacpp-804)" in str(refused.value)


def test_ollama_and_llamacpp_serve_gated_on_their_own_endpoints_beside_vllm(stack: LabStack) -> None:
    report = stack.ensure_up()
    ops = dynamic_ops(report)
    assert {ops[name] for name in ("ct-801-vllm", "ct-803-ollama", "ct-804-llamacpp")} == {"create"}
    outputs = {
        name: dict(stack.engine.resource(name).outputs) for name in ("ct-803-ollama", "ct-804-llamacpp")
    }
    # The deploy pulled the model: it was done once /api/tags listed it, and both endpoints list it now.
    assert outputs["ct-803-ollama"]["models"] == ["tiny-ollama:latest"]
    assert get(OLLAMA.port, "/api/tags")[1]["models"][0]["name"] == "tiny-ollama:latest"
    assert [m["id"] for m in get(OLLAMA.port, "/v1/models")[1]["data"]] == ["tiny-ollama:latest"]
    assert outputs["ct-804-llamacpp"]["models"] == ["tiny-llama"]
    assert get(LLAMACPP.port, "/health") == (200, {"status": "ok"})
    assert [m["id"] for m in get(LLAMACPP.port, "/v1/models")[1]["data"]] == ["tiny-llama"]
    for guest in (OLLAMA, LLAMACPP):
        active = stack.guest_exec(guest.vmid, "systemctl", "is-active", SERVICES[guest.engine])
        assert active.stdout.strip() == "active", guest
        unit = stack.guest_exec(guest.vmid, "cat", f"/etc/systemd/system/{SERVICES[guest.engine]}").stdout
        assert unit == dict(stack.engine.resource(f"ct-{guest.vmid}-{guest.engine}").outputs)["unit"]
    journal = stack.guest_exec(OLLAMA.vmid, "journalctl", "-u", "ollama.service", "-n", "50").stdout
    assert "pulled tiny-ollama:latest" in journal  # `ollama pull` went through the running server
    unit = stack.guest_exec(LLAMACPP.vmid, "cat", "/etc/systemd/system/llama-server.service").stdout
    assert '"-hf" "phoenix-lab/tiny-GGUF:Q4_K_M" "--alias" "tiny-llama"' in unit and '"-ngl" "99"' in unit
    assert_guest_serving(stack, VLLM)


def test_a_second_up_changes_nothing(stack: LabStack) -> None:
    stack.ensure_up()
    report = stack.up()
    assert report.changes == 0 and set(report.summary) == {"same"}


def test_a_model_that_cannot_be_pulled_fails_the_deploy_naming_the_pull_then_a_fix_converges(
    stack: LabStack,
) -> None:
    stack.ensure_up()
    missing = LabGuest(803, gpu=0, served="lab-standin-missing", engine="ollama", gpu_memory_mib=4096)
    try:
        stack.set_guests([VLLM, missing, LLAMACPP])
        started = time.monotonic()
        with pytest.raises(CommandError) as caught:
            stack.up()
        details = str(caught.value)
        print(f"\nunpullable model: failed after {time.monotonic() - started:.1f}s")
        assert "pull lab-standin-missing:latest in CT 803" in details
        assert "pull model manifest: file does not exist" in details
        # The failed update put the previous unit back: the guest runs what the state (old inputs) says.
        stored = dict(stack.engine.resource("ct-803-ollama").outputs)
        unit = stack.guest_exec(OLLAMA.vmid, "cat", "/etc/systemd/system/ollama.service").stdout
        assert unit == stored["unit"] and "ollama serving tiny-ollama" in unit
        assert "restoring the previous" not in details  # the restore itself did not fail
    finally:
        stack.set_guests(GUESTS)
    report = stack.up()
    changed = {short(u): op for u, op in report.changed.items() if is_dynamic(u)}
    print(f"after the fix: {changed}")
    # The server is as the state says already: set back, its config is no change.
    assert "ct-803-ollama" not in changed and changed.get("ct-803-container") == "update"
    assert get(OLLAMA.port, "/api/tags")[1]["models"] == [
        {"name": "tiny-ollama:latest", "model": "tiny-ollama:latest", "size": 0}
    ]
    assert (
        stack.guest_exec(OLLAMA.vmid, "systemctl", "is-active", "ollama.service").stdout.strip() == "active"
    )


def test_a_llamacpp_server_that_never_loads_fails_with_its_journal_tail(stack: LabStack) -> None:
    stack.ensure_up()
    broken = LabGuest(
        805, gpu=1, served="tiny-broken", engine="llamacpp", gpu_memory_mib=1024, startup_timeout_s=10
    )
    # A model file that is not there: the stand-in, like llama-server, exits before it listens.
    config = broken.to_json()
    try:
        stack.set_guests([*GUESTS, broken])
        guests_file = stack.config / "environments" / "lab" / "guests.json"
        doc = json.loads(guests_file.read_text())
        doc["containers"][-1]["llamacpp"] = {
            **{k: v for k, v in config["llamacpp"].items() if k != "hf_repo"},
            "model_path": "/models/not-there.gguf",
        }
        guests_file.write_text(json.dumps(doc, indent=2))
        with pytest.raises(CommandError) as caught:
            stack.up()
        details = str(caught.value)
        assert (
            "llama.cpp server in CT 805 (lab-llamacpp-805) did not serve 'tiny-broken' within 10s" in details
        )
        assert "--- journalctl -u llama-server.service (tail) ---" in details
        assert "failed to open /models/not-there.gguf" in details
    finally:
        stack.set_guests(GUESTS)
    report = stack.up()  # the broken guest leaves with its config entry
    assert "ct-805-container" in {short(u) for u, op in report.changed.items() if op == "delete"}
