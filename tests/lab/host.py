"""Lab fixture ``lab_host``: one Proxmox host in a box, the glue that makes the lab's parts one host.

fakepve answers the API; here its ``local-zfs`` storage (zfspool ``rpool/data``) acts on the REAL lab pool the
way pve-storage's ZFSPoolPlugin.pm and pve-container do, so what a client does through the API can be checked
with ``zfs`` over SSH, and the ``pct`` shim runs the resulting datasets as LXC containers. What each guest
operation does to the pool (PVE's names throughout):

- create from an OS template: ``rpool/data/subvol-<vmid>-disk-<n>`` with ``refquota`` = the size, the rootfs
  filled from the cached minimal Debian rootfs (PVE untars the template; other mount points are made empty);
- template: ``zfs rename`` to ``basevol-<vmid>-disk-<n>`` + ``zfs snapshot ...@__base__`` (create_base);
- linked clone (full=0, only of a template's base volume): ``zfs clone <base>@__base__
  rpool/data/subvol-<newid>-disk-<n>`` with the base's refquota (clone_image); the config's volume id is
  ``local-zfs:<base>/subvol-<newid>-disk-<n>`` as PVE writes it (fakepve alone writes ``subvol-<newid>-...``);
- full clone: a new dataset, files copied with rsync (pve-container's copy_volume), no origin;
- resize: the new ``refquota`` (volume_resize);
- destroy: ``zfs destroy -r``; a base volume that linked clones still use is refused first, worded as PVE's
  vdisk_free ("base volume '<volname>' is still in use by linked clones"), and nothing is destroyed;
- snapshot / delete snapshot / rollback: ``zfs snapshot``, ``zfs destroy``, ``zfs rollback`` of
  ``<dataset>@<snapname>`` (a rollback past a later snapshot is refused, as volume_rollback_is_possible does);
  a full clone from ``snapname`` copies that snapshot;
- start/stop/shutdown/reboot (and create with start=1): the guest's real LXC container is started or stopped
  through the ``pct`` shim, so ``pct exec`` over SSH works after an API start, as on PVE.

The guest configs are mirrored too: on PVE, pmxcfs shows every container's config as
``/etc/pve/lxc/<vmid>.conf``, and Phoenix reads and rewrites that file over SSH for the raw ``lxc.*`` lines
the API cannot set. :class:`PveConfigMirror` writes the fake's config there in PVE's format after every
request that may change it (and after every task), keeping the ``lxc.*`` lines already in the file (PVE
keeps them in the config it writes back), and removes the file when the guest is destroyed.

How (fakepve 0.5 internals; each hook is an instance attribute on the one FakePve, removed after the test,
so tests without ``lab_host`` see a plain fake): ``answer`` keeps each API call's validated values (full=,
snapname=, disk=) in a context variable the task started by the call inherits; ``task`` marks the task
(type, guest) for the hooks below and, once its body ends, fails it loudly if the storage hook never fired
(fakepve moved its internals); ``ceph_io`` is awaited by the create, clone and snapshot bodies right after the
volumes are allocated (the snapshot recorded) and before the guest is unlocked or started, so the datasets are
made there and a failure ends the task as PVE's does (the new guest dropped); ``pause`` is awaited by the
destroy, delete-snapshot and rollback bodies right after they lock the guest for it and before they change its
config, so the pool changes there (a refused destroy puts the lock back: PVE never wrote it); the template,
resize and power bodies are wrapped (renames before, refquota and the real container after the fake's change).
``fakepve.lxc.volume_owner`` is patched too: PVE's owner of ``basevol-100-disk-0/subvol-101-disk-0`` is 101,
fakepve's regex answers 100 and would refuse to resize a linked clone. ZFS work runs in a worker thread under
a per-storage lock (PVE's ``pve-storage-<id>`` lock file), so the fake keeps answering status polls meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import pytest

from providers.channels.pve import PveClient
from providers.channels.targets import ApiTarget, SshTarget
from tests.lab.common import LAB_BIN, LAB_DIR, LabError, run, wait_until
from tests.lab.lxc import pct as pct_shim
from tests.lab.pve import NODE, ZFS_STORAGE, PveLab
from tests.lab.requirements import require_lab
from tests.lab.sshd_server import LabSshd
from tests.lab.zfs import LabZpool

T = TypeVar("T")

ZFS = str(LAB_BIN / "zfs")  # the lab's wrapper: the real zfs, minus zfs-fuse's spurious "dataset is busy"
BASE_SNAPSHOT = "__base__"  # ZFSPoolPlugin::create_base
ZFS_TIMEOUT_S = 60.0
COPY_TIMEOUT_S = 300.0  # a full copy of a rootfs through FUSE; real layers would take far longer
STORAGE_LOCK_TIMEOUT_S = 60.0
SETTLE_TIMEOUT_S = 120.0  # teardown waits this long for storage work still running in the fake
# PVE's copy_volume runs `rsync --stats -X -A --numeric-ids -aH --whole-file --sparse --one-file-system`;
# zfs-fuse has no POSIX ACLs, so -A (and -X with it) would fail here.
RSYNC = ("rsync", "-aH", "--numeric-ids", "--whole-file", "--sparse", "--one-file-system")
# ZFSPoolPlugin::parse_volname: an optional base volume, then the volume itself.
VOLNAME = re.compile(
    r"^(?:(?P<basename>(?:base|basevol)-(?P<basevmid>\d+)-\S+)/)?"
    r"(?P<name>(?P<kind>base|basevol|vm|subvol)-(?P<vmid>\d+)-\S+)$"
)
MOUNT_KEY = re.compile(r"^(?:rootfs|mp\d+|unused\d+)$")
POWER_TASKS = ("vzstart", "vzstop", "vzshutdown", "vzreboot")
SNAPSHOT_TASKS = ("vzsnapshot", "vzdelsnapshot", "vzrollback")
HANDLED_TASKS = ("vzcreate", "vzclone", "vztemplate", "vzdestroy", "resize", *POWER_TASKS, *SNAPSHOT_TASKS)
# Tasks whose storage work happens at the body's `pause`, recognised by the lock the body has just set.
PAUSE_LOCKS = {"vzdestroy": "destroyed", "vzdelsnapshot": "snapshot-delete", "vzrollback": "rollback"}


class StorageError(Exception):
    """A storage operation failed; the message is what PVE's task log would say (ends the task)."""


class StorageAction(NamedTuple):
    """One thing the glue did to the pool, for tests to assert on.

    op: create | rename | snapshot | clone | copy | refquota | destroy | rollback | refuse | start | stop;
    ``src`` and ``dst`` by op: create (seed snapshot or "", dataset); rename (old, new); snapshot (dataset,
    dataset@snap); clone (origin snapshot, dataset); copy (source dataset or snapshot, dataset); refquota
    (dataset, bytes); destroy (dataset or snapshot, ""); rollback (snapshot, dataset); refuse (dataset, PVE's
    message); start/stop (vmid, "").
    """

    op: str
    src: str
    dst: str


@dataclass(frozen=True)
class ZfsVolume:
    """A volume of a zfspool storage, parsed as ZFSPoolPlugin::parse_volname does."""

    storage: str
    volname: str
    """``subvol-101-disk-0``, ``basevol-100-disk-0`` or ``basevol-100-disk-0/subvol-101-disk-0``."""
    name: str
    """The dataset's last component (a linked clone's own name, without its base)."""
    vmid: int
    basename: str | None
    is_base: bool

    @property
    def volid(self) -> str:
        return f"{self.storage}:{self.volname}"

    @property
    def is_subvol(self) -> bool:
        return self.name.startswith(("subvol-", "basevol-"))


def parse_volname(storage: str, volname: str) -> ZfsVolume:
    found = VOLNAME.match(volname)
    if not found:
        raise StorageError(f"unable to parse zfs volume name '{volname}'")
    return ZfsVolume(
        storage=storage,
        volname=volname,
        name=found["name"],
        vmid=int(found["vmid"]),
        basename=found["basename"],
        is_base=found["kind"] in ("base", "basevol"),
    )


def volume_owner(volume: str) -> int | None:
    """fakepve.lxc.volume_owner as PVE answers it: the vmid of the volume itself, not of its base."""
    found = re.search(r"-(\d+)-disk-\d+", volume.rsplit("/", 1)[-1])
    return int(found.group(1)) if found else None


def flag(value: object) -> bool:
    """A boolean API parameter as the schema check leaves it (1, True or "1")."""
    return str(value) in ("1", "True", "true")


def split_mount(value: str) -> tuple[str, dict[str, str]]:
    """A rootfs/mpN value: (volume, {option: value})."""
    volume, *rest = str(value).split(",")
    return volume, dict(part.partition("=")[::2] for part in rest if "=" in part)


def size_bytes(text: str | None) -> int:
    """A config size (8G, 512M, 0) in bytes; 0 for none."""
    found = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)", (text or "0").strip(), re.I)
    if not found:
        raise StorageError(f"unable to parse size '{text}'")
    return int(float(found[1]) * 1024 ** " KMGT".index(found[2].upper() or " "))


class ActionLog:
    """StorageActions in order; appended from worker threads, read from the test."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[StorageAction] = []

    def add(self, op: str, src: str, dst: str) -> None:
        with self._lock:
            self._items.append(StorageAction(op, src, dst))

    def snapshot(self) -> list[StorageAction]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


# ------------------------------------------------------------------------------------- the /etc/pve side

PVE_LXC_DIR = Path("/etc/pve/lxc")  # what pmxcfs shows on a PVE node (a link to nodes/<node>/lxc there)
MIRROR_MANIFEST = LAB_DIR / "pve" / "mirrored-confs"  # files a lab run wrote, so a crashed run's are removed
# Keys PVE's write_pct_config never writes as `key: value` lines.
UNWRITTEN_KEYS = frozenset({"digest", "description", "pending", "snapshots", "snapname", "lxc"})
RAW_LXC_LINE = re.compile(r"^(lxc\.[a-z0-9_.-]+)(?::|\s*=)\s*(.*?)\s*$")


def raw_lxc_lines(conf: str) -> list[str]:
    """The raw ``lxc.*`` lines of a config file's main section, as PVE writes them back (``key: value``);
    PVE's parser accepts ``key = value`` too."""
    lines = []
    for line in conf.partition("\n[")[0].splitlines():
        found = RAW_LXC_LINE.match(line.strip())
        if found:
            lines.append(f"{found[1]}: {found[2]}")
    return lines


def _conf_value(value: Any) -> str:
    return str(int(value)) if isinstance(value, bool) else str(value)


def _conf_section(config: dict[str, Any], raw: list[str]) -> str:
    """One section as pve-container's write_pct_config generates it: the description as ``#`` lines,
    then the keys in sorted order, then the raw ``lxc.*`` lines."""
    lines = [f"#{line}" for line in str(config.get("description") or "").splitlines()]
    lines += [f"{k}: {_conf_value(config[k])}" for k in sorted(config) if k not in UNWRITTEN_KEYS]
    return "".join(f"{line}\n" for line in [*lines, *raw])


def render_pve_conf(
    config: dict[str, Any],
    *,
    raw: list[str] | None = None,
    pending: dict[str, Any] | None = None,
    snapshots: dict[str, dict[str, Any]] | None = None,
) -> str:
    """``/etc/pve/lxc/<vmid>.conf`` for a container: main section, ``[pve:pending]`` (a pending delete is
    listed in its ``delete:`` key), then one ``[snapname]`` section per snapshot in name order."""
    text = _conf_section(config, raw or [])
    if pending:
        changes = {k: v for k, v in pending.items() if v is not None}
        deletes = sorted(k for k, v in pending.items() if v is None)
        text += "\n[pve:pending]\n" + _conf_section(
            {**changes, **({"delete": ",".join(deletes)} if deletes else {})}, []
        )
    for name in sorted(snapshots or {}):
        text += f"\n[{name}]\n" + _conf_section(dict((snapshots or {})[name]), [])
    return text


class PveConfigMirror:
    """Writes each fake container's config to ``<root>/<vmid>.conf`` as pmxcfs would show it.

    The ``lxc.*`` lines of a file it wrote are kept when it writes that file again (Phoenix adds them over
    SSH; PVE keeps them). A file for a new guest starts without any, as a new config on PVE does. Only files
    this mirror wrote are ever removed; directories it had to create are removed at :meth:`cleanup`.
    Called on the fake's event loop only, so syncs never overlap.
    """

    def __init__(self, root: Path = PVE_LXC_DIR, manifest: Path = MIRROR_MANIFEST) -> None:
        self.root, self.manifest = root, manifest
        self._owned: set[int] = set()
        self._made: list[Path] = []

    def path(self, vmid: int) -> Path:
        return self.root / f"{vmid}.conf"

    def start(self) -> None:
        """Remove the files a crashed lab run left (listed in the manifest) and make the directory."""
        if self.manifest.exists():
            for name in self.manifest.read_text().split():
                (self.root / name).unlink(missing_ok=True)
            self.manifest.unlink()
        for directory in (self.root.parent, self.root):
            if not directory.exists():
                directory.mkdir(mode=0o755)
                self._made.append(directory)

    def sync(self, cts: list[Any]) -> None:
        """Match the files to ``cts`` (fakepve FakeCt objects): write changed ones, remove gone ones."""
        seen: set[int] = set()
        for ct in cts:
            vmid = int(ct.vmid)
            seen.add(vmid)
            path = self.path(vmid)
            current = path.read_text() if vmid in self._owned and path.exists() else None
            text = render_pve_conf(
                ct.config, raw=raw_lxc_lines(current or ""), pending=ct.pending, snapshots=ct.snapshots
            )
            if text != current:
                tmp = path.with_name(f".{path.name}.lab-tmp")
                tmp.write_text(text)
                tmp.replace(path)  # atomic, as pmxcfs's writes are: a reader never sees half a file
                self._own(vmid)
        for vmid in sorted(self._owned - seen):
            self.path(vmid).unlink(missing_ok=True)
            self._owned.discard(vmid)
            self._save()

    def cleanup(self) -> None:
        for vmid in sorted(self._owned):
            self.path(vmid).unlink(missing_ok=True)
        self._owned.clear()
        self.manifest.unlink(missing_ok=True)
        for directory in reversed(self._made):
            with contextlib.suppress(OSError):  # not empty: something else put files there meanwhile
                directory.rmdir()
        self._made.clear()

    def _own(self, vmid: int) -> None:
        if vmid not in self._owned:
            self._owned.add(vmid)
            self._save()

    def _save(self) -> None:
        self.manifest.parent.mkdir(parents=True, exist_ok=True)
        self.manifest.write_text("".join(f"{self.path(v).name}\n" for v in sorted(self._owned)))


# ------------------------------------------------------------------------------------- the pool side


class ZfsPoolStorage:
    """What ZFSPoolPlugin and pve-container do on the pool, for volumes under ``zpool.data``. Blocking calls,
    each under a deadline; errors are StorageError worded as PVE's task log words them ("zfs error: ...")."""

    def __init__(self, zpool: LabZpool, seed: str, actions: ActionLog) -> None:
        self.zpool, self.seed, self.actions = zpool, seed, actions

    def dataset(self, volume: ZfsVolume) -> str:
        return f"{self.zpool.data}/{volume.name}"

    # ------------------------------------------------------------------ primitives

    def zfs(self, *args: str, timeout: float = ZFS_TIMEOUT_S) -> str:
        """ZFSPoolPlugin::zfs_request: stdout, or die "zfs error: <stderr>"."""
        try:
            proc = run([ZFS, *args], check=False, timeout=timeout)
        except subprocess.TimeoutExpired as error:
            raise StorageError(
                f"zfs error: command 'zfs {' '.join(args)}' timed out after {timeout:g}s"
            ) from error
        if proc.returncode != 0:
            raise StorageError(f"zfs error: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout

    def exists(self, name: str) -> bool:
        return run([ZFS, "list", "-H", "-o", "name", name], check=False).returncode == 0

    def mountpoint(self, dataset: str) -> Path:
        """The dataset's mountpoint, mounting it first if needed (zfs-fuse remounts lazily after a rename)."""
        mountpoint, mounted = self.zfs("get", "-H", "-o", "value", "mountpoint,mounted", dataset).split()
        if mounted != "yes":
            self.zfs("mount", dataset)
        return Path(mountpoint)

    def send_recv(self, snapshot: str, dest: str) -> None:
        """zfs send | zfs recv: a new dataset with the snapshot's files and no origin (the received copy of
        the snapshot itself is destroyed again)."""
        send = subprocess.Popen([ZFS, "send", snapshot], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert send.stdout is not None
        try:
            recv = subprocess.run(
                [ZFS, "recv", dest],
                stdin=send.stdout,
                capture_output=True,
                text=True,
                timeout=COPY_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise StorageError(f"zfs error: zfs send {snapshot} | zfs recv {dest} timed out") from error
        finally:
            send.stdout.close()  # send gets SIGPIPE if recv gave up early
            try:
                send.wait(timeout=ZFS_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                send.kill()
                send.wait()
        if recv.returncode != 0 or send.returncode != 0:
            raise StorageError(f"zfs error: {recv.stderr.strip() or f'zfs send {snapshot} failed'}")
        self.zfs("destroy", f"{dest}@{snapshot.partition('@')[2]}")

    def set_refquota(self, dataset: str, size: int) -> None:
        self.zfs("set", f"refquota={size or 'none'}", dataset)
        self.actions.add("refquota", dataset, str(size))

    def destroy_quietly(self, dataset: str) -> None:
        """Undo of a half-made volume: best effort, the original error is what the task reports."""
        if self.exists(dataset):
            run([ZFS, "destroy", "-r", dataset], check=False)

    # ------------------------------------------------------------------- operations

    def alloc(self, volume: ZfsVolume, size: int, *, fill: bool) -> None:
        """alloc_image (a subvol with refquota), filled with the rootfs when ``fill`` (PVE: the template's
        tar is extracted into it)."""
        dataset = self.dataset(volume)
        if self.exists(dataset):
            raise StorageError(f"zfs error: cannot create '{dataset}': dataset already exists")
        try:  # the storage lock is held: nothing else makes this dataset meanwhile
            if fill:
                self.send_recv(self.seed, dataset)
            else:
                self.zfs("create", dataset)
            self.actions.add("create", self.seed if fill else "", dataset)
            if size:
                self.set_refquota(dataset, size)
        except StorageError:
            self.destroy_quietly(dataset)
            raise

    def create_base(self, volume: ZfsVolume) -> str:
        """create_base: subvol-N -> basevol-N (keeping a linked clone's origin), then @__base__."""
        if volume.is_base:
            raise StorageError("create_base not possible with base image")
        old = self.dataset(volume)
        new = f"{self.zpool.data}/{re.sub(r'^subvol-', 'basevol-', re.sub(r'^vm-', 'base-', volume.name))}"
        self.zfs("rename", old, new)
        self.actions.add("rename", old, new)
        try:
            self.zfs("snapshot", f"{new}@{BASE_SNAPSHOT}")
        except StorageError:
            run(
                [ZFS, "rename", new, old], check=False
            )  # as it was: the task fails and the config keeps `old`
            raise
        self.actions.add("snapshot", new, f"{new}@{BASE_SNAPSHOT}")
        return new

    def clone_linked(self, base: ZfsVolume, new_name: str) -> None:
        """clone_image: `zfs clone <base>@__base__ <pool>/<new name> -o refquota=<base's>`."""
        if not base.is_base:
            raise StorageError("clone_image only works on base images")
        origin = f"{self.dataset(base)}@{BASE_SNAPSHOT}"
        dataset = f"{self.zpool.data}/{new_name}"
        refquota = self.zfs("get", "-H", "-p", "-o", "value", "refquota", self.dataset(base)).strip()
        self.zfs("clone", origin, dataset)
        try:
            if refquota not in ("0", "-", "none"):
                self.zfs("set", f"refquota={refquota}", dataset)
        except StorageError:
            self.destroy_quietly(dataset)
            raise
        self.actions.add("clone", origin, dataset)

    def copy_full(self, source: ZfsVolume, target: ZfsVolume, size: int, snapname: str | None) -> None:
        """pve-container copy_volume: allocate, then rsync the source's files (from a named snapshot when
        asked: the lab has PVE's snapshot only where something made it on the pool, so it is sent instead)."""
        src, dataset = self.dataset(source), self.dataset(target)
        if self.exists(dataset):
            raise StorageError(f"zfs error: cannot create '{dataset}': dataset already exists")
        try:
            if snapname:
                if not self.exists(f"{src}@{snapname}"):
                    raise StorageError(
                        f"lab: snapshot '{src}@{snapname}' is not on the pool (the lab does not mirror PVE "
                        "snapshots); clone from the current state or make the ZFS snapshot first"
                    )
                self.send_recv(f"{src}@{snapname}", dataset)
            else:
                self.zfs("create", dataset)
                argv = [*RSYNC, f"{self.mountpoint(src)}/", f"{self.mountpoint(dataset)}/"]
                try:
                    proc = run(argv, check=False, timeout=COPY_TIMEOUT_S)
                except subprocess.TimeoutExpired as error:
                    raise StorageError(f"command '{' '.join(argv)}' timed out") from error
                if proc.returncode != 0:
                    raise StorageError(f"command '{' '.join(argv)}' failed: exit code {proc.returncode}")
            if size:
                self.set_refquota(dataset, size)
        except StorageError:
            self.destroy_quietly(dataset)
            raise
        self.actions.add("copy", f"{src}@{snapname}" if snapname else src, dataset)

    def snapshot(self, volume: ZfsVolume, snapname: str) -> None:
        """volume_snapshot."""
        snapshot = f"{self.dataset(volume)}@{snapname}"
        self.zfs("snapshot", snapshot)
        self.actions.add("snapshot", self.dataset(volume), snapshot)

    def delete_snapshot(self, volume: ZfsVolume, snapname: str) -> None:
        """volume_snapshot_delete."""
        snapshot = f"{self.dataset(volume)}@{snapname}"
        self.zfs("destroy", snapshot)
        self.actions.add("destroy", snapshot, "")

    def rollback(self, volume: ZfsVolume, snapname: str) -> None:
        """volume_rollback_is_possible, then volume_snapshot_rollback."""
        dataset = self.dataset(volume)
        listing = self.zfs("list", "-H", "-o", "name", "-t", "snapshot", "-s", "creation", "-r", dataset)
        snaps = [line.partition("@")[2] for line in listing.split() if line.startswith(dataset + "@")]
        if snapname not in snaps:
            raise StorageError(f"can't rollback, snapshot '{snapname}' does not exist on '{volume.volid}'")
        if snaps[-1] != snapname:
            raise StorageError(
                f"can't rollback, '{snapname}' is not most recent snapshot on '{volume.volid}'"
            )
        self.zfs("rollback", f"{dataset}@{snapname}")
        self.actions.add("rollback", f"{dataset}@{snapname}", dataset)

    def check_unused_base(self, volume: ZfsVolume) -> None:
        """vdisk_free's volume_is_base_and_used: a base volume that a listed volume of the storage (origin on
        the pool, one level below it, as ZFSPoolPlugin lists them) still uses is refused."""
        if not volume.is_base:
            return
        base = self.dataset(volume)
        listing = self.zfs(
            "list", "-H", "-o", "name,origin", "-t", "filesystem,volume", "-d", "1", self.zpool.data
        )
        for line in listing.splitlines():
            name, origin = line.split("\t")
            if origin.partition("@")[0] == base and name != base:
                message = f"base volume '{volume.volname}' is still in use by linked clones"
                self.actions.add("refuse", base, message)
                raise StorageError(message)

    def free(self, volume: ZfsVolume) -> None:
        """free_image: `zfs destroy -r`; a dataset already gone is fine (zfs_delete_zvol)."""
        dataset = self.dataset(volume)
        try:
            self.zfs("destroy", "-r", dataset)
        except StorageError as error:
            if "does not exist" not in str(error):
                raise
            return
        self.actions.add("destroy", dataset, "")

    def free_all(self, volumes: list[ZfsVolume]) -> None:
        """The volumes of a destroyed guest: every base check first, so a refusal destroys nothing."""
        for volume in volumes:
            self.check_unused_base(volume)
        for volume in volumes:
            self.free(volume)

    def running(self, vmid: str) -> bool:
        """Whether the guest's real LXC container runs (pct shim); False when it has no dataset."""
        status = pct_shim("status", vmid)
        return status.returncode == 0 and status.stdout.strip() == "status: running"

    def power(self, vmid: str, *, running: bool) -> None:
        """Start or stop the guest's real LXC container through the lab's pct shim (no-op if already so)."""
        if self.running(vmid) == running:
            return
        proc = pct_shim("start" if running else "stop", vmid)
        if proc.returncode != 0:
            raise StorageError(proc.stderr.strip() or f"pct {'start' if running else 'stop'} {vmid} failed")
        self.actions.add("start" if running else "stop", vmid, "")

    def orphans(self) -> list[str]:
        """Guest volumes on the pool that no guest owns (what a crashed test left behind)."""
        listing = self.zfs("list", "-H", "-o", "name", "-t", "filesystem,volume", "-d", "1", self.zpool.data)
        prefix = self.zpool.data + "/"
        return [
            name for name in listing.split() if name.startswith(prefix) and VOLNAME.match(name[len(prefix) :])
        ]


# --------------------------------------------------------------------------------- the fakepve side


@dataclass
class _TaskMark:
    """A storage-relevant task in flight: which guest, the request's values, whether a hook did its work."""

    ttype: str
    tid: int
    vm: Any
    values: dict[str, Any]
    volumes: list[ZfsVolume] = field(default_factory=list)
    lock_before: str | None = None
    done: bool = False


_REQUEST: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("lab_request", default=None)
_TASK: contextvars.ContextVar[_TaskMark | None] = contextvars.ContextVar("lab_task", default=None)


def reset(var: contextvars.ContextVar[T], token: contextvars.Token[T]) -> None:
    """var.reset(token), except when a task the fake never finished is closed by the garbage collector (the
    session ended first): that runs the finally blocks outside the context the token came from."""
    with contextlib.suppress(ValueError):
        var.reset(token)


class FakePveZfsGlue:
    """Hooks on one FakePve (see the module docstring). ``install``/``uninstall`` from the test thread; every
    hook runs on the fake's event loop."""

    HOOKS = ("answer", "task", "ceph_io", "pause")

    def __init__(self, pve: Any, storage: ZfsPoolStorage, mirror: PveConfigMirror | None = None) -> None:
        self.pve, self.storage, self.mirror = pve, storage, mirror
        self.active = False
        self._originals: dict[str, Any] = {}
        self._original_owner: Callable[[str], int | None] | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._inflight = 0

    @property
    def actions(self) -> ActionLog:
        return self.storage.actions

    @property
    def busy(self) -> bool:
        return self._inflight > 0

    def install(self) -> None:
        import fakepve.lxc

        if self.active:
            return
        for name in self.HOOKS:
            if name in vars(self.pve):
                raise LabError(f"FakePve.{name} is already hooked: another glue is installed")
            self._originals[name] = getattr(self.pve, name)
            setattr(self.pve, name, getattr(self, "_" + name))
        self._original_owner = fakepve.lxc.volume_owner
        fakepve.lxc.volume_owner = volume_owner
        self.active = True

    def uninstall(self) -> None:
        import fakepve.lxc

        if not self.active:
            return
        self.active = False  # tasks still running in the fake from now on pass straight through
        for name in self.HOOKS:
            if name in vars(self.pve):
                delattr(self.pve, name)
        if self._original_owner is not None:
            fakepve.lxc.volume_owner = self._original_owner
        self._originals.clear()

    # ---------------------------------------------------------------------------------- helpers

    def sync_configs(self) -> None:
        """Mirror the fake's container configs to /etc/pve/lxc (see PveConfigMirror); on the fake's loop."""
        if self.active and self.mirror is not None:
            self.mirror.sync(self.pve.cts)

    def glued(self, volume: str) -> ZfsVolume | None:
        """The parsed volume if it lives on a zfspool storage backed by the lab pool's data dataset."""
        sid, colon, volname = volume.partition(":")
        store = self.pve.storages.get(sid) if colon else None
        if not store or store.get("type") != "zfspool" or store.get("pool") != self.storage.zpool.data:
            return None
        return parse_volname(sid, volname)

    def guest_volumes(self, config: dict[str, Any]) -> list[tuple[str, ZfsVolume, dict[str, str]]]:
        """(key, volume, options) of the config's glued volumes, rootfs first."""
        out = []
        for key in sorted((k for k in config if MOUNT_KEY.match(k)), key=lambda k: (k != "rootfs", k)):
            volume, options = split_mount(config[key])
            parsed = self.glued(volume)
            if parsed is not None:
                out.append((key, parsed, options))
        return out

    async def storage_op(self, sid: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """fn in a worker thread under the storage's lock (PVE's cluster_lock_storage); StorageError and a
        lock timeout end the task (TaskError) with PVE's wording."""
        from fakepve import TaskError

        lock = self._locks.setdefault(sid, asyncio.Lock())
        try:
            async with asyncio.timeout(STORAGE_LOCK_TIMEOUT_S):
                await lock.acquire()
        except TimeoutError:
            raise TaskError(
                f"can't lock file '/var/lock/pve-manager/pve-storage-{sid}' - got timeout"
            ) from None
        try:
            return await self.in_thread(fn, *args, **kwargs)
        finally:
            lock.release()

    async def in_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """fn in a worker thread, counted (teardown waits for it); a StorageError ends the task."""
        from fakepve import TaskError

        self._inflight += 1
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except StorageError as error:
            raise TaskError(str(error)) from error
        finally:
            self._inflight -= 1

    # ------------------------------------------------------------------------------------ hooks

    async def _answer(self, request: Any, match: Any, params: Any, user: Any, call: Any = None) -> Any:
        """Keep the call's validated values for the task it may start (the task inherits the context)."""
        original = self._originals["answer"]
        try:
            return await self._answer_observed(original, request, match, params, user, call)
        finally:
            if request.method != "GET":  # whatever it changed (or undid on failure) shows in /etc/pve
                self.sync_configs()

    async def _answer_observed(
        self, original: Any, request: Any, match: Any, params: Any, user: Any, call: Any
    ) -> Any:
        if call is None:
            return await original(request, match, params, user, call)

        async def observed(matched: Any, values: dict[str, Any]) -> Any:
            token = _REQUEST.set(values)
            try:
                return await call(matched, values)
            finally:
                reset(_REQUEST, token)

        return await original(request, match, params, user, observed)

    async def _task(self, node: Any, ttype: str, tid: Any, user: Any, body: Any, **kwargs: Any) -> Any:
        original = self._originals["task"]
        vm = kwargs.get("vm")
        if not self.active or ttype not in HANDLED_TASKS or vm is None:
            return await original(node, ttype, tid, user, body, **kwargs)
        mark = _TaskMark(ttype=ttype, tid=int(tid), vm=vm, values=dict(_REQUEST.get() or {}))

        async def observed() -> Any:
            token = _TASK.set(mark)
            try:
                return await self._run_body(mark, body)
            finally:
                reset(_TASK, token)
                self.sync_configs()  # a task that outlives its request (time_scale > 0) ends here

        return await original(node, ttype, tid, user, observed, **kwargs)

    async def _ceph_io(self, vm: Any, keys: Any = None) -> Any:
        """The create and clone bodies' disk I/O point: the guest's volumes are allocated, not yet used."""
        mark = _TASK.get()
        if self.active and mark is not None and mark.vm is vm and not mark.done:
            if mark.ttype == "vzcreate":
                mark.done = True
                await self._create(mark, list(keys or []))
            elif mark.ttype == "vzclone":
                mark.done = True
                await self._clone(mark, list(keys or []))
            elif mark.ttype == "vzsnapshot":
                mark.done = True
                await self._each_volume(mark, self.storage.snapshot, str(mark.values.get("snapname")))
        return await self._originals["ceph_io"](vm, keys)

    async def _pause(self, secs: Any) -> Any:
        """The destroy, delete-snapshot and rollback bodies pause right after locking the guest for the
        operation (PAUSE_LOCKS) and before changing its config."""
        mark = _TASK.get()
        if (
            self.active
            and mark is not None
            and not mark.done
            and mark.ttype in PAUSE_LOCKS
            and mark.vm.lock == PAUSE_LOCKS[mark.ttype]
        ):
            mark.done = True
            snapname = str(mark.values.get("snapname"))
            if mark.ttype == "vzdelsnapshot":
                await self._each_volume(mark, self.storage.delete_snapshot, snapname)
            elif mark.ttype == "vzrollback":
                await self.in_thread(self.storage.power, str(mark.tid), running=False)
                await self._each_volume(mark, self.storage.rollback, snapname)
            else:
                try:
                    await self._destroy(mark)
                except BaseException:
                    mark.vm.lock = mark.lock_before  # PVE writes nothing before the volumes are freed
                    raise
        return await self._originals["pause"](secs)

    # ------------------------------------------------------------------------------ task bodies

    async def _run_body(self, mark: _TaskMark, body: Any) -> Any:
        from fakepve import TaskError

        ct = mark.vm
        mark.lock_before = ct.lock
        mark.volumes = [volume for _key, volume, _opts in self.guest_volumes(ct.config)]
        if mark.ttype == "vztemplate":
            renamed = await self._template(mark)
            note = await body()
            self._check_template(mark, renamed)
            return note
        note = await body()
        if not self.active:
            return note
        if mark.ttype in POWER_TASKS or (mark.ttype == "vzcreate" and mark.vm.status == "running"):
            await self._sync_power(mark)
        if mark.ttype == "resize":
            await self._resize(mark)
        elif mark.ttype == "vzdestroy" and mark.volumes and not mark.done:
            raise TaskError("lab glue: fakepve destroyed the CT without reaching the storage hook (pause)")
        elif mark.ttype in SNAPSHOT_TASKS and mark.volumes and not mark.done:
            raise TaskError(f"lab glue: fakepve's {mark.ttype} never reached the storage hook")
        elif mark.ttype in ("vzcreate", "vzclone") and not mark.done and self.guest_volumes(ct.config):
            raise TaskError(f"lab glue: fakepve's {mark.ttype} never reached the storage hook (ceph_io)")
        return note

    async def _create(self, mark: _TaskMark, keys: list[str]) -> None:
        ct, made = mark.vm, []
        try:
            for key, volume, options in self.guest_volumes({k: ct.config[k] for k in keys if k in ct.config}):
                size = size_bytes(options.get("size"))
                await self.storage_op(volume.storage, self.storage.alloc, volume, size, fill=key == "rootfs")
                made.append(volume)
        except Exception:
            for volume in made:  # PVE destroys what it allocated when the create fails
                await self.in_thread(self.storage.destroy_quietly, self.storage.dataset(volume))
            raise

    async def _clone(self, mark: _TaskMark, keys: list[str]) -> None:
        from fakepve import TaskError

        new, values = mark.vm, mark.values
        source = self.pve.ct(mark.tid)
        if source is None:
            raise TaskError(f"lab glue: clone source CT {mark.tid} vanished")
        snapname = values.get("snapname")
        source_config = source.snapshots[snapname] if snapname else source.config
        full = values.get("full")
        full = not source.template if full is None else flag(full)
        made: list[str] = []
        try:
            for key in sorted(keys, key=lambda k: (k != "rootfs", k)):
                new_volume, options = split_mount(new.config[key])
                target = self.glued(new_volume)
                src = self.glued(split_mount(source_config[key])[0]) if key in source_config else None
                if target is None and src is None:
                    continue
                if target is None or src is None:
                    raise TaskError(
                        f"lab glue: a clone between local-zfs and another storage ({key}) is not simulated"
                    )
                if full:
                    size = size_bytes(options.get("size"))
                    await self.storage_op(src.storage, self.storage.copy_full, src, target, size, snapname)
                    made.append(self.storage.dataset(target))
                    continue
                await self.storage_op(src.storage, self.storage.clone_linked, src, target.name)
                made.append(self.storage.dataset(target))
                # PVE's clone_image returns "<base>/<name>": that is the volume id the config carries.
                value = str(new.config[key])
                new.config[key] = f"{src.storage}:{src.name}/{target.name}{value[len(new_volume) :]}"
        except Exception:
            for dataset in made:
                await self.in_thread(self.storage.destroy_quietly, dataset)
            raise

    async def _template(self, mark: _TaskMark) -> list[str]:
        renamed: list[tuple[ZfsVolume, str]] = []
        try:
            for volume in mark.volumes:
                renamed.append(
                    (volume, await self.storage_op(volume.storage, self.storage.create_base, volume))
                )
        except Exception:
            for volume, new in reversed(renamed):  # put the earlier volumes back: the config is not changed
                await self.in_thread(self._undo_base, volume, new)
            raise
        return [new for _volume, new in renamed]

    def _undo_base(self, volume: ZfsVolume, new: str) -> None:
        run([ZFS, "destroy", f"{new}@{BASE_SNAPSHOT}"], check=False)
        run([ZFS, "rename", new, self.storage.dataset(volume)], check=False)

    def _check_template(self, mark: _TaskMark, renamed: list[str]) -> None:
        from fakepve import TaskError

        names = [self.storage.dataset(volume) for _key, volume, _opts in self.guest_volumes(mark.vm.config)]
        if names != renamed:
            raise TaskError(f"lab glue: fakepve named the template's volumes {names}, the pool has {renamed}")

    async def _each_volume(
        self, mark: _TaskMark, fn: Callable[[ZfsVolume, str], None], snapname: str
    ) -> None:
        for volume in mark.volumes:
            await self.storage_op(volume.storage, fn, volume, snapname)

    async def _sync_power(self, mark: _TaskMark) -> None:
        """Make the real LXC container (the pct shim's) match the power state the fake's body just set; if it
        cannot, the fake's state goes back and the task fails with the shim's words (PVE's)."""
        ct, vmid = mark.vm, str(mark.tid)
        if not any(key == "rootfs" for key, _volume, _opts in self.guest_volumes(ct.config)):
            return  # not on the lab pool: nothing real to start
        want = ct.status == "running"
        if mark.ttype == "vzreboot" and want:
            await self.in_thread(self.storage.power, vmid, running=False)
        try:
            await self.in_thread(self.storage.power, vmid, running=want)
        except Exception:
            ct.status, ct.pid = ("stopped", None) if want else ("running", ct.pid)
            raise

    async def _destroy(self, mark: _TaskMark) -> None:
        from fakepve import TaskError

        # PVE's check_running asks the host, not the config: a container started by `pct start` over SSH runs
        # although the fake says stopped. `force=1` stops it (the fake has already marked it stopped).
        running = bool(mark.volumes) and await self.in_thread(self.storage.running, str(mark.tid))
        if running:
            if not flag(mark.values.get("force")):
                raise TaskError(f"unable to destroy CT {mark.tid} - container is running")
            await self.in_thread(self.storage.power, str(mark.tid), running=False)
        by_storage: dict[str, list[ZfsVolume]] = {}
        for volume in mark.volumes:
            by_storage.setdefault(volume.storage, []).append(volume)
        for sid, volumes in by_storage.items():
            await self.storage_op(sid, self.storage.free_all, volumes)

    async def _resize(self, mark: _TaskMark) -> None:
        disk = str(mark.values.get("disk") or "")
        if disk not in mark.vm.config:
            return
        volume, options = split_mount(mark.vm.config[disk])
        parsed = self.glued(volume)
        if parsed is not None and parsed.is_subvol:
            size = size_bytes(options.get("size"))
            await self.storage_op(
                parsed.storage, self.storage.set_refquota, self.storage.dataset(parsed), size
            )


# ------------------------------------------------------------------------------------ the host object


@dataclass
class LabHost:
    """The lab as one Proxmox host: API (fakepve with real ZFS storage), SSH, the pool, LXC via ``pct``."""

    pve: PveLab
    zpool: LabZpool
    sshd: LabSshd
    rootfs: Path
    glue: FakePveZfsGlue = field(repr=False)
    node: str = NODE
    storage: str = ZFS_STORAGE
    gpu_nodes: list[Path] = field(default_factory=list)  # the TEST-ONLY stand-in nodes this lab made

    def client(self) -> PveClient:
        """A new API client (root@pam, lab-fast retries); close it when done."""
        return self.pve.client()

    def target(self) -> ApiTarget:
        return self.pve.target()

    def ssh_target(self) -> SshTarget:
        return self.sshd.target()

    @property
    def actions(self) -> list[StorageAction]:
        """What the glue did to the pool since the test began, oldest first."""
        return self.glue.actions.snapshot()

    def dataset(self, vmid: int, *, template: bool = False, disk: int = 0) -> str:
        """PVE's dataset of a container's volume (a linked clone's too: its base is only in the volume id)."""
        return f"{self.zpool.data}/{'basevol' if template else 'subvol'}-{vmid}-disk-{disk}"

    def pct(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """The lab's pct shim, run here (tests over SSH run `pct` through the sshd instead)."""
        return pct_shim(*args, input=input)

    def pve_conf(self, vmid: int) -> Path:
        """``/etc/pve/lxc/<vmid>.conf`` as the glue mirrors it (pmxcfs's view on a real node)."""
        assert self.glue.mirror is not None
        return self.glue.mirror.path(vmid)


def clean_pool(storage: ZfsPoolStorage, zpool: LabZpool) -> None:
    """Stop the containers on, and destroy, every guest volume on the pool (with its snapshots and clones):
    what the fixture does before and after each test, so a crashed test's leftovers never reach the next."""
    doomed = storage.orphans()
    if doomed:
        zpool.destroy_all_but(
            {
                n
                for n in zpool.datasets()
                if not any(n == d or n.startswith((d + "@", d + "/")) for d in doomed)
            }
        )


@contextlib.contextmanager
def running_lab_host(
    pve: PveLab, zpool: LabZpool, sshd: LabSshd, rootfs: Path, seed: str, *, mirror_root: Path = PVE_LXC_DIR
) -> Iterator[LabHost]:
    """The glue installed on ``pve`` while the block runs; afterwards tasks still running in the fake are
    waited for, the containers on volumes made meanwhile are stopped and those volumes destroyed, and the
    mirrored /etc/pve/lxc files removed. Resetting the fake itself is the caller's (``fresh_pve``).

    It owns ``rpool/data`` while it runs: guest volumes found there at the start belong to no guest of a
    fresh fake (a crashed test's), and are destroyed first.
    """
    require_lab("zfs-fuse", "zfs", "lxc-start", "rsync")
    storage = ZfsPoolStorage(zpool, seed, ActionLog())
    clean_pool(storage, zpool)
    mirror = PveConfigMirror(mirror_root)
    mirror.start()
    glue = FakePveZfsGlue(pve.pve, storage, mirror)
    pve.call(glue.install)
    try:
        pve.call(glue.sync_configs)
        with standin_gpu_nodes() as nodes:
            yield LabHost(pve=pve, zpool=zpool, sshd=sshd, rootfs=rootfs, glue=glue, gpu_nodes=nodes)
    finally:
        try:
            wait_until(
                lambda: not pve.call(lambda: glue.busy),
                timeout=SETTLE_TIMEOUT_S,
                what="the lab glue's storage work in the fake to finish",
                interval=0.05,
            )
        finally:
            pve.call(glue.uninstall)
            mirror.cleanup()
            clean_pool(storage, zpool)


# ----------------------------------------------------------------- TEST-ONLY stand-in GPU device nodes

# The nodes the lab's GPU guests pass through (their devN keys: GPU minors 0 and 1 of the lab's host.json,
# then the control devices), as the host driver would have made them.
STANDIN_DEVICES = ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools")
STANDIN_MANIFEST = LAB_DIR / "pve" / "standin-devices"  # nodes a lab run made, so a crashed run's go too
NVIDIA_MAJOR = 195  # the NVIDIA driver's character-device major; with no driver loaded, opening one fails


def make_standin_node(node: Path) -> None:
    """TEST-ONLY. One stand-in node (see :func:`standin_gpu_nodes`): a character device of the NVIDIA
    major, its minor the name's place in :data:`STANDIN_DEVICES`."""
    run(["mknod", "-m", "0666", str(node), "c", str(NVIDIA_MAJOR), str(STANDIN_DEVICES.index(node.name))])


@contextlib.contextmanager
def standin_gpu_nodes(dev: Path = Path("/dev")) -> Iterator[list[Path]]:
    """TEST-ONLY. Character devices at the paths the lab's GPU guests pass through, so the LXC guest
    provider's device check (run over the lab's sshd, on this machine) finds them as it would on a GPU
    host; they lead nowhere (no NVIDIA driver here). Only missing nodes are made, and only those are
    removed afterwards: a machine with real GPUs keeps its own. Yields the nodes made (tests remove one
    to play a host whose driver has not made it)."""
    for stale in STANDIN_MANIFEST.read_text().split() if STANDIN_MANIFEST.exists() else []:
        Path(stale).unlink(missing_ok=True)
    made = []
    STANDIN_MANIFEST.parent.mkdir(parents=True, exist_ok=True)
    for name in STANDIN_DEVICES:
        node = dev / name
        if not node.exists():
            make_standin_node(node)
            made.append(node)
    STANDIN_MANIFEST.write_text("".join(f"{node}\n" for node in made))
    try:
        yield made
    finally:
        for node in made:
            node.unlink(missing_ok=True)
        STANDIN_MANIFEST.unlink(missing_ok=True)


@pytest.fixture
def lab_host(
    fresh_pve: PveLab, lab_zpool: LabZpool, lab_sshd: LabSshd, lab_rootfs: Path, lab_lxc_seed: str
) -> Iterator[LabHost]:
    """The lab as one host for this test (see :func:`running_lab_host`); the fake is put back to its
    baseline afterwards (``fresh_pve``)."""
    with running_lab_host(fresh_pve, lab_zpool, lab_sshd, lab_rootfs, lab_lxc_seed) as host:
        yield host
