"""Lab fixture `lab_rootfs`: a minimal Debian bookworm rootfs, built once by debootstrap and cached.

The cache (`.lab/cache/rootfs-bookworm-py3`) survives test sessions; `make clean` removes it. A build happens
in a temporary directory renamed into place at the end, so an interrupted build never leaves a half rootfs
behind. minbase has bash but no /sbin/init (the lab's containers run `sleep infinity`); python3 is added
(`--include`) because the vLLM stand-in server and Phoenix's health probe inside a guest run on it. The
cache name carries the package set, so a cache built without python3 is never reused.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.common import LAB_DIR, LabError, file_lock, remove_tree, run
from tests.lab.requirements import require_lab

SUITE = "bookworm"
CACHE_DIR = LAB_DIR / "cache"
INCLUDE = ("python3",)
ROOTFS = CACHE_DIR / f"rootfs-{SUITE}-py3"
BUILD_TIMEOUT_S = 900
# Space we never need in a test guest; pruning it makes every copy into a dataset faster.
PRUNE = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/locale",
    "usr/share/info",
    "var/lib/apt/lists",
    "var/cache/apt",
)


def apt_mirror(
    sources_list: Path = Path("/etc/apt/sources.list"), sources_d: Path = Path("/etc/apt/sources.list.d")
) -> str:
    """The Debian mirror this machine already uses (CI can reach only that one); PHOENIX_LAB_MIRROR overrides.

    Reads one-line `deb URI bookworm ...` entries and deb822 `.sources` stanzas; security mirrors are skipped
    because they do not carry the base suite.
    """
    if override := os.environ.get("PHOENIX_LAB_MIRROR"):
        return override
    candidates: list[tuple[str, list[str]]] = []
    if sources_list.exists():
        for line in sources_list.read_text().splitlines():
            fields = re.sub(r"\[[^]]*\]", "", line).split()  # drop `[signed-by=...]` options
            if len(fields) >= 3 and fields[0] == "deb":
                candidates.append((fields[1], [fields[2]]))
    for path in sorted(sources_d.glob("*.sources")) if sources_d.is_dir() else []:
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            keys = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, flags=re.MULTILINE))
            if "deb" in keys.get("Types", "").split():
                candidates.extend(
                    (uri, keys.get("Suites", "").split()) for uri in keys.get("URIs", "").split()
                )
    for uri, suites in candidates:
        if SUITE in suites and "security" not in uri:
            return uri
    raise LabError(
        f"no `{SUITE}` Debian mirror in {sources_list} or {sources_d}/*.sources; set PHOENIX_LAB_MIRROR"
    )


def build_rootfs(target: Path = ROOTFS, mirror: str | None = None) -> Path:
    """Return target, building it first if absent. Safe to call from several sessions at once (file lock)."""
    if target.is_dir():
        return target
    with file_lock(target.with_name(target.name + ".lock"), timeout=BUILD_TIMEOUT_S, what="the rootfs build"):
        if target.is_dir():  # another session built it while we waited
            return target
        for stale in target.parent.glob(target.name + ".tmp-*"):
            remove_tree(stale)
        tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        try:
            argv = [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(INCLUDE)}",
                SUITE,
                str(tmp),
                mirror or apt_mirror(),
            ]
            proc = run(argv, check=False, timeout=BUILD_TIMEOUT_S)
            if proc.returncode != 0:
                log = tmp / "debootstrap" / "debootstrap.log"
                tail = log.read_text().splitlines()[-15:] if log.exists() else proc.stderr.splitlines()[-15:]
                raise LabError(f"debootstrap exited {proc.returncode}:\n" + "\n".join(tail))
            for sub in PRUNE:  # empty the directories but keep them: dpkg and apt expect them to exist
                run(["find", str(tmp / sub), "-xdev", "-mindepth", "1", "-delete"], timeout=300)
            tmp.rename(target)
        finally:
            if tmp.exists():
                remove_tree(tmp)
    return target


@pytest.fixture(scope="session")
def lab_rootfs() -> Iterator[Path]:
    """Path of the cached bookworm minbase rootfs (read-only by convention: copy it, never write into it)."""
    require_lab("debootstrap")
    yield build_rootfs()
