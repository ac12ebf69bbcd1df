"""The import mapping (phoenix_components/render/from_host.py): a live container's PVE config and config
file become a guests.json entry that validates as a Container and that, adopted, sends nothing (the
round trip through the program's own rendering); what the model cannot say is listed by guest and key.

The configs are written the way PVE 8's API answers ``GET /nodes/{node}/lxc/{vmid}/config`` (numbers as
numbers, property strings in PVE's order) and pmxcfs renders ``/etc/pve/lxc/<vmid>.conf``.
"""

from __future__ import annotations

from typing import Any

from phoenix_components.config.models import Container, HostGpu
from phoenix_components.render.from_host import adoption_sends, container_from_pve

GPUS = [HostGpu(index=0, minor=1, memory_mib=24576), HostGpu(index=1, minor=0, memory_mib=24576)]
MAC0, MAC1 = "BC:24:11:5E:7A:01", "BC:24:11:5E:7A:02"
CONFIG: dict[str, Any] = {
    "arch": "amd64",
    "cores": 4,
    "memory": 8192,
    "swap": 0,
    "hostname": "inference-1",
    "description": "vLLM box made by hand\n",
    "net0": f"name=eth0,bridge=vmbr0,firewall=1,gw=10.0.10.1,hwaddr={MAC0},ip=10.0.10.40/24,tag=20,type=veth",
    "net1": f"name=eth1,bridge=vmbr1,hwaddr={MAC1},ip=dhcp,type=veth",
    "rootfs": "local-zfs:subvol-140-disk-0,size=32G",
    "mp0": "local-zfs:subvol-140-disk-1,mp=/data,backup=1,size=100G",
    "mp1": "/srv/models,mp=/models,ro=1",
    "dev0": "/dev/nvidia0,mode=0666",
    "dev1": "/dev/nvidiactl,mode=0666",
    "dev2": "/dev/nvidia-uvm,mode=0666",
    "dev3": "/dev/nvidia-uvm-tools,mode=0666",
    "features": "keyctl=1,nesting=1",
    "onboot": 1,
    "startup": "order=2,up=30",
    "nameserver": "10.0.10.1 1.1.1.1",
    "searchdomain": "lab.internal",
    "tags": "gpu;inference",
    "unprivileged": 1,
    "ostype": "debian",
    "digest": "3f2a",
}
CONF = "\n".join(
    [f"{k}: {v}" for k, v in CONFIG.items() if k not in ("digest", "description")]
    + ["lxc.apparmor.profile: lxc-container-default-cgns", "lxc.cgroup2.devices.allow: c 195:* rwm"]
    + ["", "[before-upgrade]", "lxc.apparmor.profile: unconfined", "cores: 2"]
)
OPTIONS = {"enable": 1, "policy_in": "DROP", "policy_out": "ACCEPT", "digest": "x"}
RULES = [
    {"pos": 1, "type": "in", "action": "ACCEPT", "proto": "tcp", "dport": "22", "enable": 1, "ipversion": 4},
    {
        "pos": 0,
        "type": "in",
        "action": "ACCEPT",
        "proto": "tcp",
        "dport": "8000",
        "comment": "vllm",
        "enable": 1,
    },
]


def imported(**over: Any) -> Any:
    config = {**CONFIG, **over}
    return container_from_pve(140, config, CONF, gpus=GPUS, firewall_options=OPTIONS, firewall_rules=RULES)


def test_every_mappable_setting_is_carried_and_the_entry_validates() -> None:
    result = imported()
    assert result.entry is not None
    ct = Container.model_validate(result.entry)
    assert (ct.vmid, ct.hostname, ct.adopt, ct.layer, ct.retained) == (140, "inference-1", True, None, True)
    assert (ct.cores, ct.memory_mib, ct.swap_mib, ct.disk_gib) == (4, 8192, 0, 32)
    assert ct.description == "vLLM box made by hand\n"
    assert (ct.network.ip, ct.network.gateway, ct.network.mac, ct.network.vlan) == (
        "10.0.10.40/24",
        "10.0.10.1",
        MAC0,
        20,
    )
    assert ct.network.firewall and not ct.networks[0].firewall
    assert (ct.networks[0].bridge, ct.networks[0].ip, ct.networks[0].mac) == ("vmbr1", "dhcp", MAC1)
    assert ct.gpus == [1], "/dev/nvidia0 is minor 0, which host.json says is GPU index 1"
    assert ct.pve_features.nesting and ct.pve_features.keyctl and not ct.pve_features.fuse
    volume, bind = ct.mounts
    assert volume.model_dump() == {
        "type": "volume",
        "path": "/data",
        "storage": "local-zfs",
        "size_gib": 100,
        "backup": True,
    }
    assert bind.model_dump() == {
        "type": "bind",
        "path": "/models",
        "host_path": "/srv/models",
        "read_only": True,
    }
    assert ct.apparmor_profile == "lxc-container-default-cgns"
    assert ct.firewall.enabled and [(r.dport, r.comment) for r in ct.firewall.rules] == [
        ("8000", "vllm"),
        ("22", None),
    ], "in PVE's order (pos), not the answer's"
    assert ct.start_on_boot and ct.startup is not None and (ct.startup.order, ct.startup.up) == (2, 30)
    assert ct.dns is not None and ct.dns.nameserver == ["10.0.10.1", "1.1.1.1"]
    assert ct.dns.searchdomain == "lab.internal" and ct.tags == ["gpu", "inference"]


def test_what_cannot_be_mapped_is_listed_by_guest_and_key_with_the_reason() -> None:
    lines = [u.line() for u in imported().unmapped]
    assert any(line.startswith("CT 140 (inference-1) arch: amd64: not in Phoenix's") for line in lines)
    assert any(line.startswith("CT 140 (inference-1) ostype: debian") for line in lines)
    assert any(
        "lxc.cgroup2.devices.allow: a raw line Phoenix declares no field for" in line for line in lines
    )
    assert not any("digest" in line or "before-upgrade" in line for line in lines)
    assert len(lines) == 3, lines


def test_the_imported_entry_adopted_sends_nothing() -> None:
    result = imported()
    assert result.entry is not None
    ct = Container.model_validate(result.entry)
    assert adoption_sends(ct, CONFIG, CONF, gpus=GPUS) == {}
    changed = ct.model_copy(update={"memory_mib": 16384})
    assert adoption_sends(changed, CONFIG, CONF, gpus=GPUS) == {"memory": (8192, 16384)}


def test_pve_defaults_fill_keys_a_config_leaves_out() -> None:
    bare = {"hostname": "bare", "unprivileged": 1, "net0": "name=eth0,bridge=vmbr0,ip=dhcp,type=veth"}
    result = container_from_pve(150, bare, "")
    assert result.entry is not None
    ct = Container.model_validate(result.entry)
    assert (ct.memory_mib, ct.swap_mib, ct.start_on_boot, ct.firewall.enabled) == (512, 512, False, False)
    assert [u.key for u in result.unmapped] == ["cores"]
    assert "all host CPUs" in result.unmapped[0].reason


def test_guests_phoenix_cannot_take_are_not_imported_and_say_why() -> None:
    privileged = imported(unprivileged=0)
    assert privileged.entry is None and privileged.unmapped[0].key == "unprivileged"
    assert "not imported" in privileged.unmapped[0].reason
    nameless = container_from_pve(141, {"unprivileged": 1, "net0": CONFIG["net0"]}, "")
    assert nameless.entry is None and nameless.unmapped[0].key == "hostname"
    offline = container_from_pve(142, {"hostname": "x", "unprivileged": 1}, "")
    assert offline.entry is None and offline.unmapped[0].key == "net0"


def test_a_rule_the_model_cannot_say_turns_the_firewall_off_so_phoenix_leaves_it_alone() -> None:
    macro = [*RULES, {"pos": 2, "type": "in", "action": "ACCEPT", "macro": "SSH", "enable": 1}]
    result = container_from_pve(140, CONFIG, CONF, gpus=GPUS, firewall_options=OPTIONS, firewall_rules=macro)
    assert result.entry is not None and result.entry["firewall"] == {"enabled": False}
    (why,) = [u for u in result.unmapped if u.key.startswith("firewall")]
    assert why.key == "firewall.rules[2]" and "macro (no field)" in why.reason
    disabled = [{**RULES[0], "enable": 0}]
    off = container_from_pve(140, CONFIG, CONF, gpus=GPUS, firewall_options=OPTIONS, firewall_rules=disabled)
    assert off.entry is not None and off.entry["firewall"] == {"enabled": False}


def test_nic_and_mount_parts_without_a_field_are_named_with_what_would_happen() -> None:
    result = imported(
        net0=CONFIG["net0"] + ",ip6=auto,mtu=9000",
        mp0="local-zfs:subvol-140-disk-1,mp=/data,size=100G,acl=1",
        features="nesting=1,mount=nfs",
        dev4="/dev/dri/renderD128,gid=44",
    )
    reasons = {u.key: u.reason for u in result.unmapped}
    assert "dropped if Phoenix ever sends net0" in reasons["net0.ip6"] and "net0.mtu" in reasons
    assert "mp0.acl" in reasons and "features.mount" in reasons
    assert "Phoenix passes only NVIDIA GPUs" in reasons["dev4"]


def test_an_unconfined_profile_is_carried_with_the_decision_left_to_the_user() -> None:
    result = container_from_pve(
        140, CONFIG, CONF.replace("default-cgns", "default-cgns\nlxc.apparmor.profile: unconfined"), gpus=GPUS
    )
    assert result.entry is not None and result.entry["apparmor_profile"] == "unconfined"
    assert any("insecure.unconfined_apparmor" in u.reason for u in result.unmapped)


def test_a_gpu_whose_minor_host_json_does_not_declare_is_listed() -> None:
    result = container_from_pve(140, CONFIG, CONF, gpus=[])
    assert result.entry is not None and "gpus" not in result.entry
    assert [u.key for u in result.unmapped if u.key.startswith("dev")] == ["dev0"]
