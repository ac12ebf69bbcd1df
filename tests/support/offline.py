"""Run ``phoenix validate`` with every network connection and process spawn recorded and refused.

Used by the config-corpus tests as ``python -m tests.support.offline DIR ENV [DIR ENV ...]`` (one process
for the whole corpus). The audit hook is installed before Phoenix is imported, so an import that reached
for the network would be caught too. Prints one JSON line per run: exit code, stderr and the attempts.
``--probe`` makes a connection and a process on purpose, to prove the hook sees them.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from typing import Any

BLOCKED = (
    "socket.connect",
    "socket.getaddrinfo",
    "socket.sendto",
    "subprocess.Popen",
    "os.system",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
)
attempts: list[str] = []


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event in BLOCKED:
        attempts.append(f"{event} {args!r:.200}")
        raise PermissionError(f"offline check: {event} refused")


def _probe() -> None:
    import socket
    import subprocess

    with contextlib.suppress(PermissionError), socket.socket() as sock:
        sock.connect(("127.0.0.1", 9))
    with contextlib.suppress(PermissionError):
        subprocess.run(["true"], check=False)


def main(argv: list[str]) -> int:
    sys.addaudithook(_hook)
    if argv == ["--probe"]:
        _probe()
        print(json.dumps({"attempts": attempts}))
        return 0
    from phoenix_components.cli.main import main as phoenix

    for config_dir, env in zip(argv[::2], argv[1::2], strict=True):
        attempts.clear()
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = phoenix(["validate", "--config", config_dir, "--env", env])
        print(
            json.dumps({"config": config_dir, "exit": code, "stderr": err.getvalue(), "attempts": attempts})
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
