"""Fan-out: N linked clones of one CT template from N threads through one PveClient, k tasks in flight.

Against plain fakepve (in-process; no ZFS glue: the clone is the fake's, not a ``zfs clone``) with task
times set (time scale > 0: a clone takes CLONE_S, a container start START_S) and ``CT is locked`` faults
injected: a backup (vzdump) holds the template for BACKUP_S as each fan-out begins, so every clone started
meanwhile is refused ``CT is locked (backup)`` and retried. Two rows, measured side by side in one run:

- **clones**: each job is one linked clone of the template;
- **guests**: each job is a workload guest as LxcGuest makes it: the linked clone, then its start;
- **starts**: each job starts one of the guests the first row cloned (work on N different guests, the
  part that runs k-wide), with a backup holding each of the first k guests as the fan-out begins.

For each: the wall time of N jobs, one job's time measured alone (the "task time"), ⌈N/k⌉ × that time
(the DESIGN.md target) and the ratio; PVE's own floor; the most tasks the fake saw running at once (sampled
on the fake, an observer independent of the client), the lock retries the client took, and how many lock
errors reached the caller (must be 0).

PVE's floor: a linked clone of a CT holds its source template's lock for the whole clone task (pve-container
``clone_vm`` sets lock ``disk``; the fake does the same, answering a second clone ``CT is locked (disk)``).
Clones of one template therefore run one at a time on the host whatever k is: N × one clone's time (as
measured alone, the client's polling included). What runs k-wide is each guest's own work (its start, its
config, later tasks). The floor printed is max(⌈N/k⌉ × job time, N × clone time); wall / floor is what the
client adds. The client queues clones of one template itself
(``providers.channels.pve.clone_source_lock``) instead of bouncing off that lock; the k bound lives in
``PveClient.run_task`` (``providers.channels.pve.task_slots``), per host, process-wide.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from providers.channels.pve import PveClient, RetryPolicy
from providers.channels.targets import ApiTarget
from providers.errors import PveError, PveLockedError
from tests.lab.pve import NODE, OS_TEMPLATE, ZFS_STORAGE, PveLab, serve_fake_pve

K = 4
CLONE_S = 0.5
"""Seconds one linked clone task takes (PVE on ZFS: the zfs clone is ~20 ms, the task ~0.5-1 s)."""
START_S = 1.0
"""Seconds one container start task takes."""
BACKUP_S = 1.0
"""Seconds a backup holds the template's lock as each fan-out starts (the injected ``CT is locked``)."""
TEMPLATE = 9000
TIMEOUT_S = 120.0
CT = f"nodes/{NODE}/lxc"


@dataclass(frozen=True)
class Row:
    name: str
    n: int
    wall: float
    solo: float
    clone_time: float
    peak_running: int
    retries: int
    lock_errors: int
    other_errors: int

    @property
    def target(self) -> float:
        return math.ceil(self.n / K) * self.solo

    @property
    def floor(self) -> float:
        return max(self.target, self.n * self.clone_time)


class RunningTasks:
    """Samples, on the fake's own loop, how many of the client's tasks are running; keeps the maximum."""

    def __init__(self, lab: PveLab, limit_s: float) -> None:
        self._lab, self._limit_s = lab, limit_s
        self._stop = threading.Event()
        self.peak = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _count(self) -> int:
        # The injected backups are tasks too, but not the client's.
        tasks = self._lab.pve.tasks.values()
        return sum(1 for task in tasks if task.get("status") == "running" and task.get("type") != "vzdump")

    def _run(self) -> None:
        deadline = time.monotonic() + self._limit_s
        while not self._stop.wait(0.002) and time.monotonic() < deadline:
            self.peak = max(self.peak, self._lab.call(self._count))

    def __enter__(self) -> RunningTasks:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(self._limit_s)


def start_job(client: PveClient, lab: PveLab, vmid: int) -> None:
    # The fake gives every new container a 0 s start; a real one takes a while.
    lab.call(setattr, lab.pve.guest(vmid), "start_secs", START_S)
    client.run_task("POST", f"{CT}/{vmid}/status/start", timeout=TIMEOUT_S, step=f"start {vmid}")


def clone_job(client: PveClient, lab: PveLab, newid: int, *, start: bool) -> None:
    client.run_task(
        "POST",
        f"{CT}/{TEMPLATE}/clone",
        timeout=TIMEOUT_S,
        step=f"linked clone {newid}",
        newid=newid,
        hostname=f"guest{newid}",
        full=0,
    )
    if start:
        start_job(client, lab, newid)


def timed(job: Callable[[int], None], newid: int) -> float:
    started = time.monotonic()
    job(newid)
    return time.monotonic() - started


def measure(
    lab: PveLab,
    client: PveClient,
    name: str,
    ids: range,
    job: Callable[[int], None],
    *,
    clone_time: float,
    locked: tuple[int, ...] = (TEMPLATE,),
) -> Row:
    """One job alone, then len(ids) - 1 at once from as many threads, while backups hold ``locked``."""
    solo = timed(job, ids[0])
    for vmid in locked:
        lab.run(lab.pve.backup(vmid, secs=BACKUP_S))
    before = client.stats
    lock_errors = other_errors = 0
    fan = ids[1:]
    with RunningTasks(lab, TIMEOUT_S) as running, ThreadPoolExecutor(max_workers=len(fan)) as pool:
        started = time.monotonic()
        for done in [pool.submit(job, newid) for newid in fan]:
            try:
                done.result(timeout=TIMEOUT_S)
            except PveLockedError:
                lock_errors += 1
            except PveError:
                other_errors += 1
        wall = time.monotonic() - started
    return Row(
        name=name,
        n=len(fan),
        wall=wall,
        solo=solo,
        clone_time=clone_time,
        peak_running=running.peak,
        retries=(client.stats - before).retries,
        lock_errors=lock_errors,
        other_errors=other_errors,
    )


@contextlib.contextmanager
def fake_with_template() -> Iterator[PveLab]:
    with serve_fake_pve() as lab:
        setup = lab.client()
        try:
            setup.run_task(
                "POST",
                CT,
                timeout=TIMEOUT_S,
                step="create template",
                vmid=TEMPLATE,
                ostemplate=OS_TEMPLATE,
                rootfs=f"{ZFS_STORAGE}:1",
                hostname="layer",
            )
            setup.run_task("POST", f"{CT}/{TEMPLATE}/template", timeout=TIMEOUT_S, step="template")
        finally:
            setup.close()
        lab.set_time_scale(1.0)
        lab.call(lab.pve.ct_secs.update, {"clone": CLONE_S})
        yield lab


def main(quick: bool = False) -> None:
    n = 8 if quick else 16
    print(f"== fanout: {n} linked clones of one CT template, k={K} tasks in flight per host ==")
    print(
        f"plain fakepve (no ZFS glue), time scale 1: clone {CLONE_S:g}s, start {START_S:g}s; "
        f"a {BACKUP_S:g}s backup holds the template as each fan-out starts; client: default RetryPolicy"
    )
    with fake_with_template() as lab:
        target = lab.target()
        client = PveClient(
            ApiTarget(url=target.url, node=target.node, verify=target.verify, max_parallel_tasks=K),
            lab.credentials(),
            policy=RetryPolicy(),
        )
        try:
            clones, guests = range(200, 201 + n), range(300, 301 + n)
            clone_time = timed(lambda i: clone_job(client, lab, i, start=False), 199)
            clone, start = partial(clone_job, client, lab), partial(start_job, client, lab)
            row = partial(measure, lab, client)
            rows = [
                row("clones", clones, partial(clone, start=False), clone_time=clone_time),
                row("guests", guests, partial(clone, start=True), clone_time=clone_time),
                row("starts", clones, start, clone_time=0.0, locked=tuple(clones[1 : 1 + K])),
            ]
        finally:
            client.close()
    print(
        f"{'row':<7} {'N':>3} {'wall s':>7} {'job s':>6} {'ceil(N/k)*job':>14} {'ratio':>6} "
        f"{'PVE floor s':>11} {'wall/floor':>10} {'max running':>11} {'lock retries':>12} {'lock errors':>11}"
    )
    for r in rows:
        print(
            f"{r.name:<7} {r.n:>3} {r.wall:>7.2f} {r.solo:>6.2f} {r.target:>14.2f} {r.wall / r.target:>6.2f} "
            f"{r.floor:>11.2f} {r.wall / r.floor:>10.2f} {r.peak_running:>11} {r.retries:>12} "
            f"{r.lock_errors:>11}"
        )
    for r in rows:
        if r.other_errors:
            print(f"  {r.name}: {r.other_errors} jobs failed with another PVE error")
    worst = max(r.peak_running for r in rows)
    reached = sum(r.lock_errors for r in rows)
    print(
        f"max tasks running at once on the fake: {worst} (bound k={K}); "
        f"lock errors that reached the caller: {reached}"
    )


if __name__ == "__main__":
    main()
