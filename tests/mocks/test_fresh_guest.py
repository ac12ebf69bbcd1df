"""A feature that needs a fresh guest replaces it when it changes; any other feature runs again in place.

The program hands the engine a ``replacement_trigger`` (with ``delete_before_replace``: the vmid is fixed):
for a container, the hash of its fresh-guest features (none: no trigger); for a VM, the hash of its
cloud-init user-data, since cloud-init runs a VM's features only at its first boot. The engine replaces a
resource whose trigger changed (proven in the lab by tests/cli/test_lab_guest_features.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from phoenix_components.config.load import load_environment
from phoenix_components.program import build
from phoenix_components.render.features import FRESH_GUEST, needs_fresh_guest
from tests.mocks.test_program import ROOT, run_program
from tests.support.recording import Registration, install

FRESH_SCRIPT = (
    f"#!/bin/bash\n# A TEST-ONLY feature that formats a disk once.\n{FRESH_GUEST}\nset -eu\necho fresh\n"
)


def registrations(
    root: Path, container: dict[str, Any], vm: dict[str, Any] | None = None
) -> dict[str, Registration]:
    """The dev program's registrations, with a fresh-guest feature script and the guests' keys updated."""
    config = root / "config"
    if not config.exists():
        shutil.copytree(ROOT / "config", config)
        shutil.copytree(ROOT / "apparmor", root / "apparmor")
        (config / "features" / "fresh_disk.sh").write_text(FRESH_SCRIPT)
    guests_file = config / "environments" / "dev" / "guests.json"
    guests = json.loads((ROOT / "config" / "environments" / "dev" / "guests.json").read_text())
    guests["containers"][0].update(container)
    guests["vms"][0].update(vm or {})
    guests_file.write_text(json.dumps(guests))
    env = load_environment(config, "dev")
    monitor = install("dev", {"phoenix:environment": "dev"})
    run_program(lambda: build(env))
    return monitor.by_name()


def test_the_directive_is_read_from_the_leading_comments_only() -> None:
    assert needs_fresh_guest(FRESH_SCRIPT)
    assert not needs_fresh_guest("#!/bin/bash\nset -eu\n# phoenix: fresh-guest\n"), "after the first command"
    assert not needs_fresh_guest("#!/bin/bash\n# phoenix: fresh-guests\n")


def test_a_container_without_fresh_guest_features_has_no_trigger(tmp_path: Path) -> None:
    regs = registrations(tmp_path, {"features": ["docker"], "feature_env": {"SITE": "a"}})
    container = regs["ct-201-container"]
    assert container.replacement_trigger is None and container.delete_before_replace
    assert (
        registrations(tmp_path, {"features": ["docker"], "feature_env": {"SITE": "b"}})[
            "ct-201-container"
        ].replacement_trigger
        is None
    ), "a plain feature's change runs it again in the same guest"


def test_a_fresh_guest_feature_changes_the_trigger_with_its_values_and_files(tmp_path: Path) -> None:
    def trigger(**container: Any) -> Any:
        return registrations(tmp_path, {"features": ["docker", "fresh_disk"], **container})[
            "ct-201-container"
        ].replacement_trigger

    first = trigger(feature_env={"SITE": "a"})
    assert first is not None
    assert trigger(feature_env={"SITE": "a"}) == first, "the same config, the same trigger"
    assert trigger(feature_env={"SITE": "b"}) != first, "its environment changed"
    files = [{"path": "/etc/phoenix/disk.conf", "content": "size=1\n"}]
    assert trigger(feature_env={"SITE": "a"}, feature_files=files) != first, "its files changed"
    assert registrations(tmp_path, {})["ct-202-container"].replacement_trigger is None, "other guests: none"


def test_a_vm_is_replaced_when_its_user_data_changes(tmp_path: Path) -> None:
    def vm(**keys: Any) -> Registration:
        return registrations(tmp_path, {}, keys)["vm-231-vm"]

    first = vm(feature_env={"STACK": "a"})
    assert first.replacement_trigger is not None and first.delete_before_replace
    assert vm(feature_env={"STACK": "a"}).replacement_trigger == first.replacement_trigger
    assert vm(feature_env={"STACK": "b"}).replacement_trigger != first.replacement_trigger
