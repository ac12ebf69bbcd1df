"""AppArmorProfile under the real Pulumi engine, over SSH to the lab sshd (lab-marked).

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
from pulumi.automation import CommandError
from pulumi.automation.events import EngineEvent, OpType

from providers.hostfiles.apparmor import PROFILE_DIR, AppArmorProfile, AppArmorProfileArgs
from tests.lab.apparmor import LabAppArmor
from tests.lab.sshd import LabSshd
from tests.support.engine import Drift, Engine

pytestmark = [pytest.mark.lab, pytest.mark.cli]

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


@pytest.fixture
def engine(lab_sshd: LabSshd, pulumi_bin: Path, tmp_path: Path) -> Engine:
    """A stack under the real engine, the lab user's key as its secret config."""
    return Engine(
        tmp_path / "engine",
        "apparmor",
        secrets={"phoenix:sshPrivateKey": lab_sshd.user_private_key},
        bin_dir=pulumi_bin,
    )


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
            AppArmorProfileArgs(name=name, content=content),
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


def replace_keys(engine: Engine, run: Callable[[], object]) -> dict[str, tuple[str, ...]]:
    """Resource name → the properties the engine's plan says force its replacement (the ``keys`` of its
    replace step), from a ``pulumi preview`` of ``run``'s events; nothing is changed."""
    keys: dict[str, tuple[str, ...]] = {}

    def seen(event: EngineEvent) -> None:
        pre = event.resource_pre_event
        if pre is not None and pre.metadata.op == OpType.REPLACE:
            keys[pre.metadata.urn.rsplit("::", 1)[-1]] = tuple(pre.metadata.keys or ())

    engine.set_program(run)
    engine.stack.preview(on_event=seen, color="never")
    return keys


def test_up_again_change_drift_and_destroy(
    engine: Engine, lab_sshd: LabSshd, names: Callable[[], str]
) -> None:
    name = names()
    path = Path(PROFILE_DIR) / name
    text = profile_text(name)

    created = engine.up(program(lab_sshd, name, text))

    assert created.op("profile") == "create"
    urn = engine.resource("profile").urn
    assert path.read_text() == text
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in path.parent.glob(f"{name}*")) == [name], "the upload left a temp file"
    assert created.exports["path"] == str(path)
    assert created.exports["sha256"] == sha256(text)
    assert created.exports["loaded"] is False, SIMULATED
    assert created.exports["load_simulated"] is True, SIMULATED

    again = engine.up(program(lab_sshd, name, text))
    assert again.changed == {}
    assert again.changes == 0 and again.provider_mutations == 0

    changed = profile_text(name, extra="deny /dev/kmem rwklx,")
    updated = engine.up(program(lab_sshd, name, changed))
    assert updated.op("profile") == "update"
    assert updated.exports["sha256"] == sha256(changed) != sha256(text)
    assert path.read_text() == changed  # uploaded and compiled again (compile-only: load simulated)

    assert engine.refresh() == {urn: Drift("same")}

    path.write_text(changed + "# edited by hand\n")
    assert engine.refresh() == {urn: Drift("changed", ("sha256",))}
    repaired = engine.up(program(lab_sshd, name, changed))
    assert repaired.op("profile") == "update"
    assert path.read_text() == changed

    path.unlink()
    assert engine.refresh() == {urn: Drift("gone")}
    recreated = engine.up(program(lab_sshd, name, changed))
    assert recreated.op("profile") == "create"
    assert path.read_text() == changed

    destroyed = engine.destroy()
    assert destroyed.op("profile") == "delete"
    assert destroyed.provider_calls["Delete"] == 1 and destroyed.provider_mutations == 1
    assert not path.exists()
    assert engine.resources() == {}


def test_a_new_name_replaces_the_profile_file(
    engine: Engine, lab_sshd: LabSshd, names: Callable[[], str]
) -> None:
    old, new = names(), names()
    engine.up(program(lab_sshd, old, profile_text(old)))

    # The text changes too (it declares the name), but only the name forces the replacement.
    assert replace_keys(engine, program(lab_sshd, new, profile_text(new))) == {"profile": ("name",)}
    report = engine.up(program(lab_sshd, new, profile_text(new)))

    assert report.op("profile") == "replace"
    steps = [op for op, urn in report.steps if urn.endswith("::profile")]
    assert steps == ["create-replacement", "replace", "delete-replaced"]  # create-before-delete: two files
    assert report.provider_calls["Create"] == 1 and report.provider_calls["Delete"] == 1
    assert report.provider_calls["Update"] == 0
    assert (Path(PROFILE_DIR) / new).exists()
    assert not (Path(PROFILE_DIR) / old).exists()
    engine.destroy()
    assert not (Path(PROFILE_DIR) / new).exists()


def test_a_broken_profile_fails_create_with_the_parsers_error_and_leaves_nothing(
    engine: Engine, lab_sshd: LabSshd, names: Callable[[], str]
) -> None:
    name = names()
    broken = profile_text(name, extra="deny /dev/mem rwklx")  # the rule lacks its comma

    with pytest.raises(CommandError) as caught:
        engine.up(program(lab_sshd, name, broken))

    details = str(caught.value)
    assert "profile **creating failed" in details  # the engine's word for the step that failed
    assert "AppArmorLoadError" in details
    assert f"{lab_sshd.host}: compiling AppArmor profile {name}" in details, SIMULATED
    assert f"`apparmor_parser -Q -K -T {PROFILE_DIR}/{name}` exited 1" in details
    assert f"AppArmor parser error for {PROFILE_DIR}/{name}" in details
    assert "syntax error" in details
    assert not (Path(PROFILE_DIR) / name).exists(), "a refused profile must not stay in /etc/apparmor.d"
    assert engine.resources() == {} and engine.pending_deletes() == []  # nothing was recorded
    assert engine.destroy().provider_mutations == 0


def test_a_broken_update_keeps_the_previous_profile(
    engine: Engine, lab_sshd: LabSshd, names: Callable[[], str]
) -> None:
    name = names()
    path = Path(PROFILE_DIR) / name
    good = profile_text(name)
    engine.up(program(lab_sshd, name, good))
    before = engine.resource("profile")

    with pytest.raises(CommandError) as caught:
        engine.up(program(lab_sshd, name, profile_text(name, extra="deny /dev/mem rwklxq,")))

    details = str(caught.value)
    assert "profile **updating failed" in details  # the engine's word: its Update failed, no replace
    assert f"compiling AppArmor profile {name} (compile-only" in details, SIMULATED

    assert path.read_text() == good, "the previous text is put back when the parser refuses the new one"
    after = engine.resource("profile")
    assert (after.id, after.outputs["sha256"]) == (before.id, sha256(good))  # the state says so too
    again = engine.up(program(lab_sshd, name, good))
    assert again.changes == 0 and again.provider_mutations == 0
    engine.destroy()
    assert not path.exists()


def test_check_refuses_a_name_the_text_does_not_declare(
    engine: Engine, lab_sshd: LabSshd, names: Callable[[], str]
) -> None:
    name = names()

    with pytest.raises(CommandError) as caught:
        engine.up(program(lab_sshd, name, profile_text("phoenix-someone-else")))

    details = str(caught.value)
    # The engine's rendering of a check failure: "property <prop> value {<value>} has a problem: <reason>".
    assert "property content value {" in details
    assert (
        f"has a problem: name '{name}' does not match the profile the text declares"
        " (`profile phoenix-someone-else`)" in details
    )
    assert "property name value" not in details  # the one failure is the content's
    assert not (Path(PROFILE_DIR) / name).exists()
    assert engine.resources() == {}
