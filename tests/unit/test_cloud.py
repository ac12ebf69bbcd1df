"""The cloud environment's pure parts: pick_ami, the cloud-init renderer, and cloud.json validation."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from phoenix_components.cli.main import main
from phoenix_components.config.cloud import cloud_environment_names, load_cloud_environment
from phoenix_components.config.cloud_models import AmiCriteria, instance_architecture
from phoenix_components.config.errors import ConfigError
from phoenix_components.config.features import feature_env, feature_pins
from phoenix_components.config.load import environment_names
from phoenix_components.config.models import Chain
from phoenix_components.render.cloud import (
    USER_DATA_LIMIT,
    AmiNotFoundError,
    ec2_user_data,
    pick_ami,
    render_runner,
    render_user_data,
)
from providers.errors import PhoenixError

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
NOW = datetime(2025, 9, 1, tzinfo=UTC)
DEBIAN = AmiCriteria(owner="136693071363", name_pattern="debian-12-amd64-*", architecture="x86_64")


def image(image_id: str, created: str, **overrides: Any) -> dict[str, Any]:
    return {
        "image_id": image_id,
        "name": f"debian-12-amd64-{created.replace('-', '')}-2190",
        "architecture": "x86_64",
        "creation_date": f"{created}T10:00:00.000Z",
        "deprecation_time": "2027-01-01T00:00:00.000Z",
        "state": "available",
        "owner_id": "136693071363",
        **overrides,
    }


# ---------------------------------------------------------------- pick_ami


def test_pick_ami_takes_the_newest_fitting_image_whatever_the_order() -> None:
    images = [image("ami-old", "2025-06-01"), image("ami-new", "2025-08-01"), image("ami-mid", "2025-07-01")]
    assert pick_ami(images, DEBIAN, NOW) == "ami-new"
    assert pick_ami(list(reversed(images)), DEBIAN, NOW) == "ami-new"


@pytest.mark.parametrize(
    ("newer", "why"),
    [
        ({"architecture": "arm64"}, "not x86_64"),
        ({"deprecation_time": "2025-08-15T00:00:00.000Z"}, "deprecated"),
        ({"state": "pending"}, "not available"),
        ({"name": "debian-13-amd64-20250801-2190"}, "name does not match"),
        ({"owner_id": "999999999999"}, "another owner"),
    ],
)
def test_pick_ami_passes_over_a_newer_image_that_does_not_fit(newer: dict[str, Any], why: str) -> None:
    images = [image("ami-fits", "2025-06-01"), image("ami-newer", "2025-08-01", **newer)]
    assert pick_ami(images, DEBIAN, NOW) == "ami-fits"
    with pytest.raises(AmiNotFoundError, match=f"1 {why}"):
        pick_ami(images[1:], DEBIAN, NOW)


def test_pick_ami_treats_a_future_deprecation_as_current_and_a_missing_one_as_never() -> None:
    assert pick_ami([image("ami-a", "2025-08-01", deprecation_time="2025-09-02T00:00:00Z")], DEBIAN, NOW)
    assert pick_ami([image("ami-b", "2025-08-01", deprecation_time=None)], DEBIAN, NOW) == "ami-b"


def test_pick_ami_wildcards_are_ec2s_not_fnmatchs() -> None:
    bracketed = AmiCriteria(owner="amazon", name_pattern="dl-[gpu] ?.*", architecture="x86_64")
    assert pick_ami([image("ami-1", "2025-08-01", name="dl-[gpu] 2.0")], bracketed, NOW) == "ami-1"
    with pytest.raises(AmiNotFoundError):  # with fnmatch, [gpu] would be a character class matching "g"
        pick_ami([image("ami-2", "2025-08-01", name="dl-g 2.0")], bracketed, NOW)


def test_pick_ami_breaks_ties_by_id_and_names_the_criteria_when_nothing_fits() -> None:
    same = [image("ami-b", "2025-08-01"), image("ami-a", "2025-08-01")]
    assert pick_ami(same, DEBIAN, NOW) == pick_ami(list(reversed(same)), DEBIAN, NOW) == "ami-b"
    with pytest.raises(AmiNotFoundError) as raised:
        pick_ami([], DEBIAN, NOW)
    assert "owner 136693071363 named 'debian-12-amd64-*' for x86_64" in str(raised.value)
    assert "0 candidates: no images at all" in str(raised.value)


def test_instance_architecture_knows_graviton_gpu_types() -> None:
    assert instance_architecture("g5g.xlarge") == "arm64"
    assert instance_architecture("g6e.12xlarge") == "x86_64"
    assert instance_architecture("p4d.24xlarge") == "x86_64"


# ---------------------------------------------------------------- user-data


def _render(**overrides: Any) -> str:
    args: dict[str, Any] = {
        "environment": "t",
        "features": ["base_setup", "docker"],
        "scripts": {"base_setup": "#!/bin/sh\necho base\n", "docker": "#!/bin/sh\necho 'it''s $HOME: %s'\n"},
        "variables": {
            "base_setup": {"PHOENIX_TARGET": "ec2"},
            "docker": {"PHOENIX_TARGET": "ec2", "PHOENIX_DOCKER_VERSION": "5:28.2.2-1~debian.12~bookworm"},
        },
        "vllm": None,
        "model_cache": {"PHOENIX_MODEL_CACHE_BUCKET": "b-1"},
    }
    return render_user_data(**{**args, **overrides})


def test_user_data_is_cloud_config_that_writes_each_script_verbatim_and_runs_the_runner_once() -> None:
    text = _render()
    assert text.startswith("#cloud-config\n")
    document = yaml.safe_load(text)
    files = {f["path"]: f for f in document["write_files"]}
    assert files["/opt/phoenix/features/docker.sh"]["content"] == "#!/bin/sh\necho 'it''s $HOME: %s'\n"
    assert files["/opt/phoenix/features/docker.sh"]["permissions"] == "0755"
    assert document["runcmd"] == [["bash", "/opt/phoenix/run-features.sh"]]
    assert "/etc/systemd/system/vllm.service" not in files
    assert files["/etc/phoenix/model-cache.env"]["content"] == "PHOENIX_MODEL_CACHE_BUCKET=b-1\n"
    assert _render() == text, "rendering is deterministic (a change replaces the instance)"


def test_the_runner_runs_features_in_order_with_their_own_quoted_environment(tmp_path: Path) -> None:
    runner = render_runner(
        ["a", "b"], {"a": {"PHOENIX_TARGET": "ec2"}, "b": {"PHOENIX_X_VERSION": "1:2~3 $(x)"}}, vllm=False
    )
    lines = runner.splitlines()
    assert lines[:3] == ["#!/usr/bin/env bash", lines[1], "set -euo pipefail"]
    assert lines[3] == "env PHOENIX_TARGET=ec2 bash /opt/phoenix/features/a.sh"
    assert lines[4] == "env 'PHOENIX_X_VERSION=1:2~3 $(x)' bash /opt/phoenix/features/b.sh"
    assert "systemctl" not in runner
    # bash parses it, and the value arrives untouched (quoted exactly once).
    check = subprocess.run(["bash", "-n"], input=runner, text=True, capture_output=True, check=False)
    assert check.returncode == 0, check.stderr


def test_feature_env_on_ec2_carries_the_target_the_pins_and_only_nvidia_gets_the_runfile() -> None:
    env = load_cloud_environment(CONFIG, "cloud-dev")
    pins = env.pins()
    nvidia = feature_env("ec2", "nvidia", pins["nvidia"].versions, env.cloud.nvidia)
    assert nvidia["PHOENIX_TARGET"] == "ec2"
    assert nvidia["PHOENIX_NVIDIA_VERSION"] == "580.76.05"
    assert nvidia["PHOENIX_NVIDIA_RUNFILE_URL"].endswith("NVIDIA-Linux-x86_64-580.76.05.run")
    docker = feature_env("ec2", "docker", pins["docker"].versions, env.cloud.nvidia)
    assert docker["PHOENIX_NVIDIA_CONTAINER_TOOLKIT_VERSION"] == "1.17.8-1"
    assert not any("RUNFILE" in k for k in docker)


def test_the_shipped_cloud_dev_user_data_fits_ec2s_limit_and_enables_vllm() -> None:
    text = ec2_user_data(load_cloud_environment(CONFIG, "cloud-dev"), "bucket-1")
    assert len(text.encode()) < USER_DATA_LIMIT
    files = {f["path"]: f["content"] for f in yaml.safe_load(text)["write_files"]}
    assert "systemctl enable --now vllm.service" in files["/opt/phoenix/run-features.sh"]
    assert '"--port" "8000"' in files["/etc/systemd/system/vllm.service"]


def test_user_data_over_the_ec2_limit_is_refused() -> None:
    with pytest.raises(PhoenixError, match="EC2 allows 16384"):
        _render(scripts={"base_setup": "x" * USER_DATA_LIMIT, "docker": ""})


# ---------------------------------------------------------------- cloud.json


@pytest.fixture
def config_copy(tmp_path: Path) -> Path:
    shutil.copytree(CONFIG, tmp_path / "config")
    return tmp_path / "config"


def _edit(config: Path, change: Any) -> None:
    path = config / "environments/cloud-dev/cloud.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _problems(config: Path) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        load_cloud_environment(config, "cloud-dev")
    return raised.value.problems


def test_cloud_environments_are_listed_apart_from_the_on_prem_ones() -> None:
    assert cloud_environment_names(CONFIG) == ["cloud-dev"]
    assert "cloud-dev" not in environment_names(CONFIG)
    env = load_cloud_environment(CONFIG, "cloud-dev")
    assert env.cloud.instance.type == "g5.xlarge"
    assert list(env.feature_scripts) == ["base_setup", "nvidia", "docker", "vllm"]


def test_feature_pins_come_from_the_layer_that_introduces_each_feature() -> None:
    chain = Chain.model_validate_json((CONFIG / "chain.json").read_text())
    pins = feature_pins(chain)
    assert {f: p.layer for f, p in pins.items()} == {
        "base_setup": "base",
        "nvidia": "gpu",
        "docker": "docker",
        "vllm": "vllm",
        "ollama": "ollama",
        "llamacpp": "llamacpp",
    }
    assert pins["vllm"].versions == {"vllm": "0.10.1.1"}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            lambda d: d.update(features=["base_setup", "docker", "nvidia", "vllm"]),
            "features[2]: nvidia (layer gpu) runs before docker (layer docker) in the chain",
        ),
        (
            lambda d: d.update(features=["base_setup", "nvidia", "docker", "vllm", "cuda"]),
            "features[4]: no feature script features/cuda.sh",
        ),
        (
            lambda d: d["nvidia"].update(
                version="570.86.16", runfile_url=d["nvidia"]["runfile_url"].replace("580.76.05", "570.86.16")
            ),
            "nvidia.version: 570.86.16 differs from the chain's pin 580.76.05 "
            "(chain.json layers.gpu.versions.nvidia)",
        ),
        (lambda d: d.pop("nvidia"), "features: the nvidia feature needs `nvidia`"),
        (lambda d: d.update(features=["base_setup"]), "vllm: an engine config needs the vllm feature"),
        (lambda d: d["vllm"]["server"].update(port=22), "vllm.server.port: 22 clashes with SSH"),
        (
            lambda d: d["network"].update(availability_zone="eu-west-1a"),
            "network.availability_zone: eu-west-1a is not in region us-east-1",
        ),
        (
            lambda d: d["network"].update(allowed_ingress=["0.0.0.0/0"]),
            "network.allowed_ingress: 0.0.0.0/0 opens SSH and vLLM to the whole internet",
        ),
        (
            lambda d: d["network"].update(subnet_cidr="10.43.1.0/24"),
            "network: subnet_cidr 10.43.1.0/24 is outside vpc_cidr 10.42.0.0/16",
        ),
        (
            lambda d: d["instance"].update(type="m5.xlarge"),
            "instance.type: m5.xlarge is not an NVIDIA GPU instance type",
        ),
        (
            lambda d: d["instance"].update(type="g4ad.xlarge"),
            "instance.type: g4ad.xlarge is not an NVIDIA GPU instance type",
        ),
        (
            lambda d: d["instance"].update(type="g5g.xlarge"),
            "instance: g5g.xlarge runs arm64, but ami.architecture",
        ),
        (
            lambda d: d["model_cache"].update(bucket_prefix="Models"),
            "model_cache.bucket_prefix: must be a bucket name prefix: lower-case letters, digits and `-`",
        ),
        (lambda d: d.update(regoin="us-east-1"), "regoin: unknown key"),
    ],
)
def test_cloud_json_mistakes_name_the_file_and_path(config_copy: Path, change: Any, problem: str) -> None:
    _edit(config_copy, change)
    assert any(
        p.startswith(f"environments/cloud-dev/cloud.json: {problem}") for p in _problems(config_copy)
    ), _problems(config_copy)


def test_an_environment_is_on_prem_or_cloud_not_both(config_copy: Path) -> None:
    shutil.copy(config_copy / "environments/dev/host.json", config_copy / "environments/cloud-dev/host.json")
    assert any("host.json is here too" in p for p in _problems(config_copy))


def test_phoenix_validate_covers_cloud_environments(
    config_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", "--config", str(CONFIG)]) == 0
    out = capsys.readouterr().out
    assert "cloud-dev: ok (AWS us-east-1, g5.xlarge, features base_setup, nvidia, docker, vllm)" in out
    assert "dev: ok (6 layers" in out

    _edit(config_copy, lambda d: d["instance"].update(root_volume_gib=8))
    assert main(["validate", "--config", str(config_copy), "--env", "cloud-dev"]) == 2
    assert "cloud.json: instance.root_volume_gib:" in capsys.readouterr().err
