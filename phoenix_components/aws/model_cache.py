"""``phoenix models sync``: model files between a local directory and the model-cache bucket, unchanged
files skipped.

A file is unchanged when its size and its sha256 match. Uploads store the sha256 as object metadata
(``x-amz-meta-sha256``), which survives multipart uploads where the ETag stops being an MD5; an object
without it (put there by another tool) is compared by its single-part ETag (the MD5), and otherwise
transferred. Sizes come from one listing; the metadata costs one HEAD per same-sized file only.
Nothing is ever deleted on either side.

boto3 only (no Pulumi); the client is passed in, so tests point it at a moto server.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from phoenix_components.aws.errors import SyncError

SHA256_KEY = "sha256"
CHUNK = 1024 * 1024


@dataclass
class SyncReport:
    direction: Literal["upload", "download"]
    transferred: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        verb = "uploaded" if self.direction == "upload" else "downloaded"
        return f"{verb} {len(self.transferred)}, unchanged {len(self.skipped)}"


@dataclass(frozen=True)
class Remote:
    size: int
    etag: str


def _digests(path: Path) -> tuple[str, str]:
    """(sha256, md5) hex digests of a file, read once."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def key_prefix(prefix: str) -> str:
    """``models/qwen`` and ``models/qwen/`` name the same folder; ``""`` is the whole bucket."""
    return prefix.strip("/") + "/" if prefix.strip("/") else ""


def _local_files(directory: Path) -> Iterator[tuple[str, Path]]:
    """(relative posix path, path) for every regular file below ``directory``, sorted; links are skipped."""
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.is_symlink():
            yield path.relative_to(directory).as_posix(), path


def _remote_files(s3: Any, bucket: str, prefix: str) -> dict[str, Remote]:
    """Relative key -> size and ETag of every object under ``prefix`` (folder markers left out)."""
    found: dict[str, Remote] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            relative = str(item["Key"])[len(prefix) :]
            if relative and not relative.endswith("/"):
                found[relative] = Remote(size=int(item["Size"]), etag=str(item["ETag"]).strip('"'))
    return found


def _same(
    s3: Any, bucket: str, key: str, remote: Remote, local: Path, digests: tuple[str, str] | None
) -> bool:
    """Size first (free); then the stored sha256, or the MD5 ETag of an object Phoenix did not upload."""
    if local.stat().st_size != remote.size:
        return False
    sha, md5 = digests or _digests(local)
    stored = s3.head_object(Bucket=bucket, Key=key).get("Metadata", {}).get(SHA256_KEY)
    if stored is not None:
        return bool(stored == sha)
    return "-" not in remote.etag and remote.etag == md5


def upload(s3: Any, bucket: str, prefix: str, directory: Path) -> SyncReport:
    """Every file below ``directory`` to ``s3://bucket/prefix/<relative path>``, unless already there."""
    if not directory.is_dir():
        raise SyncError(f"{directory}: not a directory")
    prefix = key_prefix(prefix)
    remote = _remote_files(s3, bucket, prefix)
    report = SyncReport("upload")
    for relative, path in _local_files(directory):
        key = prefix + relative
        digests = _digests(path)  # needed either way: to compare, or as the new object's metadata
        if relative in remote and _same(s3, bucket, key, remote[relative], path, digests):
            report.skipped.append(relative)
            continue
        s3.upload_file(str(path), bucket, key, ExtraArgs={"Metadata": {SHA256_KEY: digests[0]}})
        report.transferred.append(relative)
    return report


def _safe_relative(relative: str) -> PurePosixPath:
    """A key's path below the prefix, refused when it would leave the target directory."""
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts or "\\" in relative:
        raise SyncError(f"refusing key {relative!r}: it would write outside the target directory")
    return path


def download(s3: Any, bucket: str, prefix: str, directory: Path) -> SyncReport:
    """Every object under ``s3://bucket/prefix/`` into ``directory``, unless the local copy is the same.

    A file is written to a temporary name beside it and renamed, so an interrupted sync never leaves a
    truncated weight file that looks complete.
    """
    prefix = key_prefix(prefix)
    remote = _remote_files(s3, bucket, prefix)
    report = SyncReport("download")
    targets = {relative: directory.joinpath(*_safe_relative(relative).parts) for relative in remote}
    for relative, target in sorted(targets.items()):
        key = prefix + relative
        if target.is_file() and _same(s3, bucket, key, remote[relative], target, None):
            report.skipped.append(relative)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.phoenix-partial")
        s3.download_file(bucket, key, str(partial))
        os.replace(partial, target)
        report.transferred.append(relative)
    return report
