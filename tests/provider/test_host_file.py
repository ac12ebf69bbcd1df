"""HostFile under the real Pulumi engine over the lab sshd: write, up again, drift, delete."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from providers.hostfiles.host_file import HostFile, HostFileArgs
from tests.lab.sshd import LabSshd
from tests.support.engine import Drift, Engine

pytestmark = [pytest.mark.lab, pytest.mark.cli]


@pytest.fixture
def engine(lab_sshd: LabSshd, pulumi_bin: Path, tmp_path: Path) -> Engine:
    """A stack under the real engine, the lab user's key as its secret config."""
    return Engine(
        tmp_path / "engine",
        "host-file",
        secrets={"phoenix:sshPrivateKey": lab_sshd.user_private_key},
        bin_dir=pulumi_bin,
    )


def snippet(lab_sshd: LabSshd, path: Path, content: str) -> Callable[[], Any]:
    def program() -> dict[str, Any]:
        f = HostFile("user-data", HostFileArgs(path=str(path), content=content), ssh_target=lab_sshd.target())
        return {"sha256": f.sha256}

    return program


def test_write_up_again_drift_and_delete(engine: Engine, lab_sshd: LabSshd, tmp_path: Path) -> None:
    path = tmp_path / "snippets" / "phoenix-231-user-data.yaml"
    path.parent.mkdir()

    created = engine.up(snippet(lab_sshd, path, "#cloud-config\n"))
    assert created.op("user-data") == "create" and created.summary == {"create": 2}  # and the stack
    assert path.read_text() == "#cloud-config\n"
    assert oct(path.stat().st_mode & 0o777) == oct(0o640)
    assert [p.name for p in path.parent.iterdir()] == [path.name], "no temp file left behind"
    again = engine.up(snippet(lab_sshd, path, "#cloud-config\n"))
    assert again.changes == 0 and again.provider_mutations == 0

    path.write_text("#cloud-config\nruncmd: [reboot]\n")  # edited by hand on the host
    (drift,) = engine.refresh().values()
    assert drift == Drift("changed", ("content", "sha256"))
    repaired = engine.up(snippet(lab_sshd, path, "#cloud-config\n"))
    assert repaired.changed == {engine.resource("user-data").urn: "update"}
    assert path.read_text() == "#cloud-config\n"

    os.unlink(path)
    assert [d.kind for d in engine.refresh().values()] == ["gone"]
    assert engine.up(snippet(lab_sshd, path, "#cloud-config\n")).op("user-data") == "create"
    assert path.exists()
    engine.destroy()
    assert not path.exists()
    assert engine.resources() == {}
