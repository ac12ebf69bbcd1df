"""The program's graph for adopted guests and datasets, under mocks (tests/support/recording.py records
each registration with its options): the providers get ``adopt`` and the effective ``retain_on_delete``,
and what a retained guest or dataset carries along (its firewall, its snapshot) is registered with
Pulumi's ``retain_on_delete``, so a destroy only forgets it too. What the providers do with these inputs
is proven against the lab (tests/cli/test_lab_adopt.py)."""

from __future__ import annotations

from pathlib import Path

from phoenix_components.config.load import load_environment
from phoenix_components.program import build
from tests.mocks.test_program import run_program
from tests.support.recording import Registration, install
from tests.unit.test_plan_adopt import adopted_config


def registered(config: Path) -> dict[str, Registration]:
    env = load_environment(config, "dev")
    monitor = install("dev", {"phoenix:environment": "dev"})
    run_program(lambda: build(env))
    return monitor.by_name()


def test_an_adopted_guest_is_registered_to_adopt_and_be_kept_with_its_firewall(tmp_path: Path) -> None:
    seen = registered(adopted_config(tmp_path))
    adopted, created = seen["ct-201-container"], seen["ct-202-container"]
    assert (adopted.inputs["adopt"], adopted.inputs["retain_on_delete"]) == (True, True)
    assert adopted.inputs.get("template_vmid") is None, "from no layer"
    assert not any("layer-" in dep for dep in adopted.dependencies)
    assert (created.inputs["adopt"], created.inputs["retain_on_delete"]) == (False, False)
    assert seen["ct-201-firewall"].retain_on_delete and not seen["ct-202-firewall"].retain_on_delete
    assert not adopted.retain_on_delete, (
        "the guest itself is kept by its provider (its retain_on_delete input)"
    )


def test_an_adopted_dataset_is_registered_to_adopt_and_its_snapshot_kept(tmp_path: Path) -> None:
    seen = registered(adopted_config(tmp_path))
    dataset = seen["dataset-models"]
    assert (dataset.inputs["adopt"], dataset.inputs["retain_on_delete"]) == (True, True)
    (snapshot,) = [r for name, r in seen.items() if name.startswith("dataset-models-")]
    assert snapshot.retain_on_delete
