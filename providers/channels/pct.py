"""``pct`` on the host: the one way into a container's shell (PVE has no API for ``pct exec``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def exec_argv(vmid: int | str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
    """``pct exec VMID -- [env K=V ...] ARGV``; the environment travels as arguments, quoted once."""
    prefix = ["env", *(f"{k}={v}" for k, v in sorted((env or {}).items()))] if env else []
    return ["pct", "exec", str(vmid), "--", *prefix, *argv]


def script_argv(vmid: int | str, env: Mapping[str, str] | None = None) -> list[str]:
    """Run a script given on stdin with bash inside the container (fail-fast is the script's ``set -e``)."""
    return exec_argv(vmid, ["bash", "-s"], env)
