"""NVIDIA: the host driver (``NvidiaHostDriver``).

``NvidiaHostDriver`` pins the driver of one Proxmox host to NVIDIA's runfile, installed **with DKMS** so a
kernel upgrade rebuilds the module (the bash original used ``--no-dkms`` and broke on every PVE kernel
update). Every operation starts with ONE batched read over SSH: nvidia-smi's driver version and GPU list,
``/proc/devices`` and ``/proc/driver/nvidia/gpus/*/information``, in one exec session.

- create/update: if the host already runs the pinned version nothing is installed; otherwise the runfile
  is downloaded into a cache on the host, checked with ``sha256sum -c`` (a mismatch is a
  :class:`ChecksumMismatchError` and nothing from the file runs), run with ``--dkms --silent
  --no-questions --ui=none``, and the read is repeated to verify the version.
- outputs: every input (``driver_version`` as observed), the GPU inventory (index, uuid, name, memory,
  PCI bus id, device minor → ``/dev/nvidiaN``) and the character-device majors of ``nvidia*`` drivers,
  parsed from ``/proc/devices``: majors above 195 are allocated dynamically and differ per host and boot.
- read (``pulumi refresh``): the same read; a different version is drift (the next ``up`` reinstalls),
  no nvidia-smi at all means the resource is gone.
- delete: the driver stays installed unless ``uninstall_on_delete`` (then ``nvidia-uninstall --silent``,
  or the cached runfile's ``--uninstall --silent``).

An upgrade needs the old modules unloaded: the install step unloads them and, if a GPU is in use (a
running GPU guest, nvidia-persistenced), fails with that reason instead of half-installing.

Host preparation (issue 16), on when the inputs ask for it (``prerequisites``, ``nodes_unit``,
``kernel_pin``; the host baseline sets them, a resource stored before they existed has none): a second read
(packages, Secure Boot, nouveau, the units, device nodes, DKMS, the boot kernel) decides; before the driver,
Secure Boot on fails with :class:`~providers.errors.SecureBootError` (only when an install is due), missing
prerequisites are installed, a loaded nouveau is blacklisted and the initramfs rebuilt, then
:class:`~providers.errors.RebootRequiredError` (or, with ``allow_reboot``, a reboot and a wait for a new
boot id); after it, the device-node and persistence units are written and started, and the kernel pinned.

A container's NVIDIA userspace (installed by the nvidia feature script with ``--no-kernel-module``) must
be exactly the host driver's version; the config checks refuse a mismatch before anything is deployed
(``phoenix_components.config``), so no resource here repeats that rule.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    DiffResult,
    ReadResult,
)

from providers.base import ConvergingProvider, DynamicResource, Inputs, convert
from providers.channels.command import Executor, sh_argv, write_file_argv
from providers.channels.steps import HostCommand
from providers.channels.targets import SshTarget
from providers.errors import (
    HostError,
    IommuError,
    PhoenixError,
    RebootRequiredError,
    RebootTimeoutError,
    SecureBootError,
)

PROVIDER_VERSION = "1"
"""Bumped when this module's behaviour changes, so existing resources get an update."""

INSTALL_ARGS = ("--dkms", "--silent", "--no-questions", "--ui=none")
"""Host install: the kernel module is built and registered with DKMS, no prompt, no curses UI."""

READ_TIMEOUT = 120.0  # nvidia-smi on a wedged GPU can hang; a refresh must not
INSTALL_TIMEOUT = 1800.0  # download + DKMS build of every module for the running kernel
UNINSTALL_TIMEOUT = 600.0

EXIT_CHECKSUM = 65
EXIT_MODULES_BUSY = 66
EXIT_NO_UNINSTALLER = 67

_VERSION_RE = re.compile(r"^[0-9]{3}\.[0-9]{2,3}(\.[0-9]{2,3})?$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class NvidiaOutputError(PhoenixError):
    """nvidia-smi or /proc printed something Phoenix does not understand; the message quotes it."""


class NvidiaDriverError(HostError):
    """The driver could not be installed, verified or removed; the message carries the evidence."""


class ChecksumMismatchError(NvidiaDriverError):
    """The downloaded runfile is not the pinned one. It was deleted unexecuted."""

    def __init__(self, host: str, url: str, expected: str, actual: str) -> None:
        self.url, self.expected, self.actual = url, expected, actual
        super().__init__(
            host,
            f"sha256 mismatch for {url}: pinned {expected}, downloaded {actual or 'unknown'}; "
            "nothing from the file was run. Check the URL or the pinned sha256 in host.json.",
        )


# -- 1. inputs --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NvidiaHostDriverInputs(Inputs):
    host: str
    """The SSH address of the host (identity: another host is another driver install)."""
    driver_version: str
    runfile_url: str
    sha256: str = field(metadata=convert(str.lower))
    uninstall_on_delete: bool = False
    version: str = PROVIDER_VERSION
    # Host preparation (issue 16). Every default means "absent": a resource stored before these existed
    # diffs as unchanged (see NvidiaHostDriverProvider.diff) and converges exactly as it did.
    prerequisites: tuple[str, ...] = field(default=(), metadata=convert(tuple))
    """Debian packages the DKMS build needs, installed when missing; :data:`KERNEL_HEADERS` stands for the
    running kernel's headers package. Empty: no host preparation (no Secure Boot or nouveau check)."""
    nodes_unit: bool = False
    """Manage ``phoenix-nvidia-nodes.service`` (device nodes before ``pve-guests.service``) and
    ``phoenix-nvidia-persistenced.service``."""
    allow_reboot: bool = False
    """May reboot the host (after blacklisting nouveau) and wait for it; otherwise a reboot is asked for."""
    kernel_pin: str | None = None
    """``proxmox-boot-tool kernel pin`` this version, so the next boot runs the kernel DKMS built for."""
    passthrough: tuple[str, ...] = field(default=(), metadata=convert(tuple))
    """PCI addresses of the GPUs given to VMs: IOMMU must be on, each in a group of its own functions only,
    and not bound to the nvidia driver."""


@dataclass(frozen=True)
class NvidiaHostPaths:
    """Where the driver's tools and the kernel's files are on the host. Plain data, pickled into state.

    The defaults are a real host's; the lab points them at a test-only stand-in driver.
    """

    nvidia_smi: str = "nvidia-smi"
    nvidia_uninstall: str = "nvidia-uninstall"
    proc_devices: str = "/proc/devices"
    proc_gpus: str = "/proc/driver/nvidia/gpus"
    cache_dir: str = "/var/cache/phoenix"
    installer_log: str = "/var/log/nvidia-installer.log"
    # Host preparation. Plain str defaults (class attributes), so a provider pickled before they existed
    # still unpickles with a real host's values.
    uname: str = "uname"
    dpkg_query: str = "dpkg-query"
    apt_get: str = "apt-get"
    apt_cache: str = "apt-cache"
    mokutil: str = "mokutil"
    efivars: str = "/sys/firmware/efi/efivars"
    sys_module: str = "/sys/module"
    modprobe_d: str = "/etc/modprobe.d"
    update_initramfs: str = "update-initramfs"
    systemctl: str = "systemctl"
    unit_dir: str = "/etc/systemd/system"
    nvidia_modprobe: str = "/usr/bin/nvidia-modprobe"
    nvidia_persistenced: str = "/usr/bin/nvidia-persistenced"
    dev: str = "/dev"
    dkms: str = "dkms"
    proxmox_boot_tool: str = "proxmox-boot-tool"
    boot_id: str = "/proc/sys/kernel/random/boot_id"
    pci_devices: str = "/sys/bus/pci/devices"
    iommu_groups: str = "/sys/kernel/iommu_groups"


# -- 2. pure logic: parsers and commands ------------------------------------------------------------------


@dataclass(frozen=True)
class GpuQueryRow:
    """One line of ``nvidia-smi --query-gpu=index,uuid,name,memory.total,pci.bus_id``."""

    index: int
    uuid: str
    name: str
    memory_mib: int
    pci_bus_id: str
    """Normalised to /proc's form: ``0000:2a:00.0`` (nvidia-smi prints ``00000000:2A:00.0``)."""


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    name: str
    memory_mib: int
    pci_bus_id: str
    minor: int
    """The device minor: the N of ``/dev/nvidiaN`` (not always nvidia-smi's index)."""

    @property
    def device(self) -> str:
        return f"/dev/nvidia{self.minor}"

    def to_props(self) -> dict[str, Any]:
        return {**asdict(self), "device": self.device}


@dataclass(frozen=True)
class DriverFacts:
    """What the batched read saw. ``driver_version`` is None when nvidia-smi is absent or fails."""

    driver_version: str | None
    error: str = ""
    """nvidia-smi's own message when it exists but fails (module not loaded, version mismatch)."""
    gpus: tuple[Gpu, ...] = ()
    majors: Mapping[str, int] = field(default_factory=dict)

    @property
    def installed(self) -> bool:
        return self.driver_version is not None or bool(self.error)

    def describe(self) -> str:
        if self.driver_version is not None:
            return self.driver_version
        return f"broken ({self.error})" if self.error else "absent"


def normalize_bus_id(bus_id: str) -> str:
    """``00000000:2A:00.0`` (nvidia-smi) and ``0000:2a:00.0`` (/proc) → ``0000:2a:00.0``."""
    match = re.fullmatch(r"([0-9A-Fa-f]+):([0-9A-Fa-f]{2}):([0-9A-Fa-f]{2})\.([0-7])", bus_id.strip())
    if match is None:
        raise NvidiaOutputError(f"not a PCI bus id: {bus_id!r}")
    domain, bus, device, function = match.groups()
    return f"{int(domain, 16):04x}:{int(bus, 16):02x}:{int(device, 16):02x}.{function}"


def parse_driver_version(text: str) -> str:
    """``nvidia-smi --query-gpu=driver_version --format=csv,noheader``: one line per GPU, all equal."""
    versions = {line.strip() for line in text.splitlines() if line.strip()}
    if len(versions) != 1 or not _VERSION_RE.match(next(iter(versions))):
        raise NvidiaOutputError(f"expected one driver version from nvidia-smi, got {text.strip()!r}")
    return versions.pop()


def parse_gpu_query(text: str) -> list[GpuQueryRow]:
    """``nvidia-smi --query-gpu=index,uuid,name,memory.total,pci.bus_id --format=csv,noheader,nounits``.

    Fields are separated by ``", "``; the name is taken as everything between the uuid and the last two
    fields, so a name with a comma in it still parses.
    """
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 5:
            raise NvidiaOutputError(f"expected 5 fields from nvidia-smi --query-gpu, got {line!r}")
        index, uuid, memory, bus = parts[0], parts[1], parts[-2], parts[-1]
        name = ", ".join(parts[2:-2])
        if not index.isdigit() or not memory.isdigit() or not uuid.startswith("GPU-"):
            raise NvidiaOutputError(f"unexpected nvidia-smi --query-gpu line {line!r}")
        rows.append(GpuQueryRow(int(index), uuid, name, int(memory), normalize_bus_id(bus)))
    return sorted(rows, key=lambda r: r.index)


def parse_char_majors(text: str) -> dict[str, int]:
    """``/proc/devices``: name → major of every character device (block devices are ignored).

    A name listed under several majors (``4 tty``, ``4 ttyS``) keeps its first; nvidia's names are unique.
    """
    majors: dict[str, int] = {}
    in_char = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.endswith("devices:"):
            in_char = stripped == "Character devices:"
            continue
        if not in_char or not stripped:
            continue
        number, _, name = stripped.partition(" ")
        if not number.isdigit() or not name:
            raise NvidiaOutputError(f"unexpected /proc/devices line {line!r}")
        majors.setdefault(name.strip(), int(number))
    return majors


def nvidia_majors(text: str) -> dict[str, int]:
    """The majors of NVIDIA's character devices, from ``/proc/devices`` (never assumed).

    The frontend (``/dev/nvidiaN``, ``/dev/nvidiactl``) is listed as ``nvidia-frontend`` by some drivers
    and ``nvidia`` by others; it is reported as ``nvidia`` either way. Others keep their names
    (``nvidia-uvm``, ``nvidia-caps``, ``nvidia-nvswitch`` …).
    """
    found = {n: m for n, m in parse_char_majors(text).items() if n == "nvidia" or n.startswith("nvidia-")}
    if "nvidia-frontend" in found:
        found["nvidia"] = found.pop("nvidia-frontend")
    return dict(sorted(found.items()))


def parse_gpu_information(text: str) -> tuple[str, int]:
    """``/proc/driver/nvidia/gpus/<bus>/information`` → (normalised bus id, device minor)."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    try:
        return normalize_bus_id(fields["Bus Location"]), int(fields["Device Minor"])
    except (KeyError, ValueError) as err:
        raise NvidiaOutputError(
            f"no Bus Location / Device Minor in GPU information: {text.strip()!r}"
        ) from err


def gpu_inventory(rows: Sequence[GpuQueryRow], informations: Sequence[str]) -> tuple[Gpu, ...]:
    """Join nvidia-smi's rows with the kernel's device minors by PCI bus id."""
    minors = dict(parse_gpu_information(text) for text in informations)
    gpus = []
    for row in rows:
        if row.pci_bus_id not in minors:
            raise NvidiaOutputError(
                f"GPU {row.index} ({row.pci_bus_id}) has no /proc/driver/nvidia/gpus entry, "
                "so its device minor (/dev/nvidiaN) is unknown"
            )
        gpus.append(
            Gpu(row.index, row.uuid, row.name, row.memory_mib, row.pci_bus_id, minors[row.pci_bus_id])
        )
    return tuple(gpus)


# The batched read: every fact in one exec session. Sections start with "@@<name>"; nvidia-smi's
# sections carry its exit status, so a failing nvidia-smi is told apart from an absent one.
READ_SCRIPT = r"""
smi="$1" devices="$2" gpus="$3"
if ! command -v "$smi" >/dev/null 2>&1; then echo "@@absent"; exit 0; fi
out=$("$smi" --query-gpu=driver_version --format=csv,noheader 2>&1); status=$?
printf '@@driver_version %s\n%s\n' "$status" "$out"
[ "$status" = 0 ] || exit 0
out=$("$smi" --query-gpu=index,uuid,name,memory.total,pci.bus_id --format=csv,noheader,nounits 2>&1)
status=$?
printf '@@gpus %s\n%s\n' "$status" "$out"
printf '@@devices\n'; cat "$devices"
for info in "$gpus"/*/information; do
    [ -r "$info" ] || continue
    printf '@@information\n'; cat "$info"
done
"""


def read_argv(paths: NvidiaHostPaths) -> list[str]:
    return sh_argv(READ_SCRIPT, "phoenix-nvidia-read", paths.nvidia_smi, paths.proc_devices, paths.proc_gpus)


def _sections(text: str) -> list[tuple[str, str, str]]:
    """``[(name, argument, body)]`` in order, from the read script's output."""
    sections: list[tuple[str, str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("@@"):
            name, _, arg = line[2:].partition(" ")
            sections.append((name, arg.strip(), []))
        elif sections:
            sections[-1][2].append(line)
    return [(name, arg, "\n".join(body).strip()) for name, arg, body in sections]


def parse_read(text: str) -> DriverFacts:
    """The batched read's output → :class:`DriverFacts`."""
    sections = _sections(text)
    names = [name for name, _, _ in sections]
    if names == ["absent"]:
        return DriverFacts(None)
    by_name = {name: (arg, body) for name, arg, body in sections if name != "information"}
    if "driver_version" not in by_name:
        raise NvidiaOutputError(f"unexpected output from the NVIDIA read: {text.strip()[:500]!r}")
    status, body = by_name["driver_version"]
    if status != "0":
        return DriverFacts(None, error=f"nvidia-smi exited {status}: {body or 'no output'}")
    version = parse_driver_version(body)
    gpu_status, gpu_body = by_name.get("gpus", ("missing", ""))
    if gpu_status != "0":
        return DriverFacts(
            None, error=f"nvidia-smi --query-gpu exited {gpu_status}: {gpu_body or 'no output'}"
        )
    informations = [body for name, _, body in sections if name == "information"]
    return DriverFacts(
        driver_version=version,
        gpus=gpu_inventory(parse_gpu_query(gpu_body), informations),
        majors=nvidia_majors(by_name.get("devices", ("", ""))[1]),
    )


def runfile_name(driver_version: str) -> str:
    return f"NVIDIA-Linux-x86_64-{driver_version}.run"


def runfile_path(paths: NvidiaHostPaths, driver_version: str) -> str:
    return f"{paths.cache_dir.rstrip('/')}/{runfile_name(driver_version)}"


# Download into the cache (a verified copy is reused), verify, unload old modules, run. Only a file whose
# sha256 matched is ever renamed into the cache or executed. Values arrive as positional parameters.
INSTALL_SCRIPT = r"""
set -eu
url="$1" sha="$2" runfile="$3" log="$4"; shift 4
verified() { printf '%s  %s\n' "$sha" "$1" | sha256sum -c --status - 2>/dev/null; }
mkdir -p "$(dirname "$runfile")"
if ! { [ -f "$runfile" ] && verified "$runfile"; }; then
    tmp=$(mktemp "$runfile.download.XXXXXX")
    trap 'rm -f "$tmp"' EXIT
    curl -fsSL --retry 3 --connect-timeout 30 -o "$tmp" "$url"
    if ! verified "$tmp"; then
        echo "sha256 mismatch: $(sha256sum "$tmp" | cut -d' ' -f1)" >&2
        exit 65
    fi
    mv -f "$tmp" "$runfile"
fi
if [ -d /sys/module/nvidia ]; then
    for module in nvidia_uvm nvidia_drm nvidia_modeset nvidia_peermem nvidia; do
        [ -d "/sys/module/$module" ] || continue
        modprobe -r "$module" || { echo "kernel module $module is in use" >&2; exit 66; }
    done
fi
sh "$runfile" "$@" || {
    status=$?
    [ -r "$log" ] && tail -n 20 "$log" >&2
    exit "$status"
}
"""


def install_argv(inputs: NvidiaHostDriverInputs, paths: NvidiaHostPaths) -> list[str]:
    """The one command that downloads, verifies and runs the pinned runfile with DKMS."""
    runfile = runfile_path(paths, inputs.driver_version)
    values = [inputs.runfile_url, inputs.sha256, runfile, paths.installer_log, *INSTALL_ARGS]
    return sh_argv(INSTALL_SCRIPT, "phoenix-nvidia-install", *values)


UNINSTALL_SCRIPT = r"""
smi="$1" uninstaller="$2" runfile="$3"
if command -v "$uninstaller" >/dev/null 2>&1; then exec "$uninstaller" --silent; fi
command -v "$smi" >/dev/null 2>&1 || exit 0  # nothing installed
[ -f "$runfile" ] || { echo "no $uninstaller and no cached $runfile to uninstall with" >&2; exit 67; }
exec sh "$runfile" --uninstall --silent
"""


def uninstall_argv(driver_version: str, paths: NvidiaHostPaths) -> list[str]:
    """``nvidia-uninstall --silent`` (it matches whatever is installed), else the cached runfile's."""
    runfile = runfile_path(paths, driver_version)
    return sh_argv(
        UNINSTALL_SCRIPT, "phoenix-nvidia-uninstall", paths.nvidia_smi, paths.nvidia_uninstall, runfile
    )


def read_step(paths: NvidiaHostPaths) -> HostCommand:
    """The batched read every operation starts with (and an install is verified by)."""
    return HostCommand("read the NVIDIA driver and GPUs", read_argv(paths), timeout_s=READ_TIMEOUT)


def install_steps(inputs: NvidiaHostDriverInputs, paths: NvidiaHostPaths) -> list[HostCommand]:
    """What runs when the host does not run the pinned version: the install, then the read again."""
    install = HostCommand(
        f"install NVIDIA {inputs.driver_version}",
        install_argv(inputs, paths),
        timeout_s=INSTALL_TIMEOUT,
        when=f"the host does not run {inputs.driver_version}",
    )
    return [install, read_step(paths)]


# -- 2b. host preparation (issue 16): prerequisites, Secure Boot, nouveau, device nodes, kernel pin --------

KERNEL_HEADERS = "kernel-headers"
"""Stands for the running kernel's headers: ``proxmox-headers-$(uname -r)``, or ``pve-headers-…`` (PVE 7)."""

PREREQUISITES = (KERNEL_HEADERS, "proxmox-default-headers", "dkms", "build-essential", "pkg-config")
"""What DKMS needs to build the module now (the running kernel's headers, a compiler, make) and after a
kernel upgrade (``proxmox-default-headers`` pulls the headers of every new default kernel)."""

NODES_UNIT = "phoenix-nvidia-nodes.service"
PERSISTENCED_UNIT = "phoenix-nvidia-persistenced.service"
BLACKLIST_FILE = "blacklist-nouveau.conf"
BLACKLIST = (
    "# Written by Phoenix (NvidiaHostDriver): the NVIDIA driver cannot load while nouveau holds the GPU.\n"
    "blacklist nouveau\n"
    "options nouveau modeset=0\n"
)
CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools")
"""The nodes every GPU guest's devN lines name besides ``nvidiaN`` (phoenix_components/render/lxc.py)."""

PREPARE_TIMEOUT = 1800.0  # apt-get of a compiler and headers on a slow mirror
REBOOT_TIMEOUT = 900.0  # a server's firmware POST alone can take minutes
REBOOT_POLL = 10.0


def header_candidates(kernel: str) -> tuple[str, str]:
    """The running kernel's headers package: PVE 8's name first, then PVE 7's."""
    return (f"proxmox-headers-{kernel}", f"pve-headers-{kernel}")


# One read of everything the preparation decides on. Values arrive as positional parameters; package
# names and node names after the "--" markers. Sections as in READ_SCRIPT.
HOST_READ_SCRIPT = r"""
uname="$1" dpkg="$2" aptcache="$3" mokutil="$4" efivars="$5" sysmod="$6" modprobe_d="$7"
systemctl="$8" unit_dir="$9"; shift 9
dev="$1" dkms="$2" boottool="$3" bootid="$4"; shift 4
kernel=$("$uname" -r)
printf '@@kernel\n%s\n' "$kernel"
printf '@@packages\n'
for pkg in "$@"; do
    [ "$pkg" = -- ] && break
    "$dpkg" -W -f='${Package} ${db:Status-Abbrev}\n' "$pkg" 2>/dev/null
done
for pkg in "proxmox-headers-$kernel" "pve-headers-$kernel"; do
    "$dpkg" -W -f='${Package} ${db:Status-Abbrev}\n' "$pkg" 2>/dev/null
done
printf '@@available\n'
for pkg in "proxmox-headers-$kernel" "pve-headers-$kernel"; do
    "$aptcache" show --no-all-versions "$pkg" >/dev/null 2>&1 && echo "$pkg"
done
while [ "$#" -gt 0 ] && [ "$1" != -- ]; do shift; done
[ "$#" -gt 0 ] && shift
printf '@@secure_boot\n'
if command -v "$mokutil" >/dev/null 2>&1; then
    "$mokutil" --sb-state 2>&1
else
    for var in "$efivars"/SecureBoot-*; do
        [ -r "$var" ] || continue
        printf 'efivar'; od -An -tu1 "$var" | tr -s ' \n' ' '; echo
    done
fi
printf '@@nouveau\n'; [ -d "$sysmod/nouveau" ] && echo loaded
printf '@@blacklist\n'; cat "$modprobe_d/blacklist-nouveau.conf" 2>/dev/null
for unit in phoenix-nvidia-nodes.service phoenix-nvidia-persistenced.service; do
    printf '@@unit %s %s\n' "$unit" "$("$systemctl" is-enabled "$unit" 2>/dev/null || true)"
    cat "$unit_dir/$unit" 2>/dev/null
done
printf '@@nodes\n'
while [ "$#" -gt 0 ] && [ "$1" != -- ]; do
    [ -e "$dev/$1" ] || echo "$dev/$1"
    shift
done
[ "$#" -gt 0 ] && shift
pcidev="$1" groups="$2"; shift 2
printf '@@iommu %s\n' "$(ls "$groups" 2>/dev/null | wc -l)"
for pci in "$@"; do
    group=$(readlink "$pcidev/$pci/iommu_group" 2>/dev/null) || group=""
    driver=$(readlink "$pcidev/$pci/driver" 2>/dev/null) || driver=""
    printf '@@pci %s %s %s\n' "$pci" "${group##*/}" "${driver##*/}"
    [ -n "$group" ] && ls "$groups/${group##*/}/devices"
done
printf '@@dkms\n'; "$dkms" status nvidia 2>/dev/null
printf '@@boot\n'; "$boottool" kernel list 2>/dev/null
printf '@@boot_id\n'; cat "$bootid" 2>/dev/null
"""


@dataclass(frozen=True)
class HostFacts:
    """What the preparation read saw on the host."""

    kernel: str
    installed: frozenset[str] = frozenset()
    available: tuple[str, ...] = ()
    """The running kernel's header packages the archive has (:func:`header_candidates` order)."""
    secure_boot: bool | None = None
    """None: neither mokutil nor the SecureBoot efivar says (legacy BIOS boot)."""
    secure_boot_evidence: str = ""
    nouveau_loaded: bool = False
    blacklist: str = ""
    units: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    """unit name -> (``systemctl is-enabled``'s word, the unit file's content)."""
    missing_nodes: tuple[str, ...] = ()
    dkms_kernels: tuple[str, ...] = ()
    """Kernels the nvidia DKMS module is installed for."""
    pinned_kernel: str | None = None
    boot_id: str = ""
    iommu_groups: int = 0
    """How many IOMMU groups the kernel made: none means the IOMMU is off."""
    pci: Mapping[str, tuple[str, str, tuple[str, ...]]] = field(default_factory=dict)
    """passthrough address -> (its IOMMU group, the driver bound to it, every device in the group)."""

    def passthrough_problems(self, addresses: Sequence[str]) -> dict[str, str]:
        """Per GPU given to a VM, why PVE could not pass it through safely (none: it can)."""
        problems = {}
        for address in addresses:
            group, driver, members = self.pci.get(address, ("", "", ()))
            slot = address.rpartition(".")[0]
            others = [m for m in members if m.rpartition(".")[0] != slot]
            if not self.iommu_groups:
                problems[address] = (
                    "the IOMMU is off (intel_iommu=on / amd_iommu=on, VT-d/AMD-Vi in firmware)"
                )
            elif not group:
                problems[address] = "no such PCI device, or it is in no IOMMU group"
            elif others:
                problems[address] = f"IOMMU group {group} also holds {', '.join(others)}"
            elif driver == "nvidia":
                problems[address] = (
                    "the host's nvidia driver is bound to it (bind it to vfio-pci: vfio-pci ids=...)"
                )
        return problems

    def headers(self) -> str | None:
        """The installed headers package of the running kernel, if any."""
        return next((p for p in header_candidates(self.kernel) if p in self.installed), None)

    def satisfied(self, prerequisites: Sequence[str]) -> list[str]:
        """The prerequisites already installed, in their declared order (an output: drift shows)."""
        return [p for p in prerequisites if (self.headers() if p == KERNEL_HEADERS else p in self.installed)]

    def missing_packages(self, prerequisites: Sequence[str]) -> list[str]:
        """Package names to install; the headers resolve to the name the archive has."""
        missing = []
        for p in prerequisites:
            if p in self.satisfied([p]):
                continue
            if p == KERNEL_HEADERS:
                missing.append(self.available[0] if self.available else header_candidates(self.kernel)[0])
            else:
                missing.append(p)
        return missing

    def unit_ok(self, unit: str, content: str) -> bool:
        enabled, text = self.units.get(unit, ("", ""))
        return enabled == "enabled" and text.strip() == content.strip()


def parse_secure_boot(text: str) -> tuple[bool | None, str]:
    """``mokutil --sb-state`` (``SecureBoot enabled`` / ``SecureBoot disabled`` / ``This system doesn't
    support Secure Boot``) or the efivar's bytes (``efivar 6 0 0 0 1``: 4 attribute bytes, then the value)."""
    for line in text.splitlines():
        words = line.split()
        if line.startswith("SecureBoot "):
            return line.strip() == "SecureBoot enabled", f"mokutil --sb-state: {line.strip()}"
        if words[:1] == ["efivar"] and len(words) >= 6 and all(w.isdigit() for w in words[1:]):
            return words[5] == "1", f"efivar SecureBoot = {words[5]}"
        if "doesn't support Secure Boot" in line or "EFI variables are not supported" in line:
            return False, f"mokutil --sb-state: {line.strip()}"
    return None, text.strip()


def parse_dpkg_status(text: str) -> frozenset[str]:
    """``dpkg-query -W -f='${Package} ${db:Status-Abbrev}\\n'``: packages whose status is ``ii``."""
    installed = set()
    for line in text.splitlines():
        name, _, status = line.strip().partition(" ")
        if name and status.strip().startswith("ii"):
            installed.add(name)
    return frozenset(installed)


def parse_dkms_status(text: str) -> tuple[str, ...]:
    """``dkms status nvidia``: ``nvidia/580.76.05, 6.8.12-4-pve, x86_64: installed`` (dkms 3) or
    ``nvidia, 580.76.05, 6.8.12-4-pve, x86_64: installed`` (dkms 2) -> the kernels it is installed for."""
    kernels = []
    for line in text.splitlines():
        head, _, state = line.rpartition(":")
        if state.strip() != "installed" and not state.strip().startswith("installed "):
            continue
        parts = [p.strip() for p in head.split(",")]
        if len(parts) >= 3:
            kernels.append(parts[-2])
    return tuple(sorted(set(kernels)))


def parse_pinned_kernel(text: str) -> str | None:
    """``proxmox-boot-tool kernel list``: the line after ``Pinned kernel:``, if that section is there."""
    lines = [line.strip() for line in text.splitlines()]
    for i, line in enumerate(lines):
        if line == "Pinned kernel:" and i + 1 < len(lines) and lines[i + 1]:
            return lines[i + 1]
    return None


def parse_host_read(text: str) -> HostFacts:
    """The preparation read's output -> :class:`HostFacts`."""
    sections = _sections(text)
    by_name = {name: body for name, _, body in sections}
    if "kernel" not in by_name or not by_name["kernel"]:
        raise NvidiaOutputError(f"unexpected output from the host preparation read: {text.strip()[:500]!r}")
    secure_boot, evidence = parse_secure_boot(by_name.get("secure_boot", ""))
    units = {}
    pci = {}
    for name, arg, body in sections:
        if name == "unit":
            unit, _, enabled = arg.partition(" ")
            units[unit] = (enabled.strip(), body)
        if name == "pci":
            address, group, driver = [*arg.split(" "), "", ""][:3]
            pci[address] = (group, driver, tuple(body.split()))
    iommu = next((arg for name, arg, _ in sections if name == "iommu"), "0")
    return HostFacts(
        kernel=by_name["kernel"].strip(),
        installed=parse_dpkg_status(by_name.get("packages", "")),
        available=tuple(by_name.get("available", "").split()),
        secure_boot=secure_boot,
        secure_boot_evidence=evidence,
        nouveau_loaded=by_name.get("nouveau", "").strip() == "loaded",
        blacklist=by_name.get("blacklist", ""),
        units=units,
        missing_nodes=tuple(by_name.get("nodes", "").split()),
        dkms_kernels=parse_dkms_status(by_name.get("dkms", "")),
        pinned_kernel=parse_pinned_kernel(by_name.get("boot", "")),
        boot_id=by_name.get("boot_id", "").strip(),
        iommu_groups=int(iommu) if iommu.strip().isdigit() else 0,
        pci=pci,
    )


def device_nodes(gpus: Sequence[Gpu]) -> list[str]:
    """The node names (under /dev) the GPU guests' devN lines name: each GPU's, then the control nodes."""
    return [f"nvidia{gpu.minor}" for gpu in gpus] + (list(CONTROL_NODES) if gpus else [])


def host_read_step(
    inputs: NvidiaHostDriverInputs, paths: NvidiaHostPaths, gpus: Sequence[Gpu] = ()
) -> HostCommand:
    p = paths
    values = [p.uname, p.dpkg_query, p.apt_cache, p.mokutil, p.efivars, p.sys_module, p.modprobe_d]
    values += [p.systemctl, p.unit_dir, p.dev, p.dkms, p.proxmox_boot_tool, p.boot_id]
    packages = [pkg for pkg in inputs.prerequisites if pkg != KERNEL_HEADERS]
    iommu = [p.pci_devices, p.iommu_groups, *inputs.passthrough]
    argv = sh_argv(
        HOST_READ_SCRIPT,
        "phoenix-nvidia-host-read",
        *values,
        *packages,
        "--",
        *device_nodes(gpus),
        "--",
        *iommu,
    )
    return HostCommand("read the host's NVIDIA prerequisites", argv, timeout_s=READ_TIMEOUT)


def prerequisites_step(packages: Sequence[str], paths: NvidiaHostPaths, when: str = "") -> HostCommand:
    """``apt-get install`` of exactly the missing packages (recommends would pull a desktop's worth)."""
    argv = [
        "env",
        "DEBIAN_FRONTEND=noninteractive",
        paths.apt_get,
        "install",
        "-y",
        "--no-install-recommends",
    ]
    return HostCommand(
        f"install {', '.join(packages)}", [*argv, *packages], timeout_s=PREPARE_TIMEOUT, when=when
    )


def nouveau_steps(paths: NvidiaHostPaths) -> list[HostCommand]:
    """Blacklist nouveau for the next boot, and rebuild the initramfs so the early boot honours it."""
    path = f"{paths.modprobe_d.rstrip('/')}/{BLACKLIST_FILE}"
    return [
        HostCommand(f"write {path}", write_file_argv(path), stdin=BLACKLIST, when="nouveau is loaded"),
        HostCommand(
            "rebuild the initramfs",
            [paths.update_initramfs, "-u"],
            timeout_s=PREPARE_TIMEOUT,
            when="nouveau is loaded",
        ),
    ]


_SYSTEMD_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def systemd_word(word: str) -> str:
    """One argv word in systemd's ExecStart syntax: double-quoted, with ``\\`` and ``"`` escaped and the
    ``%`` specifiers and ``$`` expansions systemd applies inside quotes too doubled. A control character
    (a newline would start a new directive) is refused, not escaped."""
    if _SYSTEMD_CONTROL.search(word):
        raise ValueError(f"control character in a systemd ExecStart word: {word!r}")
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"'


def systemd_exec(argv: Sequence[str]) -> str:
    return " ".join(systemd_word(word) for word in argv)


def nodes_unit(paths: NvidiaHostPaths, minors: Sequence[int]) -> str:
    """``phoenix-nvidia-nodes.service``: one ``nvidia-modprobe -u -c=<minor>`` per GPU before any guest.

    nvidia-modprobe creates ``/dev/nvidiaN`` and ``/dev/nvidiactl`` (``-c``) and loads nvidia-uvm with its
    nodes (``-u``); without it they appear only when something first opens the GPU, and pve-container
    refuses to start a guest whose devN names a node that does not exist.
    """
    execs = [f"ExecStart={systemd_exec([paths.nvidia_modprobe, '-u', f'-c={int(m)}'])}" for m in minors]
    return "\n".join(
        [
            "# Managed by Phoenix (NvidiaHostDriver); changes are overwritten.",
            "[Unit]",
            "Description=Phoenix: NVIDIA device nodes before the guests start",
            "After=systemd-modules-load.service",
            "Before=pve-guests.service",
            "",
            "[Service]",
            "Type=oneshot",
            "RemainAfterExit=yes",
            *execs,
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]
    )


def persistenced_unit(paths: NvidiaHostPaths) -> str:
    """nvidia-persistenced keeps the driver initialised while no guest uses a GPU (the runfile installs
    the daemon but no unit for it), so the nodes and GPU state survive between guests."""
    return "\n".join(
        [
            "# Managed by Phoenix (NvidiaHostDriver); changes are overwritten.",
            "[Unit]",
            "Description=Phoenix: NVIDIA persistence daemon",
            f"After={NODES_UNIT}",
            f"Wants={NODES_UNIT}",
            "Before=pve-guests.service",
            "",
            "[Service]",
            "Type=forking",
            f"ExecStart={systemd_exec([paths.nvidia_persistenced])}",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]
    )


def units(paths: NvidiaHostPaths, minors: Sequence[int]) -> dict[str, str]:
    return {NODES_UNIT: nodes_unit(paths, minors), PERSISTENCED_UNIT: persistenced_unit(paths)}


def units_steps(paths: NvidiaHostPaths, minors: Sequence[int], when: str = "") -> list[HostCommand]:
    """Write both units, reload systemd, enable and start them (starting creates the nodes now)."""
    unit_dir = paths.unit_dir.rstrip("/")
    writes = [
        HostCommand(
            f"write {unit_dir}/{name}",
            write_file_argv(f"{unit_dir}/{name}"),
            stdin=text,
            stdin_label=f"{name} (rendered by providers/nvidia_driver.py)",
            when=when,
        )
        for name, text in units(paths, minors).items()
    ]
    return [
        *writes,
        HostCommand("reload systemd", [paths.systemctl, "daemon-reload"], when=when),
        HostCommand(
            "enable and start the NVIDIA units",
            [paths.systemctl, "enable", "--now", NODES_UNIT, PERSISTENCED_UNIT],
            timeout_s=READ_TIMEOUT,
            when=when,
        ),
    ]


def pin_step(paths: NvidiaHostPaths, kernel: str) -> HostCommand:
    return HostCommand(
        f"pin kernel {kernel}",
        [paths.proxmox_boot_tool, "kernel", "pin", kernel],
        when=f"{kernel} is not the pinned kernel",
    )


def reboot_step(paths: NvidiaHostPaths) -> HostCommand:
    return HostCommand("reboot the host", [paths.systemctl, "reboot"], timeout_s=60.0, when="allow_reboot")


def boot_id_step(paths: NvidiaHostPaths) -> HostCommand:
    return HostCommand("read the boot id", ["cat", paths.boot_id], timeout_s=30.0)


PREPARATION: Mapping[str, Any] = {
    "prerequisites": [],
    "nodes_unit": False,
    "allow_reboot": False,
    "kernel_pin": None,
    "passthrough": [],
}
"""The host preparation inputs at their "absent" values."""


def prepares_host(inputs: NvidiaHostDriverInputs) -> bool:
    return bool(inputs.prerequisites or inputs.nodes_unit or inputs.kernel_pin or inputs.passthrough)


def host_plan_steps(inputs: NvidiaHostDriverInputs, paths: NvidiaHostPaths) -> list[HostCommand]:
    """What the preparation of a fresh host runs: read, install the prerequisites, blacklist nouveau.
    The headers package name depends on the running kernel, so the plan shows it as a placeholder."""
    if not prepares_host(inputs):
        return []
    shown = ["proxmox-headers-<uname -r>" if p == KERNEL_HEADERS else p for p in inputs.prerequisites]
    steps = [host_read_step(inputs, paths)]
    if shown:
        steps.append(prerequisites_step(shown, paths, when="a package is not installed"))
        steps += nouveau_steps(paths)
    return steps


def plan_steps(inputs: NvidiaHostDriverInputs, paths: NvidiaHostPaths) -> list[HostCommand]:
    """A first ``up`` on a host without the pinned driver: read, prepare the host, install, read, then
    the device-node units and the kernel pin. ``phoenix plan`` renders these; ``converge`` runs the
    reads, and each other step only on what they found (its ``when``)."""
    steps = [read_step(paths), *host_plan_steps(inputs, paths), *install_steps(inputs, paths)]
    if inputs.nodes_unit:
        steps += units_steps(paths, (), when="a unit is not enabled as rendered")
    if inputs.kernel_pin:
        steps.append(pin_step(paths, inputs.kernel_pin))
    return steps


def driver_outputs(
    inputs: NvidiaHostDriverInputs,
    facts: DriverFacts,
    host: HostFacts | None = None,
    paths: NvidiaHostPaths | None = None,
) -> dict[str, Any]:
    """Every input, with ``driver_version`` as the host reports it, plus the inventory. With host
    preparation, the prepared keys are as observed too (``prerequisites``: those installed;
    ``nodes_unit``: both units enabled as rendered; ``kernel_pin``: the pinned kernel), so a refresh shows
    drift and the next ``up`` repairs it; plus the running kernel, the kernels DKMS built the module for
    (a boot into another one has no driver) and the device nodes that are missing."""
    outputs: dict[str, Any] = {
        **inputs.to_props(),
        "prerequisites": list(inputs.prerequisites),
        "passthrough": list(inputs.passthrough),
        "driver_version": facts.driver_version,
        "gpus": [gpu.to_props() for gpu in facts.gpus],
        "majors": dict(facts.majors),
    }
    if host is not None:
        minors = [gpu.minor for gpu in facts.gpus]
        outputs |= {
            "prerequisites": host.satisfied(inputs.prerequisites),
            "kernel_headers": host.headers(),
            "nodes_unit": inputs.nodes_unit
            and all(
                host.unit_ok(name, text) for name, text in units(paths or NvidiaHostPaths(), minors).items()
            ),
            "kernel_pin": host.pinned_kernel if inputs.kernel_pin else None,
            "kernel": host.kernel,
            "dkms_kernels": list(host.dkms_kernels),
            "module_for_running_kernel": host.kernel in host.dkms_kernels if host.dkms_kernels else None,
            "missing_nodes": list(host.missing_nodes),
            "secure_boot": host.secure_boot,
            # The passthrough GPUs that pass the IOMMU checks (observed, so a refresh shows a change).
            "passthrough": [
                a for a in inputs.passthrough if a not in host.passthrough_problems(inputs.passthrough)
            ],
        }
    return outputs


def _format_failures(news: Mapping[str, Any]) -> list[CheckFailure]:
    failures = []
    for key, pattern, what in (
        ("driver_version", _VERSION_RE, "an NVIDIA version like 580.76.05"),
        ("sha256", _SHA256_RE, "64 lower-case hex digits"),
    ):
        value = news.get(key)
        if isinstance(value, str) and not pattern.match(value):
            failures.append(CheckFailure(key, f"{key} must be {what}, got {value!r}"))
    url = news.get("runfile_url")
    if isinstance(url, str) and not re.match(r"^https?://", url):
        failures.append(CheckFailure("runfile_url", f"runfile_url must be an http(s) URL, got {url!r}"))
    return failures


# -- 3. the provider -----------------------------------------------------------------------------------------


@dataclass
class NvidiaHostDriverProvider(ConvergingProvider):
    """Plain data only: the inherited SSH target and where the driver's files are."""

    paths: NvidiaHostPaths = field(default_factory=NvidiaHostPaths)

    inputs_type = NvidiaHostDriverInputs
    required = ("host", "driver_version", "runfile_url", "sha256")
    replace_on = ("host",)
    update_on = (
        "driver_version",
        "runfile_url",
        "sha256",
        "uninstall_on_delete",
        "prerequisites",
        "nodes_unit",
        "allow_reboot",
        "kernel_pin",
        "passthrough",
    )
    PREPARATION_DEFAULTS: ClassVar[Mapping[str, Any]] = PREPARATION
    """A state written before host preparation existed lacks these keys: they mean their default."""

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        if isinstance(news.get("sha256"), str):  # stored as sha256sum prints it
            news = {**news, "sha256": news["sha256"].lower()}
        result = super().check(olds, news)
        for key in ("prerequisites", "passthrough"):
            if isinstance(result.inputs.get(key), tuple):  # the wire and state carry lists
                result.inputs[key] = list(result.inputs[key])
        return result

    def validate(self, news: Mapping[str, Any]) -> list[CheckFailure]:
        return _format_failures(news)

    def resource_id(self, inputs: NvidiaHostDriverInputs) -> str:
        return f"nvidia-driver@{inputs.host}"

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        olds = {**self.PREPARATION_DEFAULTS, **{k: v for k, v in olds.items() if v is not None}}
        # The declared default is a tuple, state and the wire hold lists: compare them as lists.
        olds, news = (
            {
                **d,
                "prerequisites": list(d.get("prerequisites") or []),
                "passthrough": list(d.get("passthrough") or []),
            }
            for d in (olds, news)
        )
        result = super().diff(id_, olds, news)
        if news.get("nodes_unit") is True and olds.get("missing_nodes"):
            # A refresh saw device nodes missing: the update starts the unit again.
            return DiffResult(changes=True, replaces=result.replaces)
        return result

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        ex = self.ssh()
        facts = self._read(ex)
        if not facts.installed:
            return ReadResult(None, {})
        if facts.driver_version is None:  # present but failing: refresh must show why, not guess
            raise NvidiaDriverError(ex.host, f"nvidia-smi fails: {facts.error}")
        inputs = NvidiaHostDriverInputs.from_props(props)
        host = self._read_host(ex, inputs, facts) if prepares_host(inputs) else None
        return ReadResult(id_, driver_outputs(inputs, facts, host, self.paths))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        if not props.get("uninstall_on_delete"):
            return  # by default the host keeps its driver: other things (and guests) use it
        ex = self.ssh()
        result = ex.run(
            uninstall_argv(str(props["driver_version"]), self.paths), check=False, timeout=UNINSTALL_TIMEOUT
        )
        if result.exit_status == EXIT_NO_UNINSTALLER:
            raise NvidiaDriverError(ex.host, f"cannot uninstall the driver: {result.stderr.strip()}")
        result.check("uninstall the NVIDIA driver")

    def _read(self, ex: Executor, step: HostCommand | None = None) -> DriverFacts:
        step = step or read_step(self.paths)
        return parse_read(ex.run(step.argv, timeout=step.timeout_s).stdout)

    def _read_host(self, ex: Executor, inputs: NvidiaHostDriverInputs, facts: DriverFacts) -> HostFacts:
        step = host_read_step(inputs, self.paths, facts.gpus)
        return parse_host_read(ex.run(step.argv, timeout=step.timeout_s).stdout)

    def _run(self, ex: Executor, step: HostCommand) -> None:
        ex.run(step.argv, stdin=step.stdin or None, timeout=step.timeout_s).check(step.what)

    def _prepare(self, ex: Executor, inputs: NvidiaHostDriverInputs, facts: DriverFacts) -> HostFacts:
        """Before the driver: Secure Boot (only where an install is due), the prerequisites, nouveau."""
        host = self._read_host(ex, inputs, facts)
        problems = host.passthrough_problems(inputs.passthrough)
        if problems:  # before anything changes: a VM would get a GPU it cannot safely have
            raise IommuError(ex.host, problems)
        if not inputs.prerequisites:
            return host
        if host.secure_boot and facts.driver_version != inputs.driver_version:
            raise SecureBootError(ex.host, host.secure_boot_evidence)
        missing = host.missing_packages(inputs.prerequisites)
        if missing:
            self._run(ex, prerequisites_step(missing, self.paths))
        if host.nouveau_loaded:
            done = []
            for step in nouveau_steps(self.paths):
                self._run(ex, step)
                done.append(step.what)
            if not inputs.allow_reboot:
                raise RebootRequiredError(
                    ex.host, done, "nouveau is loaded, and the NVIDIA driver cannot load until it is gone"
                )
            self._reboot(ex, host.boot_id)
            host = self._read_host(ex, inputs, facts)
            if host.nouveau_loaded:
                raise NvidiaDriverError(
                    ex.host, "nouveau is still loaded after the reboot; check the blacklist"
                )
        elif missing:
            host = self._read_host(ex, inputs, facts)
        return host

    def _reboot(self, ex: Executor, boot_id: str) -> None:
        """Reboot (allow_reboot) and wait, within :data:`REBOOT_TIMEOUT`, until the host answers with a
        new boot id. The connection drops as the host goes down: errors until then are expected."""
        step = reboot_step(self.paths)
        with contextlib.suppress(HostError):  # the session may die with the host before it answers
            ex.run(step.argv, check=False, timeout=step.timeout_s)
        deadline = time.monotonic() + REBOOT_TIMEOUT
        probe = boot_id_step(self.paths)
        last = "no answer"
        while True:
            try:
                now = self.ssh().run(probe.argv, check=False, timeout=probe.timeout_s).stdout.strip()
                if now and now != boot_id:
                    return
                last = f"boot id still {now or 'unreadable'}"
            except HostError as err:
                last = str(err)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RebootTimeoutError(
                    ex.host, f"rebooted, but not back within {REBOOT_TIMEOUT:g}s (last: {last})"
                )
            time.sleep(min(REBOOT_POLL, remaining))

    def _after_driver(self, ex: Executor, inputs: NvidiaHostDriverInputs, facts: DriverFacts) -> HostFacts:
        """After the driver: the device-node units (written and started unless enabled as rendered, or
        started again when a node is missing) and the kernel pin."""
        host = self._read_host(ex, inputs, facts)
        changed = False
        minors = [gpu.minor for gpu in facts.gpus]
        if inputs.nodes_unit:
            rendered = units(self.paths, minors)
            if not all(host.unit_ok(name, text) for name, text in rendered.items()) or host.missing_nodes:
                for step in units_steps(self.paths, minors):
                    self._run(ex, step)
                changed = True
        if inputs.kernel_pin and host.pinned_kernel != inputs.kernel_pin:
            self._run(ex, pin_step(self.paths, inputs.kernel_pin))
            changed = True
        if changed:
            host = self._read_host(ex, inputs, facts)
        if inputs.nodes_unit and host.missing_nodes:
            raise NvidiaDriverError(
                ex.host,
                f"{NODES_UNIT} ran but these device nodes are missing: {', '.join(host.missing_nodes)}; "
                "GPU guests naming them would not start",
            )
        return host

    def converge(self, inputs: NvidiaHostDriverInputs) -> dict[str, Any]:
        ex = self.ssh()
        facts = self._read(ex)
        host = self._prepare(ex, inputs, facts) if prepares_host(inputs) else None
        if facts.driver_version != inputs.driver_version:
            install, verify = install_steps(inputs, self.paths)
            self._install(ex, inputs, install)
            facts = self._read(ex, verify)
            if facts.driver_version != inputs.driver_version:
                raise NvidiaDriverError(
                    ex.host,
                    f"installed NVIDIA {inputs.driver_version} but the host reports {facts.describe()} "
                    "(a loaded old module needs a reboot to be replaced)",
                )
        if host is not None:
            host = self._after_driver(ex, inputs, facts)
        return driver_outputs(inputs, facts, host, self.paths)

    def _install(self, ex: Executor, inputs: NvidiaHostDriverInputs, step: HostCommand) -> None:
        result = ex.run(step.argv, check=False, timeout=step.timeout_s)
        if result.exit_status == EXIT_CHECKSUM:
            actual = result.stderr.strip().rpartition("sha256 mismatch: ")[2].split()[:1]
            raise ChecksumMismatchError(ex.host, inputs.runfile_url, inputs.sha256, "".join(actual))
        if result.exit_status == EXIT_MODULES_BUSY:
            raise NvidiaDriverError(
                ex.host,
                f"cannot replace the loaded NVIDIA driver with {inputs.driver_version}: "
                f"{result.stderr.strip()}; stop the GPU guests (and nvidia-persistenced) and run again",
            )
        result.check(f"install NVIDIA {inputs.driver_version}")


# -- 4. the resource -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NvidiaHostDriverArgs:
    driver_version: pulumi.Input[str]
    """The pinned driver version (``NvidiaDriver.version`` in host.json)."""
    runfile_url: pulumi.Input[str]
    """Where NVIDIA's runfile is (NVIDIA or a local mirror; the sha256 is what is trusted)."""
    sha256: pulumi.Input[str]
    uninstall_on_delete: pulumi.Input[bool] = False
    """Remove the driver when the resource is deleted (default: leave it installed)."""
    prerequisites: pulumi.Input[list[str]] | None = None
    """Packages the DKMS build needs (:data:`PREREQUISITES`); none: the host is not prepared."""
    nodes_unit: pulumi.Input[bool] = False
    """Manage the device-node and persistence units (nodes exist before ``pve-guests.service``)."""
    allow_reboot: pulumi.Input[bool] = False
    """May reboot the host after blacklisting nouveau, and wait for it."""
    kernel_pin: pulumi.Input[str] | None = None
    """``proxmox-boot-tool kernel pin`` this version."""
    passthrough: pulumi.Input[list[str]] | None = None
    """PCI addresses of the GPUs VMs get (``hostpci``): checked for IOMMU isolation."""


class NvidiaHostDriver(DynamicResource, module="phoenix", name="NvidiaHostDriver"):
    """The pinned NVIDIA driver of one host. Token ``pulumi-python:dynamic/phoenix:NvidiaHostDriver``."""

    driver_version: pulumi.Output[str]
    """The version the host runs (after create/update: the pinned one)."""
    gpus: pulumi.Output[list[dict[str, Any]]]
    """``[{index, uuid, name, memory_mib, pci_bus_id, minor, device}]``, by index."""
    majors: pulumi.Output[dict[str, int]]
    """``{"nvidia": 195, "nvidia-uvm": 243, ...}`` as /proc/devices lists them (they can change at boot)."""

    def __init__(
        self,
        name: str,
        args: NvidiaHostDriverArgs,
        *,
        ssh_target: SshTarget,
        paths: NvidiaHostPaths | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        provider = NvidiaHostDriverProvider(ssh_target=ssh_target, paths=paths or NvidiaHostPaths())
        # The preparation args are sent only when set: a program that sets none registers exactly what it
        # did before they existed.
        given = {k: v for k, v in vars(args).items() if k not in PREPARATION or v not in (None, False, [])}
        props = {**given, "host": ssh_target.host, "version": PROVIDER_VERSION}
        self._register(provider, name, props, opts)
