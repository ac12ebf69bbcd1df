"""Up / up again / change / refresh / destroy of a small program whose notes go through the real host."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pulumi
import pulumi_proxmoxve as proxmoxve
import pytest

from tests.support.dynhost import DynHost, ProviderError, is_secret, reveal, secret
from tests.support.example_provider import Note, NoteArgs, read_oplog
from tests.support.harness import CheckFailedError, Drift, Harness

SSH_KEY = "plain-harness-key-77aa"
TOKEN = "plain-harness-token-5e0f"


@dataclass(frozen=True)
class Spec:
    filename: str
    body: str = ""
    exclusive: bool = False
    fail_on: str | None = None
    after: str | None = None
    """Name of an earlier note whose ``sha`` this note's body embeds: a data dependency."""


class Shelf(pulumi.ComponentResource):
    paths: pulumi.Output[dict[str, str]]

    def __init__(
        self,
        name: str,
        root: Path,
        notes: Mapping[str, Spec],
        token: str | None,
        template_url: str | None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("phoenix:test:Shelf", name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        prefix: pulumi.Input[str] = ""
        if template_url is not None:  # a non-dynamic resource: recorded, and a data edge into every note
            template = proxmoxve.download.File(
                f"{name}-template",
                content_type="vztmpl",
                datastore_id="local",
                node_name="pve",
                url=template_url,
                opts=child,
            )
            prefix = template.url.apply(lambda url: f"[{url}] ")
        self.notes: dict[str, Note] = {}
        for key, spec in notes.items():
            body = pulumi.Output.concat(prefix, spec.body)
            if spec.after is not None:
                body = pulumi.Output.concat(body, " after ", self.notes[spec.after].sha)
            args: NoteArgs = {
                "root": str(root),
                "filename": spec.filename,
                "body": body,
                "exclusive": spec.exclusive,
            }
            if spec.fail_on is not None:
                args["fail_on"] = spec.fail_on
            if token is not None:
                args["token"] = pulumi.Output.secret(token)
            self.notes[key] = Note(key, args, child)
        self.paths = pulumi.Output.all(**{k: n.path for k, n in self.notes.items()})
        self.register_outputs({"paths": self.paths})


def shelf(
    root: Path, notes: Mapping[str, Spec], *, token: str | None = None, template_url: str | None = None
) -> Callable[[], dict[str, Any]]:
    """The program, parameterized: what ``__main__.py`` would do for this config."""

    def program() -> dict[str, Any]:
        built = Shelf("shelf", root, notes, token, template_url)
        exports: dict[str, Any] = {"paths": built.paths}
        if token is not None:
            exports["token"] = pulumi.Output.secret(token)
        return exports

    return program


ABC = {"a": Spec("a.txt", "alpha"), "b": Spec("b.txt", "beta", after="a"), "c": Spec("c.txt", "gamma")}


@pytest.fixture(scope="module")
def host() -> Iterator[DynHost]:
    with DynHost(config={"phoenix:sshPrivateKey": secret(SSH_KEY)}) as running:
        yield running


@pytest.fixture
def root(tmp_path: Path) -> Path:
    notes = tmp_path / "notes"
    notes.mkdir()
    return notes


@pytest.fixture
def harness(host: DynHost, tmp_path: Path) -> Harness:
    return Harness(tmp_path / "state.json", host)


def note_files(root: Path) -> set[str]:
    return {p.name for p in root.iterdir() if not p.name.startswith(".")}


def body_on_disk(root: Path, filename: str) -> str:
    return str(json.loads((root / filename).read_text())["body"])


def test_up_creates_and_up_again_changes_nothing(harness: Harness, root: Path) -> None:
    first = harness.up(shelf(root, ABC))
    assert first.counts == {"create": 4}  # the component and three notes
    assert first.op("shelf") == "create"
    assert note_files(root) == {"a.txt", "b.txt", "c.txt"}
    assert first.exports["paths"] == {k: str(root / f"{k}.txt") for k in "abc"}
    b_state = harness.resource("b")
    assert harness.resource("a").urn in b_state.dependencies  # recorded from the data edge
    assert b_state.parent == harness.resource("shelf").urn
    oplog = read_oplog(root)

    again = harness.up(shelf(root, ABC))
    print(f"up again: {again.mutations} mutations, provider calls {dict(again.provider_calls)}")
    assert again.changed == {}
    assert again.counts == {"same": 4}
    assert again.mutations == 0 and again.log == []
    assert again.provider_calls == {"Check": 3, "Diff": 3}
    assert read_oplog(root) == oplog  # the provider itself did nothing
    assert again.exports == first.exports


def test_changed_plain_field_updates_in_place_and_flows_to_dependents(harness: Harness, root: Path) -> None:
    harness.up(shelf(root, ABC))
    a_id = harness.resource("a").id
    report = harness.up(shelf(root, {**ABC, "a": replace(ABC["a"], body="ALPHA")}))
    # b embeds a's sha, so it changes too; c does not.
    assert report.changed == {harness.resource("a").urn: "update", harness.resource("b").urn: "update"}
    assert report.provider_calls["Update"] == 2 and report.provider_calls["Create"] == 0
    assert harness.resource("a").id == a_id
    assert body_on_disk(root, "a.txt") == "ALPHA"
    assert body_on_disk(root, "b.txt") == f"beta after {harness.resource('a').outputs['sha']}"


def test_changed_identity_replaces_create_before_delete(harness: Harness, root: Path) -> None:
    harness.up(shelf(root, ABC))
    urn = harness.resource("a").urn
    report = harness.up(shelf(root, {**ABC, "a": replace(ABC["a"], filename="a2.txt")}))
    assert report.changed == {urn: "replace"}  # same body, same sha: b is untouched
    assert report.replaced == {urn: ("filename",)}
    assert report.log == [("create", urn, str(root / "a2.txt")), ("delete", urn, str(root / "a.txt"))]
    assert [(e["op"], e["filename"]) for e in read_oplog(root)][-2:] == [
        ("create", "a2.txt"),
        ("delete", "a.txt"),
    ]
    assert note_files(root) == {"a2.txt", "b.txt", "c.txt"}
    assert harness.resource("a").id == str(root / "a2.txt")
    assert harness.pending_deletes() == []


def test_exclusive_identity_change_deletes_before_create(harness: Harness, root: Path) -> None:
    notes = {"a": Spec("a.txt", "alpha", exclusive=True)}
    harness.up(shelf(root, notes))
    urn = harness.resource("a").urn
    report = harness.up(shelf(root, {"a": replace(notes["a"], filename="a2.txt")}))
    assert report.log == [("delete", urn, str(root / "a.txt")), ("create", urn, str(root / "a2.txt"))]
    assert note_files(root) == {"a2.txt"}


def test_removed_resource_is_deleted(harness: Harness, root: Path) -> None:
    harness.up(shelf(root, ABC))
    c_urn = harness.resource("c").urn
    report = harness.up(shelf(root, {k: v for k, v in ABC.items() if k != "c"}))
    assert report.changed == {c_urn: "delete"}
    assert note_files(root) == {"a.txt", "b.txt"}
    assert c_urn not in harness.resources()


def test_destroy_deletes_dependents_first_and_leaves_nothing(harness: Harness, root: Path) -> None:
    harness.up(shelf(root, ABC))
    a_urn, b_urn = harness.resource("a").urn, harness.resource("b").urn
    report = harness.destroy()
    assert report.counts == {"delete": 4}
    deleted = [urn for op, urn, _ in report.log]
    assert deleted.index(b_urn) < deleted.index(a_urn)  # b depends on a
    assert note_files(root) == set()
    assert harness.resources() == {} and harness.pending_deletes() == []
    assert harness.up(shelf(root, ABC)).counts == {"create": 4}  # and it starts over cleanly


def test_secrets_stay_sealed_in_state_and_out_of_logs(harness: Harness, host: DynHost, root: Path) -> None:
    report = harness.up(shelf(root, ABC, token=TOKEN))
    a = harness.resource("a")
    assert is_secret(a.inputs["token"]) and is_secret(a.outputs["token"])
    assert reveal(a.outputs["token"]) == TOKEN  # sealed, not lost
    assert not is_secret(a.outputs["body"])
    assert is_secret(report.outputs["token"]) and report.exports["token"] == TOKEN
    stored = json.loads(harness.state_text())
    sealed = next(r for r in stored["resources"] if r["urn"] == a.urn)["inputs"]["token"]
    assert set(sealed) == {"4dabf18193072939515e22adb298388d", "ciphertext"}
    for where, text in {"state": harness.state_text(), "host logs": host.stderr + host.stdout}.items():
        assert TOKEN not in text, where
        assert SSH_KEY not in text, where
    assert harness.up(shelf(root, ABC, token=TOKEN)).changed == {}  # sealing is stable across runs


def test_failed_create_keeps_what_was_done(harness: Harness, root: Path) -> None:
    # c comes after b, so a and b are done before c is even registered.
    broken = {**ABC, "c": replace(ABC["c"], fail_on="create", after="b")}
    with pytest.raises(ProviderError, match="injected failure in create of note c.txt"):
        harness.up(shelf(root, broken))
    assert {urn.rsplit("::", 1)[1] for urn in harness.resources()} == {"shelf", "a", "b"}
    assert note_files(root) == {"a.txt", "b.txt"}
    report = harness.up(shelf(root, ABC))
    assert report.changed == {harness.resource("c").urn: "create"}


def test_invalid_input_fails_check_before_any_mutation(harness: Harness, root: Path) -> None:
    with pytest.raises(CheckFailedError, match="filename: must be a plain"):
        harness.up(shelf(root, {"a": Spec("../escape.txt")}))
    assert read_oplog(root) == []
    assert set(harness.resources()) == {harness.resource("shelf").urn}  # only the component got through


def test_failed_delete_stays_in_state(harness: Harness, root: Path) -> None:
    harness.up(shelf(root, {"a": Spec("a.txt", fail_on="delete"), "b": Spec("b.txt")}))
    a_urn = harness.resource("a").urn
    with pytest.raises(ProviderError, match="injected failure in delete of note a.txt"):
        harness.up(shelf(root, {"b": Spec("b.txt")}))
    assert [r.urn for r in harness.pending_deletes()] == [a_urn]
    assert "a.txt" in note_files(root)


def test_refresh_reports_drift_and_vanished_resources(harness: Harness, root: Path) -> None:
    harness.up(shelf(root, ABC))
    a_urn, c_urn = harness.resource("a").urn, harness.resource("c").urn
    document = json.loads((root / "a.txt").read_text())
    (root / "a.txt").write_text(json.dumps({**document, "body": "edited by hand"}))
    (root / "c.txt").unlink()

    drift = harness.refresh()
    assert drift[a_urn] == Drift("changed", ("body", "sha"))
    assert drift[c_urn] == Drift("gone")
    assert drift[harness.resource("b").urn] == Drift("same")
    assert c_urn not in harness.resources()
    assert harness.resource("a").outputs["body"] == "edited by hand"

    report = harness.up(shelf(root, ABC))  # converges back
    assert report.changed == {a_urn: "update", c_urn: "create"}
    assert body_on_disk(root, "a.txt") == "alpha"


def test_preview_plans_without_mutating(harness: Harness, root: Path) -> None:
    harness.up(shelf(root, ABC))
    state = harness.state_text()
    plan = harness.preview(
        shelf(root, {"a": replace(ABC["a"], body="ALPHA"), "b": ABC["b"], "d": Spec("d.txt", "delta")})
    )
    assert plan.op("a") == "update" and plan.op("d") == "create" and plan.op("c") == "delete"
    assert plan.mutations == 0 and plan.log == []
    assert harness.state_text() == state
    assert note_files(root) == {"a.txt", "b.txt", "c.txt"}


def test_recorded_resources_are_tracked_by_their_inputs(harness: Harness, root: Path) -> None:
    url = "https://example.invalid/debian-12.tar.zst"
    harness.up(shelf(root, ABC, template_url=url))
    template = harness.resource("shelf-template")
    assert not template.dynamic and template.id == "shelf-template-id"
    assert template.inputs["contentType"] == "vztmpl" and template.outputs["url"] == url
    assert harness.up(shelf(root, ABC, template_url=url)).changed == {}
    report = harness.up(shelf(root, ABC, template_url=url.replace("12", "13")))
    assert report.changed == {
        template.urn: "update",
        **{harness.resource(k).urn: "update" for k in "abc"},  # every note embeds the url
    }


def test_program_reads_stack_config_and_secret_config_stays_secret(
    host: DynHost, tmp_path: Path, root: Path
) -> None:
    assert Harness(tmp_path / "default.json", host).config == host.config  # one stack config, as the engine

    def program() -> None:
        config = pulumi.Config()
        Note("n", {"root": str(root), "filename": "n.txt", "body": config.require("greeting")})
        Note("s", {"root": str(root), "filename": "s.txt", "token": config.require_secret("noteToken")})

    harness = Harness(
        tmp_path / "state.json", host, config={"phoenix:greeting": "hi", "phoenix:noteToken": secret(TOKEN)}
    )
    harness.up(program)
    assert body_on_disk(root, "n.txt") == "hi"
    assert is_secret(harness.resource("s").inputs["token"])
    assert TOKEN not in harness.state_text()


def test_failed_create_after_delete_before_replace_forgets_the_deleted_original(
    harness: Harness, root: Path
) -> None:
    notes = {"a": Spec("a.txt", exclusive=True)}
    harness.up(shelf(root, notes))
    with pytest.raises(ProviderError, match="injected failure in create of note a2.txt"):
        harness.up(shelf(root, {"a": replace(notes["a"], filename="a2.txt", fail_on="create")}))
    assert note_files(root) == set()
    assert [u.rsplit("::", 1)[1] for u in harness.resources()] == ["shelf"]
    assert harness.up(shelf(root, {"a": replace(notes["a"], filename="a2.txt")})).op("a") == "create"
