"""The Pulumi program, as functions: which environment this stack is, and what to build for it.

``__main__.py`` calls these; tests call them under Pulumi mocks. Nothing happens at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import pulumi_proxmoxve as proxmox

from phoenix_components.components.baseline import HostBaseline, HostBaselineArgs
from phoenix_components.components.chain import TemplateChain, TemplateChainArgs
from phoenix_components.components.guests import (
    CloudImageTemplate,
    CloudImageTemplateArgs,
    LxcGuest,
    LxcGuestArgs,
    VmGuest,
    VmGuestArgs,
    host_download,
)
from phoenix_components.components.stacks import StackComponent, StackComponentArgs, read_stack_secrets
from phoenix_components.config.cloud import CloudEnvironment, is_cloud_environment, load_cloud_environment
from phoenix_components.config.errors import ConfigError
from phoenix_components.config.load import Environment, dependency_order, load_environment
from phoenix_components.config.models import Container, Vm
from phoenix_components.render.stacks import vm_instance


def load_stack_environment(config_dir: Path) -> Environment | CloudEnvironment:
    """The environment named by ``phoenix:environment`` (default: the stack name), loaded and validated:
    an AWS one when ``environments/<env>/cloud.json`` exists, else the on-prem one of ``host.json``. (The
    CLI reads the same key from a stack file: :func:`phoenix_components.config.stacks.stack_environment`.)

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


def proxmox_provider(env: Environment) -> proxmox.Provider:
    """The pulumi-proxmoxve provider for the resources it models fully (VMs, downloads, firewall).

    API credentials come from the stack's secret config only, and stay secrets. It gets no SSH access:
    everything it manages goes through the API, and every host command goes through Phoenix's own
    executor, which pins the host key (the provider's SSH client would not).
    """
    config, host = pulumi.Config("phoenix"), env.host
    api = host.api
    auth: dict[str, Any] = {}
    if api.auth == "token":
        secret = config.get_secret("pveTokenSecret")
        auth["api_token"] = secret.apply(lambda s: f"{api.token_id}={s}") if secret is not None else None
    else:
        auth["username"] = api.user
        auth["password"] = config.get_secret("pvePassword")
    return proxmox.Provider(
        f"pve-{host.node}", endpoint=api.endpoint, insecure=api.verify_tls is False, **auth
    )


def build(env: Environment | CloudEnvironment) -> dict[str, Any]:
    """Declare every component for ``env``; return the stack exports."""
    if isinstance(env, CloudEnvironment):
        # Imported here so on-prem stacks never load pulumi_aws (about a second of start-up).
        from phoenix_components.components.cloud import build_cloud

        return build_cloud(env)
    host = env.host
    # Before any resource: a stack secret missing from the config stops the program naming its key.
    stack_secrets = read_stack_secrets(env)
    # Only an environment with VMs or OS templates to download has anything for pulumi-proxmoxve; the
    # rest needs no plugin besides the Python SDK (the lab stack runs with the Go-built CLI alone).
    downloads = {key: (t.url, t.file) for key, t in host.os_templates.items() if t.url is not None}
    provider = proxmox_provider(env) if downloads or env.guests.vms else None
    os_templates: dict[str, pulumi.Resource] = {
        key: host_download(
            f"os-template-{key}", host, "vztmpl", url, file, pulumi.ResourceOptions(provider=provider)
        )
        for key, (url, file) in downloads.items()
    }
    baseline = HostBaseline(f"host-{host.node}", HostBaselineArgs(environment=env))
    chain = TemplateChain(
        "chain",
        TemplateChainArgs(
            environment=env, os_templates=os_templates, driver=baseline.driver, gpu_minors=baseline.gpu_minors
        ),
    )
    images: dict[str, CloudImageTemplate] = {}
    if provider is not None:  # always, when there are VMs
        images = {
            image: CloudImageTemplate(
                f"cloud-image-{image}",
                CloudImageTemplateArgs(environment=env, image=image, provider=provider),
            )
            for image in sorted({vm.image for vm in env.guests.vms})
        }
    containers: dict[int, LxcGuest] = {}
    vms: dict[int, VmGuest] = {}
    built: dict[int, pulumi.Resource] = {}
    # Dependencies first (validation refused cycles): a guest waits for the components of the guests it
    # is `after`, every child included — the container, its features and a vLLM service's health gate.
    everyone: list[Container | Vm] = [*env.guests.containers, *env.guests.vms]
    for guest in dependency_order(everyone):
        after = tuple(built[vmid] for vmid in guest.after)
        if isinstance(guest, Container):
            ct = guest
            needs: list[pulumi.Resource] = []
            if ct.apparmor_profile in baseline.profiles:
                needs.append(baseline.profiles[ct.apparmor_profile])
            if ct.gpus and baseline.driver is not None:
                needs.append(baseline.driver)
            built[ct.vmid] = containers[ct.vmid] = LxcGuest(
                f"ct-{ct.vmid}",
                LxcGuestArgs(
                    environment=env,
                    spec=ct,
                    layer_vmid=chain.layers[ct.layer].vmid if ct.layer is not None else None,
                    data_snapshots=baseline.snapshots,
                    depends_on=(*needs, *after),
                    gpu_minors=baseline.gpu_minors,
                ),
            )
        elif provider is not None:
            built[guest.vmid] = vms[guest.vmid] = VmGuest(
                f"vm-{guest.vmid}",
                VmGuestArgs(
                    environment=env,
                    spec=guest,
                    template=images[guest.image].template,
                    provider=provider,
                    after=after,
                ),
            )
    # Compose stacks, each after the whole component of the guest it runs in (Docker is there by then).
    stacks = {
        name: StackComponent(
            f"stack-{name}",
            StackComponentArgs(
                environment=env,
                stack=stack,
                guest=built[stack.guest],
                secrets=stack_secrets[name],
                guest_instance=(
                    containers[stack.guest].guest.instance
                    if stack.guest in containers
                    else vm_instance(env, stack.guest)
                ),
            ),
        )
        for name, stack in env.stacks.items()
        if stack.guest in built
    }
    # Exports in the file's order, whatever order the dependencies built them in.
    containers = {ct.vmid: containers[ct.vmid] for ct in env.guests.containers}
    vms = {vm.vmid: vms[vm.vmid] for vm in env.guests.vms if vm.vmid in vms}
    return {
        "environment": env.name,
        "node": host.node,
        "layers": chain.keys,
        "layer_vmids": chain.vmids,
        "layer_verified": chain.verified,
        "containers": {str(vmid): ct.address for vmid, ct in containers.items()},
        "vms": {str(vmid): vm.vmid for vmid, vm in vms.items()},
        "stacks": {
            name: {"guest": env.stacks[name].guest, "state": component.stack.state}
            for name, component in stacks.items()
        },
        "vllm_endpoints": {
            ct.vllm.server.served_model_name: containers[ct.vmid].endpoint
            for ct in env.guests.containers
            if ct.vllm is not None
        },
        # Every model server, whatever its engine, by hostname (unique, where two guests may serve one
        # model): the OpenAI-compatible base URL each one answers under.
        "model_endpoints": {
            ct.hostname: {"engine": engine[0], "model": engine[1].served_name, "url": endpoint}
            for ct in env.guests.containers
            if (engine := ct.engine()) is not None and (endpoint := containers[ct.vmid].endpoint) is not None
        },
    }
