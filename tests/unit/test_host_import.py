"""`phoenix import --from-host`'s reading and reporting (phoenix_components/cli/host_import.py) over the
fake PVE host of the unit tests (tests/support/fakes.FakePve, both channels on one model): only GETs and
``cat`` reach the host; declared guests, layers and templates are left out; each imported entry comes with
what it could not carry and what its first up would send. The lab proves the same against fakepve and a
real sshd under the real CLI (tests/cli/test_lab_adopt.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from phoenix_components.cli.host_import import (
    environment_problems,
    host_gpus,
    import_guest,
    read_host,
    stack_config,
)
from phoenix_components.config.load import load_environment
from phoenix_components.config.models import Container
from tests.support.fakes import Answer, FakePve, ScriptedExecutor

CONFIG = Path(__file__).resolve().parents[2] / "config"
NVIDIA = Path(__file__).resolve().parents[1] / "fixtures" / "nvidia" / "2gpu"
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


def managed_driver_read() -> str:
    """The NVIDIA driver resource's batched read on the dev host (its GPUs at host.json's PCI addresses),
    from the 2-GPU fixture, with the kernel's minors the other way round from nvidia-smi's index."""
    buses = {"0000:01:00.0": "0000:41:00.0", "0000:08:00.0": "0000:42:00.0"}
    query = (NVIDIA / "query-gpu.csv").read_text().replace("00000000:01:00.0", "00000000:41:00.0")
    query = query.replace("00000000:08:00.0", "00000000:42:00.0")
    infos = []
    for old, new in buses.items():
        text = (NVIDIA / "gpus" / old / "information").read_text().replace(old, new)
        minor = "1" if new.endswith("41:00.0") else "0"
        infos.append(
            "\n".join(
                f"Device Minor: \t {minor}" if line.startswith("Device Minor") else line
                for line in text.splitlines()
            )
            + "\n"
        )
    parts = [
        f"@@driver_version 0\n{(NVIDIA / 'driver-version.txt').read_text()}",
        f"@@gpus 0\n{query}",
        f"@@devices\n{(NVIDIA / 'devices').read_text()}",
        *(f"@@information\n{text}" for text in infos),
    ]
    return "".join(parts)


def test_on_a_managed_driver_host_devn_is_mapped_by_the_minors_the_driver_reads() -> None:
    env = load_environment(CONFIG, "dev")
    assert env.host.nvidia is not None and env.host.nvidia.manage, "dev's driver is Phoenix's"
    assert all(gpu.minor is None for gpu in env.host.gpus), "so host.json declares no minors"
    ssh = ScriptedExecutor([Answer(["sh", "-c"], stdout=managed_driver_read())])
    gpus = host_gpus(env, ssh)  # type: ignore[arg-type]  # the fake's surface
    assert [(g.index, g.minor) for g in gpus] == [(0, 1), (1, 0)]
    assert len(ssh.calls) == 1 and "phoenix-nvidia-read" in ssh.calls[0].argv, "the driver's read only"
    pve = host()
    pve.guests[120].config["dev0"] = "/dev/nvidia0,mode=0666"
    live, _skipped = read_host(pve, pve.shell(), env)  # type: ignore[arg-type]
    web, report = import_guest(live[0], env, gpus)
    assert web.entry is not None and web.entry["gpus"] == [1], "/dev/nvidia0 is minor 0: GPU index 1"
    assert all(u["key"] != "dev0" for u in report.unmapped)
    _unmapped, before = import_guest(live[0], env)
    assert any(u["key"] == "dev0" for u in before.unmapped), "without the read it cannot be mapped"


def test_with_no_driver_installed_yet_the_gpus_stay_as_declared() -> None:
    env = load_environment(CONFIG, "dev")
    ssh = ScriptedExecutor([Answer(["sh", "-c"], stdout="@@absent\n")])
    assert host_gpus(env, ssh) == list(env.host.gpus)  # type: ignore[arg-type]
