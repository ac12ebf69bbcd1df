"""GuestSnapshot: a rolling family of PVE snapshots of a guest — take one when ``trigger`` changes, keep N.

Declare it with a ``trigger`` that means "something worth a restore point happened" (a layer key, a
model revision, a release tag): the first ``up`` takes ``<prefix>-<UTC time>``, every later change of the
trigger takes another, and the family is pruned to the newest ``retention`` snapshots. PVE snapshots the
container's volumes (on ZFS: ``zfs snapshot``, O(1)) and records its config with them; Phoenix never
touches snapshots outside its family (other prefixes, or snapshots taken by hand).

``read`` reports the family as the host has it (one deleted by hand is drift; all deleted = gone, and the
next ``up`` takes a new one); ``delete`` removes the whole family.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from typing import Any

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, ReadResult, UpdateResult

from providers.base import DynamicResource, HostProvider, as_int, changed, diff_inputs, require, with_defaults
from providers.channels.pve import PveClient, is_missing
from providers.channels.targets import ApiTarget
from providers.errors import PveError

PROVIDER_VERSION = "1"
PREFIX = r"^[A-Za-z][A-Za-z0-9_-]{0,20}$"  # + "-YYYYmmddTHHMMSS" stays within PVE's 40 characters


@dataclass(frozen=True)
class GuestSnapshotInputs:
    node: str
    vmid: int
    prefix: str
    retention: int = 3
    trigger: str = ""
    kind: str = "lxc"  # or "qemu"
    description: str = ""
    task_timeout_s: int = 600
    version: str = PROVIDER_VERSION

    @classmethod
    def from_props(cls, props: dict[str, Any]) -> GuestSnapshotInputs:
        values = {k: props[k] for k in cls.__dataclass_fields__ if k in props}
        for key in ("vmid", "retention", "task_timeout_s"):
            if key in values:
                values[key] = as_int(values[key])
        return cls(**values)


# ------------------------------------------------------------------ pure logic


def family(snapshots: list[dict[str, Any]], prefix: str) -> list[str]:
    """This resource's snapshots, oldest first. PVE's pseudo-snapshot ``current`` is never one."""
    pattern = re.compile(rf"^{re.escape(prefix)}-\d{{8}}T\d{{6}}(-\d+)?$")
    ours = [s for s in snapshots if pattern.match(str(s.get("name", "")))]
    ours.sort(key=lambda s: (as_int(s.get("snaptime", 0)), str(s["name"])))
    return [str(s["name"]) for s in ours]


def to_prune(names: list[str], keep: int) -> list[str]:
    """The oldest of ``names`` (oldest first) beyond the newest ``keep``."""
    return names[: max(0, len(names) - keep)]


def next_name(prefix: str, existing: list[str], now: float) -> str:
    base = f"{prefix}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}"
    name, n = base, 1
    while name in existing:  # two triggers within one second
        n += 1
        name = f"{base}-{n}"
    return name


# ------------------------------------------------------------------ provider


@dataclass
class GuestSnapshotProvider(HostProvider):
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
        return CheckResult(with_defaults(news, GuestSnapshotInputs), failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return diff_inputs(
            olds,
            news,
            replace_on=["node", "kind", "vmid", "prefix"],
            update_on=["trigger", "retention", "description", "task_timeout_s"],
        )

    def _path(self, inputs: GuestSnapshotInputs) -> str:
        return f"nodes/{inputs.node}/{inputs.kind}/{inputs.vmid}/snapshot"

    def _family(self, api: PveClient, inputs: GuestSnapshotInputs) -> list[str]:
        return family(api.get(self._path(inputs)), inputs.prefix)

    def _take(self, api: PveClient, inputs: GuestSnapshotInputs) -> list[str]:
        """Take one snapshot, prune the family to ``retention``; return the family as it now is."""
        existing = self._family(api, inputs)
        params: dict[str, Any] = {"snapname": next_name(inputs.prefix, existing, time.time())}
        if inputs.description:
            params["description"] = inputs.description
        api.run_task("POST", self._path(inputs), timeout=inputs.task_timeout_s, step="snapshot", **params)
        return self._prune(api, inputs, [*existing, params["snapname"]])

    def _prune(self, api: PveClient, inputs: GuestSnapshotInputs, names: list[str]) -> list[str]:
        for name in to_prune(names, inputs.retention):
            api.run_task(
                "DELETE", f"{self._path(inputs)}/{name}", timeout=inputs.task_timeout_s, step="prune"
            )
        return names[-inputs.retention :]

    def create(self, props: dict[str, Any]) -> CreateResult:
        inputs = GuestSnapshotInputs.from_props(props)
        snapshots = self._take(self.pve(), inputs)
        return CreateResult(
            f"{inputs.kind}/{inputs.vmid}/{inputs.prefix}", {**asdict(inputs), "snapshots": snapshots}
        )

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        inputs, api = GuestSnapshotInputs.from_props(news), self.pve()
        if changed(olds, news, ["trigger"]):
            snapshots = self._take(api, inputs)
        else:  # a new retention applies to what is there now
            snapshots = self._prune(api, inputs, self._family(api, inputs))
        return UpdateResult({**asdict(inputs), "snapshots": snapshots})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        inputs = GuestSnapshotInputs.from_props(props)
        try:
            snapshots = self._family(self.pve(), inputs)
        except PveError as error:
            if is_missing(error):  # the guest itself is gone
                return ReadResult(None, {})
            raise
        return ReadResult(id_, {**props, "snapshots": snapshots}) if snapshots else ReadResult(None, {})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        inputs, api = GuestSnapshotInputs.from_props(props), self.pve()
        try:
            names = self._family(api, inputs)
        except PveError as error:
            if is_missing(error):
                return
            raise
        for name in names:
            api.run_task(
                "DELETE", f"{self._path(inputs)}/{name}", timeout=inputs.task_timeout_s, step="delete"
            )


class GuestSnapshot(DynamicResource, module="phoenix", name="GuestSnapshot"):
    """Rolling PVE snapshots of a guest. Token ``pulumi-python:dynamic/phoenix:GuestSnapshot``."""

    snapshots: pulumi.Output[list[str]]

    def __init__(
        self,
        name: str,
        inputs: dict[str, Any],
        api_target: ApiTarget,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        provider = GuestSnapshotProvider(api_target=api_target)
        super().__init__(provider, name, {**inputs, "version": PROVIDER_VERSION, "snapshots": None}, opts)
