"""The AWS subcommands of ``phoenix``; unlike the rest of the CLI they call AWS (credentials as boto3 finds
them: environment, profile, instance role; ``AWS_ENDPOINT_URL`` points them at another S3, e.g. moto).

phoenix backend bootstrap s3://BUCKET [--region R]              the Pulumi state bucket, made safe once
phoenix models sync --bucket B [--prefix P] [--download] DIR    model files to (or from) the cache bucket
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from phoenix_components.aws import backend, model_cache
from providers.errors import PhoenixError

EXIT_FAILED = 1


def _session(region: str | None) -> Any:
    import boto3  # only these commands need it; `phoenix validate` stays quick to start

    return boto3.session.Session(region_name=region)


def _bootstrap(args: argparse.Namespace) -> int:
    bucket = backend.parse_s3_url(args.url)
    session = _session(args.region)
    region = session.region_name or "us-east-1"
    result = backend.bootstrap(
        session.client("s3", region_name=region), session.client("sts", region_name=region), bucket, region
    )
    print(backend.report(result), end="")
    return 0


def _sync(args: argparse.Namespace) -> int:
    s3 = _session(args.region).client("s3")
    move = model_cache.download if args.download else model_cache.upload
    report = move(s3, args.bucket, args.prefix, args.directory)
    for name in report.transferred:
        print(f"{report.direction}: {name}")
    print(f"s3://{args.bucket}/{model_cache.key_prefix(args.prefix)}: {report}")
    return 0


def _guarded(run: Any) -> Any:
    """AWS and Phoenix errors become one line on stderr and exit 1, not a traceback."""

    def wrapper(args: argparse.Namespace) -> int:
        try:
            code: int = run(args)
        except (PhoenixError, ClientError, BotoCoreError) as error:
            print(f"phoenix {args.command}: {error}", file=sys.stderr)
            return EXIT_FAILED
        return code

    return wrapper


def register(sub: Any) -> None:
    """Add ``backend`` and ``models`` to the ``phoenix`` subcommands (``sub`` from add_subparsers)."""
    backend_cmd = sub.add_parser("backend", help="the Pulumi state backend on S3")
    backend_sub = backend_cmd.add_subparsers(dest="action", required=True)
    boot = backend_sub.add_parser("bootstrap", help="create/converge a private, versioned, encrypted bucket")
    boot.add_argument("url", help="s3://BUCKET")
    boot.add_argument("--region", help="AWS region (default: the profile's, else us-east-1)")
    boot.set_defaults(run=_guarded(_bootstrap))

    models_cmd = sub.add_parser("models", help="the model-cache bucket")
    models_sub = models_cmd.add_subparsers(dest="action", required=True)
    sync = models_sub.add_parser("sync", help="upload DIR (or --download into it), skipping unchanged files")
    sync.add_argument("directory", type=Path, metavar="DIR")
    sync.add_argument("--bucket", required=True)
    sync.add_argument("--prefix", default="", help="key prefix, e.g. models/qwen2.5-7b")
    sync.add_argument("--download", action="store_true", help="bucket -> DIR instead of DIR -> bucket")
    sync.add_argument("--region", help="AWS region (default: the profile's)")
    sync.set_defaults(run=_guarded(_sync))
