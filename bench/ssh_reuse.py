"""SSH cost per provider operation, against a real sshd on loopback (the lab's, started here).

Side by side in one run: a new connection + one command (a fresh provider process), one more command on
the reused connection, a three-fact read as three sessions versus one batched ``sh -s`` script, and
commands from 8 threads sharing the connection. Prints milliseconds (median) and handshakes and exec
sessions per operation: DESIGN.md's goal is 1 handshake per host per process and <= 2 sessions per
provider operation.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from providers.channels import ssh
from providers.channels.command import render
from providers.channels.ssh import SshExecutor, SshStats, executor_for
from tests.lab.requirements import lab_missing
from tests.lab.sshd_server import LabSshd, SshdServer

FACTS = [["uname", "-r"], ["cat", "/proc/loadavg"], ["stat", "-c", "%s", "/etc/hostname"]]
BATCH = "".join(f"{render(argv)}\necho ---\n" for argv in FACTS)


def measure(rounds: int, op: Callable[[], object], stats: Callable[[], SshStats]) -> tuple[float, SshStats]:
    """Median milliseconds per call of op, and the handshakes and sessions the calls cost in total."""
    before, times = stats(), []
    for _ in range(rounds):
        started = time.perf_counter()
        op()
        times.append((time.perf_counter() - started) * 1000)
    after = stats()
    cost = SshStats(after.handshakes - before.handshakes, after.sessions - before.sessions)
    return statistics.median(times), cost


def report(label: str, ms: float, stats: SshStats, ops: int) -> None:
    print(
        f"  {label:<46} {ms:8.2f} ms/op   handshakes/op {stats.handshakes / ops:4.2f}"
        f"   sessions/op {stats.sessions / ops:4.2f}"
    )


def run_benchmarks(lab: LabSshd, rounds: int) -> None:
    created: list[SshExecutor] = []

    def fresh() -> None:
        ssh.close_all()  # as a new provider process would start
        created.append(executor_for(lab.target(), lab.credentials()))
        created[-1].run(["true"])

    def created_stats() -> SshStats:
        return SshStats(sum(e.stats.handshakes for e in created), sum(e.stats.sessions for e in created))

    new = measure(rounds, fresh, created_stats)

    ssh.close_all()
    shared = executor_for(lab.target(), lab.credentials())
    shared.run(["true"])  # connect outside the measurement
    reused = measure(rounds, lambda: shared.run(["true"]), lambda: shared.stats)
    separate = measure(rounds, lambda: [shared.run(argv) for argv in FACTS], lambda: shared.stats)
    batched = measure(rounds, lambda: shared.run(["sh", "-s"], stdin=BATCH), lambda: shared.stats)

    ops = rounds * 4
    with ThreadPoolExecutor(max_workers=8) as pool:

        def all_threads() -> None:
            list(pool.map(lambda _: shared.run(["true"]), range(ops)))

        burst = measure(1, all_threads, lambda: shared.stats)

    print(f"ssh_reuse: sshd on {lab.host}:{lab.port}, {rounds} rounds each (median)")
    report("new connection + 1 command", *new, rounds)
    report("1 command on the reused connection", *reused, rounds)
    report("read of 3 facts as 3 sessions", *separate, rounds)
    report("read of 3 facts batched in one sh -s script", *batched, rounds)
    report("1 command, 8 threads on one connection (wall)", burst[0] / ops, burst[1], ops)
    print(f"  ratio new connection / reused connection:      {new[0] / reused[0]:5.1f}x")
    print(f"  ratio 3 sessions / 1 batched session:           {separate[0] / batched[0]:5.1f}x")
    print(f"  ratio sequential / 8 threads, per command:      {reused[0] * ops / burst[0]:5.1f}x")


def main(quick: bool = False) -> None:
    reason = lab_missing("sshd", "ssh-keygen")
    if reason:
        print(f"ssh_reuse: skipped ({reason})")
        return
    server = SshdServer.create(f"bench-{time.monotonic_ns()}")
    server.start()
    try:
        run_benchmarks(server.info(), rounds=10 if quick else 100)
    finally:
        ssh.close_all()
        server.remove()


if __name__ == "__main__":
    main()
