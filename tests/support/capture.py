"""What a program registers, captured under Pulumi's mocks: the one thing here the real engine cannot give.

Every lifecycle (up, up again, change, refresh, destroy, failures and the state they leave) runs under the
real Pulumi engine (tests/support/engine.py: the Go-built CLI through ``pulumi.automation``); this module
used to hold a stand-in engine for that, and no longer does.

What remains is :func:`capture`: run a program function under ``pulumi.runtime.set_mocks`` and record
each registration exactly as the engine would receive it (URN, type, parent, dependencies, resource
options, inputs in wire form with secrets marked, and a dynamic resource's pickled ``__provider``), with
no provider called (outputs = inputs). The engine does not hand a registration's raw request to its
caller, and the tests need it for two things:

- unit tests (tests/unit/*) that check the options and inputs a resource class registers with, e.g.
  ``additionalSecretOutputs`` or ``replaceOnChanges``, or that nothing secret is pickled into
  ``__provider``;
- provider-protocol tests (tests/provider/*) that call the real dynamic-provider host
  (tests/support/dynhost.py) RPC by RPC with the inputs the engine would send.

Mocks are for the Pulumi graph only: nothing here decides what a provider does or what state results.
"""

from __future__ import annotations

import contextvars
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
from google.protobuf.message import Message
from pulumi.runtime import MockResourceArgs, Mocks, rpc, set_mocks, settings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.mocks import MockCallArgs, MockMonitor
from pulumi.runtime.proto import resource_pb2
from pulumi.runtime.stack import run_pulumi_func

# Private SDK helpers, the same ones MockMonitor and @pulumi.runtime.test use: they await Pulumi's
# futures from synchronous code on the program's event loop.
from pulumi.runtime.sync_await import _ensure_event_loop, _sync_await

from tests.support.dynhost import PROVIDER_KEY, Props, is_secret, reveal

DYNAMIC_PREFIX = "pulumi-python:dynamic"

Program = Callable[[], object]


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
    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        # Registrations go through _Monitor.RegisterResource; this serves ReadResource (Resource.get).
        return args.resource_id or f"{args.name}-id", dict(args.inputs)

    def call(self, args: MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


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


def _run(
    program: Program, register: Register, *, project: str, stack: str, config: Mapping[str, Any]
) -> None:
    """Run ``program`` under mocks, registering through ``register``.

    Runs in a copy of the current context with a fresh root stack, so runs neither see nor disturb each
    other's settings (nor a test's own ``set_mocks``). ``config`` is the stack config the program reads
    with ``pulumi.Config`` (``"phoenix:key"`` keys; :func:`tests.support.dynhost.secret` values are
    secret config).
    """

    def run() -> None:
        settings.ROOT.set(None)
        settings.SETTINGS.outputs = set()
        values = {k: _config_text(reveal(v)) for k, v in config.items()}
        set_all_config(values, [k for k, v in config.items() if is_secret(v)])
        set_mocks(_Mocks(), project=project, stack=stack, monitor=_Monitor(_Mocks(), register))

        def body() -> None:
            exports = program()
            if isinstance(exports, Mapping):  # anything else (a lambda's last resource, say) is ignored
                for name, value in exports.items():
                    pulumi.export(name, value)

        _sync_await(run_pulumi_func(body))

    contextvars.copy_context().run(run)


def _config_text(value: Any) -> str:
    # Pulumi config values are strings; structured values travel as JSON.
    return value if isinstance(value, str) else json.dumps(value)


def capture(
    program: Program,
    *,
    project: str = "phoenix",
    stack: str = "test",
    config: Mapping[str, Any] | None = None,
) -> dict[str, Registration]:
    """Every resource ``program`` registers, by name, with no provider called (outputs = inputs).

    ``capture(lambda: Note("n", {...}))["n"].provider`` is the ``__provider`` string the engine would store.
    """
    seen: dict[str, Registration] = {}
    lock = threading.Lock()

    def register(registration: Registration) -> tuple[str, Props]:
        with lock:
            seen[registration.name] = registration
        return f"{registration.name}-id" if registration.custom else "", dict(registration.inputs)

    _run(program, register, project=project, stack=stack, config=config or {})
    return seen
