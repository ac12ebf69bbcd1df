"""The `phoenix` console script: exit codes and output, run in-process and as the installed script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from phoenix_components.cli.main import main
from phoenix_components.render.errors import GpuMinorError
from providers.errors import HostError, MissingCredentialsError, PhoenixError

ROOT = Path(__file__).resolve().parents[2]


def test_validate_reports_every_environment(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--config", str(ROOT / "config")]) == 0
    out = capsys.readouterr().out
    for env in ("dev", "staging", "prod", "lab"):
        assert f"{env}: ok" in out


def test_plan_and_graph_follow_the_stack_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--stack", "prod"]) == 0
    assert "Plan for environment 'prod' on node pve-prod" in capsys.readouterr().out
    assert main(["graph", "--format", "dot", "--stack", "staging"]) == 0
    assert "digraph phoenix" in capsys.readouterr().out


def test_unknown_stack_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--stack", "qa"]) == 2
    assert "Pulumi.qa.yaml: $: no such stack file" in capsys.readouterr().err


def test_preview_without_the_pulumi_cli_says_so_and_shows_the_offline_view(tmp_path: Path) -> None:
    """The README's main command on a machine without the CLI: a clear message, no traceback."""
    script = Path(sys.executable).parent / "phoenix"
    env = {**os.environ, "PATH": str(tmp_path)}  # an empty PATH dir: no `pulumi` anywhere
    assert shutil.which("pulumi", path=env["PATH"]) is None
    proc = subprocess.run(
        [str(script), "preview", "--stack", "dev"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "The Pulumi CLI (`pulumi`) is not on PATH" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "phoenix validate: dev: ok" in proc.stdout
    assert "Plan for environment 'dev'" in proc.stdout
    assert "flowchart LR" in proc.stdout


def test_schema_check_passes_on_the_shipped_schemas(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_plan_of_an_aws_stack_says_what_covers_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--stack", "cloud-dev"]) == 2
    assert "cloud-dev is an AWS environment" in capsys.readouterr().err


def test_output_piped_into_a_reader_that_stops_early_is_not_a_traceback() -> None:
    """`validate` prints a line per environment as it goes; `head -1` leaves after the first."""
    script = Path(sys.executable).parent / "phoenix"
    proc = subprocess.run(
        f"'{script}' validate | head -1", shell=True, cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert proc.stdout.startswith(("dev: ok", "cloud-dev: ok"))
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


def test_a_config_mistake_is_printed_as_invalid_config_with_each_problem(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["validate", "--env", "nowhere", "--config", str(ROOT / "config")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("invalid config (1 problem):\n")
    assert "environments/nowhere: $: no environment 'nowhere'" in err


@pytest.mark.parametrize(
    "error",
    [
        GpuMinorError("GPU 0 is /dev/nvidia1 on the host, host.json gpus declares minor 0"),
        HostError("pve1", "ssh: connection refused"),
        MissingCredentialsError("phoenix:pvePassword: missing; the root@pam login to pve1 needs it"),
    ],
    ids=["render", "host", "secret"],
)
def test_a_runtime_problem_is_not_called_invalid_config(
    error: PhoenixError, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the files cannot be blamed for (a host, an inventory, a secret) exits 1 and says what it is."""

    def fail(_env: object) -> None:
        raise error

    monkeypatch.setattr("phoenix_components.cli.main.build_plan", fail)
    assert main(["plan", "--stack", "dev"]) == 1
    err = capsys.readouterr().err
    assert err == f"phoenix plan: {error}\n"
    assert "invalid config" not in err and "Traceback" not in err
