"""Pure parts of the cloud stack: which AMI to boot, and the cloud-init user-data that makes a Phoenix host.

Nothing here talks to AWS. :func:`pick_ami` chooses among image records (the shape of
``aws.ec2.get_ami``'s result); :func:`render_user_data` turns the chain's feature scripts, their pinned
versions and the vLLM engine config into one ``#cloud-config`` document.
"""

from __future__ import annotations

import re
import shlex
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import yaml

from phoenix_components.config.cloud import CloudEnvironment
from phoenix_components.config.cloud_models import AmiCriteria
from phoenix_components.config.models import NvidiaDriver, VllmEngine
from phoenix_components.render.errors import AmiNotFoundError, UserDataError
from phoenix_components.render.vllm import UNIT_PATH, render_unit

FEATURES_DIR = "/opt/phoenix/features"
RUNNER = "/opt/phoenix/run-features.sh"
DONE_MARKER = "/var/lib/phoenix/features-done"
MODEL_CACHE_ENV = "/etc/phoenix/model-cache.env"
# EC2 refuses user-data over 16 KiB (before base64).
USER_DATA_LIMIT = 16 * 1024
TARGET = "ec2"

# The fields of aws.ec2.get_ami's result that pick_ami reads.
IMAGE_KEYS = ("image_id", "name", "architecture", "creation_date", "deprecation_time", "state", "owner_id")


def _ec2_wildcard(pattern: str) -> re.Pattern[str]:
    """EC2 name filters know only ``*`` and ``?``; brackets and dots in AMI names are literal."""
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts) + r"\Z", re.DOTALL)


def _timestamp(value: str) -> datetime:
    """EC2 writes ``2025-06-01T12:00:00.000Z``."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _refusal(image: Mapping[str, Any], criteria: AmiCriteria, name: re.Pattern[str], now: datetime) -> str:
    """Why ``image`` does not fit, or "" when it does."""
    if not image.get("image_id") or not image.get("creation_date"):
        return "no image id or creation date"
    if image.get("state", "available") != "available":
        return "not available"
    if image.get("architecture") != criteria.architecture:
        return f"not {criteria.architecture}"
    if not name.match(str(image.get("name") or "")):
        return "name does not match"
    if criteria.owner.isdigit() and image.get("owner_id") not in (None, criteria.owner):
        return "another owner"
    deprecated = image.get("deprecation_time")
    if deprecated and _timestamp(str(deprecated)) <= now:
        return "deprecated"
    return ""


def pick_ami(images: Sequence[Mapping[str, Any]], criteria: AmiCriteria, now: datetime | None = None) -> str:
    """The id of the newest available, non-deprecated image of the right architecture whose name matches.

    ``images`` are records with :data:`IMAGE_KEYS`; equal creation dates fall back to the image id so the
    choice never depends on list order.
    """
    now = now or datetime.now(UTC)
    name = _ec2_wildcard(criteria.name_pattern)
    refused: Counter[str] = Counter()
    fitting: list[Mapping[str, Any]] = []
    for image in images:
        reason = _refusal(image, criteria, name, now)
        if reason:
            refused[reason] += 1
        else:
            fitting.append(image)
    if not fitting:
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(refused.items())) or "no images at all"
        raise AmiNotFoundError(
            f"no AMI of owner {criteria.owner} named {criteria.name_pattern!r} for {criteria.architecture} "
            f"that is available and not deprecated ({len(images)} candidates: {why})"
        )
    newest = max(fitting, key=lambda image: (_timestamp(str(image["creation_date"])), str(image["image_id"])))
    return str(newest["image_id"])


def version_variable(name: str) -> str:
    """``nvidia_container_toolkit -> PHOENIX_NVIDIA_CONTAINER_TOOLKIT_VERSION``, as the scripts expect."""
    return f"PHOENIX_{name.upper()}_VERSION"


def feature_variables(
    feature: str, versions: Mapping[str, str], nvidia: NvidiaDriver | None
) -> dict[str, str]:
    """The environment one feature script runs with on EC2: the target and the chain's pinned versions."""
    variables = {"PHOENIX_TARGET": TARGET, **{version_variable(k): v for k, v in versions.items()}}
    if feature == "nvidia" and nvidia is not None:
        variables["PHOENIX_NVIDIA_RUNFILE_URL"] = nvidia.runfile_url
        variables["PHOENIX_NVIDIA_SHA256"] = nvidia.sha256
    return dict(sorted(variables.items()))


def render_runner(features: Sequence[str], variables: Mapping[str, Mapping[str, str]], vllm: bool) -> str:
    """The first-boot script: each feature in order, with its own environment; the first failure stops it."""
    lines = [
        "#!/usr/bin/env bash",
        "# Phoenix: the chain's feature scripts, in chain order, as `pct exec` runs them in a layer.",
        "set -euo pipefail",
    ]
    for feature in features:
        env = [f"{k}={v}" for k, v in variables[feature].items()]
        lines.append(shlex.join(["env", *env, "bash", f"{FEATURES_DIR}/{feature}.sh"]))
    if vllm:
        lines += ["systemctl daemon-reload", "systemctl enable --now vllm.service"]
    lines += [f"mkdir -p {shlex.quote(DONE_MARKER.rsplit('/', 1)[0])}", f"touch {shlex.quote(DONE_MARKER)}"]
    return "\n".join(lines) + "\n"


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class _Dumper(yaml.SafeDumper):
    """``yaml.safe_dump``'s dumper, with multi-line strings as literal blocks so the scripts read in the
    console as they are in the repo. PyYAML falls back to a quoted scalar wherever a block cannot carry
    the text exactly (trailing spaces, control characters), so every value still round-trips."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render_user_data(
    *,
    environment: str,
    features: Sequence[str],
    scripts: Mapping[str, str],
    variables: Mapping[str, Mapping[str, str]],
    vllm: VllmEngine | None,
    model_cache: Mapping[str, str],
) -> str:
    """``#cloud-config``: write the feature scripts, the runner and the vLLM unit, then run the runner once.

    The instance replaces when this text changes (``user_data_replace_on_change``), as a layer does when
    its key changes: features run once, at first boot, never half-applied onto an old instance.
    """
    # The header is a YAML comment, which nothing can escape: only plain names go into it.
    named = [environment, *features]
    if not all(_PLAIN_NAME.fullmatch(name) for name in named):
        raise UserDataError(f"cannot name {named!r} in a cloud-init comment: letters, digits, `_`, `-` only")
    files: list[dict[str, str]] = [
        {"path": f"{FEATURES_DIR}/{f}.sh", "permissions": "0755", "content": scripts[f]} for f in features
    ]
    files.append(
        {
            "path": RUNNER,
            "permissions": "0755",
            "content": render_runner(features, variables, vllm is not None),
        }
    )
    env_lines = "".join(f"{k}={shlex.quote(v)}\n" for k, v in sorted(model_cache.items()))
    files.append({"path": MODEL_CACHE_ENV, "permissions": "0644", "content": env_lines})
    if vllm is not None:
        files.append({"path": UNIT_PATH, "permissions": "0644", "content": render_unit(vllm)})
    document = {"write_files": files, "runcmd": [["bash", RUNNER]]}
    header = f"#cloud-config\n# Phoenix environment {environment}: features {', '.join(features)}\n"
    text = header + yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=1000)
    if len(text.encode()) > USER_DATA_LIMIT:
        raise UserDataError(
            f"user-data for {environment} is {len(text.encode())} bytes; EC2 allows {USER_DATA_LIMIT}"
        )
    return text


def user_data(env: CloudEnvironment, bucket: str) -> str:
    """:func:`render_user_data` for a loaded environment, with the model-cache bucket's name."""
    cloud, pins = env.cloud, env.pins()
    return render_user_data(
        environment=env.name,
        features=cloud.features,
        scripts=env.feature_scripts,
        variables={f: feature_variables(f, pins[f].versions, cloud.nvidia) for f in cloud.features},
        vllm=cloud.vllm,
        model_cache={"PHOENIX_MODEL_CACHE_BUCKET": bucket, "PHOENIX_MODEL_CACHE_REGION": cloud.region},
    )
