"""SSH to the Proxmox host: one pinned, key-authenticated connection per host per process, reused.

The only module that imports paramiko. What it guarantees:

- the host key is **pinned** (``SshTarget.host_key``: an OpenSSH ``SHA256:...`` fingerprint or a public key
  line); any other key raises :class:`HostKeyMismatchError` before authentication, so no command runs, and
  a mismatch is never retried;
- key auth only (ed25519, ecdsa, rsa; from the ``phoenix:sshPrivateKey`` secret or a key file), never a
  password, an agent or keys found in ``~/.ssh``;
- :func:`executor_for` hands every caller in the process the same :class:`SshExecutor` per
  (host, port, user, pinned key, client key), so a provider process makes one handshake per host; its
  exec sessions run concurrently over that one connection;
- a connection found dead *before* a command is sent is reopened transparently; one that drops *while* a
  command runs raises :class:`SshConnectionLost`, because the command may or may not have run and
  re-running a non-idempotent command silently is worse than failing;
- a per-command ``timeout`` ends the remote process too (see :meth:`SshExecutor.run`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import io
import logging
import re
import select
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko

from providers.channels.command import Argv, CommandResult, Masked, display, mask_text, render
from providers.channels.targets import Credentials, SshTarget
from providers.errors import (
    CommandTimeoutError,
    HostKeyMismatchError,
    InvalidTargetError,
    MissingCredentialsError,
    RemoteCommandError,
    SshConnectError,
)

CONNECT_TIMEOUT = 15.0
"""Seconds for TCP connect, the SSH banner and authentication, each."""

SESSION_LIMIT = 6
"""Concurrent exec sessions per connection. OpenSSH refuses an 11th (``MaxSessions`` defaults to 10) and
frees a slot a moment after its channel closes; 6 leaves room for those, so refusals (retried) stay rare."""

KILL_AFTER = 2.0
"""Seconds a timed-out command gets between SIGTERM and SIGKILL."""

_TIMEOUT_MARGIN = 5.0  # the remote `timeout` normally ends the command first; this covers latency
_CHUNK = 65536

# Host key algorithms paramiko negotiates, by the key type a pin names: a pin for the host's RSA key must
# not let the server present its ed25519 key instead (servers usually hold several host keys).
_HOST_KEY_FAMILIES: dict[str, tuple[str, ...]] = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ecdsa-sha2-nistp256": ("ecdsa-sha2-nistp256",),
    "ecdsa-sha2-nistp384": ("ecdsa-sha2-nistp384",),
    "ecdsa-sha2-nistp521": ("ecdsa-sha2-nistp521",),
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
}
_ALL_HOST_KEY_ALGORITHMS = tuple(alg for family in _HOST_KEY_FAMILIES.values() for alg in family)
# `ssh-keygen -lf` names the type in parentheses: "256 SHA256:... root@pve (ED25519)".
_KEYGEN_TYPES = {"ED25519": "ssh-ed25519", "RSA": "ssh-rsa"}
_FINGERPRINT = re.compile(
    r"^(?:(?P<bits>\d+)\s+)?(?P<fp>SHA256:[A-Za-z0-9+/]+=*)(?:\s.*?)?(?:\((?P<type>\w+)\))?$"
)


class _RetriedRefusals(logging.Filter):
    """paramiko logs each refused channel open at ERROR; :meth:`SshExecutor._open_session` retries those
    and raises with the reason if they persist, so the log line is only noise in provider output."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "open FAILED" not in record.getMessage()


logging.getLogger("paramiko.transport").addFilter(_RetriedRefusals())


class SshConnectionLost(SshConnectError):
    """The connection dropped while a command ran: it may or may not have run to the end. Never retried."""

    def __init__(self, host: str, argv: str, reason: str) -> None:
        self.argv = argv
        super().__init__(
            host,
            f"connection lost while `{argv}` was running ({reason}); it may or may not have completed, "
            "so it was not re-run",
        )


# --- pure parts: pins, fingerprints, keys -------------------------------------------------------------


def fingerprint(key_blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob, as ``ssh-keygen -l`` prints it: ``SHA256:<b64>``."""
    digest = base64.b64encode(hashlib.sha256(key_blob).digest()).decode()
    return "SHA256:" + digest.rstrip("=")


@dataclass(frozen=True)
class HostKeyPin:
    """A parsed ``SshTarget.host_key``. ``key_type`` is known when the pin names it, e.g. ``ssh-ed25519``."""

    fingerprint: str
    key_type: str | None = None

    def matches(self, key: paramiko.PKey) -> bool:
        return fingerprint(key.asbytes()) == self.fingerprint

    def disabled_host_key_algorithms(self) -> list[str]:
        """Host key algorithms to refuse, so that the server presents the pinned key's type."""
        if self.key_type is None:
            return []
        allowed = _HOST_KEY_FAMILIES[self.key_type]
        return [alg for alg in _ALL_HOST_KEY_ALGORITHMS if alg not in allowed]


def parse_host_key(pin: str) -> HostKeyPin:
    """Parse a pinned host key. Accepted forms (both what OpenSSH tools print):

    - ``SHA256:/NKqBMm2...JX0``, optionally the whole ``ssh-keygen -lf`` line
      ``256 SHA256:/NKq...JX0 root@pve (ED25519)``;
    - a public key line ``ssh-ed25519 AAAAC3Nza... [comment]`` (``/etc/ssh/ssh_host_ed25519_key.pub``), or a
      known_hosts line ``pve1 ssh-ed25519 AAAA...``.

    A bare fingerprint lets the server choose which of its host keys to present (paramiko prefers ed25519,
    then ecdsa, then rsa); the typed forms make it present the pinned type. Raises :class:`InvalidTargetError`
    for anything else (MD5 fingerprints included).
    """
    text = " ".join(pin.split())
    match = _FINGERPRINT.match(text)
    if match:
        body = match["fp"].removeprefix("SHA256:").rstrip("=")
        try:
            raw = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
        except binascii.Error:
            raw = b""
        if len(raw) != hashlib.sha256().digest_size:
            raise InvalidTargetError(f"ssh host_key {pin!r}: a SHA256 fingerprint holds 43 base64 characters")
        return HostKeyPin("SHA256:" + body, _keygen_type(match["type"], match["bits"]))
    words = text.split(" ")
    for i, word in enumerate(words[:-1]):
        if word in _HOST_KEY_FAMILIES:
            try:
                blob = base64.b64decode(words[i + 1], validate=True)
            except binascii.Error as exc:
                raise InvalidTargetError(f"ssh host_key {pin!r}: the key is not valid base64") from exc
            if _blob_type(blob) != word:
                raise InvalidTargetError(f"ssh host_key {pin!r}: the key data is not a {word} key")
            return HostKeyPin(fingerprint(blob), word)
    raise InvalidTargetError(
        f"ssh host_key {pin!r}: expected `SHA256:...` (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) "
        f"or a public key line ({', '.join(_HOST_KEY_FAMILIES)})"
    )


def _keygen_type(name: str | None, bits: str | None) -> str | None:
    if name == "ECDSA" and bits in ("256", "384", "521"):
        return f"ecdsa-sha2-nistp{bits}"
    return _KEYGEN_TYPES.get(name or "")


def _blob_type(blob: bytes) -> str:
    """The type name an SSH public key blob starts with (a length-prefixed string)."""
    size = int.from_bytes(blob[:4], "big")
    return blob[4 : 4 + size].decode("ascii", errors="replace")


def load_private_key(creds: Credentials) -> paramiko.PKey:
    """The client key: ``ssh_private_key`` text (the Pulumi secret) wins over ``ssh_key_file``.

    Raises :class:`MissingCredentialsError` naming the source (never the key) when it is missing, unreadable,
    encrypted or not an ed25519/ecdsa/rsa key in OpenSSH or PEM format.
    """
    if creds.ssh_private_key:
        source, text = "phoenix:sshPrivateKey (PHOENIX_SSH_PRIVATE_KEY)", creds.ssh_private_key
    elif creds.ssh_key_file:
        source = f"ssh key file {creds.ssh_key_file}"
        try:
            text = Path(creds.ssh_key_file).expanduser().read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise MissingCredentialsError(
                f"{source}: cannot read it ({exc.__class__.__name__}: {exc})"
            ) from exc
    else:
        raise MissingCredentialsError("no SSH key: set phoenix:sshPrivateKey (secret) or phoenix:sshKeyFile")
    for key_class in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return key_class.from_private_key(io.StringIO(text))
        except (
            paramiko.PasswordRequiredException
        ):  # `from None` here and below: parse errors may quote the key
            raise MissingCredentialsError(
                f"{source}: the key is passphrase-protected; use an unencrypted key"
            ) from None
        except (paramiko.SSHException, ValueError):
            continue  # not this type; the next class may read it
    raise MissingCredentialsError(
        f"{source}: not an ed25519, ecdsa or rsa private key (OpenSSH or PEM format)"
    )


class PinnedHostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Accept exactly the pinned key. Nothing is ever loaded from known_hosts, so paramiko asks here."""

    def __init__(self, host: str, pin: HostKeyPin) -> None:
        self._host, self._pin = host, pin

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if not self._pin.matches(key):
            got = f"{fingerprint(key.asbytes())} ({key.get_name()})"
            raise HostKeyMismatchError(self._host, self._pin.fingerprint, got)


# --- the executor ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SshStats:
    """What an executor cost so far: SSH handshakes (connections) and exec sessions (one per command)."""

    handshakes: int
    sessions: int


class SshExecutor:
    """Runs argv commands on one host over one shared SSH connection (see the module docstring).

    Thread-safe: commands from several threads run as concurrent sessions on the same connection.
    Get one with :func:`executor_for`, which shares it process-wide.
    """

    def __init__(
        self,
        target: SshTarget,
        key: paramiko.PKey,
        *,
        secrets: Sequence[str] = (),
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self._target, self._key = target, key
        self._secrets = set(secrets)
        self._pin = parse_host_key(target.host_key)
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(SESSION_LIMIT)
        self._client: paramiko.SSHClient | None = None
        self._handshakes = self._sessions = 0

    @property
    def host(self) -> str:
        return self._target.host

    @property
    def stats(self) -> SshStats:
        with self._lock:
            return SshStats(self._handshakes, self._sessions)

    def mask(self, secrets: Sequence[str]) -> None:
        """Also hide these values in errors (the pool serves callers whose credentials hold more secrets)."""
        with self._lock:
            self._secrets.update(s for s in secrets if s)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def run(
        self,
        argv: Argv,
        *,
        stdin: str | bytes | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run one command in its own exec session; ``stdin`` is sent, then closed.

        With ``timeout`` the command runs under coreutils' ``timeout`` on the host (SIGTERM at the deadline,
        SIGKILL :data:`KILL_AFTER` later, to its whole process group), so argv[0] must be a program, not a
        shell builtin. Closing the channel alone would not do: without a pty, sshd leaves the process
        running, and sshd refuses SSH "signal" requests in root sessions (OpenSSH runs them without privsep).
        A command that ends without an exit status (killed by a signal) has ``exit_status`` -1.
        """
        shown = display(argv)
        line = render(argv)
        if timeout is not None:
            if timeout <= 0:
                raise ValueError(f"timeout must be positive, got {timeout}")
            line = render(["timeout", f"--kill-after={KILL_AFTER:g}s", f"{timeout:g}s"]) + " " + line
        with self._lock:
            secrets = [*self._secrets, *(a for a in argv if isinstance(a, Masked))]
        with self._slots:
            chan = self._open_session()
            try:
                started = time.monotonic()
                self._exec(chan, line, shown)
                if stdin is not None:
                    _feed(chan, stdin.encode() if isinstance(stdin, str) else stdin)
                wait = None if timeout is None else timeout + KILL_AFTER + _TIMEOUT_MARGIN
                out, err, status, finished = _collect(chan, wait)
                duration = time.monotonic() - started
            finally:
                chan.close()
        stderr = mask_text(err.decode(errors="replace"), secrets)
        if finished and status < 0 and not self._alive():
            raise SshConnectionLost(self.host, shown, "no exit status arrived")
        # `timeout` exits 124 after SIGTERM worked; after SIGKILL it dies with its process group (-1, or 137
        # from a shell that did not exec it)
        if timeout is not None and (not finished or (status in (124, 137, -1) and duration >= timeout)):
            if not finished:
                stderr += "\n(the remote `timeout` did not end it in time; it may still be running)"
            raise CommandTimeoutError(self.host, shown, timeout, stderr)
        result = CommandResult(self.host, shown, status, out.decode(errors="replace"), stderr, duration)
        if check and status != 0:
            what = "ended without an exit status (killed by a signal?)" if status < 0 else ""
            diagnostic = stderr or mask_text(result.stdout, secrets)
            raise RemoteCommandError(self.host, shown, None if status < 0 else status, diagnostic, what)
        return result

    # -- connection management --

    def _open_session(self) -> paramiko.Channel:
        """A new exec channel; reopens the connection once if it turns out dead. Nothing is sent yet."""
        reconnected = False
        give_up, pause = time.monotonic() + self._connect_timeout, 0.005
        while True:
            transport = self._transport()
            try:
                chan = transport.open_session(timeout=self._connect_timeout)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                if not transport.is_active():  # it died while idle: reconnect (once)
                    self._discard(transport)
                    if reconnected:
                        reason = f"connection dropped before the command was sent: {exc}"
                        raise SshConnectError(self.host, reason) from exc
                    reconnected = True
                    continue
                # Refused, not dropped: sshd frees a session slot a moment after the channel closes, so a
                # burst of commands can find its MaxSessions slots held by sessions we already finished.
                # (paramiko reports a refusal as ChannelException, or as a bare SSHException when several
                # opens fail at once: they share one saved exception.)
                if time.monotonic() + pause > give_up:
                    raise SshConnectError(self.host, f"the server refused a session: {exc}") from exc
                time.sleep(pause)
                pause = min(pause * 2, 0.1)
                continue
            with self._lock:
                self._sessions += 1
            return chan

    def _exec(self, chan: paramiko.Channel, line: str, shown: str) -> None:
        try:
            chan.exec_command(line)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if self._alive():
                raise SshConnectError(self.host, f"the server refused to run `{shown}`: {exc}") from exc
            # the exec request may have reached the host before the drop
            raise SshConnectionLost(self.host, shown, str(exc) or exc.__class__.__name__) from exc

    def _alive(self) -> bool:
        with self._lock:
            transport = self._client.get_transport() if self._client else None
        return transport is not None and transport.is_active()

    def _transport(self) -> paramiko.Transport:
        with self._lock:
            transport = self._client.get_transport() if self._client else None
            if transport is not None and transport.is_active():
                return transport
            if self._client is not None:  # died while idle (sshd restarted, idle timeout): reopen
                self._client.close()
                self._client = None
            client = self._connect()
            self._client = client
            self._handshakes += 1
            transport = client.get_transport()
            assert transport is not None  # connect() succeeded
            return transport

    def _discard(self, transport: paramiko.Transport) -> None:
        with self._lock:
            if self._client is not None and self._client.get_transport() is transport:
                self._client.close()
                self._client = None

    def _connect(self) -> paramiko.SSHClient:
        target = self._target
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(PinnedHostKeyPolicy(target.host, self._pin))
        with contextlib.ExitStack() as on_failure:
            on_failure.callback(client.close)
            try:
                sock = socket.create_connection((target.host, target.port), timeout=self._connect_timeout)
                on_failure.callback(sock.close)
                # SSH sends many small packets per command; with Nagle's algorithm each waits for the
                # peer's delayed ACK, which measured 44 ms per command on a reused connection against 3 ms.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                client.connect(
                    target.host,
                    target.port,
                    target.user,
                    pkey=self._key,
                    sock=sock,
                    banner_timeout=self._connect_timeout,
                    auth_timeout=self._connect_timeout,
                    allow_agent=False,
                    look_for_keys=False,
                    disabled_algorithms={"keys": self._pin.disabled_host_key_algorithms()},
                )
            except paramiko.AuthenticationException as exc:
                key = fingerprint(self._key.asbytes())
                reason = f"authentication as {target.user} with key {key} refused (not in authorized_keys?)"
                raise SshConnectError(target.host, reason) from exc
            except (paramiko.SSHException, EOFError) as exc:
                reason = f"SSH handshake on port {target.port} failed: {exc}"
                raise SshConnectError(target.host, reason) from exc
            except OSError as exc:  # refused, unreachable, DNS, TCP timeout
                raise SshConnectError(target.host, f"cannot connect to port {target.port}: {exc}") from exc
            on_failure.pop_all()
        return client


def _feed(chan: paramiko.Channel, data: bytes) -> None:
    """Send stdin from a thread: a command that writes output before reading all of its input would
    otherwise block on our unread output while we block on its full input window."""

    def send() -> None:
        # A command may exit without reading its input; the result tells what happened, not this.
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            chan.sendall(data)
            chan.shutdown_write()

    threading.Thread(target=send, name="ssh-stdin", daemon=True).start()


def _collect(chan: paramiko.Channel, wait: float | None) -> tuple[bytes, bytes, int, bool]:
    """Read stdout and stderr together until the command ends: (stdout, stderr, exit status, finished).

    Both streams share one flow-control window, so reading only one could stall the other. Exit status
    -1 means the channel closed without one (a signal, or a dropped connection); ``finished`` is False
    when ``wait`` seconds passed first.
    """
    deadline = None if wait is None else time.monotonic() + wait
    out, err = bytearray(), bytearray()

    def drain() -> None:
        while chan.recv_ready():
            out.extend(chan.recv(_CHUNK))
        while chan.recv_stderr_ready():
            err.extend(chan.recv_stderr(_CHUNK))

    readable = chan.fileno()  # becomes readable on data, EOF or close
    while True:
        drain()
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return bytes(out), bytes(err), -1, False
        if chan.eof_received or chan.closed:
            # no more output; the exit status follows EOF, maybe much later (a child kept running)
            if not chan.status_event.wait(remaining):
                return bytes(out), bytes(err), -1, False
            drain()
            return bytes(out), bytes(err), chan.exit_status, True
        select.select([readable], [], [], remaining)


# --- the process-wide pool -------------------------------------------------------------------------------

_POOL: dict[tuple[str, int, str, str, str], SshExecutor] = {}
_POOL_LOCK = threading.Lock()


def executor_for(target: SshTarget, creds: Credentials) -> SshExecutor:
    """The process-wide executor for this target and client key; connects lazily on the first command."""
    key = load_private_key(creds)
    pin = parse_host_key(target.host_key)
    identity = (target.host, target.port, target.user, pin.fingerprint, fingerprint(key.asbytes()))
    with _POOL_LOCK:
        executor = _POOL.get(identity)
        if executor is None:
            executor = _POOL[identity] = SshExecutor(target, key)
    executor.mask(creds.secrets())
    return executor


def close_all() -> None:
    """Close every pooled connection (tests; a provider process simply exits)."""
    with _POOL_LOCK:
        executors = list(_POOL.values())
        _POOL.clear()
    for executor in executors:
        executor.close()
