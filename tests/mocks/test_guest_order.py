"""Guests `after` others under mocks: each guest's resources wait for the whole component of the guests it
names (container, features, a vLLM service's health gate), and PVE gets the derived boot order."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from phoenix_components.config.load import load_environment
from phoenix_components.program import build
from tests.mocks.test_program import ROOT, run_program
from tests.support.recording import install


def _config(tmp_path: Path, edit: dict[int, dict[str, object]]) -> Path:
    shutil.copytree(ROOT / "config", tmp_path / "config")
    shutil.copytree(ROOT / "apparmor", tmp_path / "apparmor")
    guests_file = tmp_path / "config/environments/dev/guests.json"
    doc = json.loads(guests_file.read_text())
    for guest in [*doc["containers"], *doc["vms"]]:
        guest.update(edit.get(guest["vmid"], {}))
    guests_file.write_text(json.dumps(doc))
    return tmp_path / "config"


def test_a_guest_after_another_waits_for_its_health_gate_and_boots_later(tmp_path: Path) -> None:
    # CT 201 waits for CT 202 (a vLLM guest: its service is the health gate); VM 231 waits for CT 201.
    env = load_environment(_config(tmp_path, {201: {"after": [202]}, 231: {"after": [201]}}), "dev")
    monitor = install("dev", {"phoenix:environment": "dev"})
    run_program(lambda: build(env))
    regs = monitor.by_name()

    first = regs["ct-202-vllm"]
    assert first.urn in regs["ct-201-container"].dependencies  # created and started after 202 is healthy
    assert regs["ct-202-container"].urn in regs["ct-201-container"].dependencies
    assert regs["ct-201-vllm"].urn in regs["vm-231-vm"].dependencies
    assert regs["ct-201-container"].urn not in regs["ct-202-container"].dependencies
    # The derived boot order: depth in the dependency graph (202: 0, 201: 1, 231: 2).
    assert regs["ct-202-container"].inputs["params"]["startup"] == "order=0"
    assert regs["ct-201-container"].inputs["params"]["startup"] == "order=1"
    assert regs["vm-231-vm"].inputs["startup"] == {"order": 2}


def test_a_given_order_and_delays_are_kept_and_no_dependency_sends_no_order(tmp_path: Path) -> None:
    config = _config(tmp_path, {202: {"after": [201], "startup": {"up": 30}}, 201: {"startup": {"order": 4}}})
    env = load_environment(config, "dev")
    monitor = install("dev", {"phoenix:environment": "dev"})
    run_program(lambda: build(env))
    regs = monitor.by_name()
    assert regs["ct-201-container"].inputs["params"]["startup"] == "order=4"
    assert regs["ct-202-container"].inputs["params"]["startup"] == "order=5,up=30"
    assert "startup" not in regs["vm-231-vm"].inputs  # in no dependency, no startup given: nothing sent
