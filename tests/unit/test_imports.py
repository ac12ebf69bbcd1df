"""The import rule of docs/architecture.md ("Layers and what each folder may import"), enforced.

Every ``import`` in ``phoenix_components/``, ``providers/`` and ``__main__.py`` is read from the source (AST),
late imports inside functions and ``TYPE_CHECKING`` blocks included, so a rule cannot be dodged by importing
inside a function. Two checks: each module imports only the layers its folder may, and the graph of
Phoenix's own modules has no cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("phoenix_components", "providers")

# Folder (module prefix) -> the prefixes its modules may import, besides their own folder. The most specific
# prefix of a module decides. "providers.*" resource folders may not import one another.
CHANNELS = "providers.channels"
PROVIDER_CORE = (CHANNELS, "providers.errors", "providers.base")
RULES: dict[str, tuple[str, ...]] = {
    "__main__": ("phoenix_components.program",),
    "providers": (),
    "providers.errors": (),
    CHANNELS: ("providers.errors",),
    "providers.base": (CHANNELS, "providers.errors"),
    "providers.zfs": PROVIDER_CORE,
    "providers.guests": PROVIDER_CORE,
    "providers.hostfiles": PROVIDER_CORE,
    "providers.nvidia_driver": PROVIDER_CORE,
    "providers.model_server": PROVIDER_CORE,
    # vLLM's resource (kept for existing state) runs the shared model server's steps.
    "providers.vllm_service": (*PROVIDER_CORE, "providers.model_server"),
    "phoenix_components": (),
    "phoenix_components.config": ("providers.errors", CHANNELS),
    "phoenix_components.render": ("phoenix_components.config", "providers"),
    "phoenix_components.components": ("phoenix_components.render", "phoenix_components.config", "providers"),
    "phoenix_components.aws": ("phoenix_components.config", "providers.errors", CHANNELS),
    "phoenix_components.cli": ("phoenix_components", "providers"),
    "phoenix_components.program": (
        "phoenix_components.components",
        "phoenix_components.config",
        "phoenix_components.render",
        "providers.errors",
    ),
}
# Third-party packages only one module may import (the channel or layer that owns that dependency).
OWNED = {
    "paramiko": ("providers.channels.ssh",),
    "proxmoxer": ("providers.channels.pve",),
    "boto3": ("phoenix_components.aws", "phoenix_components.cli.aws"),
    # program.py makes the one proxmoxve provider (only when VMs or downloads exist) the components share.
    "pulumi_proxmoxve": ("phoenix_components.components", "phoenix_components.program"),
    "pulumi_aws": ("phoenix_components.components.cloud",),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources() -> Iterator[tuple[str, Path]]:
    yield "__main__", ROOT / "__main__.py"
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield module_name(path), path


MODULES = dict(sources())


def imported(module: str, path: Path) -> set[str]:
    """Every module ``module`` imports, anywhere in its file (``from x import y`` counts ``x.y`` when that
    is a module, else ``x``)."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in MODULES else base)
    return found


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def rule_of(module: str) -> str:
    matches = [prefix for prefix in RULES if within(module, prefix)]
    return max(matches, key=len)


RESOURCE_FOLDERS = ("providers.zfs", "providers.guests", "providers.hostfiles")
# The one sanctioned import between resources of a folder: a clone is a dataset with an origin, and its
# provider extends the dataset's (same properties, same lifecycle; docstring of providers/zfs/clone.py).
EXTENDS = {("providers.zfs.clone", "providers.zfs.dataset")}


def own_folder(module: str) -> str:
    """What of its own folder a module may import: in a resource folder only the folder's shared
    ``common`` module (one resource's provider never imports another's), elsewhere the whole folder."""
    folder = rule_of(module)
    return f"{folder}.common" if folder in RESOURCE_FOLDERS else folder


def internal(name: str) -> bool:
    return name == "__main__" or any(within(name, p) for p in PACKAGES)


def problems_of(module: str, path: Path) -> list[str]:
    """What in ``path`` (the source of ``module``) breaks the rule."""
    found: list[str] = []
    allowed = (own_folder(module), *RULES[rule_of(module)])
    for target in sorted(imported(module, path)):
        top = target.split(".")[0]
        if top in OWNED and not any(within(module, owner) for owner in OWNED[top]):
            found.append(f"{module} imports {target}, which only {', '.join(OWNED[top])} may")
        if not internal(target) or target == "providers" or (module, target) in EXTENDS:
            continue
        if not any(within(target, prefix) for prefix in allowed):
            found.append(f"{module} imports {target} (its folder {rule_of(module)} may import {allowed})")
    return found


def violations() -> list[str]:
    return [problem for module, path in MODULES.items() for problem in problems_of(module, path)]


def cycles() -> list[list[str]]:
    graph = {m: sorted(t for t in imported(m, p) if t in MODULES and t != m) for m, p in MODULES.items()}
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node)
    return found


def test_every_module_has_a_rule() -> None:
    assert MODULES, "no sources found"
    for module in MODULES:
        assert rule_of(module), module


def test_each_folder_imports_only_what_its_layer_may() -> None:
    problems = violations()
    assert not problems, "\n".join(problems)


def test_phoenix_modules_import_no_cycle() -> None:
    found = cycles()
    assert not found, "\n".join(" -> ".join(c) for c in found)


def test_providers_never_import_phoenix_components() -> None:
    leaks = [
        f"{m} imports {t}"
        for m, p in MODULES.items()
        if within(m, "providers")
        for t in imported(m, p)
        if within(t, "phoenix_components")
    ]
    assert not leaks, leaks


@pytest.mark.parametrize(
    ("module", "source", "bad"),
    [
        ("providers.guests.lxc_guest", "from providers.zfs.common import run_zfs\n", True),
        ("providers.guests.lxc_guest", "def f():\n    from phoenix_components.config import load\n", True),
        ("providers.channels.ssh", "import boto3\n", True),
        ("phoenix_components.config.models", "from phoenix_components.components import guests\n", True),
        ("providers.guests.lxc_guest", "from providers.guests.common import check_linked\n", False),
        ("phoenix_components.cli.plan", "from phoenix_components.components.chain import x\n", False),
    ],
)
def test_the_rule_catches_what_it_should(tmp_path: Path, module: str, source: str, bad: bool) -> None:
    """The checker itself: a late import and a sibling resource folder are caught; allowed ones pass."""
    path = tmp_path / "m.py"
    path.write_text(source)
    assert bool(problems_of(module, path)) is bad, imported(module, path)
