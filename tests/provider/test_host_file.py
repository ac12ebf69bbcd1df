"""HostFile through the real provider host over the lab sshd: write, up again, drift, delete."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from providers.host_file import HostFile
from tests.lab.sshd import LabSshd
from tests.support.dynhost import DynHost, secret
from tests.support.harness import Drift, Harness

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def host(lab_sshd: LabSshd) -> Iterator[DynHost]:
    with DynHost(config={"phoenix:sshPrivateKey": secret(lab_sshd.user_private_key)}) as running:
        yield running


def snippet(lab_sshd: LabSshd, path: Path, content: str) -> Callable[[], Any]:
    def program() -> dict[str, Any]:
        f = HostFile("user-data", {"path": str(path), "content": content}, lab_sshd.target())
        return {"sha256": f.sha256}

    return program


def test_write_up_again_drift_and_delete(host: DynHost, lab_sshd: LabSshd, tmp_path: Path) -> None:
    path = tmp_path / "snippets" / "phoenix-231-user-data.yaml"
    path.parent.mkdir()
    harness = Harness(tmp_path / "state.json", host)

    assert harness.up(snippet(lab_sshd, path, "#cloud-config\n")).counts == {"create": 1}
    assert path.read_text() == "#cloud-config\n"
    assert oct(path.stat().st_mode & 0o777) == oct(0o640)
    assert [p.name for p in path.parent.iterdir()] == [path.name], "no temp file left behind"
    assert harness.up(snippet(lab_sshd, path, "#cloud-config\n")).mutations == 0

    path.write_text("#cloud-config\nruncmd: [reboot]\n")  # edited by hand on the host
    (drift,) = harness.refresh().values()
    assert drift == Drift("changed", ("content", "sha256"))
    assert harness.up(snippet(lab_sshd, path, "#cloud-config\n")).counts == {"update": 1}
    assert path.read_text() == "#cloud-config\n"

    os.unlink(path)
    assert [d.kind for d in harness.refresh().values()] == ["gone"]
    harness.up(snippet(lab_sshd, path, "#cloud-config\n"))
    harness.destroy()
    assert not path.exists()
