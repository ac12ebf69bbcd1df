"""Host capacity: the guests and the layer builds that can overlap, against capacity × overcommit."""

from __future__ import annotations

from pathlib import Path

from phoenix_components.config.load import concurrent_builds, load_environment
from phoenix_components.config.models import Chain, Layer, LayerBuild, Overcommit

ROOT = Path(__file__).resolve().parents[2]


def layer(parent: str | None, memory_mib: int) -> Layer:
    origin = {"parent": parent} if parent else {"os_template": "debian-12"}
    return Layer(
        **origin, features=["base_setup"], smoke_test=["true"], build=LayerBuild(memory_mib=memory_mib)
    )


def memory(built: Layer) -> int:
    return built.build.memory_mib


def test_overlapping_builds_are_layers_of_separate_branches_and_a_line_builds_one_at_a_time() -> None:
    line = Chain(layers={"a": layer(None, 1000), "b": layer("a", 3000), "c": layer("b", 2000)})
    assert concurrent_builds(line, memory) == 3000
    # b and c build side by side once a is a template; d (under b) may overlap c too.
    tree = Chain(
        layers={"a": layer(None, 5000), "b": layer("a", 1000), "c": layer("a", 2000), "d": layer("b", 1500)}
    )
    assert concurrent_builds(tree, memory) == 5000  # a alone outweighs b|d + c
    tree = tree.model_copy(update={"layers": {**tree.layers, "a": layer(None, 1000)}})
    assert concurrent_builds(tree, memory) == 1500 + 2000


def test_defaults_and_an_integer_ratio() -> None:
    assert Overcommit() == Overcommit(memory=1.0, cores=4.0)
    assert Overcommit.model_validate({"cores": 2}).cores == 2


def test_the_shipped_config_declares_no_capacity_and_passes() -> None:
    assert load_environment(ROOT / "config", "dev").host.capacity is None
