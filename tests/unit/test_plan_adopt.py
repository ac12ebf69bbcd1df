"""`phoenix plan` of adopted guests and datasets: the reads, then only what differs; no clone, no
``zfs create`` (the plan is the providers' own steps: providers/guests/lxc_guest.plan_steps and
providers/zfs/dataset.create_steps)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from phoenix_components.cli.plan import build_plan
from phoenix_components.config.load import load_environment

ROOT = Path(__file__).resolve().parents[2]


def adopted_config(tmp_path: Path) -> Path:
    """The dev config with CT 201 adopted from no layer (its vLLM engine dropped: a layer-less guest has
    none from Phoenix) and the models dataset adopted."""
    shutil.copytree(ROOT / "config", tmp_path / "config")
    shutil.copytree(ROOT / "apparmor", tmp_path / "apparmor")
    guests_file = tmp_path / "config/environments/dev/guests.json"
    guests = json.loads(guests_file.read_text())
    ct = guests["containers"][0]
    ct.pop("layer")
    ct.pop("vllm", None)
    ct["adopt"] = True
    guests["datasets"]["models"]["adopt"] = True
    guests_file.write_text(json.dumps(guests))
    return tmp_path / "config"


def test_an_adopted_guest_is_planned_as_reads_then_only_the_differing_keys(tmp_path: Path) -> None:
    env = load_environment(adopted_config(tmp_path), "dev")
    ct = env.guests.containers[0]
    plan = {r.name: r for r in build_plan(env)}
    guest = plan[f"ct-{ct.vmid}"]
    steps = [str(s) for s in guest.steps]
    print("\n".join(steps))
    assert not any("layer-" in dep for dep in guest.depends_on), "no layer: nothing to wait for"
    assert not any("/clone" in s for s in steps)
    assert any(f"GET /nodes/{env.host.node}/lxc/{ct.vmid}/config" in s for s in steps)
    assert any("only the keys that differ of:" in s for s in steps)
    assert not any("status/start" in s or "status/shutdown" in s for s in steps)


def test_an_adopted_dataset_is_planned_as_its_read_only(tmp_path: Path) -> None:
    env = load_environment(adopted_config(tmp_path), "dev")
    plan = {r.name: r for r in build_plan(env)}
    steps = [str(s) for s in plan["dataset-models"].steps]
    assert steps and not any("zfs create" in s for s in steps)
    assert all("zfs get" in s for s in steps)
