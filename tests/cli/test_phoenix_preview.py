"""``phoenix preview`` (``make preview``) with the real CLI on PATH but no backend yet: it says what to do
(log in, create the stack) and shows the offline view, instead of the CLI's bare login error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cli

ROOT = Path(__file__).resolve().parents[2]


def test_preview_with_the_cli_but_no_backend_says_how_and_shows_the_offline_view(
    pulumi_bin: Path, tmp_path: Path
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")},
        "PATH": f"{pulumi_bin}{os.pathsep}{os.environ['PATH']}",
        "PULUMI_HOME": str(tmp_path / "home"),  # never logged in
        "PULUMI_SKIP_UPDATE_CHECK": "true",
    }
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "phoenix"), "preview", "--stack", "dev"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "`pulumi stack select dev` failed (PULUMI_ACCESS_TOKEN must be set" in proc.stderr
    assert "pulumi stack init dev" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "phoenix validate: dev: ok" in proc.stdout and "flowchart LR" in proc.stdout
