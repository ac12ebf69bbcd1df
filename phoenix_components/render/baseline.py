"""The host baseline's resource inputs, rendered from the config: the data datasets' ZFS properties and
the pinned NVIDIA driver.

Pure (no Pulumi): the baseline component (``phoenix_components/components/baseline.py``) builds its
resources from these, and ``phoenix plan`` asks the providers' own step functions what they run.
"""

from __future__ import annotations

from collections.abc import Sequence

from phoenix_components.config.models import DataDataset, Guests, Host, NvidiaDriver
from providers.nvidia_driver import PREREQUISITES


def dataset_properties(data: DataDataset) -> dict[str, str]:
    """The ZfsDataset's declared properties (as declared: the provider's check brings them to the form
    ``zfs get -p`` reports)."""
    properties: dict[str, str] = {"compression": data.compression}
    if data.quota_gib is not None:
        properties["quota"] = f"{data.quota_gib}G"
    return properties


def passthrough_addresses(host: Host, guests: Guests) -> list[str]:
    """The PCI addresses of the GPUs given to VMs (hostpci), function ``.0`` where host.json names only the
    slot: the driver checks each for IOMMU isolation."""
    pci = {gpu.index: gpu.pci for gpu in host.gpus}
    addresses = {pci[i] for vm in guests.vms for i in vm.gpus if pci.get(i)}
    return sorted(a if "." in a else f"{a}.0" for a in addresses if a)


def driver_inputs(nvidia: NvidiaDriver, passthrough: Sequence[str] = ()) -> dict[str, object]:
    """The NvidiaHostDriver's args (the resource adds the host it reaches over SSH)."""
    return {
        "driver_version": nvidia.version,
        "runfile_url": nvidia.runfile_url,
        "sha256": nvidia.sha256,
        "uninstall_on_delete": nvidia.uninstall_on_delete,
        # The host preparation (issue 16): build prerequisites, Secure Boot and nouveau checks, the
        # device-node units before pve-guests.service, the optional kernel pin.
        "prerequisites": list(PREREQUISITES),
        "nodes_unit": True,
        "allow_reboot": nvidia.allow_reboot,
        "kernel_pin": nvidia.kernel_pin,
        "passthrough": list(passthrough),
    }
