"""Docker Compose stacks as Pulumi components: ``phoenix:stacks:ComposeStack``, one per placed stack.

Named from the stack's name (``stack-qdrant``), never from list position. Each is a ComposeStack
resource (``providers/guests/compose_stack.py``) made after the whole component of the guest it runs in
(the container, its features, a vLLM health gate; or the VM), so Docker is there before ``up``.

Secret values come from the stack's Pulumi config: ``phoenix:stackSecrets`` is one object,
``{"<stack>": {"<NAME>": "<value>"}}``, set with
``pulumi config set --secret --path 'phoenix:stackSecrets.<stack>.<NAME>' <value>``. They are read once,
before any resource is registered, so a missing one stops the program naming the key (never a value), and
go on only as Pulumi secrets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi

from phoenix_components.components.targets import ssh_target
from phoenix_components.config.load import Environment
from phoenix_components.config.stack_files import SETTINGS_FILE, STACKS_DIR, StackFiles
from phoenix_components.render.stacks import stack_inputs
from providers.guests.compose_stack import ComposeStack as ComposeStackResource
from providers.guests.compose_stack import ComposeStackArgs

SECRETS_KEY = "stackSecrets"


def stack_secrets(env: Environment, config: Mapping[str, Any] | None) -> dict[str, dict[str, str]]:
    """Each stack's declared secrets from the ``phoenix:stackSecrets`` object (``config``); a
    :class:`pulumi.RunError` naming every missing key. Undeclared entries are ignored (an old value)."""
    given = config if isinstance(config, Mapping) else {}
    found: dict[str, dict[str, str]] = {}
    missing: list[str] = []
    for name, stack in env.stacks.items():
        values = given.get(name)
        values = values if isinstance(values, Mapping) else {}
        found[name] = {}
        for secret in stack.settings.secrets:
            value = values.get(secret)
            if not isinstance(value, str):
                missing.append(f"phoenix:{SECRETS_KEY}.{name}.{secret}")
            else:
                found[name][secret] = value
    if missing:
        raise pulumi.RunError(
            f"secrets declared in {STACKS_DIR}/<stack>/{SETTINGS_FILE} are not set in the stack's config: "
            + ", ".join(missing)
            + " (set each with `pulumi config set --secret --path '<key>' <value>`)"
        )
    return found


def read_stack_secrets(env: Environment) -> dict[str, dict[str, str]]:
    """:func:`stack_secrets` of this Pulumi stack's config. Read as a plain object on purpose: the program
    must know which keys are there before it registers anything; every value is wrapped as a secret by
    :class:`StackComponent` and never printed."""
    if not env.stacks:
        return {}
    return stack_secrets(env, pulumi.Config("phoenix").get_object(SECRETS_KEY))


@dataclass(frozen=True)
class StackComponentArgs:
    environment: Environment
    stack: StackFiles
    guest: pulumi.Resource
    """The component of the guest it runs in: the stack waits for all of it."""
    secrets: Mapping[str, str]
    """The stack's secret values (from :func:`read_stack_secrets`); sent as a Pulumi secret."""
    guest_instance: pulumi.Input[str] | None = None
    """A container's ``LxcGuest.instance``, a VM's user-data hash (``render.stacks.vm_instance``): a
    replaced guest gets the stack deployed again."""


class StackComponent(pulumi.ComponentResource):
    """One Compose stack in one guest."""

    def __init__(
        self, name: str, args: StackComponentArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("phoenix:stacks:ComposeStack", name, None, opts)
        env, stack = args.environment, args.stack
        inputs = stack_inputs(env, stack, args.secrets)
        self.stack = ComposeStackResource(
            f"{name}-compose",
            ComposeStackArgs(
                node=str(inputs["node"]),
                vmid=stack.guest,
                project=stack.project,
                compose=stack.compose,
                compose_file=stack.compose_file,
                environment=dict(stack.settings.environment),
                secrets=pulumi.Output.secret(dict(args.secrets)),
                services=list(stack.services),
                content_key=str(inputs["content_key"]),
                wait_timeout_s=stack.settings.wait_timeout_s,
                guest_kind="lxc" if inputs["guest_kind"] == "lxc" else "qemu",
                guest_instance=args.guest_instance,
                guest_name=str(inputs["guest_name"]),
            ),
            ssh_target=ssh_target(env.host),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[args.guest]),
        )
        self.register_outputs(
            {
                "project": stack.project,
                "guest": stack.guest,
                "content_key": inputs["content_key"],
                "services": list(stack.services),
                "state": self.stack.state,
            }
        )
