"""Tests that run the real Pulumi CLI (marker ``cli``): the CLI ``make pulumi`` builds, or one on PATH.

Without a CLI they skip, saying how to get one; under CI a missing CLI fails instead (``.ci/run`` builds
it first), so CI never passes by skipping them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.engine import cli_dir


@pytest.fixture(scope="session")
def pulumi_bin() -> Path:
    found = cli_dir()
    if found is None:
        message = "no Pulumi CLI: `make pulumi` builds it (tools/pulumi/build.sh), or put one on PATH"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must build it: .ci/run runs make pulumi)")
        pytest.skip(message)
    return found
