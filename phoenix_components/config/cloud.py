"""Load a cloud environment (``environments/<env>/cloud.json``) and check it against the chain and scripts.

A cloud environment runs the chain's feature scripts on one EC2 instance, so it is validated against the
same ``chain.json`` and ``features/`` as the on-prem environments: every feature exists, is introduced by
a layer of the chain (which pins its versions), runs in chain order, and the NVIDIA runfile is the version
the chain pins. Errors use the ``file: json.path: message`` form of :mod:`phoenix_components.config.load`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from phoenix_components.config.cloud_models import Cloud
from phoenix_components.config.errors import ConfigError
from phoenix_components.config.features import Pin, feature_pins
from phoenix_components.config.load import (
    CHAIN_FILE,
    ENVIRONMENTS_DIR,
    FEATURES_DIR,
    HOST_FILE,
    Problem,
    _load,
    _read_dir,
    chain_structure_problems,
)
from phoenix_components.config.models import Chain

CLOUD_FILE = "cloud.json"


@dataclass(frozen=True)
class CloudEnvironment:
    name: str
    config_dir: Path
    cloud: Cloud
    chain: Chain
    feature_scripts: Mapping[str, str] = field(repr=False)

    def pins(self) -> dict[str, Pin]:
        return feature_pins(self.chain)


def cloud_environment_names(config_dir: Path) -> list[str]:
    """Environments with a ``cloud.json``; the on-prem ones (``host.json``) are ``environment_names``."""
    root = config_dir / ENVIRONMENTS_DIR
    return sorted(p.name for p in root.iterdir() if (p / CLOUD_FILE).is_file()) if root.is_dir() else []


def is_cloud_environment(config_dir: Path, name: str) -> bool:
    return (config_dir / ENVIRONMENTS_DIR / name / CLOUD_FILE).is_file()


def load_cloud_environment(config_dir: Path | str, environment: str) -> CloudEnvironment:
    """Validated cloud config for ``environment``, or :class:`ConfigError` listing every problem found."""
    config_dir = Path(config_dir)
    env_dir = Path(ENVIRONMENTS_DIR) / environment
    cloud_file = str(env_dir / CLOUD_FILE)
    if not (config_dir / env_dir / CLOUD_FILE).is_file():
        known = ", ".join(cloud_environment_names(config_dir)) or "none"
        raise ConfigError([f"{cloud_file}: $: no cloud environment {environment!r} (known: {known})"])
    problems: list[Problem] = []
    if (config_dir / env_dir / HOST_FILE).is_file():
        problems.append(
            Problem(cloud_file, "$", f"{env_dir / HOST_FILE} is here too; an environment is one or the other")
        )
    chain = _load(config_dir, Path(CHAIN_FILE), Chain, problems)
    cloud = _load(config_dir, env_dir / CLOUD_FILE, Cloud, problems)
    if chain is None or cloud is None:
        raise ConfigError([str(p) for p in problems])
    scripts = _read_dir(config_dir / FEATURES_DIR, ".sh")
    problems.extend(check_cloud(cloud, chain, set(scripts), cloud_file))
    if problems:
        raise ConfigError([str(p) for p in problems])
    return CloudEnvironment(
        name=environment,
        config_dir=config_dir,
        cloud=cloud,
        chain=chain,
        feature_scripts={f: scripts[f] for f in cloud.features},
    )


def check_cloud(cloud: Cloud, chain: Chain, scripts: set[str], f: str) -> Iterator[Problem]:
    """Cross-document facts of a cloud environment. Pure: the documents are already parsed."""
    shape = list(chain_structure_problems(chain))
    if shape:  # the same lines the on-prem environments print, so `phoenix validate` shows them once
        yield from shape
        return
    pins = feature_pins(chain)
    chain_order = list(pins)
    for i, feature in enumerate(cloud.features):
        if feature not in scripts:
            yield Problem(f, f"features[{i}]", f"no feature script features/{feature}.sh")
        if feature not in pins:
            yield Problem(
                f, f"features[{i}]", f"{feature} is in no layer of {CHAIN_FILE}, so nothing pins its versions"
            )
    ordered = [feature for feature in cloud.features if feature in pins]
    for earlier, later in zip(ordered, ordered[1:], strict=False):
        if chain_order.index(earlier) > chain_order.index(later):
            yield Problem(
                f,
                f"features[{cloud.features.index(later)}]",
                f"{later} (layer {pins[later].layer}) runs before {earlier} "
                f"(layer {pins[earlier].layer}) in the chain; keep the chain's order",
            )
    yield from _check_nvidia(cloud, pins, f)
    if cloud.vllm is not None:
        if "vllm" not in cloud.features:
            yield Problem(f, "vllm", "an engine config needs the vllm feature in features")
        if cloud.vllm.server.port == 22:
            yield Problem(f, "vllm.server.port", "22 clashes with SSH")
    zone = cloud.network.availability_zone
    if zone is not None and not zone.startswith(cloud.region):
        yield Problem(f, "network.availability_zone", f"{zone} is not in region {cloud.region}")


def _check_nvidia(cloud: Cloud, pins: Mapping[str, Pin], f: str) -> Iterator[Problem]:
    if "nvidia" not in cloud.features:
        if cloud.nvidia is not None:
            yield Problem(f, "nvidia", "set, but the nvidia feature is not in features")
        return
    if cloud.nvidia is None:
        yield Problem(f, "features", "the nvidia feature needs `nvidia` (runfile_url, sha256)")
        return
    pin = pins.get("nvidia")
    pinned = pin.versions.get("nvidia") if pin is not None else None
    if pin is not None and pinned != cloud.nvidia.version:
        yield Problem(
            f,
            "nvidia.version",
            f"{cloud.nvidia.version} differs from the chain's pin {pinned} "
            f"({CHAIN_FILE} layers.{pin.layer}.versions.nvidia); they must match",
        )
    if cloud.instance.ami.architecture == "arm64" and "x86_64" in cloud.nvidia.runfile_url:
        yield Problem(f, "nvidia.runfile_url", "an x86_64 runfile for an arm64 instance")
