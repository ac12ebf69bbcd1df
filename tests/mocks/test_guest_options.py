"""A guest's resolver, second NIC and tags under mocks: what the container and the VM resources get."""

from __future__ import annotations

from pathlib import Path

from phoenix_components.config.load import load_environment
from phoenix_components.program import build
from tests.mocks.test_guest_order import _config
from tests.mocks.test_program import run_program
from tests.support.recording import install

OPTIONS = {
    "dns": {"nameserver": ["10.0.10.53"], "searchdomain": "lab.internal"},
    "tags": ["Stack", "apps"],
}


def test_dns_nics_and_tags_reach_the_container_and_the_vm(tmp_path: Path) -> None:
    second = {"bridge": "vmbr0", "ip": "10.0.10.140/24", "mac": "BC:24:11:00:00:40"}
    config = _config(
        tmp_path,
        {
            201: {**OPTIONS, "networks": [second]},
            231: {**OPTIONS, "networks": [second | {"ip": "dhcp", "mac": "BC:24:11:00:00:41"}]},
        },
    )
    env = load_environment(config, "dev")
    monitor = install("dev", {"phoenix:environment": "dev"})
    run_program(lambda: build(env))
    regs = monitor.by_name()

    params = regs["ct-201-container"].inputs["params"]
    assert params["net1"] == "name=eth1,bridge=vmbr0,ip=10.0.10.140/24,hwaddr=BC:24:11:00:00:40,firewall=1"
    assert (params["nameserver"], params["searchdomain"], params["tags"]) == (
        "10.0.10.53",
        "lab.internal",
        "apps;stack",
    )
    assert not {"net1", "nameserver", "tags"} & set(regs["ct-202-container"].inputs["params"])
    vm = regs["vm-231-vm"].inputs
    assert [d["macAddress"] for d in vm["networkDevices"]][1:] == ["BC:24:11:00:00:41"]
    assert [c["ipv4"]["address"] for c in vm["initialization"]["ipConfigs"]][1:] == ["dhcp"]
    assert vm["initialization"]["dns"] == {"servers": ["10.0.10.53"], "domain": "lab.internal"}
    assert vm["tags"] == ["apps", "stack"]
