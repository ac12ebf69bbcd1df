"""The PVE API channel: one typed client per host per process. The only product module that imports proxmoxer.

proxmoxer supplies the login (root@pam ticket + CSRF token, or an API token header) and the keep-alive
``requests`` session; this module adds what a provider needs on top of it:

- errors in the shape of :mod:`providers.errors`, with PVE's own message and per-field ``errors``;
- retries where they are safe: a locked guest (``CT is locked`` / ``VM is locked`` / ``can't lock file``,
  refused before PVE did anything) with bounded exponential backoff and jitter; a 5xx or a dropped
  connection only for reads, because a repeated POST/PUT/DELETE may apply twice;
- tasks (UPIDs) awaited with a deadline and a log tail on failure, at most ``max_parallel_tasks`` of them
  in flight per host per process (:meth:`PveClient.run_task` says where the bound lives and why);
- the root@pam rule: ``devN``, feature flags other than ``nesting``, hookscripts and bind mounts are refused
  to API tokens (even root@pam's) and to other users, so the client says so *before* any mutating call;
- counters of reads and mutations (a no-op ``up`` must make zero mutations).

Secrets (password, token secret, ticket, CSRF token) never appear in a repr or an error message.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import requests
from proxmoxer.backends.https import Backend, ProxmoxHTTPAuth
from proxmoxer.core import AuthenticationError

from providers.channels.command import mask_text
from providers.channels.targets import ApiTarget, Credentials
from providers.errors import (
    InvalidTargetError,
    MissingCredentialsError,
    PveError,
    PveLockedError,
    PvePermissionError,
    PveTaskError,
    PveTaskTimeoutError,
    tail,
)

ROOT_USER = "root@pam"
Method = Literal["GET", "POST", "PUT", "DELETE"]

# ------------------------------------------------------------------------------------------- pure logic

# PVE's wording: AbstractConfig::check_lock dies with "CT is locked (backup)" / "VM is locked (backup)";
# PVE::Tools::lock_file with "can't lock file '/run/lock/lxc/pve-config-100.lock' - got timeout" (also the
# per-storage lock of parallel clones); pmxcfs cluster locks with "cfs-lock '...' error: got lock request
# timeout".
_LOCK_ERROR = re.compile(
    r"\b(?:CT|VM) is locked\b"
    r"|can't lock file '[^']*' - got timeout"
    r"|cfs-lock '[^']*' error: got lock request timeout"
)
# PVE answers 500 for most of its own `die`s; these say the request is wrong or the object is not there,
# so reading again cannot help (a provider's read of a deleted guest must fail fast, not after retries).
_PERMANENT = re.compile(
    r"does not exist|no such|not found|unable to parse|already exists|not implemented", re.I
)
_LXC_CONFIG_PATH = re.compile(r"^nodes/[^/]+/lxc(?:/\d+/config)?$")
_LXC_CLONE_PATH = re.compile(r"^nodes/[^/]+/lxc/(?P<source>\d+)/clone$")
_DEV_KEY = re.compile(r"^dev\d+$")
_MOUNT_KEY = re.compile(r"^(?:rootfs|mp\d+)$")


def is_lock_error(message: str) -> bool:
    """True if PVE refused because a guest or file lock is held: ``"CT is locked (backup)" -> True``."""
    return bool(_LOCK_ERROR.search(message))


def is_missing(error: PveError) -> bool:
    """True if PVE said the object does not exist (e.g. ``Configuration file '...' does not exist``)."""
    return bool(re.search(r"does not exist|no such", error.pve_message, re.I))


def is_transient_read_failure(status: int, message: str) -> bool:
    """Should a GET answered with ``status``/``message`` be tried again? 5xx other than a permanent answer."""
    return status >= 500 and not _PERMANENT.search(message)


def task_succeeded(exitstatus: str) -> bool:
    """PVE ends a good task with ``OK``, or ``WARNINGS: n`` when it logged warnings but did its work."""
    return exitstatus == "OK" or exitstatus.startswith("WARNINGS:")


def parse_upid(upid: str) -> dict[str, str]:
    """``UPID:pve1:000003E8:00001B58:6B078442:vzclone:100:root@pam:`` -> dict with node, pid, pstart,
    starttime, type, id and user."""
    parts = upid.split(":")
    if len(parts) < 9 or parts[0] != "UPID":
        raise ValueError(f"not a PVE task id (UPID): {upid!r}")
    keys = ("node", "pid", "pstart", "starttime", "type", "id", "user")
    return dict(zip(keys, parts[1:8], strict=True))


def parse_property_string(value: object) -> tuple[str, dict[str, str]]:
    """A PVE property string: its positional part (``""`` if none) and its keyed parts, stripped.

    ``"local-zfs:8,mp=/data"`` -> (``"local-zfs:8"``, ``{"mp": "/data"}``); ``"nesting=1"`` -> (``""``,
    ``{"nesting": "1"}``). PVE allows one positional part (its format's default key) among the keyed ones.
    """
    positional = ""
    keyed: dict[str, str] = {}
    for part in str(value).split(","):
        key, eq, val = part.partition("=")
        if eq:
            keyed[key.strip()] = val.strip()
        elif part.strip():
            positional = part.strip()
    return positional, keyed


def size_gib(value: object) -> float | None:
    """PVE's disk ``size`` (``8G``, ``512M``, ``1T``, bytes without a unit) in GiB; None if unreadable."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)", str(value or "").strip())
    if match is None:
        return None
    scale = {"K": 1 / 1024**2, "M": 1 / 1024, "G": 1.0, "T": 1024.0, "": 1 / 1024**3}[match.group(2)]
    return float(match.group(1)) * scale


def is_upid(answer: object) -> bool:
    """Is this API answer a task id? ``"UPID:pve1:...:vzclone:100:root@pam:" -> True``."""
    return isinstance(answer, str) and answer.startswith("UPID:")


def root_only_operations(config: Mapping[str, object]) -> list[str]:
    """What in an LXC create/config request PVE allows only to a root@pam login (pve-container
    ``check_ct_modify_config_perm``). ``{"dev0": "/dev/nvidia0", "features": "nesting=1,keyctl=1"}`` ->
    ``["device passthrough (dev0)", "feature flag keyctl (features)"]``; ``[]`` when a token may do it all.
    """
    found: list[str] = []
    privileged = str(config.get("unprivileged", "1")) in ("0", "false")
    for key in sorted(config):
        value = config[key]
        if _DEV_KEY.match(key):
            found.append(f"device passthrough ({key})")
        elif key == "hookscript":
            found.append("hookscript")
        elif key == "features":
            _, flags = parse_property_string(value)
            if privileged and flags:
                found.append("feature flags on a privileged container (features)")
            found += [f"feature flag {flag} (features)" for flag in sorted(flags) if flag != "nesting"]
        elif _MOUNT_KEY.match(key):
            first, props = parse_property_string(value)
            volume = props.get("volume", first)
            if volume.startswith("/dev/"):
                found.append(f"device mount {key} ({volume})")
            elif volume.startswith("/"):
                found.append(f"bind mount {key} ({volume})")
    # Deleting a device, the hookscript or the feature flags is as privileged as setting them.
    for key in (k for k in str(config.get("delete") or "").replace(";", ",").split(",") if k):
        if _DEV_KEY.match(key) or key in ("hookscript", "features"):
            found.append(f"removing {key}")
    return found


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often the client retries; the defaults suit a real host, tests shrink them."""

    lock_budget: float = 120.0
    """Seconds a locked guest/file is waited for (all attempts together) before PveLockedError."""
    read_attempts: int = 4
    """Tries of a GET answered with a transient 5xx or a dropped connection (1 = no retry)."""
    base_delay: float = 0.5
    """First backoff delay in seconds; it doubles per attempt, up to max_delay."""
    max_delay: float = 8.0
    poll_initial: float = 0.1
    """First task-status poll interval; it grows by half per poll, up to poll_max."""
    poll_max: float = 2.0
    request_timeout: float = 60.0
    """Seconds one HTTP request may take (PVE's synchronous config writes wait up to 10 s for a lock)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> RetryPolicy:
        """The defaults, with ``PHOENIX_PVE_LOCK_BUDGET_S`` (a host whose backups hold guests longer) and
        ``PHOENIX_PVE_RETRY_DELAY_S`` (the first backoff delay) applied when set, in the provider host."""
        default = cls()
        return cls(
            lock_budget=_seconds(environ, "PHOENIX_PVE_LOCK_BUDGET_S", default.lock_budget),
            base_delay=_seconds(environ, "PHOENIX_PVE_RETRY_DELAY_S", default.base_delay),
        )


def _seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    text = environ.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses nan
        raise InvalidTargetError(f"{name}={text!r}: expected a number of seconds >= 0")
    return value


def backoff_delay(attempt: int, policy: RetryPolicy, jitter: float) -> float:
    """Delay before retry ``attempt`` (0-based): ``min(max_delay, base * 2**attempt)`` scaled into [50%, 100%]
    by ``jitter`` in [0, 1), so parallel clients hitting the same lock spread out but never retry at once."""
    ceiling = min(policy.max_delay, policy.base_delay * 2.0 ** min(attempt, 30))
    return ceiling * (0.5 + 0.5 * min(max(jitter, 0.0), 1.0))


def poll_intervals(policy: RetryPolicy) -> Iterator[float]:
    """Task poll intervals: poll_initial, x1.5 each time, capped at poll_max (short tasks answer fast,
    long ones cost few requests)."""
    interval = policy.poll_initial
    while True:
        yield interval
        interval = min(policy.poll_max, interval * 1.5)


@dataclass(frozen=True)
class PveStats:
    """Requests a client has issued. ``mutations`` counts every POST/PUT/DELETE sent, retries included."""

    reads: int = 0
    mutations: int = 0
    logins: int = 0
    retries: int = 0

    def __sub__(self, other: PveStats) -> PveStats:
        return PveStats(
            self.reads - other.reads,
            self.mutations - other.mutations,
            self.logins - other.logins,
            self.retries - other.retries,
        )


class PveParamError(PveError):
    """PVE rejected the parameters (HTTP 400 ``Parameter verification failed.``); ``errors`` is per field."""

    def __init__(self, host: str, message: str, errors: Mapping[str, str], *, status: int, path: str) -> None:
        self.errors = dict(errors)
        lines = "".join(f"\n  {key}: {str(why).strip()}" for key, why in sorted(self.errors.items()))
        super().__init__(host, f"{message}{lines}", status=status, path=path)


# ----------------------------------------------------------------------------------------------- client


class _Failure(Exception):
    """One HTTP answer >= 400 (or no answer: status None), before it is classified."""

    def __init__(self, status: int | None, message: str, errors: Mapping[str, str] | None = None) -> None:
        super().__init__(status, message)
        self.status, self.message, self.errors = status, message, errors


@dataclass
class _LockWait:
    """The lock-retry budget of one logical call, shared by its HTTP attempts and its task attempts."""

    policy: RetryPolicy
    rng: random.Random
    started: float = field(default_factory=time.monotonic)
    attempt: int = 0
    slot: threading.Semaphore | None = None
    """The host task slot the caller holds: given back while backing off (a sleeping retry is not a task
    in flight, and another guest's task can use the slot meanwhile), taken again before the next try."""

    def pause(self) -> bool:
        """Sleep before the next try; False when the budget is spent (the caller raises PveLockedError)."""
        remaining = self.started + self.policy.lock_budget - time.monotonic()
        if remaining <= 0:
            return False
        delay = min(backoff_delay(self.attempt, self.policy, self.rng.random()), remaining)
        if self.slot is None:
            time.sleep(delay)
        else:
            self.slot.release()
            try:
                time.sleep(delay)
            finally:
                self.slot.acquire()
        self.attempt += 1
        return True


_task_slots: dict[str, threading.Semaphore] = {}
_task_slots_lock = threading.Lock()


_clone_sources: dict[tuple[str, str], threading.Lock] = {}


def clone_source_lock(target: ApiTarget, path: str) -> contextlib.AbstractContextManager[object]:
    """What a clone task must hold besides its slot: for ``nodes/<node>/lxc/<vmid>/clone``, the process-wide
    lock of that source container; for anything else, nothing.

    pve-container's clone holds the source's lock (``disk``) for the whole task, so a second clone of the
    same template is refused with ``CT is locked (disk)`` until the first ends. Queuing them here instead
    spends no retries, no lock budget and no backoff sleeps that outlast the lock. (qemu-server clones a
    template under a shared lock, so VM clones are left parallel.)
    """
    found = _LXC_CLONE_PATH.match(path.strip("/"))
    if found is None:
        return contextlib.nullcontext()
    with _task_slots_lock:
        return _clone_sources.setdefault((target.url, found["source"]), threading.Lock())


def task_slots(target: ApiTarget) -> threading.Semaphore:
    """The process-wide bound on PVE tasks in flight on ``target``'s host, keyed by its API url: every
    client of the host in this process shares it. The first target seen for a url sets its size (one
    provider process serves one stack, so one host config)."""
    with _task_slots_lock:
        slots = _task_slots.get(target.url)
        if slots is None:
            if target.max_parallel_tasks < 1:
                raise InvalidTargetError(f"api target {target.url}: max_parallel_tasks must be at least 1")
            slots = _task_slots[target.url] = threading.BoundedSemaphore(target.max_parallel_tasks)
        return slots


class PveClient:
    """A PVE API session for one :class:`ApiTarget`: typed calls, retries, tasks and counters.

    Paths are relative to ``/api2/json`` (``nodes/{node}/lxc/{vmid}/config``); each call returns PVE's
    ``data``. Thread-safe: the login and the counters are guarded, requests share one connection pool.
    Open it with :func:`client_for` inside CRUD methods; it refuses to be pickled into state.
    """

    def __init__(self, target: ApiTarget, creds: Credentials, *, policy: RetryPolicy | None = None) -> None:
        self.target = target
        self.policy = policy or RetryPolicy()
        self._creds = creds
        parts = urlsplit(target.url if "//" in target.url else f"https://{target.url}")
        if not parts.hostname:
            raise InvalidTargetError(f"api target url {target.url!r}: expected https://host:8006")
        self.host = parts.hostname
        self._port = parts.port or 8006
        self._path_prefix = parts.path.strip("/").removesuffix("api2/json").strip("/") or None
        if target.token_id is not None:
            user, bang, name = target.token_id.partition("!")
            if not bang or "@" not in user or not name:
                raise InvalidTargetError(f"api target token_id {target.token_id!r}: expected user@realm!name")
            if not creds.pve_token_secret:
                raise MissingCredentialsError(
                    f"phoenix:pveTokenSecret: missing; API token {target.token_id} for {self.host} needs it"
                )
            self._token_user, self._token_name = user, name
        elif not creds.pve_password:
            raise MissingCredentialsError(
                f"phoenix:pvePassword: missing; the {target.user} login to {self.host} needs it"
            )
        self._lock = threading.Lock()
        self._login_lock = threading.Lock()
        self._backend: Any = None
        self._session: requests.Session | None = None
        self._rng = random.Random()
        self._reads = self._mutations = self._logins = self._retries = 0

    # -------------------------------------------------------------------------------- identity

    @property
    def uses_token(self) -> bool:
        return self.target.token_id is not None

    @property
    def login_user(self) -> str:
        """Who PVE sees: ``root@pam``, or ``root@pam!phoenix`` for a token."""
        return self.target.token_id or self.target.user

    @property
    def credentials(self) -> Credentials:
        return self._creds

    @property
    def stats(self) -> PveStats:
        """A snapshot of the counters; subtract two snapshots to count what happened in between."""
        with self._lock:
            return PveStats(self._reads, self._mutations, self._logins, self._retries)

    def __repr__(self) -> str:
        auth = f"token {self.target.token_id}" if self.uses_token else f"password login {self.target.user}"
        return f"PveClient({self.target.url}, node={self.target.node}, {auth})"

    def __reduce__(self) -> Any:
        raise TypeError(
            "a PveClient holds secrets and a live session: open it with client_for() in CRUD methods"
        )

    def close(self) -> None:
        with self._login_lock:
            if self._session is not None:
                self._session.close()
            self._session = self._backend = None

    # ------------------------------------------------------------------------------- root@pam rule

    def require_root(self, operation: str) -> None:
        """Raise PvePermissionError unless this client is a root@pam password/ticket login.

        PVE reserves device passthrough, feature flags other than nesting, hookscripts and bind mounts for
        root@pam and never grants them to API tokens, not even root@pam's own.
        """
        if self.uses_token:
            why = (
                f"{operation} is only allowed for root@pam with a password login; PVE refuses it to every "
                f"API token (even root@pam's); this host is set up with token {self.target.token_id}. "
                "Use user root@pam without token_id and set phoenix:pvePassword for this host"
            )
        elif self.target.user != ROOT_USER:
            why = f"{operation} is only allowed for root@pam; this host logs in as {self.target.user}"
        else:
            return
        raise PvePermissionError(self.host, why, status=403)

    def require_root_for(self, config: Mapping[str, object]) -> None:
        """Check an LXC create/config request before it is sent; see :func:`root_only_operations`."""
        operations = root_only_operations(config)
        if operations:
            self.require_root(", ".join(operations))

    # ------------------------------------------------------------------------------------- calls

    def get(self, path: str, **params: Any) -> Any:
        return self._call("GET", path, params)

    def create(self, path: str, **params: Any) -> Any:
        """POST. An LXC create is checked against the root@pam rule before anything is sent."""
        return self._call("POST", path, params)

    def set(self, path: str, **params: Any) -> Any:
        """PUT. An LXC config change is checked against the root@pam rule before anything is sent."""
        return self._call("PUT", path, params)

    def delete(self, path: str, **params: Any) -> Any:
        return self._call("DELETE", path, params)

    def run_task(
        self, method: Method, path: str, *, timeout: float, step: str, **params: Any
    ) -> dict[str, Any]:
        """Mutate, then wait for the task it started. A task that failed because the guest was locked
        (the worker checks the lock before doing anything) is started again within the lock budget.

        Bounded concurrency: the start and the wait hold one of the host's ``max_parallel_tasks`` slots
        (:func:`task_slots`), so N concurrent tasks (clones of N templates, N guests' starts) run k at a
        time; a lock retry gives its slot back while it backs off. Clones of one container template also
        queue for that template (:func:`clone_source_lock`): PVE would run them one at a time anyway.

        Where the bound lives and why: here, process-wide per host (keyed by the API url), because this
        is the one place every task a provider starts on a host passes through. No layer above bounds
        tasks per host: the provider host serves up to 4 gRPC calls at once for all hosts together (and
        one call may run several tasks), and Pulumi's engine may run more operations in parallel
        (``--parallel``). More in flight would not go faster: PVE serializes work on a storage and on a
        guest with its locks, so extra tasks only wait on those locks, burn lock-retry budgets and crowd
        the host's workers.
        """
        slot = task_slots(self.target)
        # Source first, then a slot: a clone queued behind another clone of its template holds no slot.
        with clone_source_lock(self.target, path), slot:
            locks = _LockWait(self.policy, self._rng, slot=slot)
            while True:
                upid = self._call(method, path, params, locks)
                if not is_upid(upid):
                    raise PveError(self.host, f"{step}: expected a task id, PVE answered {upid!r}", path=path)
                try:
                    return self.wait_task(upid, timeout=timeout, step=step)
                except PveTaskTimeoutError:
                    raise
                except PveTaskError as error:
                    if not is_lock_error(error.task_status):
                        raise
                    self._count_retry()
                    if not locks.pause():
                        raise PveLockedError(
                            self.host,
                            f"{step}: still locked after {self.policy.lock_budget:g}s: {error.task_status}",
                            path=path,
                        ) from error

    def wait_if_task(self, answer: Any, *, timeout: float, step: str) -> Any:
        """``answer`` itself, or, when it is a task id, the task's status once it ended well.

        Some calls (an LXC resize, ``template``) answer with a UPID when PVE ran them as a task and with
        data or nothing when it did the work at once; either way the caller goes on only once it is done.
        """
        return self.wait_task(answer, timeout=timeout, step=step) if is_upid(answer) else answer

    def wait_task(self, upid: str, *, timeout: float, step: str) -> dict[str, Any]:
        """Poll the task until it stops; return its status. ``TASK ERROR`` -> PveTaskError with the log
        tail; still running at the deadline -> PveTaskTimeoutError (the task may still finish on the host)."""
        node = parse_upid(upid)["node"]
        deadline = time.monotonic() + timeout
        for interval in poll_intervals(self.policy):
            status: dict[str, Any] = self.get(f"nodes/{node}/tasks/{upid}/status")
            if status.get("status") == "stopped":
                exitstatus = str(status.get("exitstatus", ""))
                if task_succeeded(exitstatus):
                    return status
                raise PveTaskError(self.host, upid, exitstatus, self._task_log_tail(node, upid), step=step)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PveTaskTimeoutError(
                    self.host,
                    upid,
                    f"still running after {timeout:g}s",
                    self._task_log_tail(node, upid),
                    step=step,
                )
            time.sleep(min(interval, remaining))
        raise AssertionError("unreachable: poll_intervals never ends")

    def _task_log_tail(self, node: str, upid: str) -> str:
        path = f"nodes/{node}/tasks/{upid}/log"
        body = self._call("GET", path, {"start": 0, "limit": 500}, whole=True)
        lines, total = body.get("data") or [], body.get("total")
        if isinstance(total, int) and total > len(lines):  # a long log: read its last page
            lines = self._call("GET", path, {"start": max(total - 50, 0), "limit": 50})
        return tail("\n".join(str(line.get("t", "")) for line in lines))

    # ----------------------------------------------------------------------------- request core

    def _call(
        self,
        method: Method,
        path: str,
        params: Mapping[str, Any],
        locks: _LockWait | None = None,
        *,
        whole: bool = False,
    ) -> Any:
        path = path.strip("/")
        if method in ("POST", "PUT") and _LXC_CONFIG_PATH.match(path):
            self.require_root_for(params)
        data = {k: int(v) if isinstance(v, bool) else v for k, v in params.items() if v is not None}
        locks = locks or _LockWait(self.policy, self._rng)
        read_attempt, relogged = 0, False
        while True:
            session, auth = self._ensure_session()
            try:
                return self._send(session, method, path, data, whole)
            except _Failure as failure:
                if failure.status == 401 and not self.uses_token and not relogged:
                    relogged = True  # the ticket expired or was revoked: log in again, once
                    self._relogin(auth)
                    continue
                if failure.status is not None and is_lock_error(failure.message):
                    self._count_retry()
                    if locks.pause():
                        continue
                    raise PveLockedError(
                        self.host,
                        f"still locked after {self.policy.lock_budget:g}s ({locks.attempt + 1} attempts): "
                        f"{failure.message}",
                        status=failure.status,
                        path=f"{method} /{path}",
                    ) from None
                retryable = failure.status is None or is_transient_read_failure(
                    failure.status, failure.message
                )
                if method == "GET" and retryable and read_attempt + 1 < self.policy.read_attempts:
                    self._count_retry()
                    time.sleep(backoff_delay(read_attempt, self.policy, self._rng.random()))
                    read_attempt += 1
                    continue
                raise self._error(failure, method, path) from None

    def _send(
        self, session: requests.Session, method: Method, path: str, data: dict[str, Any], whole: bool
    ) -> Any:
        with self._lock:
            if method == "GET":
                self._reads += 1
            else:
                self._mutations += 1
        url = f"{self._backend.get_base_url()}/{path}"
        query, form = (data, None) if method in ("GET", "DELETE") else (None, data)
        try:
            response = session.request(
                method,
                url,
                params=query,
                data=form,
                verify=self.target.verify,
                timeout=self.policy.request_timeout,
            )
        except AuthenticationError:
            # proxmoxer renews an hour-old ticket with the ticket itself; refused, it is a 401 like any other.
            raise _Failure(401, "ticket renewal refused") from None
        except requests.exceptions.SSLError as error:
            raise PveError(self.host, self._tls_hint(error), path=f"{method} /{path}") from None
        except requests.RequestException as error:
            # No answer: for a mutation PVE may or may not have acted, so only reads are retried.
            raise _Failure(None, f"no answer ({type(error).__name__}): {self._scrub(str(error))}") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400 or not isinstance(body, dict):
            message = (body or {}).get("message") if isinstance(body, dict) else None
            text = str(message or response.reason or response.text[:200] or "no message").strip()
            errors = body.get("errors") if isinstance(body, dict) else None
            raise _Failure(response.status_code, text, errors if isinstance(errors, dict) else None)
        return body if whole else body.get("data")

    def _error(self, failure: _Failure, method: Method, path: str) -> PveError:
        where, message = f"{method} /{path}", self._scrub(failure.message)
        if failure.status is None:
            verb = "read" if method == "GET" else "call (PVE may or may not have applied it)"
            return PveError(self.host, f"{message}; {verb} not retried further", path=where)
        if failure.status in (401, 403):
            return PvePermissionError(
                self.host, f"{message} as {self.login_user}", status=failure.status, path=where
            )
        if failure.errors:
            errors = {k: self._scrub(str(v)) for k, v in failure.errors.items()}
            return PveParamError(self.host, message, errors, status=failure.status, path=where)
        return PveError(self.host, message, status=failure.status, path=where)

    # ------------------------------------------------------------------------------------ login

    def _ensure_session(self) -> tuple[requests.Session, object]:
        """The session and the auth it uses now (logging in on first use)."""
        with self._login_lock:
            if self._session is None:
                self._backend = self._new_backend()
                self._session = self._backend.get_session()
            return self._session, self._backend.auth

    def _new_backend(self) -> Any:
        """proxmoxer's https backend: for a password, this POSTs /access/ticket (ticket + CSRF token)."""
        common: dict[str, Any] = {
            "port": self._port,
            "verify_ssl": self.target.verify,
            "timeout": self.policy.request_timeout,
            "path_prefix": self._path_prefix,
        }
        if self.uses_token:
            return Backend(
                self.host,
                user=self._token_user,
                token_name=self._token_name,
                token_value=self._creds.pve_token_secret,
                **common,
            )
        try:
            backend = Backend(self.host, user=self.target.user, password=self._creds.pve_password, **common)
        except AuthenticationError:
            raise PvePermissionError(
                self.host,
                f"login as {self.target.user} refused: check phoenix:pvePassword",
                status=401,
                path="POST /access/ticket",
            ) from None
        except requests.exceptions.SSLError as error:
            raise PveError(self.host, self._tls_hint(error), path="POST /access/ticket") from None
        except requests.RequestException as error:
            raise PveError(
                self.host, f"cannot reach the PVE API: {self._scrub(str(error))}", path="POST /access/ticket"
            ) from None
        with self._lock:
            self._logins += 1
        return backend

    def _relogin(self, used_auth: object) -> None:
        """A fresh ticket on the same session, so keep-alive connections survive; once per expiry, however
        many threads saw the 401 (a thread that finds the auth already replaced just retries)."""
        with self._login_lock:
            if self._backend is None or self._session is None or self._backend.auth is not used_auth:
                return
            self._backend = self._new_backend()
            self._session.auth = self._backend.auth

    # ---------------------------------------------------------------------------------- helpers

    def _count_retry(self) -> None:
        with self._lock:
            self._retries += 1

    def _tls_hint(self, error: Exception) -> str:
        return (
            f"TLS verification of {self.target.url} failed ({type(error).__name__}); set the api target's "
            "verify to the path of the host's CA certificate (/etc/pve/pve-root-ca.pem), not to False"
        )

    def _scrub(self, text: str) -> str:
        secrets = list(self._creds.secrets())
        auth = getattr(self._backend, "auth", None)
        if isinstance(auth, ProxmoxHTTPAuth):
            secrets += [auth.pve_auth_ticket, auth.csrf_prevention_token]
        return mask_text(text, secrets)


# ---------------------------------------------------------------------------------------------- cache

_clients: dict[ApiTarget, PveClient] = {}
_clients_lock = threading.Lock()


def client_for(target: ApiTarget, creds: Credentials) -> PveClient:
    """The process-wide client of ``target``: one login and one connection pool per host per process.
    New credentials (a rotated secret) replace the cached client."""
    with _clients_lock:
        client = _clients.get(target)
        if client is None or client.credentials != creds:
            client = _clients[target] = PveClient(target, creds, policy=RetryPolicy.from_env(os.environ))
        return client


def close_clients(where: Callable[[ApiTarget], bool] = lambda _target: True) -> None:
    """Close and forget cached clients (tests; a provider process simply exits)."""
    with _clients_lock:
        for target in [t for t in _clients if where(t)]:
            _clients.pop(target).close()
