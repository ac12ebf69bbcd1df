"""The PVE password and the SSH private key never appear in state, outputs or logs.

Two scans with canary secrets:

- **mocks, the whole program** (every non-cloud stack; no lab): the secrets arrive as secret stack config
  and as ``PHOENIX_*`` environment variables; no registration's inputs (the pulumi-proxmoxve provider aside,
  where they must stay secret-marked), no pickled dynamic provider (``__provider``, base64-decoded) and no
  stack output may hold them;
- **lab, the real providers under the real Pulumi engine**: a template layer (API + SSH) and a ZFS dataset
  (SSH) go through up, up again, refresh, a failing refresh and destroy; ``pulumi stack export`` as the CLI
  prints it, every file of the file backend (state, history, backups) and of the workspace (the stack's
  config, where the secrets are Pulumi secrets), the pickled providers in the state, every output, the
  engine's own output (which carries what the provider processes print) and the error text are scanned.
  The canaries there are the lab's own: the fake's random root@pam password and the lab user's private
  key, given to the stack as secret config.
"""

from __future__ import annotations

import base64
import binascii
import json
import runpy
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pulumi.automation import CommandError
from pulumi.runtime import rpc

from providers.zfs.dataset import ZfsDataset, ZfsDatasetArgs
from tests.faults.chain import Chain, chain_engine, chain_program, guests
from tests.lab.host import LabHost
from tests.lab.pve import NODE
from tests.mocks.test_program import ROOT, STACKS, run_program, stack_outputs
from tests.support.dynhost import PROVIDER_KEY
from tests.support.engine import Engine
from tests.support.recording import install


def key_lines(private_key: str) -> list[str]:
    """The base64 body lines of a PEM/OpenSSH key: any one of them in the open is a leak."""
    return [line for line in private_key.strip().splitlines() if line and not line.startswith("-----")]


def decoded_pickles(value: Any) -> Iterator[bytes]:
    """Every ``__provider`` (a base64 dill pickle) found at any depth, decoded: a secret pickled into a
    provider would be base64 in the state, invisible to a plain text scan."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == PROVIDER_KEY:
                if isinstance(item, dict) and "plaintext" in item:  # revealed by `export --show-secrets`
                    text = json.loads(item["plaintext"])
                else:
                    text = rpc.unwrap_rpc_secret(item)
                if isinstance(text, str):
                    try:
                        yield base64.b64decode(text, validate=True)
                    except binascii.Error:
                        yield text.encode()
            else:
                yield from decoded_pickles(item)
    elif isinstance(value, list):
        for item in value:
            yield from decoded_pickles(item)


def leaks(text: str | bytes, canaries: list[str]) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [c[:12] + "..." for c in canaries if c.encode() in data]


# --------------------------------------------------------------------------------- the whole program


@pytest.mark.parametrize("stack", STACKS)
def test_no_secret_in_any_registration_pickle_or_output(stack: str, monkeypatch: pytest.MonkeyPatch) -> None:
    password = f"pve-canary-{secrets.token_hex(8)}"
    body = f"ssh-canary-{secrets.token_hex(16)}"
    key = f"-----BEGIN OPENSSH PRIVATE KEY-----\n{body}\n-----END OPENSSH PRIVATE KEY-----"
    token = f"token-canary-{secrets.token_hex(8)}"
    canaries = [password, token, *key_lines(key)]
    # A provider that read these at construction (instead of in configure()) would pickle them.
    monkeypatch.setenv("PHOENIX_PVE_PASSWORD", password)
    monkeypatch.setenv("PHOENIX_SSH_PRIVATE_KEY", key)
    monkeypatch.setenv("PHOENIX_PVE_TOKEN_SECRET", token)
    config = {
        "phoenix:environment": stack,
        "phoenix:pvePassword": password,
        "phoenix:sshPrivateKey": key,
        "phoenix:pveTokenSecret": token,
    }
    monitor = install(stack, config, secret_keys=[k for k in config if k != "phoenix:environment"])
    run_program(lambda: runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__"))

    assert monitor.registrations
    for registration in monitor.registrations:
        inputs = registration.inputs
        if registration.type == "pulumi:providers:proxmoxve":
            for name, value in inputs.items():  # the one place they go, and only as secrets
                if leaks(json.dumps(rpc.unwrap_rpc_secret(value), default=str), canaries):
                    assert rpc.is_rpc_secret(value), f"proxmoxve provider input {name} is not secret"
            continue
        assert leaks(json.dumps(inputs, default=str), canaries) == [], registration.urn
        for pickle in decoded_pickles(inputs):
            assert leaks(pickle, canaries) == [], f"{registration.urn}: a secret pickled into __provider"
    assert leaks(json.dumps(stack_outputs(), default=str), canaries) == []


# ------------------------------------------------------------------------------- the lab, real providers


def stored_files(engine: Engine) -> dict[str, bytes]:
    """Every file the engine keeps for the stack: everything under its root (the file backend's state,
    history, backups and locks; the CLI's home) and the workspace (Pulumi.yaml, the stack's config with
    its sealed secrets). Left out: the gRPC debug logs the test driver asks for (``PULUMI_DEBUG_GRPC``,
    its instrument for counting provider calls), which record Configure's config in the clear, as that
    debug option does for anyone who turns it on."""
    roots = [engine.root, Path(engine.stack.workspace.work_dir)]
    return {
        str(f): f.read_bytes()
        for root in roots
        for f in sorted(root.rglob("*"))
        if f.is_file() and not f.name.startswith("grpc-")
    }


@pytest.mark.lab
@pytest.mark.cli
def test_no_secret_in_state_outputs_or_engine_output(
    lab_host: LabHost, pulumi_bin: Path, tmp_path: Path
) -> None:
    password, private_key = lab_host.pve.password, lab_host.sshd.user_private_key
    canaries = [password, *key_lines(private_key)]
    assert len(password) >= 16 and len(canaries) >= 4
    dataset = f"{lab_host.zpool.data}/sec-{secrets.token_hex(3)}"

    def program() -> dict[str, Any]:
        exports = chain_program(lab_host, Chain(child=False))()
        data = ZfsDataset(
            "data",
            ZfsDatasetArgs(name=dataset, properties={"quota": "64M"}),
            ssh_target=lab_host.ssh_target(),
        )
        return {**exports, "mountpoint": data.mountpoint}

    engine = chain_engine(lab_host, tmp_path / "engine")  # the secrets arrive as secret stack config
    seen: list[str] = []
    for run in (engine.up(program), engine.up(program)):
        seen += [json.dumps(run.outputs, default=str), run.stdout]
    seen.append(json.dumps(engine.refresh(), default=str))
    # A failing call: its error text travels to the user.
    lab_host.pve.fail(
        "GET", f"/nodes/{NODE}/lxc/9100/config", status=500, message="unable to parse value", times=1
    )
    with pytest.raises(CommandError) as raised:
        engine.refresh()
    assert "unable to parse value" in str(raised.value)
    seen.append(str(raised.value))
    exported = engine.export_text()  # `pulumi stack export`, secrets sealed
    assert dataset in exported and "TemplateLayer" in exported  # the real state, both resources in it
    shown = json.loads(engine.cli("stack", "export", "--show-secrets", "--stack", engine.name).stdout)
    pickles = list(decoded_pickles(shown))  # the providers as stored, opened, so sealed ones count too
    before_destroy = stored_files(engine)
    destroyed = engine.destroy()
    seen += [destroyed.stdout, engine.export_text()]
    after_destroy = stored_files(engine)

    # The layer's and the dataset's providers (in inputs and outputs) were scanned too.
    assert {b"TemplateLayerProvider" in p for p in pickles} == {True, False} and len(pickles) == 4
    assert guests(lab_host) == []
    assert any("backend" in path for path in before_destroy), "the file backend's state was scanned"
    texts = [
        ("stack export", exported.encode()),
        *((f"stored {path}", data) for path, data in {**before_destroy, **after_destroy}.items()),
        *((f"seen[{n}]", t.encode()) for n, t in enumerate(seen)),
    ]
    for where, text in texts:
        assert leaks(text, canaries) == [], where
    for pickle in pickles:
        assert leaks(pickle, canaries) == [], "a secret pickled into a provider in state"
