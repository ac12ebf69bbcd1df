"""A Compose stack's ComposeStack inputs from the validated config: what ``components/stacks.py`` passes
and ``phoenix plan`` shows (pure: no Pulumi, no I/O)."""

from __future__ import annotations

from collections.abc import Mapping

from phoenix_components.config.load import Environment
from phoenix_components.config.models import Container
from phoenix_components.config.stack_files import StackFiles, content_key
from phoenix_components.render.vm import vm_user_data
from providers.channels.command import sha256_text


def stack_guest(env: Environment, stack: StackFiles) -> tuple[str, str]:
    """``(guest_kind, guest name)`` of the guest the stack runs in (validation made sure it exists)."""
    for ct in env.guests.containers:
        if ct.vmid == stack.guest:
            return "lxc", ct.hostname
    vm = next(vm for vm in env.guests.vms if vm.vmid == stack.guest)
    return "qemu", vm.name


def guest_resource_name(env: Environment, vmid: int) -> str:
    """The program's name of a guest's main resource: ``ct-201`` or ``vm-231``."""
    is_container = any(isinstance(ct, Container) and ct.vmid == vmid for ct in env.guests.containers)
    return f"ct-{vmid}" if is_container else f"vm-{vmid}"


def stack_inputs(env: Environment, stack: StackFiles, secrets: Mapping[str, str]) -> dict[str, object]:
    """The ComposeStack inputs for ``stack`` with ``secrets`` (name -> value) as its secret values; the
    content key hashes each secret value, so the key itself reveals none."""
    kind, guest_name = stack_guest(env, stack)
    environment = dict(stack.settings.environment)
    return {
        "node": env.host.node,
        "vmid": stack.guest,
        "project": stack.project,
        "compose": stack.compose,
        "compose_file": stack.compose_file,
        "environment": environment,
        "secrets": dict(secrets),
        "services": list(stack.services),
        "content_key": content_key(
            stack.compose, environment, {k: sha256_text(v) for k, v in sorted(secrets.items())}
        ),
        "wait_timeout_s": stack.settings.wait_timeout_s,
        "guest_kind": kind,
        "guest_name": guest_name,
    }


def vm_instance(env: Environment, vmid: int) -> str:
    """Which VM a stack runs in, beyond its vmid: the hash of its cloud-init user-data, which is what
    replaces the VM (components/guests.py's replacement trigger). A new VM gets the stack deployed again."""
    vm = next(vm for vm in env.guests.vms if vm.vmid == vmid)
    return sha256_text(vm_user_data(env, vm))[:16]
