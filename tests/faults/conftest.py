"""The fault suite runs on the lab host (tests/lab/host.py), through the real provider host."""

from tests.lab.host import lab_host

__all__ = ["lab_host"]
