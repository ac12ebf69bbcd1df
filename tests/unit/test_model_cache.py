"""`phoenix models sync` against moto in server mode: upload, skip unchanged, re-send changed, download."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from phoenix_components.aws.errors import SyncError
from phoenix_components.aws.model_cache import download, upload
from phoenix_components.cli.main import main
from tests.support.moto_server import MotoAws, moto_server

BUCKET = "phoenix-models-test"
PREFIX = "models/qwen"
FILES = {
    "config.json": b'{"architectures": ["Qwen2ForCausalLM"]}',
    "tokenizer.json": b"{}" * 100,
    "weights/model-00001-of-00002.safetensors": bytes(range(256)) * 64,
    "weights/model-00002-of-00002.safetensors": b"\x01" * 5000,
}


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoAws]:
    with moto_server(monkeypatch) as server:
        server.client("s3").create_bucket(Bucket=BUCKET)
        yield server


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    for name, data in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def _uploads(aws: MotoAws) -> int:
    return sum(c in ("PutObject", "CreateMultipartUpload") for c in aws.calls)


def test_upload_sends_every_file_with_its_sha256(aws: MotoAws, model_dir: Path) -> None:
    s3 = aws.client("s3")
    report = upload(s3, BUCKET, PREFIX, model_dir)

    assert sorted(report.transferred) == sorted(FILES) and report.skipped == []
    for name, data in FILES.items():
        head = s3.head_object(Bucket=BUCKET, Key=f"{PREFIX}/{name}")
        assert head["ContentLength"] == len(data)
        assert head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
        assert s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{name}")["Body"].read() == data


def test_a_second_upload_skips_every_unchanged_file(aws: MotoAws, model_dir: Path) -> None:
    upload(aws.client("s3"), BUCKET, PREFIX, model_dir)

    report = upload(aws.client("s3", record=True), BUCKET, f"/{PREFIX}/", model_dir)

    assert report.transferred == [] and sorted(report.skipped) == sorted(FILES)
    assert _uploads(aws) == 0


def test_changed_files_are_sent_again_even_at_the_same_size(aws: MotoAws, model_dir: Path) -> None:
    s3 = aws.client("s3")
    upload(s3, BUCKET, PREFIX, model_dir)
    same_size = model_dir / "weights/model-00002-of-00002.safetensors"
    same_size.write_bytes(b"\x02" * 5000)  # the size alone cannot tell
    (model_dir / "config.json").write_bytes(b"{}")
    (model_dir / "generation_config.json").write_bytes(b'{"temperature": 0.7}')

    report = upload(aws.client("s3", record=True), BUCKET, PREFIX, model_dir)

    assert sorted(report.transferred) == [
        "config.json",
        "generation_config.json",
        "weights/model-00002-of-00002.safetensors",
    ]
    assert _uploads(aws) == 3
    key = f"{PREFIX}/weights/model-00002-of-00002.safetensors"
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"\x02" * 5000


def test_a_multipart_upload_is_recognised_unchanged_by_its_sha256(aws: MotoAws, tmp_path: Path) -> None:
    """Above boto3's 8 MiB threshold the ETag is no MD5; the stored sha256 still identifies the file."""
    big = tmp_path / "big"
    big.mkdir()
    (big / "model.safetensors").write_bytes(b"\x07" * (9 * 1024 * 1024))
    s3 = aws.client("s3")
    upload(s3, BUCKET, PREFIX, big)
    assert "-" in s3.head_object(Bucket=BUCKET, Key=f"{PREFIX}/model.safetensors")["ETag"]

    again = upload(aws.client("s3", record=True), BUCKET, PREFIX, big)
    assert again.skipped == ["model.safetensors"] and _uploads(aws) == 0


def test_download_fetches_then_skips_then_restores_a_changed_file(
    aws: MotoAws, model_dir: Path, tmp_path: Path
) -> None:
    upload(aws.client("s3"), BUCKET, PREFIX, model_dir)
    target = tmp_path / "copy"

    first = download(aws.client("s3"), BUCKET, PREFIX, target)
    assert sorted(first.transferred) == sorted(FILES)
    assert {
        p.relative_to(target).as_posix(): p.read_bytes() for p in target.rglob("*") if p.is_file()
    } == FILES

    second = download(aws.client("s3", record=True), BUCKET, PREFIX, target)
    assert second.transferred == [] and sorted(second.skipped) == sorted(FILES)
    assert "GetObject" not in aws.calls

    (target / "tokenizer.json").write_bytes(b"[]" * 100)  # same size, other content
    third = download(aws.client("s3"), BUCKET, PREFIX, target)
    assert third.transferred == ["tokenizer.json"]
    assert (target / "tokenizer.json").read_bytes() == FILES["tokenizer.json"]
    assert not list(target.rglob("*.phoenix-partial"))


def test_objects_from_other_tools_are_compared_by_their_md5_etag(aws: MotoAws, tmp_path: Path) -> None:
    s3 = aws.client("s3")
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/README.md", Body=b"# Qwen\n")
    target = tmp_path / "copy"
    target.mkdir()
    (target / "README.md").write_bytes(b"# Qwen\n")

    assert download(s3, BUCKET, PREFIX, target).skipped == ["README.md"]
    (target / "README.md").write_bytes(b"# Qwfn\n")
    assert download(s3, BUCKET, PREFIX, target).transferred == ["README.md"]
    assert (target / "README.md").read_bytes() == b"# Qwen\n"


def test_a_key_that_climbs_out_of_the_target_is_refused(aws: MotoAws, tmp_path: Path) -> None:
    s3 = aws.client("s3")
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/../../escape.txt", Body=b"x")
    target = tmp_path / "deep" / "copy"
    with pytest.raises(SyncError, match="would write outside the target directory"):
        download(s3, BUCKET, PREFIX, target)
    assert not list(tmp_path.rglob("escape.txt"))


def test_upload_of_a_missing_directory_is_an_error(aws: MotoAws, tmp_path: Path) -> None:
    with pytest.raises(SyncError, match="not a directory"):
        upload(aws.client("s3"), BUCKET, PREFIX, tmp_path / "absent")


def test_the_cli_syncs_both_ways(
    aws: MotoAws,
    model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint)
    assert main(["models", "sync", "--bucket", BUCKET, "--prefix", PREFIX, str(model_dir)]) == 0
    assert f"s3://{BUCKET}/{PREFIX}/: uploaded 4, unchanged 0" in capsys.readouterr().out
    assert main(["models", "sync", "--bucket", BUCKET, "--prefix", PREFIX, str(model_dir)]) == 0
    assert "uploaded 0, unchanged 4" in capsys.readouterr().out

    target = tmp_path / "copy"
    assert main(["models", "sync", "--download", "--bucket", BUCKET, "--prefix", PREFIX, str(target)]) == 0
    out = capsys.readouterr().out
    assert "download: weights/model-00001-of-00002.safetensors" in out
    assert "downloaded 4, unchanged 0" in out
    assert (target / "config.json").read_bytes() == FILES["config.json"]

    assert main(["models", "sync", "--bucket", "no-such-bucket", str(model_dir)]) == 1
    assert "phoenix models:" in capsys.readouterr().err
