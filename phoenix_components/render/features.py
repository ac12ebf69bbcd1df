"""Feature scripts as data: which script, with which pinned versions, in which environment variables.

The same script runs in an LXC layer (``pct exec``), a VM (cloud-init) and on EC2 (user-data); only
``PHOENIX_TARGET`` and the environment below differ. A layer sends the versions it pins itself
(:meth:`Environment.layer_feature_env`); a VM takes those of the layer that introduces the feature.
Versions are named ``PHOENIX_<NAME>_VERSION`` (``nvidia_container_toolkit`` →
``PHOENIX_NVIDIA_CONTAINER_TOOLKIT_VERSION``).
"""

from __future__ import annotations

from typing import Literal

from phoenix_components.config.load import Environment, version_variable
from providers.channels.pct import script_argv

Target = Literal["lxc", "vm", "ec2"]

__all__ = ["Target", "exec_argv", "feature_env", "feature_versions", "version_variable"]


def feature_versions(env: Environment) -> dict[str, dict[str, str]]:
    """For each feature in the chain, the versions pinned by the layer that introduces it.

    This is for guests that run a feature outside any layer (a VM's cloud-init): they take the chain's
    first pin of it. A layer's own build never uses this — it sends its own pins
    (:meth:`Environment.layer_feature_env`)."""
    pinned: dict[str, dict[str, str]] = {}
    for name in env.layer_order():
        layer = env.chain.layers[name]
        for feature in layer.features:
            pinned.setdefault(feature, dict(layer.versions))
    return pinned


def feature_env(env: Environment, features: list[str], target: Target) -> dict[str, str]:
    """Environment for running ``features`` on ``target``: pinned versions plus the host driver source."""
    variables: dict[str, str] = {"PHOENIX_TARGET": target}
    pinned = feature_versions(env)
    for feature in features:
        for name, version in pinned.get(feature, {}).items():
            variables[version_variable(name)] = version
    if "nvidia" in features and env.host.nvidia is not None:
        variables["PHOENIX_NVIDIA_VERSION"] = env.host.nvidia.version
        variables["PHOENIX_NVIDIA_RUNFILE_URL"] = env.host.nvidia.runfile_url
        variables["PHOENIX_NVIDIA_SHA256"] = env.host.nvidia.sha256
    return dict(sorted(variables.items()))


def exec_argv(vmid: int | str, variables: dict[str, str]) -> list[str]:
    """``pct exec`` of a script read from stdin, with its environment passed as argv (quoted once)."""
    return script_argv(vmid, variables)
