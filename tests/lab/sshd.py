"""Lab fixture ``lab_sshd``: a real sshd on 127.0.0.1 for the whole test session (see sshd_server.py).

Skips with the reason when the machine cannot run it (not root, no openssh-server); fails instead under CI
(tests/lab/requirements.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.lab.requirements import require_lab
from tests.lab.sshd_server import LabSshd, serve_sshd

__all__ = ["LabSshd", "lab_sshd"]


@pytest.fixture(scope="session")
def lab_sshd() -> Iterator[LabSshd]:
    """The running lab sshd. Fault tests that stop, kill or re-key it leave it running as they found it."""
    require_lab("sshd", "ssh-keygen")
    with serve_sshd() as sshd:
        yield sshd
