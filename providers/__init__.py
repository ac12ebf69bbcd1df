"""Phoenix's dynamic providers and the two channels to a Proxmox host (SSH and the PVE API).

Only ``providers/channels/ssh.py`` imports paramiko and only ``providers/channels/pve.py`` imports
proxmoxer; everything else talks to the host through the small :class:`providers.channels.command.Executor`
seam. ``docs/architecture.md`` says what each folder may import.

**Old module paths.** Pulumi stores each dynamic provider in state as a pickle that names its class by
module path (``providers.lxc_guest.LxcGuestProvider``, ``providers.host.SshTarget``), and runs that stored
provider to refresh and delete. The modules moved into folders (issue 13); :data:`MOVED` maps each old path
to its new one, and the finder below makes ``import providers.lxc_guest`` return the new module, so a state
written before the move still unpickles. ``tests/state_compat`` proves it against the lab with a state the
old code wrote; these aliases stay as long as that fixture does.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

MOVED: dict[str, str] = {
    "providers.host": "providers.channels.targets",
    "providers.zfs_dataset": "providers.zfs.dataset",
    "providers.zfs_snapshot": "providers.zfs.snapshot",
    "providers.zfs_clone": "providers.zfs.clone",
    "providers.template_layer": "providers.guests.template_layer",
    "providers.lxc_guest": "providers.guests.lxc_guest",
    "providers.guest_snapshot": "providers.guests.snapshot",
    "providers.guest_firewall": "providers.guests.firewall",
    "providers.guest_features": "providers.guests.features",
    "providers.host_file": "providers.hostfiles.host_file",
    "providers.apparmor_profile": "providers.hostfiles.apparmor",
}
"""Old module path -> where it lives now: only the modules whose classes a stored provider names."""


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old path in :data:`MOVED` as the module it moved to (the same module object)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module was imported under its new path."""


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())
