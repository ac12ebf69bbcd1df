"""A ZFS snapshot, ``<dataset>@<snapshot>``. Token ``pulumi-python:dynamic/zfs:Snapshot``.

The fixed point clones are made from: a template layer's ``@__base__``, a model-weights ``@v1``.

Lifecycle (session counts per operation in brackets):

- **identity** is everything: ``dataset``, ``snapshot`` and ``recursive``. A snapshot is immutable, so any
  change replaces it; a new name is taken before the old one is destroyed, while a change of
  ``recursive`` alone keeps the name, so the old snapshot goes first.
- **create** [2]: ``zfs snapshot [-r] dataset@snapshot``, then a read-back. Safe to retry: a snapshot that
  already has the name is adopted. That is what a name means in ZFS (there is one ``@v1``), but note it
  holds the data of whenever it was taken; ``guid`` and ``creation`` in the outputs tell which one.
- **read** (refresh) [1]: gone -> ``ReadResult(None, {})``; ``guid`` / ``creation`` show a snapshot
  destroyed and retaken out of band. For ``recursive`` snapshots only the top one is read.
- **delete** [2 to 3], from stored outputs: ``zfs destroy [-r]`` if it is still the instance with the
  stored ``guid``. Dependent clones make it fail with :class:`DependentClonesError` naming them (never
  ``-R``: that would destroy the clones); "busy" is retried until ``busy_timeout``; already gone is success.

State (outputs): ``dataset``, ``snapshot``, ``recursive``, ``version``, ``name`` (``dataset@snapshot``,
what a clone's ``origin`` takes), ``guid`` and ``creation`` (seconds since the epoch, from ZFS).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, ReadResult, UpdateResult

from providers.base import (
    VERSION_KEY,
    HostProvider,
    Inputs,
    diff_inputs,
    is_unknown,
    require,
    stored,
)
from providers.channels.command import Executor
from providers.channels.steps import HostCommand
from providers.zfs.common import (
    BUSY_TIMEOUT,
    COMMAND_TIMEOUT,
    DatasetExistsError,
    DatasetFacts,
    DependentClonesError,
    ZfsError,
    ZfsResource,
    dataset_name_problem,
    destroy,
    get_argv,
    parse_get,
    pool_of,
    read_dataset,
    read_step,
    run_read,
    run_zfs,
    snapshot_argv,
    snapshot_short_name_problem,
)

PROVIDER_VERSION = "1"
"""Bump when this provider's behaviour changes (a version change updates state only: snapshots are
immutable)."""

IDENTITY = ["dataset", "snapshot", "recursive"]
SNAPSHOT_FACTS = ("type", "guid", "creation")


# --- 1. inputs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZfsSnapshotInputs(Inputs):
    dataset: str
    """The snapshotted dataset, e.g. ``rpool/data/phoenix-models`` (identity)."""
    snapshot: str
    """The part after ``@``, e.g. ``v1`` (identity)."""
    recursive: bool = False
    """``zfs snapshot -r``: the same-named snapshot of every descendant, atomically (identity)."""
    version: str = PROVIDER_VERSION

    @property
    def name(self) -> str:
        return f"{self.dataset}@{self.snapshot}"


# --- 2. pure logic -------------------------------------------------------------------------------------


def validate(props: Mapping[str, Any]) -> list[CheckFailure]:
    """Failures for known values; a dataset name still unknown at preview passes."""
    failures = require(props, ["dataset", "snapshot"])
    dataset, snapshot, recursive = props.get("dataset"), props.get("snapshot"), props.get("recursive")
    if dataset is not None and not is_unknown(dataset) and (problem := dataset_name_problem(dataset)):
        failures.append(CheckFailure("dataset", problem))
    if (
        snapshot is not None
        and not is_unknown(snapshot)
        and (problem := snapshot_short_name_problem(snapshot))
    ):
        failures.append(CheckFailure("snapshot", problem))
    if not is_unknown(recursive) and not isinstance(recursive, bool):
        failures.append(CheckFailure("recursive", f"expected true or false, got {recursive!r}"))
    return failures


def diff_snapshot(olds: Mapping[str, Any], news: Mapping[str, Any]) -> DiffResult:
    """Any identity change replaces; only ``recursive`` changing keeps the name, so delete goes first
    (create would otherwise adopt the very snapshot about to be destroyed). ``version`` updates state."""
    base = diff_inputs(olds, news, replace_on=IDENTITY, update_on=[])
    keeps_name = all(k == "recursive" for k in base.replaces or [])
    return DiffResult(
        changes=base.changes,
        replaces=base.replaces,
        delete_before_replace=bool(base.replaces) and keeps_name,
    )


def clones_of(facts: Mapping[str, DatasetFacts], snapshot: str, *, recursive: bool) -> list[str]:
    """Datasets whose origin is ``snapshot`` (``ds@s``), or, recursive, ``ds@s`` or ``ds/<child>@s``."""
    dataset, _, short = snapshot.partition("@")

    def matches(origin: str | None) -> bool:
        if origin is None:
            return False
        if origin == snapshot:
            return True
        base, _, snap = origin.partition("@")
        return recursive and snap == short and base.startswith(dataset + "/")

    return sorted(name for name, f in facts.items() if matches(f.origin))


def create_steps(want: ZfsSnapshotInputs) -> list[HostCommand]:
    """A first ``up``: ``zfs snapshot [-r] dataset@snapshot``, then its read-back. ``phoenix plan``
    renders these; ``create`` runs them."""
    return [
        HostCommand(f"snapshotting {want.name}", snapshot_argv(want.name, recursive=want.recursive)),
        read_step([want.name], SNAPSHOT_FACTS),
    ]


def plan_inputs(props: Mapping[str, Any]) -> ZfsSnapshotInputs:
    """The inputs ``create`` gets for the program's ``props`` (``recursive`` defaults to false)."""
    return ZfsSnapshotInputs.from_props({"recursive": False, **props})


# --- 3. the provider -----------------------------------------------------------------------------------


@dataclass
class ZfsSnapshotProvider(HostProvider):
    """Plain data only (pickled into state): the inherited SSH target and the busy-retry budget."""

    busy_timeout: float = BUSY_TIMEOUT

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        inputs = {"recursive": False, **news}
        if inputs.get(VERSION_KEY) is None:
            inputs[VERSION_KEY] = PROVIDER_VERSION
        return CheckResult(inputs, validate(inputs))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return diff_snapshot(olds, news)

    def create(self, props: dict[str, Any]) -> CreateResult:
        want = ZfsSnapshotInputs.from_props(props)
        ex = self.ssh()
        take, read = create_steps(want)
        what = take.what
        outcome = run_zfs(ex, take.argv, what)
        if isinstance(outcome, ZfsError) and not isinstance(outcome, DatasetExistsError):
            raise outcome
        facts = run_read(ex, read).get(want.name)  # an existing one is adopted: see the docstring
        if facts is None:
            raise outcome if isinstance(outcome, ZfsError) else ValueError(f"{what}: `zfs get` finds nothing")
        return CreateResult(want.name, self._outputs(want, facts))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        facts = read_dataset(self.ssh(), id_, SNAPSHOT_FACTS)
        if facts is None:
            return ReadResult(None, {})  # destroyed out of band
        return ReadResult(id_, {**stored(props), "name": id_, **self._live(facts)})

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        # Only `version` updates (everything else replaces): nothing to do on the host.
        want = ZfsSnapshotInputs.from_props(news)
        return UpdateResult({**stored(olds), **want.to_props(), "name": want.name})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        ex = self.ssh()
        recursive = bool(props.get("recursive"))
        what = f"destroying snapshot {id_}"
        guid = props.get("guid") or None
        error = destroy(ex, id_, what, guid=guid, recursive=recursive, busy_timeout=self.busy_timeout)
        if isinstance(error, DependentClonesError) and not error.clones:
            # `destroy -r` says only "snapshot is cloned": find the clones to name them [+1 session]
            error = DependentClonesError(
                error.result, what, dataset=id_, clones=self._clones(ex, id_, recursive=recursive)
            )
        if error is not None:
            raise error

    def _clones(self, ex: Executor, name: str, *, recursive: bool) -> list[str]:
        result = ex.run(get_argv([pool_of(name)], ["origin"], recursive=True), timeout=COMMAND_TIMEOUT)
        return clones_of(parse_get(result.stdout), name, recursive=recursive)

    @staticmethod
    def _live(facts: DatasetFacts) -> dict[str, Any]:
        return {"guid": facts.value("guid") or "", "creation": facts.value("creation") or ""}

    def _outputs(self, want: ZfsSnapshotInputs, facts: DatasetFacts) -> dict[str, Any]:
        return {**want.to_props(), "name": want.name, **self._live(facts)}


# --- 4. the resource -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZfsSnapshotArgs:
    dataset: pulumi.Input[str]
    """The dataset to snapshot, e.g. ``ZfsDataset.name``."""
    snapshot: pulumi.Input[str]
    """The snapshot's name after ``@``, e.g. ``v1`` or ``__base__``."""
    recursive: pulumi.Input[bool] = False
    """Snapshot every descendant too (``zfs snapshot -r``)."""


class ZfsSnapshot(ZfsResource[ZfsSnapshotArgs], module="zfs", name="Snapshot"):
    """A ZFS snapshot (see the module docstring). ``name`` is what a :class:`ZfsClone` takes as origin."""

    provider_type = ZfsSnapshotProvider
    logic_version = PROVIDER_VERSION

    dataset: pulumi.Output[str]
    snapshot: pulumi.Output[str]
    recursive: pulumi.Output[bool]
    version: pulumi.Output[str]
    name: pulumi.Output[str]
    """``dataset@snapshot``."""
    guid: pulumi.Output[str]
    creation: pulumi.Output[str]
