"""AppArmorProfile: its pure core (validation, argv, read parsing, the diff table) and CRUD over a fake."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dill
import pytest
from pulumi.output import Unknown

from providers.channels.command import Argv, CommandResult, render, sha256_text, write_file_argv
from providers.channels.targets import SshTarget
from providers.errors import SshConnectError
from providers.hostfiles.apparmor import (
    KERNEL_PROFILES,
    PROVIDER_VERSION,
    UNLOAD_ARGV,
    AppArmorLoadError,
    AppArmorProfile,
    AppArmorProfileArgs,
    AppArmorProfileProvider,
    ProfileFacts,
    declared_profiles,
    diff_profile,
    load_argv,
    parse_read,
    read_argv,
    remove_argv,
    validate,
)
from tests.support.capture import capture
from tests.support.fakes import Answer, LocalExecutor, ScriptedExecutor

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "apparmor").iterdir())

PROFILE = """\
#include <tunables/global>

profile phoenix-test flags=(attach_disconnected,mediate_deleted) {
  #include <abstractions/lxc/container-base>
  @{PROC}/sys/kernel/shm* r,
  /{usr/,}bin/true ix,
}
"""
SHA = sha256_text(PROFILE)
PATH = "/etc/apparmor.d/phoenix-test"
PARSER_ERROR = (
    "AppArmor parser error for /etc/apparmor.d/phoenix-test in profile /etc/apparmor.d/phoenix-test "
    "at line 5: syntax error, unexpected TOK_END_OF_RULE"
)


# --- naming: the text must declare exactly the resource's profile -----------------------------------------


@pytest.mark.parametrize(
    ("text", "names"),
    [
        (PROFILE, ["phoenix-test"]),
        ("profile a {\n  profile child {\n  }\n  ^hat {\n  }\n}\n", ["a"]),  # children and hats are not
        ("# profile commented-out {\nprofile real { # profile trailing {\n}\n", ["real"]),
        ('profile "quoted-name" flags=(complain) {\n}\n', ["quoted-name"]),
        ("profile one {\n}\nprofile two /usr/bin/two {\n}\n", ["one", "two"]),
        ("/usr/bin/foo {\n  /etc/** r,\n}\n", []),  # an attachment-path profile has no `profile` keyword
        ("profile open\n{\n  @{HOME}/ r,\n}\n", ["open"]),
    ],
)
def test_declared_profiles(text: str, names: list[str]) -> None:
    assert declared_profiles(text) == names


def reasons(props: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f.property, f.reason) for f in validate(props)]


def test_a_profile_declaring_its_own_name_is_valid() -> None:
    assert reasons({"name": "phoenix-test", "content": PROFILE, "version": "1"}) == []


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_profile_declares_its_file_name(path: Path) -> None:
    assert reasons({"name": path.name, "content": path.read_text()}) == []


def test_a_name_that_does_not_match_the_declared_profile_is_refused_clearly() -> None:
    [(prop, reason)] = reasons({"name": "phoenix-other", "content": PROFILE})
    assert prop == "content"
    assert "'phoenix-other' does not match the profile the text declares (`profile phoenix-test`)" in reason


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "the profile text is empty"),
        ("  \n", "the profile text is empty"),
        (
            "#include <tunables/global>\n",
            "declares no top-level `profile <name>`; expected `profile phoenix-test`",
        ),
        (PROFILE + "profile extra {\n}\n", "declares 2 top-level profiles (phoenix-test, extra)"),
    ],
)
def test_bad_content_is_refused(content: str, expected: str) -> None:
    [(prop, reason)] = reasons({"name": "phoenix-test", "content": content})
    assert prop == "content"
    assert expected in reason


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../passwd", "must be a plain file name"),
        (".hidden", "must be a plain file name"),
        ("a b", "must be a plain file name"),
        ("x" * 129, "must be a plain file name"),
        (7, "must be a plain file name"),
        ("abstractions", "reserved"),
        ("unconfined", "reserved"),
        ("phoenix.dpkg-old", "boot-time loader skips"),
        ("phoenix.orig", "boot-time loader skips"),
    ],
)
def test_bad_names_are_refused(name: object, expected: str) -> None:
    found = reasons({"name": name, "content": PROFILE})
    assert found and found[0][0] == "name" and expected in found[0][1], found


def test_unknowns_pass_check_at_preview_and_missing_inputs_do_not() -> None:
    assert reasons({"name": Unknown(), "content": Unknown()}) == []
    assert reasons({"name": "phoenix-test", "content": Unknown()}) == []
    assert reasons({"name": Unknown(), "content": PROFILE}) == []
    assert reasons({}) == [("name", "name is required"), ("content", "content is required")]
    assert reasons({"name": "phoenix-test", "content": PROFILE, "version": 2.0}) == [
        ("version", "must be a string, got 2.0")
    ]


# --- commands ---------------------------------------------------------------------------------------------


def test_commands_render_as_argv() -> None:
    assert render(load_argv(PATH, "kernel")) == "apparmor_parser -r -W /etc/apparmor.d/phoenix-test"
    assert render(load_argv(PATH, "compile-only")) == "apparmor_parser -Q -K -T /etc/apparmor.d/phoenix-test"
    assert render(UNLOAD_ARGV) == "apparmor_parser -R"
    assert render(remove_argv(PATH)) == "rm -f -- /etc/apparmor.d/phoenix-test"
    argv = read_argv(PATH, "phoenix-test")
    assert argv[:2] == ["sh", "-c"] and argv[-3:] == [PATH, "phoenix-test", KERNEL_PROFILES]


def test_the_read_script_and_its_parser_agree(tmp_path: Path) -> None:
    """The real script under sh, against a stand-in for the kernel's profile list."""
    profile = tmp_path / "phoenix-test"
    profile.write_text(PROFILE)
    kernel = tmp_path / "profiles"
    kernel.write_text(
        "phoenix-test-old (enforce)\nphoenix-test (complain)\nlxc-container-default (enforce)\n"
    )
    run = LocalExecutor().run

    loaded = parse_read(run(read_argv(str(profile), "phoenix-test", str(kernel))).stdout, "phoenix-test")
    gone = parse_read(run(read_argv(str(tmp_path / "nope"), "nope", str(tmp_path / "none"))).stdout, "nope")

    assert loaded == ProfileFacts(sha256=SHA, lsm=True, mode="complain")
    assert gone == ProfileFacts(sha256=None, lsm=False, mode=None)


# --- parsing the read output ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stdout", "facts"),
    [
        (f"file {SHA}\nlsm no\n", ProfileFacts(SHA, False, None)),
        ("file missing\nlsm no\n", ProfileFacts(None, False, None)),
        (f"file {SHA}\nlsm yes\n", ProfileFacts(SHA, True, None)),
        (f"file {SHA}\nlsm yes\nloaded phoenix-test (enforce)\n", ProfileFacts(SHA, True, "enforce")),
        (  # grep -F matched substrings only: other profiles never count
            f"file {SHA}\nlsm yes\nloaded phoenix-test-old (enforce)\nloaded x-phoenix-test (enforce)\n",
            ProfileFacts(SHA, True, None),
        ),
        ("file missing\nlsm yes\nloaded phoenix-test (enforce)\n", ProfileFacts(None, True, "enforce")),
    ],
)
def test_parse_read(stdout: str, facts: ProfileFacts) -> None:
    assert parse_read(stdout, "phoenix-test") == facts


@pytest.mark.parametrize(
    "stdout", ["", "lsm no\n", f"file {SHA}\n", "file nothex\nlsm no\n", f"file {SHA}\nlsm no\nbash: oops\n"]
)
def test_parse_read_refuses_output_it_does_not_recognise(stdout: str) -> None:
    with pytest.raises(ValueError):
        parse_read(stdout, "phoenix-test")


# --- the diff table ---------------------------------------------------------------------------------------

STORED = {
    "name": "phoenix-test",
    "content": PROFILE,
    "version": "1",
    "path": PATH,
    "sha256": SHA,
    "loaded": True,
    "load_simulated": False,
    "__provider": "old-pickle",
}
WANT = {"name": "phoenix-test", "content": PROFILE, "version": "1", "__provider": "new-pickle"}


@pytest.mark.parametrize(
    ("olds", "news", "expect_loaded", "changes", "replaces"),
    [
        (STORED, WANT, True, False, []),  # a new provider pickle alone is no change
        (STORED, {**WANT, "name": "phoenix-new"}, True, True, ["name"]),
        (STORED, {**WANT, "content": PROFILE + "\n"}, True, True, []),
        (STORED, {**WANT, "version": "2"}, True, True, []),
        ({**STORED, "sha256": "0" * 64}, WANT, True, True, []),  # the host file was edited out of band
        ({**STORED, "loaded": False}, WANT, True, True, []),  # kernel mode: not loaded any more, re-load
        ({**STORED, "loaded": False, "load_simulated": True}, WANT, False, False, []),  # compile-only
        (STORED, {**WANT, "content": Unknown()}, True, True, []),  # preview: may change
        (STORED, {**WANT, "name": Unknown()}, True, True, ["name"]),
    ],
)
def test_diff_table(
    olds: dict[str, Any], news: dict[str, Any], expect_loaded: bool, changes: bool, replaces: list[str]
) -> None:
    result = diff_profile(olds, news, expect_loaded=expect_loaded)
    assert (result.changes, result.replaces, result.delete_before_replace) == (changes, replaces, False)


# --- CRUD wiring over a scripted executor -----------------------------------------------------------------


def scripted(answers: Sequence[tuple[Sequence[str], int, str]] = ()) -> ScriptedExecutor:
    """Answers a command with the first scripted ``(argv prefix, exit, output)`` it matches, used up once;
    any other command succeeds with no output. A failing answer's output is its stderr."""
    return ScriptedExecutor(
        [
            Answer(prefix, code, text if code == 0 else "", text if code else "")
            for prefix, code, text in answers
        ],
        strict=False,
    )


TARGET = SshTarget("pve1", 22, "root", "SHA256:" + "A" * 43)


def provider_on(
    fake: ScriptedExecutor, monkeypatch: pytest.MonkeyPatch, mode: str = "kernel"
) -> AppArmorProfileProvider:
    provider = AppArmorProfileProvider(ssh_target=TARGET, load_mode=mode)  # type: ignore[arg-type]
    monkeypatch.setattr(provider, "ssh", lambda: fake)
    return provider


def test_create_uploads_atomically_then_loads_and_reports_every_output(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = scripted()
    result = provider_on(fake, monkeypatch).create(dict(WANT))

    assert [c.argv for c in fake.calls] == [write_file_argv(PATH, 0o644), load_argv(PATH, "kernel")]
    assert fake.calls[0].stdin == PROFILE
    assert result.id == PATH
    assert result.outs == {k: v for k, v in STORED.items() if k != "__provider"}


def test_compile_only_says_the_load_is_simulated(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = scripted()
    outs = provider_on(fake, monkeypatch, "compile-only").create(dict(WANT)).outs or {}

    assert fake.calls[1].argv == ["apparmor_parser", "-Q", "-K", "-T", PATH]
    assert (outs["loaded"], outs["load_simulated"]) == (False, True)


def test_a_refused_profile_fails_create_and_leaves_no_file(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = scripted([(["apparmor_parser"], 1, PARSER_ERROR)])

    with pytest.raises(AppArmorLoadError) as caught:
        provider_on(fake, monkeypatch).create(dict(WANT))

    assert fake.calls[-1].argv == remove_argv(PATH)
    text = str(caught.value)
    assert "pve1: loading AppArmor profile phoenix-test" in text
    assert "`apparmor_parser -r -W /etc/apparmor.d/phoenix-test` exited 1" in text
    assert caught.value.stderr_tail == PARSER_ERROR


def test_a_refused_update_puts_the_previous_text_back(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = scripted([(["apparmor_parser"], 1, PARSER_ERROR)])  # refuses the new text, then accepts
    new_text = PROFILE.replace("/{usr/,}bin/true ix,", "/{usr/,}bin/true ix")

    with pytest.raises(AppArmorLoadError):
        provider_on(fake, monkeypatch).update(PATH, dict(STORED), {**WANT, "content": new_text})

    upload, load = write_file_argv(PATH, 0o644), load_argv(PATH, "kernel")
    assert [c.argv for c in fake.calls] == [upload, load, upload, load]
    assert [c.stdin for c in fake.calls if c.argv == upload] == [new_text, PROFILE]


def test_a_failed_rollback_is_noted_on_the_parsers_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = scripted([(["apparmor_parser"], 1, PARSER_ERROR)])
    provider = provider_on(fake, monkeypatch)
    original = fake.run

    def drop_on_rm(argv: Argv, **kwargs: Any) -> CommandResult:
        if argv[0] == "rm":
            raise SshConnectError("pve1", "connection reset")
        return original(argv, **kwargs)

    monkeypatch.setattr(fake, "run", drop_on_rm)
    with pytest.raises(AppArmorLoadError) as caught:
        provider.create(dict(WANT))
    assert caught.value.__notes__ == [
        "rolling back on pve1 also failed: SshConnectError: pve1: connection reset"
    ]


def test_update_returns_every_output(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = scripted()
    outs = provider_on(fake, monkeypatch).update(PATH, dict(STORED), {**WANT, "version": "2"}).outs
    assert outs == {**{k: v for k, v in STORED.items() if k != "__provider"}, "version": "2"}


def test_delete_unloads_the_stored_text_then_removes_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = scripted()
    provider_on(fake, monkeypatch).delete(PATH, dict(STORED))

    assert [c.argv for c in fake.calls] == [UNLOAD_ARGV, remove_argv(PATH)]
    assert fake.calls[0].stdin == PROFILE


def test_delete_tolerates_a_profile_that_is_not_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    not_loaded = 'apparmor_parser: Unable to remove "phoenix-test".  Profile doesn\'t exist'
    fake = scripted([(UNLOAD_ARGV, 1, not_loaded)])
    provider_on(fake, monkeypatch).delete(PATH, dict(STORED))
    assert fake.calls[-1].argv == remove_argv(PATH)


def test_delete_fails_on_any_other_unload_error_and_keeps_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = scripted([(UNLOAD_ARGV, 1, "apparmor_parser: Access denied. You need policy admin privileges")])
    with pytest.raises(AppArmorLoadError, match="unloading AppArmor profile phoenix-test"):
        provider_on(fake, monkeypatch).delete(PATH, dict(STORED))
    assert [c.argv for c in fake.calls] == [UNLOAD_ARGV]


def test_delete_of_a_compile_only_profile_skips_the_unload(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = scripted()
    provider_on(fake, monkeypatch).delete(PATH, {**STORED, "loaded": False, "load_simulated": True})
    assert [c.argv for c in fake.calls] == [remove_argv(PATH)]


def test_read_reports_gone_and_drift_in_one_command(monkeypatch: pytest.MonkeyPatch) -> None:
    gone = scripted([(["sh"], 0, "file missing\nlsm yes\n")])
    assert provider_on(gone, monkeypatch).read(PATH, dict(STORED)).id is None

    edited = scripted([(["sh"], 0, f"file {'0' * 64}\nlsm yes\n")])
    result = provider_on(edited, monkeypatch).read(PATH, dict(STORED))
    assert len(edited.calls) == 1
    assert result.id == PATH
    outs = result.outs or {}
    assert outs["sha256"] == "0" * 64 and outs["loaded"] is False
    assert outs["content"] == PROFILE  # the stored text stays: the diff compares hashes


def test_check_fills_the_version_and_reports_failures() -> None:
    provider = AppArmorProfileProvider(ssh_target=TARGET)
    checked = provider.check({}, {"name": "phoenix-test", "content": PROFILE})
    assert checked.inputs["version"] == PROVIDER_VERSION and checked.failures == []
    refused = provider.check({}, {"name": "phoenix-x", "content": PROFILE})
    assert [f.property for f in refused.failures] == ["content"]


def test_the_provider_is_plain_data_and_refuses_an_unknown_load_mode() -> None:
    provider = AppArmorProfileProvider(ssh_target=TARGET, load_mode="compile-only")
    restored = dill.loads(base64.b64decode(base64.b64encode(dill.dumps(provider, recurse=True))))
    assert (restored.ssh_target, restored.load_mode) == (TARGET, "compile-only")
    with pytest.raises(ValueError, match="load_mode must be one of kernel, compile-only"):
        AppArmorProfileProvider(ssh_target=TARGET, load_mode="pretend")  # type: ignore[arg-type]


def test_the_resource_registers_its_token_default_version_and_a_by_reference_provider() -> None:
    seen = capture(
        lambda: AppArmorProfile(
            "profile", AppArmorProfileArgs(name="phoenix-test", content=PROFILE), ssh_target=TARGET
        )
    )["profile"]

    assert seen.type == "pulumi-python:dynamic/phoenix:AppArmorProfile"
    assert {k: v for k, v in seen.inputs.items() if k != "__provider"} == {
        "name": "phoenix-test",
        "content": PROFILE,
        "version": PROVIDER_VERSION,
    }
    pickled = base64.b64decode(seen.provider)
    # by reference: no code in state
    assert b"providers.hostfiles.apparmor" in pickled and len(pickled) < 1024
    provider = dill.loads(pickled)
    assert (provider.ssh_target, provider.load_mode) == (TARGET, "kernel")
