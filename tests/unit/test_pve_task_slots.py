"""The per-host bound on PVE tasks in flight (PveClient.run_task): threads, no network.

``_call`` answers a UPID and ``wait_task`` is the "task": it records how many run at once, so the bound is
observed where PVE would see it (tasks started and not yet awaited).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from providers.channels.pve import PveClient, RetryPolicy, task_slots
from providers.channels.targets import ApiTarget, Credentials
from providers.errors import InvalidTargetError, PveTaskError

CREDS = Credentials(pve_password="unit-password")
_hosts = itertools.count()


def target(k: int) -> ApiTarget:
    """A host url no other test used: the slots are process-wide per url."""
    return ApiTarget(url=f"https://slots-{next(_hosts)}.example:8006", node="pve1", max_parallel_tasks=k)


class Meter:
    """Tasks in flight, now and at most, overall and per host."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.peak_total = 0

    def enter(self, host: str) -> None:
        with self._lock:
            self.now[host] = self.now.get(host, 0) + 1
            self.peak[host] = max(self.peak.get(host, 0), self.now[host])
            self.peak_total = max(self.peak_total, sum(self.now.values()))

    def leave(self, host: str) -> None:
        with self._lock:
            self.now[host] -= 1


def fake_tasks(
    monkeypatch: pytest.MonkeyPatch,
    meter: Meter,
    seconds: float = 0.03,
    fail: Callable[[str], str] | None = None,
) -> None:
    """Every run_task 'starts' a task and waits ``seconds`` for it; ``fail(step)`` may fail it."""

    def call(self: PveClient, method: str, path: str, params: Any, locks: Any = None, **_: Any) -> str:
        return f"UPID:pve1:0000000A:00000046:6B078442:vzclone:{path.rsplit('/', 2)[-2]}:root@pam:"

    def wait_task(self: PveClient, upid: str, *, timeout: float, step: str) -> dict[str, Any]:
        meter.enter(self.host)
        try:
            time.sleep(seconds)
            status = fail(step) if fail else "OK"
        finally:
            meter.leave(self.host)
        if status != "OK":
            raise PveTaskError(self.host, upid, status, status, step=step)
        return {"status": "stopped", "exitstatus": "OK"}

    monkeypatch.setattr(PveClient, "_call", call)
    monkeypatch.setattr(PveClient, "wait_task", wait_task)


def clone(client: PveClient, newid: int, source: int | None = None, kind: str = "lxc") -> None:
    """A clone of template ``source`` (by default its own template per guest, so no two share one)."""
    path = f"nodes/pve1/{kind}/{source or newid + 9000}/clone"
    client.run_task("POST", path, timeout=10, step=f"clone {newid}", newid=newid)


def test_sixteen_concurrent_clones_run_four_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    meter = Meter()
    fake_tasks(monkeypatch, meter)
    client = PveClient(target(4), CREDS)

    with ThreadPoolExecutor(max_workers=16) as pool:
        for done in [pool.submit(clone, client, 200 + n) for n in range(16)]:
            done.result(timeout=10)

    assert meter.peak[client.host] == 4  # never more, and the bound is reached: they do run in parallel
    assert meter.now[client.host] == 0


def test_clients_of_one_host_share_the_bound_and_hosts_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    meter = Meter()
    fake_tasks(monkeypatch, meter)
    one = target(3)
    same_host = [PveClient(one, CREDS), PveClient(ApiTarget(url=one.url, node="pve1"), CREDS)]
    other = PveClient(target(2), CREDS)
    assert task_slots(one) is task_slots(ApiTarget(url=one.url, node="pve1"))

    jobs = [*(same_host[n % 2] for n in range(12)), *(other for _ in range(6))]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        for done in [pool.submit(clone, client, 300 + n) for n, client in enumerate(jobs)]:
            done.result(timeout=10)

    assert meter.peak[same_host[0].host] == 3  # two clients, one host: one bound (the first target's k)
    assert meter.peak[other.host] == 2
    assert meter.peak_total == 5  # the hosts do not wait for each other


def test_clones_of_one_container_template_queue_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """PVE holds a CT template's lock for a whole clone: queued locally, they never collide on it; clones of
    other templates and of VM templates (a shared lock in qemu-server) still run k-wide."""
    meter = Meter()
    fake_tasks(monkeypatch, meter)
    one_template, other, vms = (
        PveClient(target(4), CREDS),
        PveClient(target(4), CREDS),
        PveClient(target(4), CREDS),
    )

    with ThreadPoolExecutor(max_workers=24) as pool:
        jobs = [
            *(pool.submit(clone, one_template, 400 + n, 9000) for n in range(8)),
            *(pool.submit(clone, other, 500 + n) for n in range(8)),
            *(pool.submit(clone, vms, 600 + n, 9000, "qemu") for n in range(8)),
        ]
        for done in jobs:
            done.result(timeout=10)

    assert meter.peak[one_template.host] == 1
    assert meter.peak[other.host] == 4
    assert meter.peak[vms.host] == 4


def test_a_lock_retry_gives_its_slot_back_while_it_backs_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """k=1: A's clone finds the template locked and backs off; B's task runs in the gap, then A's retry."""
    meter = Meter()
    events: list[str] = []
    a_failed = threading.Event()
    attempts = itertools.count()

    def outcome(step: str) -> str:
        if step == "A" and next(attempts) == 0:
            events.append("A locked")
            a_failed.set()
            return "CT is locked (disk)"
        events.append(f"{step} ok")
        return "OK"

    fake_tasks(monkeypatch, meter, seconds=0.02, fail=outcome)
    policy = RetryPolicy(lock_budget=5.0, base_delay=0.4, max_delay=0.4)  # backoff: 0.2-0.4 s
    client = PveClient(target(1), CREDS, policy=policy)

    def run(name: str) -> None:
        client.run_task("POST", f"nodes/pve1/lxc/{9000 + ord(name)}/clone", timeout=10, step=name)

    with ThreadPoolExecutor(max_workers=2) as pool:
        a = pool.submit(run, "A")
        assert a_failed.wait(5)
        b = pool.submit(run, "B")
        a.result(timeout=10)
        b.result(timeout=10)

    assert events == ["A locked", "B ok", "A ok"]
    assert client.stats.retries == 1
    assert meter.peak[client.host] == 1


def test_a_failed_task_frees_its_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    meter = Meter()
    fake_tasks(
        monkeypatch, meter, seconds=0.0, fail=lambda step: "TASK ERROR: zfs error" if step == "x" else "OK"
    )
    client = PveClient(target(1), CREDS)

    with pytest.raises(PveTaskError):
        client.run_task("POST", "nodes/pve1/lxc/9000/clone", timeout=10, step="x")

    slots = task_slots(client.target)
    assert slots.acquire(blocking=False)  # free again: the error did not keep it
    slots.release()
    client.run_task("POST", "nodes/pve1/lxc/9000/clone", timeout=10, step="y")


def test_a_bound_below_one_is_a_config_error() -> None:
    with pytest.raises(InvalidTargetError, match="max_parallel_tasks"):
        task_slots(target(0))
