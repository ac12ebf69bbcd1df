"""Start order and dependencies, end to end on the lab under the real engine: a guest `after` another is
created and started only once the other serves (its vLLM health gate), and PVE's config holds the boot
order Phoenix derived from the dependency and the delay the guest declared.

The stack is this module's own ``lab_stack`` (tests/lab/e2e.py): the product chain on the lab and two vLLM
guests, CT 801 after CT 802. The order is read from fakepve's request log (independent of the providers'
own bookkeeping) and its stored configs.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from pulumi.automation import CommandError

from tests.cli.test_lab_e2e import assert_guest_serving, dynamic_ops, lxc_cts
from tests.lab.e2e import LabGuest, LabStack
from tests.lab.host import make_standin_node

pytestmark = [pytest.mark.lab, pytest.mark.cli]


@pytest.fixture(scope="module")
def stack(lab_stack: LabStack) -> LabStack:
    """801 starts after 802; 802 declares a start delay but no order (so Phoenix derives it)."""
    lab_stack.set_guests(
        [
            LabGuest(801, gpu=0, served="tiny-a", after=(802,)),
            LabGuest(802, gpu=1, served="tiny-b", startup=(("up", 2),), options=OPTIONS),
        ]
    )
    return lab_stack


# Guest options that reach PVE as config keys (dns, tags, a second NIC) and raw lines (environment).
ENVIRONMENT = {"HF_HOME": "/models/hf cache", "GREETING": "a=$b 'c'"}
OPTIONS = (
    ("dns", {"nameserver": ["10.99.0.53", "10.99.0.54"], "searchdomain": "lab.internal"}),
    ("tags", ["Lab", "apps"]),
    (
        "networks",
        [{"bridge": "vmbr0", "ip": "10.99.0.212/24", "mac": "BC:24:11:99:08:F2", "firewall": False}],
    ),
    ("environment", ENVIRONMENT),
)


def first(requests: list[tuple[str, str]], vmid: int) -> int:
    """Index of the first request fakepve received that names CT ``vmid``."""
    return next(i for i, (_m, path) in enumerate(requests) if f"/lxc/{vmid}/" in f"{path}/")


def test_a_guest_after_another_starts_once_the_other_serves_and_pve_keeps_the_order(stack: LabStack) -> None:
    since = len(stack.host.pve.requests())
    report = stack.ensure_up()
    assert {dynamic_ops(report)[f"ct-{v}-{part}"] for v in (801, 802) for part in ("container", "vllm")} == {
        "create"
    }
    cts = lxc_cts(stack)
    print(f"\nPVE startup: 801 {cts[801].get('startup')!r}, 802 {cts[802].get('startup')!r}")
    assert cts[802]["startup"] == "order=0,up=2"  # the given delay, the derived order (depth 0)
    assert cts[801]["startup"] == "order=1"  # one more than the guest it is after
    assert (cts[801]["onboot"], cts[802]["onboot"]) == (1, 1)

    requests = stack.host.pve.requests()[since:]
    started = {
        vmid: requests.index(("POST", path))
        for vmid in (801, 802)
        for path in [p for m, p in requests if m == "POST" and p.endswith(f"/lxc/{vmid}/status/start")][:1]
    }
    print(f"request log: 802 started at #{started[802]}, 801 first named at #{first(requests, 801)}")
    # Nothing of 801 reached PVE before 802 was started (and, by the engine, before it served).
    assert started[802] < first(requests, 801) < started[801]
    for guest in stack.guests:
        assert_guest_serving(stack, guest)


def environment_lines(stack: LabStack, vmid: int) -> list[str]:
    """The ``lxc.environment`` lines of the container's /etc/pve/lxc/<vmid>.conf (its main section)."""
    main = stack.host.pve_conf(vmid).read_text().partition("\n[")[0]
    return [line for line in main.splitlines() if line.startswith("lxc.environment")]


def test_dns_tags_more_nics_and_the_environment_reach_pve(stack: LabStack) -> None:
    stack.ensure_up()
    config = lxc_cts(stack)[802]
    print(f"\nPVE config of 802: nameserver {config.get('nameserver')!r}, tags {config.get('tags')!r}")
    assert config["nameserver"] == "10.99.0.53 10.99.0.54"
    assert config["searchdomain"] == "lab.internal"
    assert config["tags"] == "apps;lab"  # as PVE keeps them: lower-case, sorted
    assert "hwaddr=BC:24:11:99:08:F2" in config["net1"] and "ip=10.99.0.212/24" in config["net1"]
    assert environment_lines(stack, 802) == [
        "lxc.environment: GREETING=a=$b 'c'",
        "lxc.environment: HF_HOME=/models/hf cache",
        "lxc.environment: PHOENIX_GUEST_ENVIRONMENT=GREETING,HF_HOME",
    ]
    assert "nameserver" not in lxc_cts(stack)[801] and environment_lines(stack, 801) == []


def test_a_changed_environment_rewrites_its_lines_with_a_restart_and_removing_it_leaves_none(
    stack: LabStack,
) -> None:
    stack.ensure_up()
    guests = {g.vmid: g for g in stack.guests}
    less = tuple((k, {"HF_HOME": "/models/hf"} if k == "environment" else v) for k, v in OPTIONS)
    stack.set_guests([guests[801], replace(guests[802], options=less)])
    since = len(stack.host.pve.requests())
    report = stack.up()
    assert dynamic_ops(report)["ct-802-container"] == "update"
    assert environment_lines(stack, 802) == [
        "lxc.environment: HF_HOME=/models/hf",
        "lxc.environment: PHOENIX_GUEST_ENVIRONMENT=HF_HOME",
    ]
    mutations = stack.api_mutations(since)
    # Raw lines are read at start: the container is shut down and started again, and nothing else is.
    assert any(m == "POST" and p.endswith("/lxc/802/status/shutdown") for m, p in mutations), mutations
    assert any(m == "POST" and p.endswith("/lxc/802/status/start") for m, p in mutations), mutations
    assert not [p for _m, p in mutations if "/lxc/801/" in p]

    none = tuple((k, v) for k, v in OPTIONS if k != "environment")
    stack.set_guests([guests[801], replace(guests[802], options=none)])
    stack.up()
    assert environment_lines(stack, 802) == []
    assert_guest_serving(stack, replace(guests[802], options=none))
    again = stack.up()
    assert again.changes == 0 and set(again.summary) == {"same"}


def test_a_guest_whose_device_node_is_missing_is_refused_before_it_is_cloned(stack: LabStack) -> None:
    """Issue 16: pve-container refuses to start a container whose devN node is missing (after a reboot,
    /dev/nvidia-uvm exists only once something loads nvidia-uvm). Phoenix checks first: the error names the
    guest and the node, nothing of the new guest reaches PVE, and once the node is back the same up
    creates it."""
    stack.ensure_up()
    uvm = Path("/dev/nvidia-uvm")
    if uvm not in stack.host.gpu_nodes:
        pytest.skip("/dev/nvidia-uvm is this machine's own (a real GPU host): the lab will not remove it")
    guests = {g.vmid: g for g in stack.guests}
    stack.set_guests([guests[801], guests[802], LabGuest(803, gpu=0, served="tiny-c")])
    uvm.unlink()
    since = len(stack.host.pve.requests())
    try:
        with pytest.raises(CommandError) as failed:
            stack.up()
    finally:
        make_standin_node(uvm)
    print(f"\nthe error: {str(failed.value).split('MissingDeviceNodeError: ')[-1].splitlines()[0]}")
    assert "CT 803 (lab-vllm-803): device nodes missing on the host: /dev/nvidia-uvm." in str(failed.value)
    assert not [p for _m, p in stack.host.pve.requests()[since:] if "803" in p]

    report = stack.up()
    assert dynamic_ops(report)["ct-803-container"] == "create"
    assert_guest_serving(stack, stack.guests[-1])
