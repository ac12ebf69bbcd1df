"""providers.channels.ssh against a real OpenSSH sshd on loopback (the lab_sshd fixture)."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from providers.channels import ssh
from providers.channels.command import Masked
from providers.channels.ssh import SshConnectionLost, SshExecutor, executor_for
from providers.channels.targets import Credentials, SshTarget
from providers.errors import CommandTimeoutError, HostKeyMismatchError, RemoteCommandError, SshConnectError
from tests.lab.common import wait_until
from tests.lab.sshd import LabSshd
from tests.lab.sshd_server import LAB_BIN, free_port, keygen

pytestmark = pytest.mark.lab


@pytest.fixture(autouse=True)
def fresh_pool() -> Iterator[None]:
    """Every test starts with no pooled connection, so handshake counts are its own."""
    ssh.close_all()
    yield
    ssh.close_all()


@pytest.fixture
def ex(lab_sshd: LabSshd) -> SshExecutor:
    return executor_for(lab_sshd.target(), lab_sshd.credentials())


def processes_with(marker: str) -> list[int]:
    """PIDs on this machine (the lab sshd is local) whose command line contains marker."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker.encode() in cmdline.read_bytes() and int(cmdline.parent.name) != os.getpid():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue  # exited while we looked
    return found


def kill_all(marker: str) -> None:
    for pid in processes_with(marker):
        os.kill(pid, 9)


def test_a_command_returns_stdout_stderr_exit_status_and_duration(ex: SshExecutor) -> None:
    result = ex.run(["sh", "-c", "echo out; echo err >&2; sleep 0.2; exit 3"], check=False)
    assert (result.exit_status, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert result.host == "127.0.0.1" and result.argv == "sh -c 'echo out; echo err >&2; sleep 0.2; exit 3'"
    assert 0.2 <= result.duration < 5


@pytest.mark.parametrize("timeout", [None, 30.0])  # the timeout wrapper must not add a layer of quoting
def test_argv_arrives_literally(ex: SshExecutor, tmp_path: Path, timeout: float | None) -> None:
    pwned = tmp_path / "pwned"
    args = [
        "a b",
        "it's",
        '"double"',
        f"$(touch {pwned})",
        f"; touch {pwned}",
        f"`touch {pwned}`",
        "*",
        "\\",
        "line\nbreak",
        "",
        "--flag=$HOME",
    ]
    result = ex.run(["printf", "%s\\0", *args], timeout=timeout)
    assert result.stdout.split("\0")[:-1] == args
    assert not pwned.exists()


def test_remote_commands_see_the_lab_bin_first_on_path(ex: SshExecutor) -> None:
    path = ex.run(["sh", "-c", 'echo "$PATH"']).stdout.strip().split(":")
    assert path[0] == str(LAB_BIN)
    for shim in sorted(p for p in LAB_BIN.glob("*") if os.access(p, os.X_OK)):  # e.g. the pct shim
        assert ex.run(["sh", "-c", 'command -v "$1"', "sh", shim.name]).stdout.strip() == str(shim)


def test_stdin_feeds_a_script(ex: SshExecutor) -> None:
    script = 'set -e\necho "one $((20 + 22))"\necho two >&2\n[ "$(echo x)" = x ]\necho done\n'
    result = ex.run(["sh", "-s"], stdin=script)
    assert (result.stdout, result.stderr) == ("one 42\ndone\n", "two\n")


def test_binary_stdin_arrives_intact(ex: SshExecutor) -> None:
    data = os.urandom(1_000_000)
    assert ex.run(["sha256sum"], stdin=data).stdout.split()[0] == hashlib.sha256(data).hexdigest()


def test_large_output_on_both_streams_does_not_deadlock(ex: SshExecutor) -> None:
    script = "head -c 5000000 /dev/zero | tr '\\0' o & head -c 5000000 /dev/zero | tr '\\0' e >&2; wait"
    result = ex.run(["sh", "-c", script], timeout=60)
    assert (len(result.stdout), len(result.stderr)) == (5_000_000, 5_000_000)
    assert set(result.stdout) == {"o"} and set(result.stderr) == {"e"}


def test_large_stdin_echoed_back_does_not_deadlock(ex: SshExecutor) -> None:
    # cat writes output before it has read all input: both windows fill unless stdin is sent concurrently
    data = "x" * 5_000_000
    assert ex.run(["cat"], stdin=data, timeout=60).stdout == data


def test_failure_carries_host_masked_argv_and_stderr_tail(ex: SshExecutor) -> None:
    script = 'for i in $(seq 1 30); do echo "noise $i" >&2; done; echo "bad password: $1" >&2; exit 7'
    with pytest.raises(RemoteCommandError) as caught:
        ex.run(["sh", "-c", script, "phoenix", Masked("hunter2-top-secret")])
    error = caught.value
    assert error.host == "127.0.0.1" and error.exit_status == 7
    assert error.argv == f"sh -c '{script}' phoenix ***"
    assert error.stderr_tail.splitlines() == [*(f"noise {i}" for i in range(22, 31)), "bad password: ***"]
    text = str(error)
    assert "exited 7" in text and "bad password: ***" in text and "noise 5" not in text
    assert "hunter2" not in text + repr(error.args)


def test_credential_secrets_are_masked_in_errors(lab_sshd: LabSshd) -> None:
    creds = Credentials(ssh_private_key=lab_sshd.user_private_key, pve_password="pve-pass-1234")
    script = 'read -r pw; echo "login $pw refused" >&2; exit 1'  # the secret goes in on stdin, not in argv
    with pytest.raises(RemoteCommandError) as caught:
        executor_for(lab_sshd.target(), creds).run(["sh", "-c", script], stdin="pve-pass-1234\n")
    assert "login *** refused" in str(caught.value) and "pve-pass-1234" not in str(caught.value)


def test_a_public_key_line_pin_works_too(lab_sshd: LabSshd) -> None:
    executor = executor_for(lab_sshd.target(host_key=lab_sshd.host_public_key), lab_sshd.credentials())
    assert executor.run(["echo", "ok"]).stdout == "ok\n"


def test_wrong_pinned_key_is_refused_before_any_command(lab_sshd: LabSshd, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    executor = executor_for(lab_sshd.target(host_key="SHA256:" + "A" * 43), lab_sshd.credentials())
    for _ in range(2):  # refused again on the next call: a mismatch is never accepted or retried into success
        with pytest.raises(HostKeyMismatchError) as caught:
            executor.run(["touch", str(marker)])
        assert caught.value.got == f"{lab_sshd.host_key_fingerprint} (ssh-ed25519)"
        assert caught.value.expected == "SHA256:" + "A" * 43
    assert not marker.exists()
    assert executor.stats == ssh.SshStats(handshakes=0, sessions=0)


def test_a_rotated_host_key_is_refused(lab_sshd: LabSshd, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    pinned = executor_for(lab_sshd.target(), lab_sshd.credentials())
    pinned.run(["true"])
    with lab_sshd.host_key_rotated() as rotated:
        assert rotated.host_key_fingerprint != lab_sshd.host_key_fingerprint
        # the open connection died with the restart; reconnecting must not accept the new key
        with pytest.raises(HostKeyMismatchError) as caught:
            pinned.run(["touch", str(marker)])
        assert caught.value.got == f"{rotated.host_key_fingerprint} (ssh-ed25519)"
        ssh.close_all()  # a new provider process ("the next run") is refused the same way
        with pytest.raises(HostKeyMismatchError):
            executor_for(lab_sshd.target(), lab_sshd.credentials()).run(["touch", str(marker)])
        assert (
            executor_for(rotated.target(), rotated.credentials()).run(["echo", "new pin"]).stdout
            == "new pin\n"
        )
    assert not marker.exists()
    assert executor_for(lab_sshd.target(), lab_sshd.credentials()).run(["true"]).ok  # old key is back


def test_fifty_commands_share_one_handshake(ex: SshExecutor) -> None:
    outputs = [ex.run(["echo", str(i)]).stdout for i in range(50)]
    assert outputs == [f"{i}\n" for i in range(50)]
    assert ex.stats == ssh.SshStats(handshakes=1, sessions=50)


def test_a_hundred_commands_authenticate_once_in_the_sshd_log(lab_sshd: LabSshd) -> None:
    """Counted on the server side too: sshd logs one `Accepted publickey` per authentication."""
    ssh.close_all()
    before = lab_sshd.server.log.read_text().count("Accepted publickey")
    ex = executor_for(lab_sshd.target(), lab_sshd.credentials())
    assert [ex.run(["echo", str(i)]).stdout for i in range(100)] == [f"{i}\n" for i in range(100)]
    accepted = lab_sshd.server.log.read_text().count("Accepted publickey") - before
    print(
        f"100 commands: {ex.stats.handshakes} handshake(s), {ex.stats.sessions} sessions, "
        f"{accepted} authentication(s) in the sshd log"
    )
    assert (ex.stats.handshakes, ex.stats.sessions, accepted) == (1, 100, 1)


def test_threads_share_one_handshake(lab_sshd: LabSshd) -> None:
    def one(i: int) -> str:
        # every thread asks the pool, as provider operations running in parallel do
        return executor_for(lab_sshd.target(), lab_sshd.credentials()).run(["echo", str(i)]).stdout

    with ThreadPoolExecutor(max_workers=8) as pool:
        outputs = list(pool.map(one, range(50)))
    assert outputs == [f"{i}\n" for i in range(50)]
    assert executor_for(lab_sshd.target(), lab_sshd.credentials()).stats == ssh.SshStats(
        handshakes=1, sessions=50
    )


def test_more_threads_than_sshd_allows_sessions_wait_their_turn(ex: SshExecutor) -> None:
    # OpenSSH refuses an 11th concurrent session on one connection (MaxSessions 10)
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda i: ex.run(["sh", "-c", f"sleep 0.3; echo {i}"]).stdout, range(16)))
    assert results == [f"{i}\n" for i in range(16)]
    assert ex.stats.handshakes == 1


@pytest.mark.parametrize("ignores_term", [False, True])
def test_a_timeout_ends_the_remote_process(ex: SshExecutor, ignores_term: bool) -> None:
    marker = f"phoenix-timeout-{uuid.uuid4().hex}"
    trap = "trap '' TERM; " if ignores_term else ""  # an ignored SIGTERM is inherited: needs SIGKILL
    started = time.monotonic()
    try:
        with pytest.raises(CommandTimeoutError) as caught:
            ex.run(["sh", "-c", f"{trap}sleep 30; echo {marker}"], timeout=1)
        elapsed = time.monotonic() - started
        assert caught.value.timeout == 1 and caught.value.exit_status is None
        assert "timed out after 1s" in str(caught.value) and marker in caught.value.argv
        assert 1 <= elapsed < 1 + (ssh.KILL_AFTER if ignores_term else 0) + 2
        assert processes_with(marker) == []  # gone when the error is raised, not just abandoned
    finally:
        kill_all(marker)
    assert ex.run(["echo", "still usable"]).stdout == "still usable\n"


def test_a_command_that_exits_124_in_time_is_not_a_timeout(ex: SshExecutor) -> None:
    assert ex.run(["sh", "-c", "exit 124"], timeout=10, check=False).exit_status == 124


def test_an_idle_connection_closed_by_the_server_is_reopened(lab_sshd: LabSshd, ex: SshExecutor) -> None:
    ex.run(["true"])
    lab_sshd.restart()  # ends every connection, like sshd's ClientAliveCountMax or a host restart
    assert ex.run(["echo", "again"]).stdout == "again\n"
    assert ex.stats == ssh.SshStats(handshakes=2, sessions=2)


def test_sshd_killed_mid_command_is_a_typed_error_and_never_rerun(
    lab_sshd: LabSshd, ex: SshExecutor, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    marker = f"phoenix-drop-{uuid.uuid4().hex}"
    outcome: list[BaseException] = []

    def long_command() -> None:
        try:
            ex.run(["sh", "-c", f"echo run >> {runs}; sleep 5; : {marker}"])
        except SshConnectError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=long_command)
    try:
        thread.start()
        wait_until(lambda: bool(processes_with(marker)), timeout=10, what="the remote command to start")
        lab_sshd.kill()
        thread.join(timeout=10)
        assert not thread.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], SshConnectionLost)
        assert "may or may not have completed" in str(outcome[0]) and marker in str(outcome[0])
        with pytest.raises(SshConnectError, match="cannot connect to port"):  # refused, not a hang
            ex.run(["true"])
    finally:
        lab_sshd.server.start()
        kill_all(marker)
    assert ex.run(["echo", "back"]).stdout == "back\n"
    assert runs.read_text() == "run\n"  # ran once: the dropped command was not sent again
    assert ex.stats.handshakes == 2


def test_refused_port_is_a_connect_error_naming_host_and_port(lab_sshd: LabSshd) -> None:
    port = free_port()
    target = SshTarget("127.0.0.1", port, "root", lab_sshd.host_key_fingerprint)
    with pytest.raises(SshConnectError) as caught:
        executor_for(target, lab_sshd.credentials()).run(["true"])
    assert str(caught.value).startswith(f"127.0.0.1: cannot connect to port {port}")


def test_unknown_client_key_is_an_auth_error_without_the_key(lab_sshd: LabSshd, tmp_path: Path) -> None:
    keygen(tmp_path / "stranger", "stranger")
    stranger = (tmp_path / "stranger").read_text()
    with pytest.raises(SshConnectError) as caught:
        executor_for(lab_sshd.target(), Credentials(ssh_private_key=stranger)).run(["true"])
    text = str(caught.value)
    assert "authentication as root with key SHA256:" in text and "refused" in text
    assert stranger.splitlines()[1] not in text


def test_a_key_file_authenticates(lab_sshd: LabSshd) -> None:
    creds = Credentials(ssh_key_file=lab_sshd.user_private_key_path)
    assert executor_for(lab_sshd.target(), creds).run(["id", "-u"]).stdout == "0\n"
