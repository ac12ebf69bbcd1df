"""`phoenix backend bootstrap` against moto in server mode (real HTTP), every setting read back with boto3."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from phoenix_components.aws.backend import bootstrap, parse_s3_url, report
from phoenix_components.aws.errors import BackendError
from phoenix_components.cli.main import main
from tests.support.moto_server import ACCOUNT, MotoAws, moto_server

BUCKET = "phoenix-state-test"
MUTATIONS = ("CreateBucket", "PutPublicAccessBlock", "PutBucketOwnershipControls", "PutBucketVersioning")


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoAws]:
    with moto_server(monkeypatch) as server:
        yield server


def _settings(s3: Any, bucket: str) -> dict[str, Any]:
    """What S3 says about the bucket, read independently of the code under test."""
    encryption = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    return {
        "location": s3.get_bucket_location(Bucket=bucket)["LocationConstraint"],
        "versioning": s3.get_bucket_versioning(Bucket=bucket).get("Status"),
        "public_access": s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"],
        "ownership": s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"],
        "sse": [r["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] for r in encryption],
    }


SAFE = {
    "versioning": "Enabled",
    "public_access": {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    },
    "ownership": [{"ObjectOwnership": "BucketOwnerEnforced"}],
    "sse": ["AES256"],
}


def test_bootstrap_creates_a_private_versioned_encrypted_bucket(aws: MotoAws) -> None:
    s3 = aws.client("s3", region="eu-west-1")
    result = bootstrap(s3, aws.client("sts"), BUCKET, "eu-west-1")

    assert result.changes == [
        f"created s3://{BUCKET} in eu-west-1",
        "blocked all public access",
        "disabled ACLs (bucket owner enforced)",
        "enabled versioning",
        "enabled default encryption (SSE-S3)",
    ]
    assert _settings(aws.client("s3"), BUCKET) == {"location": "eu-west-1", **SAFE}
    assert result.login == f"pulumi login 's3://{BUCKET}?region=eu-west-1&awssdk=v2'"


def test_a_second_bootstrap_changes_nothing_and_says_so(aws: MotoAws) -> None:
    bootstrap(aws.client("s3"), aws.client("sts"), BUCKET, "us-east-1")
    aws.calls.clear()

    again = bootstrap(aws.client("s3", record=True), aws.client("sts"), BUCKET, "us-east-1")

    assert again.changes == []
    assert aws.calls, "the second run must still read every setting"
    assert not [c for c in aws.calls if c.startswith(("Create", "Put", "Delete"))]
    assert "nothing to change" in report(again)
    assert _settings(aws.client("s3"), BUCKET) == {"location": None, **SAFE}


def test_bootstrap_repairs_only_the_settings_that_drifted(aws: MotoAws) -> None:
    s3 = aws.client("s3")
    bootstrap(s3, aws.client("sts"), BUCKET, "us-east-1")
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Suspended"})
    s3.put_public_access_block(
        Bucket=BUCKET,
        PublicAccessBlockConfiguration={**SAFE["public_access"], "RestrictPublicBuckets": False},
    )

    repaired = bootstrap(s3, aws.client("sts"), BUCKET, "us-east-1")

    assert repaired.changes == ["blocked all public access", "enabled versioning"]
    assert _settings(s3, BUCKET) == {"location": None, **SAFE}


def test_a_bucket_of_another_account_is_refused_and_left_alone(
    aws: MotoAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Real S3 denies another account's bucket (and ExpectedBucketOwner guards one that allows us in);
    # moto allows cross-account access unless told not to.
    monkeypatch.setenv("MOTO_S3_ALLOW_CROSSACCOUNT_ACCESS", "false")
    theirs = aws.client("s3", account="111111111111")
    theirs.create_bucket(Bucket=BUCKET)

    with pytest.raises(BackendError, match=f"s3://{BUCKET} exists but is not owned by account {ACCOUNT}"):
        bootstrap(aws.client("s3", record=True), aws.client("sts"), BUCKET, "us-east-1")

    assert not [c for c in aws.calls if c in MUTATIONS]
    assert theirs.get_bucket_versioning(Bucket=BUCKET).get("Status") is None


def test_a_bucket_in_another_region_is_an_error_naming_it(aws: MotoAws) -> None:
    aws.client("s3", region="eu-west-1").create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    with pytest.raises(BackendError, match="is in eu-west-1, not us-east-1; pass --region eu-west-1"):
        bootstrap(aws.client("s3"), aws.client("sts"), BUCKET, "us-east-1")


def test_the_cli_prints_the_login_line_and_is_idempotent(
    aws: MotoAws, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint)  # boto3's own switch, as a user would set it

    assert main(["backend", "bootstrap", f"s3://{BUCKET}", "--region", "us-east-1"]) == 0
    first = capsys.readouterr().out
    assert f"created s3://{BUCKET} in us-east-1" in first
    assert first.rstrip().endswith(f"pulumi login 's3://{BUCKET}?region=us-east-1&awssdk=v2'")

    assert main(["backend", "bootstrap", f"s3://{BUCKET}/", "--region", "us-east-1"]) == 0
    second = capsys.readouterr().out
    assert "already private, versioned and encrypted: nothing to change" in second
    assert "created" not in second


def test_the_cli_reports_errors_in_one_line(
    aws: MotoAws, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint)
    assert main(["backend", "bootstrap", f"s3://{BUCKET}/state"]) == 1
    err = capsys.readouterr().err
    assert (
        err == f"phoenix backend: s3://{BUCKET}/state: expected s3://BUCKET (a bucket, without a key path)\n"
    )


@pytest.mark.parametrize(("url", "bucket"), [("s3://b-1", "b-1"), ("s3://b-1/", "b-1")])
def test_parse_s3_url(url: str, bucket: str) -> None:
    assert parse_s3_url(url) == bucket


@pytest.mark.parametrize("url", ["b-1", "https://b-1", "s3://", "s3://b/key"])
def test_parse_s3_url_refuses_what_is_not_a_bucket(url: str) -> None:
    with pytest.raises(BackendError):
        parse_s3_url(url)
