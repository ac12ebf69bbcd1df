"""Lab fixture: a fake PVE 9 API (fakepve, AGPL, test-only) served in-process on a loopback address.

In-process rather than fakepve's CLI, because only its Python API offers what the fault tests need:
``fail(...)`` injection, config locks, ``time_scale``, API tokens (``apitokens``: PVE's token endpoints are
answered but not stored by the fake) and the list of requests it received. The fake runs on its own
event loop in a daemon thread; :meth:`PveLab.call` runs code on that loop so tests never race it.

Baseline, set up once per session: node ``pve1``; storage ``local-zfs`` (zfspool, pool ``rpool/data``,
content ``images,rootdir``) created through the API; a Debian 12 OS template on ``local``. Use
``lab_pve`` (session) for read-only checks and ``fresh_pve`` for anything that changes the fake: it puts
the baseline back after the test. ``PveLab.pve`` is the FakePve object, for glue that makes storage act on
a real ZFS pool later. Lab files (certificate, key) live in ``<repo>/.lab/pve/<pid>/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import secrets
import shutil
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from providers.channels.pve import PveClient, RetryPolicy
from providers.channels.targets import ApiTarget, Credentials

T = TypeVar("T")

LAB_DIR = Path(__file__).resolve().parents[2] / ".lab" / "pve"
HOST = "127.0.0.2"
NODE = "pve1"
ZFS_STORAGE = "local-zfs"
OS_TEMPLATE_NAME = "debian-12-standard_12.7-1_amd64.tar.zst"
OS_TEMPLATE = f"local:vztmpl/{OS_TEMPLATE_NAME}"
START_TIMEOUT = 30.0

FAST_POLICY = RetryPolicy(
    lock_budget=3.0, read_attempts=3, base_delay=0.01, max_delay=0.1, poll_initial=0.01, poll_max=0.05
)
"""Retries and polls scaled down for the lab, where time_scale 0 makes every task finish at once."""


class _LoopThread:
    """An asyncio loop in a daemon thread: the fake serves from it, tests submit work to it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fakepve-lab", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = START_TIMEOUT) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(START_TIMEOUT)
        if not self.thread.is_alive():
            self.loop.close()


@dataclass
class PveLab:
    """The running fake and how to reach it. ``pve`` is fakepve's FakePve (its full Python API)."""

    pve: Any
    url: str
    cafile: str
    node: str = NODE
    user: str = "root@pam"
    password: str = field(default="", repr=False)
    _loop: _LoopThread | None = field(default=None, repr=False)
    _baseline: dict[str, Any] = field(default_factory=dict, repr=False)

    def target(self, *, token_id: str | None = None, verify: bool | str | None = None) -> ApiTarget:
        """TLS is verified against the fake's self-signed certificate as the CA (``cafile``), the way a
        real host's ``pve-root-ca.pem`` is used; verify=False works too but warns on every request."""
        verify = self.cafile if verify is None else verify
        return ApiTarget(url=self.url, node=self.node, user=self.user, token_id=token_id, verify=verify)

    def credentials(self, *, token_secret: str | None = None) -> Credentials:
        return Credentials(pve_password=self.password, pve_token_secret=token_secret)

    def client(self, *, token_id: str | None = None, policy: RetryPolicy = FAST_POLICY) -> PveClient:
        """A new client with its own counters (not the process-wide cached one), with lab-fast retries.
        For a token login, create the token first with :meth:`add_token`."""
        secret = self.pve.apitokens.get(token_id) if token_id else None
        return PveClient(self.target(token_id=token_id), self.credentials(token_secret=secret), policy=policy)

    # ---------------------------------------------------------------- faults and observation

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run fn on the fake's event loop thread (state changes must not race a request in flight)."""
        assert self._loop is not None

        async def on_loop() -> T:
            return fn(*args, **kwargs)

        return self._loop.run(on_loop())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await one of the fake's coroutines (e.g. ``pve.hold_config_lock(vmid, secs)``) on its loop."""
        assert self._loop is not None
        return self._loop.run(coro)

    def add_token(self, token_id: str, secret: str) -> None:
        """An API token ``user@realm!name``: fakepve answers PVE's token endpoints without storing tokens."""
        self.call(self.pve.apitokens.__setitem__, token_id, secret)

    def fail(self, method: str, suffix: str, **kwargs: Any) -> None:
        """fakepve's ``fail``: ``status=, message=`` or ``error=<catalogue name>``, ``times=``."""
        self.call(self.pve.fail, method, suffix, **kwargs)

    def set_time_scale(self, scale: float) -> None:
        """Real seconds per PVE second; 0 (the baseline) finishes every task before the request returns."""
        self.call(setattr, self.pve, "time_scale", scale)

    def requests(self, method: str | None = None, suffix: str = "") -> list[tuple[str, str]]:
        """(method, path) of the requests the fake received, oldest first, optionally filtered; an observer
        independent of the client's own counters."""
        seen = self.call(lambda: [(m, p) for m, p, _body in self.pve.requests])
        return [(m, p) for m, p in seen if (method is None or m == method) and p.endswith(suffix)]

    # ----------------------------------------------------------------------------- baseline

    def snapshot_baseline(self) -> None:
        self._baseline = self.call(
            lambda: {
                "storages": copy.deepcopy(self.pve.storages),
                "apitokens": dict(self.pve.apitokens),
                "ct_secs": dict(self.pve.ct_secs),
                "network": copy.deepcopy(self.pve.network),
                "lock_wait": self.pve.lock_wait,
            }
        )

    def reset(self) -> None:
        """Back to the session baseline: no guests, no faults, time_scale 0, baseline storage and tokens."""
        base = self._baseline

        def restore() -> None:
            pve = self.pve
            pve.failures.clear()
            pve.time_scale = 0.0
            pve.cts.clear()
            pve.vms.clear()
            pve.pools.clear()
            pve.acl = None
            pve.quorate = True
            pve.storages = copy.deepcopy(base["storages"])
            pve.apitokens = dict(base["apitokens"])
            pve.ct_secs = dict(base["ct_secs"])
            pve.network = copy.deepcopy(base["network"])
            pve.lock_wait = base["lock_wait"]
            pve.requests.clear()

        self.call(restore)


def _unavailable(reason: str) -> None:
    """Skip with the reason; under CI the lab must run, so fail (as tests/lab/requirements.py does)."""
    if os.environ.get("CI") and not os.environ.get("PHOENIX_ALLOW_LAB_SKIP"):
        pytest.fail(f"lab unavailable in CI: {reason}")
    pytest.skip(reason)


def _setup_baseline(lab: PveLab) -> None:
    """What a fresh host in the design has: a zfspool storage (made through the API) and an OS template."""
    client = lab.client()
    try:
        client.create(
            "storage", storage=ZFS_STORAGE, type="zfspool", pool="rpool/data", content="images,rootdir"
        )
    finally:
        client.close()
    # Uploading a real template is beside the point; the fake records it as present on `local`.
    lab.call(lab.pve.store_file, "local", OS_TEMPLATE_NAME, 129 * 1024**2, content="vztmpl")
    lab.snapshot_baseline()


@contextlib.contextmanager
def serve_fake_pve(host: str = HOST) -> Iterator[PveLab]:
    """A started fake with the baseline (storage, OS template) on ``https://<host>:<free port>``, root@pam
    with a random password; stopped on exit. Raises ImportError without fakepve[crypto], OSError when it
    cannot listen. The ``lab_pve`` fixture and the benchmarks start it this way."""
    from fakepve import FakePve, settle
    from fakepve.certs import make_cert

    # A directory per process: another session writing its certificate must not replace the CA this one
    # verifies against (requests reads the CA file again for each new connection).
    cert_dir = LAB_DIR / str(os.getpid())
    cert_dir.mkdir(parents=True, exist_ok=True)
    certfile, keyfile, _der = make_cert(str(cert_dir), hosts=(host,))
    password = secrets.token_urlsafe(18)
    pve = FakePve(user="root@pam", password=password, host=host, port=0)
    pve.time_scale = 0.0
    loop = _LoopThread()
    try:
        loop.run(pve.start(certfile, keyfile))
    except BaseException:
        loop.stop()
        raise
    lab = PveLab(pve=pve, url=pve.url, cafile=certfile, password=password, _loop=loop)
    try:
        _setup_baseline(lab)
        yield lab
    finally:
        loop.run(settle())
        loop.run(pve.stop())
        loop.stop()
        shutil.rmtree(cert_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def lab_pve() -> Iterator[PveLab]:
    """A fake PVE API for the session: https://127.0.0.2:<free port>, root@pam with a random password."""
    try:
        served = serve_fake_pve()
        lab = served.__enter__()
    except ImportError as error:
        _unavailable(f"fakepve[crypto] is not installed (pip install 'fakepve[crypto]'): {error}")
        raise AssertionError("unreachable") from error
    except OSError as error:
        _unavailable(f"fakepve cannot listen on {HOST}: {error}")
        raise AssertionError("unreachable") from error
    with contextlib.ExitStack() as stack:
        stack.push(served)
        yield lab


@pytest.fixture
def fresh_pve(lab_pve: PveLab) -> Iterator[PveLab]:
    """The session's fake, with the baseline put back after the test (guests, faults, time scale, tokens)."""
    lab_pve.call(lab_pve.pve.requests.clear)
    try:
        yield lab_pve
    finally:
        lab_pve.reset()
