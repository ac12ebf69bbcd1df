"""A real OpenSSH sshd on 127.0.0.1 (DESIGN.md, Lab recipe), shared by the lab fixture and the benchmarks.

Everything it writes lives in one directory under ``<repo>/.lab/sshd/`` (``make clean`` removes ``.lab``):
its config, an ed25519 host key, an ed25519 user key authorized for root, the PID file and the log.
Remote commands see ``tests/lab/bin`` first on their PATH, so the lab's ``pct`` shim shadows anything else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from providers.channels.targets import Credentials, SshTarget
from tests.lab.common import LAB_DIR, REPO_ROOT, LabError, wait_until

SSHD = "/usr/sbin/sshd"  # sshd re-executes itself per connection, so it must be started by absolute path
LAB_BIN = REPO_ROOT / "tests" / "lab" / "bin"
LAB_ROOT = LAB_DIR / "sshd"
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0

# SetEnv overrides sshd's default PATH. SHLVL=1 matters as much: Debian's bash sources /etc/bash.bashrc
# and ~/.bashrc for commands run by sshd (SSH_SOURCE_BASHRC) unless SHLVL says it is not a top-level
# shell, and a root .bashrc that prepends to PATH (pyenv, cargo) would put its dirs before tests/lab/bin.
CONFIG = """\
ListenAddress 127.0.0.1
Port {port}
HostKey {host_key}
AuthorizedKeysFile {authorized_keys}
PidFile {pid_file}
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
SetEnv PATH={lab_bin}:{base_path} SHLVL=1 PHOENIX_LAB_SSH_RECORD={record}
ForceCommand {recorder}
LogLevel VERBOSE
"""
# ForceCommand: the TEST-ONLY recorder runs every command as sshd would and, while a test has turned
# recording on (SshdServer.recording), appends it to the record file: what the lab's host was sent.
RECORDER = Path(__file__).resolve().parent / "sshd_record" / "record-command"


def public(key: Path) -> Path:
    """``key.pub`` (not ``with_suffix``: rotated keys are named ``host_ed25519_key.1``)."""
    return key.with_name(key.name + ".pub")


def keygen(path: Path, comment: str) -> None:
    """A new unencrypted ed25519 key pair at ``path`` and ``path.pub``."""
    path.unlink(missing_ok=True)
    public(path).unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )


def key_fingerprint(public_key: Path) -> str:
    """``SHA256:...`` exactly as ``ssh-keygen -lf`` prints it (an oracle independent of
    providers.channels.ssh)."""
    out = subprocess.run(["ssh-keygen", "-lf", str(public_key)], check=True, capture_output=True, text=True)
    return out.stdout.split()[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, comm) of the direct children of ``pid``, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):  # the process exited while we looked
            text = stat.read_text()
            comm_end = text.rindex(")")
            fields = text[comm_end + 2 :].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append((int(stat.parent.name), text[text.index("(") + 1 : comm_end]))
    return found


def _sshd_tree(pid: int) -> list[int]:
    """``pid`` and every sshd process below it (connection and session processes), not user commands."""
    tree, todo = [pid], [pid]
    while todo:
        for child, comm in _children(todo.pop()):
            if comm == "sshd":
                tree.append(child)
                todo.append(child)
    return tree


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class SshdServer:
    """One sshd process on 127.0.0.1 with its own keys. Not thread-safe; tests drive it from one thread."""

    host = "127.0.0.1"
    user = "root"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.config = workdir / "sshd_config"
        self.pid_file = workdir / "sshd.pid"
        self.log = workdir / "sshd.log"
        self.record = workdir / "commands.record"
        self.user_key = workdir / "id_ed25519"
        self.host_key = workdir / "host_ed25519_key"
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._rotations = 0
        workdir.mkdir(parents=True, exist_ok=True)
        keygen(self.user_key, "phoenix-lab-user")
        keygen(self.host_key, "phoenix-lab-host")

    @classmethod
    def create(cls, name: str | None = None) -> SshdServer:
        """A server under ``.lab/sshd/<name>`` (default: this process id, so parallel runs never collide)."""
        return cls(LAB_ROOT / (name or str(os.getpid())))

    @property
    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def start(self) -> None:
        """Start sshd and return once it listens (it writes its PID file after binding the port)."""
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation directory
        self.config.write_text(
            CONFIG.format(
                port=self.port,
                host_key=self.host_key,
                authorized_keys=public(self.user_key),
                pid_file=self.pid_file,
                lab_bin=LAB_BIN,
                base_path=BASE_PATH,
                record=self.record,
                recorder=RECORDER,
            )
        )
        self.pid_file.unlink(missing_ok=True)
        proc = subprocess.Popen([SSHD, "-D", "-f", str(self.config), "-E", str(self.log)])
        self._proc = proc
        try:
            wait_until(
                lambda: self.pid == proc.pid or proc.poll() is not None,
                timeout=START_TIMEOUT,
                what=f"sshd to listen on port {self.port}",
                interval=0.01,
            )
        except LabError:
            proc.kill()
        if proc.poll() is not None:
            proc.wait()
            log = self.log.read_text() if self.log.exists() else ""
            raise LabError(f"sshd did not start on port {self.port}:\n{log[-2000:]}")

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[str]]:
        """Inside the block every command a client sends is recorded (TEST-ONLY ForceCommand wrapper); the
        list it yields is filled, in the order sshd started them, when the block ends."""
        self.record.write_bytes(b"")
        commands: list[str] = []
        try:
            yield commands
        finally:
            data = self.record.read_bytes()
            self.record.unlink(missing_ok=True)
            commands.extend(c.decode() for c in data.split(b"\0")[:-1])

    def stop(self) -> None:
        """SIGTERM the listener and every connection it serves; wait until they are gone."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL sshd and its connection processes, as a crash would: clients see the TCP connection die.

        Commands started over SSH keep running (orphaned), as they would on a real host.
        """
        self._signal(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def rotate_host_key(self) -> None:
        """Serve a newly generated host key from now on (a reinstalled host), restarting sshd."""
        self._rotations += 1
        self.host_key = self.workdir / f"host_ed25519_key.{self._rotations}"
        keygen(self.host_key, "phoenix-lab-host")
        self.restart()

    def use_host_key(self, host_key: Path) -> None:
        self.host_key = host_key
        self.restart()

    def remove(self) -> None:
        """Stop and delete the working directory."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def info(self) -> LabSshd:
        host_public = public(self.host_key)
        return LabSshd(
            host=self.host,
            port=self.port,
            user=self.user,
            host_key_fingerprint=key_fingerprint(host_public),
            host_public_key=host_public.read_text().strip(),
            user_private_key_path=str(self.user_key),
            user_private_key=self.user_key.read_text(),
            server=self,
        )

    def _signal(self, sig: signal.Signals) -> None:
        pid = self.pid
        pids = _sshd_tree(pid) if pid is not None and _alive(pid) else []
        for each in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(each, sig)
        if self._proc is not None:
            self._proc.wait(timeout=STOP_TIMEOUT)  # reap the listener: it is our child
            self._proc = None
        wait_until(
            lambda: not any(_alive(each) for each in pids),
            timeout=STOP_TIMEOUT,
            what=f"sshd processes {pids} to exit after {sig.name}",
            interval=0.01,
        )
        self.pid_file.unlink(missing_ok=True)


@dataclass(frozen=True)
class LabSshd:
    """What a test needs to reach the lab sshd, plus fault helpers that act on the one server."""

    host: str
    port: int
    user: str
    host_key_fingerprint: str
    host_public_key: str
    user_private_key_path: str
    user_private_key: str = field(repr=False)
    server: SshdServer = field(repr=False, compare=False)

    def target(self, host_key: str | None = None) -> SshTarget:
        """The pinned target (``host_key`` overrides the pin, e.g. with the public key line)."""
        return SshTarget(self.host, self.port, self.user, host_key or self.host_key_fingerprint)

    def credentials(self) -> Credentials:
        return Credentials(ssh_private_key=self.user_private_key)

    def stop(self) -> None:
        self.server.stop()

    def restart(self) -> None:
        self.server.restart()

    def kill(self) -> None:
        self.server.kill()

    @contextlib.contextmanager
    def host_key_rotated(self) -> Iterator[LabSshd]:
        """Serve a new host key inside the block (yields the new facts); the old key is back afterwards."""
        original = self.server.host_key
        self.server.rotate_host_key()
        try:
            now = self.server.info()
            yield dataclasses.replace(
                self, host_key_fingerprint=now.host_key_fingerprint, host_public_key=now.host_public_key
            )
        finally:
            self.server.use_host_key(original)


@contextlib.contextmanager
def serve_sshd(name: str | None = None) -> Iterator[LabSshd]:
    """A started server under ``.lab/sshd/<name>`` (default: this process id); stopped and its directory
    removed on exit. The ``lab_sshd`` fixture and the demo box (tests/lab/box.py) run it this way."""
    server = SshdServer.create(name)
    server.start()
    try:
        yield server.info()
    finally:
        server.remove()
