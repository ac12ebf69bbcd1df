"""A guest's own features, end to end on the lab under the real engine: they run inside the started
container with the guest's parameters, a changed script runs again in the same container, and a failing
one stops the deploy with an error naming the guest and the feature.

The stack is this module's own ``lab_stack`` (tests/lab/e2e.py): the product chain built on the lab, and
one vLLM guest (801) that also declares a TEST-ONLY feature, written into the lab config by the test. Every
check is made inside the guest (``pct exec`` through the lab's shim) or on PVE's side (fakepve's config,
the pool), not only on the provider's outputs.
"""

from __future__ import annotations

import dataclasses
import re

import pytest
from pulumi.automation import CommandError

from tests.cli.test_lab_e2e import assert_guest_serving, dynamic_ops, lxc_cts, outputs
from tests.lab.e2e import LabGuest, LabStack, write_feature

pytestmark = [pytest.mark.lab, pytest.mark.cli]

FEATURE = "lab_guest_marker"
MARKER = "/etc/phoenix/lab-guest-marker"
SITE_FILE = "/etc/phoenix/lab-site.conf"
GREETING = "hello from 801; it's $(not run)"  # a shell-hostile value: it must arrive as it is
# TEST-ONLY feature: proves the guest's environment value and config file reach its feature, inside it.
SCRIPT = """#!/bin/bash
# TEST-ONLY lab feature of one guest (tests/cli/test_lab_guest_features.py); never shipped.
set -euo pipefail
: "${PHOENIX_TARGET:?}" "${LAB_GREETING:?}"
REVISION=1
echo "lab guest marker revision $REVISION"
install -d -m 0755 /etc/phoenix
printf 'greeting=%s site=%s revision=%s target=%s\\n' "$LAB_GREETING" "$(cat /etc/phoenix/lab-site.conf)" \\
  "$REVISION" "$PHOENIX_TARGET" > /etc/phoenix/lab-guest-marker
"""


def guest() -> LabGuest:
    return LabGuest(
        801,
        gpu=0,
        served="tiny-a",
        features=(FEATURE,),
        feature_env=(("LAB_GREETING", GREETING),),
        feature_files=((SITE_FILE, "edge-1"),),
    )


def in_guest(stack: LabStack, *argv: str) -> str:
    done = stack.guest_exec(801, *argv)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def stack(lab_stack: LabStack) -> LabStack:
    """The module's lab stack with one guest that declares the feature (set before the first up)."""
    write_feature(lab_stack.config, FEATURE, SCRIPT)
    lab_stack.set_guests([guest()])
    return lab_stack


def test_a_guests_feature_runs_inside_it_with_its_parameters_and_keeps_its_log(stack: LabStack) -> None:
    report = stack.ensure_up()
    ops = dynamic_ops(report)
    assert ops["ct-801-features"] == "create" and ops["ct-801-container"] == "create"
    assert in_guest(stack, "cat", MARKER) == f"greeting={GREETING} site=edge-1 revision=1 target=lxc\n"
    log = in_guest(stack, "cat", f"/var/log/phoenix/features/{FEATURE}.log").splitlines()
    print(f"\nfeature log in CT 801: {log}")
    assert log[0].startswith("=== ") and f"phoenix feature {FEATURE} sha256=" in log[0]
    assert log[1] == "lab guest marker revision 1"
    recorded = in_guest(stack, "cat", f"/var/lib/phoenix/features/{FEATURE}.sha256").strip()
    assert outputs(stack, "ct-801-features")["applied"] == {FEATURE: recorded}
    assert_guest_serving(stack, stack.guests[0])  # its service started after its features


def test_a_changed_script_runs_again_in_the_same_guest(stack: LabStack) -> None:
    stack.ensure_up()
    container = outputs(stack, "ct-801-container")
    pool = stack.host.zpool
    dataset = f"{pool.data}/subvol-801-disk-0"
    guid = pool.get(dataset, "guid")
    write_feature(stack.config, FEATURE, SCRIPT.replace("REVISION=1\n", "REVISION=2\n", 1))

    report = stack.up()
    changed = {name: op for name, op in dynamic_ops(report).items() if op != "same"}
    print(f"\nchanged feature script: {changed}")
    assert changed == {"ct-801-features": "update"}  # the container, its service, its firewall: same
    assert in_guest(stack, "cat", MARKER) == f"greeting={GREETING} site=edge-1 revision=2 target=lxc\n"
    # The very same container: the same instance token, the same rootfs dataset, still in PVE.
    assert outputs(stack, "ct-801-container")["instance"] == container["instance"]
    assert pool.get(dataset, "guid") == guid and 801 in lxc_cts(stack)
    log = in_guest(stack, "cat", f"/var/log/phoenix/features/{FEATURE}.log")
    assert log.count("=== ") == 2 and "lab guest marker revision 2" in log


def test_a_failing_feature_stops_the_deploy_naming_the_guest_and_the_feature(stack: LabStack) -> None:
    stack.ensure_up()
    good = (stack.config / "features" / f"{FEATURE}.sh").read_text()
    write_feature(
        stack.config,
        FEATURE,
        good.replace(
            "set -euo pipefail\n", "set -euo pipefail\necho 'lab: broken on purpose' >&2; exit 3\n", 1
        ),
    )
    try:
        with pytest.raises(CommandError) as caught:
            stack.up()
        details = str(caught.value)
        headline = next(line for line in details.splitlines() if f"feature {FEATURE} in CT" in line)
        print(f"\nfailing feature: {headline.strip()[:200]}")
        assert f"feature {FEATURE} in CT 801 (lab-vllm-801) exited 3" in details
        assert f"/var/log/phoenix/features/{FEATURE}.log" in details
        assert "lab: broken on purpose" in details  # the log's tail, in the error
    finally:
        # The fix is a new script: the engine keeps the last state that succeeded, so what changes is what
        # runs (the guest's marker is gone meanwhile: the failed run removed it, see RUN).
        write_feature(stack.config, FEATURE, re.sub(r"REVISION=[0-9]+\n", "REVISION=3\n", good, count=1))
    assert stack.guest_exec(801, "test", "-e", f"/var/lib/phoenix/features/{FEATURE}.sha256").returncode == 1
    report = stack.up()  # fixed: it runs again, in place
    changed = {name: op for name, op in dynamic_ops(report).items() if op != "same"}
    assert changed == {"ct-801-features": "update"}
    assert in_guest(stack, "cat", MARKER) == f"greeting={GREETING} site=edge-1 revision=3 target=lxc\n"


FRESH = "lab_fresh_disk"
# TEST-ONLY feature that declares it needs a fresh guest (render.features.FRESH_GUEST).
FRESH_SCRIPT = """#!/bin/bash
# TEST-ONLY lab feature (tests/cli/test_lab_guest_features.py): stands in for one that must run once, in a
# new guest (partitioning a disk, say); never shipped.
# phoenix: fresh-guest
set -euo pipefail
REVISION=1
install -d -m 0755 /etc/phoenix
echo "fresh revision $REVISION" > /etc/phoenix/lab-fresh
"""


def test_a_feature_that_needs_a_fresh_guest_replaces_it_when_it_changes(stack: LabStack) -> None:
    stack.ensure_up()
    write_feature(stack.config, FRESH, FRESH_SCRIPT)
    stack.set_guests([dataclasses.replace(guest(), features=(FEATURE, FRESH))])
    stack.up()  # the feature arrives (in a fresh guest: it needs one)
    assert in_guest(stack, "cat", "/etc/phoenix/lab-fresh") == "fresh revision 1\n"
    before = outputs(stack, "ct-801-container")["instance"]

    write_feature(stack.config, FRESH, FRESH_SCRIPT.replace("REVISION=1\n", "REVISION=2\n", 1))
    report = stack.up()
    changed = {name: op for name, op in dynamic_ops(report).items() if op != "same"}
    print(f"\nchanged fresh-guest feature: {changed}")
    assert changed["ct-801-container"] == "replace", changed
    assert outputs(stack, "ct-801-container")["instance"] != before, "a new container"
    # In the new guest every feature ran again, and its service is back.
    assert in_guest(stack, "cat", "/etc/phoenix/lab-fresh") == "fresh revision 2\n"
    assert in_guest(stack, "cat", MARKER).startswith(f"greeting={GREETING} site=edge-1 ")
    assert_guest_serving(stack, stack.guests[0])
    assert stack.up().changes == 0, "and the next up changes nothing"
