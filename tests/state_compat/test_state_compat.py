"""A state written before the folder move still refreshes, updates and destroys with the code as it is now.

Pulumi stores each dynamic provider as a pickle naming its class by module path, and runs that *stored*
provider for ``refresh`` and ``delete``. ``tests/fixtures/state_compat/pre-move.json`` is the lab stack's
state as the code before the move wrote it (commit 7e2439d, by :mod:`tests.state_compat.lab`): its
providers name ``providers.lxc_guest``, ``providers.host`` and the other old paths.

The test, under the real engine against the lab:

1. a seed stack creates the same objects on this run's lab with the current code (the fixture's objects are
   long gone), exports its state and forgets it;
2. the fixture, retargeted at this lab (:mod:`tests.state_compat.transplant`: connection values only, plus
   the values the host assigned), is imported into the stack under test;
3. ``refresh`` runs the stored old-path providers' ``read``: nothing drifts;
4. ``preview`` compares the old code's stored inputs with the current program's: no changes;
5. ``up`` with a changed guest parameter updates only what it should;
6. ``destroy`` runs the stored providers' ``delete`` (old paths for every resource the update left alone):
   the host is empty again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from providers import MOVED
from tests.lab.e2e import lab_stack_engine
from tests.lab.host import LabHost, running_lab_host
from tests.lab.pve import PveLab
from tests.lab.sshd_server import LabSshd
from tests.lab.zfs import LabZpool
from tests.state_compat.lab import FIXTURES, compat_guest, lab_values, write_compat_config
from tests.state_compat.transplant import stored_modules, transplant
from tests.support.engine import Engine

pytestmark = [pytest.mark.lab, pytest.mark.cli]
FIXTURE = FIXTURES / "pre-move.json"


def old_path_resources(engine: Engine) -> dict[str, set[str]]:
    """Resource name -> the old module paths its stored provider names (only those that name any)."""
    named: dict[str, set[str]] = {}
    for resource in engine.export().get("resources") or []:
        blob = (resource.get("outputs") or {}).get("__provider")
        if isinstance(blob, str) and (old := stored_modules(blob) & set(MOVED)):
            named[resource["urn"].rsplit("::", 1)[-1]] = old
    return named


def forget(engine: Engine) -> None:
    """The stack keeps no resources (without deleting them): another stack takes them over."""
    deployment = engine.export()
    engine.import_state({**deployment, "resources": []})


def seed_state(root: Path, host: LabHost, bin_dir: Path) -> dict[str, Any]:
    write_compat_config(root, host, [compat_guest()])
    with lab_stack_engine(root, host, bin_dir) as seed:
        assert seed.up().summary.get("create", 0) > 0
        state = seed.export()
        forget(seed)
    return state


def test_a_state_from_before_the_move_refreshes_updates_and_destroys(
    lab_pve: PveLab,
    lab_zpool: LabZpool,
    lab_sshd: LabSshd,
    lab_rootfs: Path,
    lab_lxc_seed: str,
    pulumi_bin: Path,
    tmp_path: Path,
) -> None:
    fixture = json.loads(FIXTURE.read_text())
    before = set(lab_zpool.datasets())
    try:
        with running_lab_host(lab_pve, lab_zpool, lab_sshd, lab_rootfs, lab_lxc_seed) as host:
            seed = seed_state(tmp_path / "seed", host, pulumi_bin)
            root = tmp_path / "compat"
            write_compat_config(root, host, [compat_guest()])
            moved = transplant(fixture, seed, lab_values(host, root))
            assert not moved.unexpected, f"the new code stores these outputs differently: {moved.unexpected}"

            with lab_stack_engine(root, host, pulumi_bin) as engine:
                engine.import_state(moved.deployment)
                old = old_path_resources(engine)
                assert {m for names in old.values() for m in names} >= {
                    "providers.host",
                    "providers.lxc_guest",
                    "providers.template_layer",
                    "providers.zfs_dataset",
                    "providers.guest_features",
                }, "the fixture's providers name the old module paths"

                drift = engine.refresh()
                assert {d.kind for d in drift.values()} == {"same"}, {
                    urn.rsplit("::", 1)[-1]: d for urn, d in drift.items() if d.kind != "same"
                }
                assert old_path_resources(engine) == old, "refresh ran the stored providers and kept them"

                assert set(engine.preview()) == {"same"}, "the old code's stored inputs equal the program's"

                write_compat_config(root, host, [compat_guest(greeting="hello again")])
                changed = {urn.rsplit("::", 1)[-1]: op for urn, op in engine.up().changed.items()}
                assert changed == {"ct-801-features": "update"}, changed
                assert (
                    host.pct("exec", "801", "--", "cat", "/etc/phoenix/compat-motd").stdout == "hello again\n"
                )
                left_alone = old_path_resources(engine)
                assert "ct-801-container" in left_alone and "dataset-models" in left_alone

                gone = engine.destroy()
                dynamic = dynamic_resources(fixture)
                assert gone.provider_calls["Delete"] == len(dynamic), "each stored provider's delete ran"
                assert set(gone.changed) >= set(dynamic) and set(gone.changed.values()) == {"delete"}
                assert not engine.resources()
            assert not list(host.pve.client().get(f"nodes/{host.node}/lxc")), "no guest is left"
            assert set(lab_zpool.datasets()) <= before, "no dataset is left"
    finally:
        lab_zpool.destroy_all_but(before)
        lab_pve.reset()


def dynamic_resources(fixture: dict[str, Any]) -> list[str]:
    """The URNs of the fixture's dynamic resources (what a provider's delete removes)."""
    return [
        r["urn"] for r in fixture["deployment"]["resources"] if r["type"].startswith("pulumi-python:dynamic")
    ]
