"""VllmService: probe parsing, readiness, the deadline loop, the status read, and each CRUD operation
over a scripted executor."""

from __future__ import annotations

import json
from typing import Any

import pytest

from providers.channels.command import sha256_text, write_file_argv
from providers.errors import RemoteCommandError
from providers.vllm_service import (
    PROVIDER_VERSION,
    RESTART,
    SERVICE,
    VllmNotReadyError,
    VllmServiceInputs,
    VllmServiceProvider,
    install_argv,
    parse_probe,
    parse_status,
    probe_argv,
    ready,
    remove_argv,
    status_argv,
    wait_until_ready,
)
from tests.support.fakes import ANY, Answer, ScriptedExecutor, on


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
    sha = sha256_text("[Unit]\n")
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


# --- CRUD over a scripted executor ---------------------------------------------------------------------

INPUTS = VllmServiceInputs.from_props({**PROPS, "startup_timeout_s": 0})
"""Ready or not at the first probe: a zero deadline never sleeps."""
READY = json.dumps({"health": 200, "models": ["m"]})
STORED = {
    **INPUTS.to_props(),
    "unit_sha256": sha256_text("a"),
    "active": True,
    "models": ["m"],
    "__provider": "pickle",
}


def test_the_unit_is_written_atomically_in_the_guest_then_restarted_in_the_same_session() -> None:
    write = write_file_argv("/u", 0o644, then=RESTART, args=[SERVICE])
    assert install_argv(INPUTS) == ["pct", "exec", "201", "--", *write]
    assert write[-1] == SERVICE and "systemctl restart" in write[2]


def test_create_installs_then_waits_for_the_served_model(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ScriptedExecutor([Answer(install_argv(INPUTS)), Answer(probe_argv(INPUTS), stdout=READY + "\n")])
    result = on(VllmServiceProvider(), fake, monkeypatch).create({**INPUTS.to_props(), "__provider": "p"})
    assert result.id == f"201/{SERVICE}"
    assert result.outs == {k: v for k, v in STORED.items() if k != "__provider"}
    assert fake.calls[0].stdin == "a" and fake.calls[1].timeout == 30 and fake.done()


def test_a_server_not_ready_by_the_deadline_fails_with_its_journal(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ScriptedExecutor(
        [
            Answer(install_argv(INPUTS)),
            Answer(probe_argv(INPUTS), stdout=json.dumps({"health": 503, "models": []})),
            Answer(["pct", "exec", "201", "--", "journalctl", "-u", SERVICE], stdout="CUDA out of memory\n"),
            # A failed update keeps the previous inputs in state: their unit goes back into the guest.
            Answer(install_argv(INPUTS)),
        ]
    )
    with pytest.raises(VllmNotReadyError) as caught:
        on(VllmServiceProvider(), fake, monkeypatch).update(
            "x", STORED, {**INPUTS.to_props(), "guest_name": "q"}
        )
    assert "CT 201 (q)" in str(caught.value) and "CUDA out of memory" in caught.value.journal_tail
    assert fake.done() and not getattr(caught.value, "__notes__", [])  # the restore worked


def test_a_failed_install_stops_before_any_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ScriptedExecutor([Answer(install_argv(INPUTS), 1, stderr="Failed to restart vllm.service\n")])
    with pytest.raises(RemoteCommandError, match="install vllm.service in CT 201"):
        on(VllmServiceProvider(), fake, monkeypatch).create(INPUTS.to_props())
    assert len(fake.calls) == 1


@pytest.mark.parametrize(
    ("exit_status", "stdout", "want"),
    [
        (0, f"{sha256_text('a')}  /u\nactive\n", {}),
        (
            0,
            "ab12  /u\nfailed\n",
            {"unit": "# edited on the host (sha256 ab12)\n", "unit_sha256": "ab12", "active": False},
        ),
        (0, "missing -\ninactive\n", None),
        (255, "", None),  # the guest is gone or stopped
    ],
)
def test_read_reports_the_service_as_the_guest_has_it(
    monkeypatch: pytest.MonkeyPatch, exit_status: int, stdout: str, want: dict[str, Any] | None
) -> None:
    fake = ScriptedExecutor([Answer(status_argv(INPUTS), exit_status, stdout=stdout)])
    result = on(VllmServiceProvider(), fake, monkeypatch).read("x", dict(STORED))
    if want is None:
        assert (result.id, result.outs) == (None, {})
    else:
        assert result.id == "x"
        assert result.outs == {**{k: v for k, v in STORED.items() if k != "__provider"}, **want}


def test_delete_removes_the_unit_and_tolerates_a_guest_already_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    gone = "Configuration file 'nodes/pve/lxc/201.conf' does not exist\n"
    fake = ScriptedExecutor([Answer(remove_argv(INPUTS), 255, stderr=gone)])
    on(VllmServiceProvider(), fake, monkeypatch).delete("x", dict(STORED))
    assert fake.done()
    fake = ScriptedExecutor([Answer(["pct", "exec", "201", "--", "sh", "-c", ANY], 1, stderr="boom\n")])
    with pytest.raises(RemoteCommandError, match="boom"):
        on(VllmServiceProvider(), fake, monkeypatch).delete("x", dict(STORED))


def test_check_fills_defaults_and_names_missing_inputs() -> None:
    checked = VllmServiceProvider().check({}, {"node": "pve", "vmid": 201})
    assert checked.inputs["startup_timeout_s"] == 900 and checked.inputs["version"] == PROVIDER_VERSION
    assert sorted(f.property for f in checked.failures) == ["port", "served_model_name", "unit", "unit_path"]
