"""The vLLM engine config as the command line of ``vllm serve``; pure, so plan, the unit and tests agree."""

from __future__ import annotations

from phoenix_components.config.models import VllmEngine
from phoenix_components.render.errors import UnsafeValueError

VLLM_BIN = "/opt/vllm/bin/vllm"  # where features/vllm.sh installs it


def engine_args(engine: VllmEngine) -> list[str]:
    """``vllm serve`` argv: the model first, then every section flattened to ``--kebab-case`` flags.

    ``True`` becomes a bare flag, ``False`` and unset values are left out (vLLM's defaults apply), and
    ``extra_args`` come last so they can add what the sections do not model.
    """
    argv = [VLLM_BIN, "serve", engine.model.model]
    for section in (engine.model, engine.cache, engine.parallel, engine.server):
        for name, value in section.model_dump().items():
            if section is engine.model and name == "model":
                continue
            flag = "--" + name.replace("_", "-")
            if value is True:
                argv.append(flag)
            elif value is False or value is None:
                continue
            else:
                argv += [flag, str(value)]
    return argv + list(engine.extra_args)


UNIT_PATH = "/etc/systemd/system/vllm.service"


def systemd_quote(arg: str, *, variables: bool = True) -> str:
    """One ExecStart argument: systemd expands ``%`` specifiers and ``$`` variables, so both are escaped.
    A control character (a newline would start a new unit line: another ``ExecStartPre=``) is refused; the
    config models never let one through, this is the last line of defence.

    ``variables=False`` is for ``Environment=``, where systemd expands specifiers but takes ``$`` literally
    (``$$`` would reach the process as two dollars)."""
    if any(ord(c) < 0x20 or c == "\x7f" for c in arg):
        raise UnsafeValueError(f"a control character in a systemd unit argument: {arg!r}")
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    if variables:
        escaped = escaped.replace("$", "$$")
    return f'"{escaped}"'


def systemd_text(text: str) -> str:
    """A free-text unit value (``Description=``): specifiers escaped (``%`` -> ``%%``). A control character
    (systemd ends a line at ``\\n`` and ``\\r``) or a trailing backslash (it continues the line onto the
    next one) would change what the unit says, so both are refused."""
    if any(ord(c) < 0x20 or c == "\x7f" for c in text) or text.endswith("\\"):
        raise UnsafeValueError(f"a control character or trailing backslash in a systemd unit value: {text!r}")
    return text.replace("%", "%%")


def render_unit(engine: VllmEngine, *, environment: dict[str, str] | None = None) -> str:
    """The systemd unit that runs ``vllm serve`` for ``engine`` inside the guest."""
    env_lines = [
        f"Environment={systemd_quote(f'{k}={v}', variables=False)}"
        for k, v in sorted((environment or {}).items())
    ]
    return "\n".join(
        [
            "# Managed by Phoenix (VllmService); edits are overwritten by the next `pulumi up`.",
            "[Unit]",
            f"Description={systemd_text(f'vLLM serving {engine.server.served_model_name}')}",
            "After=network-online.target",
            "Wants=network-online.target",
            "",
            "[Service]",
            "Type=simple",
            *env_lines,
            "ExecStart=" + " ".join(systemd_quote(a) for a in engine_args(engine)),
            "Restart=on-failure",
            "RestartSec=5",
            # Loading a large model takes minutes; readiness is judged by the health check, not systemd.
            "TimeoutStartSec=infinity",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]
    )
