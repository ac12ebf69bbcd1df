"""Drive the real dynamic-provider host (``python -u -m pulumi.dynamic``) over gRPC, as the engine does.

Every Python dynamic resource is served by that one plugin process. :class:`DynHost` launches it the way
the engine's ``pulumi-resource-pulumi-python`` shim does (cwd = the project root, ``PULUMI_PROJECT`` set),
reads the port from its first stdout line and calls the ResourceProvider RPCs with the request fields the
engine fills in (pulumi/pulumi ``sdk/go/common/resource/plugin/provider_plugin.go``):

- values are sent in the wire form of ``pulumi.runtime.rpc``: secrets as signature maps, unknowns as
  :data:`UNKNOWN`. Because the host answers Configure with ``acceptSecrets=False``, secrets are stripped
  before every resource RPC and results are re-marked with the engine's ``annotateSecrets`` rule (an
  output is secret when the input of the same name was);
- ``diff``/``update``/``read``/``delete`` get the old **outputs**; ``check`` gets the old **inputs**;
- a failing provider method comes back as :class:`ProviderError` carrying the host's traceback text.

The host's stdout (after the port line) and stderr are captured for assertions such as "no secret in logs".
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import grpc
from google.protobuf import empty_pb2, struct_pb2
from google.protobuf.message import Message
from pulumi.output import Unknown
from pulumi.runtime import proto, rpc
from pulumi.runtime.proto import provider_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[2]
PROVIDER_KEY = "__provider"
UNKNOWN = rpc.UNKNOWN
"""A value not known yet (preview). Results carry it too, in place of ``pulumi.output.Unknown``."""

Props = dict[str, Any]


def secret(value: Any) -> Any:
    """``value`` marked secret, in the wire form the engine and the mocks use."""
    return rpc.wrap_rpc_secret(value)


def is_secret(value: Any) -> bool:
    return rpc.is_rpc_secret(value)


def reveal(value: Any) -> Any:
    """``value`` with every secret mark removed, at any depth: ``{"a": secret(1)} -> {"a": 1}``."""
    value = rpc.unwrap_rpc_secret(value)
    if isinstance(value, dict):
        return {k: reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [reveal(v) for v in value]
    return value


def annotate_secrets(outputs: Props, inputs: Mapping[str, Any]) -> Props:
    """The engine's ``annotateSecrets``: an output is secret when the input of the same name was."""
    return {k: secret(v) if is_secret(inputs.get(k)) else v for k, v in outputs.items()}


def to_struct(props: Mapping[str, Any]) -> struct_pb2.Struct:
    # serialize_properties is async; run it on a private loop so this works on any thread.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(rpc.serialize_properties(dict(props), {}))
    finally:
        loop.close()


def from_struct(struct: struct_pb2.Struct) -> Props:
    props: Props = _known_sentinels(rpc.deserialize_properties(struct, keep_unknowns=True))
    return props


def _known_sentinels(value: Any) -> Any:
    # Unknown() objects are not comparable or JSON-able; the sentinel string is both.
    if isinstance(value, Unknown):
        return UNKNOWN
    if isinstance(value, dict):
        return {k: _known_sentinels(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_known_sentinels(v) for v in value]
    return value


class ProviderError(Exception):
    """A provider RPC failed. ``details`` is what the host sent: for provider exceptions, the traceback."""

    def __init__(self, method: str, code: grpc.StatusCode, details: str) -> None:
        self.method, self.code, self.details = method, code, details
        lines = [line for line in details.strip().splitlines() if line.strip()]
        self.message = lines[-1].strip() if lines else str(code)
        super().__init__(f"{method} failed ({code.name}): {self.message}")


class HostStartError(RuntimeError):
    """The provider host did not print its port before the deadline, or exited first."""


@dataclass(frozen=True)
class CheckResult:
    inputs: Props
    failures: tuple[tuple[str, str], ...]
    """``(property, reason)`` pairs."""


@dataclass(frozen=True)
class DiffResult:
    changes: bool | None
    """None: the provider could not tell (the engine then compares old and new inputs itself)."""
    replaces: tuple[str, ...]
    delete_before_replace: bool

    @property
    def replace(self) -> bool:
        return bool(self.changes) and bool(self.replaces)


@dataclass(frozen=True)
class ReadResult:
    id: str
    """Empty when the resource is gone."""
    outputs: Props
    inputs: Props | None
    """Set when the provider returned inputs to store in place of the old ones."""


_DIFF_CHANGES: dict[int, bool | None] = {
    proto.DiffResponse.DIFF_UNKNOWN: None,
    proto.DiffResponse.DIFF_NONE: False,
    proto.DiffResponse.DIFF_SOME: True,
}


class DynHost:
    """One ``python -m pulumi.dynamic`` process and a gRPC channel to it. Use as a context manager.

    ``config`` is the stack config (``"phoenix:sshPrivateKey"``-style keys, values may be :func:`secret`),
    sent with Configure right after start, as the engine does. ``env`` adds provider-host environment
    variables (e.g. ``PHOENIX_SSH_PRIVATE_KEY``). ``pythonpath`` is prepended to ``PYTHONPATH`` so the
    provider modules pickled by reference (``providers.*``, ``tests.support.*``) import in the host.
    """

    def __init__(
        self,
        *,
        project: str = "phoenix",
        config: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | str = REPO_ROOT,
        pythonpath: tuple[Path | str, ...] = (REPO_ROOT,),
        python: str = sys.executable,
        start_timeout: float = 30.0,
        call_timeout: float = 120.0,
    ) -> None:
        self.project = project
        self.config = dict(config or {})
        self.call_timeout = call_timeout
        self.calls: Counter[str] = Counter()
        """RPCs made so far, by method name (``"Create"``); counted before the call, failed ones too."""
        self.accept_secrets = False
        self._env = dict(env or {})
        self._cwd = Path(cwd)
        self._pythonpath = pythonpath
        self._python = python
        self._start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._channel: grpc.Channel | None = None
        self._stub: provider_pb2_grpc.ResourceProviderStub | None = None
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._readers: list[threading.Thread] = []
        self._lock = threading.Lock()

    # -- process ---------------------------------------------------------------------------------------

    def start(self) -> Self:
        env = {**os.environ, **self._env, "PULUMI_PROJECT": self.project}
        paths = [str(p) for p in self._pythonpath]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        # The engine also exports the stack config; secret values are left out of the environment here.
        env["PULUMI_CONFIG"] = json.dumps({k: v for k, v in self.config.items() if not is_secret(v)})
        # The engine passes its own address as the only argument; the Python host ignores it.
        self._proc = subprocess.Popen(
            [self._python, "-u", "-m", "pulumi.dynamic", "127.0.0.1:0"],
            cwd=self._cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            port = self._await_port()
            self._channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            grpc.channel_ready_future(self._channel).result(timeout=self._start_timeout)
            self._stub = provider_pb2_grpc.ResourceProviderStub(self._channel)
            self.configure(self.config)
        except BaseException:
            self.close()
            raise
        return self

    def _await_port(self) -> int:
        assert self._proc is not None and self._proc.stdout is not None and self._proc.stderr is not None
        first_line: queue.Queue[str | None] = queue.Queue(maxsize=1)
        self._readers = [
            threading.Thread(
                target=self._drain, args=(self._proc.stdout, self._stdout, first_line), daemon=True
            ),
            threading.Thread(target=self._drain, args=(self._proc.stderr, self._stderr, None), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        try:
            line = first_line.get(timeout=self._start_timeout)
        except queue.Empty:
            raise HostStartError(
                f"provider host printed no port within {self._start_timeout:g}s; stderr:\n{self.stderr}"
            ) from None
        if line is None or not line.strip().isdigit():
            self._proc.wait(timeout=self._start_timeout)  # it exited or is failing: let stderr settle
            self._join_readers()
            raise HostStartError(f"provider host did not start (first line {line!r}); stderr:\n{self.stderr}")
        return int(line)

    def _drain(self, pipe: IO[bytes], sink: list[str], first_line: queue.Queue[str | None] | None) -> None:
        # A reader per pipe: an undrained pipe would block the host once the OS buffer fills.
        for raw in iter(pipe.readline, b""):
            text = raw.decode(errors="replace")
            if first_line is not None:
                first_line.put(text)
                first_line = None
                continue
            with self._lock:
                sink.append(text)
        if first_line is not None:
            first_line.put(None)

    def _join_readers(self) -> None:
        for reader in self._readers:
            reader.join(timeout=5)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(timeout=5)
            self._join_readers()
            for pipe in (self._proc.stdout, self._proc.stderr):
                if pipe is not None:
                    pipe.close()
            self._proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def stderr(self) -> str:
        with self._lock:
            return "".join(self._stderr)

    @property
    def stdout(self) -> str:
        """What the host printed after its port line (a provider's ``print``)."""
        with self._lock:
            return "".join(self._stdout)

    # -- RPCs ------------------------------------------------------------------------------------------

    def _call(self, method: str, request: Message) -> Any:
        if self._stub is None:
            raise RuntimeError("DynHost is not started")
        with self._lock:
            self.calls[method] += 1
        try:
            return getattr(self._stub, method)(request, timeout=self.call_timeout)
        except grpc.RpcError as err:
            raise ProviderError(method, err.code(), err.details() or "") from None

    def _send(self, props: Mapping[str, Any]) -> struct_pb2.Struct:
        # With acceptSecrets=False the engine strips secret marks before calling the provider.
        return to_struct(props if self.accept_secrets else reveal(dict(props)))

    def _change(
        self, olds: Mapping[str, Any], news: Mapping[str, Any], old_inputs: Mapping[str, Any] | None
    ) -> dict[str, struct_pb2.Struct]:
        # Diff and Update carry the same three property maps.
        return {
            "olds": self._send(olds),
            "news": self._send(news),
            "old_inputs": self._send(old_inputs or {}),
        }

    def plugin_version(self) -> str:
        return str(self._call("GetPluginInfo", empty_pb2.Empty()).version)

    def configure(self, config: Mapping[str, Any]) -> None:
        """Send the stack config. The host applies it to each provider the first time it unpickles it."""
        response = self._call(
            "Configure",
            proto.ConfigureRequest(
                args=to_struct(config),
                acceptSecrets=True,
                acceptResources=True,
                sends_old_inputs=True,
                sends_old_inputs_to_delete=True,
            ),
        )
        self.accept_secrets = bool(response.acceptSecrets)

    def check(self, urn: str, olds: Mapping[str, Any], news: Mapping[str, Any]) -> CheckResult:
        """``olds``: prior **inputs** ({} on create); ``news``: the program's inputs and ``__provider``."""
        response = self._call(
            "Check", proto.CheckRequest(urn=urn, olds=self._send(olds), news=self._send(news))
        )
        inputs = annotate_secrets(from_struct(response.inputs), news)
        return CheckResult(inputs, tuple((f.property, f.reason) for f in response.failures))

    def diff(
        self,
        id_: str,
        urn: str,
        olds: Mapping[str, Any],
        news: Mapping[str, Any],
        old_inputs: Mapping[str, Any] | None = None,
    ) -> DiffResult:
        """``olds`` are the old **outputs** (state); ``news`` the checked inputs."""
        response = self._call(
            "Diff", proto.DiffRequest(urn=urn, id=id_, **self._change(olds, news, old_inputs))
        )
        return DiffResult(
            changes=_DIFF_CHANGES[response.changes],
            replaces=tuple(response.replaces),
            delete_before_replace=bool(response.deleteBeforeReplace),
        )

    def create(self, urn: str, props: Mapping[str, Any], *, preview: bool = False) -> tuple[str, Props]:
        """``props`` are the checked inputs. Returns ``(id, outputs)``; outputs include ``__provider``."""
        response = self._call(
            "Create", proto.CreateRequest(urn=urn, properties=self._send(props), preview=preview)
        )
        return response.id, annotate_secrets(from_struct(response.properties), props)

    def read(
        self, id_: str, urn: str, props: Mapping[str, Any], inputs: Mapping[str, Any] | None = None
    ) -> ReadResult:
        """``props`` are the stored outputs (refresh)."""
        response = self._call(
            "Read",
            proto.ReadRequest(urn=urn, id=id_, properties=self._send(props), inputs=self._send(inputs or {})),
        )
        new_inputs = None
        if response.HasField("inputs"):
            new_inputs = annotate_secrets(from_struct(response.inputs), inputs or {})
        return ReadResult(response.id, annotate_secrets(from_struct(response.properties), props), new_inputs)

    def update(
        self,
        id_: str,
        urn: str,
        olds: Mapping[str, Any],
        news: Mapping[str, Any],
        old_inputs: Mapping[str, Any] | None = None,
        *,
        preview: bool = False,
    ) -> Props:
        """``olds`` are the old **outputs**. Returns the new outputs: whatever the provider returned, only."""
        request = proto.UpdateRequest(
            urn=urn, id=id_, preview=preview, **self._change(olds, news, old_inputs)
        )
        response = self._call("Update", request)
        return annotate_secrets(from_struct(response.properties), news)

    def delete(
        self, id_: str, urn: str, props: Mapping[str, Any], old_inputs: Mapping[str, Any] | None = None
    ) -> None:
        """``props`` are the stored outputs: the host unpickles the provider found in them."""
        self._call(
            "Delete",
            proto.DeleteRequest(
                urn=urn, id=id_, properties=self._send(props), old_inputs=self._send(old_inputs or {})
            ),
        )
