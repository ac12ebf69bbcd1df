"""The lab's AppArmor: real compilation against Debian lxc's abstractions (loading is the simulated step)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lab.apparmor import LabAppArmor

pytestmark = pytest.mark.lab

CONTAINER_PROFILE = """\
#include <tunables/global>

profile phoenix-lab-test flags=(attach_disconnected,mediate_deleted) {
  #include <abstractions/lxc/container-base>
  mount fstype=tmpfs,
}
"""


def test_profile_including_lxc_container_base_compiles(lab_apparmor: LabAppArmor, tmp_path: Path) -> None:
    profile = tmp_path / "phoenix-lab-test"
    profile.write_text(CONTAINER_PROFILE)

    proc = lab_apparmor.compile(profile)

    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def test_broken_profile_fails_with_the_parsers_message(lab_apparmor: LabAppArmor, tmp_path: Path) -> None:
    profile = tmp_path / "phoenix-broken"
    profile.write_text(CONTAINER_PROFILE.replace("mount fstype=tmpfs,", "mount fstype=tmpfs"))

    proc = lab_apparmor.compile(profile)

    assert proc.returncode != 0
    assert f"AppArmor parser error for {profile}" in proc.stderr
    assert "syntax error" in proc.stderr


def test_missing_abstraction_is_an_error(lab_apparmor: LabAppArmor, tmp_path: Path) -> None:
    profile = tmp_path / "phoenix-missing-include"
    profile.write_text(CONTAINER_PROFILE.replace("lxc/container-base", "lxc/no-such-abstraction"))

    proc = lab_apparmor.compile(profile)

    assert proc.returncode != 0
    assert "no-such-abstraction" in proc.stderr
