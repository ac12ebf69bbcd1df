"""Point a fixture state, written by older code against another lab run, at this run's lab.

A stored dynamic provider is a pickle (``__provider``) of the provider object: its class by module path,
and its connection targets (SSH port, host key pin, PVE URL, CA file). The module paths and field names are
what a code move can break, so they must reach the engine exactly as the old code wrote them; the
connection values differ per lab run. :func:`retarget_pickle` therefore rewrites only those values, opcode by
opcode, and keeps every other byte: no class is imported, so nothing of the new code is written into the
pickle.

:func:`transplant` builds the state to import: the fixture's resources (inputs, outputs, stored providers as
the old code wrote them, lab values retargeted) plus the values the *host* assigned when this run's seed
stack created the same objects (a ZFS ``guid``, the snapshot PVE took): old code cannot have known them.
Which keys those are is declared in :data:`HOST_ASSIGNED`, so any other difference between what the old and
the new code store shows up as a failure instead of being copied over.
"""

from __future__ import annotations

import base64
import copy
import pickletools
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PROVIDER_KEY = "__provider"

HOST_ASSIGNED: dict[str, frozenset[str]] = {
    "pulumi-python:dynamic/zfs:Dataset": frozenset({"guid"}),
    "pulumi-python:dynamic/zfs:Snapshot": frozenset({"guid", "creation"}),
    "pulumi-python:dynamic/zfs:Clone": frozenset({"guid"}),
    "pulumi-python:dynamic/phoenix:TemplateLayer": frozenset(),
    # A new token per container create: the guest's in-container resources key on it.
    "pulumi-python:dynamic/phoenix:LxcGuest": frozenset({"instance"}),
    "pulumi-python:dynamic/phoenix:GuestFirewall": frozenset({"guest_instance"}),
    "pulumi-python:dynamic/phoenix:GuestFeatures": frozenset({"guest_instance"}),
    "pulumi-python:dynamic/phoenix:VllmService": frozenset({"guest_instance"}),
    "pulumi-python:dynamic/phoenix:AppArmorProfile": frozenset(),
}
"""Per resource type: the output keys whose value the host chose when the object was created (and the
inputs that carry such a value from another resource)."""

ADDED_SINCE: dict[str, dict[str, Any]] = {
    # Where the device check (issue 16) looks for the host's nodes: a host's /dev unless a test says.
    "pulumi-python:dynamic/phoenix:LxcGuest": {"dev_root": "/dev"},
}
"""Per resource type: inputs added after the fixture was written, with the default they take. The new
code's state holding exactly that default where the fixture has no such key is no difference in what the
old code stored; any other value is."""


@dataclass(frozen=True)
class LabValues:
    """The values of one lab run that stored providers and props name."""

    ssh_port: int
    host_key: str
    pve_url: str
    cafile: str
    root: str
    repo_root: str

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> LabValues:
        return cls(**{k: record[k] for k in cls.__dataclass_fields__})


def _string_op(text: str) -> bytes:
    data = text.encode()
    if len(data) < 256:
        return b"\x8c" + bytes([len(data)]) + data  # SHORT_BINUNICODE
    return b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE


def _int_op(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])  # BININT1
    if 0 <= value < 65536:
        return b"M" + struct.pack("<H", value)  # BININT2
    return b"J" + struct.pack("<i", value)  # BININT


def retarget_pickle(raw: bytes, strings: Mapping[str, str], ints: Mapping[int, int]) -> bytes:
    """``raw`` with each string argument in ``strings`` and each int in ``ints`` replaced.

    FRAME opcodes are dropped: they carry byte lengths that a longer or shorter string would make wrong,
    and framing is optional for the unpickler. Memo indices count objects, not bytes, so they stay right.
    """
    ops = list(pickletools.genops(raw))
    out = bytearray()
    for i, (op, arg, pos) in enumerate(ops):
        end = ops[i + 1][2] if i + 1 < len(ops) else len(raw)
        assert pos is not None and end is not None
        if op.name == "FRAME":
            continue
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE") and arg in strings:
            out += _string_op(strings[arg])
        elif op.name in ("BININT1", "BININT2", "BININT") and arg in ints:
            out += _int_op(ints[arg])
        else:
            out += raw[pos:end]
    return bytes(out)


def retarget_value(value: Any, old: LabValues, new: LabValues) -> Any:
    """A prop (any JSON value) with the old run's lab strings replaced by this run's."""
    if isinstance(value, dict):
        return {k: retarget_value(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [retarget_value(v, old, new) for v in value]
    if isinstance(value, str):
        for before, after in ((old.repo_root, new.repo_root), (old.root, new.root)):
            value = value.replace(before, after)
        exact = {old.pve_url: new.pve_url, old.cafile: new.cafile, old.host_key: new.host_key}
        return exact.get(value, value)
    return value


def retarget_provider(blob: str, old: LabValues, new: LabValues) -> str:
    raw = base64.b64decode(blob)
    strings = {old.pve_url: new.pve_url, old.cafile: new.cafile, old.host_key: new.host_key}
    return base64.b64encode(retarget_pickle(raw, strings, {old.ssh_port: new.ssh_port})).decode()


def stored_modules(blob: str) -> set[str]:
    """The module paths a stored provider's pickle names (its class and its targets')."""
    raw = base64.b64decode(blob)
    strings = [arg for op, arg, _ in pickletools.genops(raw) if op.name.endswith("UNICODE")]
    return {s for s in strings if isinstance(s, str) and s.startswith("providers.")}


@dataclass
class Transplant:
    deployment: dict[str, Any]
    taken: dict[str, set[str]]
    """URN -> the output keys taken from the seed (host-assigned)."""
    unexpected: dict[str, set[str]]
    """URN -> output keys that differ between the old and new code's state and are not host-assigned."""


def transplant(fixture: Mapping[str, Any], seed: Mapping[str, Any], new: LabValues) -> Transplant:
    """The fixture's deployment retargeted at this lab, host-assigned outputs from the seed's state."""
    old = LabValues.of(fixture["lab"])
    deployment = copy.deepcopy(dict(fixture["deployment"]))
    deployment["secrets_providers"] = seed["secrets_providers"]  # this stack's passphrase salt
    seeded = {r["urn"]: r for r in seed["resources"]}
    taken: dict[str, set[str]] = {}
    unexpected: dict[str, set[str]] = {}
    for resource in deployment["resources"]:
        for key in ("inputs", "outputs"):
            props = resource.get(key)
            if not props:
                continue
            resource[key] = retarget_value(props, old, new)
            if PROVIDER_KEY in props:
                resource[key][PROVIDER_KEY] = retarget_provider(props[PROVIDER_KEY], old, new)
        twin = seeded.get(resource["urn"])
        if resource["type"].startswith("pulumi:providers:"):
            # The default provider's inputs are the stack's config, secrets included (scrubbed from the
            # fixture): this run's. Its URN and id stay, as every resource names it.
            (this_run,) = [r for r in seed["resources"] if r["type"] == resource["type"]]
            resource["inputs"], resource["outputs"] = this_run["inputs"], this_run["outputs"]
            continue
        if twin is None or not resource.get("custom"):
            continue
        outputs, fresh = resource.get("outputs") or {}, twin.get("outputs") or {}
        added = ADDED_SINCE.get(resource["type"], {})
        differing = {
            k
            for k in set(outputs) | set(fresh)
            if k != PROVIDER_KEY
            and outputs.get(k) != fresh.get(k)
            and not (k not in outputs and k in added and fresh.get(k) == added[k])
        }
        allowed = HOST_ASSIGNED.get(resource["type"], frozenset())
        for k in differing & allowed:
            outputs[k] = fresh[k]
            # An input fed by another resource's host-assigned output (a guest's instance) follows it.
            if k in (resource.get("inputs") or {}):
                resource["inputs"][k] = (twin.get("inputs") or {})[k]
        taken[resource["urn"]] = differing & allowed
        if differing - allowed:
            unexpected[resource["urn"]] = differing - allowed
    return Transplant(deployment, taken, unexpected)
