"""Up / up again / change / refresh / destroy for a Pulumi program, without the Pulumi CLI. Tests only.

:class:`Harness` runs a program function under ``pulumi.runtime.set_mocks`` with a monitor that plays a
small part of the engine:

- every dynamic resource (``pulumi-python:dynamic...``) really goes through a :class:`DynHost`: Check, then
  Diff against the stored state, then Create / Update / replace (create-before-delete, or
  delete-before-create when Diff or the resource options ask for it) or nothing;
- every other resource (pulumi-proxmoxve ones, components) is recorded: its inputs are its outputs;
- state (URN → id, inputs, outputs, parent, dependencies) is kept in a JSON file between runs, with
  secret values sealed (encrypted with a passphrase, as a Pulumi file backend does);
- at the end of a successful ``up()``, resources no longer registered and replaced originals are deleted
  in reverse dependency order; ``destroy()`` deletes everything that way.

It is a test harness, not an engine: no parallelism limits, no ``protect``/``retainOnDelete``, no
aliases, no import, no cascade of delete-before-replace to dependents, no provider resources. Users run
the real Pulumi CLI.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import gc
import hashlib
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import pulumi
from cryptography.fernet import Fernet
from google.protobuf.message import Message
from pulumi.runtime import MockResourceArgs, Mocks, rpc, set_mocks, settings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.mocks import MockCallArgs, MockMonitor
from pulumi.runtime.proto import resource_pb2
from pulumi.runtime.stack import run_pulumi_func

# Private SDK helpers, the same ones MockMonitor and @pulumi.runtime.test use: they await Pulumi's
# futures from synchronous code on the program's event loop.
from pulumi.runtime.sync_await import _ensure_event_loop, _sync_await

from tests.support.dynhost import (
    PROVIDER_KEY,
    DynHost,
    Props,
    from_struct,
    is_secret,
    reveal,
    secret,
)

DYNAMIC_PREFIX = "pulumi-python:dynamic"
STATE_FORMAT = 1
_SEALED_KEY = "ciphertext"

Op = Literal["create", "update", "replace", "same", "delete"]
Program = Callable[[], object]


# -- running a program under mocks ---------------------------------------------------------------------


@dataclass(frozen=True)
class Registration:
    """One resource as the program registered it. ``inputs`` are in wire form (secrets marked)."""

    urn: str
    type: str
    name: str
    custom: bool
    parent: str
    dependencies: tuple[str, ...]
    inputs: Props
    additional_secret_outputs: tuple[str, ...] = ()
    delete_before_replace: bool = False
    ignore_changes: tuple[str, ...] = ()
    replace_on_changes: tuple[str, ...] = ()

    @property
    def dynamic(self) -> bool:
        return self.custom and self.type.startswith(DYNAMIC_PREFIX)

    @property
    def provider(self) -> str:
        """The pickled provider (base64) the engine would store, secret mark removed."""
        return str(reveal(self.inputs[PROVIDER_KEY]))


Register = Callable[[Registration], tuple[str, Props]]


class _Mocks(Mocks):
    def __init__(self, call: Callable[[MockCallArgs], dict[str, Any]] | None) -> None:
        self._call = call

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        # Registrations go through _Monitor.RegisterResource; this serves ReadResource (Resource.get).
        return args.resource_id or f"{args.name}-id", dict(args.inputs)

    def call(self, args: MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return (self._call(args) if self._call else {}), None


class _Monitor(MockMonitor):
    """A MockMonitor that hands each registration, with its URN, parent and dependencies, to ``register``.

    The SDK calls RegisterResource from executor threads, so ``register`` runs concurrently.
    """

    def __init__(self, mocks: Mocks, register: Register) -> None:
        super().__init__(mocks)
        self._register = register

    def RegisterResource(self, request: Any) -> Message:
        if request.type == "pulumi:pulumi:Stack":
            return super().RegisterResource(request)
        _ensure_event_loop()  # deserializing resource references needs a loop on this thread
        urn = self.make_urn(request.parent, request.type, request.name)
        registration = Registration(
            urn=urn,
            type=request.type,
            name=request.name,
            custom=bool(request.custom),
            parent=request.parent,
            dependencies=tuple(sorted(set(request.dependencies))),
            inputs=rpc.deserialize_properties(request.object, keep_unknowns=True),
            additional_secret_outputs=tuple(request.additionalSecretOutputs),
            delete_before_replace=bool(request.deleteBeforeReplace),
            ignore_changes=tuple(request.ignoreChanges),
            replace_on_changes=tuple(request.replaceOnChanges),
        )
        id_, outputs = self._register(registration)
        struct = _sync_await(rpc.serialize_properties(outputs, {}))
        self.resources[urn] = MockMonitor.ResourceRegistration(urn, id_, outputs)
        return resource_pb2.RegisterResourceResponse(urn=urn, id=id_, object=struct)


def run_program(
    program: Program,
    register: Register,
    *,
    project: str,
    stack: str,
    preview: bool = False,
    call: Callable[[MockCallArgs], dict[str, Any]] | None = None,
    config: Mapping[str, Any] | None = None,
) -> Props:
    """Run ``program`` under mocks, registering through ``register``; return its exports (wire form).

    A mapping returned by ``program`` is exported too, as with ``pulumi.run``; other results are ignored.
    Runs in a copy of the current context with a fresh root stack, so runs neither see nor disturb each
    other's settings (nor a test's own ``set_mocks``). ``config`` is the stack config the program reads
    with ``pulumi.Config`` (``"phoenix:key"`` keys; :func:`secret` values are secret config).
    """

    def run() -> Props:
        settings.ROOT.set(None)
        settings.SETTINGS.outputs = set()
        values = {k: _config_text(reveal(v)) for k, v in (config or {}).items()}
        set_all_config(values, [k for k, v in (config or {}).items() if is_secret(v)])
        set_mocks(
            _Mocks(call),
            project=project,
            stack=stack,
            preview=preview,
            monitor=_Monitor(_Mocks(call), register),
        )

        def body() -> None:
            exports = program()
            if isinstance(exports, Mapping):  # anything else (a lambda's last resource, say) is ignored
                for name, value in exports.items():
                    pulumi.export(name, value)

        _sync_await(run_pulumi_func(body))
        root = settings.get_root_resource()
        outputs = getattr(root, "outputs", {})
        return from_struct(_sync_await(rpc.serialize_properties(outputs, {})))

    return contextvars.copy_context().run(run)


def _config_text(value: Any) -> str:
    # Pulumi config values are strings; structured values travel as JSON.
    return value if isinstance(value, str) else json.dumps(value)


def capture(program: Program, *, project: str = "phoenix", stack: str = "test") -> dict[str, Registration]:
    """Every resource ``program`` registers, by name, with no provider called (outputs = inputs).

    ``capture(lambda: Note("n", {...}))["n"].provider`` is the ``__provider`` string the engine would store.
    """
    seen: dict[str, Registration] = {}
    lock = threading.Lock()

    def register(registration: Registration) -> tuple[str, Props]:
        with lock:
            seen[registration.name] = registration
        return f"{registration.name}-id" if registration.custom else "", dict(registration.inputs)

    run_program(program, register, project=project, stack=stack)
    return seen


# -- state -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceState:
    urn: str
    type: str
    id: str
    custom: bool
    dynamic: bool
    parent: str
    dependencies: tuple[str, ...]
    inputs: Props
    outputs: Props

    @property
    def provider(self) -> str | None:
        value = self.outputs.get(PROVIDER_KEY)
        return None if value is None else str(reveal(value))

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "dependencies": list(self.dependencies)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ResourceState:
        return cls(**{**data, "dependencies": tuple(data["dependencies"])})


class _Sealer:
    """Secrets in the state file: ``{sig: secret-sig, "ciphertext": ...}``, as Pulumi's file backend."""

    def __init__(self, passphrase: str) -> None:
        self._fernet = Fernet(base64.urlsafe_b64encode(hashlib.sha256(passphrase.encode()).digest()))

    def seal(self, value: Any) -> Any:
        if is_secret(value):
            plain = json.dumps(reveal(value)).encode()
            return {
                rpc._special_sig_key: rpc._special_secret_sig,
                _SEALED_KEY: self._fernet.encrypt(plain).decode(),
            }
        if isinstance(value, dict):
            return {k: self.seal(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.seal(v) for v in value]
        return value

    def open(self, value: Any) -> Any:
        if isinstance(value, dict) and value.get(rpc._special_sig_key) == rpc._special_secret_sig:
            return secret(json.loads(self._fernet.decrypt(value[_SEALED_KEY].encode())))
        if isinstance(value, dict):
            return {k: self.open(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.open(v) for v in value]
        return value


# -- reports ---------------------------------------------------------------------------------------------


@dataclass
class Report:
    """What one run did. ``ops`` is per URN; ``log`` lists provider mutations in the order they ran."""

    ops: dict[str, Op] = field(default_factory=dict)
    log: list[tuple[Op, str, str]] = field(default_factory=list)
    """``(create|update|delete, urn, id)`` for every provider-side mutation, in order."""
    outputs: Props = field(default_factory=dict)
    """The program's exports, wire form (secrets marked); :attr:`exports` has them revealed."""
    provider_calls: Counter[str] = field(default_factory=Counter)
    """RPCs the provider host served during this run, by method."""
    replaced: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """URN → the properties that forced its replacement."""

    @property
    def counts(self) -> Counter[Op]:
        return Counter(self.ops.values())

    @property
    def changed(self) -> dict[str, Op]:
        return {urn: op for urn, op in self.ops.items() if op != "same"}

    @property
    def exports(self) -> Props:
        revealed: Props = reveal(self.outputs)
        return revealed

    @property
    def mutations(self) -> int:
        return sum(self.provider_calls[m] for m in ("Create", "Update", "Delete"))

    def op(self, name: str) -> Op:
        """The operation on the one resource whose URN ends with ``::name``."""
        (urn,) = [u for u in self.ops if u.endswith(f"::{name}")]
        return self.ops[urn]


@dataclass(frozen=True)
class Drift:
    kind: Literal["same", "changed", "gone"]
    changed: tuple[str, ...] = ()
    """Output properties whose value differs from the stored state."""


class CheckFailedError(Exception):
    def __init__(self, urn: str, failures: Iterable[tuple[str, str]]) -> None:
        self.urn, self.failures = urn, tuple(failures)
        reasons = "; ".join(f"{prop}: {reason}" for prop, reason in self.failures)
        super().__init__(f"{urn}: check failed: {reasons}")


# -- the harness -----------------------------------------------------------------------------------------


class Harness:
    """State kept in ``state_path``; dynamic resources served by ``host`` (owned by the caller).

    Example::

        with DynHost(config={"phoenix:sshPrivateKey": secret(key)}) as host:
            harness = Harness(tmp_path / "state.json", host)
            assert harness.up(lambda: program(cfg)).counts["create"] == 3
            assert harness.up(lambda: program(cfg)).changed == {}
            harness.destroy()
    """

    def __init__(
        self,
        state_path: Path | str,
        host: DynHost,
        *,
        stack: str = "test",
        passphrase: str = "phoenix-test-passphrase",
        config: Mapping[str, Any] | None = None,
        call: Callable[[MockCallArgs], dict[str, Any]] | None = None,
        mock_outputs: Callable[[Registration], Props] | None = None,
    ) -> None:
        """``config``: the program's stack config, by default the host's (one stack config for both, as
        with the engine). ``call`` answers invokes; ``mock_outputs`` adds computed outputs to recorded
        resources (e.g. ``{"vmId": 201}``)."""
        self.state_path = Path(state_path)
        self.host = host
        self.config = dict(host.config if config is None else config)
        self.project = host.project
        self.stack = stack
        self._sealer = _Sealer(passphrase)
        self._call = call
        self._mock_outputs = mock_outputs
        self._lock = threading.Lock()

    # -- state file --

    def _load(self) -> tuple[list[ResourceState], list[ResourceState], Props]:
        if not self.state_path.exists():
            return [], [], {}
        data = self._sealer.open(json.loads(self.state_path.read_text()))
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"{self.state_path}: unknown state format {data.get('format')!r}")
        live = [ResourceState.from_json(r) for r in data["resources"]]
        pending = [ResourceState.from_json(r) for r in data["pending_deletes"]]
        return live, pending, data["outputs"]

    def _save(self, live: Iterable[ResourceState], pending: Iterable[ResourceState], outputs: Props) -> None:
        data = {
            "format": STATE_FORMAT,
            "project": self.project,
            "stack": self.stack,
            "resources": [r.to_json() for r in live],
            "pending_deletes": [r.to_json() for r in pending],
            "outputs": outputs,
        }
        text = json.dumps(self._sealer.seal(data), indent=2, sort_keys=True)
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(self.state_path)  # atomic: a crash mid-write never leaves half a state file

    def state_text(self) -> str:
        """The state file as stored, for scanning: no secret may appear in it in plain text."""
        return self.state_path.read_text() if self.state_path.exists() else ""

    def resources(self) -> dict[str, ResourceState]:
        """Live resources by URN (secrets marked, not sealed)."""
        return {r.urn: r for r in self._load()[0]}

    def pending_deletes(self) -> list[ResourceState]:
        return self._load()[1]

    def resource(self, name: str) -> ResourceState:
        """The one live resource whose URN ends with ``::name``."""
        (found,) = [r for urn, r in self.resources().items() if urn.endswith(f"::{name}")]
        return found

    # -- operations --

    def up(self, program: Program) -> Report:
        """Converge to ``program``. Raises the first failure after saving what was done, as Pulumi does."""
        return self._run(program, preview=False)

    def preview(self, program: Program) -> Report:
        """What ``up`` would do: Check and Diff only, no mutation, state untouched."""
        return self._run(program, preview=True)

    def _run(self, program: Program, *, preview: bool) -> Report:
        live, pending, old_exports = self._load()
        old = {r.urn: r for r in live}
        report = Report()
        registered: dict[str, ResourceState] = {}
        condemned: list[ResourceState] = []  # replaced originals, deleted at the end
        errors: list[BaseException] = []
        calls_before = Counter(self.host.calls)

        in_flight = threading.Condition(self._lock)
        running = [0]

        def register(reg: Registration) -> tuple[str, Props]:
            with in_flight:
                running[0] += 1
            try:
                step = self._step_dynamic if reg.dynamic else self._step_recorded
                new, op, gone = step(reg, old.get(reg.urn), report, preview=preview)
                with self._lock:
                    registered[reg.urn] = new
                    report.ops[reg.urn] = op
                    condemned.extend(gone)
                return new.id, self._outputs_for_program(new, reg, op, preview=preview)
            except BaseException as err:
                with self._lock:
                    errors.append(err)
                raise
            finally:
                with in_flight:
                    running[0] -= 1
                    in_flight.notify_all()

        exports: Props = {}
        try:
            exports = run_program(
                program,
                register,
                project=self.project,
                stack=self.stack,
                preview=preview,
                call=self._call,
                config=self.config,
            )
        except BaseException as err:  # noqa: BLE001 (re-raised below, after state is saved)
            errors.append(err)
        # After a failure the SDK stops waiting, but registrations already running still finish (and may
        # create something): wait for them so the state records it, as the engine does.
        with in_flight:
            if not in_flight.wait_for(lambda: running[0] == 0, timeout=self.host.call_timeout * 2):
                errors.append(
                    TimeoutError(f"{running[0]} registrations still running after the program ended")
                )
        if errors:
            _mark_retrieved(errors)

        # Registration runs concurrently: keep the old state's order, then the new resources'.
        order = {urn: i for i, urn in enumerate([*old, *(u for u in registered if u not in old)])}
        unregistered = [r for r in live if r.urn not in registered]
        if errors:  # as Pulumi does: keep what was not reached, delete nothing
            # ...except an original already deleted by a delete-before-replace whose create then failed.
            deleted = {(urn, id_) for op, urn, id_ in report.log if op == "delete"}
            kept = [*registered.values(), *(r for r in unregistered if (r.urn, r.id) not in deleted)]
            doomed = []
        else:
            kept, doomed = list(registered.values()), [*condemned, *pending, *unregistered]
            report.ops.update((r.urn, "delete") for r in unregistered)
        kept.sort(key=lambda r: order[r.urn])

        failed: list[ResourceState] = []
        delete_error: BaseException | None = None
        if not preview:
            failed, delete_error = self._delete_all(doomed, report)
            still_pending = [*condemned, *pending] if errors else failed
            self._save(kept, still_pending, old_exports if errors else exports)
        report.outputs = exports
        report.provider_calls = Counter(self.host.calls) - calls_before
        if errors:
            raise errors[0]
        if delete_error is not None:
            raise delete_error
        return report

    def destroy(self) -> Report:
        """Delete every resource in reverse dependency order; the state is empty afterwards."""
        live, pending, _ = self._load()
        report = Report(ops={r.urn: "delete" for r in live})
        calls_before = Counter(self.host.calls)
        failed, error = self._delete_all([*pending, *live], report)
        self._save([r for r in live if _among(r, failed)], [r for r in pending if _among(r, failed)], {})
        report.provider_calls = Counter(self.host.calls) - calls_before
        if error is not None:
            raise error
        return report

    def refresh(self) -> dict[str, Drift]:
        """Read every dynamic resource; store what the provider sees; report drift per URN."""
        live, pending, outputs = self._load()
        drift: dict[str, Drift] = {}
        kept: list[ResourceState] = []
        for r in live:
            if not r.dynamic:
                kept.append(r)
                continue
            result = self.host.read(r.id, r.urn, r.outputs, r.inputs)
            if not result.id:
                drift[r.urn] = Drift("gone")
                continue
            changed = tuple(
                sorted(
                    k
                    for k in {*r.outputs, *result.outputs}
                    if reveal(r.outputs.get(k)) != reveal(result.outputs.get(k))
                )
            )
            drift[r.urn] = Drift("changed", changed) if changed else Drift("same")
            kept.append(replace(r, id=result.id, outputs=result.outputs, inputs=result.inputs or r.inputs))
        self._save(kept, pending, outputs)
        return drift

    # -- steps --

    def _step_dynamic(
        self, reg: Registration, old: ResourceState | None, report: Report, *, preview: bool
    ) -> tuple[ResourceState, Op, list[ResourceState]]:
        news = dict(reg.inputs)
        if old is not None:
            for key in reg.ignore_changes:  # top-level paths only
                if key in old.inputs:
                    news[key] = old.inputs[key]
        checked = self.host.check(reg.urn, old.inputs if old else {}, news)
        if checked.failures:
            raise CheckFailedError(reg.urn, checked.failures)
        inputs = checked.inputs

        def state(id_: str, outputs: Props) -> ResourceState:
            outputs = {k: secret(v) if k in reg.additional_secret_outputs else v for k, v in outputs.items()}
            return ResourceState(
                reg.urn, reg.type, id_, True, True, reg.parent, reg.dependencies, inputs, outputs
            )

        if old is None:
            if preview:
                return state("", inputs), "create", []
            id_, outputs = self.host.create(reg.urn, inputs)
            self._logged(report, "create", reg.urn, id_)
            return state(id_, outputs), "create", []

        diff = self.host.diff(old.id, reg.urn, old.outputs, inputs, old.inputs)
        # DIFF_UNKNOWN: the engine compares old and new inputs itself, __provider included.
        changes = diff.changes if diff.changes is not None else reveal(old.inputs) != reveal(inputs)
        replaces = tuple(diff.replaces) + tuple(
            k for k in reg.replace_on_changes if reveal(old.inputs.get(k)) != reveal(inputs.get(k))
        )
        if not changes:
            return replace(old, inputs=inputs, parent=reg.parent, dependencies=reg.dependencies), "same", []
        if replaces:
            report.replaced[reg.urn] = replaces
            if preview:
                return state("", inputs), "replace", []
            if diff.delete_before_replace or reg.delete_before_replace:
                self.host.delete(old.id, reg.urn, old.outputs, old.inputs)
                self._logged(report, "delete", reg.urn, old.id)
                id_, outputs = self.host.create(reg.urn, inputs)
                self._logged(report, "create", reg.urn, id_)
                return state(id_, outputs), "replace", []
            id_, outputs = self.host.create(reg.urn, inputs)
            self._logged(report, "create", reg.urn, id_)
            return state(id_, outputs), "replace", [old]
        if preview:
            return state(old.id, {**old.outputs, **inputs}), "update", []
        outputs = self.host.update(old.id, reg.urn, old.outputs, inputs, old.inputs)
        self._logged(report, "update", reg.urn, old.id)
        return state(old.id, outputs), "update", []

    def _step_recorded(
        self, reg: Registration, old: ResourceState | None, _report: Report, *, preview: bool
    ) -> tuple[ResourceState, Op, list[ResourceState]]:
        outputs = dict(reg.inputs)
        if self._mock_outputs is not None:
            outputs.update(self._mock_outputs(reg))
        id_ = old.id if old else (f"{reg.name}-id" if reg.custom else "")
        new = ResourceState(
            reg.urn, reg.type, id_, reg.custom, False, reg.parent, reg.dependencies, reg.inputs, outputs
        )
        if old is None:
            return new, "create", []
        return new, ("same" if reveal(old.inputs) == reveal(reg.inputs) else "update"), []

    @staticmethod
    def _outputs_for_program(new: ResourceState, reg: Registration, op: Op, *, preview: bool) -> Props:
        if preview and op != "same" and reg.dynamic:
            # The host does not support preview: the engine shows the inputs, other outputs are unknown.
            # The host does not support preview: the engine returns the checked inputs; outputs the
            # program reads beyond those are missing, which a preview treats as unknown.
            return new.inputs
        return new.outputs

    def _logged(self, report: Report, op: Op, urn: str, id_: str) -> None:
        with self._lock:
            report.log.append((op, urn, id_))

    def _delete_all(
        self, doomed: list[ResourceState], report: Report
    ) -> tuple[list[ResourceState], BaseException | None]:
        """Delete dependents before what they depend on. Returns what was left, and the first failure.

        A resource that failed to delete still exists, so nothing it depends on is deleted either.
        """
        remaining, failed = list(doomed), list[ResourceState]()
        first_error: BaseException | None = None
        while remaining:
            blockers = [*remaining, *failed]
            ready = [r for r in reversed(remaining) if not any(_needs(o, r) for o in blockers if o is not r)]
            if not ready and failed:
                failed.extend(remaining)
                break
            for r in ready or [remaining[-1]]:  # no ready one and no failure: a cycle; newest first
                remaining.remove(r)
                if not r.dynamic or not r.id:
                    continue  # recorded resources only leave the state
                try:
                    self.host.delete(r.id, r.urn, r.outputs, r.inputs)
                except BaseException as err:  # noqa: BLE001 (kept in state, returned to the caller)
                    failed.append(r)
                    first_error = first_error or err
                    continue
                self._logged(report, "delete", r.urn, r.id)
        return failed, first_error


def _mark_retrieved(errors: Iterable[BaseException]) -> None:
    """Mark the SDK's futures that hold one of ``errors`` as retrieved.

    A failed registration parks its exception in the resource's output futures, which nothing awaits
    once the run is over. Collected later, each would log "Future exception was never retrieved" with a
    traceback at some random point of the test session; on CPython 3.11 that traceback, formatted from
    a finalizer running inside another ``ast.parse``, fails it with "AST constructor recursion depth
    mismatch" (python/cpython#106905).
    """
    raised = {id(e) for e in errors}
    for obj in gc.get_objects():
        if (
            isinstance(obj, asyncio.Future)
            and obj.done()
            and not obj.cancelled()
            and id(obj._exception) in raised
        ):
            obj.exception()


def _among(resource: ResourceState, group: Iterable[ResourceState]) -> bool:
    # Identity, not equality or URN: a replaced original and its replacement share the URN.
    return any(resource is member for member in group)


def _needs(dependent: ResourceState, dependency: ResourceState) -> bool:
    return dependency.urn in dependent.dependencies or dependency.urn == dependent.parent
