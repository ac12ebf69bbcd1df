"""The AWS layer's errors: what boto3 work meets at run time (never a config mistake)."""

from __future__ import annotations

from providers.errors import PhoenixError


class BackendError(PhoenixError):
    """The state bucket cannot be bootstrapped (taken by another account, wrong region, access denied)."""


class SyncError(PhoenixError):
    """A key that cannot be a local path, or a directory that is not there."""
