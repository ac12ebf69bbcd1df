"""Lab-only support for the end-to-end tests of the real Phoenix program under the real Pulumi engine
(tests/cli/test_lab_e2e.py).

- :func:`write_lab_config` makes a config directory for the running lab: ``config/`` and ``apparmor/``
  copied, the feature scripts replaced by the TEST-ONLY stand-ins of ``tests/lab/standins/features`` (the
  product scripts need network, a GPU and systemd, none of which the lab's containers have), and a ``lab``
  environment whose host.json points at this lab's fakepve, sshd and pool.
- the module-scoped fixture ``lab_stack``: the lab host (for the whole module, so the chain is built once)
  and the ``lab`` stack of that directory on a file backend, run by the Go-built Pulumi CLI
  (:class:`~tests.support.engine.Engine`: ``pulumi up`` runs ``__main__.py`` through the language host,
  the providers through ``pulumi-resource-pulumi-python``); on the way out it destroys what is left and
  cleans the lab even when a test failed.

Lab facts the config says out loud: ``nvidia.manage`` is false (the lab has no NVIDIA driver to install;
the pinned version still reaches the containers' userspace stand-in), ``apparmor_load`` is
``compile-only`` (no AppArmor LSM: profiles are compiled, loading is simulated), and the OS template has
no download URL because the fake host already has it on ``local``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tests.lab.common import REPO_ROOT
from tests.lab.host import LabHost, running_lab_host
from tests.lab.pve import OS_TEMPLATE_NAME, PveLab
from tests.lab.sshd_server import LabSshd, free_port
from tests.support.engine import Engine, Report

if TYPE_CHECKING:
    from phoenix_components.config.load import Environment
    from tests.lab.zfs import LabZpool

ENV = "lab"
STANDIN_FEATURES = Path(__file__).parent / "standins" / "features"
DATA_DATASET = "rpool/data/phoenix-models"
LAYER_RANGE = (9900, 9919)
PROFILE = "phoenix-lxc-gpu-docker"
# Startup deadline of the healthy lab guests: the stand-in answers within a second; a broken one must not
# hold the test for vLLM's default 900 s.
HEALTHY_STARTUP_S = 60
ENGINE_TITLES = {"vllm": "vLLM", "ollama": "ollama", "llamacpp": "llama.cpp"}


def lab_chain(product: dict[str, Any]) -> dict[str, Any]:
    """The product chain as the lab can build it: the same layers, parents, features and pinned versions,
    with small build resources, and the base layer's smoke test replaced (the product's asks systemd,
    which the lab's `sleep infinity` containers do not run). The other smoke tests are the product's own,
    answered by the stand-ins."""
    chain = copy.deepcopy(product)
    chain.pop("$schema", None)
    for layer in chain["layers"].values():
        layer["build"] = {**layer.get("build", {}), "cores": 1, "memory_mib": 512, "disk_gib": 1}
    chain["layers"]["base"]["smoke_test"] = ["grep", "-qx", "phoenix-base target=lxc", "/etc/phoenix/base"]
    return chain


def lab_host_json(host: LabHost, nvidia_version: str) -> dict[str, Any]:
    ssh: LabSshd = host.sshd
    return {
        "node": host.node,
        "api": {
            "endpoint": host.pve.url,
            "auth": "password",
            "user": "root@pam",
            "verify_tls": host.pve.cafile,
        },
        "ssh": {"host": ssh.host, "port": ssh.port, "user": ssh.user, "host_key": ssh.host_key_fingerprint},
        "storage": {
            "rootfs": host.storage,
            "zfs_pool": host.zpool.data,
            "templates": "local",
            "snippets": "local",
            "vm_disks": host.storage,
        },
        "vmid_ranges": {
            "layers": {"start": LAYER_RANGE[0], "end": LAYER_RANGE[1]},
            "guests": {"start": 800, "end": 899},
        },
        "bridges": [{"name": "vmbr0", "cidr": "10.99.0.0/24", "gateway": "10.99.0.1", "vlan_aware": True}],
        # No driver to read minors from (nvidia.manage is false), so host.json declares them.
        "gpus": [
            {"index": 0, "minor": 0, "memory_mib": 16384},
            {"index": 1, "minor": 1, "memory_mib": 16384},
        ],
        "nvidia": {
            "version": nvidia_version,
            "runfile_url": f"https://download.invalid/NVIDIA-Linux-x86_64-{nvidia_version}.run",
            "sha256": "0" * 64,
            "manage": False,  # no NVIDIA hardware or driver in the lab: nothing to install on the host
        },
        "os_templates": {"debian-12": {"file": OS_TEMPLATE_NAME}},  # already on the fake's `local`
        "apparmor_profiles": [PROFILE],
        "apparmor_load": "compile-only",  # no AppArmor LSM in the lab kernel: compiled, load simulated
        "max_parallel_tasks": 4,
    }


@dataclass(frozen=True)
class LabGuest:
    """One model-server workload container of the lab's guests.json: vLLM unless ``engine`` says
    ``ollama`` or ``llamacpp`` (on the chain layer of that name; ``gpu_memory_mib`` is then its budget)."""

    vmid: int
    gpu: int
    served: str
    port: int = field(default_factory=free_port)
    extra_args: tuple[str, ...] = ()
    startup_timeout_s: int = HEALTHY_STARTUP_S
    gpu_memory_utilization: float = 0.4
    snapshot_before_update: bool = False
    # The guest's own feature scripts (GuestFeatures) and their parameters; empty for the default guests.
    features: tuple[str, ...] = ()
    feature_env: tuple[tuple[str, str], ...] = ()
    feature_files: tuple[tuple[str, str], ...] = ()  # (path, content)
    # Start order: the vmids it starts after, and its own PVE startup parts ((name, seconds or order)).
    after: tuple[int, ...] = ()
    startup: tuple[tuple[str, int], ...] = ()
    # More guests.json keys as they are written there (environment, dns, tags, networks, ...).
    options: tuple[tuple[str, Any], ...] = ()
    engine: str = "vllm"
    gpu_memory_mib: int = 4096

    @property
    def hostname(self) -> str:
        return f"lab-{self.engine}-{self.vmid}"

    def engine_json(self) -> dict[str, Any]:
        """The engine's config. The lab's containers share the host's network namespace (LXC network
        type none), so each server listens on loopback, on a port of its own."""
        if self.engine == "ollama":
            return {
                "model": self.served,
                "host": "127.0.0.1",
                "port": self.port,
                "gpu_memory_mib": self.gpu_memory_mib,
                "startup_timeout_s": self.startup_timeout_s,
            }
        if self.engine == "llamacpp":
            return {
                "hf_repo": "phoenix-lab/tiny-GGUF:Q4_K_M",
                "served_model_name": self.served,
                "host": "127.0.0.1",
                "port": self.port,
                "ctx_size": 2048,
                "n_gpu_layers": 99,
                "gpu_memory_mib": self.gpu_memory_mib,
                "extra_args": list(self.extra_args),
                "startup_timeout_s": self.startup_timeout_s,
            }
        return {
            "model": {"model": "phoenix-lab/tiny", "max_model_len": 1024},
            "cache": {"gpu_memory_utilization": self.gpu_memory_utilization},
            "server": {"host": "127.0.0.1", "port": self.port, "served_model_name": self.served},
            "extra_args": list(self.extra_args),
            "startup_timeout_s": self.startup_timeout_s,
        }

    def to_json(self) -> dict[str, Any]:
        own: dict[str, Any] = {}
        if self.features:  # only then: a guest without features is exactly what it was before they existed
            own = {
                "features": list(self.features),
                "feature_env": dict(self.feature_env),
                "feature_files": [{"path": path, "content": text} for path, text in self.feature_files],
            }
        if self.after:  # likewise: only a guest that declares an order gets one
            own["after"] = list(self.after)
        if self.startup:
            own["startup"] = dict(self.startup)
        own.update(dict(self.options))
        return {
            **own,
            "vmid": self.vmid,
            "hostname": self.hostname,
            "layer": self.engine,
            "description": f"{ENGINE_TITLES[self.engine]} (lab stand-in) serving {self.served}",
            "cores": 1,
            "memory_mib": 512,
            "disk_gib": 2,  # above the layer's 1 GiB: the clone is grown (resize)
            "pve_features": {"nesting": True},
            "network": {
                "bridge": "vmbr0",
                "ip": f"10.99.0.{self.vmid - 800 + 10}/24",
                "gateway": "10.99.0.1",
                "mac": f"BC:24:11:99:{self.vmid // 100:02X}:{self.vmid % 100:02X}",
            },
            "gpus": [self.gpu],
            "apparmor_profile": PROFILE,
            "mounts": [{"type": "dataset_clone", "path": "/models", "dataset": "models"}],
            "snapshot_before_update": self.snapshot_before_update,
            "firewall": {
                "enabled": True,
                "rules": [{"direction": "in", "action": "ACCEPT", "proto": "tcp", "dport": str(self.port)}],
            },
            self.engine: self.engine_json(),
        }


def write_lab_config(root: Path, host: LabHost, guests: Sequence[LabGuest]) -> Path:
    """A complete Phoenix config for the running lab under ``root``; returns its ``config`` directory."""
    config = root / "config"
    shutil.copytree(REPO_ROOT / "config", config, dirs_exist_ok=True)
    shutil.copytree(REPO_ROOT / "apparmor", root / "apparmor", dirs_exist_ok=True)
    shutil.copy(REPO_ROOT / "__main__.py", root / "__main__.py")  # the program itself, run as Pulumi runs it
    project = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())
    # The project's own Pulumi.yaml, its virtualenv made absolute (this directory has none of its own).
    project["runtime"]["options"]["virtualenv"] = str(Path(sys.executable).parent.parent)
    (root / "Pulumi.yaml").write_text(yaml.safe_dump(project, sort_keys=False))
    shutil.rmtree(config / "features")  # the product scripts never run in the lab
    shutil.copytree(STANDIN_FEATURES, config / "features")
    for script in (config / "features").glob("*.sh"):
        script.write_text(standin_text(script.read_text()))
    product = json.loads((REPO_ROOT / "config" / "chain.json").read_text())
    (config / "chain.json").write_text(json.dumps(lab_chain(product), indent=2))
    env_dir = config / "environments" / ENV
    shutil.rmtree(env_dir, ignore_errors=True)
    env_dir.mkdir(parents=True)
    nvidia = product["layers"]["gpu"]["versions"]["nvidia"]
    (env_dir / "host.json").write_text(json.dumps(lab_host_json(host, nvidia), indent=2))
    write_guests(config, guests)
    return config


INCLUDE = "# @include "


def standin_text(script: str) -> str:
    """A stand-in as the lab runs it: each ``# @include NAME`` line replaced by tests/lab/standins/NAME
    without its leading comment lines (the lab's systemctl stand-in, shared by the model servers'
    stand-ins)."""
    lines = []
    for line in script.splitlines(keepends=True):
        if line.startswith(INCLUDE):
            included = STANDIN_FEATURES.parent / line[len(INCLUDE) :].strip()
            text = included.read_text().splitlines(keepends=True)
            lines += text[next(i for i, t in enumerate(text) if not t.startswith("#")) :]
        else:
            lines.append(line)
    return "".join(lines)


def write_feature(config: Path, name: str, script: str) -> Path:
    """A TEST-ONLY feature script in the lab config (``features/<name>.sh``), for a guest's ``features``."""
    path = config / "features" / f"{name}.sh"
    path.write_text(script)
    return path


def write_stack(config: Path, name: str, compose: str, settings: dict[str, Any] | None = None) -> Path:
    """A Compose stack in the lab config (``stacks/<name>/compose.yaml``, and ``stack.json`` when
    ``settings`` are given); place it on a guest with :meth:`LabStack.set_stacks`."""
    directory = config / "stacks" / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "compose.yaml").write_text(compose)
    if settings is not None:
        (directory / "stack.json").write_text(json.dumps(settings, indent=2))
    return directory


def write_guests(config: Path, guests: Sequence[LabGuest], stacks: Sequence[tuple[str, int]] = ()) -> None:
    document: dict[str, Any] = {
        "containers": [guest.to_json() for guest in guests],
        # compression "on": zfs-fuse predates lz4 (the default), which every ZFS on a PVE host has.
        "datasets": {
            "models": {"dataset": DATA_DATASET, "snapshot": "v1", "quota_gib": 1, "compression": "on"}
        },
    }
    if stacks:  # only then: a lab without stacks has exactly the guests.json it had before them
        document["stacks"] = [{"name": name, "guest": vmid} for name, vmid in stacks]
    (config / "environments" / ENV / "guests.json").write_text(json.dumps(document, indent=2))


# ------------------------------------------------------------------------------------------ the stack


@dataclass
class LabStack:
    """The real Phoenix program against the lab: its project directory and its ``lab`` stack."""

    host: LabHost
    config: Path
    engine: Engine
    guests: list[LabGuest]
    stacks: list[tuple[str, int]] = field(default_factory=list)

    def environment(self) -> Environment:
        from phoenix_components.config.load import load_environment

        return load_environment(self.config, ENV)

    def set_guests(self, guests: Sequence[LabGuest]) -> None:
        self.guests = list(guests)
        write_guests(self.config, self.guests, self.stacks)

    def set_stacks(self, stacks: Sequence[tuple[str, int]]) -> None:
        """Place Compose stacks (written with :func:`write_stack`): ``[(name, vmid)]``."""
        self.stacks = list(stacks)
        write_guests(self.config, self.guests, self.stacks)

    first: Report | None = None
    """The report of the latest up that started from an empty state."""

    def up(self) -> Report:
        """``pulumi up`` of the stack: __main__.py reads the config as it is on disk now."""
        return self.engine.up()

    def ensure_up(self) -> Report:
        """The stack deployed: an up from an empty state when there is none (the module's first test, or
        after a destroy); returns the report of that first up."""
        if self.first is None or not self.engine.resources():
            self.first = self.up()
        return self.first

    def api_mutations(self, since: int = 0) -> list[tuple[str, str]]:
        """POST/PUT/DELETE requests fakepve received after the first ``since`` requests."""
        return [(m, p) for m, p in self.host.pve.requests()[since:] if m != "GET"]

    def guest_exec(self, vmid: int, *argv: str) -> subprocess.CompletedProcess[str]:
        """``pct exec`` through the lab's shim, as the host's root would run it."""
        return self.host.pct("exec", str(vmid), "--", *argv)

    def origin(self, dataset: str) -> str:
        return self.host.zpool.get(dataset, "origin")


@contextlib.contextmanager
def lab_stack_engine(root: Path, host: LabHost, bin_dir: Path | None = None) -> Iterator[Engine]:
    """The ``lab`` stack of the project directory ``root`` (written by :func:`write_lab_config`), the
    lab's secrets as its secret config; whatever it still holds is destroyed on the way out."""
    engine = Engine(
        root / "engine",
        ENV,
        work_dir=root,
        config={"phoenix:environment": ENV},
        secrets={
            "phoenix:pvePassword": host.pve.password,
            "phoenix:sshPrivateKey": host.sshd.user_private_key,
        },
        bin_dir=bin_dir,
    )
    try:
        yield engine
    finally:
        if engine.resources() or engine.pending_deletes():
            try:
                engine.destroy()
            except Exception as error:  # noqa: BLE001 - the callers' direct cleanup still runs
                print(f"lab stack: destroy failed ({error}); the lab is cleaned directly")


@pytest.fixture(scope="module")
def lab_stack(
    lab_pve: PveLab,
    lab_zpool: LabZpool,
    lab_sshd: LabSshd,
    lab_rootfs: Path,
    lab_lxc_seed: str,
    pulumi_bin: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LabStack]:
    """The lab with the glue for the whole module (the chain is built once) and an empty ``lab`` stack
    whose secret config holds the lab's secrets. Whatever a test leaves is destroyed at the end; if that
    fails too, the pool, /etc/pve/lxc, /etc/apparmor.d and the fake are cleaned directly."""
    root = tmp_path_factory.mktemp("e2e")
    before = set(lab_zpool.datasets())
    profile = Path("/etc/apparmor.d") / PROFILE
    profile_existed = profile.exists()
    lab_pve.call(lab_pve.pve.requests.clear)
    try:
        with running_lab_host(lab_pve, lab_zpool, lab_sshd, lab_rootfs, lab_lxc_seed) as host:
            guests = [
                LabGuest(801, gpu=0, served="tiny-a", snapshot_before_update=True),
                LabGuest(802, gpu=1, served="tiny-b"),
            ]
            config = write_lab_config(root, host, guests)
            try:
                with lab_stack_engine(root, host, pulumi_bin) as engine:
                    yield LabStack(host, config, engine, guests)
            finally:
                lab_zpool.destroy_all_but(before)  # data datasets and clones are not guest volumes
    finally:
        if not profile_existed:
            profile.unlink(missing_ok=True)
        lab_pve.reset()
