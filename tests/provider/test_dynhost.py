"""The example provider through the real dynamic-provider host process, RPC by RPC."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dill
import grpc
import pulumi
import pytest

from tests.support.capture import Registration, capture
from tests.support.dynhost import PROVIDER_KEY, UNKNOWN, DynHost, ProviderError, is_secret, reveal, secret
from tests.support.example_provider import Note, NoteProvider, fingerprint, read_oplog

SSH_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nplain-test-key-4c1d\n-----END OPENSSH PRIVATE KEY-----"
TOKEN = "tok-plain-93be"


@pytest.fixture(scope="module")
def host() -> Iterator[DynHost]:
    # One provider host for the module, as one engine run has one; the key arrives as secret config.
    with DynHost(config={"phoenix:sshPrivateKey": secret(SSH_KEY)}) as running:
        yield running


def note(root: Path, name: str = "n", **args: Any) -> Registration:
    """What the engine would receive for one Note: captured from a mocks run of its constructor."""
    inputs = {"root": str(root), "filename": f"{name}.txt", **args}
    return capture(lambda: Note(name, inputs))[name]


def created(host: DynHost, reg: Registration) -> tuple[str, dict[str, Any]]:
    checked = host.check(reg.urn, {}, reg.inputs)
    assert checked.failures == ()
    return host.create(reg.urn, checked.inputs)


def test_full_lifecycle(host: DynHost, tmp_path: Path) -> None:
    reg = note(tmp_path, body="one")
    checked = host.check(reg.urn, {}, reg.inputs)
    assert checked.failures == ()
    assert checked.inputs["version"] == "1"  # the provider's defaults are filled in by check
    assert checked.inputs[PROVIDER_KEY] == reg.provider

    id_, outs = host.create(reg.urn, checked.inputs)
    path = tmp_path / "n.txt"
    assert id_ == str(path)
    assert json.loads(path.read_text())["body"] == "one"
    assert outs["path"] == str(path) and outs["body"] == "one" and len(outs["sha"]) == 64
    assert outs[PROVIDER_KEY] == reg.provider  # the host stores the provider with the outputs

    assert host.read(id_, reg.urn, outs) == host.read(id_, reg.urn, outs)
    assert host.read(id_, reg.urn, outs).outputs == outs

    news = host.check(reg.urn, checked.inputs, {**reg.inputs, "body": "two"}).inputs
    diff = host.diff(id_, reg.urn, outs, news, checked.inputs)
    assert (diff.changes, diff.replaces) == (True, ())
    assert host.diff(id_, reg.urn, outs, checked.inputs).changes is False

    updated = host.update(id_, reg.urn, outs, news, checked.inputs)
    assert json.loads(path.read_text())["body"] == "two"
    assert updated["body"] == "two" and updated["sha"] != outs["sha"] and updated["path"] == str(path)

    host.delete(id_, reg.urn, updated)  # from stored outputs alone
    assert not path.exists()
    assert [e["op"] for e in read_oplog(tmp_path)] == ["create", "update", "delete"]


def test_identity_change_asks_for_replacement(host: DynHost, tmp_path: Path) -> None:
    reg = note(tmp_path)
    id_, outs = created(host, reg)
    moved = host.check(reg.urn, reg.inputs, {**reg.inputs, "filename": "m.txt"}).inputs
    assert host.diff(id_, reg.urn, outs, moved).replaces == ("filename",)
    assert host.diff(id_, reg.urn, outs, moved).delete_before_replace is False
    exclusive = host.check(reg.urn, reg.inputs, {**reg.inputs, "filename": "m.txt", "exclusive": True}).inputs
    assert host.diff(id_, reg.urn, outs, exclusive).delete_before_replace is True


def test_pickled_provider_is_a_reference_and_round_trips(tmp_path: Path) -> None:
    provider = note(tmp_path).provider
    blob = base64.b64decode(provider)
    # By reference: module and class name, no bytecode, so code edits do not change state.
    assert b"tests.support.example_provider" in blob and b"NoteProvider" in blob
    assert len(provider) < 400
    restored = dill.loads(blob)
    assert isinstance(restored, NoteProvider)
    assert restored._credentials is None


def test_credentials_reach_the_provider_only_through_configure(host: DynHost, tmp_path: Path) -> None:
    reg = note(tmp_path)
    id_, outs = created(host, reg)
    # The provider saw the key that came from secret config: its fingerprint is in the file it wrote.
    assert json.loads(Path(id_).read_text())["credential_fingerprint"] == fingerprint(SSH_KEY)
    leaks = {
        "pickled provider": base64.b64decode(reg.provider).decode(errors="replace"),
        "outputs": json.dumps(reveal(outs)),
        "host stderr": host.stderr,
        "host stdout": host.stdout,
    }
    for where, text in leaks.items():
        assert "plain-test-key" not in text, where


def test_secret_input_reaches_the_provider_plain_and_comes_back_marked(host: DynHost, tmp_path: Path) -> None:
    reg = note(tmp_path, token=pulumi.Output.secret(TOKEN))
    assert is_secret(reg.inputs["token"])
    id_, outs = created(host, reg)
    assert json.loads(Path(id_).read_text())["token_fingerprint"] == fingerprint(TOKEN)
    assert is_secret(outs["token"]) and reveal(outs["token"]) == TOKEN  # the engine's annotateSecrets
    assert not is_secret(outs["body"])
    assert TOKEN not in host.stderr + host.stdout


def test_provider_exception_surfaces_with_its_message(host: DynHost, tmp_path: Path) -> None:
    reg = note(tmp_path, fail_on="create")
    with pytest.raises(ProviderError) as caught:
        created(host, reg)
    err = caught.value
    assert err.method == "Create" and err.code == grpc.StatusCode.UNKNOWN
    assert (
        err.message == "tests.support.example_provider.NoteFailure: injected failure in create of note n.txt"
    )
    assert "Traceback" in err.details
    assert not (tmp_path / "n.txt").exists()


def test_check_failures_name_the_property(host: DynHost, tmp_path: Path) -> None:
    reg = note(tmp_path, fail_on="sometimes")
    result = host.check(reg.urn, {}, {**reg.inputs, "filename": ".hidden"})
    assert dict(result.failures).keys() == {"filename", "fail_on"}


def test_unknowns_at_preview_are_tolerated(host: DynHost, tmp_path: Path) -> None:
    reg = note(tmp_path)
    id_, outs = created(host, reg)
    preview = {**reg.inputs, "filename": UNKNOWN, "body": UNKNOWN}
    checked = host.check(reg.urn, reg.inputs, preview)
    assert checked.failures == ()
    assert checked.inputs["filename"] == UNKNOWN and checked.inputs["body"] == UNKNOWN
    diff = host.diff(id_, reg.urn, outs, checked.inputs)
    assert diff.changes is True and diff.replaces == ("filename",)


def test_read_of_a_vanished_resource_says_gone(host: DynHost, tmp_path: Path) -> None:
    reg = note(tmp_path)
    id_, outs = created(host, reg)
    Path(id_).unlink()
    gone = host.read(id_, reg.urn, outs)
    assert gone.id == "" and gone.outputs == {PROVIDER_KEY: reg.provider}


def test_host_outside_the_project_cannot_import_the_provider(tmp_path: Path) -> None:
    # What happens when the engine starts the host elsewhere: the by-reference pickle does not load.
    reg = note(tmp_path)
    with (
        DynHost(cwd=tmp_path, pythonpath=(), env={"PYTHONPATH": ""}) as stranger,
        pytest.raises(ProviderError, match="No module named 'tests'"),
    ):
        stranger.check(reg.urn, {}, reg.inputs)


def test_credentials_can_come_from_the_host_environment(tmp_path: Path) -> None:
    # Local tooling and the lab pass PHOENIX_* variables to the provider host instead of stack config.
    reg = note(tmp_path)
    with DynHost(env={"PHOENIX_SSH_PRIVATE_KEY": "env-key-19f2"}) as env_host:
        id_, _ = created(env_host, reg)
    assert json.loads(Path(id_).read_text())["credential_fingerprint"] == fingerprint("env-key-19f2")
