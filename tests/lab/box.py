"""The Proxmox host in a box as a demo: ``make demo`` (``up``) and ``make demo-down`` (``down``).

``up`` starts the box as a detached daemon (``python -m tests.lab.box serve``, log in ``.lab/demo/box.log``)
made of the same pieces the lab fixtures use: fakepve (simulated PVE API), a fresh zfs-fuse pool under the
lab's session lock, a real sshd, the cached Debian rootfs seeded into the pool for real LXC containers, and
the glue that makes them one host (:func:`~tests.lab.host.running_lab_host`). The daemon writes the demo
project (:func:`~tests.lab.e2e.write_lab_config`, two vLLM stand-in guests) and ``box.json`` (what the
foreground needs), then waits for SIGTERM and tears everything down. The foreground runs the real Pulumi CLI
against it on a file backend under ``.lab/demo``: ``pulumi up`` with the engine's own display, the stack's
outputs, one vLLM endpoint's ``/v1/models``, and ``pulumi preview --expect-no-changes``. A second ``up``
reuses the running box (and so changes nothing). ``down`` destroys the stack and stops the box.

The daemon holds ``.lab/zfs/session.lock`` (the ``lab_zpool`` fixture's lock) for its whole life: the demo
and a lab test session never share the pool; whichever comes second waits for the first.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from tests.lab.common import LAB_DIR, REPO_ROOT, LabError, wait_until
from tests.lab.e2e import PROFILE, LabGuest, write_lab_config
from tests.lab.host import running_lab_host
from tests.lab.lxc import seed_rootfs
from tests.lab.pve import serve_fake_pve
from tests.lab.requirements import lab_missing
from tests.lab.rootfs import BUILD_TIMEOUT_S, ROOTFS, build_rootfs
from tests.lab.sshd_server import serve_sshd
from tests.lab.zfs import SESSION_LOCK_TIMEOUT_S, fresh_pool, session_lock
from tests.support.engine import cli_dir, engine_env

DEMO_DIR = LAB_DIR / "demo"
STATE = DEMO_DIR / "box.json"
LOG = DEMO_DIR / "box.log"
PROJECT = DEMO_DIR / "project"
BACKEND = DEMO_DIR / "backend"
PULUMI_HOME = DEMO_DIR / "pulumi-home"
CLI_LOCK = DEMO_DIR / "cli.lock"
STACK = "lab"
# Seals the demo stack's secrets (a fake PVE password and a lab-only SSH key): a fixed demo value, so a
# second `make demo` opens the same stack; not a secret.
PASSPHRASE = "phoenix-demo-passphrase"
SSHD_NAME = "demo"  # .lab/sshd/demo: one box at a time (the session lock), so a fixed name is enough
BANNER = (
    "Proxmox host in a box: SIMULATED PVE API (fakepve); REAL ZFS (zfs-fuse), LXC, sshd, AppArmor parser "
    "(compile-only); TEST-ONLY stand-ins for the feature scripts and vLLM."
)
# What the box runs (tests/lab/requirements.py names each one's Debian package).
LAB_BINARIES = (
    "sshd",
    "ssh-keygen",
    "zfs-fuse",
    "zfs",
    "lxc-start",
    "apparmor_parser",
    "debootstrap",
    "rsync",
)
# Bounded waits of the foreground. Start: a first run builds the rootfs (debootstrap's own bound), then the
# daemon may wait out a lab test session holding the pool (the lock's bound), then starts in seconds.
START_MARGIN_S = 300.0
STOP_TIMEOUT_S = 300.0  # the daemon's teardown: glue settle (≤120 s), containers, pool, zfs-fuse, sshd
MODELS_TIMEOUT_S = 10.0
WAITING = {
    "rootfs": "building the Debian rootfs with debootstrap (first run only, cached in .lab/cache)",
    "lock-wait": (
        "waiting for the lab pool: a lab test session holds .lab/zfs/session.lock; the box starts when "
        "that session ends"
    ),
    "starting": "starting zfs-fuse pool, fakepve, sshd and the LXC seed",
}


class DemoError(Exception):
    """An expected failure: the message says what to do; no traceback."""


class BoxStopped(Exception):
    """The daemon was asked to stop (SIGTERM/SIGINT): unwinds whatever is set up."""


@dataclass
class BoxState:
    """``box.json``: the daemon's phase and, once ready, what the foreground needs to reach the box."""

    pid: int
    phase: str  # rootfs | lock-wait | starting | ready | failed
    error: str = ""
    pve_url: str = ""
    pve_password: str = field(default="", repr=False)
    ssh_port: int = 0
    ssh_private_key_path: str = ""
    pool: str = ""
    guests: list[dict[str, Any]] = field(default_factory=list)

    def save(self) -> None:
        """Atomically, readable by root only (it carries the fake's password)."""
        DEMO_DIR.mkdir(parents=True, exist_ok=True)
        tmp = STATE.with_name(f"{STATE.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(dataclasses.asdict(self), out, indent=2)
        tmp.replace(STATE)

    @classmethod
    def load(cls) -> BoxState | None:
        try:
            return cls(**json.loads(STATE.read_text()))
        except (OSError, ValueError, TypeError):
            return None


def box_alive(pid: int) -> bool:
    """pid is a live box daemon (not a zombie, not a reused pid running something else)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return b"tests.lab.box" in cmdline and b"serve" in cmdline and stat.rpartition(")")[2].split()[0] != "Z"


def running_box() -> BoxState | None:
    state = BoxState.load()
    return state if state is not None and box_alive(state.pid) else None


def say(message: str) -> None:
    print(message, flush=True)


# ------------------------------------------------------------------------------------------ the daemon


def demo_guests() -> list[LabGuest]:
    """Two vLLM stand-ins, one per lab GPU, each on a port of its own (chosen when the box starts)."""
    return [LabGuest(801, gpu=0, served="tiny-a"), LabGuest(802, gpu=1, served="tiny-b")]


def serve() -> int:
    """The box: set up, publish ``ready``, wait for SIGTERM, tear down. Exit 0 on a clean stop."""
    state = BoxState(pid=os.getpid(), phase="starting")
    tearing_down = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal tearing_down
        if tearing_down:  # a second signal, or one during a failed start's teardown: let teardown finish
            return
        tearing_down = True
        raise BoxStopped(signal.Signals(signum).name)

    def publish(phase: str) -> None:
        state.phase = phase
        state.save()
        log(f"phase: {phase}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log(f"box daemon pid {os.getpid()}")
    try:
        with contextlib.ExitStack() as stack:
            stack.callback(lambda: log("torn down"))
            try:
                set_up(stack, publish, state)
                while True:
                    signal.pause()  # the handler raises BoxStopped
            except BaseException:
                tearing_down = True  # from here on the ExitStack unwinds; no signal may cut it short
                raise
    except BoxStopped as stop:
        log(f"stopped by {stop}")
        STATE.unlink(missing_ok=True)
        return 0
    except Exception as error:  # noqa: BLE001 - every failure must reach the foreground through box.json
        traceback.print_exc()
        expected = isinstance(error, DemoError | LabError)
        state.error = str(error) if expected else f"{type(error).__name__}: {error} (traceback in {LOG})"
        publish("failed")
        return 1


def set_up(stack: contextlib.ExitStack, publish: Callable[[str], None], state: BoxState) -> None:
    """The lab pieces, each entered on ``stack`` (unwound in reverse on exit), then ``ready`` published."""
    if not ROOTFS.is_dir():
        publish("rootfs")
    rootfs = build_rootfs()
    try:
        # A free lock is taken at once; only a held one is worth telling the foreground about.
        stack.enter_context(session_lock(timeout=0))
    except LabError:
        publish("lock-wait")
        try:
            stack.enter_context(session_lock())
        except LabError as error:
            raise DemoError(
                f"the lab pool stayed in use by another lab session (a pytest run holds "
                f".lab/zfs/session.lock) for {SESSION_LOCK_TIMEOUT_S:.0f} s; run `make demo` again "
                "once it ends"
            ) from error
    publish("starting")
    zpool = stack.enter_context(fresh_pool())
    pve = stack.enter_context(serve_fake_pve())
    sshd = stack.enter_context(serve_sshd(SSHD_NAME))
    seed = seed_rootfs(zpool, rootfs)
    # As lab_stack does: the profile Phoenix writes to /etc/apparmor.d goes when the box goes,
    # unless it was there before.
    profile = Path("/etc/apparmor.d") / PROFILE
    if not profile.exists():
        stack.callback(profile.unlink, missing_ok=True)
    host = stack.enter_context(running_lab_host(pve, zpool, sshd, rootfs, seed))
    guests = demo_guests()
    write_lab_config(PROJECT, host, guests)
    state.pve_url, state.pve_password = pve.url, pve.password
    state.ssh_port, state.ssh_private_key_path = sshd.port, sshd.user_private_key_path
    state.pool = zpool.pool
    state.guests = [{"vmid": g.vmid, "served": g.served, "port": g.port} for g in guests]
    publish("ready")


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


# -------------------------------------------------------------------------------------- the foreground


@contextlib.contextmanager
def cli_lock() -> Iterator[None]:
    """One `make demo`/`make demo-down` at a time; a second fails at once rather than queueing behind an
    up that takes minutes."""
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    fd = os.open(CLI_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DemoError(
                f"another `make demo` or `make demo-down` is running ({CLI_LOCK} is held)"
            ) from None
        yield
    finally:
        os.close(fd)


def require_lab_host() -> None:
    if os.geteuid() != 0:
        raise DemoError("the box needs root (zfs-fuse, LXC, sshd, /etc/pve): run `sudo make demo`")
    missing = lab_missing(*LAB_BINARIES)
    if missing:
        raise DemoError(f"the box cannot run here: {missing}; `make lab-deps` installs the lab's packages")
    if importlib.util.find_spec("fakepve") is None:
        raise DemoError("fakepve (the simulated PVE API) is not installed: run `make setup`")


def require_cli() -> Path:
    found = cli_dir()
    if found is None:
        raise DemoError("no Pulumi CLI: `make pulumi` builds it (tools/pulumi/build.sh), or put one on PATH")
    return found


class Pulumi:
    """The real CLI, as a user types it, on the demo's file backend and home."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir / "pulumi"
        env = {k: v for k, v in os.environ.items() if k != "PULUMI_CONFIG_PASSPHRASE_FILE"}
        self.env = {
            **env,
            **engine_env(PULUMI_HOME, bin_dir),  # offline: no update check, no plugin downloads
            "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
            "PULUMI_BACKEND_URL": f"file://{BACKEND}",
        }

    def run(self, *args: str, input: str | None = None, quiet: bool = False) -> int:
        """Run with output straight to the terminal (the engine's own display); returns the exit status."""
        self._dirs()
        sys.stdout.flush()
        out = subprocess.DEVNULL if quiet else None
        proc = subprocess.run(
            [str(self.bin), *args], cwd=PROJECT, env=self.env, input=input, text=True, stdout=out, check=False
        )
        return proc.returncode

    def capture(self, *args: str) -> str:
        self._dirs()
        proc = subprocess.run(
            [str(self.bin), *args, "--non-interactive"],
            cwd=PROJECT,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise DemoError(f"`pulumi {' '.join(args)}` exited {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    @staticmethod
    def _dirs() -> None:
        BACKEND.mkdir(parents=True, exist_ok=True)
        PULUMI_HOME.mkdir(parents=True, exist_ok=True)

    def must(self, *args: str, input: str | None = None, quiet: bool = False) -> None:
        code = self.run(*args, input=input, quiet=quiet)
        if code != 0:
            raise DemoError(
                f"`pulumi {' '.join(args)}` exited {code}; the box keeps running (log: {LOG}); "
                "`make demo-down` stops it"
            )

    def has_stack(self) -> bool:
        if not (PROJECT / "Pulumi.yaml").exists():
            return False
        listed = json.loads(self.capture("stack", "ls", "--json"))
        return any(entry.get("name") == STACK for entry in listed)


def start_box() -> BoxState:
    """Start the daemon detached (its own session: a Ctrl-C here must not reach it) and wait until ready."""
    # An earlier box's stack state and project point at a pool, fake and sshd that went with it.
    for stale in (STATE, PROJECT, BACKEND):
        if stale.is_dir():
            shutil.rmtree(stale)
        else:
            stale.unlink(missing_ok=True)
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    with LOG.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.lab.box", "serve"],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    say(f"box: started the daemon (pid {proc.pid}, log {LOG})")
    # Our child: poll() sees it exit (box_alive could not tell it from this process before its exec).
    state = wait_ready(proc.pid, alive=lambda: proc.poll() is None)
    proc.returncode = 0  # detached on purpose: never waited for here (the daemon outlives this command)
    return state


def wait_ready(pid: int, alive: Callable[[], bool] | None = None) -> BoxState:
    """Wait, bounded, for the daemon pid to say ready (or fail, or die), printing what it is doing. The
    bound: a first run's rootfs build, then waiting out a lab session that holds the pool, then the start."""
    shown: set[str] = set()
    running = alive or (lambda: box_alive(pid))

    def current() -> BoxState | None:
        state = BoxState.load()
        return state if state is not None and state.pid == pid else None

    def settled() -> bool:
        state = current()
        phase = state.phase if state is not None else ""
        if phase in WAITING and phase not in shown:
            shown.add(phase)
            say(f"box: {WAITING[phase]} ...")
        return phase in ("ready", "failed") or not running()

    wait_until(
        settled,
        timeout=BUILD_TIMEOUT_S + SESSION_LOCK_TIMEOUT_S + START_MARGIN_S,
        what=f"the box to start (see {LOG})",
        interval=0.2,
    )
    state = current()
    if state is not None and state.phase == "ready" and running():
        return state
    # Failed: it tears down what it had started and exits on its own.
    wait_until(lambda: not running(), timeout=STOP_TIMEOUT_S, what=f"the failed box (pid {pid}) to exit")
    STATE.unlink(missing_ok=True)
    reason = state.error if state is not None and state.error else f"the daemon exited; see {LOG}"
    raise DemoError(f"the box did not start: {reason}")


def ask_models(outputs: dict[str, Any]) -> None:
    """GET /v1/models of one endpoint: the lab's containers share the host's network namespace, so the
    stand-in listens on 127.0.0.1:<port>; only the port is taken from the (guest-address) endpoint."""
    endpoints: dict[str, str] = outputs.get("vllm_endpoints") or {}
    if not endpoints:
        raise DemoError("the stack exports no vllm_endpoints")
    served, endpoint = sorted(endpoints.items())[0]
    port = urllib.parse.urlsplit(endpoint).port
    if port is None:
        raise DemoError(f"endpoint {endpoint!r} of {served} names no port")
    url = f"http://127.0.0.1:{port}/v1/models"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
    try:
        with opener.open(url, timeout=MODELS_TIMEOUT_S) as response:
            body = json.loads(response.read())
    except (OSError, ValueError) as error:
        raise DemoError(f"{url} (vLLM stand-in for {served}) did not answer: {error}") from error
    models = [str(entry.get("id")) for entry in body.get("data", [])]
    say(f"models: GET {url} ({served}, endpoint {endpoint}) answered: {', '.join(models) or '(none)'}")
    if served not in models:
        raise DemoError(f"{url} does not list {served!r}: {models}")


def up() -> int:
    say(BANNER)
    require_lab_host()
    pulumi = Pulumi(require_cli())
    with cli_lock():
        box = running_box()
        if box is None:
            box = start_box()
        else:
            say(f"box: reusing the running box (pid {box.pid}); `make demo-down` stops it")
            box = wait_ready(box.pid)  # an earlier `make demo` may have been interrupted while it started
        say(
            f"box: ready — fakepve {box.pve_url}, sshd 127.0.0.1:{box.ssh_port}, pool {box.pool} (zfs-fuse), "
            f"project {PROJECT}"
        )
        pulumi.must("stack", "select", "--create", "--secrets-provider", "passphrase", STACK, quiet=True)
        pulumi.must("config", "set", "--stack", STACK, "phoenix:environment", "lab", quiet=True)
        key = Path(box.ssh_private_key_path).read_text()
        for name, value in (("phoenix:pvePassword", box.pve_password), ("phoenix:sshPrivateKey", key)):
            # On stdin, never on argv (visible in ps); --raw keeps the key's trailing newline.
            pulumi.must("config", "set", "--stack", STACK, "--secret", "--raw", name, input=value, quiet=True)
        say(f"$ pulumi up --yes --stack {STACK}")
        pulumi.must("up", "--yes", "--stack", STACK)
        say(f"$ pulumi stack output --stack {STACK}")
        pulumi.must("stack", "output", "--stack", STACK)
        ask_models(json.loads(pulumi.capture("stack", "output", "--json", "--stack", STACK)))
        say(f"$ pulumi preview --stack {STACK} --expect-no-changes")
        pulumi.must("preview", "--stack", STACK, "--expect-no-changes")
        say("preview: no changes (pulumi preview --expect-no-changes exited 0)")
        say("demo: done. `make demo` again changes nothing; `make demo-down` destroys it and stops the box")
    return 0


def stop_box(box: BoxState) -> None:
    say(f"box: stopping (pid {box.pid}): containers, pool, sshd, /etc/pve mirror, fakepve")
    with contextlib.suppress(ProcessLookupError):
        os.kill(box.pid, signal.SIGTERM)
    wait_until(
        lambda: not box_alive(box.pid),
        timeout=STOP_TIMEOUT_S,
        what=f"the box daemon (pid {box.pid}) to exit (see {LOG})",
        interval=0.2,
    )
    left = BoxState.load()
    STATE.unlink(missing_ok=True)
    if left is not None and left.pid == box.pid and left.phase == "failed":
        raise DemoError(f"the box's teardown failed: {left.error} (see {LOG})")
    say("box: stopped")


def down() -> int:
    with cli_lock():
        box = running_box()
        project = PROJECT.joinpath("Pulumi.yaml").exists() and BACKEND.exists()
        if box is None and not project:
            STATE.unlink(missing_ok=True)
            say("demo: no box is running; nothing to do")
            return 0
        failures: list[str] = []
        if project:
            pulumi = Pulumi(require_cli())
            if pulumi.has_stack():
                destroyed = False
                if box is not None and box.phase == "ready":
                    say(f"$ pulumi destroy --yes --stack {STACK}")
                    destroyed = pulumi.run("destroy", "--yes", "--stack", STACK) == 0
                    if not destroyed:
                        failures.append("`pulumi destroy` failed (the box's teardown removes what it left)")
                else:
                    say("demo: the box that held this stack's resources is gone; removing the stack's state")
                # --force only when the resources are already gone with their box, or about to be.
                rm = ["stack", "rm", "--yes", "--stack", STACK, *([] if destroyed else ["--force"])]
                say(f"$ pulumi {' '.join(rm)}")
                if pulumi.run(*rm) != 0:
                    failures.append(f"`pulumi {' '.join(rm)}` failed")
        if box is not None:
            stop_box(box)  # even after a failed destroy: its teardown is what cleans the host
        else:
            say("demo: no box is running")
        if failures:
            raise DemoError("; ".join(failures) + f" (box log: {LOG})")
        # Its host.json points at the box just stopped; a new box writes its own.
        shutil.rmtree(PROJECT, ignore_errors=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab.box", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("up", "down", "serve"))
    command = parser.parse_args(argv).command
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # ours interleave with the CLI's
    if command == "serve":
        return serve()
    try:
        return up() if command == "up" else down()
    except (DemoError, LabError) as error:
        print(f"demo: error: {error}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("\ndemo: interrupted; a running box keeps running (`make demo-down` stops it)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
