"""HostFile's pure parts: the read, path rules, the diff."""

from __future__ import annotations

import shlex

from providers.channels.command import render
from providers.hostfiles.host_file import (
    MISSING,
    HostFileProvider,
    parse_read,
    path_problem,
    read_argv,
    sha256,
)


def test_read_is_one_command_and_parses_both_answers() -> None:
    line = render(read_argv("/var/lib/vz/snippets/a b.yaml"))
    assert shlex.split(line)[-1] == "/var/lib/vz/snippets/a b.yaml"
    assert parse_read(f"{sha256('x')}  /var/lib/vz/snippets/a.yaml\n") == sha256("x")
    assert parse_read("missing\n") == MISSING


def test_paths_must_be_absolute_and_normalised() -> None:
    assert path_problem("/var/lib/vz/snippets/a.yaml") is None
    for bad in ("relative.yaml", "/var/lib/vz/../../etc/shadow", "/var/lib/vz/snippets/"):
        assert path_problem(bad) is not None
    failures = HostFileProvider().check({}, {"path": "/a/../b", "content": "x"}).failures
    assert [f.property for f in failures] == ["path"]


def test_new_path_replaces_new_content_updates() -> None:
    props = {"path": "/s/a.yaml", "content": "a", "mode": 0o640}
    provider = HostFileProvider()
    assert provider.diff("x", props, {**props, "path": "/s/b.yaml"}).replaces == ["path"]
    content = provider.diff("x", props, {**props, "content": "b"})
    assert (content.changes, content.replaces) == (True, [])
    checked = provider.check({}, {"path": "/s/a.yaml", "content": "a"}).inputs
    assert provider.diff("x", {**checked, "sha256": sha256("a")}, checked).changes is False
