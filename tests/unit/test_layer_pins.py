"""Pins are scoped per layer: a layer's build sends its own pins, and its key hashes exactly what it sends.

Two layers run the same feature (docker) with different pins. Each layer's inputs, the ``pct exec``
command its build really runs (the build steps TemplateLayerProvider.create executes) and its key are
checked: each carries its own pin, and the key follows the environment sent, nothing else.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, cast

import pytest

from phoenix_components.components.chain import layer_inputs
from phoenix_components.config.load import Environment, load_environment
from providers.channels.pct import script_argv
from providers.guests.common import HostCommand
from providers.guests.template_layer import TemplateLayerInputs, build_steps

ROOT = Path(__file__).resolve().parents[2]
DEV = load_environment(ROOT / "config", "dev")


def two_docker_layers(pin_a: str, pin_b: str) -> Environment:
    """dev's chain plus ``docker-b``: the docker feature again, on base, with its own pin."""
    docker = DEV.chain.layers["docker"]
    layers = {
        **DEV.chain.layers,
        "docker": docker.model_copy(update={"versions": {**docker.versions, "docker": pin_a}}),
        "docker-b": docker.model_copy(update={"parent": "base", "versions": {"docker": pin_b}}),
    }
    return dataclasses.replace(DEV, chain=DEV.chain.model_copy(update={"layers": layers}))


def build(env: Environment, layer: str) -> list[tuple[list[str], str]]:
    """The feature commands the layer's build sends (its steps, from its real inputs)."""
    inputs = TemplateLayerInputs.from_props(dict(layer_inputs(env, layer), parent_vmid=9000))
    return [
        (step.argv, step.stdin)
        for step in build_steps(inputs, 9001)
        if isinstance(step, HostCommand) and step.argv[-2:] == ["bash", "-s"]
    ]


def test_two_layers_sharing_a_feature_each_send_their_own_pin() -> None:
    env = two_docker_layers("5:28.2.2-1~debian.12~bookworm", "5:27.5.1-1~debian.12~bookworm")
    script = env.feature_scripts["docker"]
    for layer, pin in (
        ("docker", "5:28.2.2-1~debian.12~bookworm"),
        ("docker-b", "5:27.5.1-1~debian.12~bookworm"),
    ):
        (feature,) = cast(list[dict[str, Any]], layer_inputs(env, layer)["features"])
        assert feature["env"]["PHOENIX_DOCKER_VERSION"] == pin
        assert feature["env"] == env.layer_feature_env(layer, "docker")
        (sent,) = build(env, layer)
        assert sent == (script_argv(9001, feature["env"]), script)
        assert f"PHOENIX_DOCKER_VERSION={pin}" in sent[0]
    # docker-b pins only docker: it sends no other layer's toolkit or containerd pins.
    assert set(env.layer_feature_env("docker-b", "docker")) == {"PHOENIX_TARGET", "PHOENIX_DOCKER_VERSION"}
    assert env.layer_key("docker") != env.layer_key("docker-b")


def test_a_layer_key_follows_exactly_the_environment_its_build_sends() -> None:
    base = two_docker_layers("1", "2")
    # Changing docker-b's pin changes docker-b's key (and what it sends), and not docker's.
    changed = two_docker_layers("1", "3")
    assert changed.layer_key("docker-b") != base.layer_key("docker-b")
    assert changed.layer_key("docker") == base.layer_key("docker")
    # A pin change on the first layer that runs docker no longer leaks into docker-b.
    other_first = two_docker_layers("9", "2")
    assert other_first.layer_feature_env("docker-b", "docker") == base.layer_feature_env("docker-b", "docker")
    assert other_first.layer_key("docker-b") == base.layer_key("docker-b")


def test_the_host_driver_source_is_part_of_the_gpu_layer_key() -> None:
    """The nvidia feature is sent the host's runfile URL and sha256: they are in the key, as sent."""
    assert DEV.host.nvidia is not None
    moved = dataclasses.replace(
        DEV,
        host=DEV.host.model_copy(
            update={
                "nvidia": DEV.host.nvidia.model_copy(
                    update={"runfile_url": "https://mirror.lan/580.76.05.run"}
                )
            }
        ),
    )
    assert (
        moved.layer_feature_env("gpu", "nvidia")["PHOENIX_NVIDIA_RUNFILE_URL"]
        == "https://mirror.lan/580.76.05.run"
    )
    assert moved.layer_key("gpu") != DEV.layer_key("gpu")
    assert moved.layer_key("base") == DEV.layer_key("base")


@pytest.mark.parametrize("layer", ["base", "gpu", "docker", "vllm"])
def test_the_shipped_chain_sends_each_layer_its_own_pins(layer: str) -> None:
    pins = DEV.chain.layers[layer].versions
    for feature in DEV.chain.layers[layer].features:
        sent = DEV.layer_feature_env(layer, feature)
        assert {
            k: v for k, v in sent.items() if k.endswith("_VERSION") and k != "PHOENIX_NVIDIA_VERSION"
        } == {
            f"PHOENIX_{name.upper()}_VERSION": version for name, version in pins.items() if name != "nvidia"
        }
