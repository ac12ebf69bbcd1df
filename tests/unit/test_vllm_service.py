"""VllmService's pure parts: probe parsing, readiness, the deadline loop, the status read."""

from __future__ import annotations

import json

from providers.vllm_service import (
    VllmServiceProvider,
    parse_probe,
    parse_status,
    ready,
    unit_sha,
    wait_until_ready,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_ready_needs_health_and_the_served_model() -> None:
    assert ready({"health": 200, "models": ["qwen"]}, "qwen")
    assert not ready({"health": 200, "models": ["other"]}, "qwen")
    assert not ready({"health": 503, "models": ["qwen"]}, "qwen")


def test_probe_output_parsing_tolerates_noise() -> None:
    line = json.dumps({"health": 200, "models": ["m"]})
    assert parse_probe(f"warning: something\n{line}\n") == {"health": 200, "models": ["m"]}
    assert parse_probe("garbage")["health"] == 0


def test_wait_returns_as_soon_as_ready() -> None:
    clock = FakeClock()
    answers = iter([{"health": 0}, {"health": 200, "models": []}, {"health": 200, "models": ["m"]}])
    ok, last = wait_until_ready(lambda: next(answers), "m", 60, clock=clock, sleep=clock.sleep)
    assert ok and last["models"] == ["m"]
    assert len(clock.sleeps) == 2


def test_wait_gives_up_at_the_deadline_with_the_last_probe() -> None:
    clock = FakeClock()
    probes = 0

    def probe() -> dict[str, object]:
        nonlocal probes
        probes += 1
        return {"health": 503, "error": f"loading {probes}"}

    ok, last = wait_until_ready(probe, "m", 30, clock=clock, sleep=clock.sleep)
    assert not ok
    assert clock.now == 30  # never sleeps past the deadline
    assert last["error"] == f"loading {probes}"
    assert max(clock.sleeps) <= 10.0


def test_status_read_and_unit_drift() -> None:
    sha = unit_sha("[Unit]\n")
    assert parse_status(f"{sha}  /etc/systemd/system/vllm.service\nactive\n") == (sha, "active")
    assert parse_status("missing -\ninactive\n") == (None, "inactive")


PROPS = {
    "node": "pve",
    "vmid": 201.0,
    "unit": "a",
    "unit_path": "/u",
    "served_model_name": "m",
    "port": 8000.0,
    "guest_instance": "0f1e",
}


def test_a_new_unit_updates_and_a_new_guest_replaces() -> None:
    props = PROPS
    provider = VllmServiceProvider()
    assert provider.diff("x", props, {**props, "unit": "b"}).replaces == []
    assert provider.diff("x", props, {**props, "unit": "b"}).changes is True
    assert provider.diff("x", props, {**props, "vmid": 202.0}).replaces == ["vmid"]


def test_a_new_guest_instance_deploys_again_in_place() -> None:
    """A replaced guest keeps its vmid; only its instance says the service must be deployed into it again,
    as an update: a replace's late delete would disable the service just deployed in the new container."""
    provider = VllmServiceProvider()
    moved = provider.diff("x", PROPS, {**PROPS, "guest_instance": "9a8b"})
    assert (moved.changes, moved.replaces) == (True, [])
    assert provider.diff("x", PROPS, dict(PROPS)).changes is False
