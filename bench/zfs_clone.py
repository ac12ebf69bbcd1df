"""Linked clone versus full copy on a real ZFS pool (zfs-fuse), side by side in one run.

For each size (256 MiB and 1 GiB; ``--quick``: 64 MiB and 256 MiB) a source dataset is filled with
random data and snapshotted, then:

- ``zfs clone`` run directly (the floor);
- the same clone **through ZfsCloneProvider.create**, over SSH to the lab sshd (clone + verifying
  read-back: two exec sessions on one kept connection), the way the provider host runs it;
- a full copy with ``zfs send | zfs recv``;
- an rsync copy into a new dataset (what the bash original's "clones" really were).

Prints the median times, the ratios, handshakes and sessions per provider clone, and whether the
provider clone stays flat as the size grows (DESIGN.md, Targets: flat, >= 100x faster than rsync at 1 GiB).
Figures only; nothing is asserted. Needs the lab: root, zfs-fuse, sshd, rsync. Uses the lab's own start
functions (tests/lab), and its pool lock, so it waits for a test session holding the pool.
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from providers.channels import ssh
from providers.channels.ssh import executor_for
from providers.zfs.clone import ZfsCloneProvider
from tests.lab.common import file_lock
from tests.lab.requirements import lab_missing
from tests.lab.sshd_server import LabSshd, SshdServer
from tests.lab.zfs import (
    POOL,
    SESSION_LOCK_TIMEOUT_S,
    ZFS_DIR,
    LabZpool,
    create_pool,
    destroy_stale_pool,
    start_daemon,
    stop_daemon,
)

MIB = 2**20
CHUNK = 4 * MIB


@contextlib.contextmanager
def lab_pool() -> Iterator[LabZpool]:
    """The lab's fresh `rpool`, exactly as the `lab_zpool` fixture makes it (and removes it)."""
    pidfile = ZFS_DIR / "zfs-fuse.pid"
    image, mount_root = ZFS_DIR / "pool.img", ZFS_DIR / "mnt"
    with file_lock(ZFS_DIR / "session.lock", timeout=SESSION_LOCK_TIMEOUT_S, what="the lab pool"):
        started = start_daemon(pidfile)
        try:
            destroy_stale_pool(POOL, image, mount_root)
            yield create_pool(POOL, image, mount_root)
        finally:
            try:
                destroy_stale_pool(POOL, image, mount_root)
            finally:
                if started:
                    stop_daemon(pidfile)


def timed(op: Callable[[], object]) -> float:
    started = time.perf_counter()
    op()
    return time.perf_counter() - started


def median(times: list[float]) -> float:
    return statistics.median(times)


def fill(pool: LabZpool, dataset: str, size: int) -> None:
    """``size`` bytes of incompressible data in one file (compression would flatter the copies)."""
    with open("/dev/urandom", "rb") as source, open(pool.mountpoint(dataset) / "weights.bin", "wb") as out:
        for _ in range(size // CHUNK):
            out.write(source.read(CHUNK))
    subprocess.run(["sync"], check=True)


@dataclass
class Row:
    size_mib: int
    zfs_clone: float
    provider_clone: float
    send_recv: float
    rsync: float
    sessions_per_clone: float


def measure_size(pool: LabZpool, lab: LabSshd, size_mib: int, rounds: int, copies: int) -> Row:
    src = f"{pool.data}/bench-src-{size_mib}"
    snapshot = f"{src}@base"
    clone = f"{pool.data}/bench-clone-{size_mib}"
    pool.zfs("create", src)
    fill(pool, src, size_mib * MIB)
    pool.zfs("snapshot", snapshot)

    direct = []
    for _ in range(rounds):
        direct.append(timed(lambda: subprocess.run(["zfs", "clone", snapshot, clone], check=True)))
        pool.zfs("destroy", clone)

    provider = ZfsCloneProvider(ssh_target=lab.target(), _credentials=lab.credentials())
    executor = executor_for(lab.target(), lab.credentials())
    props = {"origin": snapshot, "name": clone, "properties": {}, "version": "1"}
    executor.run(["true"])  # the connection a provider host keeps: its handshake is not a clone's cost
    through_provider = []
    sessions = 0
    for _ in range(rounds):
        before = executor.stats.sessions
        through_provider.append(timed(lambda: provider.create(dict(props))))
        sessions += executor.stats.sessions - before
        provider.delete(clone, {"guid": pool.get(clone, "guid")})

    copy = f"{pool.data}/bench-copy-{size_mib}"
    pipeline = 'zfs send "$1" | zfs recv "$2"'
    send_recv = []
    for _ in range(copies):
        send_recv.append(
            timed(lambda: subprocess.run(["sh", "-c", pipeline, "bench", snapshot, copy], check=True))
        )
        pool.zfs("destroy", "-r", copy)

    rsynced = []
    rsync = ["rsync", "-a", f"{pool.mountpoint(src)}/", f"{pool.mount_root}/data/{copy.rsplit('/', 1)[1]}/"]
    for _ in range(copies):
        pool.zfs("create", copy)  # mounts where `rsync` writes (the pool's default mountpoint layout)
        rsynced.append(timed(lambda: subprocess.run(rsync, check=True)))
        pool.zfs("destroy", copy)

    pool.zfs("destroy", "-r", src)
    return Row(
        size_mib,
        median(direct),
        median(through_provider),
        median(send_recv),
        median(rsynced),
        sessions / rounds,
    )


def ms(seconds: float) -> str:
    return f"{seconds * 1000:9.1f} ms"


def report(rows: list[Row], lab: LabSshd, rounds: int, copies: int, handshakes: int) -> None:
    print(
        f"zfs_clone: zfs-fuse pool {POOL}, sshd on {lab.host}:{lab.port}; "
        f"median of {rounds} clones and {copies} copies"
    )
    print(
        f"  {'size':>8}  {'zfs clone':>12}  {'provider clone':>14}  {'send|recv':>12}  {'rsync':>12}"
        "  sessions/clone"
    )
    for r in rows:
        print(
            f"  {r.size_mib:>4} MiB  {ms(r.zfs_clone):>12}  {ms(r.provider_clone):>14}  {ms(r.send_recv):>12}"
            f"  {ms(r.rsync):>12}  {r.sessions_per_clone:5.1f}"
        )
    for r in rows:
        print(
            f"  {r.size_mib:>4} MiB ratios: rsync / provider clone {r.rsync / r.provider_clone:6.1f}x,"
            f"  send|recv / provider clone {r.send_recv / r.provider_clone:6.1f}x,"
            f"  provider / direct zfs clone {r.provider_clone / r.zfs_clone:5.1f}x"
        )
    small, large = rows[0], rows[-1]
    growth = large.provider_clone / small.provider_clone
    copy_growth = large.rsync / small.rsync
    flat = "flat" if growth < 1.5 else "NOT flat"
    print(
        f"  provider clone {large.size_mib} MiB / {small.size_mib} MiB: {growth:4.2f}x ({flat}; "
        f"the rsync copy grew {copy_growth:4.1f}x, the data {large.size_mib / small.size_mib:.0f}x)"
    )
    print(f"  SSH handshakes for all provider clones and deletes: {handshakes}")


def main(quick: bool = False) -> None:
    reason = lab_missing("sshd", "ssh-keygen", "zfs-fuse", "zfs", "zpool", "rsync")
    if reason:
        print(f"zfs_clone: skipped ({reason})")
        return
    sizes = [64, 256] if quick else [256, 1024]
    rounds, copies = (5, 1) if quick else (15, 2)
    server = SshdServer.create(f"bench-zfs-{time.monotonic_ns()}")
    server.start()
    try:
        lab = server.info()
        with lab_pool() as pool:
            ssh.close_all()
            rows = [measure_size(pool, lab, size, rounds, copies) for size in sizes]
            handshakes = executor_for(lab.target(), lab.credentials()).stats.handshakes
        report(rows, lab, rounds, copies, handshakes)
    finally:
        ssh.close_all()
        server.remove()


if __name__ == "__main__":
    main()
