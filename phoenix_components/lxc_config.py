"""A workload container's PVE config, from its model: the exact keys Phoenix sends and manages.

Pure functions, shared by the guest resource and ``phoenix plan`` so the plan shows what really happens.
Keys not set here are never sent, so PVE keeps what it generated (the MAC of a net0 without hwaddr is
kept by sending net0 back with the hwaddr PVE chose — see the guest provider).
"""

from __future__ import annotations

from phoenix_components.models import BindMount, Container, DatasetCloneMount, Network, VolumeMount

# Device nodes a CUDA process needs besides /dev/nvidiaN (present once the host driver is loaded).
NVIDIA_CONTROL_DEVICES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")


def net0(net: Network) -> str:
    parts = ["name=eth0", f"bridge={net.bridge}", f"ip={net.ip}"]
    parts += [f"gw={net.gateway}"] if net.gateway else []
    parts += [f"hwaddr={net.mac.upper()}"] if net.mac else []
    parts += [f"tag={net.vlan}"] if net.vlan else []
    parts += ["firewall=1"] if net.firewall else []
    return ",".join(parts)


def clone_dataset(data_dataset: str, vmid: int) -> str:
    """The per-guest writable clone of a data dataset (e.g. model weights)."""
    return f"{data_dataset}-ct{vmid}"


def container_params(ct: Container, clone_mountpoints: dict[str, str]) -> dict[str, str | int]:
    """PVE ``config`` parameters for ``ct``.

    ``clone_mountpoints`` maps a data dataset key to the host mountpoint of this guest's clone of it
    (an output of the ZfsClone resource; ``/<dataset>`` on a default pool).
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
    flags = [name for name, on in ct.pve_features.model_dump().items() if on]
    if flags:
        params["features"] = ",".join(f"{name}=1" for name in flags)
    devices = [f"/dev/nvidia{gpu}" for gpu in ct.gpus] + (list(NVIDIA_CONTROL_DEVICES) if ct.gpus else [])
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


def raw_lines(ct: Container) -> list[str]:
    """Raw ``lxc.*`` lines the API cannot set; written over SSH before the first start."""
    return [f"lxc.apparmor.profile: {ct.apparmor_profile}"]
