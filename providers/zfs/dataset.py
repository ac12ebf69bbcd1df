"""A ZFS filesystem on the host (``rpool/data/phoenix-models``). Token ``pulumi-python:dynamic/zfs:Dataset``.

Lifecycle (all over SSH, argv only; session counts per operation in brackets):

- **identity** is ``name``, plus the create-only properties (``casesensitivity``, ``normalization``,
  ``utf8only``, ``encryption``...): a change replaces. A new name is created before the old one is
  destroyed (two names coexist); a create-only change keeps the name, so the old one goes first.
  A replace is a new, empty dataset: data does not move.
- **properties** (``mountpoint``, ``quota``, ``compression``, ``recordsize``, ``org.phoenix:*``...) change
  in place: ``zfs set`` for a new value, ``zfs inherit`` for a property no longer declared (``quota=none``
  and friends for the ones ZFS will not inherit), then a read-back [1]. ``check`` stores them in the form
  ``zfs get -p`` reports (``16K`` -> ``16384``, ``0`` -> ``none`` for quotas), so drift compares exactly.
- **create** [2]: ``zfs create -o k=v ... name``, then a read-back. Safe to retry: when the dataset already
  exists and is an independent filesystem (not a clone, same create-only properties), it is **adopted**
  and its declared properties are set [3]; anything else fails with :class:`DatasetExistsError` saying
  what is there. A retried ``up`` after a dropped connection therefore converges instead of failing.
  Parents are never created implicitly (``zfs create -p``): they would belong to nobody.
- **adopt** (``adopt``): a filesystem that already holds data (made by hand) is taken in, never created:
  ``create`` reads it first [1], refuses it with :class:`DatasetAdoptionError` when it is missing or not
  an independent filesystem with the declared create-only properties, else sets only the declared
  properties that differ [2]. ``retain_on_delete`` makes ``delete`` only forget it (the default for an
  adopted dataset: Phoenix keeps what it did not make).
- **read** (refresh) [1]: one ``zfs get``; gone -> ``ReadResult(None, {})``; outputs carry live values.
- **delete** [2], from stored outputs: destroy only if ZFS still has the same instance (``guid``), never
  with ``-r``/``-R``: snapshots or children Phoenix does not manage make it fail with
  :class:`DatasetHasChildrenError` naming them. "Busy" is retried until ``busy_timeout``, then
  :class:`DatasetBusyError`. Already gone is success.

State (outputs): ``name``, ``properties`` (declared keys, live values), ``version``, ``mountpoint`` and
``guid`` (both read from ZFS).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, ReadResult, UpdateResult

from providers.base import (
    VERSION_KEY,
    HostProvider,
    Inputs,
    convert,
    diff_inputs,
    is_unknown,
    kept_replacement_refusal,
    require,
    stored,
)
from providers.channels.command import Executor
from providers.channels.steps import HostCommand
from providers.errors import UnreplaceableError
from providers.zfs.common import (
    BUSY_TIMEOUT,
    COMMAND_TIMEOUT,
    DatasetExistsError,
    DatasetFacts,
    DatasetNotFoundError,
    ZfsError,
    ZfsResource,
    apply_properties,
    canonical_properties,
    classify,
    create_argv,
    create_only_changes,
    dataset_name_problem,
    destroy,
    filesystem_outputs,
    filesystem_props,
    parse_get,
    plan_properties,
    properties_problems,
    read_dataset,
    read_step,
    run_read,
    run_zfs,
)

PROVIDER_VERSION = "1"
"""Bump when this provider's behaviour changes: every dataset then updates (re-applies its properties)."""


# --- 1. inputs ----------------------------------------------------------------------------------------


def _str_map(value: Mapping[Any, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()}


@dataclass(frozen=True)
class ZfsDatasetInputs(Inputs):
    name: str
    """Full dataset name, e.g. ``rpool/data/phoenix-models`` (identity)."""
    properties: dict[str, str] = field(default_factory=dict, metadata=convert(_str_map))
    """Declared ZFS properties, canonical (as ``check`` stored them)."""
    # New inputs default to what a dataset made before them is: created by Phoenix, destroyed with it.
    adopt: bool = False
    retain_on_delete: bool = False
    version: str = PROVIDER_VERSION


# --- 2. pure logic -------------------------------------------------------------------------------------


def validate_filesystem(props: Mapping[str, Any]) -> list[CheckFailure]:
    """Failures for ``name`` and ``properties`` (shared with clones); unknowns pass until ``up``."""
    failures = require(props, ["name"])
    name = props.get("name")
    if name is not None and not is_unknown(name) and (problem := dataset_name_problem(name)):
        failures.append(CheckFailure("name", problem))
    failures.extend(CheckFailure("properties", p) for p in properties_problems(props.get("properties")))
    return failures


def checked_filesystem(news: Mapping[str, Any], version: str) -> dict[str, Any]:
    """Inputs with defaults filled in and properties in canonical form."""
    inputs = {"properties": {}, **news}
    if inputs.get(VERSION_KEY) is None:
        inputs[VERSION_KEY] = version
    inputs["properties"] = canonical_properties(inputs["properties"])
    return inputs


def diff_filesystem(
    olds: Mapping[str, Any], news: Mapping[str, Any], *, identity: list[str], host: str
) -> DiffResult:
    """The diff table for a filesystem (dataset or clone). ``olds`` are stored outputs, ``news`` inputs.

    - an ``identity`` key (``name``; a clone's ``origin`` too) changed -> replace;
    - a create-only property changed -> replace (``properties``);
    - any other property, or ``version``, changed -> update in place;
    - the replacement is created first unless it keeps the name (then the old one is destroyed first:
      two datasets cannot share a name, and create would otherwise adopt the very dataset about to go);
    - a replacement under the same name of a dataset kept on destroy, or by an adoption, is refused
      (:func:`providers.base.kept_replacement_refusal`: ``UnreplaceableError``, ``host`` in it).
    """
    # retain_on_delete is only ever false in state from before it existed (and for clones): compare as bools
    # so that state sees no change; a flip is an update, so delete reads the choice from stored outputs.
    retain = {k: {"retain_on_delete": bool(d.get("retain_on_delete"))} for k, d in (("o", olds), ("n", news))}
    base = diff_inputs(
        {**olds, **retain["o"]},
        {**news, **retain["n"]},
        replace_on=identity,
        update_on=["properties", "retain_on_delete"],
    )
    replaces = list(base.replaces or [])
    if create_only_changes(olds.get("properties") or {}, news.get("properties")):
        replaces.append("properties")
    name = news.get("name")
    keeps_name = not is_unknown(name) and olds.get("name") == name
    refusal = kept_replacement_refusal(
        f"dataset {olds.get('name')}",
        "dataset",
        replaces if keeps_name else [],  # another name is another dataset: nothing collides
        retained=bool(olds.get("retain_on_delete")),
        adopting=bool(news.get("adopt")),
    )
    if refusal is not None:
        raise UnreplaceableError(host, refusal)
    return DiffResult(
        changes=base.changes, replaces=replaces, delete_before_replace=bool(replaces) and keeps_name
    )


def adoption_problem(facts: DatasetFacts, want_origin: str | None, want: Mapping[str, str]) -> str | None:
    """Why an existing filesystem is not the one asked for (so create must not adopt it), or None.

    ``want_origin`` None asks for an independent filesystem; a snapshot name asks for a clone of it.
    """
    if facts.type != "filesystem":
        return f"it is a {facts.type}, not a filesystem"
    if want_origin is None and facts.origin is not None:
        return f"it is a clone of {facts.origin}, not an independent filesystem"
    if want_origin is not None and facts.origin != want_origin:
        found = f"a clone of {facts.origin}" if facts.origin else "an independent filesystem (no origin)"
        return f"it is {found}, not a clone of {want_origin}"
    if differing := create_only_changes(facts.declared(want), want):
        return f"its create-only properties differ: {', '.join(differing)}"
    return None


def converge_existing(
    ex: Executor,
    error: DatasetExistsError,
    facts: DatasetFacts | None,
    origin: str | None,
    want: Mapping[str, str],
) -> DatasetFacts:
    """Adopt the filesystem a create found already there, or raise ``error`` saying why not."""
    if facts is None:  # gone again between the create and the read: let the retry create it
        raise error
    if problem := adoption_problem(facts, origin, want):
        what = f"{error.what} (not adopted: {problem}; Phoenix adopts only the dataset it was asked to make)"
        raise DatasetExistsError(error.result, what, dataset=error.dataset)
    live = facts.declared(want)
    if not plan_properties(live, want):
        return facts
    return apply_properties(ex, facts.name, live, want, f"adopting {facts.name}")


ADOPTION_INPUTS = ("adopt", "retain_on_delete")


class DatasetAdoptionError(ZfsError):
    reason = "dataset not adopted"


def adopt_steps(want: ZfsDatasetInputs) -> list[HostCommand]:
    """An adoption's first step: the read of what is there (then only the differing properties are set)."""
    return [read_step([want.name], filesystem_props(want.properties))]


def create_steps(want: ZfsDatasetInputs) -> list[HostCommand]:
    """A first ``up``: ``zfs create -o k=v ... name``, then the read-back of the declared properties and
    the facts every filesystem reports. ``phoenix plan`` renders these; ``create`` runs them. An adopted
    dataset: only the read (:func:`adopt_steps`)."""
    if want.adopt:
        return adopt_steps(want)
    return [
        HostCommand(f"creating dataset {want.name}", create_argv(want.name, want.properties)),
        read_step([want.name], filesystem_props(want.properties)),
    ]


def plan_inputs(props: Mapping[str, Any]) -> ZfsDatasetInputs:
    """The inputs ``create`` gets for the program's ``props``: as ``check`` stores them (properties in
    ``zfs get -p`` form, e.g. ``quota=1G`` -> ``1073741824``)."""
    return ZfsDatasetInputs.from_props(checked_filesystem(props, PROVIDER_VERSION))


# --- 3. the provider -----------------------------------------------------------------------------------


@dataclass
class ZfsDatasetProvider(HostProvider):
    """Plain data only (pickled into state): the inherited SSH target and the busy-retry budget.

    :class:`providers.zfs.clone.ZfsCloneProvider` extends it: a clone is a filesystem with an origin.
    """

    busy_timeout: float = BUSY_TIMEOUT

    noun: ClassVar[str] = "dataset"
    inputs_type: ClassVar[type[ZfsDatasetInputs]] = ZfsDatasetInputs

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        inputs = checked_filesystem(news, PROVIDER_VERSION)
        return CheckResult(inputs, validate_filesystem(inputs))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return diff_filesystem(olds, news, identity=["name"], host=self.host_name)

    def create(self, props: dict[str, Any]) -> CreateResult:
        want = ZfsDatasetInputs.from_props(props)
        facts = self._adopt(want) if want.adopt else self._make(create_steps(want), want, None)
        return CreateResult(want.name, self._outputs(want, facts))

    def _adopt(self, want: ZfsDatasetInputs) -> DatasetFacts:
        """Take the existing filesystem in (the module docstring): read, refuse another, set what differs."""
        ex = self.ssh()
        (read,) = adopt_steps(want)
        result = ex.run(read.argv, check=False, timeout=COMMAND_TIMEOUT)
        if not result.ok and not isinstance(error := classify(result, read.what), DatasetNotFoundError):
            raise error
        facts = parse_get(result.stdout).get(want.name)
        problem = "it does not exist" if facts is None else adoption_problem(facts, None, want.properties)
        if problem is not None or facts is None:
            raise DatasetAdoptionError(result, f"adopting {want.name}: {problem}", dataset=want.name)
        live = facts.declared(want.properties)
        if not plan_properties(live, want.properties):
            return facts
        return apply_properties(ex, facts.name, live, want.properties, f"adopting {facts.name}")

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        declared = dict(props.get("properties") or {})
        facts = read_dataset(self.ssh(), id_, filesystem_props(declared))
        if facts is None:
            return ReadResult(None, {})  # destroyed out of band
        return ReadResult(id_, {**stored(props), "name": id_, **self._live(facts, declared)})

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        want = self.inputs_type.from_props(news)
        live = dict(olds.get("properties") or {})
        facts = apply_properties(self.ssh(), id_, live, want.properties, f"updating {self.noun} {id_}")
        return UpdateResult(self._outputs(want, facts))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        if props.get("retain_on_delete"):
            return  # only forgotten: the data stays (an adopted dataset, by default)
        what = f"destroying {self.noun} {id_}"
        guid = props.get("guid") or None
        error = destroy(self.ssh(), id_, what, guid=guid, busy_timeout=self.busy_timeout)
        if error is not None:
            raise error

    def _make(self, steps: Sequence[HostCommand], want: ZfsDatasetInputs, origin: str | None) -> DatasetFacts:
        """Run the create/clone step, then its read-back [2] (:func:`create_steps`); adopt what an earlier
        try made [3]."""
        ex = self.ssh()
        make, read = steps
        what = make.what
        outcome = run_zfs(ex, make.argv, what, busy_timeout=self.busy_timeout)
        if isinstance(outcome, ZfsError) and not isinstance(outcome, DatasetExistsError):
            raise outcome
        facts = run_read(ex, read).get(want.name)
        if isinstance(outcome, DatasetExistsError):
            return converge_existing(ex, outcome, facts, origin, want.properties)
        if facts is None:
            raise ValueError(f"{what}: zfs reported success but `zfs get` does not find {want.name}")
        return facts

    def _live(self, facts: DatasetFacts, declared: Iterable[str]) -> dict[str, Any]:
        return filesystem_outputs(facts, declared)

    def _outputs(self, want: ZfsDatasetInputs, facts: DatasetFacts) -> dict[str, Any]:
        # adopt/retain_on_delete only when set: a dataset (or clone) Phoenix made keeps the outputs it had.
        props = {k: v for k, v in want.to_props().items() if k not in ADOPTION_INPUTS or v}
        return {**props, **self._live(facts, want.properties)}


# --- 4. the resource -----------------------------------------------------------------------------------

PropertyValue = str | int | bool


@dataclass(frozen=True)
class ZfsDatasetArgs:
    name: pulumi.Input[str]
    """Full dataset name, e.g. ``rpool/data/phoenix-models``; its parent must exist."""
    properties: pulumi.Input[Mapping[str, pulumi.Input[PropertyValue]]] = field(default_factory=dict)
    """ZFS properties to manage, e.g. ``{"quota": "100G", "compression": "on", "atime": False}``."""
    adopt: pulumi.Input[bool] = False
    """Take the existing filesystem in rather than create it (refused unless it is one)."""
    retain_on_delete: pulumi.Input[bool] = False
    """Delete only forgets it; the data stays."""


class ZfsDataset(ZfsResource[ZfsDatasetArgs], module="zfs", name="Dataset"):
    """A ZFS filesystem (see the module docstring)."""

    provider_type = ZfsDatasetProvider
    logic_version = PROVIDER_VERSION

    name: pulumi.Output[str]
    properties: pulumi.Output[dict[str, str]]
    """Declared properties with their live values, in ``zfs get -p`` form."""
    version: pulumi.Output[str]
    mountpoint: pulumi.Output[str]
    """Where ZFS mounts it (as ``zfs get`` reports it)."""
    guid: pulumi.Output[str]
    """This instance of the name: delete destroys only the dataset with this guid."""
