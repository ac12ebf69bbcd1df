"""Start order and dependencies, end to end on the lab under the real engine: a guest `after` another is
created and started only once the other serves (its vLLM health gate), and PVE's config holds the boot
order Phoenix derived from the dependency and the delay the guest declared.

The stack is this module's own ``lab_stack`` (tests/lab/e2e.py): the product chain on the lab and two vLLM
guests, CT 801 after CT 802. The order is read from fakepve's request log (independent of the providers'
own bookkeeping) and its stored configs.
"""

from __future__ import annotations

import pytest

from tests.cli.test_lab_e2e import assert_guest_serving, dynamic_ops, lxc_cts
from tests.lab.e2e import LabGuest, LabStack

pytestmark = [pytest.mark.lab, pytest.mark.cli]


@pytest.fixture(scope="module")
def stack(lab_stack: LabStack) -> LabStack:
    """801 starts after 802; 802 declares a start delay but no order (so Phoenix derives it)."""
    lab_stack.set_guests(
        [
            LabGuest(801, gpu=0, served="tiny-a", after=(802,)),
            LabGuest(802, gpu=1, served="tiny-b", startup=(("up", 2),)),
        ]
    )
    return lab_stack


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
