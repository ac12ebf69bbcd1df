"""A live container's PVE config as a guests.json entry: the reverse of ``render/lxc.py``, for
``phoenix import --from-host`` (``phoenix_components/cli/host_import.py``).

Pure: the PVE API's ``/nodes/{node}/lxc/{vmid}/config`` answer, the text of ``/etc/pve/lxc/<vmid>.conf``
(the only place the raw ``lxc.*`` lines are), the firewall's options and rules and host.json's GPUs go
in; a ``Container`` entry (``adopt: true``, no layer) and the list of what could not be mapped come out,
each item naming the guest (vmid and hostname), the key and the reason. Nothing here reads the host.

What "cannot be mapped" means: a setting the Container model has no field for, or a value it cannot
say. Such a setting is left on the host as it is (adoption sends only declared keys that differ), and
the reason says what would happen to it should Phoenix ever send that key (a NIC's ``ip6`` is dropped
when ``net0`` is sent again, say). Some guests are not imported at all (privileged, no hostname, no
``net0``): the reason says why.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from phoenix_components.config.models import Container, HostGpu
from phoenix_components.render.lxc import (
    NVIDIA_CONTROL_DEVICES,
    container_params,
    declared_minors,
)
from phoenix_components.render.lxc import raw_lines as declared_raw_lines
from providers.channels.pve import parse_property_string, size_gib
from providers.guests.lxc_guest import LxcGuestInputs, adoption_changes

# PVE's defaults for keys a config may leave out (pve-container's LXC config schema).
PVE_DEFAULTS = {"memory": 512, "swap": 512, "onboot": 0}
# Metadata PVE keeps beside the settings: never a setting to carry.
SILENT = {"digest", "lxc"}  # `lxc`: the API's copy of the raw lines; they are read from the file instead
NET_KEYS = {"name", "bridge", "hwaddr", "ip", "gw", "tag", "firewall", "type"}
FEATURE_FLAGS = ("nesting", "keyctl", "fuse", "mknod")
RULE_ACTIONS = ("ACCEPT", "DROP", "REJECT")
RULE_PROTOS = ("tcp", "udp", "icmp")
RULE_KEYS = {"type", "action", "proto", "dport", "source", "dest", "comment", "enable", "pos", "digest"}
RULE_KEYS |= {"ipversion"}
PORT_SPEC = re.compile(r"^[0-9]+(:[0-9]+)?(,[0-9]+(:[0-9]+)?)*$")
COMMENT = re.compile(r"^[^\n\r#]{0,120}$")
NVIDIA_MINOR = re.compile(r"^/dev/nvidia(\d+)$")
LEFT_AS_IS = "not in Phoenix's container model: left as PVE has it (Phoenix never sends it)"


@dataclass(frozen=True)
class Unmapped:
    """One setting of one guest that the entry does not carry, and why."""

    vmid: int
    hostname: str
    key: str
    reason: str

    def line(self) -> str:
        return f"CT {self.vmid} ({self.hostname or '-'}) {self.key}: {self.reason}"


@dataclass
class Imported:
    """A guest as imported: its guests.json entry (None: not imported, see ``unmapped``) and the rest."""

    vmid: int
    hostname: str
    entry: dict[str, Any] | None
    unmapped: list[Unmapped] = field(default_factory=list)


class _Mapping:
    """One guest's mapping in progress: the entry being built and what it could not carry."""

    def __init__(self, vmid: int, hostname: str) -> None:
        self.vmid, self.hostname = vmid, hostname
        self.unmapped: list[Unmapped] = []

    def skip(self, key: str, reason: str) -> None:
        self.unmapped.append(Unmapped(self.vmid, self.hostname, key, reason))


def _int(value: Any) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def _whole_gib(value: str | None) -> int | None:
    size = size_gib(value)
    return int(size) if size is not None and size.is_integer() and size >= 1 else None


def raw_lines(conf: str) -> list[tuple[str, str]]:
    """The raw ``lxc.*`` lines of the config file's main section (snapshot sections are not the guest's
    current config), as (key, value)."""
    main = conf.partition("\n[")[0]
    found = []
    for line in main.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().startswith("lxc."):
            found.append((key.strip(), value.strip()))
    return found


def _network(m: _Mapping, key: str, value: str, index: int) -> dict[str, Any] | None:
    _pos, parts = parse_property_string(value)
    if "bridge" not in parts:
        m.skip(key, "a NIC without a bridge: Phoenix's NICs are on a bridge")
        return None
    net: dict[str, Any] = {"bridge": parts["bridge"]}
    if parts.get("name", f"eth{index}") != f"eth{index}":
        m.skip(f"{key}.name", f"{parts['name']!r}: Phoenix names {key} eth{index} (it would rename it)")
    if "ip" in parts:
        net["ip"] = parts["ip"]
    else:
        net["ip"] = "manual"
        m.skip(f"{key}.ip", "no IPv4 setting: declared `manual` (the guest configures it)")
    if "gw" in parts:
        net["gateway"] = parts["gw"]
    if "hwaddr" in parts:
        net["mac"] = parts["hwaddr"].upper()
    if "tag" in parts and (tag := _int(parts["tag"])) is not None:
        net["vlan"] = tag
    net["firewall"] = parts.get("firewall") == "1"
    if parts.get("type", "veth") != "veth":
        m.skip(f"{key}.type", f"{parts['type']!r}: Phoenix's NICs are veth")
    for extra in sorted(set(parts) - NET_KEYS):
        m.skip(
            f"{key}.{extra}",
            f"{extra}={parts[extra]} has no field: kept, but dropped if Phoenix ever sends {key} "
            "(a declared change of this NIC)",
        )
    return net


def _features(m: _Mapping, value: str) -> dict[str, bool]:
    _pos, parts = parse_property_string(value)
    flags = {name: parts.get(name) == "1" for name in FEATURE_FLAGS if parts.get(name) == "1"}
    for extra in sorted(set(parts) - set(FEATURE_FLAGS)):
        m.skip(
            f"features.{extra}",
            f"{extra}={parts[extra]} has no field: kept, but dropped if Phoenix ever sends features",
        )
    return flags


def _numbered(
    m: _Mapping,
    config: Mapping[str, Any],
    prefix: str,
    what: str,
    handled: set[str],
    parse: Callable[[str, int], dict[str, Any] | None],
) -> tuple[list[str], list[dict[str, Any]]]:
    """The config's ``<prefix>N`` keys in number order, and what ``parse(key, position)`` maps of each.
    The model lists them in order (``networks``, ``mounts``) and Phoenix sends them numbered from 0, so
    a gap is noted: the key would be sent under another number."""
    keys = [
        k for _n, k in sorted((int(k[len(prefix) :]), k) for k in config if re.fullmatch(rf"{prefix}\d+", k))
    ]
    found = []
    for position, key in enumerate(keys):
        handled.add(key)
        if key != f"{prefix}{position}":
            m.skip(key, f"{what} are numbered in order: this one would be sent as {prefix}{position}")
        if (value := parse(key, position)) is not None:
            found.append(value)
    return keys, found


def _mount(m: _Mapping, key: str, value: str) -> dict[str, Any] | None:
    source, parts = parse_property_string(value)
    path = parts.get("mp")
    if not path:
        m.skip(key, "a mount point without a path (mp=)")
        return None
    handled = {"mp", "ro", "size", "backup"}
    if source.startswith("/"):
        mount: dict[str, Any] = {
            "type": "bind",
            "path": path,
            "host_path": source,
            "read_only": parts.get("ro") == "1",
        }
        handled -= {"size", "backup"}
    else:
        storage, _, _volume = source.partition(":")
        size = _whole_gib(parts.get("size"))
        if size is None:
            m.skip(key, f"volume {source}: its size {parts.get('size')!r} is not a whole number of GiB")
            return None
        mount = {
            "type": "volume",
            "path": path,
            "storage": storage,
            "size_gib": size,
            "backup": parts.get("backup") == "1",
        }
        if parts.get("ro") == "1":
            m.skip(f"{key}.ro", "a read-only volume: Phoenix's volume mounts are read-write")
        handled.discard("ro")
    for extra in sorted(set(parts) - handled):
        m.skip(f"{key}.{extra}", f"{extra}={parts[extra]} has no field: kept unless Phoenix sends {key}")
    return mount


def _gpus(m: _Mapping, devices: Sequence[tuple[str, str]], gpus: Sequence[HostGpu]) -> list[int]:
    by_minor = {g.minor: g.index for g in gpus if g.minor is not None}
    found: list[int] = []
    for key, value in devices:
        path, parts = parse_property_string(value)
        path = parts.get("path", path)
        if path in NVIDIA_CONTROL_DEVICES:
            continue  # implied by any GPU: Phoenix passes them with the first one
        minor = NVIDIA_MINOR.match(path)
        if minor is None:
            m.skip(key, f"device {path}: Phoenix passes only NVIDIA GPUs (devN of /dev/nvidiaN)")
            continue
        index = by_minor.get(int(minor.group(1)))
        if index is None:
            m.skip(key, f"{path}: no GPU in host.json gpus has minor {minor.group(1)}")
            continue
        found.append(index)
        for extra in sorted(set(parts) - {"path", "mode"}):
            m.skip(f"{key}.{extra}", f"{extra}={parts[extra]}: Phoenix passes GPUs with mode=0666 only")
    return found


def _firewall(
    m: _Mapping, options: Mapping[str, Any] | None, rules: Sequence[Mapping[str, Any]] | None
) -> dict[str, Any]:
    """The guest's firewall as declared; when a rule or option cannot be said, ``enabled: false``, which
    makes Phoenix leave the firewall alone (it manages a guest's rule list whole, so it would otherwise
    delete the rule it cannot declare)."""
    options = options or {}
    enabled = str(options.get("enable", "0")) == "1"
    for extra in sorted(set(options) - {"enable", "policy_in", "policy_out", "digest"}):
        m.skip(f"firewall.{extra}", f"option {extra}={options[extra]} has no field: left as it is")
    if not enabled:
        if rules:
            m.skip("firewall.rules", "the firewall is off: its rules are left as they are, not declared")
        return {"enabled": False}
    declared: list[dict[str, Any]] = []
    for rule in sorted(rules or [], key=lambda r: _int(r.get("pos", 0)) or 0):
        pos = rule.get("pos", len(declared))
        problem = _rule_problem(rule)
        if problem is not None:
            m.skip(
                f"firewall.rules[{pos}]",
                f"{problem}: the firewall is declared off so that Phoenix leaves all its rules alone",
            )
            return {"enabled": False}
        declared.append(
            {"direction": rule["type"], "action": rule["action"]}
            | {k: str(rule[k]) for k in ("proto", "dport", "source", "dest", "comment") if rule.get(k)}
        )
    return {
        "enabled": True,
        "policy_in": str(options.get("policy_in", "DROP")),
        "policy_out": str(options.get("policy_out", "ACCEPT")),
        "rules": declared,
    }


def _rule_problem(rule: Mapping[str, Any]) -> str | None:
    if rule.get("type") not in ("in", "out"):
        return f"a {rule.get('type')} rule (security groups are not in the model)"
    if rule.get("action") not in RULE_ACTIONS:
        return f"action {rule.get('action')!r}"
    if str(rule.get("enable", "1")) != "1":
        return "a disabled rule (Phoenix's rules are all enabled)"
    if rule.get("proto") not in (None, "", *RULE_PROTOS):
        return f"protocol {rule.get('proto')!r}"
    if rule.get("dport") and not PORT_SPEC.match(str(rule["dport"])):
        return f"dport {rule['dport']!r} (Phoenix takes port numbers only)"
    if rule.get("comment") and not COMMENT.match(str(rule["comment"])):
        return "a comment with a line break or `#`, or longer than 120 characters"
    extra = sorted(set(rule) - RULE_KEYS - {"log"})
    return f"{', '.join(extra)} (no field)" if extra else None


def _startup(m: _Mapping, value: str) -> dict[str, int] | None:
    _pos, parts = parse_property_string(value)
    known = {k: _int(v) for k, v in parts.items() if k in ("order", "up", "down")}
    if any(v is None for v in known.values()) or set(parts) - set(known) or not known:
        m.skip("startup", f"{value!r}: not PVE's order=N,up=N,down=N")
        return None
    return {k: v for k, v in known.items() if v is not None}


def container_from_pve(
    vmid: int,
    config: Mapping[str, Any],
    conf: str,
    *,
    gpus: Sequence[HostGpu] = (),
    firewall_options: Mapping[str, Any] | None = None,
    firewall_rules: Sequence[Mapping[str, Any]] | None = None,
) -> Imported:
    """CT ``vmid``'s guests.json entry (module docstring): every setting it can carry, the rest listed."""
    hostname = str(config.get("hostname", ""))
    m = _Mapping(vmid, hostname)
    if not hostname:
        m.skip("hostname", "no hostname: adoption identifies a guest by it; set one in PVE, then import")
        return Imported(vmid, hostname, None, m.unmapped)
    if str(config.get("unprivileged", "0")) != "1":
        m.skip(
            "unprivileged",
            "a privileged container: Phoenix manages unprivileged containers only; not imported",
        )
        return Imported(vmid, hostname, None, m.unmapped)
    if "net0" not in config:
        m.skip("net0", "no net0: every Phoenix container has one; not imported")
        return Imported(vmid, hostname, None, m.unmapped)
    entry: dict[str, Any] = {"vmid": vmid, "hostname": hostname, "adopt": True}
    handled = {"hostname", "unprivileged"}

    def take(key: str) -> Any:
        handled.add(key)
        return config.get(key)

    if (description := take("description")) is not None:
        entry["description"] = str(description)
    cores = take("cores")
    if cores is None:
        m.skip("cores", "not set (all host CPUs): declared as Phoenix's default 2, which would be sent")
    else:
        entry["cores"] = _int(cores)
    entry["memory_mib"] = _int(take("memory") or PVE_DEFAULTS["memory"])
    swap = take("swap")
    entry["swap_mib"] = _int(PVE_DEFAULTS["swap"] if swap is None else swap)
    rootfs = take("rootfs")
    if rootfs is not None:
        _pos, parts = parse_property_string(rootfs)
        size = _whole_gib(parts.get("size"))
        if size is None:
            m.skip("rootfs.size", f"{parts.get('size')!r} is not a whole number of GiB: disk_gib left out")
        else:
            entry["disk_gib"] = size
        for extra in sorted(set(parts) - {"size"}):
            m.skip(f"rootfs.{extra}", f"{extra}={parts[extra]} has no field: left as it is")
    if (features := take("features")) is not None and (flags := _features(m, str(features))):
        entry["pve_features"] = flags
    nets, nics = _numbered(
        m, config, "net", "NICs", handled, lambda key, position: _network(m, key, str(config[key]), position)
    )
    if not nics or nets[0] != "net0":
        m.skip("net0", "net0 cannot be mapped; not imported")
        return Imported(vmid, hostname, None, m.unmapped)
    entry["network"], more = nics[0], nics[1:]
    if more:
        entry["networks"] = more
    devices = sorted((int(k[3:]), k) for k in config if re.fullmatch(r"dev\d+", k))
    handled |= {k for _n, k in devices}
    if found := _gpus(m, [(k, str(config[k])) for _n, k in devices], gpus):
        entry["gpus"] = found
    _mps, declared_mounts = _numbered(
        m, config, "mp", "mount points", handled, lambda key, _position: _mount(m, key, str(config[key]))
    )
    if declared_mounts:
        entry["mounts"] = declared_mounts
    for key, value in raw_lines(conf):
        if key == "lxc.apparmor.profile":
            entry["apparmor_profile"] = value
            if value == "unconfined":
                m.skip(
                    key,
                    "unconfined: declared, but validation wants your reason in "
                    'insecure.unconfined_apparmor ("<why>"); yours to decide',
                )
        else:
            m.skip(key, "a raw line Phoenix declares no field for: left in the config file as it is")
    entry["firewall"] = _firewall(m, firewall_options, firewall_rules)
    entry["start_on_boot"] = str(take("onboot") or PVE_DEFAULTS["onboot"]) == "1"
    if (startup := take("startup")) is not None and (order := _startup(m, str(startup))) is not None:
        entry["startup"] = order
    dns: dict[str, Any] = {}
    if (nameserver := take("nameserver")) is not None:
        dns["nameserver"] = str(nameserver).split()
    if (searchdomain := take("searchdomain")) is not None:
        dns["searchdomain"] = str(searchdomain)
    if dns:
        entry["dns"] = dns
    if (tags := take("tags")) is not None:
        entry["tags"] = [t for t in re.split(r"[;, ]+", str(tags)) if t]
    for key in sorted(set(config) - handled - SILENT):
        m.skip(key, f"{config[key]}: {LEFT_AS_IS}")
    return Imported(vmid, hostname, entry, m.unmapped)


def adoption_sends(
    ct: Container, config: Mapping[str, Any], conf: str, *, gpus: Sequence[HostGpu] = ()
) -> dict[str, tuple[Any, Any]]:
    """What the first ``up`` would send on adopting ``ct`` from this live config, ``{key: (live, declared)}``
    (``lxc.*`` keys for a raw line that changes what the guest runs under): the same diff the provider
    computes (providers.guests.lxc_guest.adoption_changes), over the params the program renders. Empty when
    the entry carries the guest exactly. Data-dataset clone mounts are not rendered here (an import never
    declares one)."""
    params = {k: v for k, v in container_params(ct, {}, declared_minors(gpus)).items() if k != "hostname"}
    inputs = LxcGuestInputs(
        node="",
        vmid=ct.vmid,
        hostname=ct.hostname,
        template_vmid=None,
        params=params,
        storage="",
        pool="",
        raw_lines=declared_raw_lines(ct),
        disk_gib=ct.disk_gib,
        adopt=True,
    )
    change = adoption_changes(inputs, config, conf, running=True)
    sends = {key: (config.get(key), value) for key, value in change.sets.items()}
    if change.raw_cold:
        live = dict(raw_lines(conf))
        for line in inputs.raw_lines:
            key, _, value = line.partition(":")
            if live.get(key.strip()) != value.strip():
                sends[key.strip()] = (live.get(key.strip()), value.strip())
    if change.resize:
        sends["rootfs.size"] = (
            parse_property_string(config.get("rootfs", ""))[1].get("size"),
            f"{ct.disk_gib}G",
        )
    return sends
