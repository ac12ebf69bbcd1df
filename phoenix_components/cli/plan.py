"""What ``pulumi up`` would do to a host, resource by resource, without doing it: ``phoenix plan``/``graph``.

The plan is derived from the validated :class:`~phoenix_components.config.load.Environment` alone — no
credentials, no network. Each :class:`PlannedResource` has the stable name the Pulumi program gives it
(from vmid, layer or profile name, never list order), its dependencies, and the API calls (``api``) and
host commands (``ssh``) its provider makes on a first ``up``.

For Phoenix's own providers those steps are not written here: each resource's inputs are built with the
same render functions the components use, and the provider's own step function (``plan_steps``,
``create_steps``, ...) computes the steps its ``create`` executes (:attr:`PlannedResource.calls`). What is
known only at deploy time is a placeholder: a layer's vmid (allocated from the layer range at build time)
is ``$vmid(<layer>)``, a data clone's mountpoint (read back from ZFS) ``$mountpoint(<dataset>)``, a GPU's
device minor (read from a managed driver) ``<minor of GPU N>``. The pulumi-proxmoxve resources (downloads,
VMs and their templates) are not Phoenix's providers: their lines summarise what that provider asks PVE.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from phoenix_components.config.load import Environment, gpu_accounting
from phoenix_components.config.models import Container, DatasetCloneMount, Vm
from phoenix_components.config.stack_files import StackFiles
from phoenix_components.render.baseline import dataset_properties, driver_inputs, passthrough_addresses
from phoenix_components.render.chain import layer_inputs
from phoenix_components.render.engines import server_inputs
from phoenix_components.render.features import container_feature_inputs
from phoenix_components.render.firewall import firewall_inputs
from phoenix_components.render.lxc import (
    GpuMinors,
    clone_dataset,
    container_params,
    declared_minors,
    raw_lines,
)
from phoenix_components.render.stacks import guest_resource_name, stack_inputs
from phoenix_components.render.vllm import UNIT_PATH, render_unit
from phoenix_components.render.vm import cloud_image_template_vmid, vm_user_data
from providers.channels.steps import PlannedStep, plan_lines
from providers.guests import firewall, lxc_guest, snapshot, template_layer
from providers.guests.compose_stack import ComposeStackInputs
from providers.guests.compose_stack import deploy_steps as compose_steps
from providers.guests.features import GuestFeaturesInputs, feature_steps
from providers.hostfiles import apparmor, host_file
from providers.model_server import ModelServerInputs
from providers.model_server import deploy_steps as server_deploy_steps
from providers.nvidia_driver import NvidiaHostDriverInputs, NvidiaHostPaths
from providers.nvidia_driver import plan_steps as driver_steps
from providers.vllm_service import VllmServiceInputs, deploy_steps
from providers.zfs import clone, dataset
from providers.zfs import snapshot as zfs_snapshot

LAYER_VMID = "$vmid({})"
MOUNTPOINT = "$mountpoint({})"
TEMPLATE_VMID = 0  # LxcGuestInputs wants an int; the plan's steps name the layer's vmid as LAYER_VMID
SECRET = "<secret>"  # a stack secret's value: the plan reads no Pulumi config


@dataclass(frozen=True)
class Step:
    channel: str  # "api" or "ssh"
    action: str

    def __str__(self) -> str:
        return f"{self.channel:3}  {self.action}"


@dataclass(frozen=True)
class PlannedResource:
    name: str
    kind: str
    depends_on: tuple[str, ...] = ()
    steps: tuple[Step, ...] = ()
    group: str = "host"
    label: str = ""
    calls: tuple[PlannedStep, ...] = ()
    """The provider's own steps (ApiCall, HostCommand, ...) that ``steps`` renders; empty for a resource
    Phoenix's providers do not make (a pulumi-proxmoxve download or VM, a promoted layer)."""
    after: tuple[str, ...] = ()
    """The guests (their main resources) a guest starts after (``after``): the program waits for each
    one's whole component. Kept apart from ``depends_on``, which lists what is planned before it."""

    @property
    def title(self) -> str:
        return f"{self.kind} {self.name}"


@dataclass
class _Builder:
    env: Environment
    resources: list[PlannedResource] = field(default_factory=list)

    def add(
        self, name: str, kind: str, depends_on: list[str], steps: list[Step], group: str, label: str = ""
    ) -> str:
        self.resources.append(
            PlannedResource(name, kind, tuple(depends_on), tuple(steps), group, label or name)
        )
        return name

    def provider(
        self,
        name: str,
        kind: str,
        depends_on: list[str],
        calls: Sequence[PlannedStep],
        group: str,
        label: str = "",
    ) -> str:
        """A resource of one of Phoenix's providers: ``calls`` are its own steps, rendered."""
        steps = tuple(Step(channel, line) for channel, line in plan_lines(calls, compact=True))
        self.resources.append(
            PlannedResource(name, kind, tuple(depends_on), steps, group, label or name, tuple(calls))
        )
        return name


def _api(method: str, path: str, **params: object) -> Step:
    """A summary line of a pulumi-proxmoxve resource (not a Phoenix provider: no steps of its own)."""
    args = " ".join(f"{k}={v}" for k, v in params.items() if v is not None)
    return Step("api", f"{method} /{path}" + (f" {args}" if args else ""))


def _download(b: _Builder, name: str, content: str, file: str, url: str | None) -> str:
    """A ``download.File`` (components.guests.host_download): PVE fetches ``url`` to template storage."""
    host = b.env.host
    path = f"nodes/{host.node}/storage/{host.storage.templates}/download-url"
    steps = [_api("POST", path, content=content, filename=file, url=url)]
    return b.add(name, "download.File", [], steps, "host", file)


def build_plan(env: Environment) -> list[PlannedResource]:
    """Every resource the program declares for ``env``, parents before the resources that need them."""
    b = _Builder(env)
    host, node = env.host, env.host.node

    profiles: dict[str, str] = {}
    for name, text in env.apparmor_profiles.items():
        profile = apparmor.AppArmorProfileInputs.from_props({"name": name, "content": text})
        profiles[name] = b.provider(
            f"apparmor-{name}",
            "AppArmorProfile",
            [],
            apparmor.install_steps(profile, host.apparmor_load),
            "host",
        )

    driver = None
    if host.nvidia is not None and host.nvidia.manage:  # the baseline makes the resource only then
        nv = host.nvidia
        passthrough = passthrough_addresses(host, env.guests)  # as the baseline passes them
        inputs = NvidiaHostDriverInputs.from_props({**driver_inputs(nv, passthrough), "host": host.ssh.host})
        driver = b.provider(
            f"nvidia-driver-{node}",
            "NvidiaHostDriver",
            [],
            driver_steps(inputs, NvidiaHostPaths()),
            "host",
            f"NVIDIA {nv.version}",
        )

    templates: dict[str, str] = {}
    for key, tmpl in host.os_templates.items():
        if tmpl.url is not None:  # the program downloads only what has a URL; the rest is on the host
            templates[key] = _download(b, f"os-template-{key}", "vztmpl", tmpl.file, tmpl.url)

    datasets: dict[str, str] = {}
    for key, data in env.guests.datasets.items():
        made = dataset.plan_inputs(
            {"name": data.dataset, "properties": dataset_properties(data), "adopt": data.adopt}
        )
        ds = b.provider(f"dataset-{key}", "ZfsDataset", [], dataset.create_steps(made), "host")
        snap = zfs_snapshot.plan_inputs({"dataset": data.dataset, "snapshot": data.snapshot})
        datasets[key] = b.provider(
            f"dataset-{key}-{data.snapshot}",
            "ZfsSnapshot",
            [ds],
            zfs_snapshot.create_steps(snap),
            "host",
            f"{data.dataset}@{data.snapshot}",
        )

    layers = _plan_layers(b, env, templates, driver)
    for ct in env.guests.containers:
        _plan_container(b, env, ct, layers, profiles, datasets, driver)
    images: dict[str, str] = {}
    for vm in env.guests.vms:
        if vm.image not in images:
            image = host.cloud_images[vm.image]
            download = _download(b, f"cloud-image-{vm.image}-download", "import", image.file, image.url)
            template_vmid = cloud_image_template_vmid(env, vm.image)
            images[vm.image] = b.add(
                f"cloud-image-{vm.image}-template",
                "VmLegacy",
                [download],
                [
                    _api(
                        "POST",
                        f"nodes/{node}/qemu",
                        vmid=template_vmid,
                        name=f"template-{vm.image}",
                        scsi0=f"{host.storage.vm_disks}:0,import-from={host.storage.templates}:import/{image.file}",
                        agent=1,
                    ),
                    _api("POST", f"nodes/{node}/qemu/{template_vmid}/template"),
                ],
                "host",
                f"VM template {template_vmid} from {image.file}",
            )
        _plan_vm(b, env, vm, images[vm.image])
    for stack in env.stacks.values():
        _plan_stack(b, env, stack)
    return _with_after(env, b.resources)


def _with_after(env: Environment, resources: list[PlannedResource]) -> list[PlannedResource]:
    """Each guest's ``after`` edges on its main resource (``ct-201``, ``vm-231``)."""
    guests: list[Container | Vm] = [*env.guests.containers, *env.guests.vms]
    after = {
        guest_resource_name(env, g.vmid): tuple(guest_resource_name(env, v) for v in g.after)
        for g in guests
        if g.after
    }
    return [replace(r, after=after[r.name]) if r.name in after else r for r in resources]


def _plan_stack(b: _Builder, env: Environment, stack: StackFiles) -> None:
    """ComposeStack's own steps (``providers.guests.compose_stack.deploy_steps``), after the guest it runs
    in (the program waits for that guest's whole component). Secret values are placeholders: the plan
    reads no Pulumi config, and the env file's content is never shown anyway."""
    placeholders = dict.fromkeys(stack.settings.secrets, SECRET)
    inputs = ComposeStackInputs.from_props(stack_inputs(env, stack, placeholders))
    guest = guest_resource_name(env, stack.guest)
    owned = [r.name for r in b.resources if r.name.startswith(f"{guest}-") or r.name == f"vllm-{stack.guest}"]
    label = f"{stack.name}: {', '.join(stack.services)} in {inputs.guest}"
    b.provider(f"stack-{stack.name}", "ComposeStack", [guest, *owned], compose_steps(inputs), "stacks", label)


def _plan_layers(
    b: _Builder, env: Environment, templates: dict[str, str], driver: str | None
) -> dict[str, str]:
    """Each layer's TemplateLayer steps (``template_layer.plan_steps``) from the chain's own inputs."""
    layers: dict[str, str] = {}
    if env.reuses_promoted_templates():
        assert env.promotion is not None
        source = env.promotion.source
        for name in env.built_layers():
            promoted = env.promotion.layers[name]
            label = f"{name} ({promoted.key}) = template {promoted.vmid}, verified in {source}"
            layers[name] = b.add(
                f"layer-{name}",
                "PromotedLayer",
                [],
                [Step("api", f"(nothing: template {promoted.vmid} verified in {source} is reused)")],
                "chain",
                label,
            )
        return layers
    for name in env.built_layers():
        layer = env.chain.layers[name]
        deps: list[str] = []
        if layer.os_template is not None and layer.os_template in templates:
            deps.append(templates[layer.os_template])
        if layer.parent is not None:
            deps.append(layers[layer.parent])
        if layer.build.gpus and driver is not None:
            deps.append(driver)
        inputs = template_layer.TemplateLayerInputs.from_props(layer_inputs(env, name, _gpu_minors(env)))
        parent = LAYER_VMID.format(layer.parent) if layer.parent is not None else None
        steps = template_layer.plan_steps(inputs, vmid=LAYER_VMID.format(name), parent=parent)
        label = f"{name} ({env.layer_key(name)})"
        layers[name] = b.provider(f"layer-{name}", "TemplateLayer", deps, steps, "chain", label)
    return layers


def _plan_firewall(
    b: _Builder, env: Environment, owner: str, kind: str, guest: Container | Vm, group: str
) -> None:
    """GuestFirewall's own steps (providers.guests.firewall.plan_steps), computed from the same inputs."""
    if not guest.firewall.enabled:
        return
    props = firewall_inputs(env.host.node, kind, guest.vmid, guest.firewall, ports=guest.ports)
    inputs = firewall.GuestFirewallInputs.from_props(props)
    b.provider(f"{owner}-firewall", "GuestFirewall", [owner], firewall.plan_steps(inputs), group)


def _gpu_minors(env: Environment) -> GpuMinors:
    """What the devN lines will say: a managed driver's minors are read at deploy time, so the plan names
    them; an unmanaged driver's are the ones host.json declares."""
    nvidia = env.host.nvidia
    if nvidia is not None and nvidia.manage:
        return {str(g.index): f"<minor of GPU {g.index}>" for g in env.host.gpus}
    return declared_minors(env.host.gpus)


def container_inputs(env: Environment, ct: Container, mountpoints: dict[str, str]) -> dict[str, object]:
    """The LxcGuest resource's inputs as ``components/guests.py`` passes them (from the same render
    functions), with :data:`TEMPLATE_VMID` for the layer's vmid, known at deploy time."""
    host = env.host
    params = {k: v for k, v in container_params(ct, mountpoints, _gpu_minors(env)).items() if k != "hostname"}
    return {
        "node": host.node,
        "vmid": ct.vmid,
        "hostname": ct.hostname,
        "template_vmid": TEMPLATE_VMID if ct.layer is not None else None,
        "params": params,
        "raw_lines": raw_lines(ct),
        "storage": host.storage.rootfs,
        "pool": host.storage.zfs_pool,
        "disk_gib": ct.disk_gib,
        "start": True,
        "snapshot_before_update": ct.snapshot_before_update,
        "snapshot_retention": ct.snapshot_retention,
        "adopt": ct.adopt,
        "retain_on_delete": ct.retained,
    }


def _plan_container(
    b: _Builder,
    env: Environment,
    ct: Container,
    layers: dict[str, str],
    profiles: dict[str, str],
    datasets: dict[str, str],
    driver: str | None,
) -> None:
    name = f"ct-{ct.vmid}"
    deps = [layers[ct.layer]] if ct.layer is not None else []
    if ct.apparmor_profile in profiles:
        deps.append(profiles[ct.apparmor_profile])
    if ct.gpus and driver is not None:
        deps.append(driver)
    clones: list[str] = []
    mountpoints: dict[str, str] = {}
    for mount in ct.mounts:
        if isinstance(mount, DatasetCloneMount) and mount.dataset not in mountpoints:
            data = env.guests.datasets[mount.dataset]
            target = clone_dataset(data.dataset, ct.vmid)
            mountpoints[mount.dataset] = MOUNTPOINT.format(target)  # the clone reads it back from ZFS
            made = clone.plan_inputs({"origin": f"{data.dataset}@{data.snapshot}", "name": target})
            clones.append(
                b.provider(
                    f"{name}-{mount.dataset}",
                    "ZfsClone",
                    [datasets[mount.dataset]],
                    clone.create_steps(made),
                    "guests",
                )
            )
    inputs = lxc_guest.LxcGuestInputs.from_props(container_inputs(env, ct, mountpoints))
    steps = lxc_guest.plan_steps(inputs, template=LAYER_VMID.format(ct.layer) if ct.layer else None)
    b.provider(name, "LxcGuest", deps + clones, steps, "guests", f"{ct.hostname} ({ct.vmid})")
    _plan_firewall(b, env, name, "lxc", ct, "guests")
    features = _plan_features(b, env, ct, name)
    if ct.snapshots is not None:
        policy = ct.snapshots
        taken = snapshot.GuestSnapshotInputs.from_props(
            {
                "node": env.host.node,
                "vmid": ct.vmid,
                "prefix": policy.prefix,
                "retention": policy.retention,
                "trigger": policy.trigger,
            }
        )
        b.provider(
            f"{name}-snapshots",
            "GuestSnapshot",
            [name],
            snapshot.plan_steps(taken),
            "guests",
            f"{policy.prefix}-* x{policy.retention}",
        )
    engine = ct.engine()
    if engine is not None and engine[0] != "vllm":
        server = ModelServerInputs.from_props(server_inputs(env, ct))
        b.provider(
            f"{engine[0]}-{ct.vmid}",
            "ModelServer",
            [name, *features],
            server_deploy_steps(server),
            "guests",
            server.model,
        )
    if ct.vllm is not None:
        service = VllmServiceInputs.from_props(service_inputs(env, ct))
        b.provider(
            f"vllm-{ct.vmid}",
            "VllmService",
            [name, *features],
            deploy_steps(service),
            "guests",
            ct.vllm.server.served_model_name,
        )


def service_inputs(env: Environment, ct: Container) -> dict[str, object]:
    """The VllmService resource's inputs as ``components/guests.py`` passes them, without the guest's
    ``instance`` (known once the guest exists; it only tells a replaced guest from the old one)."""
    assert ct.vllm is not None
    server = ct.vllm.server
    return {
        "node": env.host.node,
        "vmid": ct.vmid,
        "unit": render_unit(ct.vllm),
        "unit_path": UNIT_PATH,
        "served_model_name": server.served_model_name,
        "port": server.port,
        "startup_timeout_s": ct.vllm.startup_timeout_s,
        "guest_name": ct.hostname,
    }


def _plan_features(b: _Builder, env: Environment, ct: Container, owner: str) -> list[str]:
    """GuestFeatures' own steps (``providers.guests.features.feature_steps``) from the program's inputs."""
    if not ct.features:
        return []
    inputs = GuestFeaturesInputs.from_props(container_feature_inputs(env, ct))
    label = f"{', '.join(ct.features)} in {ct.hostname} ({ct.vmid})"
    return [b.provider(f"{owner}-features", "GuestFeatures", [owner], feature_steps(inputs), "guests", label)]


def _plan_vm(b: _Builder, env: Environment, vm: Vm, image: str) -> None:
    node, storage = env.host.node, env.host.storage
    name = f"vm-{vm.vmid}"
    path = f"{storage.snippets_path}/phoenix-{vm.vmid}-user-data.yaml"
    user_data = host_file.HostFileInputs.from_props(
        {"path": path, "content": vm_user_data(env, vm), "mode": 0o640}
    )
    snippet = b.provider(
        f"{name}-cloud-init",
        "HostFile",
        [],
        host_file.create_steps(user_data),
        "guests",
        f"cloud-init running {', '.join(vm.features) or 'no features'}",
    )
    net = vm.network
    nic = ["virtio", f"bridge={net.bridge}"] + ([f"macaddr={net.mac.upper()}"] if net.mac else [])
    nic += ([f"tag={net.vlan}"] if net.vlan else []) + (["firewall=1"] if net.firewall else [])
    config: dict[str, object] = {
        "cores": vm.cores,
        "memory": vm.memory_mib,
        "net0": ",".join(nic),
        "ipconfig0": f"ip={net.ip}" + (f",gw={net.gateway}" if net.gateway else ""),
        "agent": 1,
        "onboot": int(vm.start_on_boot),
        "cicustom": f"user={storage.snippets}:snippets/phoenix-{vm.vmid}-user-data.yaml",
    }
    pci = {g.index: g.pci for g in env.host.gpus}
    for i, gpu in enumerate(vm.gpus):
        config[f"hostpci{i}"] = f"{pci[gpu]},pcie=1"
    template_vmid = cloud_image_template_vmid(env, vm.image)
    b.add(
        name,
        "VmLegacy",
        [image, snippet],
        [
            _api("POST", f"nodes/{node}/qemu/{template_vmid}/clone", newid=vm.vmid, name=vm.name, full=0),
            _api("PUT", f"nodes/{node}/qemu/{vm.vmid}/config", **config),
            _api("PUT", f"nodes/{node}/qemu/{vm.vmid}/resize", disk="scsi0", size=f"{vm.disk_gib}G"),
            _api("POST", f"nodes/{node}/qemu/{vm.vmid}/status/start"),
        ],
        "guests",
        f"{vm.name} ({vm.vmid})",
    )
    _plan_firewall(b, env, name, "qemu", vm, "guests")


def render_plan(env: Environment, resources: list[PlannedResource]) -> str:
    lines = [
        f"Plan for environment {env.name!r} on node {env.host.node} ({len(resources)} resources, "
        "in dependency order; nothing is executed)",
        "",
    ]
    for i, res in enumerate(resources, 1):
        after = f"  (after {', '.join(res.depends_on)})" if res.depends_on else ""
        lines.append(f"{i:3}. {res.title}{after}")
        lines += [f"       {step}" for step in res.steps]
    return "\n".join(lines + gpu_memory_lines(env)) + "\n"


def gpu_memory_lines(env: Environment) -> list[str]:
    """The model servers' GPU memory budgets per GPU, as validation counts them (``gpu_accounting``)."""
    shares = gpu_accounting(env.host, env.guests)
    if not shares:
        return []
    memory = {g.index: g.memory_mib for g in env.host.gpus}
    labels = {f"containers[{i}]": f"CT {ct.vmid} {ct.hostname}" for i, ct in enumerate(env.guests.containers)}
    lines = ["", "GPU memory (each model server's budget, counted per GPU against host gpus[].memory_mib):"]
    for gpu, users in shares.items():
        total = sum(u.mib for u in users)
        lines.append(f"  GPU {gpu}: {total:.0f} of {memory.get(gpu, 0)} MiB")
        lines += [f"       {labels[u.guest]} {u.engine} {u.given}" for u in users]
    return lines


def _node_id(name: str) -> str:
    return name.replace("-", "_").replace(".", "_")


GROUPS = {"host": "host", "chain": "template chain", "guests": "guests", "stacks": "Compose stacks"}


def _groups(resources: list[PlannedResource]) -> Iterator[tuple[str, list[PlannedResource]]]:
    """Each group of the graph that has members, in GROUPS order, with them."""
    for group in GROUPS:
        members = [r for r in resources if r.group == group]
        if members:
            yield group, members


def _edges(resources: list[PlannedResource]) -> list[tuple[str, str]]:
    return [(dependency, r.name) for r in resources for dependency in r.depends_on]


def _render_graph(
    resources: list[PlannedResource],
    *,
    head: list[str],
    group: Callable[[str], str],
    node: Callable[[PlannedResource], str],
    end: str,
    edge: Callable[[str, str], str],
    after: Callable[[str, str], str],
    tail: str = "",
) -> str:
    """The one graph walk (groups in GROUPS order, then the edges, then the guests' ``after`` edges), in
    the syntax the callables write."""
    lines = list(head)
    for name, members in _groups(resources):
        lines += [group(name), *(node(r) for r in members), end]
    lines += [edge(a, b) for a, b in _edges(resources)]
    lines += [after(a, r.name) for r in resources for a in r.after]
    return "\n".join(lines) + "\n" + tail


def render_mermaid(resources: list[PlannedResource]) -> str:
    return _render_graph(
        resources,
        head=["flowchart LR"],
        group=lambda g: f'  subgraph {g}["{GROUPS[g]}"]',
        node=lambda r: f'    {_node_id(r.name)}["{r.kind}<br/>{r.label}"]',
        end="  end",
        edge=lambda a, b: f"  {_node_id(a)} --> {_node_id(b)}",
        after=lambda a, b: f"  {_node_id(a)} -. after .-> {_node_id(b)}",
    )


def render_dot(resources: list[PlannedResource]) -> str:
    return _render_graph(
        resources,
        head=["digraph phoenix {", "  rankdir=LR;", "  node [shape=box];"],
        group=lambda g: f'  subgraph cluster_{g} {{ label="{g}";',
        node=lambda r: f'    "{r.name}" [label="{r.kind}\\n{r.label}"];',
        end="  }",
        edge=lambda a, b: f'  "{a}" -> "{b}";',
        after=lambda a, b: f'  "{a}" -> "{b}" [style=dashed, label="after"];',
        tail="}\n",
    )
