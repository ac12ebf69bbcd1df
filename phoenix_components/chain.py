"""The template chain as Pulumi components: ``phoenix:chain:TemplateChain`` with one
``phoenix:chain:TemplateLayer`` per layer, each a child of the chain and dependent on its parent layer.

A layer's identity is its content key (see :meth:`Environment.layer_key`): the same chain has the same
keys in every environment, which is what promotion compares. The build itself (clone → features → smoke
test → template) arrives with the TemplateLayer dynamic resource; until then a layer registers its key and
lineage so the graph, names and dependencies are already the real ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from phoenix_components.config import Environment


@dataclass(frozen=True)
class TemplateLayerArgs:
    name: str
    key: str
    lineage: list[str]
    features: list[str]
    versions: dict[str, str]


class TemplateLayer(pulumi.ComponentResource):
    key: pulumi.Output[str]

    def __init__(
        self, name: str, args: TemplateLayerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("phoenix:chain:TemplateLayer", name, None, opts)
        self.layer = args.name
        self.key = pulumi.Output.from_input(args.key)
        self.register_outputs(
            {"key": self.key, "lineage": args.lineage, "features": args.features, "versions": args.versions}
        )


@dataclass(frozen=True)
class TemplateChainArgs:
    environment: Environment


class TemplateChain(pulumi.ComponentResource):
    """Every layer of the chain, parents first; ``layers[name]`` is the component for that layer."""

    def __init__(
        self, name: str, args: TemplateChainArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("phoenix:chain:TemplateChain", name, None, opts)
        env = args.environment
        self.layers: dict[str, TemplateLayer] = {}
        for layer_name in env.layer_order():
            layer = env.chain.layers[layer_name]
            depends = [self.layers[layer.parent]] if layer.parent is not None else []
            self.layers[layer_name] = TemplateLayer(
                f"layer-{layer_name}",
                TemplateLayerArgs(
                    name=layer_name,
                    key=env.layer_key(layer_name),
                    lineage=env.layer_lineage(layer_name),
                    features=list(layer.features),
                    versions=dict(layer.versions),
                ),
                pulumi.ResourceOptions(parent=self, depends_on=depends),
            )
        self.keys = {name: layer.key for name, layer in self.layers.items()}
        self.register_outputs({"keys": self.keys})
