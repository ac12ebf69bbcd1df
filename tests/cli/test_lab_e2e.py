"""The template chain, workload guests and vLLM services, end to end on the lab, under the real engine.

``pulumi up`` of the ``lab`` stack by the Go-built Pulumi CLI (``make pulumi``): the language host runs
``__main__.py``, the engine plans and orders every step, ``pulumi-resource-pulumi-python`` runs Phoenix's
providers, against the lab: fakepve whose ``local-zfs`` acts on the real zfs-fuse pool, the real sshd,
the ``pct`` shim running real LXC containers. Feature scripts are the TEST-ONLY stand-ins of
tests/lab/standins (see tests/lab/e2e.py for why).

The tests share one deployment (module-scoped ``lab_stack``, the chain is built once) and run in file
order; each starts from "deployed" (``ensure_up``) so any of them also runs alone. Every check is made on
the lab itself (``zfs get``, fakepve's request log and configs, files inside the containers, the vLLM
stand-in's HTTP answers), not only on the providers' outputs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from pulumi.automation import CommandError

from tests.lab.common import LXC_PATH
from tests.lab.e2e import DATA_DATASET, PROFILE, LabGuest, LabStack
from tests.support.engine import Drift, Report

pytestmark = [pytest.mark.lab, pytest.mark.cli]

LAYERS = ("base", "gpu", "docker", "vllm")
DYNAMIC = "pulumi-python:dynamic"
PROFILE_LINE = f"lxc.apparmor.profile: {PROFILE}"
SESSION = "Starting session: "  # sshd's VERBOSE line for each session it runs


# ----------------------------------------------------------------------------------------------- helpers


def short(urn: str) -> str:
    return urn.rsplit("::", 1)[1]


def is_dynamic(urn: str) -> bool:
    """A dynamic resource (a provider really acts on it): the last type of the URN's type chain."""
    return urn.split("::")[2].rsplit("$", 1)[-1].startswith(DYNAMIC)


def dynamic_ops(report: Report) -> dict[str, str]:
    """Operation per dynamic resource, by resource name."""
    return {short(urn): op for urn, op in sorted(report.ops.items()) if is_dynamic(urn)}


def outputs(stack: LabStack, name: str) -> dict[str, Any]:
    return dict(stack.engine.resource(name).outputs)


def layer_vmids(stack: LabStack) -> dict[str, int]:
    return {layer: int(outputs(stack, f"layer-{layer}-template")["vmid"]) for layer in LAYERS}


def base_snapshot(stack: LabStack, vmid: int) -> str:
    return f"{stack.host.zpool.data}/basevol-{vmid}-disk-0@__base__"


def lxc_cts(stack: LabStack) -> dict[int, dict[str, Any]]:
    """vmid → config of every container fakepve has."""
    client = stack.host.client()
    try:
        return {
            int(ct["vmid"]): client.get(f"nodes/{stack.host.node}/lxc/{ct['vmid']}/config")
            for ct in client.get(f"nodes/{stack.host.node}/lxc")
        }
    finally:
        client.close()


def guest_snapshots(stack: LabStack, vmid: int) -> list[dict[str, Any]]:
    client = stack.host.client()
    try:
        snapshots: list[dict[str, Any]] = client.get(f"nodes/{stack.host.node}/lxc/{vmid}/snapshot")
        return snapshots
    finally:
        client.close()


def served_models(guest: LabGuest) -> list[str]:
    """What the guest's vLLM (stand-in) lists, asked directly: the lab's containers share this machine's
    network namespace, so its loopback port is reachable from the test."""
    url = f"http://127.0.0.1:{guest.port}/v1/models"
    with urllib.request.urlopen(url, timeout=5) as answer:
        return [model["id"] for model in json.load(answer)["data"]]


def recorded_profile(vmid: int) -> str:
    """The AppArmor profile the pct shim found in /etc/pve/lxc/<vmid>.conf at the container's last start."""
    return (LXC_PATH / str(vmid) / "apparmor.profile").read_text().strip()


def assert_guest_serving(stack: LabStack, guest: LabGuest) -> None:
    assert stack.guest_exec(guest.vmid, "systemctl", "is-active", "vllm.service").stdout.strip() == "active"
    assert served_models(guest) == [guest.served]


def assert_linked_chain(stack: LabStack) -> dict[str, int]:
    """Every layer a template whose dataset's origin (on the pool) is its parent's base snapshot."""
    vmids, cts, pool = layer_vmids(stack), lxc_cts(stack), stack.host.zpool.data
    parent: str | None = None
    for layer in LAYERS:
        vmid = vmids[layer]
        dataset = f"{pool}/basevol-{vmid}-disk-0"
        assert cts[vmid].get("template") == 1, f"layer {layer} (CT {vmid}) is not a template"
        assert stack.host.zpool.exists(f"{dataset}@__base__")
        want = "-" if parent is None else base_snapshot(stack, vmids[parent])
        assert stack.origin(dataset) == want, f"layer {layer}: {dataset} is not a linked clone of {want}"
        parent = layer
    return vmids


# ------------------------------------------------------------------------------------------------- tests


def test_first_up_builds_the_chain_as_linked_clones_and_two_serving_guests(lab_stack: LabStack) -> None:
    report = lab_stack.ensure_up()
    ops = dynamic_ops(report)
    print(
        f"\nfirst up: engine summary {report.summary}; dynamic resources: {len(ops)}, provider calls "
        f"{dict(report.provider_calls)}"
    )
    assert set(report.ops.values()) == {"create"} and set(report.summary) == {"create"}
    # The stack outputs __main__.py exports: every layer verified (promotable), each served model's endpoint.
    # The layers the guests run on and their ancestors: the vLLM line, not the chain's ollama and llamacpp
    # layers, which no guest here runs on.
    assert report.exports["layer_verified"] == dict.fromkeys(LAYERS, True)
    assert not {"layer-ollama-template", "layer-llamacpp-template"} & set(ops)
    assert set(report.exports["vllm_endpoints"]) == {guest.served for guest in lab_stack.guests}
    for name in [*(f"layer-{layer}-template" for layer in LAYERS), f"apparmor-{PROFILE}"]:
        assert ops[name] == "create"
    for guest in lab_stack.guests:
        for part in ("container", "vllm", "models"):
            assert ops[f"ct-{guest.vmid}-{part}"] == "create"

    vmids = assert_linked_chain(lab_stack)
    print("layers (vmid, origin on the pool): " + ", ".join(f"{layer}={vmids[layer]}" for layer in LAYERS))
    assert len(set(vmids.values())) == 4 and all(9900 <= v <= 9919 for v in vmids.values())
    assert lab_stack.origin(f"{lab_stack.host.zpool.data}/basevol-{vmids['base']}-disk-0") == "-"

    cts, pool = lxc_cts(lab_stack), lab_stack.host.zpool.data
    pins = {name: layer.versions for name, layer in lab_stack.environment().chain.layers.items()}
    docker = pins["docker"]
    for guest in lab_stack.guests:
        vmid = guest.vmid
        # A linked clone of the vllm layer, as PVE names it, and verified so on the pool.
        assert cts[vmid]["rootfs"].startswith(
            f"local-zfs:basevol-{vmids['vllm']}-disk-0/subvol-{vmid}-disk-0,"
        )
        assert lab_stack.origin(f"{pool}/subvol-{vmid}-disk-0") == base_snapshot(lab_stack, vmids["vllm"])
        # Every layer's work is inside the guest: four clones deep.
        markers = lab_stack.guest_exec(
            vmid,
            "cat",
            "/etc/phoenix/base",
            "/etc/phoenix/nvidia",
            "/etc/phoenix/docker",
            "/etc/phoenix/vllm",
        ).stdout
        assert markers.splitlines() == [
            "phoenix-base target=lxc",
            f"nvidia={pins['gpu']['nvidia']}",
            f"docker={docker['docker']} toolkit={docker['nvidia_container_toolkit']} revision=1",
            f"vllm={pins['vllm']['vllm']}",
        ]
        # The model-weights clone is this guest's own clone of the snapshot, in PVE's config as mp0.
        clone = f"{DATA_DATASET}-ct{vmid}"
        assert lab_stack.origin(clone) == f"{DATA_DATASET}@v1"
        assert cts[vmid]["mp0"].startswith(f"{lab_stack.host.zpool.mountpoint(clone)},")
        wrote = lab_stack.guest_exec(vmid, "sh", "-c", f"echo {vmid} > /models/owner")
        assert wrote.returncode == 0, wrote.stderr
        assert cts[vmid]["dev0"] == f"/dev/nvidia{guest.gpu},mode=0666"  # its own GPU
        # The raw AppArmor line is in the config and was there at the container's first start.
        conf = lab_stack.host.pve_conf(vmid).read_text()
        assert conf.partition("\n[")[0].splitlines().count(PROFILE_LINE) == 1
        assert recorded_profile(vmid) == PROFILE
        # Its firewall, as PVE keeps it: on, inbound DROP by default, the one declared rule.
        client = lab_stack.host.client()
        try:
            base = f"nodes/{lab_stack.host.node}/lxc/{vmid}/firewall"
            options, rules = client.get(f"{base}/options"), client.get(f"{base}/rules")
        finally:
            client.close()
        assert (options["enable"], options["policy_in"]) == (1, "DROP")
        assert [(r["type"], r["action"], r["proto"], r["dport"], r["enable"]) for r in rules] == [
            ("in", "ACCEPT", "tcp", str(guest.port), 1)
        ]
        # The deploy waited for health: the service is up and serves exactly its model name.
        assert outputs(lab_stack, f"ct-{vmid}-vllm")["models"] == [guest.served]
        assert_guest_serving(lab_stack, guest)
    # /models in each guest is that guest's own writable clone; the snapshotted data stays as it was.
    for guest in lab_stack.guests:
        owner = lab_stack.host.zpool.mountpoint(f"{DATA_DATASET}-ct{guest.vmid}") / "owner"
        assert owner.read_text() == f"{guest.vmid}\n"
    assert not (lab_stack.host.zpool.mountpoint(DATA_DATASET) / "owner").exists()


def test_second_up_changes_nothing_by_the_engines_count_fakepves_and_sshds(lab_stack: LabStack) -> None:
    lab_stack.ensure_up()
    since = len(lab_stack.host.pve.requests())
    sshd_log = lab_stack.host.sshd.server.log
    # Every command session, however sshd logs its kind: "command", or "forced-command" under the lab's
    # TEST-ONLY recorder (tests/lab/sshd_record), which runs each command the client sent.
    sessions_before = sshd_log.read_text().count(SESSION)
    report = lab_stack.up()
    api = lab_stack.api_mutations(since)
    ssh_sessions = sshd_log.read_text().count(SESSION) - sessions_before
    print(
        f"\nsecond up: the engine's change count {report.changes} (summary {report.summary}); "
        f"{len(api)} mutating API calls (fakepve); {ssh_sessions} SSH commands of any kind (sshd log); "
        f"provider calls {dict(report.provider_calls)}"
    )
    assert report.changes == 0 and set(report.summary) == {"same"}
    assert report.changed == {}
    assert api == []
    assert sessions_before > 0, "the sshd log counts commands (the first up ran many)"
    assert ssh_sessions == 0
    assert report.provider_mutations == 0 and set(report.provider_calls) <= {
        "Handshake",
        "GetPluginInfo",
        "CheckConfig",
        "DiffConfig",
        "Configure",
        "Check",
        "Diff",
        "Cancel",  # the engine's shutdown signal to each provider
    }
    # `pulumi preview --expect-no-changes` agrees (it fails the command on any change).
    assert set(lab_stack.engine.preview(expect_no_changes=True)) == {"same"}


def test_hand_edited_apparmor_line_is_drift_and_the_next_up_restores_it(lab_stack: LabStack) -> None:
    lab_stack.ensure_up()
    guest = lab_stack.guests[0]
    conf = lab_stack.host.pve_conf(guest.vmid)
    conf.write_text(conf.read_text().replace(PROFILE_LINE, "lxc.apparmor.profile: unconfined"))

    drift = {short(urn): d for urn, d in lab_stack.engine.refresh().items()}
    print("\nrefresh: " + ", ".join(f"{name}={d.kind}{list(d.changed) or ''}" for name, d in drift.items()))
    assert drift[f"ct-{guest.vmid}-container"] == Drift("changed", ("raw_lines",))
    assert {name: d for name, d in drift.items() if d.kind != "same"} == {
        f"ct-{guest.vmid}-container": Drift("changed", ("raw_lines",))
    }

    since = len(lab_stack.host.pve.requests())
    report = lab_stack.up()
    api = lab_stack.api_mutations(since)
    print(
        f"up after the drift: changed {[(short(u), op) for u, op in report.changed.items()]}, the rest same; "
        f"API mutations {[(m, p.rsplit('/', 2)[-2:]) for m, p in api]}"
    )
    assert {short(urn): op for urn, op in report.changed.items()} == {f"ct-{guest.vmid}-container": "update"}
    # Only the raw line changed: snapshot, stop, start; no config key is sent to PVE.
    assert not any(path.endswith("/config") for _method, path in api)
    main, _, snapshots = conf.read_text().partition("\n[")
    assert main.splitlines().count(PROFILE_LINE) == 1
    assert "unconfined" not in main
    # snapshot_before_update: a PVE snapshot of the guest (a ZFS snapshot of its linked clone) came first.
    (snapname,) = [s["name"] for s in guest_snapshots(lab_stack, guest.vmid) if s["name"] != "current"]
    assert snapname.startswith("pre-update") and snapshots.startswith(f"{snapname}]")
    assert lab_stack.host.zpool.exists(f"{lab_stack.host.zpool.data}/subvol-{guest.vmid}-disk-0@{snapname}")
    assert recorded_profile(guest.vmid) == PROFILE  # the restart ran under Phoenix's profile again
    assert lab_stack.engine.refresh()[lab_stack.engine.resource(f"ct-{guest.vmid}-container").urn] == Drift(
        "same"
    )
    assert_guest_serving(lab_stack, guest)  # enabled unit started again at boot, as systemd does


def test_a_pve_config_key_changed_by_hand_is_drift_and_the_next_up_sends_only_it(lab_stack: LabStack) -> None:
    """The other half of a guest's drift: a PVE config key (here `cores`, through the API, as someone in
    the web UI would) shows on refresh and the next up puts back exactly that key."""
    lab_stack.ensure_up()
    guest = lab_stack.guests[1]
    config = f"nodes/{lab_stack.host.node}/lxc/{guest.vmid}/config"
    client = lab_stack.host.client()
    declared = client.get(config)["cores"]
    client.set(config, cores=int(declared) + 3)

    drift = {short(urn): d for urn, d in lab_stack.engine.refresh().items() if d.kind != "same"}
    print(
        "\nrefresh after a hand-made cores change: "
        + ", ".join(f"{n}={d.kind}{list(d.changed)}" for n, d in drift.items())
    )
    assert drift == {f"ct-{guest.vmid}-container": Drift("changed", ("params",))}

    since = len(lab_stack.host.pve.requests())
    report = lab_stack.up()
    fake = lab_stack.host.pve
    bodies = fake.call(lambda: [(m, p, b) for m, p, b in fake.pve.requests[since:] if m == "PUT"])
    print(f"up after the drift: PUT requests {[(p, b) for _m, p, b in bodies]}")
    assert {short(urn): op for urn, op in report.changed.items()} == {f"ct-{guest.vmid}-container": "update"}
    (put,) = [(p, b) for _m, p, b in bodies if p.endswith(f"/lxc/{guest.vmid}/config")]
    sent = dict(urllib.parse.parse_qsl(put[1].decode()))
    assert set(sent) - {"digest"} == {"cores"}, "only the key that drifted is sent"
    assert int(client.get(config)["cores"]) == int(declared)
    assert lab_stack.engine.refresh()[lab_stack.engine.resource(f"ct-{guest.vmid}-container").urn] == Drift(
        "same"
    )


def test_changed_docker_feature_rebuilds_docker_vllm_and_guests_only(lab_stack: LabStack) -> None:
    lab_stack.ensure_up()
    before = layer_vmids(lab_stack)
    pool = lab_stack.host.zpool
    guids = {
        layer: pool.get(f"{pool.data}/basevol-{before[layer]}-disk-0", "guid") for layer in ("base", "gpu")
    }
    script = lab_stack.config / "features" / "docker.sh"
    script.write_text(script.read_text().replace("REVISION=1\n", "REVISION=2\n", 1))

    since = len(lab_stack.host.pve.requests())
    report = lab_stack.up()
    ops = dynamic_ops(report)
    print(
        f"\ndocker feature changed: {dict(report.counts)}; per resource: "
        + ", ".join(f"{name}={op}" for name, op in ops.items() if op != "same")
        + f"; untouched: {sorted(name for name, op in ops.items() if op == 'same')}; "
        f"{len(lab_stack.api_mutations(since))} mutating API calls"
    )
    steps = [(op, short(urn)) for op, urn in report.steps]
    print("engine steps: " + ", ".join(f"{op} {name}" for op, name in steps if op != "same"))
    changed = {name: op for name, op in ops.items() if op != "same"}
    assert changed == {
        "layer-docker-template": "replace",
        "layer-vllm-template": "replace",
        **{f"ct-{g.vmid}-container": "replace" for g in lab_stack.guests},
        # A container keeps its vmid, so it is replaced delete-before-create. What runs in it takes the
        # new container's instance token (their only input from it; the vmid is plain config): an update,
        # which deploys the service into the new container (health-gated) and writes the firewall again
        # (PVE drops a guest's firewall config with the guest). A replace of them would run the old ones'
        # delete after the new ones exist, inside the new container.
        **{f"ct-{g.vmid}-vllm": "update" for g in lab_stack.guests},
        **{f"ct-{g.vmid}-firewall": "update" for g in lab_stack.guests},
    }
    # The engine's own order: each layer's replacement is created before the one it replaces is deleted,
    # and the old vllm layer (a linked clone of the old docker layer) goes before the old docker layer.
    for layer in ("layer-docker-template", "layer-vllm-template"):
        assert steps.index(("create-replacement", layer)) < steps.index(("delete-replaced", layer))
    assert steps.index(("delete-replaced", "layer-vllm-template")) < steps.index(
        ("delete-replaced", "layer-docker-template")
    )
    # A container (fixed vmid) goes before its replacement comes; what runs in it is updated after.
    for guest in lab_stack.guests:
        container, service = f"ct-{guest.vmid}-container", f"ct-{guest.vmid}-vllm"
        firewall = f"ct-{guest.vmid}-firewall"
        assert steps.index(("delete-replaced", container)) < steps.index(("create-replacement", container))
        assert steps.index(("create-replacement", container)) < steps.index(("update", service))
        assert steps.index(("create-replacement", container)) < steps.index(("update", firewall))
    after = assert_linked_chain(lab_stack)
    assert after["base"] == before["base"] and after["gpu"] == before["gpu"]
    for layer in ("base", "gpu"):  # the very same datasets, not rebuilt
        assert pool.get(f"{pool.data}/basevol-{after[layer]}-disk-0", "guid") == guids[layer]
    assert {after["docker"], after["vllm"]}.isdisjoint({before["docker"], before["vllm"]})
    cts = lxc_cts(lab_stack)
    for old in (before["docker"], before["vllm"]):  # create-before-delete: the old layers are gone
        assert old not in cts and not pool.exists(f"{pool.data}/basevol-{old}-disk-0")
    for guest in lab_stack.guests:
        assert lab_stack.origin(f"{pool.data}/subvol-{guest.vmid}-disk-0") == base_snapshot(
            lab_stack, after["vllm"]
        )
        docker = lab_stack.guest_exec(guest.vmid, "cat", "/etc/phoenix/docker").stdout
        assert docker.strip().endswith("revision=2")
        assert recorded_profile(guest.vmid) == PROFILE
        assert_guest_serving(lab_stack, guest)
    assert {d.kind for d in lab_stack.engine.refresh().values()} == {"same"}  # what state says is there


def test_a_guest_whose_health_check_never_passes_fails_the_deploy_naming_it(lab_stack: LabStack) -> None:
    lab_stack.ensure_up()
    healthy = list(lab_stack.guests)
    # 30 s, not less: on a loaded 2-core machine the stand-in can take over 10 s to listen, and then the
    # last probe is a refused connection and the journal holds no line saying why the model never showed.
    never = LabGuest(
        803, gpu=0, served="tiny-never", extra_args=("--lab-standin-hide-model",), startup_timeout_s=30
    )
    lab_stack.set_guests([*healthy, never])
    try:
        started = time.monotonic()
        with pytest.raises(CommandError) as caught:
            lab_stack.up()
        waited = time.monotonic() - started
        details = str(caught.value)
        headline = next(line for line in details.splitlines() if "vLLM in CT" in line)
        print(f"\nnever-ready guest: deploy failed after {waited:.1f}s: {headline.strip()}")
        assert "vLLM in CT 803 (lab-vllm-803) did not serve 'tiny-never' within 30s" in details
        assert "--- journalctl -u vllm.service (tail) ---" in details
        # The last log lines are the server's own: the stand-in's warning says why it never got ready.
        assert "/v1/models: not listing 'tiny-never' (--lab-standin-hide-model)" in details
        assert waited < 120
        assert served_models(never) == []  # it runs, healthy, but never lists its model
    finally:
        lab_stack.set_guests(healthy)
    report = lab_stack.up()  # the failed guest leaves with its config entry
    deleted = {short(u) for u, op in report.changed.items() if op == "delete" and is_dynamic(u)}
    # The engine runs a container's dependents side by side: its firewall (a few API calls) was made
    # while the service was still waiting for health, so it is in the state and leaves with the rest.
    assert deleted == {"ct-803-container", "ct-803-models", "ct-803-firewall"}
    assert 803 not in lxc_cts(lab_stack)
    assert not lab_stack.host.zpool.exists(f"{lab_stack.host.zpool.data}/subvol-803-disk-0")
    assert not lab_stack.host.pve_conf(803).exists()


def test_stack_export_holds_no_plaintext_secret(lab_stack: LabStack) -> None:
    lab_stack.ensure_up()
    exported = lab_stack.engine.export_text()
    key_lines = [
        line for line in lab_stack.host.sshd.user_private_key.splitlines() if "PRIVATE KEY" not in line
    ]
    assert lab_stack.host.pve.password not in exported
    assert not any(line in exported for line in key_lines if len(line) > 16)
    # The stack's config holds both, sealed by the passphrase (the stack file, not the state).
    stack_file = (lab_stack.config.parent / "Pulumi.lab.yaml").read_text()
    assert lab_stack.host.pve.password not in stack_file and "secure:" in stack_file


def phoenix(stack: LabStack, *args: str) -> subprocess.CompletedProcess[str]:
    """The ``phoenix`` command in the lab project directory, with the CLI and stack backend a user has."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "phoenix"), *args],
        cwd=stack.config.parent,
        env={**os.environ, **stack.engine.env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_phoenix_preview_and_promote_run_the_real_cli(lab_stack: LabStack) -> None:
    """``phoenix preview`` is ``pulumi preview``; ``phoenix promote`` reads ``pulumi stack output --json``."""
    lab_stack.ensure_up()
    preview = phoenix(lab_stack, "preview", "--stack", "lab")
    assert preview.returncode == 0, preview.stderr
    assert "unchanged" in preview.stdout and "to create" not in preview.stdout

    # The next environment of the flow: the same host and chain (so the same layer keys), its own stack.
    project, environments = lab_stack.config.parent, lab_stack.config / "environments"
    shutil.copytree(environments / "lab", environments / "lab-next")
    (project / "Pulumi.lab-next.yaml").write_text("config:\n  phoenix:environment: lab-next\n")
    promoted = phoenix(
        lab_stack, "promote", "--from", "lab", "--to", "lab-next", "--config", str(lab_stack.config)
    )
    print(f"\nphoenix promote: {promoted.stdout.strip()} {promoted.stderr.strip()}")
    assert promoted.returncode == 0, promoted.stderr
    assert "reuses these templates" in promoted.stdout  # same node: the verified templates themselves
    lock = json.loads((environments / "lab-next" / "promotion.lock.json").read_text())
    exported = json.loads(lab_stack.engine.cli("stack", "output", "--json", "--stack", "lab").stdout)
    assert lock["source"] == "lab"
    assert {name: layer["key"] for name, layer in lock["layers"].items()} == exported["layers"]
    assert {name: layer["vmid"] for name, layer in lock["layers"].items()} == exported["layer_vmids"]
    assert all(layer["verified"] for layer in lock["layers"].values())


def test_destroy_leaves_no_phoenix_guest_and_no_phoenix_dataset(lab_stack: LabStack) -> None:
    lab_stack.ensure_up()
    report = lab_stack.engine.destroy()
    print(f"\ndestroy: engine summary {report.summary}; provider calls {dict(report.provider_calls)}")
    assert lxc_cts(lab_stack) == {}
    pool = lab_stack.host.zpool
    assert pool.datasets(pool.data) == [pool.data]
    assert lab_stack.engine.resources() == {} and lab_stack.engine.pending_deletes() == []
    assert not Path(f"/etc/apparmor.d/{PROFILE}").exists()
    assert list(lab_stack.host.pve_conf(801).parent.glob("*.conf")) == []
