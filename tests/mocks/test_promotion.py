"""Promotion dev → staging → prod: only verified layers move up, and a promoted layer is never rebuilt."""

from __future__ import annotations

import json
import runpy
import shutil
from pathlib import Path
from typing import Any

import pytest

from phoenix_components.cli.main import main
from phoenix_components.config.errors import ConfigError, PromotionError
from phoenix_components.config.load import load_environment
from phoenix_components.config.promotion import lock_path, promote
from tests.mocks.test_program import ROOT, run_program, stack_outputs
from tests.support.recording import RecordingMonitor, install


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the project to promote in (promotion writes lock files into config/)."""
    for name in ("config", "apparmor"):
        shutil.copytree(ROOT / name, tmp_path / name)
    for stack_file in [ROOT / "Pulumi.yaml", *ROOT.glob("Pulumi.*.yaml")]:
        shutil.copy(stack_file, tmp_path / stack_file.name)
    shutil.copy(ROOT / "__main__.py", tmp_path / "__main__.py")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def up(project: Path, stack: str) -> tuple[RecordingMonitor, dict[str, Any]]:
    monitor = install(stack, {"phoenix:environment": stack})
    run_program(lambda: runpy.run_path(str(project / "__main__.py"), run_name="__main__"))
    return monitor, stack_outputs()


def save(project: Path, outputs: dict[str, Any], name: str) -> Path:
    path = project / f"{name}-outputs.json"
    path.write_text(json.dumps(outputs))
    return path


def set_node(project: Path, env: str, node: str) -> None:
    path = project / f"config/environments/{env}/host.json"
    host = json.loads(path.read_text())
    host["node"] = node
    path.write_text(json.dumps(host))


def layer_templates(monitor: RecordingMonitor) -> list[str]:
    return [r.name for r in monitor.registrations if r.type == "pulumi-python:dynamic/phoenix:TemplateLayer"]


def test_promotion_on_one_host_reuses_the_verified_templates_all_the_way_to_prod(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for env in ("staging", "prod"):  # three environments sharing one Proxmox host
        set_node(project, env, "pve-dev")
    dev, dev_outputs = up(project, "dev")
    # The layers dev's guests run on, and their ancestors (the chain has more: model servers no guest runs).
    layers = len(load_environment(project / "config", "dev").built_layers())
    assert layers < len(json.loads((project / "config/chain.json").read_text())["layers"])
    assert len(layer_templates(dev)) == layers

    assert (
        main(
            [
                "promote",
                "--from",
                "dev",
                "--to",
                "staging",
                "--outputs",
                str(save(project, dev_outputs, "dev")),
            ]
        )
        == 0
    )
    staging, staging_outputs = up(project, "staging")
    assert layer_templates(staging) == [], "a promoted layer is reused, never rebuilt"
    promoted = [r for r in staging.registrations if r.type == "phoenix:chain:PromotedLayer"]
    assert len(promoted) == layers
    assert main(["plan", "--stack", "staging"]) == 0
    assert "PromotedLayer layer-vllm" in capsys.readouterr().out
    for ct in load_environment(project / "config", "staging").guests.containers:
        container = staging.by_name()[f"ct-{ct.vmid}-container"]
        assert container.inputs["template_vmid"] == dev_outputs["layer_vmids"][ct.layer]
    assert staging_outputs["layer_vmids"] == dev_outputs["layer_vmids"]

    path = save(project, staging_outputs, "staging")
    assert main(["promote", "--from", "staging", "--to", "prod", "--outputs", str(path)]) == 0
    prod, prod_outputs = up(project, "prod")
    assert layer_templates(prod) == []
    assert prod_outputs["layer_vmids"] == dev_outputs["layer_vmids"]
    lock = json.loads(lock_path(project / "config", "prod").read_text())
    assert lock["source"] == "staging" and all(layer["verified"] for layer in lock["layers"].values())


def test_promotion_to_another_host_builds_exactly_the_verified_keys(project: Path) -> None:
    _, dev_outputs = up(project, "dev")
    assert (
        main(
            [
                "promote",
                "--from",
                "dev",
                "--to",
                "staging",
                "--outputs",
                str(save(project, dev_outputs, "dev")),
            ]
        )
        == 0
    )
    staging, _ = up(project, "staging")  # pve-staging: the templates cannot be shared
    keys = {
        r.inputs["layer"]: r.inputs["key"]
        for r in staging.registrations
        if r.name.endswith("-template") and r.type.endswith("TemplateLayer")
    }
    assert keys == dev_outputs["layers"]


def test_an_unverified_layer_is_refused(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, dev_outputs = up(project, "dev")
    dev_outputs["layer_verified"]["docker"] = False
    code = main(
        ["promote", "--from", "dev", "--to", "staging", "--outputs", str(save(project, dev_outputs, "dev"))]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "layer 'docker': its smoke test has not passed in dev; it cannot be promoted" in err
    assert not lock_path(project / "config", "staging").exists()


def test_a_chain_changed_after_promotion_is_refused_by_validate(project: Path) -> None:
    _, dev_outputs = up(project, "dev")
    assert (
        main(
            [
                "promote",
                "--from",
                "dev",
                "--to",
                "staging",
                "--outputs",
                str(save(project, dev_outputs, "dev")),
            ]
        )
        == 0
    )
    script = project / "config/features/vllm.sh"
    script.write_text(script.read_text() + "\n# changed after promotion\n")
    with pytest.raises(ConfigError) as raised:
        load_environment(project / "config", "staging")
    assert "chain.json: layers.vllm: key" in str(raised.value)
    assert "verified in dev" in str(raised.value)
    assert "layers.base" not in str(raised.value)  # unchanged layers stay promoted


def test_promote_refuses_outputs_from_an_older_chain() -> None:
    keys = {"base": "a" * 16, "gpu": "b" * 16}
    outputs = {
        "layers": {"base": "a" * 16, "gpu": "c" * 16},
        "layer_vmids": {"base": 9000, "gpu": 9001},
        "layer_verified": {"base": True, "gpu": True},
        "node": "pve",
    }
    with pytest.raises(PromotionError, match="layer 'gpu': dev runs key c+, chain.json has b+; up dev first"):
        promote(outputs, keys, "dev")
    lock = promote({**outputs, "layers": keys}, keys, "dev")
    assert {name: layer.vmid for name, layer in lock.layers.items()} == {"base": 9000, "gpu": 9001}
