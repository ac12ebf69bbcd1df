"""`phoenix import --from-bash`: the bash Phoenix's etc/ files as a Phoenix environment (issue 15, point 3).

The fixtures under tests/fixtures/bash_original/<case>/etc/ are written in the bash original's format
(SirHeads/Testing-ideas, usr/local/phoenix_hypervisor/etc/): `full` is a whole platform (templates, GPU,
vLLM and Docker containers, VMs, stacks, and one key the importer does not know), the others each hold one
mistake Phoenix's validation refuses. Every written environment is loaded with Phoenix's own loader.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from phoenix_components.cli import main as cli_main
from phoenix_components.cli.bash_import import read_bash, reference
from phoenix_components.cli.main import main
from phoenix_components.config.bash_import import (
    FILES,
    HYPERVISOR,
    LXC,
    STACKS,
    UNKNOWN,
    VMS,
    Conversion,
    Facts,
    best_layer,
    inherited_features,
    leaves,
    lineage,
    render_path,
    template_ctids,
)
from phoenix_components.config.bash_import import convert as convert_docs
from phoenix_components.config.errors import ConfigError
from phoenix_components.config.load import Environment, load_environment
from phoenix_components.config.models import Chain

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "bash_original"
GPU_MIB = 16311  # what the fixtures' host would report; the bash files do not say it
FACTS = Facts(gpu_memory_mib=GPU_MIB)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A copy of the Phoenix config the import reads (chain, features, schemas, the dev environment it takes
    the OS template and the runfile checksum from) and the AppArmor profiles beside it."""
    target = tmp_path / "config"
    target.mkdir()
    shutil.copy(ROOT / "config" / "chain.json", target / "chain.json")
    for folder in ("features", "schema"):
        shutil.copytree(ROOT / "config" / folder, target / folder)
    shutil.copytree(ROOT / "config" / "environments" / "dev", target / "environments" / "dev")
    shutil.copytree(ROOT / "apparmor", tmp_path / "apparmor")
    return target


def convert(case: str, config: Path, facts: Facts = FACTS) -> Conversion:
    return convert_docs(read_bash(FIXTURES / case / "etc"), facts, reference(config))


def write_and_load(conversion: Conversion, config: Path, name: str) -> Environment:
    """Writes the conversion as environment ``name`` and loads it with Phoenix's loader."""
    out = config / "environments" / name
    out.mkdir(parents=True)
    (out / "host.json").write_text(json.dumps(conversion.host))
    (out / "guests.json").write_text(json.dumps(conversion.guests))
    return load_environment(config, name)


def entry(conversion: Conversion, file: str, path: str) -> Any:
    found = [e for e in conversion.entries if e.file == file and e.path == path]
    assert len(found) == 1, (file, path, found)
    return found[0]


def kinds(conversion: Conversion) -> list[str]:
    return [f.kind for f in conversion.findings]


# ---------------------------------------------------------------- pure parts


def test_render_path_and_leaves() -> None:
    assert render_path(("lxc_configs", "801", "memory_mb")) == "lxc_configs.801.memory_mb"
    assert render_path(("vms", 1, "firewall", "rules", 0, "port")) == "vms[1].firewall.rules[0].port"
    data = {"a": {"b": 1, "c": []}, "d": [{"e": None}, 2], "f": {}}
    assert [render_path(p) for p, _ in leaves(data)] == ["a.b", "a.c", "d[0].e", "d[1]", "f"]


def test_templates_and_inherited_features_follow_the_clone_chain() -> None:
    configs = {
        "900": {"features": ["base_setup"]},
        "901": {"clone_from_ctid": "900", "features": ["nvidia"]},
        "920": {"clone_from_ctid": "901", "features": ["nvidia", "vllm"], "is_template": True},
        "801": {"clone_from_ctid": "920", "features": ["vllm"]},
        "950": {"clone_from_ctid": "900", "features": ["docker"]},
    }
    assert template_ctids(configs) == {"900", "901", "920"}
    assert inherited_features("801", configs) == ["base_setup", "nvidia", "vllm"]
    assert inherited_features("950", configs) == ["base_setup", "docker"]


def test_best_layer_runs_most_of_the_features_and_adds_least() -> None:
    chain = Chain.model_validate(
        {
            "layers": {
                "base": {"os_template": "debian-12", "features": ["base_setup"], "smoke_test": ["true"]},
                "gpu": {"parent": "base", "features": ["nvidia"], "smoke_test": ["true"]},
                "docker": {"parent": "gpu", "features": ["docker"], "smoke_test": ["true"]},
                "vllm": {"parent": "gpu", "features": ["vllm"], "smoke_test": ["true"]},
            }
        }
    )
    assert lineage(chain, "vllm") == ["base_setup", "nvidia", "vllm"]
    assert best_layer(["base_setup", "nvidia", "vllm"], chain) == "vllm"
    assert best_layer(["base_setup", "nvidia", "ollama"], chain) == "gpu"
    assert best_layer(["base_setup", "step_ca"], chain) == "base"
    # docker is only under gpu here: two features run, one (nvidia) added.
    assert best_layer(["base_setup", "docker"], chain) == "docker"


# ---------------------------------------------------------------- the full fixture


def test_full_fixture_is_a_valid_environment(config: Path) -> None:
    conversion = convert("full", config)
    assert not conversion.blocked, [str(f) for f in conversion.findings if f.blocking]
    env = write_and_load(conversion, config, "home")
    containers = {c.vmid: c for c in env.guests.containers}
    # Templates (900, 901 cloned from; 920 cloned from) become layers, never guests.
    assert sorted(containers) == [101, 103, 801, 802, 803, 914, 950]
    assert sorted(v.vmid for v in env.guests.vms) == [1001, 1002]  # 9000 is the image template

    def runs(vmid: int) -> list[str]:
        """What the guest runs: its layer's lineage, then its own features."""
        ct = containers[vmid]
        assert ct.layer is not None  # the import gives every container a layer
        layers = env.layer_lineage(ct.layer)
        return [f for name in layers for f in env.chain.layers[name].features] + ct.features

    for vmid in (801, 802, 803):
        assert "vllm" in runs(vmid)
    embed = containers[801]
    assert embed.vllm is not None
    assert embed.vllm.model.model == "ibm-granite/granite-embedding-english-r2"
    assert embed.vllm.server.served_model_name == "ibm-granite/granite-embedding-english-r2"
    assert embed.vllm.cache.gpu_memory_utilization == 0.1
    assert embed.gpus == [0] and embed.memory_mib == 16384 and embed.disk_gib == 64
    assert embed.mounts[0].model_dump() == {
        "type": "volume",
        "path": "/vllm_models",
        "storage": "tank-bulk",
        "size_gib": 50,
        "backup": False,
    }
    assert embed.after == [1002] and embed.startup is not None and embed.startup.order == 6
    gateway = containers[101]
    assert gateway.hostname == "Nginx-Gateway" and gateway.swap_mib == 512
    assert gateway.pve_features.nesting and gateway.apparmor_profile == "phoenix-lxc-nesting"
    assert gateway.dns is not None and gateway.dns.nameserver == ["192.168.50.10"]
    assert [r.dport for r in gateway.firewall.rules] == ["80,443", "9000"]
    assert gateway.firewall.rules[1].comment == "Step-CA certificates"  # `#` ends a PVE comment
    bind = gateway.mounts[0].model_dump()
    assert bind["host_path"] == "/mnt/pve/tank/lxc-persistent-data/101/logs" and bind["read_only"] is False
    assert gateway.after == [103]
    # unconfined everywhere in the bash file: each guest confined by the profile that fits it
    assert {c.vmid: c.apparmor_profile for c in containers.values()} == {
        101: "phoenix-lxc-nesting",
        103: "phoenix-lxc-confined",
        801: "phoenix-lxc-gpu-docker",
        802: "phoenix-lxc-gpu-docker",
        803: "phoenix-lxc-gpu-docker",
        914: "phoenix-lxc-gpu-docker",
        950: "phoenix-lxc-nesting",
    }
    assert "ollama" in runs(914)  # Phoenix has features/ollama.sh (a layer of its own, or the guest's)
    assert "docker" in runs(950)
    assert containers[950].pve_features.nesting and containers[950].pve_features.keyctl
    apps = next(v for v in env.guests.vms if v.vmid == 1002)
    assert apps.features == ["base_setup", "docker"] and apps.after == [1001]
    assert apps.dns is not None and apps.dns.searchdomain == "lab.example.net"
    assert apps.disk_gib == 50  # vm_defaults.disk_size_gb, which the bash original ignored
    assert apps.startup is not None and (apps.startup.up, apps.startup.down) == (2, None)  # qm got no down
    portainer = next(v for v in env.guests.vms if v.vmid == 1001)
    assert portainer.features == ["base_setup", "docker"]  # trusted_ca, step_cli: no Phoenix script
    host = env.host
    assert host.node == "gpubox" and host.api.endpoint == "https://192.168.50.10:8006"
    assert host.storage.rootfs == "tank-lxc-disks" and host.storage.zfs_pool == "tank/lxc-disks"
    assert host.storage.vm_disks == "tank-vm-disks" and host.storage.templates == "tank-iso"
    assert [(g.index, g.memory_mib) for g in host.gpus] == [(0, GPU_MIB), (1, GPU_MIB)]
    assert host.nvidia is not None and host.nvidia.version == "580.76.05"
    dev = json.loads((ROOT / "config" / "environments" / "dev" / "host.json").read_text())
    assert host.nvidia.sha256 == dev["nvidia"]["sha256"]  # the same runfile URL, pinned there


CASES = sorted(
    p.name for p in FIXTURES.iterdir() if p.name not in ("missing_file", "bad_json", "not_bash_format")
)


@pytest.mark.parametrize("case", CASES)
def test_every_field_of_the_input_is_reported_exactly_once(config: Path, case: str) -> None:
    """Walks every leaf of the fixture's four files: each has one entry, and only the key the full fixture
    plants for it is "unknown to the importer"."""
    docs = read_bash(FIXTURES / case / "etc")
    facts = Facts(gpu_memory_mib=GPU_MIB, nvidia_sha256="ab" * 32)
    conversion = convert_docs(docs, facts, reference(config))
    reported = [(e.file, e.path) for e in conversion.entries]
    assert len(reported) == len(set(reported))
    expected = {(file, render_path(path)) for file in FILES for path, _ in leaves(docs[file])}
    assert set(reported) == expected
    unknown = [(e.file, e.path) for e in conversion.entries if e.reason == UNKNOWN]
    assert unknown == ([(HYPERVISOR, "legacy_flag")] if case == "full" else [])
    for e in conversion.entries:
        assert e.reason or e.target, e  # a dropped field says why; a carried one says where


def test_rootesting_networks_and_templates(config: Path) -> None:
    """The rootesting branch's layout: a macvlan NIC on vmbr0.20 becomes a port of vmbr0 on VLAN 20, the
    second NIC on the internal bridge net1, `is_template` marks a template."""
    conversion = convert("rootesting", config)
    env = write_and_load(conversion, config, "rt")
    gateway = next(c for c in env.guests.containers if c.vmid == 101)
    assert (gateway.network.bridge, gateway.network.vlan, gateway.network.ip) == ("vmbr0", 20, "dhcp")
    assert gateway.network.mac == "02:00:00:00:01:01"
    assert [(n.bridge, n.ip, n.gateway) for n in gateway.networks] == [
        ("vmbr100", "172.16.100.10/24", "172.16.100.1")
    ]
    bridges = {b.name: b for b in env.host.bridges}
    assert bridges["vmbr0"].vlan_aware and bridges["vmbr100"].cidr == "172.16.100.0/24"
    assert 900 not in [c.vmid for c in env.guests.containers]
    options = [e for e in conversion.entries if e.path.startswith("lxc_configs.101.lxc_options")]
    macvlan = [e for e in options if e.path.endswith(("[3]", "[4]", "[5]"))]
    assert macvlan and all(e.disposition == "dropped" and "macvlan" in e.reason for e in macvlan)
    assert entry(conversion, HYPERVISOR, "firewall.enabled").reason.startswith("the datacenter firewall")
    full = convert("full", config)  # HEAD's place for it
    assert entry(full, HYPERVISOR, "shared_volumes.firewall.enabled").reason.startswith("the datacenter")
    assert entry(conversion, VMS, "vms[1].swarm_role").disposition == "dropped"


@pytest.mark.parametrize(
    ("file", "path", "disposition", "target"),
    [
        (LXC, "lxc_configs.801.memory_mb", "carried", "guests.json containers[2].memory_mib"),
        (
            LXC,
            "lxc_configs.801.vllm_engine_config.CacheConfig.gpu_memory_utilization",
            "carried",
            ".vllm.cache",
        ),
        (LXC, "lxc_configs.801.clone_from_ctid", "changed", ".layer"),
        (LXC, "lxc_configs.801.apparmor_profile", "changed", "apparmor_profile"),
        (LXC, "lxc_configs.801.ports[0]", "dropped", ""),
        (LXC, "lxc_configs.801.firewall.enabled", "changed", "firewall.enabled"),
        (LXC, "lxc_configs.101.swap_mb", "changed", "swap_mib"),
        (LXC, "lxc_configs.101.mount_points[0].owner_uid", "dropped", ""),
        (LXC, "lxc_configs.101.id_maps[0].host_id", "dropped", ""),
        (LXC, "lxc_configs.101.features[1]", "dropped", ""),  # trusted_ca: no Phoenix script
        (LXC, "lxc_configs.900.memory_mb", "dropped", ""),
        (
            LXC,
            "lxc_configs.901.gpu_assignment",
            "changed",
            "host.json gpus",
        ),  # a template: the layer's build is the chain's
        (LXC, "lxc_configs.900.template", "changed", "os_template"),
        (LXC, "lxc_configs.920.vllm_engine_config.ModelConfig.model", "dropped", ""),
        (LXC, "nvidia_driver_version", "carried", "nvidia.version"),
        (HYPERVISOR, "nvidia_driver.runfile_url", "carried", "nvidia.runfile_url"),
        (HYPERVISOR, "network.interfaces.address", "changed", "api.endpoint"),
        (HYPERVISOR, "portainer_api.admin_password", "dropped", ""),
        (HYPERVISOR, "samba.shares[0].path", "dropped", ""),
        (HYPERVISOR, "shared_volumes.vllm_models.host_path", "dropped", ""),
        (HYPERVISOR, "proxmox_storage_ids.tank_lxc", "carried", "storage.rootfs"),
        (VMS, "vms[0].template_image", "changed", "cloud_images"),
        (VMS, "vms[1].disk_size_gb", "changed", "disk_gib"),
        (VMS, "vms[1].features[1]", "dropped", ""),
        (VMS, "vms[2].dependencies[0]", "carried", "after"),
        (VMS, "vms[2].firewall.enabled", "carried", "firewall.enabled"),
        (VMS, "vms[2].network_config.nameserver", "changed", "dns.nameserver"),
        (LXC, "lxc_configs.101.network_config.nameservers", "carried", "dns.nameserver"),
        (VMS, "vms[1].dependencies[0]", "carried", "after"),
        (STACKS, "docker_stacks.webapp.environments.production.variables[1].value", "dropped", ""),
    ],
)
def test_dispositions(config: Path, file: str, path: str, disposition: str, target: str) -> None:
    found = entry(convert("full", config), file, path)
    assert found.disposition == disposition
    assert target in found.target
    assert found.reason or disposition == "carried"


def test_full_fixture_findings(config: Path) -> None:
    conversion = convert("full", config)
    found = kinds(conversion)
    assert found.count("unconfined-apparmor") == 7  # every guest container
    assert found.count("plaintext-secret") == 2  # the Portainer password, DATABASE_PASS
    assert "placeholder" in found  # ssh.host_key
    existing = next(f for f in conversion.findings if f.kind == "existing-guests")
    assert "101, 103, 801, 802, 803, 914, 950, 1001, 1002" in existing.message
    stacks = [f for f in conversion.findings if f.kind == "compose-stack"]
    assert [f.where.split()[1] for f in stacks] == [
        "vms[1].docker_stacks[0]",
        "vms[2].docker_stacks[0]",
        "vms[2].docker_stacks[1]",
    ]
    assert (
        "secrets DATABASE_PASS" in stacks[2].action
        and '{"name": "webapp", "guest": 1002}' in stacks[2].action
    )
    servers = [f for f in conversion.findings if f.kind == "model-server"]
    assert [f.where for f in servers] == [f"{LXC} lxc_configs.914 (CT 914 ollama-gpu1)"]
    assert not any(f.blocking for f in conversion.findings)
    secrets = [f.where for f in conversion.findings if f.kind == "plaintext-secret"]
    assert any("admin_password" in w for w in secrets) and any("variables[1].value" in w for w in secrets)
    assert "hunter2" not in json.dumps([conversion.host, conversion.guests])  # never carried


def _nodes(data: Any, at: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
    """Every key path at or under ``at`` (objects and lists included, not only leaves)."""
    yield at
    children = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in children:
        yield from _nodes(value, (*at, key))


def test_odd_values_are_reported_and_never_crash_the_import(config: Path) -> None:
    """Each value of one container, one VM and the host file's sections, replaced by a string and by null:
    the import still reports every field of its input and raises nothing."""
    docs = read_bash(FIXTURES / "full" / "etc")
    ref = reference(config)
    paths = [
        *((LXC, p) for p in _nodes(docs[LXC]["lxc_configs"]["801"], ("lxc_configs", "801"))),
        *((VMS, p) for p in _nodes(docs[VMS]["vms"][2], ("vms", 2))),
        *((HYPERVISOR, (key,)) for key in docs[HYPERVISOR]),
        *((HYPERVISOR, ("network", key)) for key in docs[HYPERVISOR]["network"]),
    ]
    for file, path in paths:
        for odd in ("x", None):
            mutated = json.loads(json.dumps(docs))
            parent = mutated[file]
            for key in path[:-1]:
                parent = parent[key]
            parent[path[-1]] = odd
            conversion = convert_docs(mutated, FACTS, ref)
            expected = {(f, render_path(p)) for f in FILES for p, _ in leaves(mutated[f])}
            assert {(e.file, e.path) for e in conversion.entries} == expected, (file, path, odd)


# ---------------------------------------------------------------- finding cases


@pytest.mark.parametrize(
    ("case", "kind", "left_out", "check"),
    [
        ("gpu_oversubscribed", "gpu-oversubscribed", 804, None),
        ("duplicate_ip", "duplicate-ip", 802, None),
        ("duplicate_mac", "duplicate-mac", 802, None),
        ("vllm_without_gpu", "invalid", 802, None),
        ("privileged", "privileged", None, (802, "unprivileged", True)),
        ("firewall_disabled", "firewall-disabled", None, (801, "firewall", {"enabled": False})),
        ("boot_order", "boot-order", None, (802, "startup", {"up": 5, "down": 5})),
    ],
)
def test_mistakes_become_findings_and_the_rest_validates(
    config: Path, case: str, kind: str, left_out: int | None, check: tuple[int, str, Any] | None
) -> None:
    conversion = convert(case, config)
    assert kind in kinds(conversion), [str(f) for f in conversion.findings]
    assert not conversion.blocked
    env = write_and_load(conversion, config, case.replace("_", "-"))
    vmids = [c.vmid for c in env.guests.containers]
    finding = next(f for f in conversion.findings if f.kind == kind)
    if left_out is not None:
        assert left_out not in vmids and finding.action == "left the guest out"
        assert f"lxc_configs.{left_out}" in finding.where
        # its fields say so in the report, instead of pointing at a guest that is not there
        gone = [e for e in conversion.entries if e.path.startswith(f"lxc_configs.{left_out}.")]
        assert gone and all(e.disposition == "dropped" and "left out" in e.reason for e in gone)
    if check is not None:
        vmid, key, value = check
        guest = next(c for c in conversion.guests["containers"] if c["vmid"] == vmid)
        assert guest.get(key, True if key == "unprivileged" else None) == value
        assert vmid in vmids


def test_a_boot_order_not_after_its_dependency_is_derived_instead(config: Path) -> None:
    env = write_and_load(convert("boot_order", config), config, "boot-order")
    orders = {c.vmid: c.startup.order if c.startup else None for c in env.guests.containers}
    assert orders[801] == 6 and orders[802] == 7  # one more than the guest it starts after


def test_gpu_oversubscription_names_the_guests_and_the_sum(config: Path) -> None:
    finding = next(
        f for f in convert("gpu_oversubscribed", config).findings if f.kind == "gpu-oversubscribed"
    )
    assert "GPU 0" in finding.message and "1.4 > 1.0" in finding.message
    assert "CT 801 vllm-embed 0.1" in finding.message and "CT 802 vllm-chat 0.8" in finding.message


def test_a_runfile_no_environment_pins_blocks_until_its_checksum_is_given(config: Path) -> None:
    blocked = convert("no_checksum", config)
    assert blocked.blocked
    finding = next(f for f in blocked.findings if f.kind == "no-checksum")
    assert finding.blocking and "--nvidia-sha256" in finding.action
    given = convert("no_checksum", config, Facts(gpu_memory_mib=GPU_MIB, nvidia_sha256="ab" * 32))
    assert not given.blocked
    env = write_and_load(given, config, "mirror")
    assert env.host.nvidia is not None and env.host.nvidia.sha256 == "ab" * 32
    assert "mirror.lab.example.net" in env.host.nvidia.runfile_url


def test_gpu_memory_is_a_fact_the_user_gives(config: Path) -> None:
    conversion = convert("full", config, Facts())
    assert [f.kind for f in conversion.findings if f.blocking] == ["gpu-memory"]


def test_a_given_fact_phoenix_refuses_blocks_naming_the_field(config: Path) -> None:
    conversion = convert("full", config, Facts(gpu_memory_mib=GPU_MIB, node="pve_01"))
    blocking = [f for f in conversion.findings if f.blocking]
    assert [f.kind for f in blocking] == ["invalid"]
    assert blocking[0].where == "host.json" and blocking[0].message.startswith("node:")


# ---------------------------------------------------------------- the command


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["import", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_command_writes_validates_and_refuses_to_overwrite(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = str(FIXTURES / "full")  # the phoenix_hypervisor directory: etc/ is found under it
    args = ["--from-bash", source, "--environment", "home", "--config", str(config)]
    args += ["--gpu-memory-mib", str(GPU_MIB), "--report", str(tmp_path / "report.json")]
    code, out, err = run(args, capsys)
    assert code == 0, err
    assert "Report: 564 fields" in out and "legacy_flag: unknown to the importer" in out
    assert "[unconfined-apparmor]" in out and "`phoenix validate --env home`: ok" in out
    written = json.loads((config / "environments" / "home" / "guests.json").read_text())
    assert written["$schema"] == "../../schema/guests.schema.json"
    host = json.loads((config / "environments" / "home" / "host.json").read_text())
    assert host["$schema"] == "../../schema/host.schema.json"
    assert main(["validate", "--config", str(config), "--env", "home"]) == 0
    capsys.readouterr()
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["written"] is True and len(report["entries"]) == 564
    assert {"file", "path", "disposition", "target", "reason"} == set(report["entries"][0])
    assert any(f["kind"] == "unconfined-apparmor" for f in report["findings"])
    for secret in ("hunter2-not-a-real-one", "prod-password-in-git"):  # reported by path, never by value
        assert secret not in out + err and secret not in (tmp_path / "report.json").read_text()

    code, _, err = run(args, capsys)
    assert code == 2 and "exists; pass --force to overwrite it" in err
    code, _, err = run([*args, "--force"], capsys)
    assert code == 0, err


def test_command_writes_elsewhere_with_out_and_loads_it_there(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "elsewhere" / "home"
    args = ["--from-bash", str(FIXTURES / "full" / "etc"), "--environment", "home", "--config", str(config)]
    code, out, err = run([*args, "--gpu-memory-mib", "8192", "--out", str(out_dir)], capsys)
    assert code == 0, err
    assert (out_dir / "host.json").is_file() and not (config / "environments" / "home").exists()
    assert json.loads((out_dir / "host.json").read_text())["$schema"].endswith(
        "config/schema/host.schema.json"
    )


def test_command_blocked_by_a_finding_writes_nothing(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--from-bash", str(FIXTURES / "no_checksum"), "--environment", "mirror", "--config", str(config)]
    code, out, err = run([*args, "--gpu-memory-mib", "8192"], capsys)
    assert code == 2 and "Nothing written" in err and "[no-checksum]" in out
    assert not (config / "environments" / "mirror").exists()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing_file", "phoenix_vm_configs.json: $: file not found"),
        ("bad_json", "phoenix_vm_configs.json: line 2 column 17: invalid JSON"),
        ("not_bash_format", "phoenix_lxc_configs.json: lxc_configs: not the bash format"),
    ],
)
def test_input_that_is_not_the_bash_format_is_exit_2_naming_the_file(
    config: Path, case: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--from-bash", str(FIXTURES / case), "--environment", "x", "--config", str(config)]
    code, out, err = run(args, capsys)
    assert code == 2 and message in err and "Traceback" not in err + out
    assert not (config / "environments" / "x").exists()
    with pytest.raises(ConfigError):
        read_bash(FIXTURES / case / "etc")


def test_from_bash_and_from_host_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["import", "--from-bash", "x", "--from-host"])
    assert exit_.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_from_host_without_its_module_says_not_available_yet(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:  # TEST-ONLY: as if cli/host_import.py were not there yet
        return None if name == cli_main.HOST_IMPORT else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    code, _, err = run(["--from-host", "--stack", "dev"], capsys)
    assert code == 2 and "not available yet" in err


def test_from_host_is_dispatched_to_host_import(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if importlib.util.find_spec(cli_main.HOST_IMPORT) is None:
        pytest.skip("cli/host_import.py is not there yet (the not-available path is tested above)")
    module = importlib.import_module(cli_main.HOST_IMPORT)
    seen: list[argparse.Namespace] = []

    def stand_in(args: argparse.Namespace) -> int:  # TEST-ONLY: records what the dispatcher passes
        seen.append(args)
        return 0

    monkeypatch.setattr(module, "import_from_host", stand_in)
    code, _, _ = run(["--from-host", "--stack", "lab"], capsys)
    assert code == 0 and len(seen) == 1
    assert seen[0].from_host is True and seen[0].from_bash is None and seen[0].stack == "lab"
