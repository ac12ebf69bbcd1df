"""A VM's pure parts: its cloud-init user-data, and the vmid of the template its cloud image becomes.

The VM component (components/guests.py) writes :func:`vm_user_data` as a snippet and clones the template;
``phoenix plan`` shows the same without importing the components (and with them pulumi_proxmoxve).
"""

from __future__ import annotations

from phoenix_components.config.load import Environment
from phoenix_components.config.models import Vm
from phoenix_components.render import cloud_init
from phoenix_components.render.features import chain_feature_env

VM_FEATURES_DIR = "/var/lib/phoenix/features"
VM_RUNNER = "/var/lib/phoenix/run-features.sh"


def vm_user_data(env: Environment, vm: Vm) -> str:
    """cloud-init user-data that writes the VM's ``feature_files`` and feature scripts and runs the scripts
    in order, fail-fast, each with its pins and the VM's ``feature_env``, and adds the VM's user with its
    SSH keys (:mod:`phoenix_components.render.cloud_init`)."""
    user: dict[str, object] = {"name": vm.cloud_init.user, "sudo": "ALL=(ALL) NOPASSWD:ALL"}
    if vm.cloud_init.ssh_authorized_keys:
        user["ssh_authorized_keys"] = list(vm.cloud_init.ssh_authorized_keys)
    return cloud_init.cloud_config(
        features=vm.features,
        scripts=env.feature_scripts,
        # The guest's own values after the chain's pins, as a container's GuestFeatures gets them.
        variables={f: {**chain_feature_env(env, [f], "vm"), **vm.feature_env} for f in vm.features},
        features_dir=VM_FEATURES_DIR,
        runner_path=VM_RUNNER,
        files=[cloud_init.WriteFile(f.path, f.content, f.mode) for f in vm.feature_files],
        users=["default", user],
    )


def cloud_image_template_vmid(env: Environment, image: str) -> int:
    """VM templates made from cloud images take the top of the layer range, one per image, in name order;
    layers are allocated from the bottom, and the config checks leave room for both."""
    return env.host.vmid_ranges.layers.end - sorted(env.host.cloud_images).index(image)
