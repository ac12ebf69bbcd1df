"""The declarative config as frozen pydantic models: one model per JSON file, checked field by field.

Three files describe one environment (see config/README.md):

- ``config/chain.json``                 the template chain, shared by every environment so layer keys match
                                         across dev → staging → prod;
- ``config/environments/<env>/host.json``   the Proxmox host: API, SSH, storage, vmid ranges, GPUs, driver;
- ``config/environments/<env>/guests.json`` LXC containers, VMs and data datasets.

Everything here is shape and single-record rules. Facts that relate records (unique vmids, a layer's parent
exists, GPU memory summed per GPU, …) live in :mod:`phoenix_components.config.load`, which names the file
and JSON path of every mistake. ``extra="forbid"`` everywhere: a typo in a key is an error, never silently
ignored.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, ClassVar, Literal, TypeVar, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

T = TypeVar("T")

# Names Phoenix itself makes up (layers, features, datasets, keys) end up in shell commands, ZFS dataset
# names and Pulumi URNs: a strict alphabet means none of them ever needs more than the single quoting
# providers/channels/command.py already does. Values PVE defines (hostnames, storage IDs, ports) follow
# PVE's own formats instead (pve-common JSONSchema, pve-firewall), neither weaker nor stricter.
Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
# PVE's `dns-name` format (a container's hostname, a VM's name): dot-separated labels of letters, digits
# and inner hyphens, any case. 64 characters at most: the kernel's limit for the name the container gets
# (lxc.uts.name), so a longer one fails at the first start.
Hostname = Annotated[
    str,
    StringConstraints(
        pattern=r"^([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$",
        max_length=64,
    ),
]
# PVE's `pve-node` format: one label, no dots.
NodeName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$")]
VmId = Annotated[int, Field(ge=100, le=999_999_999)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Version = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9.:+~_-]{0,63}$")]
# PVE's `mac-addr`: six hex pairs with the I/G (multicast) bit of the first octet clear.
Mac = Annotated[str, StringConstraints(pattern=r"^[0-9A-Fa-f][02468ACEace](:[0-9A-Fa-f]{2}){5}$")]
ZfsName = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*(/[A-Za-z0-9][A-Za-z0-9_.:-]*)*$")
]
AbsPath = Annotated[str, StringConstraints(pattern=r"^/[A-Za-z0-9._/-]*$")]
# A Linux interface name as PVE's `pve-bridge-id` takes it; 15 characters is the kernel's IFNAMSIZ - 1.
BridgeName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,15}$")]
Port = Annotated[int, Field(ge=1, le=65535)]
HttpsUrl = Annotated[str, StringConstraints(pattern=r"^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[^\s]*)?$")]
# PVE's `pve-storage-id`: /^[a-z][a-z0-9\-\_\.]*[a-z0-9]$/i (so mixed case, and at least two characters).
StorageId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_.-]*[A-Za-z0-9]$")]
Fingerprint = Annotated[str, StringConstraints(pattern=r"^SHA256:[A-Za-z0-9+/]{43}$")]

# AppArmor profiles PVE itself provides; anything else must be one the host config loads.
PVE_BUILTIN_PROFILES = frozenset({"lxc-container-default-cgns", "lxc-container-default-with-nesting"})
UNCONFINED = "unconfined"
# PVE profiles that let a confined process leave confinement (`change_profile -> unconfined`, shown under a
# real AppArmor kernel in tests/apparmor_vm): naming one needs the same opt-out as `unconfined`.
ESCAPABLE_PROFILES = frozenset({"lxc-container-default-with-nesting"})


class Model(BaseModel):
    """Frozen, strict about unknown keys and types, and tolerant of the ``$schema`` key editors use.

    ``strict``: a value of the wrong JSON type is an error, never silently coerced (``"4"`` cores, ``1``
    for ``true``, ``2.0`` for an integer) — what the file says is what Phoenix sends.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, strict=True)


class Document(Model):
    schema_ref: str | None = Field(default=None, alias="$schema", description="JSON Schema for editors")


# ---------------------------------------------------------------- host.json

# PVE's root@pam rule (pve-container's check_ct_modify_config_perm): device passthrough (devN), bind mounts
# and feature flags other than nesting (on a privileged container, any flag) are allowed only to root@pam
# logged in with a password (a ticket), never to an API token, not even root@pam's own. It is written here
# once for the config: Api.root_login says who may, Container.root_only_settings what needs it, and the
# config checks refuse the rest before anything runs. providers/channels/pve.py keeps its own check of each
# LXC request at run time, because providers never import phoenix_components.
ROOT_USER = "root@pam"


class Api(Model):
    """The PVE API. ``password`` as root@pam is the login PVE's root@pam rule needs (devN, bind mounts,
    keyctl/fuse/mknod); a token may do the rest."""

    endpoint: HttpsUrl
    auth: Literal["password", "token"] = "password"
    user: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]+@[A-Za-z0-9._-]+$")] = ROOT_USER
    token_id: (
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]+@[A-Za-z0-9._-]+![A-Za-z0-9._-]+$")] | None
    ) = None
    verify_tls: bool | AbsPath = Field(default=True, description="true, false (lab only) or a CA bundle path")

    @model_validator(mode="after")
    def _token_matches_auth(self) -> Api:
        if self.auth == "token" and self.token_id is None:
            raise ValueError("auth 'token' needs token_id (user@realm!name)")
        if self.auth == "password" and self.token_id is not None:
            raise ValueError("token_id is set but auth is 'password'; set auth to 'token' or drop token_id")
        return self

    @property
    def root_login(self) -> bool:
        """Whether this login may do what PVE reserves for root@pam (see ROOT_USER)."""
        return self.auth == "password" and self.user == ROOT_USER

    @property
    def login(self) -> str:
        """Who PVE sees, as a person names it: ``API token root@pam!phoenix`` or ``root@pam``."""
        return f"API token {self.token_id}" if self.auth == "token" else self.user


class Ssh(Model):
    """SSH to the host, for what the API cannot do. The host key is pinned; nothing is learnt on first use."""

    host: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9.:-]+$")]
    port: Port = 22
    user: Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_-]*$")] = "root"
    host_key: Fingerprint = Field(description="`ssh-keyscan HOST | ssh-keygen -lf -` prints it")


class Storage(Model):
    rootfs: StorageId = Field(default="local-zfs", description="zfspool storage for container disks")
    zfs_pool: ZfsName = Field(default="rpool/data", description="the dataset that storage points at")
    templates: StorageId = Field(default="local", description="storage with vztmpl/iso content")
    snippets: StorageId = Field(default="local", description="storage with snippets content (cloud-init)")
    snippets_path: AbsPath = Field(
        default="/var/lib/vz/snippets", description="where that storage keeps snippets on the host's disk"
    )
    vm_disks: StorageId = "local-zfs"


class VmidRange(Model):
    start: VmId
    end: VmId

    @model_validator(mode="after")
    def _ordered(self) -> VmidRange:
        if self.end < self.start:
            raise ValueError(f"end {self.end} is below start {self.start}")
        return self

    def __contains__(self, vmid: object) -> bool:
        return isinstance(vmid, int) and self.start <= vmid <= self.end

    def overlaps(self, other: VmidRange) -> bool:
        return self.start <= other.end and other.start <= self.end


class VmidRanges(Model):
    layers: VmidRange
    guests: VmidRange


class HostGpu(Model):
    """A GPU of the host as host.json declares it (the NVIDIA driver resource reads its own inventory)."""

    index: Annotated[int, Field(ge=0, le=15)] = Field(description="nvidia-smi's index of the GPU")
    memory_mib: Annotated[int, Field(gt=0)]
    # The kernel driver numbers /dev/nvidiaN by its own probe order, which NVIDIA does not promise to be
    # nvidia-smi's index order: so there is no default. With a managed driver the minors come from the
    # NvidiaHostDriver resource's inventory (a declared one is checked against it); without one, a GPU
    # passed into a container or a layer build must declare it.
    minor: Annotated[int, Field(ge=0, le=254)] | None = Field(
        default=None,
        description="device minor, the N of /dev/nvidiaN (`Device Minor` in "
        "/proc/driver/nvidia/gpus/<pci>/information); needed when `nvidia.manage` is false",
    )
    pci: (
        Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}(\.[0-7])?$")] | None
    ) = Field(default=None, description="PCI address (`lspci -D`), needed to pass the GPU through to a VM")


class NvidiaDriver(Model):
    """The host driver. Plain http is accepted for a local mirror: the pinned sha256 is what is trusted."""

    version: Annotated[str, StringConstraints(pattern=r"^[0-9]{3}\.[0-9]{2,3}(\.[0-9]{2,3})?$")]
    # No whitespace or control character: the URL travels as one argv word, and a line break in it has no
    # meaning to curl. Shell metacharacters are legal in URLs and are quoted (tests/security).
    runfile_url: Annotated[
        str, StringConstraints(pattern=r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?/[^\s\x00-\x1f\x7f]*$")
    ]
    sha256: Sha256
    uninstall_on_delete: bool = False
    manage: bool = Field(
        default=True,
        description="false: the driver is installed outside Phoenix (host image, Debian packages); Phoenix "
        "pins the version for the containers' userspace but does not install it on the host",
    )
    allow_reboot: bool = Field(
        default=False,
        description="true: when nouveau had to be blacklisted, Phoenix reboots the host and waits for it; "
        "false (default): it stops with a reboot-required error naming what it did, and you reboot",
    )
    kernel_pin: (
        Annotated[str, StringConstraints(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+(-[0-9]+)?-pve$")] | None
    ) = Field(
        default=None,
        description="a PVE kernel version (e.g. 6.8.12-4-pve) to pin with proxmox-boot-tool, so an upgrade "
        "does not boot a kernel the DKMS module was not built for",
    )

    @model_validator(mode="after")
    def _url_names_version(self) -> NvidiaDriver:
        if self.version not in self.runfile_url:
            raise ValueError(f"runfile_url does not mention version {self.version}")
        return self


class OsTemplate(Model):
    """A container OS template on the host's template storage, downloaded by Phoenix when missing."""

    file: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._+-]+\.tar\.(gz|xz|zst)$")]
    url: HttpsUrl | None = None
    sha512: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{128}$")] | None = None


class CloudImage(Model):
    """A VM cloud image (qcow2/img) downloaded to the host, cloned into VMs."""

    file: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._+-]+\.(img|qcow2|raw)$")]
    url: HttpsUrl
    checksum: Sha256 | None = Field(default=None, description="sha256 of the image")


def once_each(value: list[T], what: str) -> list[T]:
    """``value`` when no item repeats, else ValueError ``"<what> listed twice: [...]"``."""
    if len(set(value)) != len(value):
        raise ValueError(f"{what} listed twice: {value}")
    return value


def ipv4_network(value: str) -> str:
    """``10.0.0.0/24`` passes; a host address with a prefix (``10.0.0.1/24``) or no network is refused."""
    try:
        ipaddress.IPv4Network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"not an IPv4 network in CIDR form: {exc}") from None
    return value


# A subnet (a bridge's, a VPC's): one rule for host.json and cloud.json.
Ipv4Cidr = Annotated[str, AfterValidator(ipv4_network)]


def ipv4_address(value: str) -> str:
    try:
        ipaddress.IPv4Address(value)
    except ValueError as exc:
        raise ValueError(f"not an IPv4 address: {exc}") from None
    return value


# A gateway (a bridge's, a guest's): a plain IPv4 address.
Ipv4Address = Annotated[str, AfterValidator(ipv4_address)]


class Bridge(Model):
    name: BridgeName
    cidr: Ipv4Cidr = Field(description="the bridge's subnet, e.g. 10.0.0.0/24")
    gateway: Ipv4Address | None = None
    vlan_aware: bool = False


class Capacity(Model):
    """The host's resources, as the guests may use them (leave out what the host itself needs)."""

    memory_mib: Annotated[int, Field(ge=1)]
    cores: Annotated[int, Field(ge=1)] = Field(description="logical CPUs (threads), as `nproc` counts them")
    storage_gib: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="guest storage (the rootfs and volume storage); absent = not checked"
    )


class Overcommit(Model):
    """How far the guests' sum may go past :class:`Capacity`, as a ratio.

    Defaults: memory 1.0, because a container's memory is a hard limit its processes may really fill and a
    VM's is allocated to it: past the host's memory the kernel's OOM killer ends guests. Cores 4.0, because
    cores are a share of CPU time the scheduler divides, not a reservation: mostly idle guests (an API, a
    proxy) share well, and 4 vCPUs per logical CPU is the usual consolidation ratio for mixed loads; a host
    of busy inference servers wants 1.0. Storage is not overcommitted: a guest may write its declared
    size, and a full pool stops every guest on it.
    """

    memory: Annotated[float, Field(gt=0, le=16)] = 1.0
    cores: Annotated[float, Field(gt=0, le=64)] = 4.0


class Host(Document):
    node: NodeName
    api: Api
    ssh: Ssh
    storage: Storage = Storage()
    vmid_ranges: VmidRanges
    bridges: Annotated[list[Bridge], Field(min_length=1)]
    gpus: list[HostGpu] = []
    nvidia: NvidiaDriver | None = None
    os_templates: dict[Name, OsTemplate] = {}
    cloud_images: dict[Name, CloudImage] = {}
    apparmor_profiles: list[Name] = Field(default=[], description="files under apparmor/ to load on the host")
    apparmor_load: Literal["kernel", "compile-only"] = Field(
        default="kernel",
        description="`compile-only` checks profiles without loading them: only for a host without the "
        "AppArmor LSM (the test lab); a real PVE host loads them",
    )
    max_parallel_tasks: Annotated[int, Field(ge=1, le=32)] = Field(
        default=4, description="PVE tasks (clones, starts) in flight at once on this host"
    )
    capacity: Capacity | None = Field(
        default=None, description="what the host has; validation sums the guests against it"
    )
    overcommit: Overcommit = Overcommit()


# ---------------------------------------------------------------- chain.json


class LayerBuild(Model):
    """Resources of the build container while a layer's features run."""

    cores: Annotated[int, Field(ge=1, le=512)] = 2
    memory_mib: Annotated[int, Field(ge=256)] = 2048
    disk_gib: Annotated[int, Field(ge=1, le=4096)] = 16
    nesting: bool = Field(default=False, description="needed for Docker inside the container")
    gpus: bool = Field(default=False, description="pass the host's GPUs in while building (smoke test)")


class Layer(Model):
    """One step of the template chain: a parent (or an OS template) + ordered features + pinned versions."""

    parent: Name | None = None
    os_template: Name | None = Field(default=None, description="key into host.os_templates")
    features: Annotated[list[Name], Field(min_length=1)]
    versions: dict[Name, Version] = {}
    smoke_test: Annotated[list[str], Field(min_length=1)] = Field(
        description="argv run with `pct exec` after the features; exit 0 = the layer is verified"
    )
    build: LayerBuild = LayerBuild()

    @model_validator(mode="after")
    def _one_origin(self) -> Layer:
        if (self.parent is None) == (self.os_template is None):
            raise ValueError("a layer has exactly one of `parent` (another layer) or `os_template`")
        return self


class Chain(Document):
    layers: Annotated[dict[Name, Layer], Field(min_length=1)]


# ---------------------------------------------------------------- guests.json


class Network(Model):
    bridge: BridgeName = "vmbr0"
    ip: str = Field(description="`dhcp`, `manual` or an address in CIDR form, e.g. 10.0.0.21/24")
    gateway: Ipv4Address | None = None
    mac: Mac | None = Field(default=None, description="fixed MAC; PVE generates one when absent")
    vlan: Annotated[int, Field(ge=1, le=4094)] | None = None
    firewall: bool = True

    @field_validator("ip")
    @classmethod
    def _ip(cls, value: str) -> str:
        # PVE's pve-ipv4-config: `dhcp`, `manual`, or CIDRv4 with a prefix of 8 to 32.
        if value in ("dhcp", "manual"):
            return value
        try:
            interface = ipaddress.IPv4Interface(value)
        except ValueError as exc:
            raise ValueError(
                f"`dhcp`, `manual` or an IPv4 address with prefix (10.0.0.21/24): {exc}"
            ) from None
        if "/" not in value:
            raise ValueError("give the prefix length too, e.g. 10.0.0.21/24")
        if interface.network.prefixlen < 8:
            raise ValueError(f"PVE takes prefix lengths 8 to 32, not /{interface.network.prefixlen}")
        return value

    @model_validator(mode="after")
    def _gateway_in_subnet(self) -> Network:
        if self.ip in ("dhcp", "manual"):
            if self.gateway is not None:
                raise ValueError(f"a gateway with `{self.ip}` is ignored by PVE; drop it")
            return self
        interface = ipaddress.IPv4Interface(self.ip)
        if interface.ip in (interface.network.network_address, interface.network.broadcast_address):
            raise ValueError(f"{self.ip} is the network or broadcast address of its subnet")
        if self.gateway is not None and ipaddress.IPv4Address(self.gateway) not in interface.network:
            raise ValueError(f"gateway {self.gateway} is outside {interface.network}")
        return self

    @property
    def address(self) -> str | None:
        return None if self.ip in ("dhcp", "manual") else str(ipaddress.IPv4Interface(self.ip).ip)


# pve-firewall's dport/sport spec: a comma-separated list of ports and `low:high` ranges, no empty item.
PortSpec = Annotated[str, StringConstraints(pattern=r"^[0-9]+(:[0-9]+)?(,[0-9]+(:[0-9]+)?)*$")]
MAX_PORT_NUMBERS = 15  # iptables' multiport limit, which PVE enforces; a range counts as two


def check_port_spec(value: str) -> str:
    """PVE's rules for a port list (pve-firewall parse_port_name_number_or_range), with its wording.

    Service names from the host's /etc/services are left out: which exist can only be checked on the host,
    so Phoenix takes numbers only (``22`` rather than ``ssh``).
    """
    numbers = 0
    for item in value.split(","):
        low, _, high = item.partition(":")
        for port in (low, high) if high else (low,):
            if int(port) > 65535:
                raise ValueError(f"invalid port '{port}' (0 to 65535)")
        if high and int(low) > int(high):
            raise ValueError(f"backwards range '{item}' not allowed, did you mean '{high}:{low}'?")
        numbers += 2 if high else 1
    if numbers > MAX_PORT_NUMBERS:
        raise ValueError(
            f"too many entries in port list ({numbers} > {MAX_PORT_NUMBERS} numbers; a range counts 2)"
        )
    return value


class FirewallRule(Model):
    direction: Literal["in", "out"]
    action: Literal["ACCEPT", "DROP", "REJECT"]
    proto: Literal["tcp", "udp", "icmp"] | None = None
    dport: PortSpec | None = None
    source: str | None = None
    dest: str | None = None
    comment: Annotated[str, StringConstraints(pattern=r"^[^\n\r#]{0,120}$")] | None = None

    @field_validator("source", "dest")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ipaddress.IPv4Network(value, strict=False)
            except ValueError as exc:
                raise ValueError(f"not an IPv4 address or CIDR: {exc}") from None
        return value

    @field_validator("dport")
    @classmethod
    def _ports(cls, value: str | None) -> str | None:
        return check_port_spec(value) if value is not None else None

    @model_validator(mode="after")
    def _port_needs_proto(self) -> FirewallRule:
        if self.dport is not None and self.proto not in ("tcp", "udp"):
            raise ValueError("dport needs proto tcp or udp")
        return self


class Firewall(Model):
    enabled: bool = True
    policy_in: Literal["ACCEPT", "DROP", "REJECT"] = "DROP"
    policy_out: Literal["ACCEPT", "DROP", "REJECT"] = "ACCEPT"
    rules: list[FirewallRule] = []


class ServicePort(Model):
    """A port a guest listens on besides vLLM's; used for clash checks and firewall generation."""

    name: Name
    port: Port
    proto: Literal["tcp", "udp"] = "tcp"


class VolumeMount(Model):
    """A new volume on a PVE storage, mounted with ``mpN``."""

    type: Literal["volume"]
    path: AbsPath
    storage: StorageId = "local-zfs"
    size_gib: Annotated[int, Field(ge=1, le=65536)]
    backup: bool = False


class DatasetCloneMount(Model):
    """A writable ZFS clone of a data dataset's snapshot (e.g. model weights), mounted with ``mpN``.

    The clone is made per guest in O(1) by the ZfsClone provider; mounting a host dataset is a bind mount,
    which PVE allows only to root@pam.
    """

    type: Literal["dataset_clone"]
    path: AbsPath
    dataset: Name = Field(description="key into guests.datasets")
    read_only: bool = False


class BindMount(Model):
    """A host directory bind-mounted into the guest (root@pam only)."""

    type: Literal["bind"]
    path: AbsPath
    host_path: AbsPath
    read_only: bool = True


Mount = Annotated[VolumeMount | DatasetCloneMount | BindMount, Field(discriminator="type")]


class ModelSection(Model):
    model: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._/-]+$")]
    dtype: Literal["auto", "half", "float16", "bfloat16", "float", "float32"] = "auto"
    max_model_len: Annotated[int, Field(ge=128)] | None = None
    trust_remote_code: bool = False
    revision: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._/-]+$")] | None = None


class CacheSection(Model):
    quantization: (
        Literal["awq", "awq_marlin", "gptq", "gptq_marlin", "fp8", "bitsandbytes", "gguf"] | None
    ) = None
    gpu_memory_utilization: Annotated[float, Field(gt=0.0, le=1.0)] = 0.9
    kv_cache_dtype: Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"] | None = None


class ParallelSection(Model):
    tensor_parallel_size: Annotated[int, Field(ge=1, le=16)] = 1


class ServerSection(Model):
    host: str = "0.0.0.0"
    port: Port = 8000
    # vLLM takes any name; `/` is common (`Qwen/Qwen2.5-7B`). No space or control character: the name is
    # one argv word and appears in the unit's Description.
    served_model_name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")]

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        try:
            ipaddress.IPv4Address(value)
        except ValueError as exc:
            raise ValueError(f"an IPv4 address to listen on: {exc}") from None
        return value


ExtraArg = Annotated[
    # No whitespace or control character: each is one argv word of ExecStart (systemd ends a line at \r).
    str,
    StringConstraints(
        pattern=r"^--?[A-Za-z0-9][A-Za-z0-9_-]*(=[^\s\x00-\x1f\x7f]*)?$"
        r"|^[^\s\x00-\x1f\x7f-][^\s\x00-\x1f\x7f]*$"
    ),
]


# Short spellings `vllm serve` accepts for flags the sections manage.
VLLM_FLAG_ALIASES = {"-tp": "--tensor-parallel-size", "-q": "--quantization"}


class VllmEngine(Model):
    """vLLM engine config; each section flattens to CLI flags of `vllm serve` (see VllmService)."""

    model: ModelSection
    cache: CacheSection = CacheSection()
    parallel: ParallelSection = ParallelSection()
    server: ServerSection
    extra_args: list[ExtraArg] = []
    startup_timeout_s: Annotated[int, Field(ge=10, le=7200)] = 900
    environment: EngineEnvironment = Field(
        default={}, description="the service's environment, e.g. TORCH_CUDA_ARCH_LIST for a new GPU"
    )

    TITLE: ClassVar[str] = "vLLM"
    FEATURE: ClassVar[str] = "vllm"

    @property
    def served_name(self) -> str:
        return self.server.served_model_name

    @property
    def listen_port(self) -> int:
        return self.server.port

    def gpu_budget_mib(self, gpu_memory_mib: int) -> float | None:
        """vLLM reserves ``gpu_memory_utilization`` of each GPU it uses."""
        return self.cache.gpu_memory_utilization * gpu_memory_mib

    @staticmethod
    def managed_flags() -> set[str]:
        """Every ``--flag`` a section sets (the model is the positional argument, or ``--model``)."""
        flags = {"--model"}
        for section in (ModelSection, CacheSection, ParallelSection, ServerSection):
            flags |= {"--" + name.replace("_", "-") for name in section.model_fields if name != "model"}
        return flags

    @field_validator("extra_args")
    @classmethod
    def _no_managed_flags(cls, value: list[str]) -> list[str]:
        """A managed flag repeated here would contradict its section (vLLM takes the last one given)."""
        managed = cls.managed_flags()
        for arg in value:
            flag = arg.partition("=")[0]
            flag = VLLM_FLAG_ALIASES.get(flag, flag).replace("_", "-")
            if flag in managed:
                raise ValueError(
                    f"{arg!r} sets {flag}, which the engine config manages; set it in its section instead"
                )
        return value


class Insecure(Model):
    """Named, reasoned opt-outs from Phoenix's safe defaults. Each value is the reason, kept in the config."""

    unconfined_apparmor: Annotated[str, StringConstraints(min_length=10)] | None = None
    writable_host_system_mount: Annotated[str, StringConstraints(min_length=10)] | None = Field(
        default=None,
        description="allow a read-write bind mount of a host system path (/, /etc, /usr, /var/lib …)",
    )


class PveFeatures(Model):
    nesting: bool = False
    keyctl: bool = False
    fuse: bool = False
    mknod: bool = False

    def root_only(self) -> list[str]:
        """Flags set here that PVE lets only root@pam set on an unprivileged container: all but nesting
        (see ROOT_USER; Phoenix's containers are all unprivileged)."""
        return [name for name in ("keyctl", "fuse", "mknod") if getattr(self, name)]


class SnapshotPolicy(Model):
    """Rolling PVE snapshots of a guest: one each time ``trigger`` changes, the newest ``retention`` kept."""

    prefix: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,20}$")] = "phoenix"
    retention: Annotated[int, Field(ge=1, le=64)] = 3
    trigger: Annotated[str, StringConstraints(max_length=200)] = Field(
        default="", description="change it (a release tag, a model revision) to take a new snapshot"
    )


# A guest's own environment values for its feature scripts (containers[].feature_env). The name is a shell
# variable name outside PHOENIX_* (checked by Container), which Phoenix sets itself (target, pinned
# versions): a guest cannot override a pin that way. A value travels as one `env NAME=VALUE` argument,
# quoted once, so any text is safe but control characters (a line break would end the variable for a
# script that writes it into a config file line).
FeatureEnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
FeatureEnvValue = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]{0,4096}$")]
FileMode = Annotated[str, StringConstraints(pattern=r"^0[0-7]{3}$")]


class FeatureFile(Model):
    """A file written into the guest, from its config, before its feature scripts run (a Caddyfile, a CA
    policy); a changed file runs the guest's features again, in the same guest."""

    path: AbsPath
    content: Annotated[str, StringConstraints(max_length=1_048_576)]
    mode: FileMode = "0644"

    @field_validator("path")
    @classmethod
    def _plain_path(cls, value: str) -> str:
        parts = value.split("/")
        if value == "/" or value.endswith("/") or any(p in (".", "..") for p in parts) or "" in parts[1:]:
            raise ValueError(f"{value!r}: a file's absolute path, without `.`, `..` or empty parts")
        return value


def _no_phoenix_variables(value: dict[str, str]) -> dict[str, str]:
    reserved = sorted(name for name in value if name.upper().startswith("PHOENIX_"))
    if reserved:
        raise ValueError(f"{', '.join(reserved)}: PHOENIX_* variables are Phoenix's own (target, pins)")
    return value


def _unique_paths(value: list[FeatureFile]) -> list[FeatureFile]:
    paths = [f.path for f in value]
    twice = sorted({p for p in paths if paths.count(p) > 1})
    if twice:
        raise ValueError(f"files listed twice: {', '.join(twice)}")
    return value


# A guest's parameters for its own feature scripts, the same for a container (GuestFeatures, `pct exec`)
# and a VM (cloud-init): environment values, and files written before the scripts run.
FeatureEnv = Annotated[dict[FeatureEnvName, FeatureEnvValue], AfterValidator(_no_phoenix_variables)]
FeatureFiles = Annotated[list[FeatureFile], AfterValidator(_unique_paths)]


def _guest_environment(value: dict[str, str]) -> dict[str, str]:
    """PVE and LXC strip a raw config line's trailing blanks, so such a value would lose them on the way;
    ``container`` is LXC's own variable (systemd reads it to know it runs in a container)."""
    _no_phoenix_variables(value)
    if "container" in value:
        raise ValueError("`container` is set by LXC itself (systemd reads it)")
    blank = sorted(name for name, text in value.items() if text != text.rstrip())
    if blank:
        raise ValueError(f"{', '.join(blank)}: a value ending in blanks (PVE and LXC strip them)")
    return value


# A container's own environment (containers[].environment): `lxc.environment` lines in its PVE config,
# the environment of its init; the base layer's phoenix-guest-environment.service hands the declared names
# to systemd, so every service the guest starts has them too (render/lxc.py: raw_lines).
GuestEnvironment = Annotated[dict[FeatureEnvName, FeatureEnvValue], AfterValidator(_guest_environment)]


# ---------------------------------------------------------------- model servers (engines)
#
# A container serves at most one model server: `vllm`, `ollama` or `llamacpp` (Container.engine()). Each
# engine model says what validation needs to know about it (ClassVars and the two methods below): the
# layer feature that installs it, the port it listens on, the name /v1/models lists, and its GPU memory
# budget, which validation counts with every other engine on the same GPU. Rendering the unit and the
# health probe is phoenix_components/render/engines/<key>.py.


def _no_managed_variables(managed: tuple[str, ...]) -> AfterValidator:
    def check(value: dict[str, str]) -> dict[str, str]:
        clash = sorted(name for name in value if name in managed)
        if clash:
            raise ValueError(f"{', '.join(clash)}: set from the engine's own fields (host, port)")
        return value

    return AfterValidator(check)


# A service's environment (Environment= lines of its unit): TORCH_CUDA_ARCH_LIST, OLLAMA_KEEP_ALIVE, ...
EngineEnvironment = dict[FeatureEnvName, FeatureEnvValue]
GpuBudgetMib = Annotated[int, Field(ge=1)]


def _listen_address(value: str) -> str:
    try:
        ipaddress.IPv4Address(value)
    except ValueError as exc:
        raise ValueError(f"an IPv4 address to listen on: {exc}") from None
    return value


ListenAddress = Annotated[str, AfterValidator(_listen_address)]
# ollama's model names: `llama3.2`, `llama3.2:3b`, `hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M`.
OllamaModel = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}(:[A-Za-z0-9][A-Za-z0-9._-]{0,127})?$")
]
# A Hugging Face GGUF repository for llama-server's -hf, with an optional :quant tag.
HfRepo = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*(:[A-Za-z0-9._-]+)?$"),
]
ServedName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")]


class OllamaEngine(Model):
    """``ollama serve`` on ``host:port`` (OLLAMA_HOST), the model pulled as part of the deploy."""

    TITLE: ClassVar[str] = "ollama"
    FEATURE: ClassVar[str] = "ollama"

    model: OllamaModel = Field(description="what `ollama pull` fetches and /api/tags must list")
    host: ListenAddress = "0.0.0.0"
    port: Port = 11434
    gpu_memory_mib: GpuBudgetMib | None = Field(
        default=None,
        description="MiB this server may use on each GPU in gpus (ollama has no hard cap: validation "
        "sums it with every other engine on the GPU against host gpus[].memory_mib)",
    )
    environment: Annotated[EngineEnvironment, _no_managed_variables(("OLLAMA_HOST",))] = Field(
        default={}, description="the service's environment, e.g. OLLAMA_KEEP_ALIVE, OLLAMA_NUM_PARALLEL"
    )
    startup_timeout_s: Annotated[int, Field(ge=10, le=7200)] = 300
    pull_timeout_s: Annotated[int, Field(ge=10, le=86400)] = Field(
        default=3600, description="seconds `ollama pull` may take (a large model on a slow link)"
    )

    @property
    def listen_port(self) -> int:
        return self.port

    @property
    def served_name(self) -> str:
        """The name /api/tags and /v1/models list: ollama adds ``:latest`` to a model without a tag."""
        return self.model if ":" in self.model.rpartition("/")[2] else f"{self.model}:latest"

    def gpu_budget_mib(self, _gpu_memory_mib: int) -> float | None:
        return self.gpu_memory_mib


LLAMACPP_FLAG_ALIASES = {
    "-m": "--model",
    "-hf": "--hf-repo",
    "-c": "--ctx-size",
    "-ngl": "--n-gpu-layers",
    "--gpu-layers": "--n-gpu-layers",
    "-np": "--parallel",
    "-a": "--alias",
}
LLAMACPP_MANAGED = {
    *("--model", "--hf-repo", "--ctx-size", "--n-gpu-layers", "--parallel", "--alias", "--host", "--port")
}


class LlamaCppEngine(Model):
    """llama.cpp's ``llama-server``: a GGUF model (a path in the guest, or a Hugging Face repo) served
    under ``served_model_name`` (``--alias``)."""

    TITLE: ClassVar[str] = "llama.cpp server"
    FEATURE: ClassVar[str] = "llamacpp"

    model_path: AbsPath | None = Field(default=None, description="a .gguf file in the guest (-m)")
    hf_repo: HfRepo | None = Field(default=None, description="a Hugging Face GGUF repo[:quant] (-hf)")
    served_model_name: ServedName = Field(description="--alias: the name /v1/models must list")
    host: ListenAddress = "0.0.0.0"
    port: Port = 8080
    ctx_size: Annotated[int, Field(ge=0)] | None = Field(default=None, description="-c (0: the model's)")
    n_gpu_layers: Annotated[int, Field(ge=0)] | None = Field(default=None, description="-ngl")
    parallel: Annotated[int, Field(ge=1, le=256)] | None = Field(default=None, description="-np slots")
    gpu_memory_mib: GpuBudgetMib | None = Field(
        default=None,
        description="MiB this server may use on each GPU in gpus (llama.cpp has no hard cap: validation "
        "sums it with every other engine on the GPU against host gpus[].memory_mib)",
    )
    environment: EngineEnvironment = Field(default={}, description="the service's environment")
    extra_args: list[ExtraArg] = []
    startup_timeout_s: Annotated[int, Field(ge=10, le=7200)] = 900

    @property
    def listen_port(self) -> int:
        return self.port

    @property
    def served_name(self) -> str:
        return self.served_model_name

    def gpu_budget_mib(self, _gpu_memory_mib: int) -> float | None:
        return self.gpu_memory_mib

    @model_validator(mode="after")
    def _one_model(self) -> LlamaCppEngine:
        if (self.model_path is None) == (self.hf_repo is None):
            raise ValueError("give exactly one of model_path (a .gguf in the guest) and hf_repo")
        return self

    @field_validator("extra_args")
    @classmethod
    def _no_managed_flags(cls, value: list[str]) -> list[str]:
        for arg in value:
            flag = arg.partition("=")[0]
            flag = LLAMACPP_FLAG_ALIASES.get(flag, flag)
            if flag in LLAMACPP_MANAGED:
                raise ValueError(
                    f"{arg!r} sets {flag}, which the engine config manages; set its field instead"
                )
        return value


def _parameters_need_features(guest: Container | Vm) -> None:
    """Feature parameters without features would validate and then reach nothing."""
    if (guest.feature_env or guest.feature_files) and not guest.features:
        raise ValueError("feature_env and feature_files are only for a guest that has features")


def _vmids_once(value: list[int]) -> list[int]:
    return once_each(value, "vmids")


# The guests one waits for (a container or a VM): existence and cycles are checked in load.py.
After = Annotated[
    list[VmId],
    AfterValidator(_vmids_once),
    Field(
        description="vmids of guests this one is created and started after, once they are healthy; "
        "without a startup order, PVE's boot order is derived from these"
    ),
]


def ip_address(value: str) -> str:
    """An IPv4 or IPv6 address (an IPv6 one may name its interface, ``fe80::1%eth0``), as PVE's
    ``lxc-ip-with-ll-iface`` takes a nameserver."""
    try:
        ipaddress.ip_address(value)
    except ValueError as exc:
        raise ValueError(f"not an IP address: {exc}") from None
    return value


class Dns(Model):
    """A guest's resolver: PVE's LXC ``nameserver``/``searchdomain``, a VM's cloud-init DNS. Absent, a
    container keeps what its template has and a VM what cloud-init finds (DHCP, the image)."""

    nameserver: list[Annotated[str, AfterValidator(ip_address)]] = Field(
        default=[], description="DNS server addresses, in the order the guest asks them"
    )
    searchdomain: Hostname | None = Field(
        default=None, description="the DNS search domain, e.g. lab.internal"
    )

    @field_validator("nameserver")
    @classmethod
    def _once(cls, value: list[str]) -> list[str]:
        return once_each(value, "nameservers")

    @model_validator(mode="after")
    def _something(self) -> Dns:
        if not self.nameserver and self.searchdomain is None:
            raise ValueError("give a nameserver or a searchdomain (or leave dns out)")
        return self


# PVE's `pve-tag` (pve-common $PVE_TAG_RE): a letter, digit or `_`, then letters, digits and `_ - + .`.
Tag = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_+.-]*$")]


def _tags_once(value: list[str]) -> list[str]:
    # PVE keeps one of each tag, case-insensitively by default (GuestHelpers::get_unique_tags): a repeat
    # would validate and vanish.
    once_each([tag.lower() for tag in value], "tags (in any case)")
    return value


Tags = Annotated[
    list[Tag], AfterValidator(_tags_once), Field(description="PVE tags: meta information shown in the UI")
]


class Startup(Model):
    """PVE's ``startup`` property string, typed: ``order=N,up=N,down=N``.

    PVE's rule (pve-common JSONSchema ``pve_parse_startup_order``): each part is optional and a
    non-negative integer (``\\d+``, no upper bound); an empty string is refused. ``order`` sorts the guests
    started at boot (lower first, guests without one after all that have one; shutdown is the reverse);
    ``up``/``down`` are seconds PVE waits after starting/stopping this guest before the next one.
    """

    order: Annotated[int, Field(ge=0)] | None = None
    up: Annotated[int, Field(ge=0)] | None = Field(default=None, description="seconds to wait after start")
    down: Annotated[int, Field(ge=0)] | None = Field(default=None, description="seconds to wait after stop")

    @model_validator(mode="after")
    def _not_empty(self) -> Startup:
        # PVE refuses an empty startup string ("unable to parse startup options").
        if self.order is None and self.up is None and self.down is None:
            raise ValueError("give at least one of order, up, down (PVE refuses an empty startup)")
        return self


def nics(guest: Container | Vm) -> list[Network]:
    """The guest's NICs in PVE's order: ``network`` is net0, ``networks`` net1, net2, …"""
    return [guest.network, *guest.networks]


Engine = VllmEngine | OllamaEngine | LlamaCppEngine
ENGINE_KEYS = ("vllm", "ollama", "llamacpp")
"""The Container keys of the model servers, in the order their registry lists them."""


class Container(Model):
    """A workload LXC container: a linked clone of a template layer, or (``adopt``) one already running."""

    vmid: VmId
    hostname: Hostname
    layer: Name | None = Field(
        default=None,
        description="the template layer it is cloned from; required unless `adopt` (then optional: an "
        "adopted guest may come from no Phoenix layer)",
    )
    adopt: bool = Field(
        default=False,
        description="take the existing container with this vmid into state on the first up (its hostname "
        "and net0 MAC must match): no clone, no restart unless a declared change needs one",
    )
    retain_on_delete: bool | None = Field(
        default=None,
        description="on destroy, only forget the guest (it keeps running); default: true when adopted "
        "(keep what Phoenix did not create), false otherwise",
    )
    description: Annotated[str, StringConstraints(max_length=8192)] = ""  # PVE's maxLength
    cores: Annotated[int, Field(ge=1, le=8192)] = 2  # PVE's range for a container
    memory_mib: Annotated[int, Field(ge=16)] = 2048  # PVE's minimum
    swap_mib: Annotated[int, Field(ge=0)] = 0
    disk_gib: Annotated[int, Field(ge=1, le=65536)] | None = Field(
        default=None, description="grow the cloned rootfs to this size; absent = the layer's size"
    )
    unprivileged: bool = Field(
        default=True,
        description="always true: a linked clone keeps its layer's flag, and layers are unprivileged",
    )
    pve_features: PveFeatures = PveFeatures()
    network: Network
    gpus: list[Annotated[int, Field(ge=0, le=15)]] = []
    features: list[Name] = Field(
        default=[], description="feature scripts run in this guest once started (GuestFeatures), in order"
    )
    feature_env: FeatureEnv = Field(
        default={}, description="environment values every one of this guest's feature scripts gets"
    )
    feature_files: FeatureFiles = Field(
        default=[], description="files written into the guest before its feature scripts run"
    )
    apparmor_profile: Name = "lxc-container-default-cgns"
    mounts: list[Mount] = []
    firewall: Firewall = Firewall()
    ports: list[ServicePort] = []
    vllm: VllmEngine | None = None
    ollama: OllamaEngine | None = Field(
        default=None, description="an ollama model server (at most one engine)"
    )
    llamacpp: LlamaCppEngine | None = Field(
        default=None, description="a llama.cpp llama-server (at most one engine)"
    )
    start_on_boot: bool = Field(default=True, description="PVE `onboot`: start the container at host boot")
    startup: Startup | None = Field(default=None, description="PVE `startup`: boot order and delays")
    after: After = []
    dns: Dns | None = None
    tags: Tags = []
    environment: GuestEnvironment = Field(
        default={},
        description="environment of the container's init and its services (lxc.environment lines; a "
        "change restarts the container)",
    )
    networks: list[Network] = Field(
        default=[],
        max_length=31,  # PVE's 32 netN keys (MAX_LXC_NETWORKS, qemu-server's MAX_NETS) with net0
        description="more NICs after `network` (net0): net1, net2, … in this order",
    )
    snapshot_before_update: bool = False
    snapshot_retention: Annotated[int, Field(ge=1, le=64)] = Field(
        default=3, description="pre-update snapshots kept (older ones are pruned)"
    )
    snapshots: SnapshotPolicy | None = None
    insecure: Insecure = Insecure()

    @field_validator("gpus")
    @classmethod
    def _unique_gpus(cls, value: list[int]) -> list[int]:
        return once_each(value, "GPU indices")

    @field_validator("unprivileged")
    @classmethod
    def _unprivileged(cls, value: bool) -> bool:
        # PVE's clone takes no `unprivileged` (a linked clone shares its template's uid mapping), and every
        # Phoenix layer is built unprivileged: false could only validate and then do nothing.
        if not value:
            raise ValueError(
                "privileged containers are not supported: a linked clone keeps its layer's unprivileged "
                "flag, and Phoenix builds every layer unprivileged"
            )
        return value

    def root_only_settings(self) -> list[tuple[str, str]]:
        """``(json path in the container, what it is)`` for each setting PVE allows only to a root@pam
        password login (see ROOT_USER): ``[("gpus", "GPU passthrough uses devN"), ...]``."""
        found: list[tuple[str, str]] = []
        if self.gpus:
            found.append(("gpus", "GPU passthrough uses devN"))
        for i, mount in enumerate(self.mounts):
            if isinstance(mount, BindMount | DatasetCloneMount):
                found.append((f"mounts[{i}]", "a host bind mount"))
        found += [(f"pve_features.{flag}", f"feature flag {flag}") for flag in self.pve_features.root_only()]
        return found

    @model_validator(mode="after")
    def _parameters_need_features(self) -> Container:
        _parameters_need_features(self)
        return self

    def engine(self) -> tuple[str, Engine] | None:
        """``(key, config)`` of the model server this container runs (``"ollama"``, ...), or None."""
        given = [(key, e) for key in ENGINE_KEYS if (e := getattr(self, key)) is not None]
        return given[0] if given else None

    @model_validator(mode="after")
    def _one_engine(self) -> Container:
        given = [key for key in ENGINE_KEYS if getattr(self, key) is not None]
        if len(given) > 1:
            raise ValueError(f"one model server per container: {' and '.join(given)} are both set")
        return self

    @property
    def retained(self) -> bool:
        """Does destroy keep the guest? ``retain_on_delete`` as given, else true exactly when adopted."""
        return self.adopt if self.retain_on_delete is None else self.retain_on_delete


# One authorized_keys entry: a key type sshd knows, the base64 key, an optional comment. No control
# character anywhere: sshd reads one key per line, and a carriage return or newline would start another.
SshPublicKey = Annotated[
    str,
    StringConstraints(
        pattern=r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com"
        r"|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,3}( [^\x00-\x1f\x7f]*)?$"
    ),
]


class CloudInit(Model):
    user: Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_-]*$")] = "phoenix"
    ssh_authorized_keys: list[SshPublicKey] = []


class Vm(Model):
    """A QEMU VM cloned from a cloud image; feature scripts run through cloud-init."""

    vmid: VmId
    name: Hostname
    image: Name = Field(description="key into host.cloud_images")
    description: Annotated[str, StringConstraints(max_length=8192)] = ""  # PVE's maxLength
    cores: Annotated[int, Field(ge=1, le=512)] = 2
    memory_mib: Annotated[int, Field(ge=256)] = 4096
    disk_gib: Annotated[int, Field(ge=1, le=65536)] = 32
    network: Network
    gpus: list[Annotated[int, Field(ge=0, le=15)]] = Field(
        default=[], description="PCI passthrough (hostpci)"
    )
    features: list[Name] = Field(
        default=[], description="feature scripts cloud-init runs in this VM at first boot, in order"
    )
    feature_env: FeatureEnv = Field(
        default={}, description="environment values every one of this VM's feature scripts gets"
    )
    feature_files: FeatureFiles = Field(
        default=[], description="files cloud-init writes into the VM before its feature scripts run"
    )
    firewall: Firewall = Firewall()
    ports: list[ServicePort] = []
    cloud_init: CloudInit = CloudInit()
    start_on_boot: bool = Field(default=True, description="PVE `onboot`: start the VM at host boot")
    startup: Startup | None = Field(default=None, description="PVE `startup`: boot order and delays")
    after: After = []
    dns: Dns | None = None
    tags: Tags = []
    networks: list[Network] = Field(
        default=[],
        max_length=31,  # PVE's 32 netN keys (MAX_LXC_NETWORKS, qemu-server's MAX_NETS) with net0
        description="more NICs after `network` (net0): net1, net2, … in this order",
    )

    @model_validator(mode="after")
    def _parameters_need_features(self) -> Vm:
        _parameters_need_features(self)
        return self


class DataDataset(Model):
    """A ZFS dataset for data (model weights), snapshotted once and cloned per guest."""

    dataset: ZfsName = Field(description="full ZFS name, e.g. rpool/data/models")
    snapshot: Name = Field(description="the snapshot guests clone, e.g. v1")
    quota_gib: Annotated[int, Field(ge=1)] | None = None
    compression: Literal["on", "off", "lz4", "zstd", "gzip"] = "lz4"
    adopt: bool = Field(
        default=False,
        description="take the existing filesystem into state (not created; its declared properties are set)",
    )
    retain_on_delete: bool | None = Field(
        default=None, description="on destroy, keep the dataset; default: true when adopted, else false"
    )

    @property
    def retained(self) -> bool:
        return self.adopt if self.retain_on_delete is None else self.retain_on_delete


class StackPlacement(Model):
    """A Docker Compose stack (``config/stacks/<name>/``) and the guest that runs it
    (``phoenix_components/config/stack_files.py`` loads and checks the stack's own files)."""

    name: Name = Field(description="the directory under config/stacks/; also the Compose project name")
    guest: VmId = Field(
        description="vmid of a container on a docker layer, or of a VM with the docker feature"
    )


class Guests(Document):
    containers: list[Container] = []
    vms: list[Vm] = []
    datasets: dict[Name, DataDataset] = {}
    stacks: list[StackPlacement] = Field(
        default=[], description="Docker Compose stacks deployed into guests (config/stacks/<name>/)"
    )


# ---------------------------------------------------------------- pattern rules, in words


def _pattern_of(annotated: object) -> str:
    constraint = get_args(annotated)[1]
    assert isinstance(constraint, StringConstraints) and isinstance(constraint.pattern, str)
    return constraint.pattern


PATTERN_RULES: dict[str, str] = {
    r"^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[^\s]*)?$": "an https:// URL: a host name, an optional :port, "
    "an optional path without spaces",
    r"^[A-Za-z0-9._-]+@[A-Za-z0-9._-]+$": "user@realm (letters, digits, `.`, `_`, `-`), e.g. root@pam",
    r"^[A-Za-z0-9._-]+@[A-Za-z0-9._-]+![A-Za-z0-9._-]+$": "an API token id user@realm!name, e.g. "
    "root@pam!phoenix",
    r"^/[A-Za-z0-9._/-]*$": "an absolute path of letters, digits, `.`, `_`, `-` and `/`",
    r"^[A-Za-z0-9_.-]{1,15}$": "an interface name: 1 to 15 letters, digits, `_`, `.` or `-`, e.g. vmbr0",
    r"^[A-Za-z0-9._+-]+\.(img|qcow2|raw)$": "a file name ending in .img, .qcow2 or .raw",
    r"^[0-9a-f]{64}$": "64 lower-case hex digits (a sha256)",
    r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}(\.[0-7])?$": "a PCI address as `lspci -D` prints it, e.g. "
    "0000:41:00.0",
    r"^[0-9]{3}\.[0-9]{2,3}(\.[0-9]{2,3})?$": "an NVIDIA driver version like 580.76.05",
    r"^[0-9]+\.[0-9]+\.[0-9]+(-[0-9]+)?-pve$": "a PVE kernel version as `uname -r` prints it, e.g. "
    "6.8.12-4-pve",
    r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?/[^\s\x00-\x1f\x7f]*$": "an http(s):// URL with a path, no "
    "spaces or control characters",
    r"^[A-Za-z0-9._+-]+\.tar\.(gz|xz|zst)$": "a file name ending in .tar.gz, .tar.xz or .tar.zst",
    r"^[0-9a-f]{128}$": "128 lower-case hex digits (a sha512)",
    r"^[A-Za-z0-9.:-]+$": "a host name or IP address (letters, digits, `.`, `:`, `-`)",
    r"^[a-z_][a-z0-9_-]*$": "a Unix user name: lower-case letters, digits, `_`, `-`, not starting "
    "with a digit",
    r"^SHA256:[A-Za-z0-9+/]{43}$": "SHA256: and 43 base64 characters, as `ssh-keygen -lf` prints it",
    r"^[A-Za-z][A-Za-z0-9_.-]*[A-Za-z0-9]$": "a PVE storage ID: a letter, then letters, digits, `-`, "
    "`_`, `.`, ending in a letter or digit (at least 2 characters)",
    r"^[A-Za-z0-9][A-Za-z0-9_.:-]*(/[A-Za-z0-9][A-Za-z0-9_.:-]*)*$": "a ZFS dataset name: `/`-separated "
    "parts of letters, digits, `_`, `.`, `:`, `-`, each starting with a letter or digit",
    r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$": "a PVE node name: letters, digits and inner `-`, no dots",
    r"^[a-z0-9][a-z0-9_-]{0,62}$": "a name of lower-case letters, digits, `_` and `-`, starting with a "
    "letter or digit, at most 63 characters",
    _pattern_of(SshPublicKey): "one OpenSSH public key line: a key type (ssh-ed25519, ssh-rsa, "
    "ecdsa-sha2-nistp256 …), a space, the base64 key, optionally a space and a comment; no control "
    "characters",
    _pattern_of(Hostname): "a DNS name as PVE takes it: dot-separated labels of letters, digits "
    "and inner `-`, at most 64 characters",
    _pattern_of(PortSpec): "port numbers and low:high ranges separated by commas, e.g. 80,443 or "
    "8000:8010 (numbers only, no service names)",
    r"^[^\n\r#]{0,120}$": "at most 120 characters, without line breaks or `#`",
    r"^[A-Za-z0-9._/-]+$": "letters, digits, `.`, `_`, `-` and `/`, e.g. Qwen/Qwen2.5-7B-Instruct",
    _pattern_of(Mac): "a unicast MAC address: six hex pairs separated by `:`, the first pair "
    "even, e.g. BC:24:11:00:00:01",
    r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$": "letters, digits, `.`, `_`, `-` and `/`, starting with a letter "
    "or digit, at most 128 characters",
    r"^[a-z][a-z0-9_-]{0,20}$": "a lower-case letter, then up to 20 lower-case letters, digits, `_` or `-`",
    _pattern_of(ExtraArg): "one argument without spaces: a --flag, a --flag=value, or a value",
    _pattern_of(Version): "a version: letters, digits and `.:+~_-`, starting with a letter or "
    "digit, at most 64 characters",
    _pattern_of(FeatureEnvName): "an environment variable name: letters, digits and `_`, not starting "
    "with a digit, at most 128 characters",
    _pattern_of(FeatureEnvValue): "at most 4096 characters, without control characters (line breaks, "
    "tabs, NUL)",
    _pattern_of(FileMode): "an octal file mode of four digits starting with 0, e.g. 0644",
    _pattern_of(Tag): "a PVE tag: a letter, digit or `_`, then letters, digits, `_`, `-`, `+` or `.`",
    _pattern_of(OllamaModel): "an ollama model name: letters, digits, `.`, `_`, `-` and `/`, optionally "
    "`:` and a tag, e.g. llama3.2:3b",
    _pattern_of(HfRepo): "a Hugging Face repository owner/name, optionally `:` and a quantization, e.g. "
    "ggml-org/gemma-3-1b-it-GGUF:Q4_K_M",
}
"""Every pattern the models use, as the rule a person reads in an error (tests/unit check all are here)."""
