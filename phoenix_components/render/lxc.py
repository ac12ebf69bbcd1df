"""A workload container's PVE config, from its model: the exact keys Phoenix sends and manages.

Pure functions, shared by the guest resource and ``phoenix plan`` so the plan shows what really happens.
Keys not set here are never sent, so PVE keeps what it generated (the MAC of a net0 without hwaddr is
kept by sending net0 back with the hwaddr PVE chose — see the guest provider).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from phoenix_components.config.models import (
    BindMount,
    Container,
    DatasetCloneMount,
    HostGpu,
    Network,
    Startup,
    VolumeMount,
)
from phoenix_components.render.errors import CONTROL_CHARACTER, GpuMinorError, UnsafeValueError
from providers.nvidia_driver import NvidiaOutputError, normalize_bus_id

# Device nodes a CUDA process needs besides /dev/nvidiaN (present once the host driver is loaded).
NVIDIA_CONTROL_DEVICES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")

GpuMinors = Mapping[str, int | str]
"""``str(host.json GPU index)`` -> device minor (the N of ``/dev/nvidiaN``); a str minor is a placeholder
(the plan). The keys are strings because the map travels in Pulumi Outputs, whose dicts are keyword
arguments."""


def gpu_device(minor: int | str) -> str:
    return f"/dev/nvidia{minor}"


def declared_minors(gpus: Sequence[HostGpu]) -> dict[str, int | str]:
    """The minors host.json declares (``gpus[].minor``), for a host whose driver Phoenix does not manage."""
    return {str(g.index): g.minor for g in gpus if g.minor is not None}


def inventory_minors(
    declared: Sequence[HostGpu], inventory: Sequence[Mapping[str, Any]] | None
) -> dict[str, int | str]:
    """host.json index -> the device minor the NVIDIA driver resource read from the host.

    ``inventory`` is ``NvidiaHostDriver.gpus`` (nvidia-smi's index and PCI bus id joined with the kernel's
    ``Device Minor``). The minor is the kernel's, never the index: they differ whenever the driver probed
    the GPUs in another order than nvidia-smi enumerates them. A GPU host.json lists but the host does not
    have is left out (the guest that asks for it names itself in the error); a host.json PCI address or
    minor that contradicts what the host reports is an error here.
    """
    if inventory is None:
        raise GpuMinorError("the NVIDIA driver resource reported no GPU inventory")
    by_index = {int(g["index"]): g for g in inventory}
    minors: dict[str, int | str] = {}
    problems: list[str] = []
    for gpu in declared:
        found = by_index.get(gpu.index)
        if found is None:
            continue
        minor = int(found["minor"])
        bus = found.get("pci_bus_id")
        try:
            declared_bus = normalize_bus_id(gpu.pci) if gpu.pci is not None else None
        except NvidiaOutputError:
            declared_bus = gpu.pci
        if declared_bus is not None and bus and declared_bus != bus:
            problems.append(f"GPU {gpu.index} is at {bus} on the host, host.json gpus says {gpu.pci}")
        if gpu.minor is not None and gpu.minor != minor:
            problems.append(
                f"GPU {gpu.index} is {gpu_device(minor)} on the host, "
                f"host.json gpus declares minor {gpu.minor}"
            )
        minors[str(gpu.index)] = minor
    if problems:
        raise GpuMinorError("; ".join(problems))
    return minors


def gpu_devices(gpus: Sequence[int], minors: GpuMinors, who: str) -> list[str]:
    """``/dev/nvidiaN`` of each GPU index, then the control devices; ``who`` names the guest in errors."""
    missing = [gpu for gpu in gpus if str(gpu) not in minors]
    if missing:
        known = ", ".join(sorted(minors, key=int)) or "none"
        raise GpuMinorError(
            f"{who}: no device minor for GPU {', '.join(map(str, missing))}: the host's NVIDIA inventory "
            f"has GPUs {known}"
        )
    return [gpu_device(minors[str(gpu)]) for gpu in gpus] + (list(NVIDIA_CONTROL_DEVICES) if gpus else [])


def net0(net: Network, index: int = 0) -> str:
    """PVE's ``netN`` value of a NIC: ``name=ethN``, its bridge, address and the parts it sets."""
    parts = [f"name=eth{index}", f"bridge={net.bridge}", f"ip={net.ip}"]
    parts += [f"gw={net.gateway}"] if net.gateway else []
    parts += [f"hwaddr={net.mac.upper()}"] if net.mac else []
    parts += [f"tag={net.vlan}"] if net.vlan else []
    parts += ["firewall=1"] if net.firewall else []
    return ",".join(parts)


def startup(value: Startup) -> str:
    """PVE's ``startup`` property string (``order=1,up=30``): only the parts given, in PVE's own order."""
    parts = {"order": value.order, "up": value.up, "down": value.down}
    return ",".join(f"{key}={number}" for key, number in parts.items() if number is not None)


def tags(values: Sequence[str]) -> str:
    """PVE's ``tags``: ``;``-separated, lower-case and sorted, as PVE stores them by default
    (GuestHelpers::get_unique_tags, unless datacenter.cfg's tag-style says otherwise), so what PVE reads
    back is what was sent."""
    return ";".join(sorted(tag.lower() for tag in values))


def clone_dataset(data_dataset: str, vmid: int) -> str:
    """The per-guest writable clone of a data dataset (e.g. model weights)."""
    return f"{data_dataset}-ct{vmid}"


def container_params(
    ct: Container, clone_mountpoints: Mapping[str, str], gpu_minors: GpuMinors | None = None
) -> dict[str, str | int]:
    """PVE ``config`` parameters for ``ct``.

    ``clone_mountpoints`` maps a data dataset key to the host mountpoint of this guest's clone of it
    (an output of the ZfsClone resource; ``/<dataset>`` on a default pool). ``gpu_minors`` maps the host's
    GPU indices to their device minors (:func:`inventory_minors`); the devN lines use the minors.
    """
    params: dict[str, str | int] = {
        "hostname": ct.hostname,
        "cores": ct.cores,
        "memory": ct.memory_mib,
        "swap": ct.swap_mib,
        "net0": net0(ct.network),
        "onboot": int(ct.start_on_boot),
    }
    if ct.description:
        params["description"] = ct.description
    # New keys only when configured: a container from before them keeps exactly the params it had.
    if ct.startup is not None:
        params["startup"] = startup(ct.startup)
    for i, net in enumerate(ct.networks, start=1):
        params[f"net{i}"] = net0(net, i)
    if ct.dns is not None and ct.dns.nameserver:
        params["nameserver"] = " ".join(ct.dns.nameserver)  # PVE's own form (verify_nameserver_list)
    if ct.dns is not None and ct.dns.searchdomain is not None:
        params["searchdomain"] = ct.dns.searchdomain
    if ct.tags:
        params["tags"] = tags(ct.tags)
    flags = [name for name, on in ct.pve_features.model_dump().items() if on]
    if flags:
        params["features"] = ",".join(f"{name}=1" for name in flags)
    devices = gpu_devices(ct.gpus, gpu_minors or {}, f"CT {ct.vmid} ({ct.hostname})")
    for i, device in enumerate(devices):
        params[f"dev{i}"] = f"{device},mode=0666"
    for i, mount in enumerate(ct.mounts):
        ro = ",ro=1" if getattr(mount, "read_only", False) else ""
        if isinstance(mount, DatasetCloneMount):
            params[f"mp{i}"] = f"{clone_mountpoints[mount.dataset]},mp={mount.path}{ro}"
        elif isinstance(mount, BindMount):
            params[f"mp{i}"] = f"{mount.host_path},mp={mount.path}{ro}"
        elif isinstance(mount, VolumeMount):
            params[f"mp{i}"] = f"{mount.storage}:{mount.size_gib},mp={mount.path},backup={int(mount.backup)}"
    return params


# The variable naming a container's declared environment (config/features/base_setup.sh reads it).
GUEST_ENVIRONMENT_NAMES = "PHOENIX_GUEST_ENVIRONMENT"


def raw_lines(ct: Container) -> list[str]:
    """Raw ``lxc.*`` lines the API cannot set; written over SSH before the first start.

    A value is written into /etc/pve/lxc/<vmid>.conf as it is, so one with a line break (or any control
    character) would add lines of its own, e.g. a second ``lxc.apparmor.profile``: refused here, whatever
    the models let through.
    """
    lines = [f"lxc.apparmor.profile: {ct.apparmor_profile}"]
    if ct.environment:
        # LXC gives these to the container's init; systemd starts services with a clean environment, so
        # the base layer's phoenix-guest-environment.service passes on the names listed in the last line.
        lines += [f"lxc.environment: {name}={value}" for name, value in sorted(ct.environment.items())]
        lines.append(f"lxc.environment: {GUEST_ENVIRONMENT_NAMES}={','.join(sorted(ct.environment))}")
    for line in lines:
        if CONTROL_CHARACTER.search(line) or line != line.strip():
            raise UnsafeValueError(
                f"CT {ct.vmid} ({ct.hostname}): a raw config line must be one plain line: {line!r}"
            )
    return lines
