"""ComposeStack: the exact commands Phoenix sends into a guest (LXC through ``pct exec``, a VM through
``qm guest exec``), the env file, ``ps`` parsing and drift, and each CRUD operation over a scripted
executor (tests/support/fakes.ScriptedExecutor, a TEST-ONLY stand-in for the host's SSH)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from providers.channels.command import CommandResult, sha256_text, write_file_argv
from providers.channels.steps import plan_lines
from providers.errors import RemoteCommandError
from providers.guests.compose_stack import (
    DOWN,
    PROVIDER_VERSION,
    RUNNING,
    STATUS,
    ComposeStackError,
    ComposeStackInputs,
    ComposeStackProvider,
    deploy_steps,
    down_argv,
    drift,
    env_text,
    observed,
    parse_ps,
    ps_argv,
    status_argv,
    unwrap,
    up_argv,
)
from tests.support.fakes import ANY, Answer, ScriptedExecutor, on

COMPOSE = "services:\n  web:\n    image: nginx\n  db:\n    image: postgres\n"
SECRET = "s3cr3t-value"
DIR = "/opt/phoenix/stacks/apps"


def props(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "node": "pve1",
        "vmid": 810,
        "project": "apps",
        "compose": COMPOSE,
        "compose_file": "compose.yaml",
        "environment": {"LOG_LEVEL": "info"},
        "secrets": {"DB_PASSWORD": SECRET},
        "services": ["web", "db"],
        "content_key": "0123456789abcdef",
        "wait_timeout_s": 120,
        "guest_kind": "lxc",
        "state": RUNNING,
        "guest_instance": "inst-1",
        "guest_name": "apps-ct",
        "version": PROVIDER_VERSION,
    }
    return {**base, **over}


def inputs(**over: Any) -> ComposeStackInputs:
    return ComposeStackInputs.from_props(props(**over))


def ps_lines(**states: str) -> str:
    return "\n".join(json.dumps({"Service": s, "State": st, "Health": ""}) for s, st in states.items())


COMPOSE_ARGS = [
    "docker",
    "compose",
    "-p",
    "apps",
    "-f",
    f"{DIR}/compose.yaml",
    "--env-file",
    f"{DIR}/phoenix.env",
]


def test_up_is_compose_up_wait_with_its_deadline_through_pct_exec() -> None:
    assert up_argv(inputs()) == [
        "pct", "exec", "810", "--",
        *COMPOSE_ARGS, "up", "-d", "--wait", "--wait-timeout", "120", "--remove-orphans",
    ]  # fmt: skip


def test_ps_status_and_down_argv_for_a_container() -> None:
    assert ps_argv(inputs()) == ["pct", "exec", "810", "--", *COMPOSE_ARGS, "ps", "--all", "--format", "json"]
    assert status_argv(inputs()) == [
        "pct", "exec", "810", "--",
        "sh", "-c", STATUS, "phoenix-stack-status", DIR, "compose.yaml", "phoenix.env",
    ]  # fmt: skip
    assert down_argv(inputs()) == [
        "pct", "exec", "810", "--",
        "sh", "-c", DOWN, "phoenix-stack-down", DIR, "compose.yaml", "phoenix.env", "apps",
    ]  # fmt: skip


def test_a_vm_gets_the_same_commands_through_qm_guest_exec() -> None:
    vm = inputs(guest_kind="qemu", vmid=231)
    assert up_argv(vm) == [
        "qm", "guest", "exec", "231", "--pass-stdin", "1", "--timeout", "180", "--",
        *COMPOSE_ARGS, "up", "-d", "--wait", "--wait-timeout", "120", "--remove-orphans",
    ]  # fmt: skip
    assert deploy_steps(vm)[1].argv == [
        "qm", "guest", "exec", "231", "--pass-stdin", "1", "--timeout", "60", "--",
        *write_file_argv(f"{DIR}/compose.yaml", 0o644),
    ]  # fmt: skip


def test_qm_guest_exec_json_becomes_the_commands_own_result() -> None:
    vm = inputs(guest_kind="qemu")
    answer = json.dumps({"exited": 1, "exitcode": 3, "out-data": "out", "err-data": "boom"})
    result = unwrap(vm, CommandResult("pve1", "qm ...", 0, answer, "", 0.1))
    assert (result.exit_status, result.stdout, result.stderr) == (3, "out", "boom")
    late = unwrap(vm, CommandResult("pve1", "qm ...", 0, json.dumps({"pid": 812, "exited": 0}), "", 30.0))
    assert late.exit_status == 124 and "no exit within its --timeout" in late.stderr
    plain = CommandResult("pve1", "pct ...", 0, answer, "", 0.1)
    assert unwrap(inputs(), plain) is plain  # pct exec passes the exit code through itself


def test_the_down_script_takes_what_is_there_and_removes_the_directory(tmp_path: Any) -> None:
    """The real script under sh, with a TEST-ONLY `docker` on PATH that prints its arguments."""
    import subprocess

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text('#!/bin/sh\necho "docker $*"\n')
    (bin_dir / "docker").chmod(0o755)
    stack = tmp_path / "stack"
    stack.mkdir()
    (stack / "compose.yaml").write_text(COMPOSE)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    run = subprocess.run(
        ["sh", "-c", DOWN, "x", str(stack), "compose.yaml", "phoenix.env", "apps"],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    assert run.stdout.strip() == f"docker compose -p apps -f {stack}/compose.yaml down --remove-orphans"
    assert not stack.exists()
    gone = subprocess.run(
        ["sh", "-c", DOWN, "x", str(stack), "compose.yaml", "phoenix.env", "apps"],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    assert gone.stdout.strip() == "docker compose -p apps down --remove-orphans"  # by project name alone


def test_env_file_quotes_values_and_holds_the_secrets_only_there() -> None:
    assert env_text(inputs()) == f"DB_PASSWORD='{SECRET}'\nLOG_LEVEL='info'\n"
    steps = deploy_steps(inputs())
    assert [s.stdin for s in steps].count(env_text(inputs())) == 1
    shown = "\n".join(line for _channel, line in plan_lines(steps, compact=True))
    shown += "\n".join(line for _channel, line in plan_lines(steps))
    assert SECRET not in shown
    assert "1 plain values, 1 secrets, never shown" in shown
    assert all(SECRET not in " ".join(s.argv) for s in steps)


def test_ps_parsing_reads_json_lines_and_the_older_array() -> None:
    lines = ps_lines(web="running", db="exited")
    array = json.dumps([{"Service": "web", "State": "running", "Health": "unhealthy"}])
    assert parse_ps(lines) == {"web": "running", "db": "exited"}
    assert parse_ps(array) == {"web": "running (unhealthy)"}
    two = "\n".join(json.dumps({"Service": "web", "State": s}) for s in ("running", "restarting"))
    assert parse_ps(two) == {"web": "restarting"}  # one replica down: the service is not running
    assert parse_ps("no json here") == {}


def test_drift_names_each_service_not_running_or_missing() -> None:
    assert drift(["web", "db"], {"web": "running", "db": "running"}) == RUNNING
    assert drift(["web", "db"], {"web": "exited"}) == "web exited; db missing"


def test_observed_reports_edits_and_stopped_services_and_none_when_gone() -> None:
    stored = {**props(), "compose_sha256": sha256_text(COMPOSE)}
    shas = f"{sha256_text(COMPOSE)}\n{sha256_text(env_text(inputs()))}\n"
    same = observed(stored, shas, {"web": "running", "db": "running"})
    assert same is not None and same["state"] == RUNNING and same["compose"] == COMPOSE
    edited = observed(stored, f"{'a' * 64}\n{'b' * 64}\n", {"web": "running", "db": "exited"})
    assert edited is not None
    assert edited["state"] == "db exited; compose.yaml edited; phoenix.env edited"
    assert edited["compose"].startswith("# edited in the guest")
    assert observed(stored, "missing\nmissing\n", {}) is None


def test_diff_updates_on_content_and_drift_and_replaces_on_identity() -> None:
    provider = ComposeStackProvider()
    old = {**props(), "compose_sha256": sha256_text(COMPOSE)}
    assert not provider.diff("810/apps", old, props()).changes
    assert provider.diff("810/apps", old, props(secrets={"DB_PASSWORD": "other"})).changes
    drifted = {**old, "state": "db exited"}
    assert provider.diff("810/apps", drifted, props()).changes
    moved = provider.diff("810/apps", old, props(vmid=811))
    assert moved.replaces == ["vmid"] and moved.delete_before_replace  # its ports are free for the new one
    assert provider.diff("810/apps", old, props(compose=COMPOSE + "#\n")).replaces == []


def test_check_refuses_a_secret_the_env_file_cannot_carry_without_showing_it() -> None:
    failures = ComposeStackProvider().check({}, props(secrets={"DB_PASSWORD": "it's"})).failures
    assert [f.property for f in failures] == ["secrets"]
    assert "DB_PASSWORD" in failures[0].reason and "it's" not in failures[0].reason


def deploy_script(up_exit: int = 0, up_out: str = "", ps: str = "") -> list[Answer]:
    return [
        Answer(["pct", "exec", "810", "--", "mkdir", "-p", "-m", "0700", DIR]),
        Answer(["pct", "exec", "810", "--", *write_file_argv(f"{DIR}/compose.yaml", 0o644)]),
        Answer(["pct", "exec", "810", "--", *write_file_argv(f"{DIR}/phoenix.env", 0o600)]),
        Answer(["pct", "exec", "810", "--", *COMPOSE_ARGS, "up"], up_exit, "", up_out),
        *([Answer(["pct", "exec", "810", "--", *COMPOSE_ARGS, "ps"], 0, ps)] if up_exit == 0 else []),
    ]


def test_create_writes_both_files_runs_up_and_records_each_service(monkeypatch: pytest.MonkeyPatch) -> None:
    ssh = ScriptedExecutor(deploy_script(ps=ps_lines(web="running", db="running")))
    result = on(ComposeStackProvider(), ssh, monkeypatch).create(props())
    assert ssh.done()
    assert result.id == "810/apps"
    assert result.outs["service_states"] == {"web": "running", "db": "running"}
    assert result.outs["compose_sha256"] == sha256_text(COMPOSE)
    assert [c.stdin for c in ssh.calls[1:3]] == [COMPOSE, env_text(inputs())]
    empty = ScriptedExecutor(deploy_script(ps=ps_lines(web="running", db="running")))
    on(ComposeStackProvider(), empty, monkeypatch).create(props(environment={}, secrets={}))
    # No variables: the env file is empty, but still sent (and so closed): `cat` must not wait for more.
    assert empty.calls[2].stdin == ""
    assert ssh.calls[3].timeout == 240  # Compose's --wait-timeout, then qm's margin, then SSH's


def test_a_failed_first_up_is_a_typed_error_with_compose_output_masked_and_the_stack_taken_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    output = f"container apps-db-1 is unhealthy\npassword {SECRET} refused"
    down = Answer(["pct", "exec", "810", "--", "sh", "-c", DOWN])
    ssh = ScriptedExecutor([*deploy_script(up_exit=1, up_out=output), down])
    with pytest.raises(ComposeStackError) as caught:
        on(ComposeStackProvider(), ssh, monkeypatch).create(props())
    assert ssh.done()
    error = caught.value
    assert error.exit_status == 1 and "apps-db-1 is unhealthy" in error.output_tail
    assert SECRET not in str(error) and "***" in str(error)
    assert "CT 810 (apps-ct)" in str(error)


def test_up_that_leaves_a_service_exited_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    ssh = ScriptedExecutor(deploy_script(ps=ps_lines(web="running", db="exited")), strict=False)
    with pytest.raises(ComposeStackError, match="db exited"):
        on(ComposeStackProvider(), ssh, monkeypatch).update("810/apps", props(), props())


def test_read_reports_drift_and_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    stored = {**props(), "compose_sha256": sha256_text(COMPOSE)}
    shas = f"{sha256_text(COMPOSE)}\n{sha256_text(env_text(inputs()))}\n"
    ssh = ScriptedExecutor(
        [
            Answer(["pct", "exec", "810", "--", "sh", "-c", STATUS], 0, shas),
            Answer(["pct", "exec", "810", "--", *COMPOSE_ARGS, "ps"], 0, ps_lines(web="running")),
        ]
    )
    read = on(ComposeStackProvider(), ssh, monkeypatch).read("810/apps", stored)
    assert read.id == "810/apps" and read.outs["state"] == "db missing"
    gone = ScriptedExecutor(
        [Answer(["pct", "exec"], 255, "", "Configuration file 'nodes/pve1/lxc/810.conf' does not exist")]
    )
    assert on(ComposeStackProvider(), gone, monkeypatch).read("810/apps", stored).id is None


def test_delete_runs_down_and_tolerates_a_guest_that_went_first(monkeypatch: pytest.MonkeyPatch) -> None:
    ssh = ScriptedExecutor([Answer(["pct", "exec", "810", "--", "sh", "-c", DOWN, ANY, DIR])])
    on(ComposeStackProvider(), ssh, monkeypatch).delete("810/apps", props())
    assert ssh.done()
    gone = ScriptedExecutor(
        [Answer(["pct"], 255, "", "Configuration file 'nodes/pve1/lxc/810.conf' does not exist")]
    )
    on(ComposeStackProvider(), gone, monkeypatch).delete("810/apps", props())
    broken = ScriptedExecutor([Answer(["pct"], 1, "", f"compose down failed near {SECRET}")])
    with pytest.raises(RemoteCommandError) as caught:
        on(ComposeStackProvider(), broken, monkeypatch).delete("810/apps", props())
    assert SECRET not in str(caught.value)
