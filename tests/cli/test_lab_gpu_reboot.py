"""The GPU host surviving a reboot (issue 16), end to end on the lab under the real engine.

A host reboot, as the lab plays it: every guest stops (the host goes down), and the NVIDIA device nodes are
gone (a fresh /dev has none until the driver makes them). Then boot, in the order a PVE host runs it:

1. ``phoenix-nvidia-nodes.service`` makes the nodes. The lab has no NVIDIA driver, so it stands in for the
   unit by putting the TEST-ONLY stand-in nodes back (tests/lab/host.py ``standin_gpu_nodes``); the unit
   itself, written, enabled and run at boot by NvidiaHostDriver, is proven against the fake driver in
   tests/lab/test_nvidia_driver_lab.py.
2. ``pve-guests.service`` (ordered after that unit) starts every guest with ``onboot`` in boot order: the
   lab asks fakepve to start them, in the order their ``startup`` says.

The GPU guests then serve again with no Phoenix run, and ``pulumi refresh`` finds nothing changed. When
the nodes are *not* made (the unit missing), the guests stay down; a refresh sees them stopped, and the next
``up`` refuses to start them with Phoenix's own error naming the missing nodes, not PVE's, and starts them
once the nodes are back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pulumi.automation import CommandError

from tests.cli.test_lab_e2e import assert_guest_serving, dynamic_ops, lxc_cts
from tests.lab.e2e import LabGuest, LabStack
from tests.lab.host import STANDIN_DEVICES, make_standin_node

pytestmark = [pytest.mark.lab, pytest.mark.cli]


@pytest.fixture(scope="module")
def stack(lab_stack: LabStack) -> LabStack:
    """Two GPU guests that start at boot, 802 before 801."""
    lab_stack.set_guests(
        [
            LabGuest(801, gpu=0, served="tiny-a", after=(802,)),
            LabGuest(802, gpu=1, served="tiny-b"),
        ]
    )
    lab_stack.ensure_up()
    return lab_stack


@pytest.fixture
def standins(stack: LabStack) -> Iterator[list[Path]]:
    """The stand-in nodes this lab made; skipped (with the reason) on a machine with its own."""
    made = list(stack.host.gpu_nodes)
    if sorted(p.name for p in made) != sorted(STANDIN_DEVICES):
        pytest.skip(f"this machine has NVIDIA device nodes of its own ({made}): the lab will not remove them")
    yield made
    boot_nodes(made)  # whatever a test did, the next one finds them


def shut_down(stack: LabStack, nodes: list[Path]) -> None:
    """The host going down and coming back without its device nodes: every guest stopped, the nodes gone."""
    client = stack.host.client()
    try:
        for vmid in (801, 802):
            client.run_task(
                "POST", f"nodes/{stack.host.node}/lxc/{vmid}/status/stop", timeout=120, step="stop"
            )
    finally:
        client.close()
    for node in nodes:
        node.unlink(missing_ok=True)


def boot_nodes(nodes: list[Path]) -> None:
    """Stands in for phoenix-nvidia-nodes.service at boot (see the module docstring)."""
    for node in nodes:
        if not node.exists():
            make_standin_node(node)


def pve_guests(stack: LabStack) -> list[int]:
    """What pve-guests.service does at boot: start each guest with onboot, in its startup order."""
    cts = {vmid: config for vmid, config in lxc_cts(stack).items() if vmid in (801, 802)}

    def order(vmid: int) -> int:
        parts = dict(p.split("=") for p in str(cts[vmid].get("startup") or "").split(",") if "=" in p)
        return int(parts.get("order", 1_000_000))

    started = sorted((v for v, c in cts.items() if c.get("onboot") == 1), key=order)
    client = stack.host.client()
    try:
        for vmid in started:
            client.run_task(
                "POST", f"nodes/{stack.host.node}/lxc/{vmid}/status/start", timeout=120, step="boot"
            )
    finally:
        client.close()
    return started


def test_after_a_reboot_the_nodes_come_first_and_the_onboot_gpu_guests_serve_again(
    stack: LabStack, standins: list[Path]
) -> None:
    shut_down(stack, standins)
    boot_nodes(standins)
    started = pve_guests(stack)
    print(f"\nboot: nodes made, then pve-guests started {started}")
    assert started == [802, 801]  # the derived boot order: 802 first, 801 after it
    for guest in stack.guests:
        assert_guest_serving(stack, guest)
    drift = {name: d.kind for name, d in stack.engine.refresh().items() if d.kind != "same"}
    assert drift == {}


def test_without_the_nodes_up_refuses_to_start_the_guests_naming_the_nodes_then_starts_them(
    stack: LabStack, standins: list[Path]
) -> None:
    shut_down(stack, standins)
    # The nodes unit did not run: pve-guests' starts would fail at PVE; nothing serves.
    drift = {name: d for name, d in stack.engine.refresh().items() if d.kind != "same"}
    stopped = sorted(name.rsplit("::", 1)[-1] for name, d in drift.items() if "start" in d.changed)
    print(f"\nrefresh after the reboot: {stopped} found stopped")
    assert stopped == ["ct-801-container", "ct-802-container"]

    since = len(stack.host.pve.requests())
    with pytest.raises(CommandError) as failed:
        stack.up()
    message = str(failed.value)
    assert "device nodes missing on the host: /dev/nvidia1, /dev/nvidiactl, /dev/nvidia-uvm" in message
    assert not [
        p for m, p in stack.host.pve.requests()[since:] if m == "POST" and p.endswith("/status/start")
    ]

    boot_nodes(standins)
    report = stack.up()
    assert {dynamic_ops(report)[f"ct-{v}-container"] for v in (801, 802)} == {"update"}
    for guest in stack.guests:
        assert_guest_serving(stack, guest)
    again = stack.up()
    assert again.changes == 0
