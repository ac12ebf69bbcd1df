"""Hostile names and values: rejected by the config models (naming the field), or quoted exactly once.

Values are generated with shell metacharacters (``;``, ``$()``, backticks, quotes, newlines, spaces, globs).
Where the models refuse a value, the ValidationError names the field; where they accept it, the command
that carries it is an argv list, and ``shlex.split(render(argv)) == argv`` (and a real ``sh`` sees the same
arguments): quoted once, never interpreted. The vLLM unit is checked with systemd's own unquoting rules
(tests/security/readers.py).
"""

from __future__ import annotations

import shlex
import subprocess
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from phoenix_components.config.models import Container, FirewallRule, ServerSection, VllmEngine
from phoenix_components.render.vllm import engine_args, render_unit
from providers.channels.command import render, write_file_argv
from providers.channels.pct import exec_argv, script_argv
from providers.zfs.common import clone_argv, create_argv, destroy_argv, get_argv, snapshot_argv
from tests.security.hostile import METACHARACTERS, env_key
from tests.security.hostile import arg as encodable_arg
from tests.security.readers import environment_words, exec_words, unit_entries

hostile = st.lists(
    st.one_of(
        st.sampled_from(METACHARACTERS), st.text(min_size=1, max_size=4).filter(lambda t: "\x00" not in t)
    ),
    min_size=1,
    max_size=8,
).map("".join)
"""Text built from the shared metacharacters (tests/security/hostile.py) and arbitrary characters, lone
surrogates included, which these pure round-trips can carry (no NUL: argv cannot carry one)."""
words = st.text(st.characters(blacklist_characters="\x00"), min_size=1, max_size=12)
arg = st.one_of(hostile, words)

CONTAINER: dict[str, Any] = {
    "vmid": 301,
    "hostname": "vllm-qwen",
    "layer": "vllm",
    "network": {"ip": "10.0.0.31/24", "gateway": "10.0.0.1"},
}
ENGINE: dict[str, Any] = {
    "model": {"model": "Qwen/Qwen2.5-7B-Instruct"},
    "server": {"served_model_name": "qwen"},
}
HOSTILE_EXAMPLES = ["a;reboot", "$(reboot)", "`reboot`", "a'b", 'a"b', "a\nb", "a b", "-rf", "a|b", "*"]


def round_trips(argv: list[str]) -> None:
    assert shlex.split(render(argv)) == argv


def assert_rejected(error: ValidationError, field: str) -> None:
    fields = {str(part) for problem in error.errors() for part in problem["loc"]}
    assert field in fields, error


# ------------------------------------------------------------------------- rejected by the config models


@pytest.mark.parametrize("value", HOSTILE_EXAMPLES)
@pytest.mark.parametrize("field", ["hostname", "layer", "apparmor_profile"])
def test_hostile_names_are_rejected_naming_the_field(field: str, value: str) -> None:
    with pytest.raises(ValidationError) as raised:
        Container.model_validate({**CONTAINER, field: value})
    assert_rejected(raised.value, field)


@given(value=hostile)
def test_generated_hostnames_are_rejected_unless_plain(value: str) -> None:
    try:
        Container.model_validate({**CONTAINER, "hostname": value})
    except ValidationError as error:
        assert_rejected(error, "hostname")
    else:
        # PVE's dns-name: letters, digits, `-` and `.` only — nothing a shell could read twice
        assert value.isascii() and value.replace("-", "").replace(".", "").isalnum()


@given(value=hostile)
def test_generated_served_model_names_and_dataset_mount_names_are_rejected_unless_plain(value: str) -> None:
    for model, data, field in [
        (ServerSection, {"served_model_name": value}, "served_model_name"),
        (
            Container,
            {**CONTAINER, "mounts": [{"type": "dataset_clone", "path": "/m", "dataset": value}]},
            "dataset",
        ),
    ]:
        try:
            model.model_validate(data)
        except ValidationError as error:
            assert_rejected(error, field)
        else:
            assert not set(value) & set(";$()`'\"\n \t|&<>*?\\#~")


@given(comment=hostile)
def test_firewall_comments_refuse_line_breaks_and_keep_the_rest_verbatim(comment: str) -> None:
    """A comment is an API value for pulumi-proxmoxve, never part of a command line; only what would break
    PVE's firewall file (a newline, a ``#``) is refused."""
    rule = {"direction": "in", "action": "ACCEPT", "comment": comment}
    try:
        accepted = FirewallRule.model_validate(rule)
    except ValidationError as error:
        assert_rejected(error, "comment")
        assert set(comment) & {"\n", "\r", "#"} or len(comment) > 120
    else:
        assert accepted.comment == comment


# ------------------------------------------------------------------------- accepted, and quoted once


@given(argv=st.lists(arg, min_size=1, max_size=6))
def test_render_quotes_every_argument_once(argv: list[str]) -> None:
    round_trips(argv)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)  # a real sh per example
@given(argv=st.lists(encodable_arg, min_size=1, max_size=5))  # a real argv: no lone surrogates
def test_a_real_shell_sees_exactly_the_arguments(argv: list[str]) -> None:
    shown = subprocess.run(
        ["sh", "-c", render(["printf", "%s\\0", *argv])], capture_output=True, check=True, timeout=10
    ).stdout
    assert shown.split(b"\0")[:-1] == [a.encode() for a in argv]


@given(
    vmid=st.integers(100, 999_999_999),
    command=st.lists(arg, min_size=1, max_size=4),
    env=st.dictionaries(env_key, arg, max_size=4),
)
def test_pct_exec_with_hostile_feature_env_round_trips(
    vmid: int, command: list[str], env: dict[str, str]
) -> None:
    argv = exec_argv(vmid, command, env)
    round_trips(argv)
    # The environment stays `K=V` words after `env`: a value can never become an option or a command.
    if env:
        assert argv[4 : 5 + len(env)] == ["env", *(f"{k}={v}" for k, v in sorted(env.items()))]
    round_trips(script_argv(vmid, env))


@given(name=arg, origin=arg, props=st.dictionaries(arg, arg, max_size=3), path=arg)
def test_zfs_and_file_argv_builders_round_trip(
    name: str, origin: str, props: dict[str, str], path: str
) -> None:
    for argv in (
        create_argv(name, props),
        clone_argv(origin, name, props),
        snapshot_argv(name, recursive=True),
        destroy_argv(name),
        get_argv([name, origin], list(props)),
        write_file_argv(path, 0o640),
    ):
        round_trips(argv)


@given(
    extra=st.lists(arg.filter(lambda a: not any(c.isspace() for c in a)), max_size=4),
    served=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True),
    env=st.dictionaries(env_key, arg, max_size=3),
)
def test_the_vllm_unit_quotes_accepted_extra_args_for_systemd(
    extra: list[str], served: str, env: dict[str, str]
) -> None:
    try:
        engine = VllmEngine.model_validate(
            {**ENGINE, "server": {"served_model_name": served}, "extra_args": extra}
        )
    except ValidationError as error:
        assert_rejected(error, "extra_args")
        return
    if any(ord(c) < 0x20 or c == "\x7f" for a in [*env.values(), *extra] for c in a):
        with pytest.raises(ValueError, match="control character"):
            render_unit(engine, environment=env)
        return
    unit = render_unit(engine, environment=env)
    # Read as systemd reads it (tests/security/readers.py): lines end at \n and \r, `\` continues one.
    entries = unit_entries(unit)
    exec_lines = [v for _, k, v in entries if k == "ExecStart"]
    assert len(exec_lines) == 1  # nothing accepted can add a line (a second ExecStart, an ExecStartPre)
    assert exec_words(exec_lines[0]) == engine_args(engine)
    seen: dict[str, str] = {}
    for assignment in (v for _, k, v in entries if k == "Environment"):
        seen.update(environment_words(assignment))
    assert seen == env


def test_extra_args_with_whitespace_are_rejected_naming_the_field() -> None:
    for value in ["--a b", "x\ny", "--flag=\tv"]:
        with pytest.raises(ValidationError) as raised:
            VllmEngine.model_validate({**ENGINE, "extra_args": [value]})
        assert_rejected(raised.value, "extra_args")
