"""The Pulumi program, as functions: which environment this stack is, and what to build for it.

``__main__.py`` calls these; tests call them under Pulumi mocks. Nothing happens at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi

from phoenix_components.chain import TemplateChain, TemplateChainArgs
from phoenix_components.cloud_config import CloudEnvironment, is_cloud_environment, load_cloud_environment
from phoenix_components.config import Environment, load_environment
from phoenix_components.guests import LxcGuest, LxcGuestArgs, VmGuest, VmGuestArgs
from providers.errors import ConfigError


def stack_environment(config_dir: Path) -> Environment | CloudEnvironment:
    """The environment named by ``phoenix:environment`` (default: the stack name), validated: an AWS one
    when ``environments/<env>/cloud.json`` exists, else the on-prem one of ``host.json``.

    An invalid config stops the program with the list of problems and no traceback, before any
    resource is registered — so nothing reaches the host.
    """
    name = pulumi.Config("phoenix").get("environment") or pulumi.get_stack()
    try:
        if is_cloud_environment(config_dir, name):
            return load_cloud_environment(config_dir, name)
        return load_environment(config_dir, name)
    except ConfigError as error:
        raise pulumi.RunError(str(error)) from None


def build(env: Environment | CloudEnvironment) -> dict[str, Any]:
    """Declare every component for ``env``; return the stack exports."""
    if isinstance(env, CloudEnvironment):
        # Imported here so on-prem stacks never load pulumi_aws (about a second of start-up).
        from phoenix_components.cloud import build_cloud

        return build_cloud(env)
    chain = TemplateChain("chain", TemplateChainArgs(environment=env))
    containers = {
        ct.vmid: LxcGuest(
            f"ct-{ct.vmid}",
            LxcGuestArgs(spec=ct, layer=chain.layers[ct.layer]),
            pulumi.ResourceOptions(depends_on=[chain.layers[ct.layer]]),
        )
        for ct in env.guests.containers
    }
    vms = {vm.vmid: VmGuest(f"vm-{vm.vmid}", VmGuestArgs(spec=vm)) for vm in env.guests.vms}
    return {
        "environment": env.name,
        "node": env.host.node,
        "layers": chain.keys,
        "containers": {str(vmid): ct.address for vmid, ct in containers.items()},
        "vms": {str(vmid): vm.vmid for vmid, vm in vms.items()},
        "vllm_endpoints": {
            ct.vllm.server.served_model_name: containers[ct.vmid].endpoint
            for ct in env.guests.containers
            if ct.vllm is not None
        },
    }
