"""HostFile: the read, path rules, the diff, and each CRUD operation over a scripted executor."""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from providers.channels.command import render, sha256_text, write_file_argv
from providers.channels.targets import SshTarget
from providers.hostfiles.host_file import (
    MISSING,
    PROVIDER_VERSION,
    HostFile,
    HostFileArgs,
    HostFileProvider,
    parse_read,
    path_problem,
    read_argv,
)
from tests.support.capture import capture
from tests.support.fakes import Answer, ScriptedExecutor, on

PATH = "/var/lib/vz/snippets/phoenix-231-user-data.yaml"
CONTENT = "#cloud-config\n"
INPUTS = {"path": PATH, "content": CONTENT, "mode": 0o640, "version": PROVIDER_VERSION}
STORED = {**INPUTS, "sha256": sha256_text(CONTENT), "__provider": "pickle"}
TARGET = SshTarget("pve1", 22, "root", "SHA256:" + "A" * 43)


def test_read_is_one_command_and_parses_both_answers() -> None:
    line = render(read_argv("/var/lib/vz/snippets/a b.yaml"))
    assert shlex.split(line)[-1] == "/var/lib/vz/snippets/a b.yaml"
    assert parse_read(f"{sha256_text('x')}  /var/lib/vz/snippets/a.yaml\n") == sha256_text("x")
    assert parse_read("missing\n") == MISSING


def test_paths_must_be_absolute_and_normalised() -> None:
    assert path_problem("/var/lib/vz/snippets/a.yaml") is None
    for bad in ("relative.yaml", "/var/lib/vz/../../etc/shadow", "/var/lib/vz/snippets/"):
        assert path_problem(bad) is not None
    failures = HostFileProvider().check({}, {"path": "/a/../b", "content": "x"}).failures
    assert [f.property for f in failures] == ["path"]
    missing = HostFileProvider().check({}, {"path": 7}).failures
    assert sorted(f.property for f in missing) == ["content", "path"]


def test_new_path_replaces_new_content_updates() -> None:
    props = {"path": "/s/a.yaml", "content": "a", "mode": 0o640}
    provider = HostFileProvider()
    assert provider.diff("x", props, {**props, "path": "/s/b.yaml"}).replaces == ["path"]
    content = provider.diff("x", props, {**props, "content": "b"})
    assert (content.changes, content.replaces) == (True, [])
    checked = provider.check({}, {"path": "/s/a.yaml", "content": "a"}).inputs
    assert checked["mode"] == 0o640 and checked["version"] == PROVIDER_VERSION
    assert provider.diff("x", {**checked, "sha256": sha256_text("a")}, checked).changes is False


def test_create_and_update_write_atomically_in_one_session(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ScriptedExecutor([Answer(write_file_argv(PATH, 0o640))])
    created = on(HostFileProvider(), fake, monkeypatch).create({**INPUTS, "mode": 416.0})  # 0o640 as a double
    assert (created.id, created.outs) == (PATH, {k: v for k, v in STORED.items() if k != "__provider"})
    assert [(c.argv, c.stdin) for c in fake.calls] == [(write_file_argv(PATH, 0o640), CONTENT)]

    fake = ScriptedExecutor([Answer(write_file_argv(PATH, 0o600))])
    updated = on(HostFileProvider(), fake, monkeypatch).update(PATH, STORED, {**INPUTS, "mode": 0o600})
    assert updated.outs is not None and updated.outs["mode"] == 0o600 and fake.done()


@pytest.mark.parametrize(
    ("found", "want"),
    [
        (f"{sha256_text(CONTENT)}  {PATH}\n", {"content": CONTENT}),
        ("ab12  x\n", {"content": "# changed on the host (sha256 ab12)\n", "sha256": "ab12"}),
        ("missing\n", None),
    ],
)
def test_read_reports_the_file_as_the_host_has_it(
    monkeypatch: pytest.MonkeyPatch, found: str, want: dict[str, Any] | None
) -> None:
    fake = ScriptedExecutor([Answer(read_argv(PATH), stdout=found)])
    result = on(HostFileProvider(), fake, monkeypatch).read(PATH, dict(STORED))
    if want is None:
        assert (result.id, result.outs) == (None, {})
    else:
        expected = {k: v for k, v in STORED.items() if k != "__provider"}
        assert (result.id, result.outs) == (PATH, {**expected, **want})


def test_delete_removes_the_stored_path(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ScriptedExecutor([Answer(["rm", "-f", "--", PATH])])
    on(HostFileProvider(), fake, monkeypatch).delete(PATH, dict(STORED))
    assert fake.done()


def test_the_resource_registers_its_inputs_and_declared_outputs() -> None:
    seen = capture(lambda: HostFile("f", HostFileArgs(path=PATH, content=CONTENT), ssh_target=TARGET))["f"]
    assert seen.type == "pulumi-python:dynamic/phoenix:HostFile"
    # the outputs go as None, which the wire leaves out: the provider fills them in
    assert {k: v for k, v in seen.inputs.items() if k != "__provider"} == INPUTS
