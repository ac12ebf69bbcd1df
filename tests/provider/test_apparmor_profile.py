"""AppArmorProfile through the real provider host, over SSH to the lab sshd (lab-marked).

SIMULATED STEP, said once here and again in every assertion about it: the lab kernel has no AppArmor LSM,
so these tests run the provider with ``load_mode="compile-only"``. The upload is real (the lab sshd runs as
root on this machine, so the files land in this machine's /etc/apparmor.d), and ``apparmor_parser -Q -K -T``
really compiles the uploaded file against Debian lxc's abstractions; only the kernel load is skipped, and
the outputs say so (``loaded: false``, ``load_simulated: true``). The kernel-mode commands (``-r -W``,
``-R``) are covered by the unit tests over a scripted executor.

Each test uses its own profile name (``phoenix-test-<random>``) and removes its files afterwards.
"""

from __future__ import annotations

import hashlib
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from providers.apparmor_profile import PROFILE_DIR, AppArmorProfile
from tests.lab.apparmor import LabAppArmor
from tests.lab.sshd import LabSshd
from tests.support.dynhost import DynHost, ProviderError, secret
from tests.support.harness import CheckFailedError, Drift, Harness

pytestmark = pytest.mark.lab

SIMULATED = "compile-only: the lab kernel has no AppArmor LSM, so the load is simulated, never claimed"

TEMPLATE = """\
# A test profile in the shape of the shipped ones.
#include <tunables/global>

profile {name} flags=(attach_disconnected,mediate_deleted) {{
  #include <abstractions/lxc/container-base>

  deny mount fstype=devpts,
  mount fstype=cgroup2 -> /sys/fs/cgroup/**,
  {extra}
}}
"""


def profile_text(name: str, extra: str = "deny /dev/mem rwklx,") -> str:
    return TEMPLATE.format(name=name, extra=extra)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def host(lab_sshd: LabSshd) -> Iterator[DynHost]:
    with DynHost(config={"phoenix:sshPrivateKey": secret(lab_sshd.user_private_key)}) as running:
        yield running


@pytest.fixture
def names(lab_apparmor: LabAppArmor) -> Iterator[Callable[[], str]]:
    """A factory of fresh profile names; every file they name (temp files too) is removed afterwards."""
    made: list[str] = []

    def new() -> str:
        made.append(f"phoenix-test-{secrets.token_hex(4)}")
        return made[-1]

    yield new
    for name in made:
        for leftover in Path(PROFILE_DIR).glob(f"{name}*"):
            leftover.unlink()


def program(lab_sshd: LabSshd, name: str, content: str) -> Callable[[], dict[str, object]]:
    def run() -> dict[str, object]:
        profile = AppArmorProfile(
            "profile",
            {"name": name, "content": content},
            ssh_target=lab_sshd.target(),
            load_mode="compile-only",
        )
        return {
            "path": profile.path,
            "sha256": profile.sha256,
            "loaded": profile.loaded,
            "load_simulated": profile.load_simulated,
        }

    return run


def test_up_again_change_drift_and_destroy(
    host: DynHost, lab_sshd: LabSshd, names: Callable[[], str], tmp_path: Path
) -> None:
    name = names()
    path = Path(PROFILE_DIR) / name
    harness = Harness(tmp_path / "state.json", host)
    text = profile_text(name)

    created = harness.up(program(lab_sshd, name, text))

    assert created.op("profile") == "create"
    (urn,) = created.ops
    assert path.read_text() == text
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in path.parent.glob(f"{name}*")) == [name], "the upload left a temp file"
    assert created.exports["path"] == str(path)
    assert created.exports["sha256"] == sha256(text)
    assert created.exports["loaded"] is False, SIMULATED
    assert created.exports["load_simulated"] is True, SIMULATED

    again = harness.up(program(lab_sshd, name, text))
    assert again.changed == {}
    assert again.mutations == 0

    changed = profile_text(name, extra="deny /dev/kmem rwklx,")
    updated = harness.up(program(lab_sshd, name, changed))
    assert updated.op("profile") == "update"
    assert updated.exports["sha256"] == sha256(changed) != sha256(text)
    assert path.read_text() == changed  # uploaded and compiled again (compile-only: load simulated)

    assert harness.refresh() == {urn: Drift("same")}

    path.write_text(changed + "# edited by hand\n")
    assert harness.refresh() == {urn: Drift("changed", ("sha256",))}
    repaired = harness.up(program(lab_sshd, name, changed))
    assert repaired.op("profile") == "update"
    assert path.read_text() == changed

    path.unlink()
    assert harness.refresh() == {urn: Drift("gone")}
    recreated = harness.up(program(lab_sshd, name, changed))
    assert recreated.op("profile") == "create"
    assert path.read_text() == changed

    destroyed = harness.destroy()
    assert [op for op, _, _ in destroyed.log] == ["delete"]
    assert not path.exists()


def test_a_new_name_replaces_the_profile_file(
    host: DynHost, lab_sshd: LabSshd, names: Callable[[], str], tmp_path: Path
) -> None:
    old, new = names(), names()
    harness = Harness(tmp_path / "state.json", host)
    harness.up(program(lab_sshd, old, profile_text(old)))

    report = harness.up(program(lab_sshd, new, profile_text(new)))

    assert report.op("profile") == "replace"
    assert list(report.replaced.values()) == [("name",)]
    assert [op for op, _, _ in report.log] == ["create", "delete"]  # create-before-delete: two files
    assert (Path(PROFILE_DIR) / new).exists()
    assert not (Path(PROFILE_DIR) / old).exists()
    harness.destroy()


def test_a_broken_profile_fails_create_with_the_parsers_error_and_leaves_nothing(
    host: DynHost, lab_sshd: LabSshd, names: Callable[[], str], tmp_path: Path
) -> None:
    name = names()
    harness = Harness(tmp_path / "state.json", host)
    broken = profile_text(name, extra="deny /dev/mem rwklx")  # the rule lacks its comma

    with pytest.raises(ProviderError) as caught:
        harness.up(program(lab_sshd, name, broken))

    details = caught.value.details
    assert "AppArmorLoadError" in details
    assert f"{lab_sshd.host}: compiling AppArmor profile {name}" in details, SIMULATED
    assert f"`apparmor_parser -Q -K -T {PROFILE_DIR}/{name}` exited 1" in details
    assert f"AppArmor parser error for {PROFILE_DIR}/{name}" in details
    assert "syntax error" in details
    assert not (Path(PROFILE_DIR) / name).exists(), "a refused profile must not stay in /etc/apparmor.d"
    assert harness.destroy().log == []  # nothing was recorded


def test_a_broken_update_keeps_the_previous_profile(
    host: DynHost, lab_sshd: LabSshd, names: Callable[[], str], tmp_path: Path
) -> None:
    name = names()
    path = Path(PROFILE_DIR) / name
    harness = Harness(tmp_path / "state.json", host)
    good = profile_text(name)
    harness.up(program(lab_sshd, name, good))

    with pytest.raises(ProviderError) as caught:
        harness.up(program(lab_sshd, name, profile_text(name, extra="deny /dev/mem rwklxq,")))

    assert caught.value.method == "Update"
    assert f"compiling AppArmor profile {name} (compile-only" in caught.value.details, SIMULATED

    assert path.read_text() == good, "the previous text is put back when the parser refuses the new one"
    assert harness.up(program(lab_sshd, name, good)).mutations == 0
    harness.destroy()
    assert not path.exists()


def test_check_refuses_a_name_the_text_does_not_declare(
    host: DynHost, lab_sshd: LabSshd, names: Callable[[], str], tmp_path: Path
) -> None:
    name = names()
    harness = Harness(tmp_path / "state.json", host)

    with pytest.raises(CheckFailedError) as caught:
        harness.up(program(lab_sshd, name, profile_text("phoenix-someone-else")))

    [(prop, reason)] = caught.value.failures
    assert prop == "content"
    assert (
        f"name '{name}' does not match the profile the text declares (`profile phoenix-someone-else`)"
        in reason
    )
    assert not (Path(PROFILE_DIR) / name).exists()
