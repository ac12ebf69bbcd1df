"""A model server's systemd unit as text: systemd's quoting for arguments and free text, and the one unit
shape every engine uses (``phoenix_components/render/engines/``). Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from phoenix_components.render.errors import CONTROL_CHARACTER, UnsafeValueError

# What systemd_quote escapes, in one pass: a backslash and a quote for systemd's quoting, `%` (specifiers)
# and, in ExecStart only, `$` (variables).
_ENVIRONMENT = str.maketrans({"\\": "\\\\", '"': '\\"', "%": "%%"})
_ARGUMENT = str.maketrans({"\\": "\\\\", '"': '\\"', "%": "%%", "$": "$$"})


def systemd_quote(arg: str, *, variables: bool = True) -> str:
    """One ExecStart argument: systemd expands ``%`` specifiers and ``$`` variables, so both are escaped.
    A control character (a newline would start a new unit line: another ``ExecStartPre=``) is refused; the
    config models never let one through, this is the last line of defence.

    ``variables=False`` is for ``Environment=``, where systemd expands specifiers but takes ``$`` literally
    (``$$`` would reach the process as two dollars)."""
    if CONTROL_CHARACTER.search(arg):
        raise UnsafeValueError(f"a control character in a systemd unit argument: {arg!r}")
    return f'"{arg.translate(_ARGUMENT if variables else _ENVIRONMENT)}"'


def systemd_text(text: str) -> str:
    """A free-text unit value (``Description=``): specifiers escaped (``%`` -> ``%%``). A control character
    (systemd ends a line at ``\\n`` and ``\\r``) or a trailing backslash (it continues the line onto the
    next one) would change what the unit says, so both are refused."""
    if CONTROL_CHARACTER.search(text) or text.endswith("\\"):
        raise UnsafeValueError(f"a control character or trailing backslash in a systemd unit value: {text!r}")
    return text.replace("%", "%%")


def service_unit(
    resource: str,
    description: str,
    argv: Sequence[str],
    environment: Mapping[str, str],
    *,
    service: Sequence[str] = (),
) -> str:
    """The unit that runs ``argv`` as a long-lived server: restarted on failure, no start timeout (loading
    a model takes minutes; readiness is the health gate's business, not systemd's). ``service`` adds
    fixed ``[Service]`` lines of Phoenix's own (``User=``, ``CacheDirectory=``), never config text."""
    env_lines = [
        f"Environment={systemd_quote(f'{k}={v}', variables=False)}" for k, v in sorted(environment.items())
    ]
    return "\n".join(
        [
            f"# Managed by Phoenix ({resource}); edits are overwritten by the next `pulumi up`.",
            "[Unit]",
            f"Description={systemd_text(description)}",
            "After=network-online.target",
            "Wants=network-online.target",
            "",
            "[Service]",
            "Type=simple",
            *service,
            *env_lines,
            "ExecStart=" + " ".join(systemd_quote(a) for a in argv),
            "Restart=on-failure",
            "RestartSec=5",
            "TimeoutStartSec=infinity",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]
    )
