"""Shared lifecycle rules for Phoenix's dynamic providers (docs/architecture.md, "Provider rules").

Every provider file (one per resource noun) follows the same shape:

1. ``<Noun>Inputs``: a frozen dataclass on :class:`Inputs` (``from_props``: numbers arrive as floats over
   gRPC; ``to_props``; ``defaults``); the ``version`` input is the provider's logic version, bumped when
   its behaviour changes.
2. pure logic: functions that render argv commands and parse their output (unit-tested without SSH);
3. the provider (a :class:`HostProvider`, or a :class:`ConvergingProvider` when create and update are
   one step: plain data only, pickled into state) with ``check`` tolerant of unknowns at preview, an exact
   ``diff`` via :func:`diff_inputs`, ``update`` returning every output, ``read`` for ``pulumi refresh``
   and ``delete`` from stored outputs alone;
4. the resource (a :class:`DynamicResource`, named by the plain noun) with typed ``Args`` and its outputs
   declared once, as ``pulumi.Output[...]`` annotations; its ``__init__`` registers through
   :meth:`DynamicResource._register`.

After a failed operation, cleanup goes through :func:`cleanup_on_failure` / :func:`attach_cleanup`: the
original error is what the user sees, a cleanup failure rides along as a note on it.
"""

from __future__ import annotations

import dataclasses
import pickle
import re
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeAlias

import pulumi
from pulumi import _types as sdk_types
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    ConfigureRequest,
    CreateResult,
    DiffResult,
    Resource,
    ResourceProvider,
    UpdateResult,
    dynamic,
)
from pulumi.output import Unknown
from pulumi.runtime import _serialization

from providers.channels.targets import ApiTarget, Credentials, SshTarget
from providers.errors import NoTargetError

if TYPE_CHECKING:
    from providers.channels.command import Executor
    from providers.channels.pve import PveClient

PROVIDER_KEY = "__provider"
VERSION_KEY = "version"

Options: TypeAlias = "pulumi.ResourceOptions | None"
"""A resource constructor's ``opts``."""


def is_unknown(value: Any) -> bool:
    """True for a value not known yet at preview (an output of a resource still to be created)."""
    return isinstance(value, Unknown)


def has_unknowns(props: Mapping[str, Any]) -> bool:
    return any(is_unknown(v) for v in props.values())


def changed(olds: Mapping[str, Any], news: Mapping[str, Any], keys: Iterable[str]) -> list[str]:
    """Keys among ``keys`` whose value differs between the stored outputs and the new inputs.

    An unknown new value counts as a change (it may differ); ``None`` and a missing key are the same.
    Numbers compare by value, so ``8`` in state equals ``8.0`` from the wire.
    """
    return [k for k in keys if is_unknown(news.get(k)) or olds.get(k) != news.get(k)]


def diff_inputs(
    olds: Mapping[str, Any],
    news: Mapping[str, Any],
    *,
    replace_on: Iterable[str],
    update_on: Iterable[str],
    delete_before_replace: bool = False,
) -> DiffResult:
    """An exact diff: identity keys (``replace_on``) replace, the rest (``update_on``) update in place.

    Keys in neither list never cause a change; ``__provider`` is deliberately not compared, so moving a
    provider class between modules does not churn resources. The ``version`` input is always an update.
    """
    replaces = changed(olds, news, replace_on)
    updates = changed(olds, news, [*update_on, VERSION_KEY])
    return DiffResult(
        changes=bool(replaces or updates),
        replaces=replaces,
        delete_before_replace=delete_before_replace if replaces else False,
    )


def kept_replacement_refusal(
    who: str, noun: str, replaces: Sequence[str], *, retained: bool, adopting: bool
) -> str | None:
    """Why a replacement in the same place (the same vmid, the same dataset name) cannot be made, or None.

    A replacement there deletes the old one first (from the stored outputs), then creates the new one. A
    ``retained`` old one is only forgotten and still holds the place, so the create would fail with the
    state already rid of it; an ``adopting`` create would take in what the delete just forgot (the change
    silently not made) or look for what it just destroyed.
    """
    if not replaces:
        return None
    change = f"{who}: {', '.join(replaces)} changed, which needs a new {noun} in its place"
    if retained:
        return (
            f"{change}, but the old one is kept on destroy (retain_on_delete) and would still be there, so "
            "no new one can be made. Nothing was changed. To rebuild it, first set retain_on_delete: false "
            "(and remove adopt) and run up, then make this change; or revert it"
        )
    if adopting:
        return (
            f"{change}, but adopt is set, so the new one would be an adoption of the {noun} the replacement "
            "destroys first. Nothing was changed. Remove adopt, so that Phoenix makes it anew; or revert the "
            "change"
        )
    return None


def require(news: Mapping[str, Any], keys: Iterable[str]) -> list[CheckFailure]:
    """A failure per required key that is missing (unknowns pass: they are known at up)."""
    return [CheckFailure(k, f"{k} is required") for k in keys if news.get(k) is None]


def with_defaults(news: Mapping[str, Any], inputs_class: type) -> dict[str, Any]:
    """``news`` with every input the program left out set to its declared default.

    ``check`` returns this, so state holds the full input set; without it, an omitted input (present in
    the stored outputs, absent from the new inputs) would look changed on every ``up``.
    """
    return {**_defaults(inputs_class), **news}


def _defaults(inputs_class: type) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    for f in dataclasses.fields(inputs_class):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = f.default_factory()
    return defaults


def stored(props: Mapping[str, Any]) -> dict[str, Any]:
    """``props`` without the ``__provider`` key: what ``read`` hands back as the resource's outputs."""
    return {k: v for k, v in props.items() if k != PROVIDER_KEY}


def as_int(value: Any) -> int:
    """gRPC carries numbers as doubles; state wants the int back (``8.0 -> 8``)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise ValueError(f"expected an integer, got {value!r}")
    return int(value)


CONVERT = "phoenix.convert"
"""Field metadata key: a function ``from_props`` applies to the field's wire value (see :func:`convert`)."""


def convert(function: Callable[[Any], Any]) -> dict[str, Any]:
    """Field metadata for :class:`Inputs`: ``sha256: str = field(metadata=convert(str.lower))``."""
    return {CONVERT: function}


_INT_ANNOTATION = re.compile(r"(int( \| None)?|None \| int|Optional\[int\])")


def _is_int(annotation: Any) -> bool:
    """``int`` or ``int | None`` (a string under ``from __future__ import annotations``, else a type)."""
    if isinstance(annotation, str):
        return _INT_ANNOTATION.fullmatch(annotation.strip()) is not None
    if annotation is int:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return set(typing.get_args(annotation)) in ({int}, {int, type(None)})
    return False


@dataclass(frozen=True)
class _FieldPlan:
    """How :meth:`Inputs.from_props` reads one field; computed once per inputs class."""

    name: str
    is_int: bool
    default: Any
    default_factory: Any
    convert: Callable[[Any], Any] | None


class Inputs:
    """Base of every provider's ``<Noun>Inputs`` frozen dataclass: the one place props become typed inputs.

    - :meth:`from_props` takes each field by name from the props Pulumi hands a CRUD method; ``__provider``
      and any other key that is no field (a stored output) is ignored, a missing or ``None`` value gets the
      field's default, an ``int`` field is brought back from the double gRPC carries (:func:`as_int`), and
      a field with :func:`convert` metadata is passed through its function.
    - :meth:`to_props` gives the fields back as plain props (what state stores as inputs).
    - :meth:`defaults` the declared defaults, which ``check`` fills in (:func:`with_defaults`).
    """

    _plans: ClassVar[dict[type, list[_FieldPlan]]] = {}

    @classmethod
    def _plan(cls) -> list[_FieldPlan]:
        plan = Inputs._plans.get(cls)
        if plan is None:
            plan = [
                _FieldPlan(f.name, _is_int(f.type), f.default, f.default_factory, f.metadata.get(CONVERT))
                for f in dataclasses.fields(cls)  # type: ignore[arg-type]  # subclasses are dataclasses
            ]
            Inputs._plans[cls] = plan
        return plan

    @classmethod
    def from_props(cls, props: Mapping[str, Any]) -> Self:
        values: dict[str, Any] = {}
        for f in cls._plan():
            value = props.get(f.name)
            if value is not None:
                value = f.convert(value) if f.convert else as_int(value) if f.is_int else value
            elif f.default is not dataclasses.MISSING:
                value = f.default
            elif f.default_factory is not dataclasses.MISSING:
                value = f.default_factory()
            elif f.name not in props:
                raise ValueError(f"{cls.__name__}: {f.name} is required")
            values[f.name] = value
        return cls(**values)

    def to_props(self) -> dict[str, Any]:
        props: dict[str, Any] = dataclasses.asdict(self)  # type: ignore[call-overload]  # a dataclass
        return props

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return _defaults(cls)


def attach_cleanup(error: BaseException, cleanup: Callable[[], object], what: str) -> None:
    """Run ``cleanup`` after ``error``; if it fails too, its failure becomes a note on ``error``.

    The caller re-raises ``error``: the user sees what went wrong first, and what was left behind.
    Never ``pulumi.log.warn`` (a dynamic provider's log never reaches the user) and never the cleanup
    error instead of the original.
    """
    try:
        cleanup()
    except Exception as cleanup_error:  # noqa: BLE001 - any cleanup failure is reported, never raised
        error.add_note(f"{what} also failed: {type(cleanup_error).__name__}: {cleanup_error}")


@contextmanager
def cleanup_on_failure(cleanup: Callable[[], object], what: str) -> Iterator[None]:
    """``with cleanup_on_failure(remove_temp_ct, "removing CT 9001"): build()``: on an error from the body,
    run ``cleanup`` and re-raise the original error (see :func:`attach_cleanup`)."""
    try:
        yield
    except Exception as error:
        attach_cleanup(error, cleanup, what)
        raise


_outputs: dict[type, tuple[str, ...]] = {}
_OUTPUT_ANNOTATION = re.compile(r"(pulumi\.)?Output\[")


def declared_outputs(resource_class: type) -> tuple[str, ...]:
    """The ``pulumi.Output[...]`` annotations of a :class:`DynamicResource` subclass (and its bases)."""
    names = _outputs.get(resource_class)
    if names is None:
        found: dict[str, None] = {}
        for klass in reversed(resource_class.__mro__):
            if klass is DynamicResource or not issubclass(klass, DynamicResource):
                continue
            for name, annotation in vars(klass).get("__annotations__", {}).items():
                text = annotation if isinstance(annotation, str) else repr(annotation)
                if _OUTPUT_ANNOTATION.match(text) or typing.get_origin(annotation) is pulumi.Output:
                    found[name] = None
        names = _outputs[resource_class] = tuple(found)
    return names


class DynamicResource(Resource):
    """``pulumi.dynamic.Resource`` that scales to programs with thousands of dynamic resources.

    Three things the SDK does per resource (pulumi 3.272) cost a large program dearly, all found by
    bench/eval_scale:

    - ``serialize_provider`` dill-pickles the provider for every resource (≈3 ms each), although a
      Phoenix provider is plain data pickled by reference: equal fields give the same string. The
      string is computed once per distinct provider and reused.
    - it wraps ``pickle._Pickler._batch_setitems`` in a sorting shim on every call and never restores
      it, so each pickle adds a stack frame to every later one; about 980 pickles into a program it hits
      the recursion limit (cf. pulumi/pulumi#17803). The method is put back after each pickle.
    - resolving the outputs re-reads the output types from the class's annotations for every resource
      (``pulumi._types.resource_types``: ``get_type_hints`` over the merged globals of every module in
      the MRO), about 6 % of a 500-guest program. A class's annotations do not change, so they are read
      once per class (:func:`_resource_types`), this one's subclasses and any other resource class.

    Everything else is what ``pulumi.dynamic.Resource.__init__`` does: the ``__provider`` input, secret
    when the provider asks for it, and the ``pulumi-python:dynamic/<module>:<name>`` type token.

    Outputs are declared once, as ``pulumi.Output[...]`` class annotations: each one the props leave out
    is registered as ``None`` (to be filled by the provider), so it becomes an attribute of the resource.

    A subclass's ``__init__`` registers through :meth:`_register`, not ``super().__init__``. The SDK
    records, for every resource, the stack above the *third* ``__init__`` frame (``Resource``,
    ``CustomResource``, then the concrete class), and takes the first frame of it as the resource's source
    position, the line of user code that made it. A registering ``__init__`` here would be that third
    frame, so every Phoenix resource's source position would be its own class's ``super().__init__`` line
    in ``providers/`` and its stack one frame deeper (the trace is the SDK's largest per-resource step,
    bench/eval_scale). With :meth:`_register` the subclass's ``__init__`` is the third frame: the source
    position is the component line that built the resource.
    """

    _serialized: dict[tuple[type, str], tuple[str, bool]] = {}

    def __init__(self, *_args: object, **_kwargs: object) -> None:
        # The SDK's own constructor would run here otherwise, dill pickle and all (see the class docstring).
        raise TypeError(f"{type(self).__name__}.__init__ must register through self._register(...)")

    def _register(
        self,
        provider: ResourceProvider,
        name: str,
        props: dict[str, Any],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """Register the resource: what ``pulumi.dynamic.Resource.__init__`` does, once per resource."""
        if PROVIDER_KEY in props:
            raise ValueError("a dynamic resource must not define the __provider key")
        outputs = declared_outputs(type(self))
        if any(name not in props for name in outputs):
            props = {**dict.fromkeys(outputs), **props}
        serialized, contains_secrets = self._serialize_provider(provider)
        value: Any = serialized
        if getattr(provider, "serialize_as_secret_always", True) or contains_secrets:
            value = pulumi.Output.secret(serialized)
        pulumi.CustomResource.__init__(
            self, f"pulumi-python:{self._resource_type_name}", name, {**props, PROVIDER_KEY: value}, opts
        )

    @classmethod
    def _serialize_provider(cls, provider: ResourceProvider) -> tuple[str, bool]:
        getstate = getattr(provider, "__getstate__", None)
        state = getstate() if callable(getstate) else vars(provider)
        key = (type(provider), repr(sorted(state.items())))
        cached = cls._serialized.get(key)
        if cached is None:
            original = pickle._Pickler._batch_setitems  # type: ignore[attr-defined]
            try:
                cached = _serialization._serialize(True, dynamic.serialize_provider, provider)
            finally:
                pickle._Pickler._batch_setitems = original  # type: ignore[attr-defined]
            cls._serialized[key] = cached
        return cached


_sdk_resource_types = sdk_types.resource_types
_declared_types: dict[type, dict[str, type]] = {}


def _resource_types(resource_cls: type) -> dict[str, type]:
    """The SDK's ``resource_types``, read once per resource class (see :class:`DynamicResource`): a
    class's annotations do not change while a program runs, whether it is a dynamic resource, a component
    (each guest's) or a provider SDK's. A fresh dict each call, as the SDK hands out."""
    found = _declared_types.get(resource_cls)
    if found is None:
        found = _declared_types[resource_cls] = _sdk_resource_types(resource_cls)
    return dict(found)


# rpc.resolve_outputs, its one caller, looks it up on the module at every call.
sdk_types.resource_types = _resource_types


@dataclass
class HostProvider(ResourceProvider):
    """Base for providers that act on one Proxmox host.

    Holds targets (plain data) and, inside the provider host only, the credentials read at configure.
    The shared SSH/PVE clients opened from these arrive with the host-channels issue.
    """

    ssh_target: SshTarget | None = None
    api_target: ApiTarget | None = None
    _credentials: Credentials | None = field(default=None, repr=False, compare=False)

    # Pickled into state by reference (module path + these fields); no secret is ever a field value
    # at pickling time because _credentials is only set in configure(), inside the provider host.
    serialize_as_secret_always = False

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_credentials"] = None
        return state

    def configure(self, req: ConfigureRequest) -> None:
        self._credentials = Credentials.from_sources(req.config)

    @property
    def host_name(self) -> str:
        """The host an error names when no channel is open (a refusal in ``diff``): the SSH target's."""
        if self.ssh_target is not None:
            return self.ssh_target.host
        return self.api_target.node if self.api_target is not None else "no host"

    @property
    def credentials(self) -> Credentials:
        if self._credentials is None:  # e.g. called outside a provider host, by local tooling
            self._credentials = Credentials.from_sources()
        return self._credentials

    def ssh(self) -> Executor:
        """The process-wide SSH executor of this provider's host (one connection per host per process)."""
        from providers.channels.ssh import (
            executor_for,  # late: keeps paramiko out of processes that never use SSH
        )

        if self.ssh_target is None:
            raise NoTargetError(f"{type(self).__name__}: no ssh_target, so no SSH connection can be opened")
        return executor_for(self.ssh_target, self.credentials)

    def pve(self) -> PveClient:
        """The process-wide PVE API client of this provider's host (one login per host per process)."""
        from providers.channels.pve import client_for  # late: keeps proxmoxer out of SSH-only processes

        if self.api_target is None:
            raise NoTargetError(f"{type(self).__name__}: no api_target, so no PVE API client can be opened")
        return client_for(self.api_target, self.credentials)


@dataclass
class ConvergingProvider(HostProvider):
    """A provider whose create and update are one idempotent step: bring the host to the inputs, return
    every output (a file written, a service deployed, a driver installed).

    A subclass names its inputs class and diff keys and defines :meth:`converge` and :meth:`resource_id`;
    ``check`` (defaults filled in, ``required`` present, then :meth:`validate`), ``diff``, ``create`` and
    ``update`` are the same for all of them. Only class attributes are added: the pickled fields are the
    subclass's own.
    """

    inputs_type: ClassVar[type[Inputs]]
    required: ClassVar[tuple[str, ...]] = ()
    replace_on: ClassVar[tuple[str, ...]] = ()
    update_on: ClassVar[tuple[str, ...]] = ()

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        return CheckResult(
            with_defaults(news, self.inputs_type), [*require(news, self.required), *self.validate(news)]
        )

    def validate(self, _news: Mapping[str, Any]) -> list[CheckFailure]:
        """Failures beyond a missing required input (unknown values must pass: they are known at up)."""
        return []

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return diff_inputs(olds, news, replace_on=self.replace_on, update_on=self.update_on)

    def create(self, props: dict[str, Any]) -> CreateResult:
        inputs = self.inputs_type.from_props(props)
        return CreateResult(self.resource_id(inputs), self.converge(inputs))

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(self.converge(self.inputs_type.from_props(news)))

    def resource_id(self, inputs: Any) -> str:
        raise NotImplementedError

    def converge(self, inputs: Any) -> dict[str, Any]:
        """Bring the host to ``inputs`` (a no-op when it is there already); every output."""
        raise NotImplementedError
