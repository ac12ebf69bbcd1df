"""The test driver of the real engine (tests/support/engine.py), on a file-backed example provider.

These pin down what the lab tests rely on: the engine's change summary and step events, refresh drift,
create-before-delete order of a replacement, destroy, and secrets sealed in ``pulumi stack export``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pulumi
import pytest

from tests.support.engine import Engine
from tests.support.example_provider import Note, read_oplog

pytestmark = pytest.mark.cli

SSH_KEY = "plain-engine-key-31c7"
TOKEN = "plain-engine-token-9d2e"


def notes(root: Path, bodies: dict[str, str], *, token: bool = False) -> Callable[[], None]:
    def program() -> None:
        for filename, body in bodies.items():
            args = {"root": str(root), "filename": filename, "body": body}
            if token:
                args["token"] = pulumi.Output.secret(TOKEN)
            note = Note(f"note-{filename}", args)  # type: ignore[arg-type]
            pulumi.export(filename, note.sha)

    return program


@pytest.fixture
def engine(pulumi_bin: Path, tmp_path: Path) -> Engine:
    files = tmp_path / "files"
    files.mkdir()
    return Engine(
        tmp_path / "engine",
        "test",
        program=notes(files, {}),
        secrets={"phoenix:sshPrivateKey": SSH_KEY},
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[2])},  # the example provider's module
        bin_dir=pulumi_bin,
    )


def test_up_again_is_no_change_and_an_edit_is_one_update(engine: Engine, tmp_path: Path) -> None:
    files = tmp_path / "files"
    first = engine.up(notes(files, {"a": "one", "b": "two"}))
    assert first.summary == {"create": 3}  # two notes and the stack
    assert (files / "a").exists() and (files / "b").exists()

    again = engine.up()
    print(f"\nsecond up: engine change summary {again.summary}, changes {again.changes}")
    assert again.changes == 0 and again.summary == {"same": 3}
    assert again.provider_mutations == 0 and again.provider_calls["Diff"] == 2  # asked, and nothing to do
    assert first.provider_calls["Create"] == 2
    assert engine.preview(expect_no_changes=True) == {"same": 3}

    edited = engine.up(notes(files, {"a": "one!", "b": "two"}))
    assert {urn.rsplit("::", 1)[-1]: op for urn, op in edited.changed.items()} == {"note-a": "update"}
    assert [e["op"] for e in read_oplog(files)] == ["create", "create", "update"]


def test_refresh_names_the_drifted_output_and_a_deleted_resource(engine: Engine, tmp_path: Path) -> None:
    files = tmp_path / "files"
    engine.up(notes(files, {"a": "one", "b": "two"}))
    document = json.loads((files / "a").read_text())
    (files / "a").write_text(json.dumps({**document, "body": "edited by hand"}))
    (files / "b").unlink()

    drift = {urn.rsplit("::", 1)[-1]: d for urn, d in engine.refresh().items()}

    assert drift["note-b"].kind == "gone"
    assert drift["note-a"].kind == "changed" and "body" in drift["note-a"].changed


def test_a_replacement_creates_the_new_before_deleting_the_old(engine: Engine, tmp_path: Path) -> None:
    files = tmp_path / "files"
    engine.up(notes(files, {"a": "one"}))

    def renamed() -> None:  # same resource name, new identity (filename): a replacement
        Note("note-a", {"root": str(files), "filename": "a2", "body": "one"})

    report = engine.up(renamed)

    steps = [op for op, urn in report.steps if urn.endswith("::note-a")]
    assert steps == ["create-replacement", "replace", "delete-replaced"]  # the engine's own three steps
    assert report.ops[next(u for u in report.ops if u.endswith("::note-a"))] == "replace"
    assert [e["op"] for e in read_oplog(files)][-2:] == ["create", "delete"]
    assert (files / "a2").exists() and not (files / "a").exists()


def test_secrets_are_sealed_in_the_export_and_destroy_removes_everything(
    engine: Engine, tmp_path: Path
) -> None:
    files = tmp_path / "files"
    engine.up(notes(files, {"a": "one"}, token=True))

    exported = engine.export_text()
    assert TOKEN not in exported and SSH_KEY not in exported
    assert "ciphertext" in exported  # the secret is there, sealed

    report = engine.destroy()
    assert report.summary == {"delete": 2}
    assert not (files / "a").exists()
    assert engine.resources() == {}
