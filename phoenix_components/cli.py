"""`phoenix`: the offline companion to the Pulumi CLI.

Only ``preview`` exists so far: it runs ``pulumi preview`` when the Pulumi CLI is installed and says
clearly when it is not. ``validate``, ``graph`` and ``plan`` arrive with the config models (issue 2).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence

NO_CLI = (
    "The Pulumi CLI (`pulumi`) is not on PATH, so `pulumi preview` cannot run here.\n"
    "Install it from https://www.pulumi.com/docs/install/ on a machine that can reach the internet,\n"
    "then run `make preview STACK={stack}` again."
)


def _preview(stack: str) -> int:
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        print(NO_CLI.format(stack=stack), file=sys.stderr)
        return 3
    env = {**os.environ, "PULUMI_PYTHON_CMD": sys.executable}
    return subprocess.run([pulumi, "preview", "--stack", stack], env=env, check=False).returncode


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="phoenix", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    preview = sub.add_parser("preview", help="pulumi preview, or a clear message when the CLI is missing")
    preview.add_argument("--stack", default="dev")
    args = parser.parse_args(argv)
    if args.command == "preview":
        return _preview(args.stack)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
