"""Every malformed config in tests/config_corpus gets exit 2 and `file: json.path: message`, offline.

Each case is a small edit of the shipped dev config (set / delete / replace text / replace with raw
bytes / remove a file / write a new file) and the lines the user must see. All cases run in one child
process whose audit hook refuses any socket or process: validation must never reach for the host.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORPUS = sorted((ROOT / "tests/config_corpus").glob("*.json"))
TOKEN = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


def _steps(path: str) -> list[str | int]:
    return [int(index) if index else key for key, index in TOKEN.findall(path)]


def _container(doc: Any, path: str) -> tuple[Any, str | int]:
    *parents, last = _steps(path)
    for step in parents:
        doc = doc[step]
    return doc, last


def apply_edits(config_dir: Path, edits: list[dict[str, Any]]) -> None:
    for edit in edits:
        target = config_dir / edit["file"]
        if edit.get("remove"):
            target.unlink()
        elif "write" in edit:  # a new file (a stack's Compose file), its directories made
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(edit["write"])
        elif "replace_bytes" in edit:  # text -> raw bytes (hex), for files that are not UTF-8
            old, new_hex = edit["replace_bytes"]
            data = target.read_bytes()
            assert old.encode() in data, f"case edit does not apply: {old!r} not in {edit['file']}"
            target.write_bytes(data.replace(old.encode(), bytes.fromhex(new_hex), 1))
        elif "replace" in edit:
            old, new = edit["replace"]
            text = target.read_text()
            assert old in text, f"case edit does not apply: {old!r} not in {edit['file']}"
            target.write_text(text.replace(old, new, 1))
        else:
            doc = json.loads(target.read_text())
            parent, key = _container(doc, edit.get("set") or edit["delete"])
            if "delete" in edit:
                del parent[key]
            elif isinstance(parent, list) and key == len(parent):
                parent.append(edit["value"])
            else:
                parent[key] = edit["value"]
            target.write_text(json.dumps(doc, indent=2))


def _run_offline(*args: str) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.support.offline", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return [json.loads(line) for line in proc.stdout.splitlines()]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    args: list[str] = []
    for case_file in CORPUS:
        case = json.loads(case_file.read_text())
        work = tmp_path_factory.mktemp(case_file.stem)
        shutil.copytree(ROOT / "config", work / "config")
        shutil.copytree(ROOT / "apparmor", work / "apparmor")
        apply_edits(work / "config", case["edits"])
        args += [str(work / "config"), case["environment"]]
    pristine = tmp_path_factory.mktemp("pristine")
    shutil.copytree(ROOT / "config", pristine / "config")
    shutil.copytree(ROOT / "apparmor", pristine / "apparmor")
    args += [str(pristine / "config"), "dev"]
    runs = _run_offline(*args)
    return {Path(run["config"]).parent.name.rstrip("0123456789"): run for run in runs}


def test_the_corpus_is_large_and_every_mistake_distinct() -> None:
    cases = [json.loads(p.read_text()) for p in CORPUS]
    assert len(cases) >= 30
    assert len({c["mistake"] for c in cases}) == len(cases)
    assert len({json.dumps(c["edits"], sort_keys=True) for c in cases}) == len(cases)


@pytest.mark.parametrize("case_file", CORPUS, ids=[p.stem for p in CORPUS])
def test_malformed_config_is_refused_with_file_and_path(case_file: Path, results: dict[str, Any]) -> None:
    case = json.loads(case_file.read_text())
    run = results[case_file.stem]
    assert run["exit"] == 2, run["stderr"]
    for line in case["expect"]:
        assert line in run["stderr"], f"expected {line!r} in:\n{run['stderr']}"
    assert run["attempts"] == [], "validation must not touch the network or run commands"


def test_the_shipped_config_passes_offline(results: dict[str, Any]) -> None:
    run = results["pristine"]
    assert (run["exit"], run["attempts"]) == (0, []), run["stderr"]


def test_the_offline_hook_really_sees_connections_and_processes() -> None:
    """Control for the cases above: without it, `attempts == []` could be a hook that sees nothing."""
    (probe,) = _run_offline("--probe")
    events = [a.split()[0] for a in probe["attempts"]]
    assert "socket.connect" in events
    assert "subprocess.Popen" in events
