"""Feature scripts as data: which script, in which environment, for a guest that runs it itself.

The environment of one feature is :func:`phoenix_components.config.features.feature_env`, the same for a
layer (LXC), a VM and an EC2 instance; this module picks the pins a guest runs it under (those of the
layer that introduces the feature) and builds what the guests' resources take.
"""

from __future__ import annotations

import json

from phoenix_components.config.features import (
    FRESH_GUEST,
    Target,
    feature_pins,
    needs_fresh_guest,
    version_variable,
)
from phoenix_components.config.features import feature_env as one_feature_env
from phoenix_components.config.load import Environment
from phoenix_components.config.models import Container
from providers.channels.command import sha256_text
from providers.channels.pct import script_argv

__all__ = [
    "FRESH_GUEST",
    "Target",
    "chain_feature_env",
    "container_feature_inputs",
    "exec_argv",
    "fresh_guest_key",
    "needs_fresh_guest",
    "version_variable",
]


def chain_feature_env(env: Environment, features: list[str], target: Target) -> dict[str, str]:
    """Environment for running ``features`` on ``target`` outside any layer (a VM's cloud-init, a guest's
    own features): each one's pins from the layer that introduces it, plus the host driver for nvidia. A
    layer's build never uses this; it sends its own pins (:meth:`Environment.layer_feature_env`)."""
    pins = feature_pins(env.chain)
    variables: dict[str, str] = {}
    for feature in features:
        versions = pins[feature].versions if feature in pins else {}
        variables |= one_feature_env(target, feature, versions, env.host.nvidia)
    return dict(sorted(variables.items()))


def fresh_guest_key(env: Environment, spec: Container) -> str | None:
    """What, changed, replaces the guest: the scripts, environment and files of the guest's features that
    need a fresh guest (the files are theirs too: they are written before any feature runs); None when it
    has no such feature, so a guest without one never changes this."""
    fresh = [guest_feature(env, spec, f) for f in spec.features if needs_fresh_guest(env.feature_scripts[f])]
    if not fresh:
        return None
    files = [file.model_dump() for file in spec.feature_files]
    return sha256_text(json.dumps({"features": fresh, "files": files}, sort_keys=True))


def guest_feature(env: Environment, spec: Container, feature: str) -> dict[str, object]:
    """One of a guest's features as GuestFeatures takes it: its script and environment (the chain's pins of
    it, as a VM gets them, then the guest's own ``feature_env``)."""
    return {
        "name": feature,
        "script": env.feature_scripts[feature],
        "env": {**chain_feature_env(env, [feature], "lxc"), **spec.feature_env},
    }


def exec_argv(vmid: int | str, variables: dict[str, str]) -> list[str]:
    """``pct exec`` of a script read from stdin, with its environment passed as argv (quoted once)."""
    return script_argv(vmid, variables)


def container_feature_inputs(
    env: Environment, spec: Container, guest_instance: object = None
) -> dict[str, object]:
    """GuestFeatures' inputs for a container: each feature (:func:`guest_feature`) and the guest's
    ``feature_files``.

    ``phoenix plan`` builds the provider's steps from these same inputs; the component adds the guest's
    ``instance`` (a Pulumi Output) as ``guest_instance``.
    """
    return {
        "node": env.host.node,
        "vmid": spec.vmid,
        "features": [guest_feature(env, spec, feature) for feature in spec.features],
        "files": [file.model_dump() for file in spec.feature_files],
        # A replaced guest keeps its vmid: this is what tells the features they must run in it again.
        "guest_instance": guest_instance,
        "guest_name": spec.hostname,
    }
