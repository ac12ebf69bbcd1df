"""The scripted executor the providers' CRUD tests stand on: it must fail a test that runs the wrong
command, and answer the right one as scripted."""

from __future__ import annotations

import pytest

from providers.channels.command import Masked
from providers.errors import RemoteCommandError
from tests.support.fakes import ANY, Answer, ScriptedExecutor


def test_strict_answers_in_order_and_fails_an_unexpected_or_extra_command() -> None:
    fake = ScriptedExecutor([Answer(["zfs", "get"], stdout="x\n"), Answer(["sh", "-c", ANY, "phoenix-read"])])
    assert fake.run(["zfs", "get", "-H", "rpool/a"]).stdout == "x\n"
    assert fake.run(["sh", "-c", "any script", "phoenix-read", "/p"], stdin="s", timeout=5).ok
    assert fake.done() and fake.calls[1].stdin == "s" and fake.calls[1].timeout == 5
    with pytest.raises(AssertionError, match="unscripted command"):
        fake.run(["true"])
    wrong = ScriptedExecutor([Answer(["zfs", "destroy"])])
    with pytest.raises(AssertionError, match="expected a command starting"):
        wrong.run(["zfs", "create", "rpool/a"])


def test_a_failing_answer_raises_unless_unchecked_and_secrets_stay_masked_in_the_shown_line() -> None:
    fake = ScriptedExecutor([Answer(["login"], 1, stderr="denied\n"), Answer(["login"], 1)])
    with pytest.raises(RemoteCommandError, match="denied") as caught:
        fake.run(["login", Masked("hunter2")])
    assert "hunter2" not in str(caught.value) and fake.argvs[0] == ["login", "hunter2"]
    assert fake.run(["login"], check=False).exit_status == 1


def test_loose_mode_answers_the_first_match_once_and_anything_else_succeeds_empty() -> None:
    fake = ScriptedExecutor([Answer(["apparmor_parser"], 1, stderr="syntax\n")], strict=False)
    assert fake.run(["sh", "-c", "write"]).stdout == ""
    assert fake.run(["apparmor_parser", "-r", "/p"], check=False).exit_status == 1
    assert fake.run(["apparmor_parser", "-r", "/p"]).ok  # used up
    assert fake.argvs == [
        ["sh", "-c", "write"],
        ["apparmor_parser", "-r", "/p"],
        ["apparmor_parser", "-r", "/p"],
    ]
