"""GuestSnapshot: a rolling family of PVE snapshots of a guest — take one when ``trigger`` changes, keep N.

Declare it with a ``trigger`` that means "something worth a restore point happened" (a layer key, a
model revision, a release tag): the first ``up`` takes ``<prefix>-<UTC time>``, every later change of the
trigger takes another, and the family is pruned to the newest ``retention`` snapshots. PVE snapshots the
container's volumes (on ZFS: ``zfs snapshot``, O(1)) and records its config with them; Phoenix never
touches snapshots outside its family (other prefixes, or snapshots taken by hand).

``read`` reports the family as the host has it (one deleted by hand is drift; all deleted = gone, and the
next ``up`` takes a new one); ``delete`` removes the whole family.

Steps are data (:func:`take_steps`, :func:`update_steps`, :func:`delete_steps`, from the inputs and the
snapshot list read first); ``phoenix plan`` renders :func:`plan_steps`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, ReadResult, UpdateResult

from providers.base import Inputs, changed, require
from providers.channels.steps import ApiCall
from providers.guests.common import (
    GuestProvider,
    GuestResource,
    family,
    guest_path,
    prune_steps,
    take_snapshot_steps,
    unless_missing,
)

PROVIDER_VERSION = "1"
PREFIX = r"^[A-Za-z][A-Za-z0-9_-]{0,20}$"  # + "-YYYYmmddTHHMMSS" stays within PVE's 40 characters


@dataclass(frozen=True)
class GuestSnapshotInputs(Inputs):
    node: str
    vmid: int
    prefix: str
    retention: int = 3
    trigger: str = ""
    kind: str = "lxc"  # or "qemu"
    description: str = ""
    task_timeout_s: int = 600
    version: str = PROVIDER_VERSION

    @property
    def guest(self) -> str:
        return guest_path(self.node, self.vmid, self.kind)


# ------------------------------------------------------------------ steps, as data


def list_step(inputs: GuestSnapshotInputs) -> ApiCall:
    return ApiCall("GET", f"{inputs.guest}/snapshot", step="list snapshots")


def take_steps(
    inputs: GuestSnapshotInputs, snapshots: Sequence[Mapping[str, Any]], now: float
) -> tuple[list[ApiCall], list[str]]:
    """Take one snapshot and prune the family to ``retention``, given the guest's ``snapshots`` (PVE's
    list): the calls, and the family as they leave it."""
    return take_snapshot_steps(
        inputs.guest,
        family([dict(s) for s in snapshots], inputs.prefix),
        inputs.prefix,
        inputs.retention,
        now,
        description=inputs.description,
    )


def update_steps(
    inputs: GuestSnapshotInputs, trigger_changed: bool, snapshots: Sequence[Mapping[str, Any]], now: float
) -> tuple[list[ApiCall], list[str]]:
    """A new trigger takes a snapshot; otherwise a new retention applies to the family there now."""
    if trigger_changed:
        return take_steps(inputs, snapshots, now)
    names = family([dict(s) for s in snapshots], inputs.prefix)
    return prune_steps(inputs.guest, names, inputs.retention), names[-inputs.retention :]


def delete_steps(inputs: GuestSnapshotInputs, snapshots: Sequence[Mapping[str, Any]]) -> list[ApiCall]:
    names = family([dict(s) for s in snapshots], inputs.prefix)
    return prune_steps(inputs.guest, names, 0, step="delete")


def plan_steps(inputs: GuestSnapshotInputs) -> list[ApiCall]:
    """A first ``up``: the list read, then the one snapshot (a new guest has none to prune); its name
    is the time it is taken, shown as ``<UTC time>``."""
    params = {"snapname": f"{inputs.prefix}-<UTC time>"}
    if inputs.description:
        params["description"] = inputs.description
    take = ApiCall("POST", f"{inputs.guest}/snapshot", params, step="snapshot", wait="task")
    return [list_step(inputs), take]


# ------------------------------------------------------------------ provider


@dataclass
class GuestSnapshotProvider(GuestProvider):
    inputs_class = GuestSnapshotInputs
    replace_on = ("node", "kind", "vmid", "prefix")
    update_on = ("trigger", "retention", "description", "task_timeout_s")

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = require(news, ["node", "vmid", "prefix"])
        prefix = news.get("prefix")
        if isinstance(prefix, str) and not re.match(PREFIX, prefix):
            failures.append(
                CheckFailure("prefix", f"{prefix!r}: a letter, then letters, digits, - or _ (≤ 21)")
            )
        retention = news.get("retention", 3)
        if isinstance(retention, int | float) and retention < 1:
            failures.append(CheckFailure("retention", "keep at least one snapshot"))
        if news.get("kind", "lxc") not in ("lxc", "qemu"):
            failures.append(CheckFailure("kind", "lxc or qemu"))
        return self.checked(news, failures)

    def create(self, props: dict[str, Any]) -> CreateResult:
        inputs = GuestSnapshotInputs.from_props(props)
        runner = self.runner(inputs.task_timeout_s, ssh=False)
        steps, snapshots = take_steps(inputs, runner.one(list_step(inputs)), time.time())
        runner.run(steps)
        return CreateResult(
            f"{inputs.kind}/{inputs.vmid}/{inputs.prefix}", {**inputs.to_props(), "snapshots": snapshots}
        )

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        inputs = GuestSnapshotInputs.from_props(news)
        runner = self.runner(inputs.task_timeout_s, ssh=False)
        trigger_changed = bool(changed(olds, news, ["trigger"]))
        steps, snapshots = update_steps(inputs, trigger_changed, runner.one(list_step(inputs)), time.time())
        runner.run(steps)
        return UpdateResult({**inputs.to_props(), "snapshots": snapshots})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        inputs = GuestSnapshotInputs.from_props(props)
        runner = self.runner(inputs.task_timeout_s, ssh=False)
        listed = unless_missing(lambda: runner.one(list_step(inputs)))  # None: the guest itself is gone
        snapshots = family(listed or [], inputs.prefix)
        return ReadResult(id_, {**props, "snapshots": snapshots}) if snapshots else ReadResult(None, {})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        inputs = GuestSnapshotInputs.from_props(props)
        runner = self.runner(inputs.task_timeout_s, ssh=False)
        listed = unless_missing(lambda: runner.one(list_step(inputs)))
        if listed is not None:
            runner.run(delete_steps(inputs, listed))


@dataclass(frozen=True)
class GuestSnapshotArgs:
    """What a :class:`GuestSnapshot` keeps; each field as :class:`GuestSnapshotInputs` documents it."""

    node: pulumi.Input[str]
    vmid: pulumi.Input[int]
    prefix: pulumi.Input[str]
    """Names the family: ``<prefix>-<UTC time>``; a letter, then letters, digits, - or _ (≤ 21)."""
    retention: pulumi.Input[int] = 3
    trigger: pulumi.Input[str] = ""
    """A new value takes a new snapshot (a layer key, a model revision, a release tag)."""
    kind: pulumi.Input[str] = "lxc"
    description: pulumi.Input[str] = ""
    task_timeout_s: pulumi.Input[int] = 600


class GuestSnapshot(GuestResource[GuestSnapshotArgs], module="phoenix", name="GuestSnapshot"):
    """Rolling PVE snapshots of a guest. Token ``pulumi-python:dynamic/phoenix:GuestSnapshot``."""

    snapshots: pulumi.Output[list[str]]

    provider_class = GuestSnapshotProvider
    provider_version = PROVIDER_VERSION
