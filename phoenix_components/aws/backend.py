"""``phoenix backend bootstrap s3://BUCKET``: the S3 bucket Pulumi keeps its state in, made safe once.

State holds every resource's inputs and outputs, so the bucket is private (all four public-access blocks,
ACLs disabled), versioned (a bad ``pulumi up`` or a deleted checkpoint can be rolled back) and encrypted
at rest (SSE-S3). Bootstrapping is a convergence: each setting is read first and written only when it
differs, so a second run changes nothing and says so. A bucket that exists but is not the caller's
account's is refused, never adopted.

boto3 only (no Pulumi): the bucket must exist before any stack can log in to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from phoenix_components.aws.errors import BackendError

VERSIONING = {"Status": "Enabled"}
PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
ENCRYPTION = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}
OWNERSHIP = {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
ENCRYPTED_WITH = frozenset({"AES256", "aws:kms", "aws:kms:dsse"})  # a stronger choice already made stays


@dataclass
class Bootstrap:
    bucket: str
    region: str
    changes: list[str] = field(default_factory=list)

    @property
    def login(self) -> str:
        """What to run next. The region is part of the URL so the backend never depends on a profile."""
        return f"pulumi login 's3://{self.bucket}?region={self.region}&awssdk=v2'"


def parse_s3_url(url: str) -> str:
    """``s3://my-state -> my-state``; a key path or another scheme is an error, not silently dropped."""
    if not url.startswith("s3://"):
        raise BackendError(f"{url}: expected s3://BUCKET")
    bucket = url.removeprefix("s3://").rstrip("/")
    if not bucket or "/" in bucket:
        raise BackendError(f"{url}: expected s3://BUCKET (a bucket, without a key path)")
    return bucket


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _read(call: Any, missing: str, **kwargs: Any) -> dict[str, Any] | None:
    """A get_bucket_* call, or None when S3 says the setting was never made (``missing`` error code)."""
    try:
        response: dict[str, Any] = call(**kwargs)
    except ClientError as error:
        if _code(error) == missing:
            return None
        raise
    return response


def _ensure_exists(s3: Any, bucket: str, region: str, account: str) -> bool:
    """True when the bucket was created. Raises BackendError when it is someone else's or elsewhere."""
    try:
        s3.head_bucket(Bucket=bucket, ExpectedBucketOwner=account)
    except ClientError as error:
        code = _code(error)
        if code in ("403", "AccessDenied", "Forbidden"):
            raise BackendError(
                f"s3://{bucket} exists but is not owned by account {account} (or it denies you access); "
                "choose another bucket name"
            ) from None
        if code not in ("404", "NoSuchBucket", "NotFound"):
            raise
    else:
        return False
    config = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    try:
        s3.create_bucket(Bucket=bucket, **config)
    except ClientError as error:
        if _code(error) == "BucketAlreadyExists":  # taken between the check and the create
            raise BackendError(f"s3://{bucket} is taken by another account; choose another name") from None
        raise
    return True


def bootstrap(s3: Any, sts: Any, bucket: str, region: str) -> Bootstrap:
    """Converge ``bucket`` to a private, versioned, encrypted state bucket; report what changed."""
    account = str(sts.get_caller_identity()["Account"])
    result = Bootstrap(bucket=bucket, region=region)
    if _ensure_exists(s3, bucket, region, account):
        result.changes.append(f"created s3://{bucket} in {region}")
    else:
        location = s3.get_bucket_location(Bucket=bucket, ExpectedBucketOwner=account)["LocationConstraint"]
        actual = location or "us-east-1"  # S3 reports us-east-1 as no constraint
        if actual != region:
            raise BackendError(f"s3://{bucket} is in {actual}, not {region}; pass --region {actual}")
    owned = {"Bucket": bucket, "ExpectedBucketOwner": account}

    block = _read(s3.get_public_access_block, "NoSuchPublicAccessBlockConfiguration", **owned)
    if block is None or block["PublicAccessBlockConfiguration"] != PUBLIC_ACCESS_BLOCK:
        s3.put_public_access_block(PublicAccessBlockConfiguration=PUBLIC_ACCESS_BLOCK, **owned)
        result.changes.append("blocked all public access")

    controls = _read(s3.get_bucket_ownership_controls, "OwnershipControlsNotFoundError", **owned)
    if controls is None or controls["OwnershipControls"] != OWNERSHIP:
        s3.put_bucket_ownership_controls(OwnershipControls=OWNERSHIP, **owned)
        result.changes.append("disabled ACLs (bucket owner enforced)")

    if s3.get_bucket_versioning(**owned).get("Status") != "Enabled":
        s3.put_bucket_versioning(VersioningConfiguration=VERSIONING, **owned)
        result.changes.append("enabled versioning")

    encryption = _read(s3.get_bucket_encryption, "ServerSideEncryptionConfigurationNotFoundError", **owned)
    rules = (encryption or {}).get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
    algorithms = {r.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm") for r in rules}
    if not algorithms & ENCRYPTED_WITH:
        s3.put_bucket_encryption(ServerSideEncryptionConfiguration=ENCRYPTION, **owned)
        result.changes.append("enabled default encryption (SSE-S3)")
    return result


def report(result: Bootstrap) -> str:
    lines = [f"  {change}" for change in result.changes] or [
        f"  s3://{result.bucket} is already private, versioned and encrypted: nothing to change"
    ]
    return "\n".join([f"state backend s3://{result.bucket} ({result.region}):", *lines, "", result.login, ""])
