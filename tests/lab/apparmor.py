"""Lab fixture `lab_apparmor`: the real `apparmor_parser` and Debian lxc's AppArmor abstractions.

SIMULATED STEP: the lab kernel has no AppArmor LSM, so a profile can be compiled (`-Q`: everything but the
kernel load) but never loaded; `apparmor_parser -r` fails there. Tests that need "loaded" must say that
loading is simulated. Compiling is real: the parser resolves `#include <abstractions/lxc/container-base>`
from /etc/apparmor.d and rejects bad syntax exactly as on a Proxmox host.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.lab.common import LabError
from tests.lab.requirements import require_lab

APPARMOR_D = Path("/etc/apparmor.d")
CONTAINER_BASE = APPARMOR_D / "abstractions" / "lxc" / "container-base"
# The parser prints this on every run when the kernel has no AppArmor; it is noise, not an error.
NO_LSM_NOTICE = "Cache read/write disabled: interface file missing."


@dataclass(frozen=True)
class LabAppArmor:
    """Compile profiles the way the host would, minus the kernel load."""

    base_dir: Path = APPARMOR_D
    """Where `#include <...>` resolves (the parser's -b base directory)."""

    def compile(self, profile: Path) -> subprocess.CompletedProcess[str]:
        """`apparmor_parser -Q -K -T`: compile without loading (-Q), no cache write (-K) or read (-T).

        stderr has the parser's own message on failure, e.g. "AppArmor parser error for <file> in profile
        <file> at line 5: syntax error, ..."; the no-LSM notice is stripped from it.
        """
        argv = ["apparmor_parser", "-Q", "-K", "-T", "-b", str(self.base_dir), str(profile)]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        stderr = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith(NO_LSM_NOTICE))
        return subprocess.CompletedProcess(argv, proc.returncode, proc.stdout, stderr)


@pytest.fixture(scope="session")
def lab_apparmor() -> LabAppArmor:
    """The parser and lxc's abstractions, checked once; skips (fails under CI) when either is missing."""
    require_lab("apparmor_parser", "lxc-start")  # Debian's lxc package ships the abstractions
    if not CONTAINER_BASE.exists():
        raise LabError(f"{CONTAINER_BASE} is missing: install Debian's lxc package (see .ci/run)")
    return LabAppArmor()
