"""SSH faults under the real Pulumi engine: the connection dropped in the middle of a feature script
(sshd killed while a TemplateLayer build runs it), and the host key changed between two runs.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pulumi.automation import CommandError

from providers.zfs.dataset import ZfsDataset, ZfsDatasetArgs
from tests.faults.chain import STARTED_MARKER, Chain, chain_engine, chain_program
from tests.faults.test_pve_faults import assert_host_matches_state, converges, names
from tests.lab.common import LabError, wait_until
from tests.lab.host import LabHost
from tests.lab.sshd import LabSshd
from tests.lab.zfs import LabZpool
from tests.support.engine import Engine

pytestmark = [pytest.mark.lab, pytest.mark.cli]

CHILD = 9110
FEATURE_STARTED_TIMEOUT_S = 120.0


def test_ssh_dropped_in_a_feature_script_removes_the_half_built_layer(
    lab_host: LabHost, pulumi_bin: Path, tmp_path: Path
) -> None:
    harness = chain_engine(lab_host, tmp_path)
    harness.up(chain_program(lab_host, Chain(child=False)))
    dataset, marker = lab_host.dataset(CHILD), STARTED_MARKER.lstrip("/")
    done, killed, problems = threading.Event(), threading.Event(), list[Exception]()

    def kill_sshd_once_the_feature_runs() -> None:
        # The engine runs the provider in its own process: watch the pool from this thread.
        try:
            wait_until(
                lambda: (
                    done.is_set()
                    or (
                        lab_host.zpool.exists(dataset)
                        and (lab_host.zpool.mountpoint(dataset) / marker).exists()
                    )
                ),
                timeout=FEATURE_STARTED_TIMEOUT_S,
                what="the child layer's slow feature to start in its container",
            )
        except LabError as error:
            problems.append(error)
            return
        if not done.is_set():
            lab_host.sshd.kill()  # a crash: the TCP connection dies under the running `pct exec`
            killed.set()

    watcher = threading.Thread(target=kill_sshd_once_the_feature_runs)
    watcher.start()
    try:
        with pytest.raises(CommandError) as raised:
            harness.up(chain_program(lab_host, Chain(slow_s=60)))
    finally:
        done.set()
        watcher.join(timeout=FEATURE_STARTED_TIMEOUT_S)
        lab_host.sshd.restart()
    assert killed.is_set() and not problems, problems

    details = str(raised.value)
    assert "SshConnectionLost" in details and "LayerBuildError" in details
    assert f"layer 'child' (CT {CHILD}) failed at feature slow" in details
    assert "connection lost while `pct exec 9110 -- env PHOENIX_TARGET=lxc bash -s` was running" in details
    # The half-built layer is gone: from the fake, from the pool, and its container no longer runs.
    assert names(harness) == ["base"]
    assert_host_matches_state(lab_host, harness)
    assert lab_host.pct("status", str(CHILD)).stdout.strip() != "status: running"
    # The next up (a new engine run: new provider processes, a fresh connection) builds the layer.
    converges(lab_host, harness)


# --- the host key changed between runs ------------------------------------------------------------------


def ssh_only_engine(lab_sshd: LabSshd, root: Path) -> Engine:
    return Engine(root, "hostkey", secrets={"phoenix:sshPrivateKey": lab_sshd.user_private_key})


def dataset_program(lab_sshd: LabSshd, name: str, quota: str) -> Callable[[], dict[str, Any]]:
    def run() -> dict[str, Any]:
        dataset = ZfsDataset(
            "data", ZfsDatasetArgs(name=name, properties={"quota": quota}), ssh_target=lab_sshd.target()
        )
        return {"mountpoint": dataset.mountpoint}

    return run


@pytest.fixture
def name(lab_zfs: LabZpool) -> str:
    """A fresh dataset; lab_zfs destroys what the test leaves."""
    return f"{lab_zfs.data}/hk-{secrets.token_hex(3)}"


def accepted_logins(lab_sshd: LabSshd) -> int:
    return lab_sshd.server.log.read_text().count("Accepted publickey")


def test_a_changed_host_key_is_refused_before_any_command_and_state_is_unchanged(
    lab_sshd: LabSshd, lab_zfs: LabZpool, name: str, pulumi_bin: Path, tmp_path: Path
) -> None:
    engine = ssh_only_engine(lab_sshd, tmp_path)
    engine.up(dataset_program(lab_sshd, name, "64M"))
    before = engine.state_text()

    with lab_sshd.host_key_rotated() as rotated:
        logins = accepted_logins(lab_sshd)
        with pytest.raises(CommandError) as on_up:
            engine.up(dataset_program(lab_sshd, name, "128M"))  # an update: it would run `zfs set`
        with pytest.raises(CommandError) as on_refresh:
            engine.refresh()
        for raised in (on_up.value, on_refresh.value):
            details = str(raised)
            assert "HostKeyMismatchError" in details
            assert f"pinned {lab_sshd.host_key_fingerprint}" in details
            assert f"host presented {rotated.host_key_fingerprint}" in details
        assert accepted_logins(lab_sshd) == logins  # refused before authentication: no command could run
        assert engine.state_text() == before
        assert lab_zfs.get(name, "quota") == str(64 * 2**20)

    # The original key is back (a mistaken alarm): the same state converges.
    assert engine.up(dataset_program(lab_sshd, name, "128M")).op("data") == "update"
    assert lab_zfs.get(name, "quota") == str(128 * 2**20)
    engine.destroy()
    assert not lab_zfs.exists(name)
