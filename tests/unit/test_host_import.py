"""`phoenix import --from-host`'s reading and reporting (phoenix_components/cli/host_import.py) over the
fake PVE host of the unit tests (tests/support/fakes.FakePve, both channels on one model): only GETs and
``cat`` reach the host; declared guests, layers and templates are left out; each imported entry comes with
what it could not carry and what its first up would send. The lab proves the same against fakepve and a
real sshd under the real CLI (tests/cli/test_lab_adopt.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from phoenix_components.cli.host_import import environment_problems, import_guest, read_host, stack_config
from phoenix_components.config.load import load_environment
from phoenix_components.config.models import Container
from tests.support.fakes import FakePve

CONFIG = Path(__file__).resolve().parents[2] / "config"
NET = "name=eth0,bridge=vmbr0,firewall=1,hwaddr=BC:24:11:00:00:AA,ip=10.0.10.77/24,type=veth"


def host() -> FakePve:
    """The dev environment's node with a declared guest (201), a layer (9001), a template outside the
    layers range (150) and two containers made by hand (120, 130)."""
    env = load_environment(CONFIG, "dev")
    pve = FakePve(node=env.host.node)
    pve.add_guest(201, status="running", config={"hostname": "vllm-qwen", "unprivileged": 1, "net0": NET})
    pve.add_guest(9001, template=True, config={"hostname": "layer-base", "unprivileged": 1})
    pve.add_guest(150, template=True, config={"hostname": "golden", "unprivileged": 1, "net0": NET})
    made = {"unprivileged": 1, "cores": 2, "memory": 1024, "swap": 0, "onboot": 1, "net0": NET}
    pve.add_guest(120, status="running", config={"hostname": "web", **made})
    pve.add_guest(
        130, config={"hostname": "old-db", **made, "net0": NET.replace("AA", "AB").replace("77", "78")}
    )
    pve.guests[120].raw_lines = [
        "lxc.apparmor.profile: lxc-container-default-cgns",
        "lxc.mount.auto: proc:rw",
    ]
    pve.guests[120].firewall_options = {"enable": 1, "policy_in": "DROP", "policy_out": "ACCEPT"}
    pve.guests[120].firewall_rules = [
        {"type": "in", "action": "ACCEPT", "proto": "tcp", "dport": "443", "enable": 1}
    ]
    return pve


def test_only_unmanaged_guests_are_read_and_only_with_gets_and_cat() -> None:
    env = load_environment(CONFIG, "dev")
    pve = host()
    live, skipped = read_host(pve, pve.shell(), env)  # type: ignore[arg-type]  # the fake's surface
    assert [g.vmid for g in live] == [120, 130]
    assert [(s.vmid, s.reason) for s in skipped] == [
        (150, "a template, not a guest"),
        (9001, "in the layers range 9000-9099: a Phoenix layer"),
    ]
    assert pve.mutations == [], "nothing on the host changes"
    assert {call.method for call in pve.calls} == {"GET"}
    shell_commands = [line for channel, line in pve.timeline if channel == "ssh"]
    assert shell_commands == ["cat /etc/pve/lxc/120.conf", "cat /etc/pve/lxc/130.conf"]


def test_each_entry_validates_and_its_report_says_what_the_first_up_would_send() -> None:
    env = load_environment(CONFIG, "dev")
    pve = host()
    live, _skipped = read_host(pve, pve.shell(), env)  # type: ignore[arg-type]
    web, report = import_guest(live[0], env)
    assert web.entry is not None and report.imported and report.invalid == []
    assert web.entry["firewall"]["rules"] == [
        {"direction": "in", "action": "ACCEPT", "proto": "tcp", "dport": "443"}
    ]
    assert report.unmapped == [
        {
            "key": "lxc.mount.auto",
            "reason": "a raw line Phoenix declares no field for: left in the config file as it is",
        }
    ]
    assert report.first_up_sends == {}, "the entry carries the guest exactly: adopting it sends nothing"
    _db, db_report = import_guest(live[1], env)
    assert db_report.first_up_sends == {}


def test_the_stack_config_is_read_without_the_cli_as_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert stack_config("dev", CONFIG.parent) == {}, "no Pulumi CLI: the PHOENIX_* variables are used"


def test_an_entry_validation_would_refuse_beside_the_declared_guests_is_reported_with_why() -> None:
    env = load_environment(CONFIG, "dev")
    pve = host()
    taken = env.guests.containers[0].network.ip  # CT 201's address
    pve.guests[130].config["net0"] = NET.replace("AA", "AB").replace("10.0.10.77/24", taken)
    live, _skipped = read_host(pve, pve.shell(), env)  # type: ignore[arg-type]
    results = [import_guest(guest, env) for guest in live]
    valid = [Container.model_validate(r.entry) for r, _report in results if r.entry is not None]
    by_vmid, rest = environment_problems(env, valid)
    address = taken.split("/")[0]
    assert by_vmid == {130: [f"network.ip: IP address {address} is already used at containers[0].network.ip"]}
    assert rest == []
