"""The bash Phoenix's ``etc/`` JSON files turned into a Phoenix environment, with a report of every field.

The bash original (``phoenix_hypervisor``, public repository SirHeads/Testing-ideas,
``usr/local/phoenix_hypervisor/etc/``) keeps its platform in four files: ``phoenix_hypervisor_config.json``
(the host), ``phoenix_lxc_configs.json`` (containers, templates among them), ``phoenix_vm_configs.json``
(VMs and the cloud-image template) and ``phoenix_stacks_config.json`` (Docker Compose stacks).

:func:`convert` is pure: the four parsed documents, the facts the bash files do not hold (:class:`Facts`)
and what the Phoenix config offers (:class:`Reference`) in; a ``host.json`` and a ``guests.json`` as dicts,
one :class:`Entry` per input leaf (carried, changed or dropped, and why) and the :class:`Finding` list out.
Every leaf of the input gets exactly one entry; a key the importer does not know is "dropped: unknown to
the importer", never skipped.

How the bash model maps onto Phoenix's:

- a container another one clones from (``clone_from_ctid``) or marked ``is_template`` is a *template*: it
  becomes no guest, its features are matched to a layer of ``config/chain.json`` (shared by every
  environment, so the importer never writes one); each guest gets the layer whose lineage runs most of the
  features it inherits along its clone chain, and the rest as its own ``features`` where Phoenix has the
  script;
- the VM with ``is_template`` is the cloud-image template; the other VMs are clones of the image.

Mistakes Phoenix's validation refuses come out as findings, with what the importer did about them: the safe
default set (a confined AppArmor profile for ``unconfined``, unprivileged for a privileged container), or
the guest left out (GPU memory oversubscribed, a duplicate IP or MAC, anything else validation refuses of
one guest). After the known cases, the importer validates the result with Phoenix's own checks
(:func:`phoenix_components.config.load.check_environment`) and leaves out each guest that still fails,
naming the problem. What only the user can supply (the runfile's checksum, the GPUs' memory) blocks the
import, with the option that supplies it.
"""

from __future__ import annotations

import ipaddress
import re
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import ValidationError

from phoenix_components.config.load import (
    Problem,
    _Files,
    check_environment,
    guest_labels,
    json_path,
    name_guests,
)
from phoenix_components.config.models import Chain, Container, Guests, Host

HYPERVISOR = "phoenix_hypervisor_config.json"
LXC = "phoenix_lxc_configs.json"
VMS = "phoenix_vm_configs.json"
STACKS = "phoenix_stacks_config.json"
FILES = (HYPERVISOR, LXC, VMS, STACKS)
# The top-level key each file must have to be the bash format at all, and its JSON type.
SHAPES: dict[str, tuple[str, type]] = {
    HYPERVISOR: ("nvidia_driver", dict),
    LXC: ("lxc_configs", dict),
    VMS: ("vms", list),
    STACKS: ("docker_stacks", dict),
}

# The fingerprint placeholder the shipped example environments use: SSH refuses to connect until it is
# replaced by the host's real key, so it can stand in for the fact the bash files lack without risk.
HOST_KEY_PLACEHOLDER = "SHA256:REPLACEwithYOURhostKEYfromSSHkeygenLFabcdef"
# Phoenix's own static profiles (apparmor/), by what the guest needs: only gpu-docker reaches /dev/nvidia*,
# nesting carries Docker's mounts, confined is the hardened default.
PROFILE_GPU = "phoenix-lxc-gpu-docker"
PROFILE_NESTING = "phoenix-lxc-nesting"
PROFILE_CONFINED = "phoenix-lxc-confined"
# Names of values that are secrets when they appear in a bash file in plain text.
SECRET_NAME = re.compile(r"pass(word)?|secret|token|api_key|private", re.IGNORECASE)
HOSTNAME = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$")
COMMENT = re.compile(r"^[^\n\r#]{0,120}$")

Disposition = Literal["carried", "changed", "dropped"]
Key = str | int
UNKNOWN = "unknown to the importer"


@dataclass(frozen=True)
class Entry:
    """What became of one input field (a leaf of the JSON: a scalar, an empty list or object)."""

    file: str
    path: str
    disposition: Disposition
    target: str = ""  # the Phoenix field(s) it reached, e.g. `guests.json containers[2].memory_mib`
    reason: str = ""

    def __str__(self) -> str:
        to = f" -> {self.target}" if self.target else ""
        why = f" ({self.reason})" if self.reason else ""
        return f"{self.disposition:8} {self.file} {self.path}{to}{why}"


@dataclass(frozen=True)
class Finding:
    """A mistake of the original that Phoenix would refuse, or a fact the importer had to assume."""

    kind: str  # e.g. "gpu-oversubscribed", "unconfined-apparmor", "no-checksum"
    where: str  # `phoenix_lxc_configs.json lxc_configs.801 (CT 801 granite-embedding)`
    message: str
    action: str  # what the importer did about it
    blocking: bool = False  # nothing can be written until the user decides

    def __str__(self) -> str:
        return f"[{self.kind}] {self.where}: {self.message}. Importer: {self.action}"


@dataclass(frozen=True)
class Facts:
    """What Phoenix needs and the bash files do not say (``phoenix import`` options)."""

    node: str | None = None
    ssh_host_key: str | None = None
    nvidia_sha256: str | None = None
    gpu_memory_mib: int | None = None


@dataclass(frozen=True)
class Reference:
    """What the Phoenix config (``config/``) offers the import: the shared chain and what it needs."""

    chain: Chain
    scripts: frozenset[str]  # feature scripts under config/features/
    fresh_guest: frozenset[str]  # those of them that need a fresh guest (config.features.fresh_guest_scripts)
    profiles: frozenset[str]  # AppArmor profile files under apparmor/
    # OS templates and a cloud image of an existing environment, with the file they come from.
    os_templates: Mapping[str, tuple[dict[str, Any], str]] = field(default_factory=dict)
    cloud_image: tuple[str, dict[str, Any], str] | None = None
    # runfile URL -> (sha256, the file that pins it)
    runfile_checksums: Mapping[str, tuple[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Conversion:
    host: dict[str, Any]
    guests: dict[str, Any]
    entries: list[Entry]
    findings: list[Finding]

    @property
    def blocked(self) -> bool:
        return any(f.blocking for f in self.findings)

    def counts(self) -> dict[str, int]:
        counts = {"carried": 0, "changed": 0, "dropped": 0}
        for entry in self.entries:
            counts[entry.disposition] += 1
        return counts


def render_path(keys: Sequence[Key]) -> str:
    """``("lxc_configs", "801", "memory_mb")`` -> ``lxc_configs.801.memory_mb``; list indices as ``[i]``."""
    out = ""
    for key in keys:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else key)
    return out or "$"


def leaves(data: Any, at: tuple[Key, ...] = ()) -> Iterator[tuple[tuple[Key, ...], Any]]:
    """Every leaf of a JSON value with its key path; an empty object or list is a leaf of its own."""
    if isinstance(data, dict) and data:
        for key, value in data.items():
            yield from leaves(value, (*at, key))
    elif isinstance(data, list) and data:
        for i, value in enumerate(data):
            yield from leaves(value, (*at, i))
    else:
        yield at, data


class _Recorder:
    """One entry per input leaf. A subtree is recorded as each of its leaves; a leaf recorded once stays."""

    def __init__(self, docs: Mapping[str, Any]) -> None:
        self.docs = docs
        self.entries: dict[tuple[str, str], Entry] = {}

    def get(self, file: str, keys: Sequence[Key]) -> Any:
        value = self.docs[file]
        for key in keys:
            value = value[key]
        return value

    def has(self, file: str, keys: Sequence[Key]) -> bool:
        try:
            self.get(file, keys)
        except (KeyError, IndexError, TypeError):
            return False
        return True

    def record(
        self, file: str, keys: Sequence[Key], disposition: Disposition, target: str = "", reason: str = ""
    ) -> None:
        if not self.has(file, keys):
            return
        for leaf, _ in leaves(self.get(file, keys), tuple(keys)):
            self.entries.setdefault(
                (file, render_path(leaf)), Entry(file, render_path(leaf), disposition, target, reason)
            )

    def carry(self, file: str, keys: Sequence[Key], target: str, reason: str = "") -> None:
        self.record(file, keys, "carried", target, reason)

    def change(self, file: str, keys: Sequence[Key], target: str, reason: str) -> None:
        self.record(file, keys, "changed", target, reason)

    def drop(self, file: str, keys: Sequence[Key], reason: str) -> None:
        self.record(file, keys, "dropped", "", reason)

    def empty(self, file: str, keys: Sequence[Key]) -> None:
        """An empty list or object given for ``keys`` (a leaf of its own): dropped, as it says nothing."""
        if self.has(file, keys) and self.get(file, keys) in ([], {}):
            self.drop(file, keys, "empty")

    def unknown_rest(self) -> None:
        for file in FILES:
            for leaf, _ in leaves(self.docs[file]):
                self.entries.setdefault(
                    (file, render_path(leaf)), Entry(file, render_path(leaf), "dropped", "", UNKNOWN)
                )

    def drop_under(self, file: str, prefix: str, reason: str) -> None:
        """Every entry at or under ``prefix`` becomes dropped (a guest left out)."""
        for key, entry in list(self.entries.items()):
            if key[0] == file and (
                entry.path == prefix or entry.path.startswith((prefix + ".", prefix + "["))
            ):
                self.entries[key] = replace(entry, disposition="dropped", target="", reason=reason)

    def ordered(self) -> list[Entry]:
        order = {f: i for i, f in enumerate(FILES)}
        position = {
            (file, render_path(leaf)): n
            for file in FILES
            for n, (leaf, _) in enumerate(leaves(self.docs[file]))
        }
        return sorted(self.entries.values(), key=lambda e: (order[e.file], position.get((e.file, e.path), 0)))


# ---------------------------------------------------------------- what is dropped, and why

HOST_DROPPED: dict[str, str] = {
    "$schema": "an editor hint of the bash files",
    "version": "metadata of the bash config; Phoenix's config is versioned by git",
    "author": "metadata of the bash config",
    "users": "Phoenix manages no host users or PVE ACLs; the accounts stay as the host has them",
    "core_paths": "paths of the bash installation itself",
    "timezone": "Phoenix sets no host timezone (and its base_setup feature sets Etc/UTC in guests)",
    "docker": "Portainer is not modelled by Phoenix",
    "nfs": "Phoenix runs no NFS server; exports stay as the host has them",
    "samba": "Phoenix runs no Samba server; shares stay as the host has them",
    "mount_point_base": "bash-only: where its bind-mount sources live; Phoenix mounts name full host paths",
    "proxmox_defaults": "never read by the bash original (dead config)",
    "tests": "host test suites are not modelled by Phoenix",
    "behavior": "never read by the bash original",
    "shared_volumes": "legacy bind-mount map, never read by the bash original",
    "firewall": "the datacenter firewall (cluster.fw) is not managed by Phoenix; guest firewalls are",
    "portainer_api": "Portainer is not modelled by Phoenix",
    "dns_server": "Phoenix runs no DNS server (dnsmasq stays as the host has it)",
    "step_ca": "the step-ca PKI is not modelled by Phoenix",
}
NETWORK_DROPPED: dict[str, str] = {
    "external_registry_url": "never read by the bash original",
    "portainer_server_ip": "Portainer is not modelled by Phoenix",
    "portainer_server_port": "Portainer is not modelled by Phoenix",
    "portainer_agent_port": "Portainer is not modelled by Phoenix",
    "default_subnet": "Phoenix takes the subnet from the bridge (host.json bridges[0].cidr)",
    "nfs_server": "NFS is not modelled by Phoenix",
    "fallback_dns": "the host's resolvers are not managed by Phoenix",
    "workgroup": "Samba is not modelled by Phoenix",
    "public_bridge": "the bridge itself is interfaces.name; a guest on a VLAN of it gets network.vlan",
    "public_vlan_tag": "host VLAN sub-interfaces are not managed; a guest on vmbrN.V gets network.vlan",
    "macvlan_vlan_tag": "macvlan networking is not modelled by Phoenix",
}
CT_DROPPED: dict[str, str] = {
    "portainer_role": "Portainer is not modelled by Phoenix (and the bash original never applied it)",
    "template_snapshot_name": "Phoenix layers are PVE templates; a linked clone needs no snapshot",
    "template_file": "Phoenix guests are linked clones of a layer; a vzdump tarball restore is not modelled",
    "id_maps": "no idmap key in Phoenix (the bash original ignored these values and wrote the default map)",
    "ports": "informational in the bash original (never applied); a Phoenix port opens the firewall to "
    "everyone, so the guest's own firewall rules stay its only openings",
    "health_check": "in-guest health commands are not modelled (the bash original never ran them either; "
    "vLLM guests get Phoenix's vLLM health gate)",
    "tests": "post-deploy test suites are not modelled by Phoenix",
    "trigger_sync_on_completion": "Portainer sync is not modelled by Phoenix",
    "traefik_service": "Traefik routes and DNS records are not modelled by Phoenix",
    "bootstrap_ca_url": "the step-ca features that took it (trusted_ca, step_cli) have no Phoenix script",
    "apparmor_manages_nesting": "nesting comes from pve_features.nesting and Phoenix's nesting profile",
}
VM_DROPPED: dict[str, str] = {
    "portainer_role": "Portainer is not modelled by Phoenix",
    "portainer_environment_name": "Portainer is not modelled by Phoenix",
    "portainer_agent_hostname": "Portainer is not modelled by Phoenix",
    "traefik_service": "Traefik routes and DNS records are not modelled by Phoenix",
    "volumes": "NFS mounts inside VMs are not modelled by Phoenix",
    "docker_stacks": "a placement of a Compose stack: see the compose-stack finding for what to copy where",
    "dns_records": "DNS records are not modelled by Phoenix",
    "snapshots": "never taken by the bash original (a no-op)",
    "count": "never read by the bash original",
    "qm_options": "never read by the bash original",
    "trigger_sync_on_completion": "Portainer sync is not modelled by Phoenix",
    "swarm_role": "Docker Swarm is not modelled by Phoenix",
    "node_labels": "Docker Swarm is not modelled by Phoenix",
    "iptables_rules": "raw iptables rules are not modelled; guest firewall rules are",
    "template_snapshot_name": "never created by the bash original; Phoenix's image template needs none",
}
LXC_ROOT_NVIDIA = {
    "nvidia_repo_url": "hard-coded CUDA repository for the bash nvidia feature; Phoenix's nvidia feature "
    "installs the driver's userspace from the runfile",
}


# Lists a guest may give empty; an empty one is a leaf of its own, reported as such.
GUEST_LISTS = (
    "features",
    "pct_options",
    "lxc_options",
    "mount_points",
    "zfs_volumes",
    "volumes",
    "dependencies",
)


def _empty_lists(rec: _Recorder, file: str, base: tuple[Key, ...]) -> None:
    for key in GUEST_LISTS:
        rec.empty(file, (*base, key))


def _obj(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one (the value is then reported on its own)."""
    return value if isinstance(value, dict) else {}


def _items(raw: Mapping[str, Any], key: str) -> list[tuple[int, Any]]:
    """``enumerate`` of the list at ``key``; nothing when it is not a list (its leaf is then reported as
    a key the importer does not understand)."""
    value = raw.get(key)
    return list(enumerate(value)) if isinstance(value, list) else []


def _names(raw: Mapping[str, Any], key: str) -> list[tuple[int, str]]:
    """The strings of the list at ``key`` (anything else in it is reported as not understood)."""
    return [(i, value) for i, value in _items(raw, key) if isinstance(value, str)]


def _loc(file: str, keys: Sequence[Key], label: str = "") -> str:
    where = f"{file} {render_path(keys)}"
    return f"{where} ({label})" if label else where


# ---------------------------------------------------------------- the conversion


@dataclass
class _Guest:
    """A guest being built: its output dict, where it came from, its label."""

    kind: Literal["containers", "vms"]
    data: dict[str, Any]
    file: str
    keys: tuple[Key, ...]
    label: str


@dataclass
class _State:
    rec: _Recorder
    ref: Reference
    facts: Facts
    findings: list[Finding] = field(default_factory=list)
    bridges: dict[str, dict[str, Any]] = field(default_factory=dict)
    rootfs_pools: list[str] = field(default_factory=list)
    profiles: set[str] = field(default_factory=set)
    gpus: set[int] = field(default_factory=set)
    templates: dict[str, str] = field(default_factory=dict)  # bash template CTID -> Phoenix layer
    guests: list[_Guest] = field(default_factory=list)
    zfs_datasets: list[Any] = field(default_factory=list)  # the bash zfs.datasets, to find storage.zfs_pool
    storage_ids: dict[str, Any] = field(default_factory=dict)  # the bash proxmox_storage_ids

    def find(self, kind: str, where: str, message: str, action: str, blocking: bool = False) -> None:
        self.findings.append(Finding(kind, where, message, action, blocking))


def convert(docs: Mapping[str, Any], facts: Facts, ref: Reference) -> Conversion:
    """The environment the bash files describe, the report of every field, and the findings.

    ``docs`` maps each of :data:`FILES` to its parsed JSON, each with its top-level key of the type
    :data:`SHAPES` names (``phoenix_components.cli.bash_import.read_bash`` checks that); below that, any
    value of any type is reported, never a crash.
    """
    state = _State(_Recorder(docs), ref, facts)
    host = _host(docs[HYPERVISOR], state)
    _lxc_root(docs[LXC], host, state)
    templates = template_ctids(docs[LXC]["lxc_configs"])
    for ctid, raw in docs[LXC]["lxc_configs"].items():
        if ctid in templates:
            _template(ctid, raw, docs[LXC]["lxc_configs"], state)
    for ctid, raw in docs[LXC]["lxc_configs"].items():
        if ctid not in templates and isinstance(raw, dict):
            _container(ctid, raw, docs[LXC]["lxc_configs"], state)
    _vm_file(docs[VMS], docs[HYPERVISOR], host, state)
    _stacks(docs[STACKS], docs[VMS], state)
    _host_from_guests(host, state)
    _fit_gpus(state)
    _unique_addresses(state)
    _order_agrees(state)
    state.rec.unknown_rest()
    # A blocked import writes nothing, so its validation would only repeat the blocking finding.
    blocked = any(f.blocking for f in state.findings)
    guests = _guests_doc(state) if blocked else _validated(host, state)
    if state.guests:
        vmids = ", ".join(str(v) for v in sorted(g.data["vmid"] for g in state.guests))
        state.find(
            "existing-guests",
            "guests.json",
            f"the bash original made these guests on the host already ({vmids}); Phoenix creates each as a "
            "new linked clone of its layer under the same vmid, and PVE refuses a vmid that exists",
            "wrote them to be built anew: before `up`, back up their data and remove them from the host, or "
            "keep them as they run with `phoenix import --from-host` (adopted, from no layer) instead",
        )
    return Conversion(host, guests, state.rec.ordered(), state.findings)


def template_ctids(configs: Mapping[str, Any]) -> set[str]:
    """Containers that are templates: marked ``is_template`` or cloned from by another container."""
    cloned = {str(c.get("clone_from_ctid")) for c in configs.values() if isinstance(c, dict)}
    marked = {k for k, c in configs.items() if isinstance(c, dict) and c.get("is_template") is True}
    return (cloned | marked) & set(configs)


def inherited_features(ctid: str, configs: Mapping[str, Any]) -> list[str]:
    """Features along the clone chain, the root template's first (bash is_feature_present_on_container)."""
    features: list[str] = []
    seen: set[str] = set()
    current: str | None = ctid
    while current is not None and current in configs and current not in seen:
        seen.add(current)
        config = configs[current] if isinstance(configs[current], dict) else {}
        features[:0] = [f for _, f in _names(config, "features") if f not in features]
        parent = config.get("clone_from_ctid")
        current = str(parent) if parent is not None else None
    return list(dict.fromkeys(features))


def lineage(chain: Chain, layer: str) -> list[str]:
    names = [layer]
    while (parent := chain.layers[names[0]].parent) is not None and parent not in names:
        names.insert(0, parent)
    return [f for name in names for f in chain.layers[name].features]


def best_layer(features: Sequence[str], chain: Chain) -> str:
    """The layer whose lineage runs most of ``features``, then the one adding least besides."""
    wanted = set(features)

    def score(name: str) -> tuple[int, int, str]:
        runs = set(lineage(chain, name))
        return (-len(runs & wanted), len(runs - wanted), name)

    return min(chain.layers, key=score)


# ---------------------------------------------------------------- host


def _host(doc: dict[str, Any], state: _State) -> dict[str, Any]:
    rec, facts = state.rec, state.facts
    f = HYPERVISOR
    # HEAD keeps the datacenter firewall under shared_volumes (rootesting moves it to the top level).
    rec.drop(f, ("shared_volumes", "firewall"), HOST_DROPPED["firewall"])
    for key, why in HOST_DROPPED.items():
        rec.drop(f, (key,), why)
    for secret in ("password_hash",):
        if rec.has(f, ("users", secret)) and doc["users"][secret] not in ("", "NOT_SET", None):
            state.find(
                "plaintext-secret",
                _loc(f, ("users", secret)),
                "a password hash in the config",
                "not carried; keep secrets out of config files (Phoenix takes them as Pulumi secrets)",
            )
    api_password = (
        doc.get("portainer_api", {}).get("admin_password")
        if isinstance(doc.get("portainer_api"), dict)
        else None
    )
    if api_password:
        state.find(
            "plaintext-secret",
            _loc(f, ("portainer_api", "admin_password")),
            "the Portainer admin password is in the config in plain text",
            "not carried; rotate it, it has been in a file (and likely in git)",
        )
    network = doc.get("network", {}) if isinstance(doc.get("network"), dict) else {}
    for key, why in NETWORK_DROPPED.items():
        rec.drop(f, ("network", key), why)
    interfaces = network.get("interfaces", {}) if isinstance(network.get("interfaces"), dict) else {}
    address = interfaces.get("address")
    try:
        host_if = ipaddress.IPv4Interface(str(address))
    except ValueError:
        host_if = None
    bridge_name = str(interfaces.get("name", "vmbr0"))
    if host_if is None:
        state.find(
            "not-bash-format",
            _loc(f, ("network", "interfaces", "address")),
            f"the host address {address!r} is not an IPv4 address with a prefix",
            "cannot say where the host is; nothing written",
            blocking=True,
        )
        endpoint_host = "0.0.0.0"
    else:
        endpoint_host = str(host_if.ip)
        bridge: dict[str, Any] = {"name": bridge_name, "cidr": str(host_if.network)}
        if isinstance(interfaces.get("gateway"), str):
            bridge["gateway"] = interfaces["gateway"]
        state.bridges[bridge_name] = bridge
        rec.carry(f, ("network", "interfaces", "name"), "host.json bridges[0].name")
        rec.change(
            f,
            ("network", "interfaces", "address"),
            "host.json bridges[0].cidr, api.endpoint, ssh.host",
            "the host's address: its network is the bridge's subnet, the address is where Phoenix "
            "reaches the PVE API (port 8006) and SSH",
        )
        rec.carry(f, ("network", "interfaces", "gateway"), "host.json bridges[0].gateway")
    rec.drop(
        f,
        ("network", "interfaces", "dns_nameservers"),
        "the host's resolvers are not managed by Phoenix (guests name theirs in dns.nameserver)",
    )
    internal = network.get("internal_bridge")
    if isinstance(internal, dict) and isinstance(internal.get("name"), str):
        try:
            cidr = str(ipaddress.IPv4Network(str(internal.get("subnet")), strict=True))
            state.bridges[internal["name"]] = {"name": internal["name"], "cidr": cidr}
            rec.carry(
                f,
                ("network", "internal_bridge"),
                "host.json bridges[].name/cidr",
                "Phoenix checks guest addresses against it; the bridge and its NAT stay the host's",
            )
        except ValueError:
            rec.drop(f, ("network", "internal_bridge"), "its subnet is not an IPv4 network")

    node = facts.node or network.get("hostname")
    if isinstance(network.get("hostname"), str) and not facts.node:
        rec.carry(f, ("network", "hostname"), "host.json node", "PVE names its node after the hostname")
    elif facts.node:
        rec.change(f, ("network", "hostname"), "host.json node", "replaced by --node")
    # An invalid --node or hostname is left in: Phoenix's validation then refuses it, naming the rule.
    if not isinstance(node, str):
        node = "phoenix"
        state.find(
            "assumed",
            "host.json node",
            "the bash files do not name the PVE node",
            "used 'phoenix', the bash original's default "
            "hostname; check `hostname` on the host and pass --node if it differs",
        )
    host: dict[str, Any] = {
        "$schema": "../../schema/host.schema.json",
        "node": node,
        "api": {
            "endpoint": f"https://{endpoint_host}:8006",
            "auth": "password",
            "user": "root@pam",
            "verify_tls": True,
        },
        "ssh": {
            "host": endpoint_host,
            "port": 22,
            "user": "root",
            "host_key": facts.ssh_host_key or HOST_KEY_PLACEHOLDER,
        },
    }
    state.find(
        "assumed",
        "host.json api",
        "the bash original runs on the host as root; Phoenix talks to it over the PVE API",
        "set root@pam with a password login (the root@pam rule: GPUs, bind "
        "mounts) and verify_tls true; PVE's own certificate is self-signed, so give verify_tls the "
        "path of a copy of the host's /etc/pve/pve-root-ca.pem, and the password as the stack "
        "secret the README names",
    )
    if facts.ssh_host_key is None:
        state.find(
            "placeholder",
            "host.json ssh.host_key",
            "the bash files hold no SSH host key to pin",
            "wrote the placeholder the example environments use, so SSH refuses the host until it is "
            f"replaced: `ssh-keyscan {endpoint_host} | ssh-keygen -lf -` (or pass --ssh-host-key)",
        )

    nvidia = _obj(doc.get("nvidia_driver"))
    version, url = nvidia.get("version"), nvidia.get("runfile_url")
    if isinstance(version, str) and isinstance(url, str):
        driver: dict[str, Any] = {"version": version, "runfile_url": url}
        rec.carry(f, ("nvidia_driver", "version"), "host.json nvidia.version")
        rec.carry(f, ("nvidia_driver", "runfile_url"), "host.json nvidia.runfile_url")
        known = state.ref.runfile_checksums.get(url)
        if facts.nvidia_sha256:
            driver["sha256"] = facts.nvidia_sha256
        elif known is not None:
            driver["sha256"] = known[0]
            state.find(
                "no-checksum",
                _loc(f, ("nvidia_driver", "runfile_url")),
                "the runfile is downloaded without a checksum",
                f"took the sha256 {known[1]} already pins for the same URL (nvidia.sha256)",
            )
        else:
            state.find(
                "no-checksum",
                _loc(f, ("nvidia_driver", "runfile_url")),
                "the runfile is downloaded without a checksum, and Phoenix installs no unverified driver",
                f"nothing written: pass --nvidia-sha256 (`sha256sum {url.rsplit('/', 1)[-1]}`"
                " of the file you trust)",
                blocking=True,
            )
        install = nvidia.get("install", True)
        driver["manage"] = install is not False
        rec.change(
            f,
            ("nvidia_driver", "install"),
            "host.json nvidia.manage",
            "Phoenix installs the driver with DKMS and never reboots on its own (allow_reboot false)",
        )
        host["nvidia"] = driver
    rec.drop(
        f,
        ("nvidia_driver", "cuda_version"),
        "the shipped chain installs no CUDA toolkit; the containers get the driver's userspace",
    )
    rec.drop(f, ("nvidia_driver", "install_vllm_libs"), "vLLM comes from the vllm layer's pinned version")

    ids = doc.get("proxmox_storage_ids", {}) if isinstance(doc.get("proxmox_storage_ids"), dict) else {}
    storage: dict[str, Any] = {}
    state.storage_ids = dict(ids)
    for key, value in ids.items():
        if key == "fastData_shared_iso" or key.endswith("_iso"):
            storage["templates"] = value
            rec.carry(f, ("proxmox_storage_ids", key), "host.json storage.templates")
        elif key.endswith("_vm"):
            storage["vm_disks"] = value
            rec.carry(f, ("proxmox_storage_ids", key), "host.json storage.vm_disks")
    # The others are reported once the containers' storage is known (_host_from_guests).
    host["storage"] = storage
    zfs = doc.get("zfs", {}) if isinstance(doc.get("zfs"), dict) else {}
    rec.drop(f, ("zfs", "arc_max_gb"), "Phoenix sets no ZFS module parameters")
    rec.drop(f, ("zfs", "pools"), "Phoenix never creates pools; they stay as the host has them")
    state.zfs_datasets = zfs.get("datasets", []) if isinstance(zfs.get("datasets"), list) else []
    rec.change(
        f,
        ("vm_defaults", "ubuntu_release"),
        "host.json cloud_images",
        "Phoenix's feature scripts are written for Debian 12, so the VMs get the Debian cloud image "
        "of an existing Phoenix environment instead of Ubuntu's",
    )
    return host


def _lxc_root(doc: dict[str, Any], host: dict[str, Any], state: _State) -> None:
    rec = state.rec
    rec.drop(LXC, ("$schema",), "an editor hint of the bash files")
    for key, why in LXC_ROOT_NVIDIA.items():
        rec.drop(LXC, (key,), why)
    driver = host.get("nvidia", {})
    for key, target in (("nvidia_driver_version", "version"), ("nvidia_runfile_url", "runfile_url")):
        if key not in doc:
            continue
        if driver.get(target) == doc[key]:
            rec.carry(
                LXC,
                (key,),
                f"host.json nvidia.{target}",
                "the containers' userspace is the host driver's version, checked equal",
            )
        else:
            rec.drop(LXC, (key,), f"differs from {HYPERVISOR} nvidia_driver; Phoenix has one driver")
            state.find(
                "driver-mismatch",
                _loc(LXC, (key,)),
                f"{doc[key]!r} differs from the host's nvidia_driver ({driver.get(target)!r})",
                "kept the host's: container userspace must match the host driver",
            )


# ---------------------------------------------------------------- containers


def _template(ctid: str, raw: Any, configs: Mapping[str, Any], state: _State) -> None:
    rec, f, base = state.rec, LXC, ("lxc_configs", ctid)
    if not isinstance(raw, dict):
        return
    features = inherited_features(ctid, configs)
    layer = best_layer(features, state.ref.chain)
    state.templates[ctid] = layer
    runs = lineage(state.ref.chain, layer)
    clones = sorted(
        k for k, c in configs.items() if isinstance(c, dict) and str(c.get("clone_from_ctid")) == ctid
    )
    why = f"a template ({'cloned by ' + ', '.join(clones) if clones else 'is_template'}); it becomes no guest"
    rec.change(
        f,
        (*base, "name"),
        f"config/chain.json layers.{layer}",
        f"{why}: its clones use the layer {layer}, which Phoenix names and numbers itself",
    )
    for i, feature in _names(raw, "features"):
        if feature in runs:
            rec.carry(f, (*base, "features", i), f"config/chain.json layers.{layer} (lineage)")
        else:
            rec.drop(
                f,
                (*base, "features", i),
                f"layer {layer} does not run {feature!r}; a clone that needs it gets it as its own "
                "feature where Phoenix has the script",
            )
    rec.change(
        f,
        (*base, "template"),
        "config/chain.json layers (os_template)",
        "Phoenix's chain builds every layer on the OS template it names (Debian 12; its feature "
        "scripts are written for it), not on this tarball",
    )
    rec.change(
        f,
        (*base, "clone_from_ctid"),
        f"config/chain.json layers.{layer}.parent",
        "the clone chain is the layer chain",
    )
    rec.carry(f, (*base, "is_template"), f"config/chain.json layers.{layer}", "layers are PVE templates")
    assignment = str(raw.get("gpu_assignment", ""))
    if re.fullmatch(r"[0-9]+( *, *[0-9]+)*", assignment.strip()):
        state.gpus.update(int(x) for x in assignment.split(","))
        rec.change(
            f,
            (*base, "gpu_assignment"),
            "host.json gpus",
            "the host has these GPUs; Phoenix builds its GPU layers with the host's GPUs passed in",
        )
    rec.drop(
        f,
        base,
        f"{why}; a layer's build resources, network and options are config/chain.json's "
        "(shared by every environment), and a template runs no service",
    )
    if raw.get("unprivileged") is False:
        state.find(
            "privileged",
            _loc(f, (*base, "unprivileged")),
            "a privileged template",
            "its clones become linked clones of Phoenix's layers, which are all unprivileged",
        )


def _container(ctid: str, raw: dict[str, Any], configs: Mapping[str, Any], state: _State) -> None:
    rec, f, base = state.rec, LXC, ("lxc_configs", ctid)
    name = raw.get("name")
    label = f"CT {ctid} {name}" if isinstance(name, str) else f"CT {ctid}"
    at = f"guests.json containers[{len([g for g in state.guests if g.kind == 'containers'])}]"
    if not ctid.isdigit():
        rec.drop(f, base, "the key is not a vmid")
        state.find("left-out", _loc(f, base), f"the key {ctid!r} is not a number", "left the guest out")
        return
    ct: dict[str, Any] = {"vmid": int(ctid)}
    _name(raw, ct, "hostname", f, base, at, state)
    ct["description"] = f"imported from the bash Phoenix ({f} lxc_configs.{ctid})"

    # The layer: the one that runs most of what the clone chain runs.
    features = inherited_features(ctid, configs)
    parent = raw.get("clone_from_ctid")
    vllm = ["vllm"] if raw.get("vllm_engine_config") is not None else []
    layer = best_layer([*features, *vllm], state.ref.chain)
    runs = lineage(state.ref.chain, layer)
    ct["layer"] = layer
    if parent is not None:
        rec.change(
            f,
            (*base, "clone_from_ctid"),
            f"{at}.layer",
            f"a linked clone of layer {layer}, which runs most of what template {parent}'s chain ran",
        )
    else:
        rec.change(
            f,
            (*base, "template"),
            f"{at}.layer",
            f"a container of its own OS template becomes a clone of layer {layer}, built on the "
            "chain's OS template (Debian 12)",
        )
    own: list[str] = []
    for i, feature in _names(raw, "features"):
        if feature in runs:
            rec.carry(f, (*base, "features", i), f"{at}.layer ({layer} runs it)")
        elif feature in state.ref.scripts:
            own.append(feature)
            rec.carry(f, (*base, "features", i), f"{at}.features")
        else:
            rec.drop(f, (*base, "features", i), f"Phoenix has no feature script features/{feature}.sh")
    if own:
        ct["features"] = own
    extra = [x for x in runs if x not in features]
    if extra and isinstance(raw.get("features"), list) and raw["features"]:
        state.find(
            "layer-adds",
            _loc(f, (*base, "features"), label),
            f"layer {layer} also runs {', '.join(extra)}, which the bash chain did not",
            f"used layer {layer}, the chain's closest match",
        )
    rec.carry(f, (*base, "is_template"), f"{at}", "not a template: a guest")

    for key, target in (("cores", "cores"),):
        if isinstance(raw.get(key), int):
            ct[target] = raw[key]
            rec.carry(f, (*base, key), f"{at}.{target}")
    if isinstance(raw.get("memory_mb"), int):
        ct["memory_mib"] = raw["memory_mb"]
        rec.carry(
            f,
            (*base, "memory_mb"),
            f"{at}.memory_mib",
            "PVE's memory is in MiB; the bash original passed this number to pct --memory as is",
        )
    if isinstance(raw.get("swap_mb"), int):
        ct["swap_mib"] = raw["swap_mb"]
        rec.change(
            f, (*base, "swap_mb"), f"{at}.swap_mib", "the bash original never applied it; Phoenix does"
        )
    size = raw.get("storage_size_gb")
    if isinstance(size, int):
        layer_disk = state.ref.chain.layers[layer].build.disk_gib
        ct["disk_gib"] = max(size, layer_disk)
        if size < layer_disk:
            rec.change(
                f,
                (*base, "storage_size_gb"),
                f"{at}.disk_gib",
                f"{size} GiB is below layer {layer}'s {layer_disk} GiB, and a clone cannot shrink",
            )
        else:
            rec.carry(f, (*base, "storage_size_gb"), f"{at}.disk_gib", "pct resize's G is GiB")
    pool = raw.get("storage_pool")
    if isinstance(pool, str):
        state.rootfs_pools.append(pool)
        rec.change(
            f,
            (*base, "storage_pool"),
            "host.json storage.rootfs",
            "Phoenix has one storage for container disks, host-wide",
        )

    ct["network"] = _nic(
        raw.get("network_config"),
        raw.get("mac_address"),
        f,
        (*base, "network_config"),
        f"{at}.network",
        state,
    )
    if "mac_address" in raw:
        rec.carry(f, (*base, "mac_address"), f"{at}.network.mac")
    second = raw.get("secondary_network_config")
    if isinstance(second, dict):
        ct["networks"] = [
            _nic(
                second,
                second.get("hwaddr"),
                f,
                (*base, "secondary_network_config"),
                f"{at}.networks[0]",
                state,
            )
        ]
    dns = _dns(raw.get("network_config"), f, (*base, "network_config"), f"{at}.dns", "nameservers", state)
    if dns:
        ct["dns"] = dns

    gpus = _gpus(raw.get("gpu_assignment"), f, (*base, "gpu_assignment"), f"{at}.gpus", state, label)
    if gpus:
        ct["gpus"] = gpus

    unpriv = raw.get("unprivileged")
    if unpriv is False:
        rec.change(
            f,
            (*base, "unprivileged"),
            f"{at}.unprivileged",
            "Phoenix's containers are unprivileged (see findings)",
        )
        state.find(
            "privileged",
            _loc(f, (*base, "unprivileged"), label),
            "a privileged container: root in it is root on the host, and Phoenix refuses it",
            "made it unprivileged (the safe default; a linked clone of an unprivileged layer): files "
            "its bind mounts hold may need `chown` to the shifted ids (100000+)",
        )
    else:
        rec.carry(f, (*base, "unprivileged"), f"{at}.unprivileged (Phoenix's default)")

    # Nesting and the AppArmor profile.
    pve_features: dict[str, bool] = {}
    for i, option in _items(raw, "pct_options"):
        flag, _, value = str(option).partition("=")
        if flag in ("nesting", "keyctl", "fuse", "mknod") and value in ("1", ""):
            pve_features[flag] = True
            rec.carry(f, (*base, "pct_options", i), f"{at}.pve_features.{flag}")
        else:
            rec.drop(f, (*base, "pct_options", i), f"not a PVE feature flag Phoenix sets ({option!r})")
    raw_lines = raw.get("lxc_options", [])
    for i, line in enumerate(raw_lines if isinstance(raw_lines, list) else []):
        text = str(line).replace("=", ":", 1) if "=" in str(line) and ":" not in str(line) else str(line)
        key = text.partition(":")[0].strip()
        if key == "lxc.apparmor.profile":
            rec.change(
                f, (*base, "lxc_options", i), f"{at}.apparmor_profile", "the profile is apparmor_profile's"
            )
        elif key == "lxc.apparmor.allow_nesting" or key == "lxc.include" and "nesting" in text:
            pve_features["nesting"] = True
            rec.change(
                f,
                (*base, "lxc_options", i),
                f"{at}.pve_features.nesting",
                "nesting is PVE's feature flag with Phoenix's nesting profile",
            )
        elif key.startswith("lxc.net."):
            rec.drop(
                f,
                (*base, "lxc_options", i),
                "macvlan NICs are not modelled; the NIC is a port of its bridge (with network.vlan)",
            )
        elif key.startswith(("lxc.cgroup2.devices", "lxc.mount.entry")) and "nvidia" in text:
            rec.change(f, (*base, "lxc_options", i), f"{at}.gpus", "GPUs are passed in as devN entries")
        else:
            rec.drop(
                f, (*base, "lxc_options", i), "Phoenix writes no raw lxc.* lines but the AppArmor profile's"
            )
    if "docker" in runs or "docker" in features:
        pve_features["nesting"] = True
    if pve_features:
        ct["pve_features"] = pve_features
    profile = raw.get("apparmor_profile")
    safe = PROFILE_GPU if gpus else PROFILE_NESTING if pve_features.get("nesting") else PROFILE_CONFINED
    ct["apparmor_profile"] = safe
    state.profiles.add(safe)
    if profile == "unconfined" or any("unconfined" in str(x) for x in raw_lines if "apparmor" in str(x)):
        rec.change(f, (*base, "apparmor_profile"), f"{at}.apparmor_profile", f"unconfined -> {safe}")
        state.find(
            "unconfined-apparmor",
            _loc(f, (*base, "apparmor_profile"), label),
            "the container runs unconfined: a process in it is not held by AppArmor",
            f"confined it with Phoenix's {safe} (the safe default). If it really needs unconfined, set "
            'apparmor_profile "unconfined" with insecure.unconfined_apparmor: "<reason>"',
        )
    elif isinstance(profile, str):
        rec.change(
            f,
            (*base, "apparmor_profile"),
            f"{at}.apparmor_profile",
            f"{profile!r} is a bash profile file Phoenix does not ship; {safe} covers what it needs",
        )
        state.find(
            "apparmor-profile",
            _loc(f, (*base, "apparmor_profile"), label),
            f"profile {profile!r} is not one of Phoenix's",
            f"used Phoenix's {safe}",
        )

    mounts: list[dict[str, Any]] = []
    for i, mount in _items(raw, "mount_points"):
        if not isinstance(mount, dict):
            continue
        m = {
            "type": "bind",
            "path": mount.get("container_path"),
            "host_path": mount.get("host_path"),
            "read_only": False,
        }
        target = f"{at}.mounts[{len(mounts)}]"
        mounts.append(m)
        rec.carry(f, (*base, "mount_points", i, "container_path"), f"{target}.path")
        rec.change(
            f,
            (*base, "mount_points", i, "host_path"),
            f"{target}.host_path, read_only false",
            "Phoenix's bind mounts are read-only by default; the bash one was writable, so it stays so",
        )
        for owner in ("owner_uid", "owner_gid"):
            rec.drop(f, (*base, "mount_points", i, owner), "Phoenix does not chown host directories")
    for list_key in ("zfs_volumes", "volumes"):
        for i, volume in _items(raw, list_key):
            if not isinstance(volume, dict):
                continue
            target = f"{at}.mounts[{len(mounts)}]"
            mounts.append(
                {
                    "type": "volume",
                    "path": volume.get("mount_point"),
                    "storage": volume.get("pool"),
                    "size_gib": volume.get("size_gb"),
                }
            )
            rec.carry(f, (*base, list_key, i, "mount_point"), f"{target}.path")
            rec.carry(f, (*base, list_key, i, "pool"), f"{target}.storage")
            rec.carry(f, (*base, list_key, i, "size_gb"), f"{target}.size_gib", "PVE's size is in GiB")
            rec.drop(f, (*base, list_key, i, "name"), "PVE names the volume (vm-<vmid>-disk-N)")
    if mounts:
        ct["mounts"] = mounts

    firewall = _firewall(raw.get("firewall"), f, (*base, "firewall"), f"{at}.firewall", state, label)
    if firewall is not None:
        ct["firewall"] = firewall

    engine = raw.get("vllm_engine_config")
    if isinstance(engine, dict):
        ct["vllm"] = _vllm(engine, f, (*base, "vllm_engine_config"), f"{at}.vllm", state)
    script = raw.get("application_script")
    if isinstance(script, str):
        if "vllm" in script and isinstance(engine, dict):
            rec.change(
                f,
                (*base, "application_script"),
                f"{at}.vllm",
                "Phoenix's vLLM service (systemd unit, health gate) replaces the bash vLLM script",
            )
        else:
            rec.drop(
                f,
                (*base, "application_script"),
                "bash scripts pushed into the guest are not run by Phoenix (a guest feature would be)",
            )
    # The bash ollama/llama.cpp guests name no model (their app scripts chose it); Phoenix's model
    # servers of those engines need one, so the import installs the engine and leaves the choice to you.
    for server in ("ollama", "llamacpp"):
        if server in features and server in Container.model_fields:
            state.find(
                "model-server",
                _loc(f, base, label),
                f"the guest runs {server}, but the bash files do not say which model it serves",
                f"installed {server} (layer or feature) without a model server; add "
                f'`"{server}": {{"model": ...}}` to the guest to have Phoenix serve and health-check one',
            )

    _boot(raw, ct, f, base, at, state)
    deps = [str(d) for _, d in _items(raw, "dependencies")]
    ct["after"] = deps  # resolved to vmids of guests once every guest is known
    if raw.get("enable_lifecycle_snapshots") is True:
        ct["snapshot_before_update"] = True
        rec.change(
            f,
            (*base, "enable_lifecycle_snapshots"),
            f"{at}.snapshot_before_update",
            "the bash pre-configured/final-form snapshots become a snapshot before each update",
        )
    else:
        rec.carry(f, (*base, "enable_lifecycle_snapshots"), f"{at}.snapshot_before_update (false)")
    for key, why in CT_DROPPED.items():
        rec.drop(f, (*base, key), why)
    _empty_lists(rec, f, base)
    state.guests.append(_Guest("containers", ct, f, base, label))


def _name(
    raw: Mapping[str, Any],
    out: dict[str, Any],
    key: str,
    f: str,
    base: tuple[Key, ...],
    at: str,
    state: _State,
) -> None:
    name = raw.get("name")
    if isinstance(name, str) and HOSTNAME.fullmatch(name) and len(name) <= 64:
        out[key] = name
        state.rec.carry(f, (*base, "name"), f"{at}.{key}")
        return
    fixed = re.sub(r"[^A-Za-z0-9.-]+", "-", str(name or f"guest-{out['vmid']}")).strip("-.")[:64] or (
        f"guest-{out['vmid']}"
    )
    out[key] = fixed
    state.rec.change(
        f, (*base, "name"), f"{at}.{key}", f"{name!r} is not a DNS name as PVE takes it: {fixed!r}"
    )


def _nic(raw: Any, mac: Any, f: str, base: tuple[Key, ...], at: str, state: _State) -> dict[str, Any]:
    rec = state.rec
    nic: dict[str, Any] = {}
    cfg = raw if isinstance(raw, dict) else {}
    name = cfg.get("name")
    if name is not None:
        if at.endswith("network") and name == "eth0" or at.endswith("networks[0]") and name == "eth1":
            rec.carry(f, (*base, "name"), at, "Phoenix names net0 eth0, net1 eth1, …")
        else:
            rec.change(f, (*base, "name"), at, f"Phoenix names its NICs eth0, eth1, … in order, not {name!r}")
    bridge = str(cfg.get("bridge", "vmbr0"))
    vlan: int | None = None
    match = re.fullmatch(r"(.+)\.([0-9]{1,4})", bridge)
    if match and match.group(1) in state.bridges:
        bridge, vlan = match.group(1), int(match.group(2))
        state.bridges[bridge]["vlan_aware"] = True
        rec.change(
            f,
            (*base, "bridge"),
            f"{at}.bridge, {at}.vlan",
            "a VLAN sub-interface is the bridge with the guest's VLAN tag (the bridge made vlan_aware)",
        )
    else:
        rec.carry(f, (*base, "bridge"), f"{at}.bridge")
    nic["bridge"] = bridge
    if vlan is not None:
        nic["vlan"] = vlan
    ip = cfg.get("ip", "dhcp")
    nic["ip"] = ip
    rec.carry(f, (*base, "ip"), f"{at}.ip")
    if isinstance(cfg.get("gw"), str):
        if ip in ("dhcp", "manual"):
            rec.drop(f, (*base, "gw"), f"PVE ignores a gateway with {ip}")
        else:
            nic["gateway"] = cfg["gw"]
            rec.carry(f, (*base, "gw"), f"{at}.gateway")
    if isinstance(mac, str):
        nic["mac"] = mac.upper()
        rec.carry(f, (*base, "hwaddr"), f"{at}.mac")
    for key in ("type", "parent"):
        rec.drop(f, (*base, key), "macvlan NICs are not modelled; the NIC is a port of the bridge")
    if bridge not in state.bridges:
        state.bridges.setdefault(bridge, {"name": bridge, "cidr": ""})
    return nic


def _dns(raw: Any, f: str, base: tuple[Key, ...], at: str, key: str, state: _State) -> dict[str, Any] | None:
    cfg = raw if isinstance(raw, dict) else {}
    value = cfg.get(key)
    if not isinstance(value, str) or not value.strip():
        return None
    servers = list(dict.fromkeys(re.split(r"[\s,]+", value.strip())))
    if f == VMS:
        state.rec.change(
            f,
            (*base, key),
            f"{at}.nameserver",
            "the bash VM manager set it at creation, then overwrote it with 10.0.0.13 when it applied the "
            "network config; Phoenix keeps this one",
        )
    else:
        state.rec.carry(f, (*base, key), f"{at}.nameserver")
    return {"nameserver": servers}


def _gpus(raw: Any, f: str, keys: tuple[Key, ...], at: str, state: _State, label: str) -> list[int]:
    if raw is None:
        return []
    text = str(raw).strip()
    if text in ("none", ""):
        state.rec.carry(f, keys, f"{at} (none)")
        return []
    if not re.fullmatch(r"[0-9]+( *, *[0-9]+)*", text):
        state.rec.drop(f, keys, f"not a GPU list ({raw!r})")
        state.find(
            "gpu-assignment",
            _loc(f, keys, label),
            f"{raw!r} is neither `none` nor GPU indices",
            "gave the guest no GPU",
        )
        return []
    gpus = list(dict.fromkeys(int(x) for x in text.split(",")))
    state.gpus.update(gpus)
    state.rec.carry(f, keys, at, "passed in as PVE devN entries (Phoenix reads the device minors)")
    return gpus


def _firewall(
    raw: Any, f: str, base: tuple[Key, ...], at: str, state: _State, label: str
) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        return None
    rec = state.rec
    enabled = raw.get("enabled", True) is not False
    rules: list[dict[str, Any]] = []
    for i, rule in _items(raw, "rules"):
        if not isinstance(rule, dict):
            continue
        keys = (*base, "rules", i)
        target = f"{at}.rules[{len(rules)}]"
        if not enabled:
            rec.drop(f, keys, "the firewall is disabled: PVE would store the rule and never apply it")
            continue
        out: dict[str, Any] = {"direction": rule.get("type"), "action": rule.get("action")}
        rec.carry(f, (*keys, "type"), f"{target}.direction")
        rec.carry(f, (*keys, "action"), f"{target}.action")
        for key, dest in (("proto", "proto"), ("source", "source"), ("dest", "dest")):
            if key in rule:
                out[dest] = rule[key]
                rec.carry(f, (*keys, key), f"{target}.{dest}")
        if "port" in rule:
            out["dport"] = str(rule["port"]).replace(" ", "")
            rec.carry(f, (*keys, "port"), f"{target}.dport")
        comment = rule.get("comment")
        if isinstance(comment, str):
            fixed = re.sub(r"\s*[#\r\n]+\s*", " ", comment).strip()[:120]
            out["comment"] = fixed
            if fixed == comment:
                rec.carry(f, (*keys, "comment"), f"{target}.comment")
            else:
                rec.change(
                    f,
                    (*keys, "comment"),
                    f"{target}.comment",
                    "PVE keeps a comment to one line without `#`; shortened to 120 characters",
                )
        rules.append(out)
    if not enabled and raw.get("rules"):
        state.find(
            "firewall-disabled",
            _loc(f, base, label),
            f"{len(raw['rules'])} rule(s) with the firewall disabled, which PVE never applies",
            "kept the firewall disabled and left the rules out; enable it and add them back if wanted",
        )
    rec.empty(f, (*base, "rules"))
    if enabled and f == LXC:
        rec.change(
            f,
            (*base, "enabled"),
            f"{at}.enabled",
            "the bash original never set a container firewall's enable option, so its rules were inert; "
            "Phoenix enables it with policy_in DROP: only what the rules allow comes in",
        )
    elif enabled:
        rec.carry(f, (*base, "enabled"), f"{at}.enabled", "the bash <vmid>.fw had enable: 1 too")
    else:
        rec.carry(f, (*base, "enabled"), f"{at}.enabled")
    return {"enabled": enabled, "rules": rules} if enabled else {"enabled": False}


VLLM_MAP: tuple[tuple[str, str, str], ...] = (
    ("ModelConfig", "model", "model.model"),
    ("ModelConfig", "trust_remote_code", "model.trust_remote_code"),
    ("ModelConfig", "dtype", "model.dtype"),
    ("ModelConfig", "max_model_len", "model.max_model_len"),
    ("CacheConfig", "quantization", "cache.quantization"),
    ("CacheConfig", "gpu_memory_utilization", "cache.gpu_memory_utilization"),
    ("CacheConfig", "kv_cache_dtype", "cache.kv_cache_dtype"),
    ("ParallelConfig", "tensor_parallel_size", "parallel.tensor_parallel_size"),
    ("ServerConfig", "host", "server.host"),
    ("ServerConfig", "port", "server.port"),
    ("ServerConfig", "served_model_name", "server.served_model_name"),
)


def _vllm(raw: dict[str, Any], f: str, base: tuple[Key, ...], at: str, state: _State) -> dict[str, Any]:
    out: dict[str, dict[str, Any]] = defaultdict(dict)
    for section, key, target in VLLM_MAP:
        value = raw.get(section, {}).get(key) if isinstance(raw.get(section), dict) else None
        if value is None:
            continue
        group, _, name = target.partition(".")
        out[group][name] = value
        state.rec.carry(f, (*base, section, key), f"{at}.{target}")
    return dict(out)


def _boot(
    raw: Mapping[str, Any], out: dict[str, Any], f: str, base: tuple[Key, ...], at: str, state: _State
) -> None:
    rec = state.rec
    if isinstance(raw.get("start_at_boot"), bool):
        out["start_on_boot"] = raw["start_at_boot"]
        rec.carry(f, (*base, "start_at_boot"), f"{at}.start_on_boot")
    startup: dict[str, int] = {}
    if isinstance(raw.get("boot_order"), int) and raw["boot_order"] >= 0:
        startup["order"] = raw["boot_order"]
        rec.carry(f, (*base, "boot_order"), f"{at}.startup.order")
    if isinstance(raw.get("boot_delay"), int) and raw["boot_delay"] >= 0:
        # pct set got --startup order=N,up=D,down=D; qm set got order=N,up=D.
        startup["up"] = raw["boot_delay"]
        if f == LXC:
            startup["down"] = raw["boot_delay"]
        how = "--startup order=N,up=D,down=D" if f == LXC else "--startup order=N,up=D"
        target = f"{at}.startup.up, .down" if f == LXC else f"{at}.startup.up"
        rec.carry(f, (*base, "boot_delay"), target, f"as the bash original passed it ({how})")
    if startup:
        out["startup"] = startup


# ---------------------------------------------------------------- VMs and stacks


def _vm_file(doc: dict[str, Any], hv: dict[str, Any], host: dict[str, Any], state: _State) -> None:
    rec, f = state.rec, VMS
    defaults = doc.get("vm_defaults", {}) if isinstance(doc.get("vm_defaults"), dict) else {}
    rec.drop(
        f,
        ("vm_defaults", "template"),
        "Phoenix's VMs clone a cloud image (host.json cloud_images), not a template by this name",
    )
    if isinstance(defaults.get("storage_pool"), str):
        host["storage"].setdefault("vm_disks", defaults["storage_pool"])
        rec.carry(f, ("vm_defaults", "storage_pool"), "host.json storage.vm_disks")
    image = state.ref.cloud_image
    image_key = image[0] if image is not None else None
    vms = [v for v in doc.get("vms", []) if isinstance(v, dict)]
    for i, vm in enumerate(doc.get("vms", [])):
        if not isinstance(vm, dict):
            continue
        base: tuple[Key, ...] = ("vms", i)
        if vm.get("is_template") is True:
            why = (
                "the cloud-image template: Phoenix makes its own from host.json cloud_images at the top of "
                "vmid_ranges.layers"
            )
            rec.change(
                f,
                (*base, "template_image"),
                "host.json cloud_images",
                "Phoenix's feature scripts are written for Debian 12, so the VMs get the Debian cloud "
                "image of an existing Phoenix environment",
            )
            rec.drop(f, base, why)
            continue
        _vm(vm, base, defaults, hv, image_key, state)
    for key, target in (
        ("cores", "cores"),
        ("memory_mb", "memory_mib"),
        ("disk_size_gb", "disk_gib"),
        ("network_bridge", "network.bridge"),
    ):
        if key in defaults:
            how = (
                "the bash original ignored it; Phoenix grows the disk to it"
                if key == "disk_size_gb"
                else "used for each VM that gives none"
            )
            rec.change(f, ("vm_defaults", key), f"guests.json vms[].{target}", how)
    rec.empty(f, ("vms",))
    # Recorded by the VMs it reached (their dns.searchdomain), if any.
    rec.drop(
        HYPERVISOR,
        ("domain_name",),
        "Phoenix has no host-wide domain; it is a VM's DNS search domain where the VM names none, and no VM "
        "took it",
    )
    if vms and image is None:
        state.find(
            "no-image",
            _loc(f, ("vms",)),
            "no Phoenix environment has a cloud image to clone VMs from",
            "nothing written: add a cloud_images entry to an environment under config/",
            blocking=True,
        )


def _vm(
    raw: dict[str, Any],
    base: tuple[Key, ...],
    defaults: Mapping[str, Any],
    hv: Mapping[str, Any],
    image_key: str | None,
    state: _State,
) -> None:
    rec, f = state.rec, VMS
    at = f"guests.json vms[{len([g for g in state.guests if g.kind == 'vms'])}]"
    vmid = raw.get("vmid")
    label = f"VM {vmid} {raw.get('name')}"
    if not isinstance(vmid, int):
        rec.drop(f, base, "no vmid")
        state.find("left-out", _loc(f, base), "a VM without a numeric vmid", "left the VM out")
        return
    vm: dict[str, Any] = {"vmid": vmid}
    rec.carry(f, (*base, "vmid"), f"{at}.vmid")
    _name(raw, vm, "name", f, base, at, state)
    vm["image"] = image_key or "none"
    vm["description"] = f"imported from the bash Phoenix ({f} vms[{base[1]}])"
    if "clone_from_vmid" in raw:
        rec.change(
            f,
            (*base, "clone_from_vmid"),
            f"{at}.image",
            "a linked clone of Phoenix's image template instead of a full clone of the bash one",
        )
    for key, target in (("cores", "cores"), ("memory_mb", "memory_mib"), ("disk_size_gb", "disk_gib")):
        value = raw.get(key, defaults.get(key))
        if isinstance(value, int):
            vm[target] = value
        if key in raw:
            if key == "disk_size_gb":
                rec.change(
                    f, (*base, key), f"{at}.{target}", "the bash original ignored it; Phoenix grows the disk"
                )
            else:
                rec.carry(f, (*base, key), f"{at}.{target}")
    if "storage_pool" in raw:
        rec.change(f, (*base, "storage_pool"), "host.json storage.vm_disks", "one VM disk storage, host-wide")
    cfg = _obj(raw.get("network_config"))
    bridge = raw.get("network_bridge", defaults.get("network_bridge", "vmbr0"))
    if "network_bridge" in raw:
        rec.carry(f, (*base, "network_bridge"), f"{at}.network.bridge")
    nic_raw = {"bridge": bridge, **{k: v for k, v in cfg.items() if k in ("ip", "gw")}}
    vm["network"] = _nic(nic_raw, None, f, (*base, "network_config"), f"{at}.network", state)
    dns = _dns(cfg, f, (*base, "network_config"), f"{at}.dns", "nameserver", state)
    # The bash VM manager's searchdomain: the VM's own, else the host-wide domain_name.
    own, domain = cfg.get("searchdomain"), hv.get("domain_name")
    if isinstance(own, str) and HOSTNAME.fullmatch(own):
        dns = {**(dns or {}), "searchdomain": own}
        rec.carry(f, (*base, "network_config", "searchdomain"), f"{at}.dns.searchdomain")
    elif isinstance(domain, str) and HOSTNAME.fullmatch(domain):
        dns = {**(dns or {}), "searchdomain": domain}
        rec.carry(
            HYPERVISOR,
            ("domain_name",),
            "guests.json vms[].dns.searchdomain",
            "the bash VM manager's searchdomain for a VM that names none",
        )
    if dns:
        vm["dns"] = dns
    user = raw.get("user_config", {}).get("username") if isinstance(raw.get("user_config"), dict) else None
    if isinstance(user, str):
        vm["cloud_init"] = {"user": user, "ssh_authorized_keys": []}
        rec.carry(f, (*base, "user_config", "username"), f"{at}.cloud_init.user")
    own = []
    for i, feature in _names(raw, "features"):
        if feature in state.ref.scripts:
            own.append(feature)
            rec.carry(f, (*base, "features", i), f"{at}.features", "cloud-init runs it at first boot")
        else:
            rec.drop(f, (*base, "features", i), f"Phoenix has no feature script features/{feature}.sh")
    if own:
        vm["features"] = own
    firewall = _firewall(raw.get("firewall"), f, (*base, "firewall"), f"{at}.firewall", state, label)
    if firewall is not None:
        vm["firewall"] = firewall
    _boot(raw, vm, f, base, at, state)
    vm["after"] = [str(d) for _, d in _items(raw, "dependencies")]
    rec.carry(f, (*base, "is_template"), at, "not a template: a guest")
    for key, why in VM_DROPPED.items():
        rec.drop(f, (*base, key), why)
    _empty_lists(rec, f, base)
    state.guests.append(_Guest("vms", vm, f, base, label))


def _stacks(doc: dict[str, Any], vms_doc: dict[str, Any], state: _State) -> None:
    rec, f = state.rec, STACKS
    rec.drop(f, ("$schema",), "an editor hint of the bash files")
    for leaf, value in leaves(doc.get("docker_stacks", {}), ("docker_stacks",)):
        if len(leaf) >= 2 and leaf[-1] == "value" and isinstance(value, str) and value:
            variable = rec.get(f, leaf[:-1]).get("name", "")
            if SECRET_NAME.search(str(variable)):
                state.find(
                    "plaintext-secret",
                    _loc(f, leaf),
                    f"{variable} is a secret in plain text",
                    "not carried; rotate it, it has been in a file (and likely in git)",
                )
    # Phoenix deploys a stack from config/stacks/<name>/ (its Compose file and stack.json) placed on a guest
    # by guests.json `stacks`; the bash files only point at a Compose file elsewhere, which the import does
    # not read. So each placement is a finding that says what to copy where.
    stacks = _obj(doc.get("docker_stacks"))
    for i, vm in _items(vms_doc, "vms"):
        if not isinstance(vm, dict) or vm.get("is_template") is True:
            continue
        for j, name in _names(vm, "docker_stacks"):
            stack = _obj(stacks.get(name))
            compose = stack.get("compose_file_path", f"no entry in {STACKS}")
            production = _obj(_obj(stack.get("environments")).get("production"))
            variables = [
                str(v.get("name")) for _, v in _items(production, "variables") if isinstance(v, dict)
            ]
            secrets = [v for v in variables if SECRET_NAME.search(v)]
            plain = [v for v in variables if v not in secrets]
            state.find(
                "compose-stack",
                _loc(VMS, ("vms", i, "docker_stacks", j), f"VM {vm.get('vmid')} {vm.get('name')}"),
                f"the VM ran the Compose stack {name!r} ({compose})",
                "not written (the import reads no Compose file): copy it to "
                f"config/stacks/{name}/compose.yaml"
                + (f", give stack.json environment {', '.join(plain)}" if plain else "")
                + (f" and secrets {', '.join(secrets)} (as Pulumi secrets)" if secrets else "")
                + f', then add {{"name": "{name}", "guest": {vm.get("vmid")}}} to guests.json stacks',
            )
    rec.drop(
        f,
        ("docker_stacks",),
        "Phoenix deploys Compose stacks from config/stacks/<name>/ (guests.json stacks); the import reads "
        "no Compose file, so each stack a VM ran is a compose-stack finding saying what to copy where",
    )


# ---------------------------------------------------------------- facts that relate guests


def _host_from_guests(host: dict[str, Any], state: _State) -> None:
    """What host.json needs from every guest together: storage, bridges, GPUs, profiles, ranges."""
    rec, ref = state.rec, state.ref
    storage = host["storage"]
    pools = list(dict.fromkeys(state.rootfs_pools))
    if pools:
        storage["rootfs"] = pools[0]
        if len(pools) > 1:
            state.find(
                "storage",
                "host.json storage.rootfs",
                f"the containers use {len(pools)} storages ({', '.join(pools)})",
                f"used {pools[0]} for every container's disk (Phoenix has one)",
            )
        dataset = _zfs_name(pools[0], state)
        if dataset is not None:
            storage["zfs_pool"] = dataset[0]
            rec.carry(HYPERVISOR, ("zfs", "datasets", dataset[1], "name"), "host.json storage.zfs_pool")
            rec.carry(HYPERVISOR, ("zfs", "datasets", dataset[1], "pool"), "host.json storage.zfs_pool")
    for key, value in state.storage_ids.items():
        if value == storage.get("rootfs"):
            rec.carry(HYPERVISOR, ("proxmox_storage_ids", key), "host.json storage.rootfs")
        else:
            rec.drop(
                HYPERVISOR,
                ("proxmox_storage_ids", key),
                "a storage of the host; Phoenix names only the ones its guests use",
            )
    for i in range(len(state.zfs_datasets)):
        rec.drop(
            HYPERVISOR,
            ("zfs", "datasets", i),
            "Phoenix names existing storages (host.json storage) and creates no datasets for them",
        )
    bridges = list(state.bridges.values())
    unknown = [b["name"] for b in bridges if not b["cidr"]]
    host["bridges"] = [b for b in bridges if b["cidr"]]
    if unknown:
        state.find(
            "bridge",
            "host.json bridges",
            f"guests use {', '.join(unknown)}, whose subnet the bash files do not give",
            "left them out of host.json; the guests on them fail validation below "
            "and are left out, or add the bridge with its cidr",
        )
    templates: dict[str, Any] = {}
    for layer in ref.chain.layers.values():
        if layer.os_template is not None and layer.os_template in ref.os_templates:
            templates[layer.os_template] = ref.os_templates[layer.os_template][0]
    host["os_templates"] = templates
    if ref.cloud_image is not None and any(g.kind == "vms" for g in state.guests):
        host["cloud_images"] = {ref.cloud_image[0]: ref.cloud_image[1]}
        if not ref.cloud_image[1].get("checksum"):
            state.find(
                "no-checksum",
                f"host.json cloud_images.{ref.cloud_image[0]}",
                "the cloud image is downloaded without a checksum (so was the bash one)",
                f"copied as {ref.cloud_image[2]} has it; add checksum (its sha256) to pin it",
            )
    missing_templates = [
        ref.chain.layers[n].os_template
        for n in ref.chain.layers
        if ref.chain.layers[n].os_template is not None and ref.chain.layers[n].os_template not in templates
    ]
    if missing_templates:
        state.find(
            "no-os-template",
            "host.json os_templates",
            f"no Phoenix environment has the chain's OS template {', '.join(map(str, missing_templates))}",
            "nothing written: add it to an environment under config/",
            blocking=True,
        )
    # The shared chain builds its GPU layers with the host's GPUs passed in, so host.json always lists them.
    if not state.gpus:
        state.find(
            "assumed",
            "host.json gpus",
            "no container is given a GPU, but the chain's GPU layers are built with one",
            "declared GPU 0; correct host.json gpus to the host's",
        )
    if state.facts.gpu_memory_mib is None:
        state.find(
            "gpu-memory",
            "host.json gpus",
            "the bash files do not say how much memory the GPUs have",
            "nothing written: pass --gpu-memory-mib (`nvidia-smi --query-gpu=memory.total --format=csv`)",
            blocking=True,
        )
    memory = state.facts.gpu_memory_mib or 1
    host["gpus"] = [{"index": i, "memory_mib": memory} for i in sorted(state.gpus or {0})]
    host["apparmor_profiles"] = sorted(p for p in state.profiles if p in ref.profiles)
    vmids = [g.data["vmid"] for g in state.guests]
    low = max(100, (min(vmids, default=100) // 100) * 100)
    high = max(low + 99, (max(vmids, default=100) // 100) * 100 + 99)
    layers_start = 9000
    while layers_start <= high and layers_start + 99 >= low:
        layers_start += 1000
    host["vmid_ranges"] = {
        "layers": {"start": layers_start, "end": layers_start + 99},
        "guests": {"start": low, "end": high},
    }
    by_ctid = {str(g.data["vmid"]): g for g in state.guests}
    for guest in state.guests:
        after: list[int] = []
        for i, dep in enumerate(guest.data.pop("after")):
            keys = (*guest.keys, "dependencies", i)
            if dep in by_ctid and dep != str(guest.data["vmid"]):
                after.append(int(dep))
                rec.carry(guest.file, keys, f"{guest.kind}[].after")
            elif dep in state.templates:
                rec.drop(guest.file, keys, f"{dep} is a template: its layer is built before any guest")
            else:
                rec.drop(guest.file, keys, f"no guest {dep} in the bash files")
        if after:
            guest.data["after"] = list(dict.fromkeys(after))


def _zfs_name(storage_id: str, state: _State) -> tuple[str, int] | None:
    """The ZFS dataset behind a bash storage id (``quickOS-lxc-disks`` is ``quickOS/lxc-disks``)."""
    for i, ds in enumerate(state.zfs_datasets):
        if isinstance(ds, dict) and f"{ds.get('pool')}-{ds.get('name')}" == storage_id:
            return f"{ds['pool']}/{ds['name']}", i
    return None


def _leave_out(state: _State, guest: _Guest, kind: str, message: str) -> None:
    state.guests.remove(guest)
    state.rec.drop_under(
        guest.file, render_path(guest.keys), f"the guest was left out ({kind}, see findings)"
    )
    for other in state.guests:
        if guest.data["vmid"] in other.data.get("after", []):
            other.data["after"] = [v for v in other.data["after"] if v != guest.data["vmid"]]
            if not other.data["after"]:
                del other.data["after"]
    state.find(kind, _loc(guest.file, guest.keys, guest.label), message, "left the guest out")


def _fit_gpus(state: _State) -> None:
    """vLLM guests' GPU shares summed per GPU stay ≤ 1.0: later guests that would pass it are left out."""
    used: dict[int, list[tuple[float, _Guest]]] = defaultdict(list)
    for guest in list(state.guests):
        vllm = guest.data.get("vllm")
        share = vllm.get("cache", {}).get("gpu_memory_utilization", 0.9) if isinstance(vllm, dict) else None
        if not isinstance(share, int | float) or not guest.data.get("gpus"):
            continue
        over = [g for g in guest.data["gpus"] if sum(s for s, _ in used[g]) + share > 1.0 + 1e-9]
        if over:
            gpu = over[0]
            others = ", ".join(f"{g.label} {s:g}" for s, g in used[gpu])
            _leave_out(
                state,
                guest,
                "gpu-oversubscribed",
                f"GPU {gpu} would be oversubscribed: {share:g} more on top of {others} is "
                f"{sum(s for s, _ in used[gpu]) + share:g} > 1.0 of its memory",
            )
            continue
        for g in guest.data["gpus"]:
            used[g].append((float(share), guest))


def _unique_addresses(state: _State) -> None:
    seen: dict[str, _Guest] = {}
    for guest in list(state.guests):
        nics = [guest.data["network"], *guest.data.get("networks", [])]
        mine = [n["ip"].split("/")[0] for n in nics if isinstance(n.get("ip"), str) and "/" in n["ip"]]
        mine += [n["mac"] for n in nics if isinstance(n.get("mac"), str)]
        clash = next((a for a in mine if a in seen), None)
        if clash is not None:
            what = "MAC" if ":" in clash else "IP address"
            _leave_out(
                state,
                guest,
                f"duplicate-{'mac' if what == 'MAC' else 'ip'}",
                f"{what} {clash} is already {seen[clash].label}'s",
            )
            continue
        for address in mine:
            seen[address] = guest


def _order_agrees(state: _State) -> None:
    """A guest's boot order above those it waits for, or none (Phoenix derives it from the dependency)."""
    by_vmid = {g.data["vmid"]: g for g in state.guests}
    for guest in state.guests:
        order = guest.data.get("startup", {}).get("order")
        deps = [by_vmid[d].data.get("startup", {}).get("order") for d in guest.data.get("after", [])]
        if order is not None and any(d is not None and d >= order for d in deps):
            del guest.data["startup"]["order"]
            if not guest.data["startup"]:
                del guest.data["startup"]
            state.find(
                "boot-order",
                _loc(guest.file, (*guest.keys, "boot_order"), guest.label),
                f"boot order {order} is not above the guests it depends on",
                "left the order out: Phoenix derives one from the dependency",
            )


def _validated(host: dict[str, Any], state: _State) -> dict[str, Any]:
    """Phoenix's own checks on the result; each guest they still refuse is left out, naming the problem."""
    files = _Files(chain="chain.json", host="host.json", guests="guests.json")
    for _ in range(len(state.guests) + 1):
        guests = _guests_doc(state)
        problems = _problems(host, guests, state, files)
        if not problems:
            return guests
        by_guest: dict[tuple[str, int], list[Problem]] = defaultdict(list)
        rest: list[Problem] = []
        for problem in problems:
            match = re.match(r"(containers|vms)\[(\d+)\]", problem.path)
            if problem.file == "guests.json" and match:
                by_guest[(match.group(1), int(match.group(2)))].append(problem)
            else:
                rest.append(problem)
        if rest or not by_guest:
            for problem in rest:
                state.find(
                    "invalid",
                    str(problem.file),
                    f"{problem.path}: {problem.message}",
                    "nothing written: Phoenix's validation refuses it",
                    blocking=True,
                )
            return guests
        listed = {kind: [g for g in state.guests if g.kind == kind] for kind in ("containers", "vms")}
        for (kind, index), found in by_guest.items():
            guest = listed[kind][index]
            _leave_out(
                state,
                guest,
                "invalid",
                "Phoenix's validation refuses it: " + "; ".join(f"{p.path}: {p.message}" for p in found),
            )
    return _guests_doc(state)


def _guests_doc(state: _State) -> dict[str, Any]:
    return {
        "$schema": "../../schema/guests.schema.json",
        "containers": [g.data for g in state.guests if g.kind == "containers"],
        "vms": [g.data for g in state.guests if g.kind == "vms"],
    }


def _problems(host: dict[str, Any], guests: dict[str, Any], state: _State, files: _Files) -> list[Problem]:
    try:
        host_model = Host.model_validate(host)
    except ValidationError as exc:
        return [Problem("host.json", json_path(e["loc"], host), e["msg"]) for e in exc.errors()]
    try:
        guests_model = Guests.model_validate(guests)
    except ValidationError as exc:
        return [Problem("guests.json", json_path(e["loc"], guests), e["msg"]) for e in exc.errors()]
    found = check_environment(
        host_model,
        state.ref.chain,
        guests_model,
        set(state.ref.scripts),
        set(state.ref.profiles),
        files,
        fresh_guest=state.ref.fresh_guest,
    )
    return name_guests(found, "guests.json", guest_labels(guests_model))
