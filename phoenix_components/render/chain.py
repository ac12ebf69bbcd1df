"""A template layer's inputs, rendered from the config: what the TemplateLayer resource takes.

Pure (no Pulumi): the chain component (``phoenix_components/components/chain.py``) builds its resources
from these, and ``phoenix plan`` asks the provider's own step function what they make a first ``up`` run.
"""

from __future__ import annotations

from phoenix_components.config.load import Environment
from phoenix_components.render.lxc import GpuMinors, gpu_devices

__all__ = ["build_devices", "layer_inputs"]


def build_devices(env: Environment, name: str, gpu_minors: GpuMinors) -> list[str]:
    """devN values of a build with ``build.gpus``: every host GPU by its device minor, and the controls."""
    if not env.chain.layers[name].build.gpus:
        return []
    devices = gpu_devices([g.index for g in env.host.gpus], gpu_minors, f"layer {name}")
    return [f"{d},mode=0666" for d in devices]


def layer_inputs(env: Environment, name: str, gpu_minors: GpuMinors | None = None) -> dict[str, object]:
    """The TemplateLayer resource's inputs for ``name`` (the parent's vmid is added by the component).

    ``build_devices`` needs the GPU minors; without them (an Output the component adds) it is empty.
    """
    layer, host = env.chain.layers[name], env.host
    key = env.layer_key(name)
    inputs: dict[str, object] = {
        "node": host.node,
        "layer": name,
        "key": key,
        "hostname": f"layer-{name}-{key[:8]}",
        "vmid_start": host.vmid_ranges.layers.start,
        "vmid_end": host.vmid_ranges.layers.end,
        "storage": host.storage.rootfs,
        "pool": host.storage.zfs_pool,
        "features": [
            {"name": f, "script": env.feature_scripts[f], "env": env.layer_feature_env(name, f)}
            for f in layer.features
        ],
        "smoke_test": list(layer.smoke_test),
        "cores": layer.build.cores,
        "memory_mib": layer.build.memory_mib,
        "disk_gib": layer.build.disk_gib,
        "nesting": layer.build.nesting,
        "build_devices": build_devices(env, name, gpu_minors) if gpu_minors is not None else [],
        "net0": f"name=eth0,bridge={host.bridges[0].name},ip=dhcp",
        "parent_vmid": None,
        "os_template": None,
    }
    if layer.os_template is not None:
        template = host.os_templates[layer.os_template]
        inputs["os_template"] = f"{host.storage.templates}:vztmpl/{template.file}"
    return inputs
