"""A container's own features under mocks: GuestFeatures registered in the guest, after it, with the
inputs the plan shows; none for a container without features."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from phoenix_components.config.load import load_environment
from phoenix_components.program import build
from phoenix_components.render.features import container_feature_inputs
from tests.mocks.test_program import ROOT, run_program
from tests.support.recording import install


def test_a_container_with_features_gets_a_guest_features_resource_after_it(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "config", tmp_path / "config")
    shutil.copytree(ROOT / "apparmor", tmp_path / "apparmor")
    guests_file = tmp_path / "config/environments/dev/guests.json"
    guests = json.loads(guests_file.read_text())
    guests["containers"][0].update(
        features=["base_setup", "docker"],
        feature_env={"SITE": "edge"},
        feature_files=[{"path": "/etc/phoenix/site", "content": "edge\n", "mode": "0600"}],
    )
    guests_file.write_text(json.dumps(guests))
    env = load_environment(tmp_path / "config", "dev")
    with_features, without = env.guests.containers[0], env.guests.containers[1]

    monitor = install("dev", {"phoenix:environment": "dev"})
    run_program(lambda: build(env))
    regs = monitor.by_name()

    name = f"ct-{with_features.vmid}"
    features, container = regs[f"{name}-features"], regs[f"{name}-container"]
    assert features.type == "pulumi-python:dynamic/phoenix:GuestFeatures"
    assert features.parent == regs[name].urn
    assert container.urn in features.dependencies
    want = container_feature_inputs(env, with_features)
    for key in ("node", "vmid", "features", "files", "guest_name"):
        assert features.inputs[key] == want[key], key
    docker = features.inputs["features"][1]
    assert docker["name"] == "docker" and docker["script"] == env.feature_scripts["docker"]
    # The chain's pins of the feature, the target, and the guest's own value.
    assert docker["env"]["PHOENIX_DOCKER_VERSION"] == env.chain.layers["docker"].versions["docker"]
    assert (docker["env"]["PHOENIX_TARGET"], docker["env"]["SITE"]) == ("lxc", "edge")
    assert features.inputs["files"] == [{"path": "/etc/phoenix/site", "content": "edge\n", "mode": "0600"}]
    # Its service starts after the guest's own features.
    if with_features.vllm is not None:
        assert features.urn in regs[f"{name}-vllm"].dependencies
    assert f"ct-{without.vmid}-features" not in regs
