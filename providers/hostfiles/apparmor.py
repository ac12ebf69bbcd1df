"""An AppArmor profile on the Proxmox host. Token ``pulumi-python:dynamic/phoenix:AppArmorProfile``.

PVE starts a container under the profile its raw ``lxc.apparmor.profile`` line names, so the profile must
be on the host (and loaded) before the container's first start; guests depend on this resource.

Lifecycle:

- **identity** is ``name``: the file ``/etc/apparmor.d/<name>`` and the one top-level ``profile <name>``
  the text declares (``check`` refuses a mismatch). A new name replaces, create-before-delete: two names
  are two files and two kernel profiles, so they coexist.
- **create / update** (content or version): upload atomically (temp file + rename, mode 0644), then
  ``apparmor_parser -r -W <path>``; ``-r`` replaces a loaded profile in place, so running containers keep
  running under the new rules. Two SSH sessions. If the parser refuses the text, the host is left as it
  was (create removes the file it wrote, update puts the previous text back and re-loads it) and
  :class:`AppArmorLoadError` carries the host, the command and the parser's stderr tail.
- **read** (refresh): one SSH session running one small script; a missing file means gone, a different
  sha256 or (kernel mode) a profile no longer loaded is drift that the next ``up`` repairs (update).
- **delete** works from stored outputs alone: ``apparmor_parser -R`` fed the *stored* text on stdin
  (the host file may be gone or edited out of band; ``-R`` only needs the profile's name from it), a
  profile that is not loaded is fine, then ``rm -f`` of the stored path.

``load_mode`` (a provider option, plain data): ``"kernel"`` (production default) loads for real;
``"compile-only"`` is for hosts without the AppArmor LSM (the lab): the parser compiles the uploaded file
against the host's abstractions (``apparmor_parser -Q -K -T``: everything but the kernel load), outputs say
``loaded: false, load_simulated: true``, and delete skips the unload. Nothing is pretended loaded.

State (outputs): ``name``, ``content``, ``version``, ``path``, ``sha256`` (of the host file as last seen),
``loaded`` (the kernel lists the profile) and ``load_simulated``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    UpdateResult,
)

from providers.base import (
    VERSION_KEY,
    DynamicResource,
    HostProvider,
    Inputs,
    attach_cleanup,
    diff_inputs,
    is_unknown,
    require,
    stored,
)
from providers.channels.command import CommandResult, Executor, sh_argv, sha256_text, write_file_argv
from providers.channels.steps import HostCommand
from providers.channels.targets import SshTarget
from providers.errors import RemoteCommandError

PROVIDER_VERSION = "1"
"""Bump when this provider's behaviour changes: every profile then updates (re-uploads and re-loads)."""

PROFILE_DIR = "/etc/apparmor.d"
KERNEL_PROFILES = "/sys/kernel/security/apparmor/profiles"
"""The kernel's list of loaded profiles, ``<name> (<mode>)`` per line; absent without the AppArmor LSM."""

LoadMode = Literal["kernel", "compile-only"]
LOAD_MODES: tuple[LoadMode, ...] = ("kernel", "compile-only")

PARSER_TIMEOUT = 120.0
READ_TIMEOUT = 30.0

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}")
# Entries of /etc/apparmor.d that are not profiles: a profile file by that name would clobber them.
RESERVED_NAMES = frozenset((
    "abi", "abstractions", "apache2.d", "cache", "disable", "force-complain", "local", "lxc",
    "lxc-containers", "tunables", "unconfined",
))  # fmt: skip
# The boot-time loader (apparmor.service) skips files with these endings, so such a profile would be
# gone after a reboot while state still says it is there.
SKIPPED_SUFFIXES = (
    ".dpkg-new", ".dpkg-old", ".dpkg-dist", ".dpkg-bak", ".dpkg-remove",
    ".pacsave", ".pacnew", ".rpmnew", ".rpmsave", ".orig", ".rej", "~",
)  # fmt: skip
NOT_LOADED = "Profile doesn't exist"
"""What ``apparmor_parser -R`` prints for a profile the kernel does not have (exit status 1)."""


# --- 1. inputs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppArmorProfileInputs(Inputs):
    name: str
    """Profile name, also the file name under /etc/apparmor.d (identity)."""
    content: str
    """The profile text, e.g. a file from the repository's apparmor/ folder."""
    version: str = PROVIDER_VERSION

    @property
    def path(self) -> str:
        return profile_path(self.name)

    @property
    def sha256(self) -> str:
        return sha256_text(self.content)


# --- 2. pure logic: validation, commands, parsing, diff ---------------------------------------------------


def profile_path(name: str) -> str:
    return f"{PROFILE_DIR}/{name}"


def _strip_comment(line: str) -> str:
    # `#include` is a directive; any other `#` starts a comment.
    if line.lstrip().startswith("#include"):
        return line
    return line.split("#", 1)[0]


_PROFILE_DECL = re.compile(r'\s*profile\s+(?:"(?P<quoted>[^"]*)"|(?P<bare>[^\s{"]+))')


def declared_profiles(text: str) -> list[str]:
    """Names of the top-level ``profile <name>`` declarations, in order; child profiles and hats are not.

    ``"#include <tunables/global>\\nprofile phoenix-x flags=(complain) {\\n  profile child {}\\n}"``
    -> ``["phoenix-x"]``. Braces inside rules (``@{PROC}``, ``/{usr/,}bin``) balance on their line.
    """
    names: list[str] = []
    depth = 0
    for raw in text.splitlines():
        line = _strip_comment(raw)
        if depth == 0 and (match := _PROFILE_DECL.match(line)):
            names.append(match["quoted"] if match["quoted"] is not None else match["bare"])
        depth += line.count("{") - line.count("}")
    return names


def validate(props: Mapping[str, Any]) -> list[CheckFailure]:
    """Failures for the known values; unknowns (preview) pass and are checked again at ``up``."""
    failures = require(props, ["name", "content"])
    name, content, version = props.get("name"), props.get("content"), props.get(VERSION_KEY)
    name_ok = isinstance(name, str)
    if name is not None and not is_unknown(name):
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            name_ok = False
            failures.append(
                CheckFailure(
                    "name", f"{name!r} must be a plain file name: letters, digits and . _ + -, at most 128"
                )
            )
        elif name in RESERVED_NAMES:
            failures.append(CheckFailure("name", f"{name!r} is reserved under {PROFILE_DIR}"))
        elif name.endswith(SKIPPED_SUFFIXES):
            failures.append(
                CheckFailure(
                    "name",
                    f"{name!r}: AppArmor's boot-time loader skips files with this ending, so the "
                    "profile would be gone after a reboot",
                )
            )
    if content is not None and not is_unknown(content):
        if not isinstance(content, str) or not content.strip():
            failures.append(CheckFailure("content", "the profile text is empty"))
        elif name_ok and not is_unknown(name):
            failures.extend(_declaration_failures(str(name), content))
    if version is not None and not is_unknown(version) and not isinstance(version, str):
        failures.append(CheckFailure(VERSION_KEY, f"must be a string, got {version!r}"))
    return failures


def _declaration_failures(name: str, content: str) -> list[CheckFailure]:
    # Read and delete find the kernel profile by the resource's name: the text must declare exactly it.
    declared = declared_profiles(content)
    if declared == [name]:
        return []
    if not declared:
        reason = f"the text declares no top-level `profile <name>`; expected `profile {name}`"
    elif len(declared) > 1:
        listed = ", ".join(declared)
        reason = (
            f"the text declares {len(declared)} top-level profiles ({listed}); one resource is one profile"
        )
    else:
        reason = (
            f"name {name!r} does not match the profile the text declares (`profile {declared[0]}`): "
            "the file name and the profile name must agree"
        )
    return [CheckFailure("content", reason)]


def load_argv(path: str, mode: LoadMode) -> list[str]:
    """Load (replace) the profile in ``path``, or in compile-only mode compile it without any kernel load.

    ``-W`` writes the parser's cache so the boot-time load is fast; compile-only skips the cache entirely
    (``-K``, ``-T``): a host without the LSM has no cache to write.
    """
    if mode == "kernel":
        return ["apparmor_parser", "-r", "-W", path]
    return ["apparmor_parser", "-Q", "-K", "-T", path]


def install_steps(want: AppArmorProfileInputs, mode: LoadMode) -> list[HostCommand]:
    """Create and update alike: the atomic upload (mode 0644, the text on stdin), then the load (or, in
    compile-only mode, the compile). ``phoenix plan`` renders these; the provider runs them."""
    label = f"the profile text (sha256 {want.sha256[:12]})"
    return [
        HostCommand(f"uploading {want.path}", write_file_argv(want.path, 0o644), want.content, label),
        HostCommand(
            f"loading AppArmor profile {want.name}", load_argv(want.path, mode), timeout_s=PARSER_TIMEOUT
        ),
    ]


UNLOAD_ARGV = ["apparmor_parser", "-R"]
"""Unload the profile whose text arrives on stdin (the stored text: the host file may be gone)."""


def remove_argv(path: str) -> list[str]:
    return ["rm", "-f", "--", path]


_READ_SCRIPT = """\
path=$1 name=$2 profiles=$3
if [ -f "$path" ]; then echo "file $(sha256sum < "$path" | cut -d ' ' -f 1)"; else echo "file missing"; fi
if [ -r "$profiles" ]; then
  echo "lsm yes"
  grep -F -- "$name (" "$profiles" | sed 's/^/loaded /'
else
  echo "lsm no"
fi
"""


def read_argv(path: str, name: str, profiles: str = KERNEL_PROFILES) -> list[str]:
    """One command printing the file's sha256 (or ``missing``) and the kernel's lines for the profile."""
    return sh_argv(_READ_SCRIPT, "phoenix-apparmor-read", path, name, profiles)


@dataclass(frozen=True)
class ProfileFacts:
    """What the host has for one profile."""

    sha256: str | None
    """sha256 of the file; None when the file is missing."""
    lsm: bool
    """The kernel exposes AppArmor's profile list (False on a host without the AppArmor LSM)."""
    mode: str | None
    """``enforce``/``complain``/... when the kernel has the profile loaded, else None."""

    @property
    def loaded(self) -> bool:
        return self.mode is not None


_SHA256 = re.compile(r"[0-9a-f]{64}")


def parse_read(stdout: str, name: str) -> ProfileFacts:
    """Parse :func:`read_argv`'s output. Example::

        file 3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b
        lsm yes
        loaded phoenix-lxc-confined (enforce)
        loaded phoenix-lxc-confined-old (enforce)

    -> ``ProfileFacts(sha256="3a7b...", lsm=True, mode="enforce")``: only the line naming exactly
    ``name`` counts (grep matched a substring). Raises ValueError on output it does not recognise.
    """
    sha: str | None = None
    lsm: bool | None = None
    seen_file = False
    mode: str | None = None
    for line in stdout.splitlines():
        key, _, value = line.partition(" ")
        if key == "file" and (value == "missing" or _SHA256.fullmatch(value)):
            seen_file, sha = True, (None if value == "missing" else value)
        elif key == "lsm" and value in ("yes", "no"):
            lsm = value == "yes"
        elif key == "loaded":
            entry, _, rest = value.rpartition(" (")
            if entry == name and rest.endswith(")"):
                mode = rest[:-1]
        elif line.strip():
            raise ValueError(f"unexpected line in the AppArmor read output: {line!r}")
    if not seen_file or lsm is None:
        raise ValueError(f"incomplete AppArmor read output: {stdout!r}")
    return ProfileFacts(sha, lsm, mode)


def unload_tolerated(result: CommandResult) -> bool:
    """``apparmor_parser -R`` succeeded, or failed only because the kernel has no such profile."""
    return result.ok or NOT_LOADED in result.stderr


def diff_profile(olds: Mapping[str, Any], news: Mapping[str, Any], *, expect_loaded: bool) -> DiffResult:
    """The diff table. ``olds`` are the stored outputs (refreshed or not), ``news`` the checked inputs.

    - name changed -> replace;
    - content or version changed -> update (re-upload, re-load);
    - the host file's sha256 (as last read) differs from the wanted text's -> update (edited out of band);
    - ``expect_loaded`` (kernel mode) and the stored ``loaded`` is false -> update (re-load);
    - nothing else (``__provider`` included) is a change.
    """
    base = diff_inputs(olds, news, replace_on=["name"], update_on=["content"])
    if base.changes:
        return base
    content = news.get("content")
    edited = isinstance(content, str) and olds.get("sha256") != sha256_text(content)
    unloaded = expect_loaded and olds.get("loaded") is not True
    return DiffResult(changes=edited or unloaded, replaces=[], delete_before_replace=False)


class AppArmorLoadError(RemoteCommandError):
    """``apparmor_parser`` refused the profile (syntax, a missing abstraction) or the kernel refused it.

    Carries the host, the command and the parser's stderr tail.
    """

    @classmethod
    def from_result(cls, result: CommandResult, what: str) -> AppArmorLoadError:
        return cls(result.host, result.argv, result.exit_status, result.stderr or result.stdout, what)


# --- 3. the provider -------------------------------------------------------------------------------------


@dataclass
class AppArmorProfileProvider(HostProvider):
    """Plain data only (pickled into state): the inherited SSH target and the load mode."""

    load_mode: LoadMode = "kernel"

    def __post_init__(self) -> None:
        if self.load_mode not in LOAD_MODES:
            raise ValueError(f"load_mode must be one of {', '.join(LOAD_MODES)}, got {self.load_mode!r}")

    @property
    def simulated(self) -> bool:
        return self.load_mode != "kernel"

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        inputs = {**news}
        if inputs.get(VERSION_KEY) is None:
            inputs[VERSION_KEY] = PROVIDER_VERSION
        return CheckResult(inputs, validate(inputs))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return diff_profile(olds, news, expect_loaded=not self.simulated)

    def create(self, props: dict[str, Any]) -> CreateResult:
        want = AppArmorProfileInputs.from_props(props)
        ex = self.ssh()
        # A refused profile must not stay in /etc/apparmor.d: the boot-time load would fail on it.
        self._install(ex, want, rollback=lambda: ex.run(remove_argv(want.path), check=False))
        return CreateResult(want.path, self._outputs(want))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        want = AppArmorProfileInputs.from_props(news)
        ex = self.ssh()
        previous = olds.get("content")

        def restore() -> None:  # the previous text was accepted before; put it back and re-load it
            if isinstance(previous, str):
                ex.run(write_file_argv(want.path, 0o644), stdin=previous, check=False)
                ex.run(load_argv(want.path, self.load_mode), check=False, timeout=PARSER_TIMEOUT)

        self._install(ex, want, rollback=restore)
        return UpdateResult(self._outputs(want))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        name = str(props["name"])
        path = str(props.get("path") or id_)
        result = self.ssh().run(read_argv(path, name), timeout=READ_TIMEOUT)
        facts = parse_read(result.stdout, name)
        if facts.sha256 is None:
            return ReadResult(None, {})  # gone: removed out of band
        seen = {"sha256": facts.sha256, "loaded": facts.loaded, "load_simulated": self.simulated}
        return ReadResult(id_, {**stored(props), "path": path, **seen})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        path = str(props.get("path") or id_)
        ex = self.ssh()
        content = props.get("content")
        # Whether the profile was loaded is in the stored outputs: a compile-only profile never was.
        if not props.get("load_simulated") and isinstance(content, str):
            result = ex.run(UNLOAD_ARGV, stdin=content, check=False, timeout=PARSER_TIMEOUT)
            if not unload_tolerated(result):
                raise AppArmorLoadError.from_result(result, f"unloading AppArmor profile {props.get('name')}")
        ex.run(remove_argv(path))

    def _install(self, ex: Executor, want: AppArmorProfileInputs, rollback: Callable[[], object]) -> None:
        upload, load = install_steps(want, self.load_mode)
        ex.run(upload.argv, stdin=upload.stdin)
        result = ex.run(load.argv, check=False, timeout=load.timeout_s)
        if result.ok:
            return
        what = f"loading AppArmor profile {want.name}"
        if self.simulated:
            what = f"compiling AppArmor profile {want.name} (compile-only: the kernel load is simulated)"
        error = AppArmorLoadError.from_result(result, what)
        # The parser's error stays first; a failed rollback says the host may differ from before.
        attach_cleanup(error, rollback, f"rolling back on {ex.host}")
        raise error

    def _outputs(self, want: AppArmorProfileInputs) -> dict[str, Any]:
        return {
            **want.to_props(),
            "path": want.path,
            "sha256": want.sha256,
            "loaded": not self.simulated,
            "load_simulated": self.simulated,
        }


# --- 4. the resource -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppArmorProfileArgs:
    name: pulumi.Input[str]
    """Profile name: the file under /etc/apparmor.d and the ``profile <name>`` the text declares."""
    content: pulumi.Input[str]
    """The profile text (``Environment.apparmor_profiles[name]``, read from apparmor/)."""


class AppArmorProfile(DynamicResource, module="phoenix", name="AppArmorProfile"):
    """An AppArmor profile uploaded to the host and loaded (see the module docstring)."""

    name: pulumi.Output[str]
    content: pulumi.Output[str]
    version: pulumi.Output[str]
    path: pulumi.Output[str]
    """``/etc/apparmor.d/<name>``."""
    sha256: pulumi.Output[str]
    """The profile file's sha256 on the host (refresh: a different one means it was edited there)."""
    loaded: pulumi.Output[bool]
    """The kernel has the profile (refresh reads the kernel's list)."""
    load_simulated: pulumi.Output[bool]
    """``compile-only`` mode: the profile was compiled, not loaded (a host or CI without the LSM)."""

    def __init__(
        self,
        resource_name: str,
        args: AppArmorProfileArgs,
        *,
        ssh_target: SshTarget,
        load_mode: LoadMode = "kernel",
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        provider = AppArmorProfileProvider(ssh_target=ssh_target, load_mode=load_mode)
        props = {**vars(args), VERSION_KEY: PROVIDER_VERSION}
        self._register(provider, resource_name, props, opts)
