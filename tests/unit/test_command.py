"""The command seam: quoting once, masking secrets, results and errors carrying evidence."""

import shlex
from pathlib import Path

import pytest

from providers.channels.command import Masked, display, mask_text, render, sha256_text, write_file_argv
from providers.errors import CommandTimeoutError, RemoteCommandError, tail
from tests.support.fakes import LocalExecutor


def test_render_quotes_each_argument_exactly_once() -> None:
    argv = ["zfs", "create", "rpool/data/a b", "$(rm -rf /)", "'"]
    assert shlex.split(render(argv)) == argv


def test_masked_argument_is_sent_but_never_displayed() -> None:
    argv = ["pvesh", "set", "--password", Masked("hunter2")]
    assert "hunter2" in render(argv)
    assert "hunter2" not in display(argv)
    assert "hunter2" not in repr(argv)
    assert display(argv).endswith("***")


def test_mask_text_removes_secret_values() -> None:
    assert mask_text("login hunter2 failed", ["hunter2", ""]) == "login *** failed"


def test_render_refuses_an_empty_command() -> None:
    with pytest.raises(ValueError):
        render([])


def test_local_executor_runs_with_stdin_and_reports_evidence() -> None:
    ex = LocalExecutor()
    assert ex.run(["cat"], stdin="hello").stdout == "hello"
    with pytest.raises(RemoteCommandError) as err:
        ex.run(["sh", "-c", "echo first >&2; echo boom >&2; exit 3"])
    assert err.value.exit_status == 3
    assert "boom" in err.value.stderr_tail
    assert "localhost" in str(err.value)


def test_local_executor_timeout_is_typed() -> None:
    with pytest.raises(CommandTimeoutError):
        LocalExecutor().run(["sleep", "5"], timeout=0.2)


def test_write_file_argv_replaces_atomically_with_mode(tmp_path) -> None:
    target = tmp_path / "profile"
    target.write_text("old")
    LocalExecutor().run(write_file_argv(str(target), 0o600), stdin="new contents")
    assert target.read_text() == "new contents"
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in tmp_path.iterdir()] == ["profile"]  # no temp file left behind


def test_tail_keeps_last_non_empty_lines() -> None:
    assert tail("a\nb\n\nc\n", 2) == "b\nc"


def test_sha256_text_is_what_sha256sum_prints_for_the_written_text() -> None:
    import subprocess

    printed = subprocess.run(["sha256sum"], input="é\n".encode(), capture_output=True, check=True).stdout
    assert sha256_text("é\n") == printed.split()[0].decode()


def test_mask_text_masks_the_longest_secret_first() -> None:
    assert mask_text("token abc123 and abc", ["abc", "abc123", None, ""]) == "token *** and ***"


def test_write_file_then_runs_in_the_same_session_once_the_file_is_in_place(tmp_path: Path) -> None:
    target = tmp_path / "unit"
    argv = write_file_argv(str(target), 0o644, then='cat "$1" > "$3"', args=[str(tmp_path / "copy")])
    LocalExecutor().run(argv, stdin="[Unit]\n")
    assert (tmp_path / "copy").read_text() == "[Unit]\n" == target.read_text()
