"""The lab secret scan runs on the lab host (tests/lab/host.py)."""

from tests.lab.host import lab_host

__all__ = ["lab_host"]
