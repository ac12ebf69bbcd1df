"""What a feature script runs with: the chain's pins of it, and the environment variables it gets.

The same script runs in an LXC layer (``pct exec``), a VM (cloud-init) and on EC2 (user-data), and
:func:`feature_env` is the one rule for what it is sent on all three: ``PHOENIX_TARGET``, the pinned
versions as ``PHOENIX_<NAME>_VERSION`` (``nvidia_container_toolkit`` →
``PHOENIX_NVIDIA_CONTAINER_TOOLKIT_VERSION``) and, for the nvidia feature, the driver's version and
runfile. Only which pins go in differs: a layer sends its own (:meth:`Environment.layer_feature_env`); a VM
or an EC2 instance, which runs a feature outside any layer, takes the pins of the layer that introduces it
(:func:`feature_pins`).

This sits in config, not render, because a layer's content key hashes exactly this environment
(:meth:`Environment.layer_key`), and promotion compares keys while the config is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from phoenix_components.config.models import Chain, Layer, NvidiaDriver

Target = Literal["lxc", "vm", "ec2"]


FRESH_GUEST = "# phoenix: fresh-guest"
"""The line a feature script carries in its leading comments when it must run in a new guest: its change
replaces the container (say, a feature that partitions a disk or sets up a CA), instead of running again
in the one that is there."""


def needs_fresh_guest(script: str) -> bool:
    """Whether ``script`` says :data:`FRESH_GUEST` among its leading comment lines (the shebang included)."""
    for line in script.splitlines():
        stripped = line.strip()
        if not stripped.startswith("#"):
            return False
        if stripped == FRESH_GUEST:
            return True
    return False


def fresh_guest_scripts(scripts: Mapping[str, str]) -> frozenset[str]:
    """The names of the scripts (name -> text) that need a fresh guest."""
    return frozenset(name for name, text in scripts.items() if needs_fresh_guest(text))


def version_variable(name: str) -> str:
    """``nvidia_container_toolkit -> PHOENIX_NVIDIA_CONTAINER_TOOLKIT_VERSION``, as the scripts expect."""
    return f"PHOENIX_{name.upper()}_VERSION"


def feature_env(
    target: Target, feature: str, versions: Mapping[str, str], nvidia: NvidiaDriver | None
) -> dict[str, str]:
    """The environment ``feature`` runs with on ``target``, given the pins it runs under.

    ``feature_env("ec2", "docker", {"docker": "28.2.2"}, None)`` ->
    ``{"PHOENIX_DOCKER_VERSION": "28.2.2", "PHOENIX_TARGET": "ec2"}``; the nvidia feature also gets
    ``PHOENIX_NVIDIA_VERSION``, ``PHOENIX_NVIDIA_RUNFILE_URL`` and ``PHOENIX_NVIDIA_SHA256`` of ``nvidia``.
    """
    variables = {"PHOENIX_TARGET": target, **{version_variable(k): v for k, v in versions.items()}}
    if feature == "nvidia" and nvidia is not None:
        variables["PHOENIX_NVIDIA_VERSION"] = nvidia.version
        variables["PHOENIX_NVIDIA_RUNFILE_URL"] = nvidia.runfile_url
        variables["PHOENIX_NVIDIA_SHA256"] = nvidia.sha256
    return dict(sorted(variables.items()))


def layer_order(layers: Mapping[str, Layer]) -> list[str]:
    """Layer names, parents before children. Raises ValueError on a parent cycle (which the config checks
    report first, so a loaded environment never has one)."""
    order: list[str] = []
    while len(order) < len(layers):
        ready = [
            n
            for n, layer in layers.items()
            if n not in order and (layer.parent is None or layer.parent in order)
        ]
        if not ready:
            raise ValueError("layer parents form a cycle")
        order.extend(ready)
    return order


@dataclass(frozen=True)
class Pin:
    """The layer of the chain that introduces a feature, and the versions it pins."""

    layer: str
    versions: Mapping[str, str]


def feature_pins(chain: Chain) -> dict[str, Pin]:
    """For each feature of the chain, the first layer (parents first) that lists it, with its versions.

    ``{"nvidia": Pin("gpu", {"nvidia": "580.76.05"}), ...}``. Raises ValueError on a parent cycle.
    """
    pins: dict[str, Pin] = {}
    for name in layer_order(chain.layers):
        layer = chain.layers[name]
        for feature in layer.features:
            pins.setdefault(feature, Pin(name, dict(layer.versions)))
    return pins
