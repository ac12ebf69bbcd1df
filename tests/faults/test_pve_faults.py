"""PVE API faults under the real Pulumi engine, on the lab host: a task error in a clone, a lock held past
the retry budget, a 5xx on a read and on a mutation.

Each test asserts the outcome (a retry that succeeds, or a typed error naming the step) and the state after:
the fake's guests and the pool's guest volumes are exactly those the state records, and the next ``up``
with the fault gone converges. The provider processes get lab-fast retries (lock budget 1.5 s) through
``PHOENIX_PVE_LOCK_BUDGET_S`` / ``PHOENIX_PVE_RETRY_DELAY_S`` in the engine's environment.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pulumi.automation import CommandError

from tests.faults.chain import Chain, chain_engine, chain_program, guest_volumes, guests
from tests.lab.host import LabHost
from tests.lab.pve import NODE
from tests.support.engine import Engine

pytestmark = [pytest.mark.lab, pytest.mark.cli]

DATA_BASE = "basevol-9100-disk-0"
CHILD = 9110


@pytest.fixture
def harness(lab_host: LabHost, pulumi_bin: Path, tmp_path: Path) -> Iterator[Engine]:
    """The fault stack under the real engine (named for what it replaces, the stand-in harness)."""
    yield chain_engine(lab_host, tmp_path)


def names(harness: Engine) -> list[str]:
    return sorted(urn.rsplit("::", 1)[-1] for urn in harness.resources())


def recorded_vmids(harness: Engine) -> list[int]:
    return sorted(int(r.id) for r in harness.resources().values() if r.dynamic)


def assert_host_matches_state(lab_host: LabHost, harness: Engine) -> None:
    """Nothing half-made left unrecorded: every guest on the fake and every guest volume on the pool belongs
    to a layer the state records (templates: basevol-<vmid>-disk-0 and its @__base__)."""
    vmids = recorded_vmids(harness)
    assert guests(lab_host) == vmids
    expected = [
        f"{lab_host.zpool.data}/basevol-{v}-disk-0{snap}" for v in vmids for snap in ("", "@__base__")
    ]
    assert guest_volumes(lab_host) == sorted(expected)


def converges(lab_host: LabHost, harness: Engine) -> None:
    """The next up (fault gone) builds the child as a linked clone of base; up again changes nothing."""
    fixed = harness.up(chain_program(lab_host))
    assert fixed.op("child") == "create" and fixed.op("base") == "same"
    assert harness.resource("child").id == str(CHILD)
    origin = lab_host.zpool.get(f"{lab_host.zpool.data}/basevol-{CHILD}-disk-0", "origin")
    assert origin == f"{lab_host.zpool.data}/{DATA_BASE}@__base__"
    assert harness.up(chain_program(lab_host)).changes == 0
    assert_host_matches_state(lab_host, harness)
    harness.destroy()
    assert guests(lab_host) == [] and guest_volumes(lab_host) == []


def test_task_error_in_a_layer_clone_is_typed_and_leaves_nothing(lab_host: LabHost, harness: Engine) -> None:
    harness.up(chain_program(lab_host, Chain(child=False)))
    lab_host.pve.fail("POST", f"/nodes/{NODE}/lxc/9100/clone", error="clone_failed", times=1)

    with pytest.raises(CommandError) as raised:
        harness.up(chain_program(lab_host))

    details = str(raised.value)
    assert "LayerBuildError" in details and "PveTaskError" in details
    assert f"layer 'child' (CT {CHILD}) failed at linked clone" in details
    assert "ended with 'clone failed: unexpected error'" in details  # PVE's task status, and its log tail
    assert names(harness) == ["base"]
    assert_host_matches_state(lab_host, harness)
    converges(lab_host, harness)


def test_a_lock_held_past_the_budget_is_pve_locked_and_changes_nothing(
    lab_host: LabHost, harness: Engine
) -> None:
    harness.up(chain_program(lab_host, Chain(child=False)))
    before = harness.state_text()
    lab_host.pve.run(lab_host.pve.pve.hold_config_lock(9100, None))  # held until released
    try:
        with pytest.raises(CommandError) as raised:
            harness.up(chain_program(lab_host))
    finally:
        lab_host.pve.call(lab_host.pve.pve.release_config_lock, 9100)

    details = str(raised.value)
    assert "PveLockedError" in details and "still locked after 1.5s" in details
    assert "can't lock file" in details  # PVE's own wording survives
    clone_posts = lab_host.pve.requests("POST", f"/nodes/{NODE}/lxc/9100/clone")
    assert len(clone_posts) >= 3  # it did retry, with backoff, within the budget
    assert harness.state_text() == before
    assert_host_matches_state(lab_host, harness)
    converges(lab_host, harness)


def test_a_5xx_on_a_read_is_retried_and_succeeds(lab_host: LabHost, harness: Engine) -> None:
    harness.up(chain_program(lab_host, Chain(child=False)))
    config = f"/nodes/{NODE}/lxc/9100/config"
    lab_host.pve.call(lab_host.pve.pve.requests.clear)
    lab_host.pve.fail("GET", config, status=503, message="service unavailable", times=2)

    drift = harness.refresh()

    assert [d.kind for d in drift.values()] == ["same"]
    assert len(lab_host.pve.requests("GET", config)) == 3  # two 503s, then the answer
    assert_host_matches_state(lab_host, harness)
    converges(lab_host, harness)


def test_a_5xx_on_a_mutation_is_typed_and_not_retried(lab_host: LabHost, harness: Engine) -> None:
    lab_host.pve.fail("POST", f"/nodes/{NODE}/lxc", status=500, message="got unexpected error", times=1)

    with pytest.raises(CommandError) as raised:
        harness.up(chain_program(lab_host, Chain(child=False)))

    details = str(raised.value)
    assert "LayerBuildError" in details and "failed at create" in details
    assert "POST /nodes/pve1/lxc: got unexpected error (HTTP 500)" in details
    assert len(lab_host.pve.requests("POST", f"/nodes/{NODE}/lxc")) == 1  # a POST may have applied: once
    assert names(harness) == []
    assert_host_matches_state(lab_host, harness)
    created = harness.up(chain_program(lab_host, Chain(child=False)))
    assert created.op("base") == "create"
    assert_host_matches_state(lab_host, harness)
    converges(lab_host, harness)
