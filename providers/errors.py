"""One error hierarchy for everything that touches a host.

Every error carries the evidence a user needs to act without re-running: the host, the command (secrets
masked), the exit code and the tail of stderr, or PVE's own message and the task log tail.
"""

from __future__ import annotations

TAIL_LINES = 10


def tail(text: str, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` non-empty lines of ``text``: ``"a\\nb\\n\\nc" -> "b\\nc"`` for lines=2."""
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


class PhoenixError(Exception):
    """Base of every error Phoenix raises on purpose."""


class ChannelError(PhoenixError):
    """A channel to a host (SSH, the PVE API) cannot be opened with what this provider process was given.

    Met at run time, inside the provider host: the CLI reports it as what it is, never as "invalid config"
    (a mistake in the config files is ``phoenix_components.config.errors.ConfigError``, that layer's own).
    """


class MissingCredentialsError(ChannelError):
    """A secret the channel needs is missing, unreadable or unusable (no SSH key, a passphrase-protected
    key, no ``phoenix:pvePassword``...). The message names the config key or file, never the secret."""


class NoTargetError(ChannelError):
    """A provider step needs a channel the provider was built without (no ``ssh_target``/``api_target``)."""


class InvalidTargetError(ChannelError):
    """A target cannot be used as given: a malformed host-key pin, API url or token id, a task bound below
    1, or a ``PHOENIX_*`` setting of the provider host that is no number."""


class HostError(PhoenixError):
    """Something went wrong on a named host."""

    def __init__(self, host: str, message: str) -> None:
        self.host = host
        super().__init__(f"{host}: {message}")


class SshConnectError(HostError):
    """The SSH connection could not be made (refused, auth failed, dropped)."""


class HostKeyMismatchError(SshConnectError):
    """The host presented a key other than the pinned one. Never accepted automatically."""

    def __init__(self, host: str, expected: str, got: str) -> None:
        self.expected, self.got = expected, got
        super().__init__(
            host,
            f"host key mismatch: pinned {expected}, host presented {got}. "
            "If the host was reinstalled, verify the new key out of band and update the pinned fingerprint.",
        )


class RemoteCommandError(HostError):
    """A command exited non-zero (or could not finish). ``argv`` is already masked."""

    def __init__(self, host: str, argv: str, exit_status: int | None, stderr: str, what: str = "") -> None:
        self.argv, self.exit_status, self.stderr_tail = argv, exit_status, tail(stderr)
        status = "did not finish" if exit_status is None else f"exited {exit_status}"
        head = f"{what}: " if what else ""
        detail = f"\n--- stderr (tail) ---\n{self.stderr_tail}" if self.stderr_tail else ""
        super().__init__(host, f"{head}`{argv}` {status}{detail}")


class CommandTimeoutError(RemoteCommandError):
    """A command ran past its deadline; the remote process was killed."""

    def __init__(self, host: str, argv: str, timeout: float, stderr: str = "") -> None:
        self.timeout = timeout
        super().__init__(host, argv, None, stderr, what=f"timed out after {timeout:g}s")


class PveError(HostError):
    """The PVE API refused a call. ``message`` is PVE's own wording."""

    def __init__(self, host: str, message: str, *, status: int | None = None, path: str = "") -> None:
        self.status, self.path, self.pve_message = status, path, message
        where = f"{path}: " if path else ""
        code = f" (HTTP {status})" if status else ""
        super().__init__(host, f"{where}{message}{code}")


class PvePermissionError(PveError):
    """An operation PVE reserves for root@pam was attempted with an API token (or another user)."""


class PveLockedError(PveError):
    """The guest stayed locked (``CT is locked`` / ``can't lock file``) past the retry budget."""


class PveTaskError(PveError):
    """A PVE task (UPID) ended in ``TASK ERROR`` or ran past its deadline."""

    def __init__(self, host: str, upid: str, status: str, log_tail: str, *, step: str = "") -> None:
        self.upid, self.task_status, self.log_tail = upid, status, log_tail
        head = f"{step}: " if step else ""
        message = f"{head}task {upid} ended with {status!r}"
        super().__init__(host, f"{message}\n--- task log (tail) ---\n{log_tail}")


class PveTaskTimeoutError(PveTaskError):
    """A PVE task did not finish before its deadline (it may still be running on the host)."""


class RebootRequiredError(HostError):
    """Phoenix changed the host in a way that takes effect only at the next boot, and was not allowed to
    reboot it. ``done`` names what was changed, so the user knows what a reboot will apply."""

    def __init__(self, host: str, done: list[str], why: str) -> None:
        self.done, self.why = list(done), why
        super().__init__(
            host,
            f"reboot required: {why}. Phoenix did: {'; '.join(done)}. Reboot the host and run again, "
            "or set allow_reboot in host.json's nvidia section to let Phoenix reboot it and wait",
        )


class SecureBootError(HostError):
    """Secure Boot is on, so the kernel would refuse the unsigned module an install builds."""

    def __init__(self, host: str, evidence: str) -> None:
        self.evidence = evidence
        super().__init__(
            host,
            f"Secure Boot is enabled ({evidence}); nothing was installed, because the kernel would refuse "
            "the unsigned NVIDIA module DKMS builds. Choose: sign the module (enrol a MOK key with mokutil "
            "and have DKMS sign with it, then install by hand or set nvidia.manage false), or turn Secure "
            "Boot off in the firmware setup",
        )


class RebootTimeoutError(HostError):
    """Phoenix rebooted the host (allow_reboot) and it did not come back before the deadline."""


class IommuError(HostError):
    """A GPU given to a VM cannot be passed through safely: no IOMMU, a shared IOMMU group (the group's
    other devices named), or the host's nvidia driver bound to it."""

    def __init__(self, host: str, problems: dict[str, str]) -> None:
        self.problems = dict(problems)
        listed = "; ".join(f"{address}: {why}" for address, why in sorted(problems.items()))
        super().__init__(host, f"GPU passthrough is not possible: {listed}")


class MissingDeviceNodeError(HostError):
    """Device nodes a container passes through (its ``devN`` keys) are not on the host, so pve-container
    would refuse to start it. Raised before the clone or the start: nothing is made or started."""

    def __init__(self, host: str, guest: str, missing: list[str]) -> None:
        self.guest, self.missing = guest, list(missing)
        super().__init__(
            host,
            f"{guest}: device nodes missing on the host: {', '.join(missing)}. The NVIDIA nodes come from "
            "phoenix-nvidia-nodes.service (nvidia-modprobe -u -c=N) at boot; run it, or `pulumi up` the "
            "host baseline first",
        )


class UnreplaceableError(HostError):
    """A change needs a new resource in place of one Phoenix keeps on destroy (``retain_on_delete``) or
    adopts: the kept one would still hold its vmid or name, or the new one would be an adoption of the
    old one, nothing rebuilt. Raised by ``diff``, so ``pulumi preview`` reports it and nothing on the host
    is touched."""
