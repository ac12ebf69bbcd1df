"""Every declared field takes effect: changing it changes what the program sends, or it is check-only.

The walk covers every field of the host, layer, container and VM models, nested models included, as the dev
environment uses them (a field the program never reads would validate and then do nothing). For each field
it writes a changed, still valid value into a copy of the config files, builds the program under Pulumi's
mocks, and compares every resource the program registers with the unchanged build: the inputs, the
dependencies (what it waits for), and each dynamic provider's pickled targets (``__provider``: where SSH and
the API connect). What a resource is given, and when, is what reaches PVE or runs on the host, so a field
that changes none of it changes nothing.

A field that by design only feeds validation is listed in :data:`CHECK_ONLY` with the reason, and the test
asserts the opposite for it: changing it changes nothing sent (so a stale entry fails too). A field with one
accepted value (:data:`FIXED`) must refuse every other.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import typing
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pytest
from pydantic import BaseModel

from phoenix_components.config.errors import ConfigError
from phoenix_components.config.load import load_environment
from phoenix_components.config.models import Container, Host, Layer, StackPlacement, Vm
from phoenix_components.config.stack_files import StackSettings
from phoenix_components.program import build
from tests.support.recording import install

ROOT = Path(__file__).resolve().parents[2]
ENV = "dev"
HOST_FILE = f"environments/{ENV}/host.json"
GUESTS_FILE = f"environments/{ENV}/guests.json"

Path_ = tuple[str | int, ...]
DELETE = object()
"""An edit's value that removes the key or list item instead of setting it."""


@dataclass(frozen=True)
class Edit:
    file: str
    path: Path_
    value: Any


def host(*path: str | int, value: Any) -> Edit:
    return Edit(HOST_FILE, path, value)


def guests(*path: str | int, value: Any) -> Edit:
    return Edit(GUESTS_FILE, path, value)


def chain(*path: str | int, value: Any) -> Edit:
    return Edit("chain.json", path, value)


@dataclass(frozen=True)
class Change:
    """A changed value for a field, with the other edits that keep the config valid around it."""

    value: Any
    also: tuple[Edit, ...] = ()


# Optional parts the dev config leaves out, switched on for the whole walk (baseline included) so their
# fields are walked too: the vLLM guest gets its own feature, parameters, a snapshot policy and a port.
ENRICH = (
    guests("containers", 0, "features", value=["docker"]),
    guests("containers", 0, "feature_env", value={"GREETING": "hello"}),
    guests("containers", 0, "feature_files", value=[{"path": "/etc/phoenix/app.conf", "content": "a=1\n"}]),
    guests("containers", 0, "snapshots", value={"prefix": "nightly", "retention": 3, "trigger": "r1"}),
    guests("containers", 0, "ports", value=[{"name": "metrics", "port": 9100}]),
    guests("containers", 0, "startup", value={"order": 4, "up": 30, "down": 10}),
    host("capacity", value={"memory_mib": 262144, "cores": 64, "storage_gib": 4096}),
    host("overcommit", value={"memory": 1.0, "cores": 4.0}),
    guests("vms", 0, "feature_env", value={"STACK": "apps"}),
    guests("vms", 0, "startup", value={"order": 3, "up": 5}),
    # The VM is the one guest no context removes: the container's `after` names it.
    guests("containers", 0, "after", value=[231]),
    guests("containers", 0, "dns", value={"nameserver": ["10.0.10.53"], "searchdomain": "lab.internal"}),
    guests("containers", 0, "tags", value=["vllm", "gpu"]),
    guests("vms", 0, "tags", value=["docker"]),
    guests(
        "vms", 0, "dns", value={"nameserver": ["10.0.10.53", "10.0.10.54"], "searchdomain": "lab.internal"}
    ),
    guests("vms", 0, "networks", value=[{"bridge": "vmbr0", "ip": "10.0.10.131/24", "firewall": False}]),
    guests("vms", 0, "feature_files", value=[{"path": "/etc/phoenix/stack.env", "content": "A=1\n"}]),
)
# An ollama and a llama.cpp guest beside the dev config's vLLM guests (on GPU 1, with vLLM's 0.85 of it), so
# the engines' fields are walked too (see walked()).
ENGINE_GUESTS = len(json.loads((ROOT / "config" / GUESTS_FILE).read_text())["containers"])
ENRICH = (
    *ENRICH,
    *(
        guests(
            "containers",
            ENGINE_GUESTS + i,
            value={
                "vmid": 203 + i,
                "hostname": f"{engine}-walk",
                "layer": engine,
                "network": {"bridge": "vmbr0", "ip": f"10.0.10.{203 + i}/24", "gateway": "10.0.10.1"},
                "gpus": [1],
                engine: config,
            },
        )
        for i, (engine, config) in enumerate(
            [
                ("ollama", {"model": "llama3.2:3b", "gpu_memory_mib": 2048, "environment": {"A": "1"}}),
                (
                    "llamacpp",
                    {
                        "hf_repo": "ggml-org/gemma-3-1b-it-GGUF",
                        "served_model_name": "gemma",
                        "gpu_memory_mib": 2048,
                    },
                ),
            ]
        )
    ),
)
# A Compose stack (config/stacks/qdrant) on the VM, so the placement's and stack.json's fields are walked.
ENRICH = (*ENRICH, guests("stacks", value=[{"name": "qdrant", "guest": 231}]))
STACK_FILE = "stacks/qdrant/stack.json"
STACK_SECRETS = {
    "phoenix:stackSecrets": json.dumps(
        {name: {"QDRANT_API_KEY": "walk", "EXTRA": "walk"} for name in ("qdrant", "qdrant-b")}
    )
}
GPU_MINORS = (host("gpus", 0, "minor", value=0), host("gpus", 1, "minor", value=1))
# Contexts a field only acts in, applied to both sides of its comparison.
PLAIN_HOST = (  # no devN, no bind mounts: what API-token auth and another user are allowed for
    guests("containers", value=[]),
    guests("vms", value=[]),
    guests("stacks", value=[]),  # no guest left to run one
    *(
        chain("layers", layer, "build", "gpus", value=False)
        for layer in ("gpu", "docker", "vllm", "ollama", "llamacpp")
    ),
)
UNMANAGED_DRIVER = (host("nvidia", "manage", value=False), *GPU_MINORS)
VM_WITH_GPU = (guests("containers", 0, value=DELETE), guests("vms", 0, "gpus", value=[0]))
ONE_VLLM = (guests("containers", 1, value=DELETE),)
# The engine guests (ENRICH) off their GPU, for the changes that give a GPU to a VM (exclusively).
NO_ENGINE_GPUS = tuple(
    edit
    for i, engine in enumerate(("ollama", "llamacpp"))
    for edit in (
        guests("containers", ENGINE_GUESTS + i, "gpus", value=[]),
        guests("containers", ENGINE_GUESTS + i, engine, "gpu_memory_mib", value=DELETE),
    )
)
CONTEXT: dict[str, tuple[Edit, ...]] = {
    "Api.auth": PLAIN_HOST,
    "Bridge.cidr": PLAIN_HOST,  # with guests on the bridge, a new subnet needs new guest addresses
    "Api.user": PLAIN_HOST,
    "Api.token_id": PLAIN_HOST,
    "HostGpu.minor": UNMANAGED_DRIVER,
    "HostGpu.pci": (*NO_ENGINE_GPUS, *VM_WITH_GPU),
    "Vm.gpus": (*NO_ENGINE_GPUS, *ONE_VLLM),
    "Container.gpus": ONE_VLLM,
    "ParallelSection.tensor_parallel_size": (*ONE_VLLM, guests("containers", 0, "gpus", value=[0, 1])),
}
NVIDIA_570 = "570.153.02"
# "Model.field" -> changed values to try first (an unset optional, a pattern, a reference elsewhere).
VALUES: dict[str, list[Any]] = {
    "Api.endpoint": ["https://pve2.example.internal:8006"],
    "Api.verify_tls": ["/etc/ssl/certs/proxmox-ca.pem"],
    "Api.auth": [Change("token", (host("api", "token_id", value="root@pam!phoenix"),))],
    "Api.user": ["automation@pve"],
    "Api.token_id": [Change("root@pam!phoenix", (host("api", "auth", value="token"),))],
    "Ssh.host": ["pve2.example.internal"],
    "Ssh.host_key": ["SHA256:" + "B" * 43],
    "Storage.snippets_path": ["/srv/pve/snippets"],
    "HostGpu.minor": [5],
    "Container.retain_on_delete": [True],  # None (the default) follows adopt
    "HostGpu.pci": ["0000:82:00.0"],
    "NvidiaDriver.version": [
        Change(
            NVIDIA_570,
            (
                host(
                    "nvidia",
                    "runfile_url",
                    value="https://download.nvidia.com/XFree86/Linux-x86_64/"
                    f"{NVIDIA_570}/NVIDIA-Linux-x86_64-{NVIDIA_570}.run",
                ),
                chain("layers", "gpu", "versions", "nvidia", value=NVIDIA_570),
            ),
        )
    ],
    "NvidiaDriver.runfile_url": ["https://mirror.example.internal/nvidia/NVIDIA-Linux-x86_64-580.76.05.run"],
    "NvidiaDriver.sha256": ["a" * 64],
    "NvidiaDriver.manage": [Change(False, GPU_MINORS)],
    "NvidiaDriver.kernel_pin": ["6.8.12-4-pve"],
    "Bridge.name": [
        Change(
            "vmbr9",
            (host("bridges", 1, value={"name": "vmbr0", "cidr": "10.0.10.0/24", "vlan_aware": True}),),
        )
    ],
    "Bridge.cidr": [Change("10.0.20.0/24", (host("bridges", 0, "gateway", value="10.0.20.1"),))],
    "Bridge.gateway": ["10.0.10.254"],
    "HostGpu.index": [Change(7, (guests("containers", 0, "gpus", value=[7]),))],
    "FeatureFile.mode": ["0600"],
    "Layer.os_template": [
        Change(
            "debian-13",
            (
                host(
                    "os_templates",
                    "debian-13",
                    value={
                        "file": "debian-13-standard_13.1-2_amd64.tar.zst",
                        "url": "https://download.proxmox.com/images/system/debian-13-standard_13.1-2_amd64.tar.zst",
                    },
                ),
            ),
        )
    ],
    "DatasetCloneMount.type": [
        Change("volume", (guests("containers", 0, "mounts", 0, value={"path": "/models", "size_gib": 10}),))
    ],
    "OsTemplate.file": ["debian-12-standard_12.8-1_amd64.tar.zst"],
    "OsTemplate.sha512": ["a" * 128],
    "CloudImage.file": ["debian-12-generic-amd64.qcow2"],
    "CloudImage.checksum": ["b" * 64],
    "Host.apparmor_profiles": [["phoenix-lxc-confined", "phoenix-lxc-gpu-docker"]],
    "Layer.parent": ["gpu"],
    "Layer.features": [["base_setup", "docker"]],
    "Layer.smoke_test": [["true"]],
    "Container.layer": [Change("docker", (guests("containers", 0, "vllm", value=DELETE),))],
    "Container.description": ["changed description"],
    "Container.disk_gib": [64],
    "Container.gpus": [[0, 1]],
    "Container.features": [["docker", "vllm"]],
    "Container.feature_env": [{"GREETING": "hello again"}],
    "Container.environment": [{"HF_HOME": "/models/hf"}],
    "Container.feature_files": [[{"path": "/etc/phoenix/app.conf", "content": "a=2\n"}]],
    "Container.apparmor_profile": ["phoenix-lxc-nesting", "phoenix-lxc-confined"],
    "Container.ports": [[{"name": "metrics", "port": 9101}]],
    "Network.bridge": [
        Change(
            "vmbr1",
            (host("bridges", 1, value={"name": "vmbr1", "cidr": "10.0.10.0/24", "vlan_aware": True}),),
        )
    ],
    "Network.ip": ["10.0.10.99/24"],
    "Network.gateway": ["10.0.10.254"],
    "Network.mac": ["BC:24:11:00:00:99"],
    "Network.vlan": [42],
    "Network.firewall": [
        Change(
            False,
            (
                guests("containers", 0, "firewall", value={"enabled": False}),
                guests("containers", 0, "ports", value=[]),
            ),
        )
    ],
    "Firewall.enabled": [
        Change(
            False,
            (
                guests("containers", 0, "firewall", "rules", value=[]),
                guests("containers", 0, "ports", value=[]),
            ),
        )
    ],
    "FirewallRule.source": ["10.0.0.0/8"],
    "FirewallRule.dest": ["10.0.10.5"],
    "FirewallRule.comment": ["changed"],
    "FirewallRule.dport": ["8443"],
    "DatasetCloneMount.dataset": [
        Change(
            "scratch",
            (
                guests(
                    "datasets", "scratch", value={"dataset": "rpool/data/phoenix-scratch", "snapshot": "v1"}
                ),
            ),
        )
    ],
    "ModelSection.model": ["Qwen/Qwen2.5-0.5B-Instruct"],
    "ModelSection.revision": ["main"],
    "ModelSection.max_model_len": [2048],
    "CacheSection.quantization": ["awq"],
    "CacheSection.kv_cache_dtype": ["fp8"],
    "ServerSection.host": ["127.0.0.1"],
    "ServerSection.served_model_name": ["renamed-model"],
    "VllmEngine.extra_args": [["--enable-prefix-caching"]],
    "VllmEngine.environment": [{"TORCH_CUDA_ARCH_LIST": "9.0"}],
    # A vLLM guest turned into another engine's (on that engine's layer).
    **{
        f"Container.{engine}": [
            Change(
                config,
                (
                    guests("containers", 0, "vllm", value=DELETE),
                    guests("containers", 0, "layer", value=engine),
                ),
            )
        ]
        for engine, config in (
            ("ollama", {"model": "qwen3:8b", "gpu_memory_mib": 1024}),
            ("llamacpp", {"model_path": "/models/q.gguf", "served_model_name": "q", "gpu_memory_mib": 1024}),
        )
    },
    "OllamaEngine.host": ["127.0.0.1"],
    "OllamaEngine.environment": [{"A": "2"}],
    "LlamaCppEngine.host": ["127.0.0.1"],
    "LlamaCppEngine.model_path": [
        Change(
            "/models/gemma.gguf",
            (guests("containers", ENGINE_GUESTS + 1, "llamacpp", "hf_repo", value=DELETE),),
        )
    ],
    "LlamaCppEngine.ctx_size": [4096],
    "LlamaCppEngine.n_gpu_layers": [99],
    "LlamaCppEngine.parallel": [4],
    "LlamaCppEngine.environment": [{"GGML_CUDA_ENABLE_UNIFIED_MEMORY": "1"}],
    "LlamaCppEngine.extra_args": [["--flash-attn"]],
    "Insecure.unconfined_apparmor": ["a reason that is long enough"],
    "Insecure.writable_host_system_mount": ["a reason that is long enough"],
    "Vm.image": [
        Change(
            "debian-13-cloud",
            (
                host(
                    "cloud_images",
                    "debian-13-cloud",
                    value={
                        "file": "debian-13-genericcloud-amd64.qcow2",
                        "url": "https://cloud.debian.org/images/cloud/trixie/latest/debian-13-genericcloud-amd64.qcow2",
                    },
                ),
            ),
        )
    ],
    "Vm.description": ["changed description"],
    "Vm.feature_env": [{"STACK": "apps-2"}],
    "Vm.feature_files": [[{"path": "/etc/phoenix/stack.env", "content": "A=2\n"}]],
    "Vm.gpus": [[1]],
    "Vm.after": [[202]],
    "Dns.nameserver": [["10.0.10.54"]],
    "Container.networks": [[{"bridge": "vmbr0", "ip": "10.0.10.132/24"}]],
    "Dns.searchdomain": ["other.internal"],
    "Vm.vmid": [
        Change(232, (guests("containers", 0, "after", value=[232]), guests("stacks", 0, "guest", value=232)))
    ],  # the guest after it follows
    "CloudInit.user": ["ops"],
    "Vm.features": [["docker"]],  # still docker: the stack on it needs it
    "StackPlacement.name": ["qdrant-b"],
    "StackPlacement.guest": [201],
    "StackSettings.secrets": [["QDRANT_API_KEY", "EXTRA"]],
    "CloudInit.ssh_authorized_keys": [["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGQ2 ops@example"]],
}

OPT_OUT = "an opt-out with its reason: it lets validation accept a risky value, which is what is sent"
CHECK_ONLY: dict[str, str] = {
    "Bridge.cidr": "describes the bridge's subnet (Phoenix does not manage /etc/network/interfaces): "
    "validation checks each guest's address against it",
    "Bridge.gateway": "validation refuses a guest address equal to the bridge's gateway",
    "Bridge.vlan_aware": "validation refuses a guest VLAN tag on a bridge that is not VLAN-aware",
    "HostGpu.memory_mib": "the budget validation checks the GPU memory of every engine on the GPU against",
    **{
        f"{engine}.gpu_memory_mib": "the engine's GPU memory budget: validation sums it with every other "
        "engine on the GPU against host gpus[].memory_mib (ollama and llama.cpp take no hard cap)"
        for engine in ("OllamaEngine", "LlamaCppEngine")
    },
    **{
        f"Capacity.{field}": "validation sums the guests against it (times overcommit); nothing is sent"
        for field in ("memory_mib", "cores", "storage_gib")
    },
    **{
        f"Overcommit.{field}": "the ratio validation allows past capacity; nothing is sent"
        for field in ("memory", "cores")
    },
    "Insecure.unconfined_apparmor": OPT_OUT,
    "Insecure.writable_host_system_mount": OPT_OUT,
}

# Fields with one accepted value: every change is refused, with the reason.
FIXED: dict[str, str] = {
    "Container.unprivileged": "a linked clone keeps its layer's unprivileged flag; layers are unprivileged",
}


@dataclass(frozen=True)
class Leaf:
    """One field of one model instance of the config, and where it sits in its file."""

    file: str
    path: Path_
    owner: type[BaseModel]
    field: str
    value: Any

    @property
    def key(self) -> str:
        return f"{self.owner.__name__}.{self.field}"

    @property
    def id(self) -> str:
        return f"{self.file.rsplit('/', 1)[-1]}:{'.'.join(str(p) for p in self.path)}"


def leaves(model: BaseModel, file: str, path: Path_, reached: set[str]) -> Iterator[Leaf]:
    """The scalar fields under ``model``; ``reached`` collects every ``Model.field`` walked (nested too)."""
    for name, info in type(model).model_fields.items():
        if name == "schema_ref":
            continue
        reached.add(f"{type(model).__name__}.{name}")
        key = info.alias or name
        value = getattr(model, name)
        here = (*path, key)
        if isinstance(value, BaseModel):
            yield from leaves(value, file, here, reached)
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
            seen: set[type] = set()
            for i, item in enumerate(value):  # one element of each kind (mounts come in three)
                if type(item) not in seen:
                    seen.add(type(item))
                    yield from leaves(item, file, (*here, i), reached)
        elif isinstance(value, dict) and value and isinstance(next(iter(value.values())), BaseModel):
            first = next(iter(value))
            yield from leaves(value[first], file, (*here, first), reached)
        else:
            yield Leaf(file, here, type(model), name, value)


def set_path(document: Any, path: Path_, value: Any) -> None:
    node = document
    for step in path[:-1]:
        if isinstance(step, str) and step not in node:
            node[step] = {}
        node = node[step]
    last = path[-1]
    if value is DELETE:
        del node[last]
    elif isinstance(node, list) and last == len(node):
        node.append(value)
    else:
        node[last] = value


def apply(config: Path, edits: Iterable[Edit]) -> None:
    documents: dict[str, Any] = {}
    for edit in edits:
        if edit.file not in documents:
            documents[edit.file] = json.loads((config / edit.file).read_text())
        set_path(documents[edit.file], edit.path, edit.value)
    for file, document in documents.items():
        (config / file).write_text(json.dumps(document, indent=2))


def enriched(root: Path) -> Path:
    """A copy of the repository's config (and AppArmor profiles) under ``root``, :data:`ENRICH` applied."""
    shutil.copytree(ROOT / "config", root / "config")
    shutil.copytree(ROOT / "apparmor", root / "apparmor")
    shutil.copytree(root / "config/stacks/qdrant", root / "config/stacks/qdrant-b")  # another stack to name
    apply(root / "config", ENRICH)
    return root / "config"


def walked(config: Path) -> tuple[list[Leaf], set[str]]:
    env = load_environment(config, ENV)
    reached: set[str] = set()
    found = list(leaves(env.host, HOST_FILE, (), reached))
    for name in ("base", "vllm"):  # the root layer (os_template) and a child (parent, versions)
        found += leaves(env.chain.layers[name], "chain.json", ("layers", name), reached)
    found += leaves(env.guests.containers[0], GUESTS_FILE, ("containers", 0), reached)
    for i, ct in enumerate(env.guests.containers):  # the other engines' fields (ENRICH's engine guests)
        engine = ct.engine()
        if engine is not None and engine[0] != "vllm":
            found += leaves(engine[1], GUESTS_FILE, ("containers", i, engine[0]), reached)
    found += leaves(env.guests.vms[0], GUESTS_FILE, ("vms", 0), reached)
    found += leaves(env.guests.stacks[0], GUESTS_FILE, ("stacks", 0), reached)
    found += leaves(env.stacks["qdrant"].settings, STACK_FILE, (), reached)
    unique: dict[str, Leaf] = {}
    for leaf in found:  # a field of a shared model (Network, Firewall) once, where it is set if anywhere
        if leaf.key not in unique or (
            unique[leaf.key].value in (None, [], {}) and leaf.value not in (None, [], {})
        ):
            unique[leaf.key] = leaf
    return list(unique.values()), reached


with tempfile.TemporaryDirectory() as _walk_dir:
    LEAVES, REACHED = walked(enriched(Path(_walk_dir)))


def literal_choices(owner: type[BaseModel], field: str) -> list[Any]:
    hint = typing.get_type_hints(owner, include_extras=True)[field]
    choices: list[Any] = []

    def visit(tp: Any) -> None:
        if typing.get_origin(tp) is typing.Literal:
            choices.extend(typing.get_args(tp))
        else:
            for arg in typing.get_args(tp):
                visit(arg)

    visit(hint)
    return choices


def candidates(leaf: Leaf) -> list[Change]:
    """Changed values to try, in order; the first that validates is used."""
    value = leaf.value
    tried: list[Any] = list(VALUES.get(leaf.key, []))
    tried += [c for c in literal_choices(leaf.owner, leaf.field) if c != value]
    if isinstance(value, bool):
        tried.append(not value)
    elif isinstance(value, int):
        tried += [value + 1, value - 1, value * 2]
    elif isinstance(value, float):
        tried += [round(value / 2, 3), round(min(value + 0.05, 1.0), 3)]
    elif isinstance(value, str):
        tried += [value + "x", value + "1"]
    elif isinstance(value, list) and value:
        tried.append(value[:-1])
    elif isinstance(value, dict) and value:
        first = next(iter(value))
        tried.append({**value, first: f"{value[first]}.1"})
    changes = [c if isinstance(c, Change) else Change(c) for c in tried]
    return [c for c in changes if c.value != value]


def sent(config: Path) -> dict[str, dict[str, Any]]:
    """URN -> the inputs of every resource the program registers for ``config`` (providers' targets
    included)."""
    monitor = install(ENV, {"phoenix:environment": ENV, **STACK_SECRETS})
    env = load_environment(config, ENV)

    @pulumi.runtime.test
    def program() -> Any:
        build(env)
        return pulumi.Output.from_input(True)

    program()
    # A replacement trigger is sent too: the engine replaces the resource when it changes. So are the
    # dependencies: what a resource waits for (a guest `after` another) is when it reaches the host.
    return {
        r.urn: {
            **r.inputs,
            "(replacement_trigger)": r.replacement_trigger,
            "(dependencies)": sorted(r.dependencies),
        }
        for r in monitor.registrations
    }


def changed_resources(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> list[str]:
    urns = set(before) | set(after)
    return sorted(u.rsplit("::", 1)[-1] for u in urns if before.get(u) != after.get(u))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return enriched(tmp_path)


def test_the_walk_covers_every_field_of_the_four_models() -> None:
    for model in (Host, Layer, Container, Vm, StackPlacement, StackSettings):
        missing = [f"{model.__name__}.{f}" for f in model.model_fields if f != "schema_ref"]
        missing = [k for k in missing if k not in REACHED]
        assert not missing, f"fields the walk never reached (give ENRICH a use of them): {missing}"
    assert len(LEAVES) > 100, "every scalar field of the nested models is walked, not only the top level"


@pytest.mark.parametrize("leaf", LEAVES, ids=[leaf.id for leaf in LEAVES])
def test_changing_a_field_changes_what_is_sent(leaf: Leaf, config: Path) -> None:
    context = CONTEXT.get(leaf.key, ())
    apply(config, context)
    before = sent(config)
    pristine = {f: (config / f).read_text() for f in (HOST_FILE, GUESTS_FILE, "chain.json", STACK_FILE)}
    problems: list[str] = []
    for change in candidates(leaf):
        for f, text in pristine.items():
            (config / f).write_text(text)
        apply(config, [*change.also, Edit(leaf.file, leaf.path, change.value)])
        try:
            after = sent(config)
        except ConfigError as error:
            problems.append(f"{change.value!r}: {error}")
            continue
        assert leaf.key not in FIXED, f"{leaf.key} = {change.value!r} validates, but it is listed as fixed"
        changed = changed_resources(before, after)
        if leaf.key in CHECK_ONLY:
            assert not changed, f"{leaf.key} is listed check-only, but changing it changes {changed}"
        else:
            assert changed, (
                f"{leaf.key} ({leaf.id}) = {change.value!r} validates and changes nothing the program sends; "
                "make it reach the host, refuse it, or list it in CHECK_ONLY with the reason"
            )
        return
    if leaf.key in FIXED:
        assert problems, f"{leaf.key}: no other value to try"
        return
    pytest.fail(f"no changed value of {leaf.key} validates: {problems}; add one to VALUES")


def test_the_comparison_sees_a_change_and_no_change(config: Path) -> None:
    """The comparison itself: the same config sends the same; one guest's description is a change."""
    before = sent(config)
    assert changed_resources(before, sent(config)) == []
    apply(config, [guests("containers", 0, "description", value="a different description")])
    assert changed_resources(before, sent(config)) == ["ct-201-container"]
