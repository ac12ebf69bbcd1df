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

from phoenix_components.config.cloud import CloudEnvironment
from phoenix_components.config.cloud_models import AmiCriteria
from phoenix_components.config.features import Target, feature_env
from phoenix_components.config.models import VllmEngine
from phoenix_components.render import cloud_init
from phoenix_components.render.errors import AmiNotFoundError, UserDataError
from phoenix_components.render.vllm import UNIT_PATH, render_unit

EC2_FEATURES_DIR = "/opt/phoenix/features"
RUNNER = "/opt/phoenix/run-features.sh"
DONE_MARKER = "/var/lib/phoenix/features-done"
MODEL_CACHE_ENV = "/etc/phoenix/model-cache.env"
# EC2 refuses user-data over 16 KiB (before base64).
USER_DATA_LIMIT = 16 * 1024
TARGET: Target = "ec2"

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


def render_runner(features: Sequence[str], variables: Mapping[str, Mapping[str, str]], vllm: bool) -> str:
    """The first-boot script (:func:`cloud_init.runner`): each feature in order with its own environment,
    then the vLLM service enabled (``vllm``) and the done marker touched; the first failure stops it."""
    return cloud_init.runner(features, variables, EC2_FEATURES_DIR, _after_features(vllm))


def _after_features(vllm: bool) -> list[list[str]]:
    enable = [["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", "vllm.service"]]
    return [*(enable if vllm else []), ["mkdir", "-p", DONE_MARKER.rsplit("/", 1)[0]], ["touch", DONE_MARKER]]


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def render_user_data(
    *,
    environment: str,
    features: Sequence[str],
    scripts: Mapping[str, str],
    variables: Mapping[str, Mapping[str, str]],
    vllm: VllmEngine | None,
    model_cache: Mapping[str, str],
) -> str:
    """``#cloud-config`` (:func:`cloud_init.cloud_config`): write the feature scripts, the runner, the model
    cache's environment file and the vLLM unit, then run the runner once.

    The instance replaces when this text changes (``user_data_replace_on_change``), as a layer does when
    its key changes: features run once, at first boot, never half-applied onto an old instance.
    """
    # The header is a YAML comment, which nothing can escape: only plain names go into it.
    named = [environment, *features]
    if not all(_PLAIN_NAME.fullmatch(name) for name in named):
        raise UserDataError(f"cannot name {named!r} in a cloud-init comment: letters, digits, `_`, `-` only")
    env_lines = "".join(f"{k}={shlex.quote(v)}\n" for k, v in sorted(model_cache.items()))
    files = [cloud_init.WriteFile(MODEL_CACHE_ENV, env_lines)]
    if vllm is not None:
        files.append(cloud_init.WriteFile(UNIT_PATH, render_unit(vllm)))
    text = cloud_init.cloud_config(
        features=features,
        scripts=scripts,
        variables=variables,
        features_dir=EC2_FEATURES_DIR,
        runner_path=RUNNER,
        then=_after_features(vllm is not None),
        files=files,
        comment=f"Phoenix environment {environment}: features {', '.join(features)}",
    )
    if len(text.encode()) > USER_DATA_LIMIT:
        raise UserDataError(
            f"user-data for {environment} is {len(text.encode())} bytes; EC2 allows {USER_DATA_LIMIT}"
        )
    return text


def ec2_user_data(env: CloudEnvironment, bucket: str) -> str:
    """:func:`render_user_data` for a loaded environment, with the model-cache bucket's name."""
    cloud, pins = env.cloud, env.pins()
    return render_user_data(
        environment=env.name,
        features=cloud.features,
        scripts=env.feature_scripts,
        variables={f: feature_env(TARGET, f, pins[f].versions, cloud.nvidia) for f in cloud.features},
        vllm=cloud.vllm,
        model_cache={"PHOENIX_MODEL_CACHE_BUCKET": bucket, "PHOENIX_MODEL_CACHE_REGION": cloud.region},
    )
