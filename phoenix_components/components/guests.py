"""Workload guests as Pulumi components: ``phoenix:guest:LxcGuest`` and ``phoenix:guest:VmGuest``.

Named from the vmid (``ct-201``, ``vm-231``), never from list position, so reordering guests.json changes
nothing.

- An LXC guest is the LxcGuest dynamic resource (a linked clone of its layer's template, GPUs via devN,
  the AppArmor profile as a raw line before the first start), its PVE firewall (GuestFirewall), when it
  declares features the GuestFeatures that run them in it once started (``pct exec``), and, when it has a
  model server, its service gated on the engine's health checks: a VllmService (``vllm``), else a
  ModelServer (``ollama``, ``llamacpp``: phoenix_components/render/engines).
- A VM is a pulumi-proxmoxve ``VmLegacy`` cloned from a template made once per cloud image, with a
  cloud-init snippet that runs the same feature scripts as the layers, and its firewall. The snippet is a
  HostFile written over Phoenix's pinned SSH rather than ``FileLegacy``, whose own SSH client does not
  pin the host key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_proxmoxve as proxmox

from phoenix_components.components.outputs import with_values
from phoenix_components.components.targets import api_target, ssh_target
from phoenix_components.config.load import Environment
from phoenix_components.config.models import (
    Container,
    DatasetCloneMount,
    Firewall,
    Host,
    ServicePort,
    Vm,
    nics,
)
from phoenix_components.render.engines import server_inputs
from phoenix_components.render.features import container_feature_inputs, fresh_guest_key
from phoenix_components.render.firewall import firewall_inputs
from phoenix_components.render.lxc import GpuMinors, clone_dataset, container_params, raw_lines
from phoenix_components.render.vllm import UNIT_PATH, render_unit
from phoenix_components.render.vm import cloud_image_template_vmid, vm_user_data
from providers.channels.command import sha256_text
from providers.guests.features import GuestFeatures, GuestFeaturesArgs
from providers.guests.firewall import GuestFirewall, GuestFirewallArgs
from providers.guests.lxc_guest import LxcGuest as LxcGuestResource
from providers.guests.lxc_guest import LxcGuestResourceArgs
from providers.guests.snapshot import GuestSnapshot, GuestSnapshotArgs
from providers.hostfiles.host_file import HostFile, HostFileArgs
from providers.model_server import ModelServer, ModelServerArgs
from providers.vllm_service import VllmService, VllmServiceArgs
from providers.zfs.clone import ZfsClone, ZfsCloneArgs
from providers.zfs.snapshot import ZfsSnapshot


def _firewall(
    name: str,
    env: Environment,
    fw: Firewall,
    owner: pulumi.Resource,
    *,
    kind: str,
    vmid: pulumi.Input[int],
    guest_instance: pulumi.Input[str] = "",
    ports: Sequence[ServicePort] = (),
    retain: bool = False,
) -> list[pulumi.Resource]:
    """PVE guest firewall (options, the ordered rules, one more per service port), a child of ``owner``
    made after it. ``retain``: the guest is kept on destroy, so its firewall is too (the engine only
    forgets it)."""
    if not fw.enabled:
        return []
    return [
        GuestFirewall(
            f"{name}-firewall",
            GuestFirewallArgs(**firewall_inputs(env.host.node, kind, vmid, fw, guest_instance, ports)),
            api_target=api_target(env.host),
            opts=pulumi.ResourceOptions(parent=owner, depends_on=[owner], retain_on_delete=retain or None),
        )
    ]


@dataclass(frozen=True)
class LxcGuestArgs:
    environment: Environment
    spec: Container
    layer_vmid: pulumi.Input[int] | None  # None: an adopted guest that came from no Phoenix layer
    data_snapshots: dict[str, ZfsSnapshot] = field(default_factory=dict)  # dataset key -> its snapshot
    depends_on: tuple[pulumi.Resource, ...] = ()  # the AppArmor profile it runs under, the driver
    gpu_minors: pulumi.Input[GpuMinors] | None = None  # HostBaseline.gpu_minors: where devN paths come from


class LxcGuest(pulumi.ComponentResource):
    vmid: int
    endpoint: str | None

    def __init__(self, name: str, args: LxcGuestArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("phoenix:guest:LxcGuest", name, None, opts)
        env, spec, host = args.environment, args.spec, args.environment.host
        self.vmid = spec.vmid
        self.address = spec.network.address
        target = ssh_target(host)
        self.clones: dict[str, ZfsClone] = {}
        for mount in spec.mounts:
            if isinstance(mount, DatasetCloneMount) and mount.dataset not in self.clones:
                data = env.guests.datasets[mount.dataset]
                self.clones[mount.dataset] = ZfsClone(
                    f"{name}-{mount.dataset}",
                    ZfsCloneArgs(
                        origin=args.data_snapshots[mount.dataset].name,
                        name=clone_dataset(data.dataset, spec.vmid),
                    ),
                    ssh_target=target,
                    opts=pulumi.ResourceOptions(parent=self),
                )
        # devN paths use the device minors the host's NVIDIA inventory read, never the GPU index. Combined
        # with with_values, not Output.all, which lifts the minors map deeply (components/outputs.py).
        keys = list(self.clones)
        params = with_values(
            [args.gpu_minors or {}, *(self.clones[k].mountpoint for k in keys)],
            lambda got: {
                k: v
                for k, v in container_params(spec, dict(zip(keys, got[1:], strict=True)), got[0]).items()
                if k != "hostname"
            },
        )
        self.guest = LxcGuestResource(
            f"{name}-container",
            LxcGuestResourceArgs(
                node=host.node,
                vmid=spec.vmid,
                hostname=spec.hostname,
                template_vmid=args.layer_vmid,
                params=params,
                raw_lines=raw_lines(spec),
                storage=host.storage.rootfs,
                pool=host.storage.zfs_pool,
                disk_gib=spec.disk_gib,
                start=True,
                snapshot_before_update=spec.snapshot_before_update,
                snapshot_retention=spec.snapshot_retention,
                adopt=spec.adopt,
                retain_on_delete=spec.retained,
            ),
            ssh_target=target,
            api_target=api_target(host),
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[*args.depends_on, *self.clones.values()],
                # A feature that needs a fresh guest replaces the container when it changes; the vmid is
                # fixed, so the old container goes first. None (no such feature) never triggers.
                replacement_trigger=fresh_guest_key(env, spec),
                delete_before_replace=True,
            ),
        )
        # The guest's children take its vmid as the plain number it is, not the guest's Output of it: each
        # depends on the guest already, and an Output input costs the SDK a task, a dependency walk and
        # more live objects per resource (bench/eval_scale).
        self.firewall = _firewall(
            name,
            env,
            spec.firewall,
            self.guest,
            kind="lxc",
            vmid=spec.vmid,
            guest_instance=self.guest.instance,
            ports=spec.ports,
            retain=spec.retained,
        )
        self.snapshots: GuestSnapshot | None = None
        if spec.snapshots is not None:
            policy = spec.snapshots
            self.snapshots = GuestSnapshot(
                f"{name}-snapshots",
                GuestSnapshotArgs(
                    node=host.node,
                    vmid=spec.vmid,
                    prefix=policy.prefix,
                    retention=policy.retention,
                    trigger=policy.trigger,
                ),
                api_target=api_target(host),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.guest]),
            )
        self.features: GuestFeatures | None = None
        if spec.features:
            self.features = GuestFeatures(
                f"{name}-features",
                # container_feature_inputs' keys are GuestFeaturesArgs' fields (plan.py reads the same dict).
                GuestFeaturesArgs(**container_feature_inputs(env, spec, self.guest.instance)),  # type: ignore[arg-type]
                ssh_target=target,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.guest]),
            )
        self.endpoint = None
        self.service: VllmService | ModelServer | None = None
        engine = spec.engine()
        if engine is not None and self.address is not None:  # every engine speaks OpenAI's API under /v1
            self.endpoint = f"http://{self.address}:{engine[1].listen_port}/v1"
        # The guest's own features (its config files, say) are in place before the server starts. The
        # guest is named even though guest_instance is its output: the SDK drops the dependency of an input
        # whose value is None, which an output not set yet would be.
        server_after: list[pulumi.Resource] = [self.guest, *([self.features] if self.features else [])]
        if engine is not None and engine[0] != "vllm":
            self.service = ModelServer(
                f"{name}-{engine[0]}",
                # server_inputs' keys are ModelServerArgs' fields (plan.py reads the same dict).
                ModelServerArgs(**server_inputs(env, spec), guest_instance=self.guest.instance),  # type: ignore[arg-type]
                ssh_target=target,
                opts=pulumi.ResourceOptions(parent=self, depends_on=server_after),
            )
        if spec.vllm is not None:
            self.service = VllmService(
                f"{name}-vllm",
                VllmServiceArgs(
                    node=host.node,
                    vmid=spec.vmid,
                    unit=render_unit(spec.vllm),
                    unit_path=UNIT_PATH,
                    served_model_name=spec.vllm.server.served_model_name,
                    port=spec.vllm.server.port,
                    startup_timeout_s=spec.vllm.startup_timeout_s,
                    # A replaced guest keeps its vmid: this is what tells the service it must deploy again.
                    guest_instance=self.guest.instance,
                    guest_name=spec.hostname,
                ),
                ssh_target=target,
                opts=pulumi.ResourceOptions(parent=self, depends_on=server_after),
            )
        self.register_outputs(
            {
                "vmid": spec.vmid,
                "hostname": spec.hostname,
                "ip": spec.network.ip,
                "gpus": list(spec.gpus),
                "mac": self.guest.mac,
                "origin": self.guest.origin,  # "adopted" for a guest taken in rather than cloned
                "layer": spec.layer,  # None: adopted from no Phoenix layer
                "endpoint": self.endpoint,
            }
        )


@dataclass(frozen=True)
class VmGuestArgs:
    environment: Environment
    spec: Vm
    template: proxmox.VmLegacy
    provider: proxmox.Provider
    after: tuple[pulumi.Resource, ...] = ()  # the guests (components) it starts after (`after`)


class VmGuest(pulumi.ComponentResource):
    def __init__(self, name: str, args: VmGuestArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("phoenix:guest:VmGuest", name, None, opts)
        env, vm, host = args.environment, args.spec, args.environment.host
        self.vmid = vm.vmid
        # The snippet goes over Phoenix's pinned SSH (HostFile), not FileLegacy's own SSH client.
        file_name = f"phoenix-{vm.vmid}-user-data.yaml"
        user_data = vm_user_data(env, vm)
        snippet = HostFile(
            f"{name}-cloud-init",
            HostFileArgs(path=f"{host.storage.snippets_path}/{file_name}", content=user_data, mode=0o640),
            ssh_target=ssh_target(host),
            opts=pulumi.ResourceOptions(parent=self),
        )
        snippet_id = snippet.path.apply(lambda _path: f"{host.storage.snippets}:snippets/{file_name}")
        net = vm.network
        pci = {g.index: g.pci for g in host.gpus}
        # One ip_config per NIC, in net0, net1, … order (cloud-init matches them by position).
        ip_configs = [
            proxmox.VmLegacyInitializationIpConfigArgs(
                ipv4=proxmox.VmLegacyInitializationIpConfigIpv4Args(
                    address=nic.ip, gateway=nic.gateway if nic.ip != "dhcp" else None
                )
            )
            for nic in nics(vm)
        ]
        dns = vm.dns
        self.vm = proxmox.VmLegacy(
            f"{name}-vm",
            node_name=host.node,
            vm_id=vm.vmid,
            name=vm.name,
            description=vm.description or None,
            clone=proxmox.VmLegacyCloneArgs(vm_id=args.template.vm_id, full=False),
            cpu=proxmox.VmLegacyCpuArgs(cores=vm.cores, type="host"),
            memory=proxmox.VmLegacyMemoryArgs(dedicated=vm.memory_mib),
            disks=[
                proxmox.VmLegacyDiskArgs(
                    interface="scsi0", datastore_id=host.storage.vm_disks, size=vm.disk_gib
                )
            ],
            network_devices=[
                proxmox.VmLegacyNetworkDeviceArgs(
                    bridge=nic.bridge, mac_address=nic.mac, vlan_id=nic.vlan, firewall=nic.firewall
                )
                for nic in nics(vm)
            ],
            initialization=proxmox.VmLegacyInitializationArgs(
                datastore_id=host.storage.vm_disks,
                user_data_file_id=snippet_id,
                ip_configs=ip_configs,
                # Only when configured (absent stays absent): the resolver cloud-init writes.
                dns=(
                    proxmox.VmLegacyInitializationDnsArgs(
                        servers=list(dns.nameserver) or None, domain=dns.searchdomain
                    )
                    if dns is not None
                    else None
                ),
            ),
            tags=sorted(tag.lower() for tag in vm.tags) or None,  # as PVE stores them (see render.lxc.tags)
            hostpcis=[
                proxmox.VmLegacyHostpciArgs(device=f"hostpci{i}", id=pci[gpu], pcie=True)
                for i, gpu in enumerate(vm.gpus)
            ],
            agent=proxmox.VmLegacyAgentArgs(enabled=True),
            on_boot=vm.start_on_boot,
            startup=(
                proxmox.VmLegacyStartupArgs(
                    order=vm.startup.order, up_delay=vm.startup.up, down_delay=vm.startup.down
                )
                if vm.startup is not None
                else None
            ),
            started=True,
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=args.provider,
                depends_on=[snippet, args.template, *args.after],
                # cloud-init runs a VM's features once, at its first boot: changed features (scripts,
                # values, files) need a new VM to run in. Its vmid is fixed, so the old one goes first.
                replacement_trigger=sha256_text(user_data),
                delete_before_replace=True,
            ),
        )
        self.firewall = _firewall(name, env, vm.firewall, self.vm, kind="qemu", vmid=vm.vmid, ports=vm.ports)
        self.register_outputs({"vmid": vm.vmid, "name": vm.name, "ip": net.ip, "snippet": snippet_id})


def host_download(
    name: str,
    host: Host,
    content_type: str,
    url: str,
    file_name: str,
    opts: pulumi.ResourceOptions,
    sha256: str | None = None,
) -> proxmox.download.File:
    """PVE downloads ``url`` to the host's template storage itself (``content_type`` ``vztmpl`` for an OS
    template, ``import`` for a cloud image); with ``sha256`` it checks the file, else it trusts the URL."""
    return proxmox.download.File(
        name,
        node_name=host.node,
        datastore_id=host.storage.templates,
        content_type=content_type,
        url=url,
        file_name=file_name,
        checksum=sha256,
        checksum_algorithm="sha256" if sha256 else None,
        opts=opts,
    )


@dataclass(frozen=True)
class CloudImageTemplateArgs:
    environment: Environment
    image: str
    provider: proxmox.Provider


class CloudImageTemplate(pulumi.ComponentResource):
    """A cloud image downloaded to the host and made into a VM template once; VMs are linked clones of it."""

    def __init__(
        self, name: str, args: CloudImageTemplateArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("phoenix:guest:CloudImageTemplate", name, None, opts)
        env, host = args.environment, args.environment.host
        image = host.cloud_images[args.image]
        child = pulumi.ResourceOptions(parent=self, provider=args.provider)
        self.download = host_download(
            f"{name}-download", host, "import", image.url, image.file, child, sha256=image.checksum
        )
        self.template = proxmox.VmLegacy(
            f"{name}-template",
            node_name=host.node,
            vm_id=cloud_image_template_vmid(env, args.image),
            name=f"template-{args.image}",
            template=True,
            started=False,
            disks=[
                proxmox.VmLegacyDiskArgs(
                    interface="scsi0", datastore_id=host.storage.vm_disks, import_from=self.download.id
                )
            ],
            agent=proxmox.VmLegacyAgentArgs(enabled=True),
            opts=pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=[self.download]),
        )
        self.register_outputs({"vmid": self.template.vm_id, "image": self.download.id})
