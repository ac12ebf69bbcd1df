"""What the three ZFS providers share: names, properties, argv, ``zfs get`` parsing and typed errors.

Pure functions, plus a few steps that each run one command through an
:class:`~providers.channels.command.Executor` (:func:`run_zfs`, :func:`read_datasets`,
:func:`apply_properties`, :func:`destroy`). Resources live in ``dataset.py``, ``snapshot.py`` and
``clone.py`` beside it; this module is their common vocabulary:

- **names**: ZFS's own rules (``zfs(8)`` "Naming"), checked before any host call;
- **properties**: declared values are brought to the form ``zfs get -p`` reports (sizes in bytes,
  ``none`` for a cleared quota, ``on``/``off`` for booleans, a mountpoint without a trailing slash) so
  that stored outputs, refreshed live values and new inputs compare like with like;
- **reads**: one ``zfs get -H -p -o name,property,value,source`` per read, parsed into
  :class:`DatasetFacts`;
- **errors**: ZFS's stderr mapped to :class:`ZfsError` subclasses whose messages say what happened and
  what to do; a "busy" dataset is retried until a deadline before :class:`DatasetBusyError`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from pulumi.dynamic import ResourceProvider

from providers.base import VERSION_KEY, DynamicResource, Options, is_unknown
from providers.channels.command import CommandResult, Executor, sh_argv
from providers.channels.steps import HostCommand
from providers.channels.targets import SshTarget
from providers.errors import HostError, RemoteCommandError

# --- names -----------------------------------------------------------------------------------------------

MAX_NAME = 255
"""ZFS_MAX_DATASET_NAME_LEN is 256 bytes with the terminating NUL."""
_COMPONENT = re.compile(r"[A-Za-z0-9_.:-]+")
# zpool(8): a pool name starts with a letter and is none of the vdev keywords.
_RESERVED_POOLS = re.compile(r"(mirror|raidz\d?|draid\d?|spare|log|cache|special|dedup|c\d.*)")


def dataset_name_problem(name: Any) -> str | None:
    """Why ``name`` is not a dataset Phoenix may create (``pool/child[/...]``), or None.

    ZFS allows letters, digits and ``_ . : -`` (and, alas, spaces) in each ``/``-separated component;
    Phoenix refuses spaces too, because PVE's storage layer and mount handling do not quote them.
    ``rpool/data/models`` -> None; ``rpool`` -> "a pool is not a dataset ..."; ``rpool//x`` -> "... empty".
    """
    if not isinstance(name, str) or not name:
        return f"expected a dataset name like rpool/data/models, got {name!r}"
    if len(name) > MAX_NAME:
        return f"{name[:40]!r}...: longer than {MAX_NAME} characters"
    if "@" in name:
        return f"{name!r}: '@' separates a snapshot name; a dataset name has none"
    parts = name.split("/")
    if len(parts) < 2:
        return f"{name!r}: a pool is not a dataset; name one below it, e.g. {name}/data"
    for part in parts:
        if not part:
            return f"{name!r}: empty path component (leading, trailing or double '/')"
        if part in (".", ".."):
            return f"{name!r}: '{part}' is not a valid component"
        if not _COMPONENT.fullmatch(part):
            return f"{name!r}: component {part!r} may hold only letters, digits and _ . : -"
    pool = parts[0]
    if not pool[0].isalpha() or _RESERVED_POOLS.fullmatch(pool):
        return f"{name!r}: pool name {pool!r} must start with a letter and not be a vdev keyword"
    return None


def snapshot_short_name_problem(snapshot: Any) -> str | None:
    """Why ``snapshot`` (the part after ``@``) is not valid, or None: ``v1`` ok, ``v/1`` and ``@v1`` not."""
    if not isinstance(snapshot, str) or not snapshot:
        return f"expected a snapshot name like v1, got {snapshot!r}"
    if not _COMPONENT.fullmatch(snapshot):
        return f"{snapshot!r}: a snapshot name may hold only letters, digits and _ . : -"
    return None


def snapshot_name_problem(name: Any) -> str | None:
    """Why ``name`` is not a full snapshot name ``pool/ds@snap``, or None."""
    if not isinstance(name, str) or name.count("@") != 1:
        return f"expected a snapshot like rpool/data/models@v1, got {name!r}"
    dataset, _, snapshot = name.partition("@")
    if len(name) > MAX_NAME:
        return f"{name[:40]!r}...: longer than {MAX_NAME} characters"
    return dataset_name_problem(dataset) or snapshot_short_name_problem(snapshot)


def pool_of(name: str) -> str:
    """``rpool/data/x@s`` -> ``rpool``."""
    return name.split("/", 1)[0].split("@", 1)[0]


# --- properties ------------------------------------------------------------------------------------------

READ_ONLY = frozenset((
    "available", "avail", "clones", "compressratio", "createtxg", "creation", "defer_destroy",
    "encryptionroot", "filesystem_count", "guid", "keystatus", "logicalreferenced", "logicalused",
    "mounted", "name", "objsetid", "origin", "receive_resume_token", "redact_snaps", "refcompressratio",
    "referenced", "refer", "snapshot_count", "snapshots_changed", "type", "used", "usedbychildren",
    "usedbydataset", "usedbyrefreservation", "usedbysnapshots", "userrefs", "written",
))  # fmt: skip
"""Native properties ZFS computes; declaring one is a mistake ``check`` reports."""

CREATE_ONLY = frozenset(
    ("casesensitivity", "normalization", "utf8only", "encryption", "keyformat", "pbkdf2iters")
)
"""Set only when a dataset is created (or via ``zfs change-key``): changing one replaces the dataset."""

VOLUME_ONLY = frozenset(("volsize", "volblocksize"))
"""The providers manage filesystems, not zvols (PVE makes its own zvols for VM disks)."""

SIZE_PROPS = frozenset((
    "quota", "refquota", "reservation", "refreservation", "recordsize", "special_small_blocks",
))  # fmt: skip
"""Values ``zfs get -p`` reports in bytes; a declared ``16K`` is stored as ``16384``."""

CLEARED_BY_NONE = frozenset(("quota", "refquota", "reservation", "refreservation"))
"""ZFS reports these as ``0`` when unset and wants ``none`` to unset them (``quota=0`` is refused)."""

NOT_INHERITABLE = {"canmount": "on"}
"""Native properties ``zfs inherit`` refuses, with the default that removing them restores."""

_NATIVE_KEY = re.compile(r"[a-z][a-z0-9_]*")
_USER_KEY = re.compile(r"[a-z0-9_.:-]+")  # zfsprops(7): lowercase, digits, : - . _, must contain a colon
_QUOTA_AT_KEY = re.compile(r"(user|group|project)(obj)?quota@[^\s=]+")
MAX_USER_KEY = 256
MAX_VALUE = 8191  # ZFS_MAXPROPLEN - 1 for user property values
_SIZE = re.compile(r"(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>[KMGTPEZ]?)(?:i?B)?", re.IGNORECASE)
_UNITS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5, "E": 6, "Z": 7}


def is_user_property(key: str) -> bool:
    return ":" in key


def is_clearable(key: str) -> bool:
    return key in CLEARED_BY_NONE or bool(_QUOTA_AT_KEY.fullmatch(key))


def property_key_problem(key: Any) -> str | None:
    """Why ``key`` cannot be declared, or None (``compression``, ``org.phoenix:role`` are fine)."""
    if not isinstance(key, str) or not key:
        return f"property names are non-empty strings, got {key!r}"
    if is_user_property(key):
        if len(key) > MAX_USER_KEY or not _USER_KEY.fullmatch(key):
            return (
                f"user property {key!r}: lowercase letters, digits and : - . _ only, at most {MAX_USER_KEY}"
            )
        return None
    if _QUOTA_AT_KEY.fullmatch(key):
        return None
    if not _NATIVE_KEY.fullmatch(key):
        return f"{key!r} is not a ZFS property name (user properties need a ':', e.g. org.phoenix:role)"
    if key in READ_ONLY:
        return f"{key!r} is read-only: ZFS computes it"
    if key in VOLUME_ONLY:
        return f"{key!r} applies to volumes; these providers manage filesystems"
    return None


def parse_size(text: str) -> int | None:
    """ZFS's size syntax in bytes (binary units): ``"16K" -> 16384``, ``"1.5G" -> 1610612736``, else None."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        return None
    value = float(match["num"]) * 1024 ** _UNITS[match["unit"].upper()]
    return int(value) if value == int(value) else None


def canonical_value(key: str, value: Any) -> str:
    """The form ``zfs get -p`` reports for ``value``; raises ValueError for a value ZFS could not take.

    ``("quota", "1G") -> "1073741824"``, ``("quota", "none") -> "none"``, ``("quota", 0) -> "none"``,
    ``("atime", False) -> "off"``, ``("mountpoint", "/srv/models/") -> "/srv/models"``, ``("copies", 2.0)
    -> "2"``. Applied to declared values (check) and to live values (read) alike.
    """
    if isinstance(value, bool):
        text = "on" if value else "off"
    elif isinstance(value, int | float):
        if int(value) != value:
            raise ValueError(f"{value!r} is not a whole number")
        text = str(int(value))
    elif isinstance(value, str):
        text = value
    else:
        raise ValueError(f"expected a string, number or boolean, got {type(value).__name__}")
    if not text:
        raise ValueError("empty value: remove the property instead, to inherit or clear it")
    if any(c in text for c in "\t\n\r\0"):
        raise ValueError("tabs, newlines and NUL cannot be stored in a property value")
    if len(text) > MAX_VALUE:
        raise ValueError(f"longer than {MAX_VALUE} characters")
    if is_user_property(key):
        return text
    if is_clearable(key) or key in SIZE_PROPS:
        if is_clearable(key) and text in ("none", "0"):
            return "none"
        size = parse_size(text)
        if size is None:
            raise ValueError(f"{text!r} is not a size (e.g. 512K, 16G or bytes)")
        return "none" if size == 0 and is_clearable(key) else str(size)
    if key == "mountpoint" and text.startswith("/") and len(text) > 1:
        return text.rstrip("/") or "/"
    return text


def properties_problems(props: Any) -> list[str]:
    """Every problem in a declared property map (unknown values pass: they are checked at ``up``)."""
    if is_unknown(props) or props is None:
        return []
    if not isinstance(props, Mapping):
        return [f"expected a map of property name to value, got {type(props).__name__}"]
    problems = []
    for key, value in props.items():
        if (problem := property_key_problem(key)) is not None:
            problems.append(problem)
        elif not is_unknown(value):
            try:
                canonical_value(key, value)
            except ValueError as exc:
                problems.append(f"{key}: {exc}")
    return problems


def canonical_properties(props: Any) -> Any:
    """Declared properties in canonical form; unknowns (the map or a value) and invalid entries unchanged."""
    if is_unknown(props) or not isinstance(props, Mapping):
        return props
    out: dict[str, Any] = {}
    for key, value in props.items():
        try:
            out[key] = value if is_unknown(value) else canonical_value(key, value)
        except (ValueError, TypeError):
            out[key] = value  # reported by properties_problems
    return out


def property_changes(
    old: Mapping[str, Any], new: Mapping[str, Any], *, keys: Iterable[str] | None = None
) -> tuple[list[str], list[str]]:
    """``(changed_or_added, removed)`` keys between two canonical property maps (optionally among keys)."""
    wanted = set(keys) if keys is not None else None
    changed = [
        k for k in new if (wanted is None or k in wanted) and (is_unknown(new[k]) or old.get(k) != new[k])
    ]
    removed = [k for k in old if k not in new and (wanted is None or k in wanted)]
    return sorted(changed), sorted(removed)


def create_only_changes(old: Mapping[str, Any], new: Any) -> list[str]:
    """Create-only properties whose declared value differs: such a change replaces the dataset."""
    if is_unknown(new) or not isinstance(new, Mapping):
        return []
    changed, removed = property_changes(old, new, keys=CREATE_ONLY)
    return sorted([*changed, *removed])


# --- argv ------------------------------------------------------------------------------------------------

ZFS = "zfs"
GET_FIELDS = "name,property,value,source"


def option_args(props: Mapping[str, str]) -> list[str]:
    """``{"quota": "1073741824", "atime": "off"} -> ["-o", "atime=off", "-o", "quota=1073741824"]``."""
    return [arg for key in sorted(props) for arg in ("-o", f"{key}={props[key]}")]


def create_argv(name: str, props: Mapping[str, str]) -> list[str]:
    return [ZFS, "create", *option_args(props), name]


def clone_argv(origin: str, name: str, props: Mapping[str, str]) -> list[str]:
    return [ZFS, "clone", *option_args(props), origin, name]


def snapshot_argv(name: str, *, recursive: bool = False) -> list[str]:
    return [ZFS, "snapshot", *(["-r"] if recursive else []), name]


def destroy_argv(name: str, *, recursive: bool = False) -> list[str]:
    """Never ``-R`` (it would take dependent clones along) and ``-r`` only for recursive snapshots."""
    return [ZFS, "destroy", *(["-r"] if recursive else []), name]


def get_argv(names: Sequence[str], props: Iterable[str], *, recursive: bool = False) -> list[str]:
    """One ``zfs get`` for all of ``props`` of all of ``names``, parsable (``-p``), no headers (``-H``)."""
    unique = list(dict.fromkeys(props))
    return [
        ZFS,
        "get",
        "-H",
        "-p",
        *(["-r"] if recursive else []),
        "-o",
        GET_FIELDS,
        ",".join(unique),
        *names,
    ]


def removal(key: str) -> tuple[str, str]:
    """How to undeclare ``key``: ``("inherit", key)``, or ``("set", "quota=none")`` for what cannot be."""
    if is_clearable(key):
        return ("set", f"{key}=none")
    if key in NOT_INHERITABLE:
        return ("set", f"{key}={NOT_INHERITABLE[key]}")
    return ("inherit", key)


def plan_properties(live: Mapping[str, Any], want: Mapping[str, str]) -> list[tuple[str, str]]:
    """``zfs set`` / ``zfs inherit`` steps taking ``live`` (declared keys as last seen) to ``want``.

    ``({"quota": "none", "atime": "on"}, {"quota": "1073741824"})``
    -> ``[("set", "quota=1073741824"), ("inherit", "atime")]``. ``[]`` when converged.
    """
    changed, removed = property_changes(live, want)
    return [*(("set", f"{k}={want[k]}") for k in changed), *(removal(k) for k in removed)]


# Applies the steps (verb, argument pairs) in order, then reads the dataset back: one SSH session.
# Data travels as positional parameters, never inside the script text.
_APPLY_SCRIPT = """\
ds=$1 props=$2
shift 2
while [ $# -gt 1 ]; do
  zfs "$1" "$2" "$ds" || exit
  shift 2
done
exec zfs get -H -p -o name,property,value,source "$props" "$ds"
"""


def apply_argv(name: str, steps: Sequence[tuple[str, str]], read_props: Iterable[str]) -> list[str]:
    """One command running ``zfs set``/``zfs inherit`` for each step, then the read of ``read_props``."""
    for verb, _arg in steps:
        if verb not in ("set", "inherit"):
            raise ValueError(f"unexpected zfs verb {verb!r}")
    flat = [part for step in steps for part in step]
    props = ",".join(dict.fromkeys(read_props))
    return sh_argv(_APPLY_SCRIPT, "phoenix-zfs-apply", name, props, *flat)


# --- parsing ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prop:
    value: str
    source: str
    """``local``, ``default``, ``inherited from <ds>``, ``received``, ``temporary`` or ``-``."""

    @property
    def present(self) -> bool:
        """False for a user property that is not set anywhere (ZFS shows ``-`` / ``-``)."""
        return not (self.value == "-" and self.source == "-")


@dataclass(frozen=True)
class DatasetFacts:
    """One dataset's (or snapshot's) properties as ``zfs get -p`` reported them."""

    name: str
    props: Mapping[str, Prop]

    def value(self, key: str) -> str | None:
        prop = self.props.get(key)
        return prop.value if prop is not None and prop.present else None

    @property
    def type(self) -> str | None:
        return self.value("type")

    @property
    def origin(self) -> str | None:
        """The snapshot this is a clone of; None for an independent dataset (ZFS shows ``-``)."""
        origin = self.value("origin")
        return None if origin in (None, "-") else origin

    def declared(self, keys: Iterable[str]) -> dict[str, str]:
        """Live values of ``keys`` in canonical form; a user property set nowhere is left out."""
        out = {}
        for key in keys:
            value = self.value(key)
            if value is not None:
                try:
                    out[key] = canonical_value(key, value)
                except ValueError:
                    out[key] = value
        return out


def parse_get(stdout: str) -> dict[str, DatasetFacts]:
    """Parse ``zfs get -H -p -o name,property,value,source``, keyed by dataset name. Example::

        rpool/data/m2\\ttype\\tfilesystem\\t-
        rpool/data/m2\\torigin\\trpool/data/models@v1\\t-
        rpool/data/m2\\tquota\\t0\\tdefault
        rpool/data/m2\\torg.phoenix:role\\ta b\\tlocal

    -> ``{"rpool/data/m2": DatasetFacts("rpool/data/m2", {"type": Prop("filesystem", "-"), ...})}``.
    Values may hold spaces (never tabs: ``check`` refuses them). Raises ValueError on a malformed line.
    """
    rows: dict[str, dict[str, Prop]] = {}
    for line in stdout.splitlines():
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 4:
            raise ValueError(f"unexpected `zfs get` line (want 4 tab-separated fields): {line!r}")
        name, prop, value, source = fields
        rows.setdefault(name, {})[prop] = Prop(value, source)
    return {name: DatasetFacts(name, props) for name, props in rows.items()}


# --- errors ----------------------------------------------------------------------------------------------


class ZfsError(RemoteCommandError):
    """A ``zfs`` command failed. ``dataset`` is the name ZFS complained about (when it named one)."""

    reason = "zfs failed"

    def __init__(self, result: CommandResult, what: str = "", *, dataset: str | None = None) -> None:
        self.dataset, self.result, self.what = dataset, result, what
        head = f"{what}: {self.reason}" if what else self.reason
        super().__init__(result.host, result.argv, result.exit_status, result.stderr or result.stdout, head)


class DatasetExistsError(ZfsError):
    reason = "dataset already exists"


class DatasetNotFoundError(ZfsError):
    reason = "dataset does not exist"


class ParentMissingError(ZfsError):
    reason = "parent dataset does not exist (Phoenix does not create unmanaged parents; declare it)"


class DatasetBusyError(ZfsError):
    reason = "dataset is busy (mounted and in use: a running container, a shell, an open file)"


class DatasetHasChildrenError(ZfsError):
    """Destroy refused: the dataset has snapshots or child datasets Phoenix does not manage here."""

    reason = "dataset has children"

    def __init__(self, result: CommandResult, what: str = "", *, dataset: str | None = None) -> None:
        self.children = listed_datasets(result.stderr)
        if self.children:
            self.reason = f"dataset has children ({', '.join(self.children)}); destroy or declare them first"
        super().__init__(result, what, dataset=dataset)


class DependentClonesError(ZfsError):
    """Destroy refused: clones still depend on the snapshot. ``clones`` names them (may be empty)."""

    reason = "snapshot has dependent clones"

    def __init__(
        self,
        result: CommandResult,
        what: str = "",
        *,
        dataset: str | None = None,
        clones: Sequence[str] | None = None,
    ) -> None:
        self.clones = tuple(clones if clones is not None else listed_datasets(result.stderr))
        if self.clones:
            self.reason = (
                f"snapshot has dependent clones: {', '.join(self.clones)}; "
                "delete those clones first (or `zfs promote` one)"
            )
        super().__init__(result, what, dataset=dataset)


class DatasetReplacedError(HostError):
    """The dataset under the stored name is not the one this resource made (its guid differs)."""


_CANNOT = re.compile(r"cannot [a-z ]+ '(?P<name>[^']+)'")
_BUSY = ("dataset is busy", "pool or dataset is busy", "target is busy", "cannot unmount", "umount failed")


def listed_datasets(stderr: str) -> list[str]:
    """The names ZFS lists after "use '-r'/'-R' to destroy the following datasets:"."""
    lines = stderr.splitlines()
    for i, line in enumerate(lines):
        if "destroy the following datasets" in line:
            return [n.strip() for n in lines[i + 1 :] if n.strip() and " " not in n.strip()]
    return []


def error_kind(stderr: str) -> type[ZfsError]:
    """Which error ZFS's stderr describes (first match wins). Examples, from zfs-fuse and OpenZFS:

    - ``cannot create 'rpool/data/x': dataset already exists`` -> DatasetExistsError
    - ``cannot open 'rpool/data/x': dataset does not exist`` -> DatasetNotFoundError
    - ``cannot destroy 'rpool/data/m@v1': snapshot has dependent clones`` (or ``snapshot is cloned``)
      -> DependentClonesError
    - ``cannot destroy 'rpool/data/m': filesystem has children`` -> DatasetHasChildrenError
    - ``cannot destroy 'rpool/data/m': dataset is busy`` / ``umount: ...: target is busy`` -> DatasetBusyError
    - ``cannot create 'rpool/data/a/b': parent does not exist`` -> ParentMissingError
    - anything else -> ZfsError
    """
    if "has dependent clones" in stderr or "snapshot is cloned" in stderr:
        return DependentClonesError
    if "has children" in stderr:
        return DatasetHasChildrenError
    if any(marker in stderr for marker in _BUSY):
        return DatasetBusyError
    if "dataset already exists" in stderr:
        return DatasetExistsError
    if "parent does not exist" in stderr:
        return ParentMissingError
    if "does not exist" in stderr:
        return DatasetNotFoundError
    return ZfsError


def classify(result: CommandResult, what: str = "") -> ZfsError:
    """The typed error for a failed ``zfs`` command, naming the dataset ZFS complained about."""
    match = _CANNOT.search(result.stderr)
    return error_kind(result.stderr)(result, what, dataset=match["name"] if match else None)


BUSY_TIMEOUT = 10.0
"""Seconds to keep retrying a "busy" dataset: an unmount racing a process that is just exiting."""
COMMAND_TIMEOUT = 300.0
"""Upper bound for one zfs command (destroying a large dataset frees space in the background)."""


def run_zfs(
    ex: Executor, argv: Sequence[str], what: str, *, busy_timeout: float = BUSY_TIMEOUT
) -> CommandResult | ZfsError:
    """Run a zfs command; retry "busy" with backoff until ``busy_timeout``. Returns the result or the typed
    error (not raised: callers decide, e.g. "does not exist" on delete means already gone)."""
    deadline = time.monotonic() + busy_timeout
    pause = 0.1
    while True:
        result = ex.run(argv, check=False, timeout=COMMAND_TIMEOUT)
        if result.ok:
            return result
        error = classify(result, what)
        remaining = deadline - time.monotonic()
        if not isinstance(error, DatasetBusyError) or remaining <= 0:
            return error
        time.sleep(min(pause, remaining))  # the last try lands on the deadline
        pause = min(pause * 2, 1.0)


def read_step(names: Sequence[str], props: Iterable[str]) -> HostCommand:
    """The one ``zfs get`` of ``props`` of ``names``, as a step (a create's read-back is one)."""
    return HostCommand("reading " + ", ".join(names), get_argv(names, props))


def run_read(ex: Executor, step: HostCommand) -> dict[str, DatasetFacts]:
    """Run a :func:`read_step`; a dataset that does not exist is simply absent from the result.

    ZFS prints the rows of the datasets that exist and "dataset does not exist" for the others, exiting 1;
    any other failure raises the typed error.
    """
    result = ex.run(step.argv, check=False, timeout=COMMAND_TIMEOUT)
    if not result.ok:
        error = classify(result, step.what)
        if not isinstance(error, DatasetNotFoundError):
            raise error
    return parse_get(result.stdout)


def read_datasets(ex: Executor, names: Sequence[str], props: Iterable[str]) -> dict[str, DatasetFacts]:
    """One ``zfs get`` for ``names``; a missing one is simply absent from the result."""
    return run_read(ex, read_step(names, props))


def read_dataset(ex: Executor, name: str, props: Iterable[str]) -> DatasetFacts | None:
    """One dataset's facts, or None when it does not exist."""
    return read_datasets(ex, [name], props).get(name)


# --- steps the providers share (each one SSH session) ----------------------------------------------------

FILESYSTEM_FACTS = ("type", "origin", "guid", "mountpoint")
"""Read with every filesystem: what it is, what it was cloned from, which instance it is, where it mounts."""


def filesystem_props(declared: Iterable[str]) -> list[str]:
    return list(dict.fromkeys([*FILESYSTEM_FACTS, *sorted(declared)]))


def filesystem_outputs(facts: DatasetFacts, declared: Iterable[str]) -> dict[str, Any]:
    """Outputs read from ZFS: the declared properties' live values, ``mountpoint`` and ``guid``."""
    mountpoint = facts.value("mountpoint") or ""
    return {
        "properties": facts.declared(declared),
        "mountpoint": canonical_value("mountpoint", mountpoint) if mountpoint else "",
        "guid": facts.value("guid") or "",
    }


def apply_properties(
    ex: Executor, name: str, live: Mapping[str, Any], want: Mapping[str, str], what: str
) -> DatasetFacts:
    """``zfs set``/``zfs inherit`` what differs between ``live`` and ``want``, then read back: one session."""
    steps = plan_properties(live, want)
    result = ex.run(apply_argv(name, steps, filesystem_props(want)), check=False, timeout=COMMAND_TIMEOUT)
    if not result.ok:
        raise classify(result, what)
    facts = parse_get(result.stdout).get(name)
    if facts is None:
        raise ValueError(f"`zfs get` printed nothing for {name}: {result.stdout!r}")
    return facts


def destroy(
    ex: Executor,
    name: str,
    what: str,
    *,
    guid: str | None,
    recursive: bool = False,
    busy_timeout: float = BUSY_TIMEOUT,
) -> ZfsError | None:
    """Destroy ``name`` if it is still the instance with ``guid``; "does not exist" is success (idempotent).

    Returns the typed error for the caller to enrich or raise (never ``-R``: dependent clones are an
    error to report, not something to take along). Two sessions: the guid check and the destroy.
    """
    if guid:
        facts = read_dataset(ex, name, ["guid"])
        if facts is None:
            return None  # already gone
        if facts.value("guid") != guid:
            raise DatasetReplacedError(
                ex.host,
                f"{what}: {name} is not the dataset this resource created (guid {facts.value('guid')}, "
                f"stored {guid}); it was replaced out of band. Refusing to destroy it: run a refresh to "
                "adopt it into state, or remove it by hand",
            )
    outcome = run_zfs(ex, destroy_argv(name, recursive=recursive), what, busy_timeout=busy_timeout)
    if isinstance(outcome, DatasetNotFoundError):
        return None
    return outcome if isinstance(outcome, ZfsError) else None


# --- the resources' shared constructor -------------------------------------------------------------------

ArgsT = TypeVar("ArgsT")


class ZfsResource(DynamicResource, Generic[ArgsT]):
    """What the three ZFS resources share: typed args (a dataclass whose fields are the inputs), the host's
    SSH target and the busy-retry budget. A subclass names its provider class and logic version."""

    provider_type: ClassVar[Callable[..., ResourceProvider]]
    logic_version: ClassVar[str]

    def __init__(
        self,
        resource_name: str,
        args: ArgsT,
        *,
        ssh_target: SshTarget,
        busy_timeout: float = BUSY_TIMEOUT,
        opts: Options = None,
    ) -> None:
        provider = self.provider_type(ssh_target=ssh_target, busy_timeout=busy_timeout)
        self._register(provider, resource_name, {**vars(args), VERSION_KEY: self.logic_version}, opts)
