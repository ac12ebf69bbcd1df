"""A ZFS clone of a snapshot: O(1), writable, sharing blocks. Token ``pulumi-python:dynamic/zfs:Clone``.

The data path's building block (a model-weights snapshot cloned per vLLM container) and what a linked
clone is underneath. Lifecycle, as :mod:`providers.zfs.dataset` with these differences:

- **identity** is ``origin`` (``pool/ds@snap``) and ``name``: either changing replaces. A new origin
  under the same name destroys the old clone first (two datasets cannot share a name); a new name is
  created before the old one goes.
- **create** [2]: ``zfs clone -o k=v ... origin name``, then a read-back that **verifies** ZFS reports
  ``origin`` as asked: a dataset that came out as a full copy fails loudly (and is removed [+1]).
  Safe to retry: an existing filesystem under ``name`` whose origin is the requested snapshot is adopted
  (its declared properties set); one with any other origin, or none, is **never** adopted
  (:class:`DatasetExistsError` says what is there). A missing origin snapshot is
  :class:`DatasetNotFoundError` naming it.
- **update** [1], **read** [1], **delete** [2]: as for a dataset. Read reports the live ``origin``; after
  an out-of-band ``zfs promote`` it differs and the next ``up`` shows a replace.

State (outputs): ``origin`` (read back from ZFS), ``name``, ``properties`` (declared keys, live values),
``version``, ``mountpoint``, ``guid``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult

from providers.base import attach_cleanup, is_unknown, require
from providers.channels.steps import HostCommand
from providers.errors import HostError
from providers.zfs.common import (
    DatasetFacts,
    ZfsResource,
    clone_argv,
    destroy,
    filesystem_props,
    pool_of,
    read_step,
    snapshot_name_problem,
)
from providers.zfs.dataset import (
    PropertyValue,
    ZfsDatasetInputs,
    ZfsDatasetProvider,
    checked_filesystem,
    diff_filesystem,
    validate_filesystem,
)

PROVIDER_VERSION = "1"
"""Bump when this provider's behaviour changes: every clone then updates (re-applies its properties)."""


# --- 1. inputs ----------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ZfsCloneInputs(ZfsDatasetInputs):
    """A dataset's inputs plus the snapshot it is cloned from. ``name`` is the clone (identity)."""

    origin: str
    """The snapshot to clone, ``pool/ds@snap`` (identity)."""
    version: str = PROVIDER_VERSION


# --- 2. pure logic -------------------------------------------------------------------------------------


def validate_clone(props: Mapping[str, Any]) -> list[CheckFailure]:
    """Failures for known values; an origin still unknown (its snapshot not made yet) passes."""
    failures = [*require(props, ["origin"]), *validate_filesystem(props)]
    origin, name = props.get("origin"), props.get("name")
    if origin is None or is_unknown(origin):
        return failures
    if problem := snapshot_name_problem(origin):
        failures.append(CheckFailure("origin", problem))
    elif isinstance(name, str) and not is_unknown(name) and pool_of(name) != pool_of(origin):
        failures.append(
            CheckFailure("name", f"{name!r}: a clone lives in its origin's pool ({pool_of(origin)})")
        )
    return failures


def create_steps(want: ZfsCloneInputs) -> list[HostCommand]:
    """A first ``up``: ``zfs clone -o k=v ... origin name``, then the read-back (which must report
    ``origin``). ``phoenix plan`` renders these; ``create`` runs them."""
    return [
        HostCommand(
            f"cloning {want.origin} to {want.name}", clone_argv(want.origin, want.name, want.properties)
        ),
        read_step([want.name], filesystem_props(want.properties)),
    ]


def plan_inputs(props: Mapping[str, Any]) -> ZfsCloneInputs:
    """The inputs ``create`` gets for the program's ``props``, as ``check`` stores them."""
    return ZfsCloneInputs.from_props(checked_filesystem(props, PROVIDER_VERSION))


class CloneOriginError(HostError):
    """ZFS made the dataset but does not report it as a clone of the requested snapshot."""


# --- 3. the provider -----------------------------------------------------------------------------------


@dataclass
class ZfsCloneProvider(ZfsDatasetProvider):
    """A dataset provider whose create clones, whose identity includes ``origin`` and whose outputs
    report the origin ZFS sees. Plain data only, like its base."""

    noun: ClassVar[str] = "clone"
    inputs_type: ClassVar[type[ZfsDatasetInputs]] = ZfsCloneInputs

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        inputs = checked_filesystem(news, PROVIDER_VERSION)
        return CheckResult(inputs, validate_clone(inputs))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return diff_filesystem(olds, news, identity=["origin", "name"], host=self.host_name)

    def create(self, props: dict[str, Any]) -> CreateResult:
        want = ZfsCloneInputs.from_props(props)
        steps = create_steps(want)
        what = steps[0].what
        facts = self._make(steps, want, want.origin)
        if facts.origin != want.origin:
            # A clone that came out as a copy fails loudly. Adoption checks the origin, so this dataset is
            # the one just made: remove it rather than leave it unrecorded.
            ex = self.ssh()
            error = CloneOriginError(
                ex.host, f"{what}: ZFS reports origin {facts.origin or '-'} for {want.name}"
            )

            def remove() -> None:
                leftover = destroy(
                    ex, want.name, f"removing {want.name}", guid=None, busy_timeout=self.busy_timeout
                )
                if leftover is not None:
                    raise leftover

            attach_cleanup(error, remove, f"removing {want.name} (remove it by hand)")
            raise error
        return CreateResult(want.name, self._outputs(want, facts))

    def _live(self, facts: DatasetFacts, declared: Iterable[str]) -> dict[str, Any]:
        return {**super()._live(facts, declared), "origin": facts.origin or ""}


# --- 4. the resource -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZfsCloneArgs:
    origin: pulumi.Input[str]
    """The snapshot to clone, e.g. ``ZfsSnapshot.name`` (``rpool/data/models@v1``)."""
    name: pulumi.Input[str]
    """The clone's dataset, e.g. ``rpool/data/vllm-301-models``; same pool as the origin."""
    properties: pulumi.Input[Mapping[str, pulumi.Input[PropertyValue]]] = field(default_factory=dict)
    """ZFS properties to manage on the clone, e.g. ``{"mountpoint": "/srv/models", "readonly": "on"}``."""


class ZfsClone(ZfsResource[ZfsCloneArgs], module="zfs", name="Clone"):
    """A ZFS clone of a snapshot (see the module docstring)."""

    provider_type = ZfsCloneProvider
    logic_version = PROVIDER_VERSION

    origin: pulumi.Output[str]
    """The origin as ZFS reports it."""
    name: pulumi.Output[str]
    properties: pulumi.Output[dict[str, str]]
    version: pulumi.Output[str]
    mountpoint: pulumi.Output[str]
    guid: pulumi.Output[str]
