"""The lab's TEST-ONLY stand-in feature scripts: shellcheck-clean, labelled, one per product feature."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.lab.common import REPO_ROOT
from tests.lab.e2e import INCLUDE, STANDIN_FEATURES, standin_text

SCRIPTS = sorted(STANDIN_FEATURES.glob("*.sh"))


def test_there_is_a_stand_in_for_each_product_feature_and_each_says_it_is_test_only() -> None:
    product = sorted(p.name for p in (REPO_ROOT / "config" / "features").glob("*.sh"))
    assert [p.name for p in SCRIPTS] == product
    for script in SCRIPTS:
        assert "TEST-ONLY stand-in" in script.read_text().splitlines()[1], script.name


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: Path(p).name)
def test_stand_in_is_shellcheck_clean(script: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (make lab-deps)")
    proc = subprocess.run([shellcheck, str(script)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: Path(p).name)
def test_stand_in_as_the_lab_runs_it_is_shellcheck_clean(script: Path, tmp_path: Path) -> None:
    """With its `# @include` lines replaced (tests/lab/e2e.py standin_text), as the lab's chain runs it."""
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (make lab-deps)")
    rendered = tmp_path / script.name
    rendered.write_text(standin_text(script.read_text()))
    assert INCLUDE not in rendered.read_text()
    proc = subprocess.run(
        [shellcheck, str(rendered)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_model_server_stand_in_installs_the_labs_systemctl() -> None:
    for name in ("vllm", "ollama", "llamacpp"):
        text = standin_text((STANDIN_FEATURES / f"{name}.sh").read_text())
        assert "cat >/usr/bin/systemctl <<'PY'" in text and "PHOENIX-LAB-STANDIN" in text, name
