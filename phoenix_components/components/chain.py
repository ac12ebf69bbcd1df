"""The template chain as Pulumi components: ``phoenix:chain:TemplateChain`` with one
``phoenix:chain:TemplateLayer`` per layer, each building a real PVE template (the TemplateLayer dynamic
resource) from its parent's template.

A layer's identity is its content key (:meth:`Environment.layer_key`): the same chain has the same keys
in every environment, which is what promotion compares. A child layer takes its parent's vmid as an
input, so Pulumi orders the builds and replaces every layer above a changed one. The resource's inputs
come from :mod:`phoenix_components.render.chain` (``phoenix plan`` reads the same).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from phoenix_components.components.outputs import with_values
from phoenix_components.components.targets import api_target, ssh_target
from phoenix_components.config.load import Environment
from phoenix_components.render.chain import build_devices, layer_inputs
from phoenix_components.render.lxc import GpuMinors
from providers.guests.template_layer import TemplateLayer as LayerTemplate
from providers.guests.template_layer import TemplateLayerResourceArgs


@dataclass(frozen=True)
class TemplateLayerArgs:
    environment: Environment
    name: str
    parent: ChainLayer | None = None
    depends_on: tuple[pulumi.Resource, ...] = ()  # host prerequisites: OS template, driver
    gpu_minors: pulumi.Input[GpuMinors] | None = None  # HostBaseline.gpu_minors, for builds with GPUs


class ChainLayer(pulumi.ComponentResource):
    """What the chain, its children and the guests read of a layer, built here or promoted: its name,
    content key, template vmid, and whether its smoke test passed."""

    layer: str
    key: pulumi.Output[str]
    vmid: pulumi.Output[int]
    verified: pulumi.Output[bool]

    def __init__(
        self, kind: str, name: str, args: TemplateLayerArgs, opts: pulumi.ResourceOptions | None
    ) -> None:
        super().__init__(f"phoenix:chain:{kind}", name, None, opts)
        self.layer = args.name


class TemplateLayer(ChainLayer):
    """A layer built on this host: the TemplateLayer resource, a linked clone of its parent's template."""

    def __init__(
        self, name: str, args: TemplateLayerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("TemplateLayer", name, args, opts)
        env = args.environment
        inputs = layer_inputs(env, args.name)
        if env.chain.layers[args.name].build.gpus:
            inputs["build_devices"] = with_values(
                [args.gpu_minors or {}], lambda got: build_devices(env, args.name, got[0])
            )
        if args.parent is not None:
            inputs["parent_vmid"] = args.parent.vmid
        self.template = LayerTemplate(
            f"{name}-template",
            TemplateLayerResourceArgs(**inputs),  # type: ignore[arg-type]  # layer_inputs' keys are its fields
            ssh_target=ssh_target(env.host),
            api_target=api_target(env.host),
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on)),
        )
        self.key = pulumi.Output.from_input(env.layer_key(args.name))
        self.vmid = self.template.vmid
        self.verified = self.template.verified
        self.register_outputs(
            {
                "key": self.key,
                "vmid": self.vmid,
                "lineage": env.layer_lineage(args.name),
                "verified": self.template.verified,
                "dataset": self.template.dataset,
                "origin": self.template.origin,
            }
        )


class PromotedLayer(ChainLayer):
    """A layer verified in the environment below, on this same node: its template is reused, not rebuilt."""

    def __init__(
        self, name: str, args: TemplateLayerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("PromotedLayer", name, args, opts)
        env = args.environment
        assert env.promotion is not None  # the chain only makes promoted layers from a lock
        promoted = env.promotion.layers[args.name]
        self.key = pulumi.Output.from_input(promoted.key)
        self.vmid = pulumi.Output.from_input(promoted.vmid)
        self.verified = pulumi.Output.from_input(promoted.verified)
        self.register_outputs(
            {
                "key": self.key,
                "vmid": self.vmid,
                "verified": self.verified,
                "promoted_from": env.promotion.source,
            }
        )


@dataclass(frozen=True)
class TemplateChainArgs:
    environment: Environment
    os_templates: dict[str, pulumi.Resource] | None = None  # key -> the download of that OS template
    driver: pulumi.Resource | None = None  # the host NVIDIA driver, needed by layers built with GPUs
    gpu_minors: pulumi.Input[GpuMinors] | None = None  # HostBaseline.gpu_minors


class TemplateChain(pulumi.ComponentResource):
    """The layers the environment builds (``Environment.built_layers``: those its guests run on, and their
    ancestors), parents first; ``layers[name]`` is the component for that layer."""

    def __init__(
        self, name: str, args: TemplateChainArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("phoenix:chain:TemplateChain", name, None, opts)
        env = args.environment
        self.layers: dict[str, ChainLayer] = {}
        reuse = env.reuses_promoted_templates()
        for layer_name in env.built_layers():
            layer = env.chain.layers[layer_name]
            if reuse:
                self.layers[layer_name] = PromotedLayer(
                    f"layer-{layer_name}",
                    TemplateLayerArgs(environment=env, name=layer_name),
                    pulumi.ResourceOptions(parent=self),
                )
                continue
            needs: list[pulumi.Resource] = []
            if layer.os_template is not None and args.os_templates and layer.os_template in args.os_templates:
                needs.append(args.os_templates[layer.os_template])
            if layer.build.gpus and args.driver is not None:
                needs.append(args.driver)
            self.layers[layer_name] = TemplateLayer(
                f"layer-{layer_name}",
                TemplateLayerArgs(
                    environment=env,
                    name=layer_name,
                    parent=self.layers[layer.parent] if layer.parent is not None else None,
                    depends_on=tuple(needs),
                    gpu_minors=args.gpu_minors,
                ),
                pulumi.ResourceOptions(parent=self),
            )
        self.keys = {name: layer.key for name, layer in self.layers.items()}
        self.vmids = {name: layer.vmid for name, layer in self.layers.items()}
        self.verified = {name: layer.verified for name, layer in self.layers.items()}
        self.register_outputs({"keys": self.keys, "vmids": self.vmids})
