"""Adopting what already runs (issue 15, points 1, 2, 4), end to end on the lab under the real engine.

Two containers are made on the lab's fakepve through the API, as a person would in the web UI
(``POST /nodes/{node}/lxc`` from the OS template, then a start: the lab's glue makes them real LXC
containers on real ZFS datasets). ``phoenix import --from-host --stack lab`` (the real command, as a
subprocess, its credentials from the stack's secret config through the Pulumi CLI) writes their entries;
they go into the environment's guests.json as they came out, and the real program adopts them:

- the import reads only: fakepve received no POST/PUT/DELETE but the client's login, and the lab's sshd
  (its TEST-ONLY ForceCommand recorder) ran nothing but ``cat /etc/pve/lxc/<vmid>.conf``;
- the first ``up`` takes them into state with no clone, no create and no restart (fakepve's request log
  names no mutation of either vmid: the one write, the AppArmor raw line PVE's default profile already
  applies, goes to the config file over SSH);
- the second ``up`` changes nothing;
- a declared change (memory) sends that key alone, in one PUT;
- a change that needs a new container in place of a kept one (a layer for an adopted guest) is refused
  at preview, before anything reaches the host;
- removing them from guests.json: the one with the default ``retain_on_delete`` (adopted: keep) still runs,
  the one declared ``retain_on_delete: false`` is stopped and destroyed.

The stack's chain is the product's base layer only, and no guest here runs on it, so the stack builds no
layer (adoption needs none; the layer builds are proven by tests/cli/test_lab_e2e.py): the module stays
short.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pulumi.automation.errors import CommandError

from providers.channels.pve import PveClient
from tests.cli.test_lab_e2e import dynamic_ops
from tests.lab.e2e import ENV, LabStack
from tests.lab.pve import OS_TEMPLATE

pytestmark = [pytest.mark.lab, pytest.mark.cli]

HAND_MADE = {811: "hand-web", 812: "hand-db"}
HAND_DATA = "rpool/data/hand-data"  # a dataset made with `zfs create`, holding data, to adopt
DATASETS = {"hand": {"dataset": HAND_DATA, "snapshot": "v1", "compression": "on", "adopt": True}}


def guests_file(stack: LabStack) -> Path:
    return stack.config / "environments" / ENV / "guests.json"


def write_containers(
    stack: LabStack, containers: list[dict[str, Any]], datasets: dict[str, Any] | None = None
) -> None:
    document = {"containers": containers, "datasets": DATASETS if datasets is None else datasets}
    guests_file(stack).write_text(json.dumps(document, indent=2))


def requests_since(stack: LabStack, since: int) -> list[tuple[str, str, dict[str, str]]]:
    """fakepve's requests after the first ``since``: method, path under /api2/json, the form's fields."""
    pve = stack.host.pve
    seen = pve.call(lambda: [(m, p, b) for m, p, b in pve.pve.requests][since:])
    out = []
    for method, path, body in seen:
        text = body.decode() if isinstance(body, bytes) else str(body or "")
        out.append((method, path.split("/api2/json/", 1)[-1].lstrip("/"), dict(urllib.parse.parse_qsl(text))))
    return out


def request_count(stack: LabStack) -> int:
    pve = stack.host.pve
    return pve.call(lambda: len(pve.pve.requests))


Requests = list[tuple[str, str, dict[str, str]]]


def naming(requests: Requests, vmid: int) -> Requests:
    """The requests whose path names CT ``vmid`` (``nodes/pve1/lxc/811/...``)."""
    return [r for r in requests if f"/lxc/{vmid}/" in f"{r[1]}/"]


def mutations(requests: Requests) -> list[tuple[str, str]]:
    """What changed something: every request but a read and the client's login."""
    return [(m, p) for m, p, _b in requests if m != "GET" and p != "access/ticket"]


def live_config(stack: LabStack, vmid: int) -> dict[str, Any] | None:
    client = stack.host.client()
    try:
        listed = {int(ct["vmid"]): ct for ct in client.get(f"nodes/{stack.host.node}/lxc")}
        if vmid not in listed:
            return None
        config: dict[str, Any] = client.get(f"nodes/{stack.host.node}/lxc/{vmid}/config")
        status = client.get(f"nodes/{stack.host.node}/lxc/{vmid}/status/current")
        return {**config, "_status": status["status"]}
    finally:
        client.close()


def create_by_hand(stack: LabStack, client: PveClient, vmid: int, hostname: str, **config: Any) -> None:
    """One container from the OS template, through the API: what the web UI's Create CT sends."""
    client.run_task(
        "POST",
        f"nodes/{stack.host.node}/lxc",
        timeout=120,
        step="create by hand",
        vmid=vmid,
        ostemplate=OS_TEMPLATE,
        hostname=hostname,
        rootfs=f"{stack.host.storage}:1",
        unprivileged=1,
        **config,
    )


def make_by_hand(stack: LabStack) -> None:
    """The two containers, through the API (what the web UI's Create CT sends), then started."""
    node = stack.host.node
    client = stack.host.client()
    try:
        for n, (vmid, hostname) in enumerate(sorted(HAND_MADE.items())):
            create_by_hand(
                stack,
                client,
                vmid,
                hostname,
                cores=1,
                memory=256 + 128 * n,
                swap=0,
                onboot=1,
                net0=f"name=eth0,bridge=vmbr0,ip=10.99.0.{60 + n}/24,gw=10.99.0.1",
            )
            client.run_task(
                "POST", f"nodes/{node}/lxc/{vmid}/status/start", timeout=120, step="start by hand"
            )
    finally:
        client.close()


def remove_by_hand(stack: LabStack) -> None:
    """What the test made and Phoenix was told to keep: gone after the module, as a person would remove it."""
    node = stack.host.node
    client = stack.host.client()
    try:
        for vmid in HAND_MADE:
            live = live_config(stack, vmid)
            if live is None:
                continue
            if live["_status"] == "running":
                client.run_task("POST", f"nodes/{node}/lxc/{vmid}/status/stop", timeout=120, step="stop")
            client.run_task("DELETE", f"nodes/{node}/lxc/{vmid}", timeout=120, step="destroy", purge=1)
    finally:
        client.close()


@pytest.fixture(scope="module")
def stack(lab_stack: LabStack) -> Iterator[LabStack]:
    chain_path = lab_stack.config / "chain.json"
    chain = json.loads(chain_path.read_text())
    chain["layers"] = {"base": chain["layers"]["base"]}
    chain_path.write_text(json.dumps(chain, indent=2))
    write_containers(lab_stack, [], {})
    make_by_hand(lab_stack)
    zpool = lab_stack.host.zpool
    zpool.zfs("create", HAND_DATA)
    (zpool.mountpoint(HAND_DATA) / "weights.bin").write_text("someone's data\n")
    try:
        yield lab_stack
    finally:
        if lab_stack.engine.resources():
            lab_stack.engine.destroy()
        remove_by_hand(lab_stack)
        if zpool.exists(HAND_DATA):
            zpool.zfs("destroy", "-r", HAND_DATA)


def phoenix_import(stack: LabStack, out: Path) -> subprocess.CompletedProcess[str]:
    """The real command in the project directory, with the stack's engine environment (its backend and
    passphrase: ``pulumi config --show-secrets`` reads the lab's secrets from there)."""
    root = stack.config.parent
    phoenix = Path(sys.executable).parent / "phoenix"
    env = {**os.environ, **stack.engine.env}
    for name in ("PHOENIX_PVE_PASSWORD", "PHOENIX_SSH_PRIVATE_KEY", "PHOENIX_SSH_KEY_FILE"):
        env.pop(name, None)  # the secrets must come from the stack's config, as for `pulumi up`
    argv = [
        str(phoenix),
        "import",
        "--from-host",
        "--stack",
        ENV,
        "--config",
        str(stack.config),
        "--out",
        str(out),
    ]
    return subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=300)


IMPORTED: list[dict[str, Any]] = []


def test_import_reads_the_host_and_changes_nothing(stack: LabStack, tmp_path: Path) -> None:
    out = tmp_path / "imported.json"
    since = request_count(stack)
    with stack.host.sshd.server.recording() as commands:
        run = phoenix_import(stack, out)
    print(run.stderr)
    assert run.returncode == 0, run.stderr
    requests = requests_since(stack, since)
    assert {m for m, _p, _b in requests} <= {"GET", "POST"} and mutations(requests) == [], (
        "reads and the client's login only: no POST, PUT or DELETE"
    )
    assert commands and all(line.startswith("cat /etc/pve/lxc/") for line in commands), commands
    entries = json.loads(out.read_text())["containers"]
    by_vmid = {e["vmid"]: e for e in entries}
    assert sorted(by_vmid) == sorted(HAND_MADE)
    for vmid, hostname in HAND_MADE.items():
        entry = by_vmid[vmid]
        live = live_config(stack, vmid)
        assert live is not None
        assert (entry["hostname"], entry["adopt"], "layer" in entry) == (hostname, True, False)
        assert entry["network"]["mac"] in str(live["net0"]), "the MAC PVE generated is carried"
        assert entry["memory_mib"] == live["memory"] and entry["disk_gib"] == 1
        assert f"CT {vmid} ({hostname}): imported" in run.stderr
        assert f"CT {vmid} ({hostname})" in run.stderr and "the first up would send" not in run.stderr
    IMPORTED[:] = entries


def test_the_first_up_adopts_them_with_no_clone_no_create_and_no_restart(stack: LabStack) -> None:
    assert IMPORTED, "the import test ran first"
    write_containers(stack, IMPORTED)
    since = request_count(stack)
    with stack.host.sshd.server.recording() as commands:
        report = stack.up()
    ops = dynamic_ops(report)
    assert {ops[f"ct-{vmid}-container"] for vmid in HAND_MADE} == {"create"}, "taken into state"
    assert ops["dataset-hand"] == "create"
    assert not any(line.startswith("zfs create") and HAND_DATA in line for line in commands), "read, not made"
    assert (stack.host.zpool.mountpoint(HAND_DATA) / "weights.bin").read_text() == "someone's data\n"
    requests = requests_since(stack, since)
    for vmid in HAND_MADE:
        assert mutations(naming(requests, vmid)) == [], f"CT {vmid}: no clone, create, config or restart"
        live = live_config(stack, vmid)
        assert live is not None and live["_status"] == "running"
    clones = [int(b.get("newid", 0)) for _m, p, b in requests if p.endswith("/clone")]
    assert not set(clones) & set(HAND_MADE), "no clone made either vmid"
    state = {
        name: dict(stack.engine.resource(f"ct-{vmid}-container").outputs) for vmid, name in HAND_MADE.items()
    }
    assert {s["origin"] for s in state.values()} == {"adopted"}
    assert {s["retain_on_delete"] for s in state.values()} == {True}
    assert report.exports["containers"].keys() >= {str(v) for v in HAND_MADE}


def test_the_second_up_changes_nothing(stack: LabStack) -> None:
    since = request_count(stack)
    report = stack.up()
    assert report.changes == 0, report.changed
    assert mutations(requests_since(stack, since)) == []


def test_an_import_after_adoption_finds_nothing_new_and_skips_the_layers_range(
    stack: LabStack, tmp_path: Path
) -> None:
    """No guest here runs on a layer, so the stack builds none; a container made by hand in the layers
    range stands for one (what a Phoenix layer's vmid would be) and is skipped, not imported."""
    layer = 9919
    node = stack.host.node
    client = stack.host.client()
    try:
        create_by_hand(stack, client, layer, "layer-stand-in", net0="name=eth0,bridge=vmbr0,ip=dhcp")
        run = phoenix_import(stack, tmp_path / "again.json")
    finally:
        client.run_task("DELETE", f"nodes/{node}/lxc/{layer}", timeout=120, step="destroy", purge=1)
        client.close()
    assert run.returncode == 0, run.stderr
    assert json.loads((tmp_path / "again.json").read_text()) == {"containers": []}, "both are declared now"
    assert f"CT {layer}: skipped: in the layers range 9900-9919: a Phoenix layer" in run.stderr


def test_a_declared_change_sends_only_that_key(stack: LabStack) -> None:
    changed = [dict(e, memory_mib=768) if e["vmid"] == 811 else e for e in IMPORTED]
    write_containers(stack, changed)
    since = request_count(stack)
    report = stack.up()
    assert dynamic_ops(report)["ct-811-container"] == "update"
    requests = requests_since(stack, since)
    assert mutations(requests) == [("PUT", "nodes/pve1/lxc/811/config")]
    (body,) = [b for m, _p, b in requests if m == "PUT"]
    print(f"the update sent: {body!r}")
    assert body == {"memory": "768"}
    live = live_config(stack, 811)
    assert live is not None and live["memory"] == 768 and live["_status"] == "running"
    IMPORTED[:] = changed


def test_a_change_that_needs_a_new_container_is_refused_at_preview(stack: LabStack) -> None:
    """A layer for 811 means a clone of it in 811's place, but 811 is kept on destroy (adopted): the old
    container would hold the vmid, or be adopted again with nothing rebuilt. The guest's diff refuses it,
    so ``pulumi preview`` fails naming the guest and what to do, and nothing reaches the host."""
    layered = [dict(e, layer="base") if e["vmid"] == 811 else e for e in IMPORTED]
    write_containers(stack, layered)
    since = request_count(stack)
    try:
        with pytest.raises(CommandError) as refused:
            stack.engine.preview()
    finally:
        write_containers(stack, IMPORTED)
    message = str(refused.value)
    print(f"preview refused: {message[-600:]}")
    assert "UnreplaceableError" in message
    assert "CT 811 (hand-web): template_vmid changed, which needs a new container in its place" in message
    assert "kept on destroy (retain_on_delete)" in message and "Nothing was changed" in message
    assert mutations(requests_since(stack, since)) == []
    assert stack.engine.preview(expect_no_changes=True) is not None, "state and host as they were"


def test_removing_them_follows_retain_on_delete(stack: LabStack) -> None:
    # 812 is declared not kept first (an update: nothing reaches the host), so its delete destroys it.
    let_go = [dict(e, retain_on_delete=False) if e["vmid"] == 812 else e for e in IMPORTED]
    write_containers(stack, let_go)
    since = request_count(stack)
    assert dynamic_ops(stack.up())["ct-812-container"] == "update"
    assert mutations(naming(requests_since(stack, since), 812)) == []
    write_containers(stack, [], {})
    since = request_count(stack)
    report = stack.up()
    ops = dynamic_ops(report)
    assert (ops["ct-811-container"], ops["ct-812-container"]) == ("delete", "delete")
    assert ops["dataset-hand"] == "delete" and stack.host.zpool.exists(HAND_DATA), (
        "an adopted dataset is kept"
    )
    assert stack.host.zpool.exists(f"{HAND_DATA}@v1"), "and so is its snapshot"
    requests = requests_since(stack, since)
    assert mutations(naming(requests, 811)) == [], "retained: only forgotten"
    kept = live_config(stack, 811)
    assert kept is not None and kept["_status"] == "running"
    assert live_config(stack, 812) is None, "retain_on_delete false: stopped and destroyed"
    assert ("DELETE", "nodes/pve1/lxc/812") in mutations(requests)
