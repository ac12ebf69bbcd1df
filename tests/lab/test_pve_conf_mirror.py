"""The lab's /etc/pve/lxc mirror without the lab: PVE's config file format and what the mirror keeps.

(The mirror following real API calls is in test_host_glue.py, which needs the lab.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.lab.host import PveConfigMirror, raw_lxc_lines, render_pve_conf


@dataclass
class Ct:
    """The FakeCt attributes the mirror reads."""

    vmid: int
    config: dict[str, Any]
    pending: dict[str, Any] = field(default_factory=dict)
    snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)


def test_the_file_is_written_as_write_pct_config_writes_it() -> None:
    config = {
        "rootfs": "local-zfs:subvol-801-disk-0,size=2G",
        "arch": "amd64",
        "description": "vLLM\nserving tiny",
        "cores": 2,
        "digest": "abc",
        "parent": "pre",
    }
    text = render_pve_conf(
        config,
        raw=["lxc.apparmor.profile: phoenix-lxc-gpu-docker"],
        pending={"memory": 1024, "dev0": None},
        snapshots={"pre": {"cores": 1, "snaptime": 17}},
    )
    assert text == (
        "#vLLM\n#serving tiny\n"
        "arch: amd64\ncores: 2\nparent: pre\nrootfs: local-zfs:subvol-801-disk-0,size=2G\n"
        "lxc.apparmor.profile: phoenix-lxc-gpu-docker\n"
        "\n[pve:pending]\ndelete: dev0\nmemory: 1024\n"
        "\n[pre]\ncores: 1\nsnaptime: 17\n"
    )


def test_raw_lines_come_from_the_main_section_in_pves_written_form() -> None:
    conf = "cores: 2\nlxc.apparmor.profile = unconfined\nlxc.cap.drop:\n\n[snap]\nlxc.mount.auto: proc\n"
    assert raw_lxc_lines(conf) == ["lxc.apparmor.profile: unconfined", "lxc.cap.drop: "]


def test_the_mirror_keeps_raw_lines_of_its_own_files_and_removes_gone_guests(tmp_path: Path) -> None:
    root = tmp_path / "pve" / "lxc"
    mirror = PveConfigMirror(root, tmp_path / "manifest")
    mirror.start()
    ct = Ct(801, {"cores": 1})
    mirror.sync([ct])
    assert mirror.path(801).read_text() == "cores: 1\n"

    mirror.path(801).write_text("cores: 1\nlxc.apparmor.profile: phoenix\n")  # Phoenix, over SSH
    ct.config["cores"] = 2  # then a config change through the API
    mirror.sync([ct])
    assert mirror.path(801).read_text() == "cores: 2\nlxc.apparmor.profile: phoenix\n"

    mirror.sync([])
    assert not mirror.path(801).exists()
    (root / "802.conf").write_text("cores: 9\nlxc.apparmor.profile: stale\n")  # not the mirror's
    mirror.sync([Ct(802, {"cores": 1})])
    assert mirror.path(802).read_text() == "cores: 1\n"  # a new guest starts from a fresh config

    mirror.cleanup()
    assert not (tmp_path / "pve").exists() and not (tmp_path / "manifest").exists()


def test_files_a_crashed_run_left_are_removed_at_the_next_start(tmp_path: Path) -> None:
    root, manifest = tmp_path / "lxc", tmp_path / "manifest"
    crashed = PveConfigMirror(root, manifest)
    crashed.start()
    crashed.sync([Ct(801, {"cores": 1})])
    (root / "900.conf").write_text("cores: 1\n")  # someone else's

    PveConfigMirror(root, manifest).start()
    assert sorted(p.name for p in root.iterdir()) == ["900.conf"]
