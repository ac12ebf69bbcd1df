"""Every AppArmor profile in apparmor/ compiles against Debian lxc's abstractions (DESIGN.md: "Every shipped
AppArmor profile compiles").

Compiling is real (``apparmor_parser -Q -K -T``, includes resolved from /etc/apparmor.d); only the kernel load
is out of reach in the lab, which has no AppArmor LSM. The last tests feed the same check broken profiles,
so a profile with an error is proven to fail it rather than pass silently.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.lab.apparmor import LabAppArmor
from tests.lab.common import REPO_ROOT

pytestmark = pytest.mark.lab

SHIPPED = sorted(p for p in (REPO_ROOT / "apparmor").iterdir() if p.is_file())


def assert_compiles(lab: LabAppArmor, profile: Path) -> None:
    proc = lab.compile(profile)
    assert proc.returncode == 0, (
        f"{profile.name} does not compile against Debian lxc's abstractions "
        f"(apparmor_parser exited {proc.returncode}):\n{proc.stderr}"
    )


def test_every_profile_an_environment_loads_is_shipped() -> None:
    """Keeps the parametrized test below from passing vacuously."""
    wanted = {
        name
        for host in (REPO_ROOT / "config" / "environments").glob("*/host.json")
        for name in json.loads(host.read_text()).get("apparmor_profiles", [])
    }
    assert wanted, "no environment loads an AppArmor profile"
    assert wanted <= {p.name for p in SHIPPED}


@pytest.mark.parametrize("profile", SHIPPED, ids=lambda p: p.name)
def test_shipped_profile_compiles(lab_apparmor: LabAppArmor, profile: Path) -> None:
    assert_compiles(lab_apparmor, profile)


@pytest.mark.parametrize(
    ("mistake", "before", "after", "parser_says"),
    [
        ("a rule without its comma", "mount fstype=overlay,", "mount fstype=overlay", "syntax error"),
        ("an abstraction lxc does not ship", "lxc/container-base", "lxc/no-such-base", "lxc/no-such-base"),
        (
            "an undeclared variable",
            "@{PROC}/sys/kernel/modprobe",
            "@{NOSUCHVAR}/sys/kernel/modprobe",
            "NOSUCHVAR",
        ),
    ],
)
def test_a_broken_profile_fails_the_compile_check(
    lab_apparmor: LabAppArmor, tmp_path: Path, mistake: str, before: str, after: str, parser_says: str
) -> None:
    shipped = REPO_ROOT / "apparmor" / "phoenix-lxc-confined"
    text = shipped.read_text()
    assert before in text, f"the fixture no longer finds {before!r} to break"
    broken = tmp_path / shipped.name
    broken.write_text(text.replace(before, after))

    with pytest.raises(AssertionError, match="does not compile") as caught:
        assert_compiles(lab_apparmor, broken)

    assert parser_says in str(caught.value), f"{mistake}: {caught.value}"
