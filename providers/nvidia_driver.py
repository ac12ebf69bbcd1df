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

A container's NVIDIA userspace (installed by the nvidia feature script with ``--no-kernel-module``) must
be exactly the host driver's version; the config checks refuse a mismatch before anything is deployed
(``phoenix_components.config``), so no resource here repeats that rule.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    ReadResult,
)

from providers.base import ConvergingProvider, DynamicResource, Inputs, convert
from providers.channels.command import Executor, sh_argv
from providers.channels.steps import HostCommand
from providers.channels.targets import SshTarget
from providers.errors import HostError, PhoenixError

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


def plan_steps(inputs: NvidiaHostDriverInputs, paths: NvidiaHostPaths) -> list[HostCommand]:
    """A first ``up`` on a host without the pinned driver: read, install, read. ``phoenix plan`` renders
    these; ``converge`` runs the read, and the rest when the version read is not the pinned one."""
    return [read_step(paths), *install_steps(inputs, paths)]


def driver_outputs(inputs: NvidiaHostDriverInputs, facts: DriverFacts) -> dict[str, Any]:
    """Every input, with ``driver_version`` as the host reports it, plus the inventory."""
    return {
        **inputs.to_props(),
        "driver_version": facts.driver_version,
        "gpus": [gpu.to_props() for gpu in facts.gpus],
        "majors": dict(facts.majors),
    }


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
    update_on = ("driver_version", "runfile_url", "sha256", "uninstall_on_delete")

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        if isinstance(news.get("sha256"), str):  # stored as sha256sum prints it
            news = {**news, "sha256": news["sha256"].lower()}
        return super().check(olds, news)

    def validate(self, news: Mapping[str, Any]) -> list[CheckFailure]:
        return _format_failures(news)

    def resource_id(self, inputs: NvidiaHostDriverInputs) -> str:
        return f"nvidia-driver@{inputs.host}"

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        facts = self._read(self.ssh())
        if not facts.installed:
            return ReadResult(None, {})
        if facts.driver_version is None:  # present but failing: refresh must show why, not guess
            raise NvidiaDriverError(self.ssh().host, f"nvidia-smi fails: {facts.error}")
        return ReadResult(id_, driver_outputs(NvidiaHostDriverInputs.from_props(props), facts))

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

    def converge(self, inputs: NvidiaHostDriverInputs) -> dict[str, Any]:
        ex = self.ssh()
        facts = self._read(ex)
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
        return driver_outputs(inputs, facts)

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
        props = {**vars(args), "host": ssh_target.host, "version": PROVIDER_VERSION}
        super().__init__(provider, name, props, opts)
