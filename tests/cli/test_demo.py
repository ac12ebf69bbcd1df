"""``make demo`` and ``make demo-down`` as a user runs them: ``python -m tests.lab.box up`` then ``down``,
each a subprocess, against the Proxmox host in a box (tests/lab/box.py) and the real Pulumi CLI.

The box takes the lab pool's session lock, so this test waits while another lab session holds it. It
cannot run in a pytest session that already holds that lock itself (a lab test before it set up
``lab_zpool``): the box would wait for this very session. It says so then, rather than wait out the
lock's timeout.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab import box
from tests.lab.common import REPO_ROOT, run
from tests.lab.requirements import lab_missing
from tests.lab.rootfs import BUILD_TIMEOUT_S
from tests.lab.zfs import POOL, SESSION_LOCK, SESSION_LOCK_TIMEOUT_S, session_lock

pytestmark = [pytest.mark.lab, pytest.mark.cli]

UP_TIMEOUT_S = BUILD_TIMEOUT_S + SESSION_LOCK_TIMEOUT_S + 900  # + the chain and guests under the engine
DOWN_TIMEOUT_S = 600


def unavailable(reason: str) -> None:
    """Skip with the reason; under CI the lab must run, so fail (as tests/lab/requirements.py does)."""
    if os.environ.get("CI") and not os.environ.get("PHOENIX_ALLOW_LAB_SKIP"):
        pytest.fail(f"lab unavailable in CI: {reason}")
    pytest.skip(reason)


def lock_holders(path: Path) -> set[int]:
    """PIDs holding a flock on path, from /proc/locks (``N: FLOCK ADVISORY WRITE <pid> maj:min:ino ...``)."""
    if not path.exists():
        return set()
    st = path.stat()
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    holders = set()
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == ident:
            holders.add(int(fields[4]))
    return holders


def demo(command: str, pulumi_bin: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.lab.box", command],
        cwd=REPO_ROOT,
        env={**os.environ, "PHOENIX_PULUMI_BIN": str(pulumi_bin)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    print(f"--- box {command} (exit {proc.returncode})\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_demo_up_then_down(pulumi_bin: Path) -> None:
    reason = lab_missing(*box.LAB_BINARIES)
    if reason:
        unavailable(reason)
    if os.getpid() in lock_holders(SESSION_LOCK):
        unavailable(
            "this pytest session holds the lab pool's session lock (a lab test ran first), which the box "
            "needs: run `pytest tests/cli/test_demo.py` on its own"
        )
    if box.running_box() is not None:
        pytest.skip("a demo box is running (`make demo`); `make demo-down` first: this test would stop it")

    up = demo("up", pulumi_bin, UP_TIMEOUT_S)
    started = re.search(r"box: started the daemon \(pid (\d+)", up.stdout)
    try:
        assert up.returncode == 0, up.stderr
        assert box.BANNER in up.stdout
        # The engine's own update summary, then the outputs and the stand-in's answer, then a clean preview.
        update, _, after = up.stdout.partition("$ pulumi stack output")
        assert re.search(r"Resources:\s+\+ \d+ created", update), update
        assert "vllm_endpoints" in after
        assert re.search(r"models: GET http://127\.0\.0\.1:\d+/v1/models \(tiny-a, .*answered: tiny-a", after)
        preview = after.partition("$ pulumi preview")[2]
        assert re.search(r"Resources:\s+\d+ unchanged", preview), preview
        assert not re.search(r"\d+ to (create|update|delete|replace)", preview), preview
        assert "preview: no changes" in preview
    finally:
        down = demo("down", pulumi_bin, DOWN_TIMEOUT_S)
    assert down.returncode == 0, down.stderr
    assert "Resources:" in down.stdout and "deleted" in down.stdout  # pulumi destroy's summary
    assert "box: stopped" in down.stdout
    assert started is not None
    assert not box.box_alive(int(started.group(1)))
    assert not box.STATE.exists()
    # The pool is gone, unless another lab session has already taken the lock and made its own.
    holders = lock_holders(SESSION_LOCK)
    assert int(started.group(1)) not in holders
    if not holders:
        with session_lock(timeout=5):
            pools = run(["zpool", "list", "-H", "-o", "name"], check=False).stdout.split()
            assert POOL not in pools

    again = demo("down", pulumi_bin, DOWN_TIMEOUT_S)  # idempotent
    assert again.returncode == 0 and "nothing to do" in again.stdout
