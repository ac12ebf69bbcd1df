"""What ``pulumi up`` would do to a host, resource by resource, without doing it: ``phoenix plan``/``graph``.

The plan is derived from the validated :class:`~phoenix_components.config.load.Environment` alone — no
credentials, no network. Each :class:`PlannedResource` has the stable name the Pulumi program gives it
(from vmid, layer or profile name, never list order), its dependencies, and the API calls (``api``) and
host commands (``ssh``) its provider makes on create. vmids of layers are allocated from the layer range
at build time, so they appear as ``$vmid(layer)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from phoenix_components.config.load import Environment
from phoenix_components.config.models import (
    Container,
    DatasetCloneMount,
    Vm,
)
from phoenix_components.render.features import container_feature_inputs, exec_argv
from phoenix_components.render.firewall import firewall_inputs
from phoenix_components.render.lxc import (
    GpuMinors,
    clone_dataset,
    container_params,
    declared_minors,
    raw_lines,
)
from phoenix_components.render.vllm import UNIT_PATH, engine_args
from phoenix_components.render.vm import cloud_image_template_vmid
from providers.channels.command import display, sha256_text, write_file_argv
from providers.guests.features import GuestFeaturesInputs, feature_steps
from providers.guests.firewall import GuestFirewallInputs, plan_steps

LAYER_VMID = "$vmid({})"


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


def _api(method: str, path: str, **params: object) -> Step:
    args = " ".join(f"{k}={v}" for k, v in params.items() if v is not None)
    return Step("api", f"{method} /api2/json/{path}" + (f" {args}" if args else ""))


def _ssh(*argv: str, stdin: str | None = None) -> Step:
    return Step("ssh", display(argv) + (f"  < {stdin}" if stdin else ""))


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
        path = f"/etc/apparmor.d/{name}"
        profiles[name] = b.add(
            f"apparmor-{name}",
            "AppArmorProfile",
            [],
            [
                _ssh(*write_file_argv(path), stdin=f"apparmor/{name} (sha256 {sha256_text(text)[:12]})"),
                _ssh("apparmor_parser", "-r", "-W", path),
            ],
            "host",
        )

    driver = None
    if host.nvidia is not None:
        nv = host.nvidia
        runfile = f"/var/cache/phoenix/NVIDIA-Linux-x86_64-{nv.version}.run"
        driver = b.add(
            f"nvidia-driver-{node}",
            "NvidiaHostDriver",
            [],
            [
                _ssh("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"),
                Step("ssh", f"(only when the driver is not {nv.version}:)"),
                _ssh("curl", "-fsSL", "--retry", "3", "-o", runfile, nv.runfile_url),
                _ssh("sha256sum", "-c", "-", stdin=f"'{nv.sha256}  {runfile}'"),
                _ssh("sh", runfile, "--dkms", "--silent", "--no-questions", "--ui=none"),
                _ssh("cat", "/proc/devices"),
                _ssh(
                    "nvidia-smi", "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"
                ),
            ],
            "host",
            f"NVIDIA {nv.version}",
        )

    templates: dict[str, str] = {}
    for key, tmpl in host.os_templates.items():
        templates[key] = _download(b, f"os-template-{key}", "vztmpl", tmpl.file, tmpl.url)

    datasets: dict[str, str] = {}
    for key, data in env.guests.datasets.items():
        ds = b.add(
            f"dataset-{key}",
            "ZfsDataset",
            [],
            [
                _ssh(
                    "zfs",
                    "create",
                    "-p",
                    "-o",
                    f"compression={data.compression}",
                    *(["-o", f"quota={data.quota_gib}G"] if data.quota_gib else []),
                    data.dataset,
                )
            ],
            "host",
        )
        datasets[key] = b.add(
            f"dataset-{key}-{data.snapshot}",
            "ZfsSnapshot",
            [ds],
            [_ssh("zfs", "snapshot", f"{data.dataset}@{data.snapshot}")],
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
    return b.resources


def _plan_layers(
    b: _Builder, env: Environment, templates: dict[str, str], driver: str | None
) -> dict[str, str]:
    host, node = env.host, env.host.node
    pool = host.storage.zfs_pool
    layers: dict[str, str] = {}
    if env.reuses_promoted_templates():
        assert env.promotion is not None
        source = env.promotion.source
        for name in env.layer_order():
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
    for name in env.layer_order():
        layer = env.chain.layers[name]
        key = env.layer_key(name)
        vmid = LAYER_VMID.format(name)
        deps: list[str] = []
        steps: list[Step] = []
        if layer.parent is None:
            assert layer.os_template is not None
            deps.append(templates[layer.os_template])
            tmpl = host.os_templates[layer.os_template].file
            steps.append(
                _api(
                    "POST",
                    f"nodes/{node}/lxc",
                    vmid=vmid,
                    hostname=f"layer-{name}-{key[:8]}",
                    ostemplate=f"{host.storage.templates}:vztmpl/{tmpl}",
                    rootfs=f"{host.storage.rootfs}:{layer.build.disk_gib}",
                    unprivileged=1,
                )
            )
        else:
            deps.append(layers[layer.parent])
            parent_vmid = LAYER_VMID.format(layer.parent)
            steps.append(
                _api(
                    "POST",
                    f"nodes/{node}/lxc/{parent_vmid}/clone",
                    newid=vmid,
                    hostname=f"layer-{name}-{key[:8]}",
                    full=0,
                )
            )
        if layer.build.gpus and driver is not None:
            deps.append(driver)
        config: dict[str, object] = {"cores": layer.build.cores, "memory": layer.build.memory_mib}
        if layer.build.nesting:
            config["features"] = "nesting=1"
        steps.append(_api("PUT", f"nodes/{node}/lxc/{vmid}/config", **config))
        if layer.build.gpus:
            steps.append(Step("api", "PUT .../config dev0..devN = /dev/nvidia* (root@pam) while building"))
        steps.append(_api("POST", f"nodes/{node}/lxc/{vmid}/status/start"))
        for feature in layer.features:
            steps.append(
                _ssh(*exec_argv(vmid, env.layer_feature_env(name, feature)), stdin=f"features/{feature}.sh")
            )
        steps.append(_ssh("pct", "exec", vmid, "--", *layer.smoke_test))
        steps.append(_api("POST", f"nodes/{node}/lxc/{vmid}/status/shutdown"))
        steps.append(_api("POST", f"nodes/{node}/lxc/{vmid}/template"))
        if layer.parent is not None:
            steps.append(_ssh("zfs", "get", "-H", "-o", "value", "origin", f"{pool}/basevol-{vmid}-disk-0"))
            steps.append(
                Step("ssh", f"(must be {pool}/basevol-{LAYER_VMID.format(layer.parent)}-disk-0@__base__)")
            )
        layers[name] = b.add(f"layer-{name}", "TemplateLayer", deps, steps, "chain", f"{name} ({key})")
    return layers


def _plan_firewall(
    b: _Builder, env: Environment, owner: str, kind: str, guest: Container | Vm, group: str
) -> None:
    """GuestFirewall's own steps (providers.guests.firewall.plan_steps), computed from the same inputs."""
    if not guest.firewall.enabled:
        return
    props = firewall_inputs(env.host.node, kind, guest.vmid, guest.firewall, ports=guest.ports)
    inputs = GuestFirewallInputs.from_props(props)
    steps = [_api(call.method, call.path, **call.params) for call in plan_steps(inputs)]
    b.add(f"{owner}-firewall", "GuestFirewall", [owner], steps, group)


def _gpu_minors(env: Environment) -> GpuMinors:
    """What the devN lines will say: a managed driver's minors are read at deploy time, so the plan names
    them; an unmanaged driver's are the ones host.json declares."""
    nvidia = env.host.nvidia
    if nvidia is not None and nvidia.manage:
        return {str(g.index): f"<minor of GPU {g.index}>" for g in env.host.gpus}
    return declared_minors(env.host.gpus)


def _plan_container(
    b: _Builder,
    env: Environment,
    ct: Container,
    layers: dict[str, str],
    profiles: dict[str, str],
    datasets: dict[str, str],
    driver: str | None,
) -> None:
    node, pool = env.host.node, env.host.storage.zfs_pool
    name = f"ct-{ct.vmid}"
    deps = [layers[ct.layer]]
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
            mountpoints[mount.dataset] = (
                f"/{target}"  # the default mountpoint; the clone reports the real one
            )
            clones.append(
                b.add(
                    f"{name}-{mount.dataset}",
                    "ZfsClone",
                    [datasets[mount.dataset]],
                    [_ssh("zfs", "clone", f"{data.dataset}@{data.snapshot}", target)],
                    "guests",
                )
            )
    config = container_params(ct, mountpoints, _gpu_minors(env))
    config.pop("hostname")  # set by the clone call
    steps = [
        _api(
            "POST",
            f"nodes/{node}/lxc/{LAYER_VMID.format(ct.layer)}/clone",
            newid=ct.vmid,
            hostname=ct.hostname,
            full=0,
        ),
        _api("PUT", f"nodes/{node}/lxc/{ct.vmid}/config", **config),
        _ssh(
            *write_file_argv(f"/etc/pve/lxc/{ct.vmid}.conf"),
            stdin=f"the config plus `{'`, `'.join(raw_lines(ct))}` (before the first start)",
        ),
        _ssh("zfs", "get", "-H", "-o", "value", "origin", f"{pool}/subvol-{ct.vmid}-disk-0"),
    ]
    if ct.disk_gib is not None:
        steps.insert(
            2, _api("PUT", f"nodes/{node}/lxc/{ct.vmid}/resize", disk="rootfs", size=f"{ct.disk_gib}G")
        )
    steps.append(_api("POST", f"nodes/{node}/lxc/{ct.vmid}/status/start"))
    b.add(name, "LxcGuest", deps + clones, steps, "guests", f"{ct.hostname} ({ct.vmid})")
    _plan_firewall(b, env, name, "lxc", ct, "guests")
    features = _plan_features(b, env, ct, name)
    if ct.snapshots is not None:
        policy = ct.snapshots
        b.add(
            f"{name}-snapshots",
            "GuestSnapshot",
            [name],
            [
                _api("POST", f"nodes/{node}/lxc/{ct.vmid}/snapshot", snapname=f"{policy.prefix}-<UTC time>"),
                Step(
                    "api",
                    f"DELETE .../snapshot/<older {policy.prefix}-*> beyond the newest {policy.retention}",
                ),
            ],
            "guests",
            f"{policy.prefix}-* x{policy.retention}",
        )
    if ct.vllm is not None:
        server = ct.vllm.server
        b.add(
            f"vllm-{ct.vmid}",
            "VllmService",
            [name, *features],
            [
                _ssh(
                    "pct",
                    "exec",
                    str(ct.vmid),
                    "--",
                    *write_file_argv(UNIT_PATH),
                    stdin="unit with ExecStart=" + display(engine_args(ct.vllm)),
                ),
                _ssh("pct", "exec", str(ct.vmid), "--", "systemctl", "enable", "--now", "vllm.service"),
                Step(
                    "ssh",
                    f"wait ≤ {ct.vllm.startup_timeout_s}s: GET http://127.0.0.1:{server.port}/health = 200, "
                    f"/v1/models lists {server.served_model_name}",
                ),
            ],
            "guests",
            server.served_model_name,
        )


def _plan_features(b: _Builder, env: Environment, ct: Container, owner: str) -> list[str]:
    """GuestFeatures' own steps (``providers.guests.features.feature_steps``) from the program's inputs."""
    if not ct.features:
        return []
    inputs = GuestFeaturesInputs.from_props(container_feature_inputs(env, ct))
    steps = [_ssh(*step.argv, stdin=step.stdin_label) for step in feature_steps(inputs)]
    label = f"{', '.join(ct.features)} in {ct.hostname} ({ct.vmid})"
    return [b.add(f"{owner}-features", "GuestFeatures", [owner], steps, "guests", label)]


def _plan_vm(b: _Builder, env: Environment, vm: Vm, image: str) -> None:
    node, storage = env.host.node, env.host.storage
    name = f"vm-{vm.vmid}"
    path = f"{storage.snippets_path}/phoenix-{vm.vmid}-user-data.yaml"
    snippet = b.add(
        f"{name}-cloud-init",
        "HostFile",
        [],
        [
            _ssh(
                *write_file_argv(path, 0o640),
                stdin=f"cloud-init running {', '.join(vm.features) or 'nothing'}",
            )
        ],
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
    return "\n".join(lines) + "\n"


def _node_id(name: str) -> str:
    return name.replace("-", "_").replace(".", "_")


GROUPS = {"host": "host", "chain": "template chain", "guests": "guests"}


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
    tail: str = "",
) -> str:
    """The one graph walk (groups in GROUPS order, then the edges), in the syntax the callables write."""
    lines = list(head)
    for name, members in _groups(resources):
        lines += [group(name), *(node(r) for r in members), end]
    lines += [edge(a, b) for a, b in _edges(resources)]
    return "\n".join(lines) + "\n" + tail


def render_mermaid(resources: list[PlannedResource]) -> str:
    return _render_graph(
        resources,
        head=["flowchart LR"],
        group=lambda g: f'  subgraph {g}["{GROUPS[g]}"]',
        node=lambda r: f'    {_node_id(r.name)}["{r.kind}<br/>{r.label}"]',
        end="  end",
        edge=lambda a, b: f"  {_node_id(a)} --> {_node_id(b)}",
    )


def render_dot(resources: list[PlannedResource]) -> str:
    return _render_graph(
        resources,
        head=["digraph phoenix {", "  rankdir=LR;", "  node [shape=box];"],
        group=lambda g: f'  subgraph cluster_{g} {{ label="{g}";',
        node=lambda r: f'    "{r.name}" [label="{r.kind}\\n{r.label}"];',
        end="  }",
        edge=lambda a, b: f'  "{a}" -> "{b}";',
        tail="}\n",
    )
