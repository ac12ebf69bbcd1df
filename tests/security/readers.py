"""Read rendered text the way its consumer does: systemd (unit files), cloud-init (runcmd) and a shell.

These are small re-implementations of the consumers' documented rules, used by the security suite to
check that a renderer's output means exactly what it was given:

- :func:`unit_entries` / :func:`exec_words` / :func:`environment_words`: systemd.syntax(7) and
  systemd.service(5) — lines end at ``\\n`` or ``\\r``, a trailing backslash joins the next line,
  ``#``/``;`` start comments, ``%`` specifiers are expanded before words are split, words are split with
  quotes and C escapes, and in ``ExecStart=`` only, ``$$`` is a literal dollar and ``$X`` a variable.
- :func:`shellify`: cloud-init's ``runcmd``: each list entry becomes one line of a ``/bin/sh`` script,
  every argument single-quoted (``'`` written as ``'\\''``); a string entry is copied verbatim.
- :func:`run_with_stubs`: run a shell text for real, with every command it may call replaced by a stub
  that records the argv it received, so a test compares argv lists rather than strings.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

# ------------------------------------------------------------------------------------------- systemd


WHITESPACE = " \t\n\r"  # systemd's WHITESPACE; Python's str.strip() would also eat \x85, \xa0, ...


def unit_entries(text: str) -> list[tuple[str, str, str]]:
    """``[(section, key, value)]`` of a unit file, read as systemd's config parser reads it."""
    physical: list[str] = []
    line: list[str] = []
    i = 0
    while i < len(text):  # systemd's read_line(): "\n", "\r", "\r\n" and NUL all end a line
        c = text[i]
        if c in "\n\r\0":
            physical.append("".join(line))
            line = []
            if c == "\r" and text[i + 1 : i + 2] == "\n":
                i += 1
        else:
            line.append(c)
        i += 1
    if line:
        physical.append("".join(line))
    entries: list[tuple[str, str, str]] = []
    section = ""
    pending = ""
    for raw in physical:
        stripped = raw.strip(WHITESPACE)
        if pending and stripped[:1] in ("#", ";"):
            continue  # comment lines inside a continuation are skipped
        if not pending and (not stripped or stripped[:1] in ("#", ";")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical, pending = pending + stripped, ""
        if logical.startswith("[") and logical.endswith("]"):
            section = logical[1:-1]
            continue
        assert "=" in logical, f"a unit line that is neither a section nor an assignment: {logical!r}"
        key, _, value = logical.partition("=")
        entries.append((section, key.strip(WHITESPACE), value.lstrip(WHITESPACE)))
    assert not pending, "the unit ends inside a continued line"
    return entries


def expand_specifiers(value: str) -> str:
    """``%%`` -> ``%``; any other specifier would be replaced by systemd, so it must not be there."""
    out: list[str] = []
    i = 0
    while i < len(value):
        if value[i] == "%":
            assert value[i + 1 : i + 2] == "%", f"an unescaped specifier in {value!r}"
            out.append("%")
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "s": " ",
    "\\": "\\",
    '"': '"',
    "'": "'",
}


def _unescape(value: str, i: int) -> tuple[str, int]:
    """One C escape at ``value[i] == '\\\\'`` (systemd's cunescape_one); returns (text, next index)."""
    c = value[i + 1 : i + 2]
    assert c, f"a trailing backslash in {value!r}"
    if c in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[c], i + 2
    if c == "x":
        return chr(int(value[i + 2 : i + 4], 16)), i + 4
    if c == "u":
        return chr(int(value[i + 2 : i + 6], 16)), i + 6
    if c == "U":
        return chr(int(value[i + 2 : i + 10], 16)), i + 10
    if c in "01234567":
        return chr(int(value[i + 1 : i + 4], 8)), i + 4
    raise AssertionError(f"an escape systemd refuses (\\{c}) in {value!r}")


def split_words(value: str) -> list[str]:
    """Words as systemd's extract_first_word(EXTRACT_UNQUOTE | EXTRACT_CUNESCAPE) splits them."""
    words: list[str] = []
    i = 0
    while i < len(value):
        while i < len(value) and value[i] in " \t":
            i += 1
        if i >= len(value):
            break
        word: list[str] = []
        quote: str | None = None
        while i < len(value):
            c = value[i]
            if quote is None and c in " \t":
                break
            if c == "\\":
                text, i = _unescape(value, i)
                word.append(text)
                continue
            if quote is None and c in "\"'":
                quote = c
            elif c == quote:
                quote = None
            else:
                word.append(c)
            i += 1
        assert quote is None, f"an unterminated quote in {value!r}"
        words.append("".join(word))
    return words


def exec_words(value: str) -> list[str]:
    """The argv of an ``ExecStart=`` value: no prefix characters, every ``$`` escaped as ``$$``."""
    assert value[:1] not in ("-", "@", ":", "+", "!"), f"an ExecStart prefix in {value!r}"
    argv = []
    for word in split_words(expand_specifiers(value)):
        assert "$" not in word.replace("$$", ""), f"an unescaped variable in {word!r}"
        argv.append(word.replace("$$", "$"))
    return argv


def environment_words(value: str) -> dict[str, str]:
    """The assignments of an ``Environment=`` value (``$`` is literal there)."""
    assignments = {}
    for word in split_words(expand_specifiers(value)):
        key, sep, val = word.partition("=")
        assert sep, f"not an assignment: {word!r}"
        assignments[key] = val
    return assignments


# ------------------------------------------------------------------------------------------ cloud-init


def shellify(runcmd: Sequence[object]) -> str:
    """cloud-init's runcmd script (cloudinit.util.shellify): list entries quoted, strings verbatim."""
    lines = ["#!/bin/sh"]
    for entry in runcmd:
        if isinstance(entry, list | tuple):
            lines.append(" ".join("'" + str(a).replace("'", "'\\''") + "'" for a in entry))
        else:
            assert isinstance(entry, str), f"runcmd entry of type {type(entry).__name__}"
            lines.append(entry)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- shell

_STUB = """#!{python}
import json, os, sys
with open(os.environ["PHOENIX_TEST_RECORD"], "a", encoding="utf-8") as record:
    record.write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + "\\n")
"""


def sh_parses(script: str, shell: str = "sh") -> None:
    """``sh -n``: the text is one well-formed shell program."""
    checked = subprocess.run([shell, "-n"], input=script.encode(), capture_output=True, timeout=10)
    assert checked.returncode == 0, checked.stderr.decode(errors="replace")


def run_with_stubs(script: str, commands: Sequence[str], work: Path, shell: str = "sh") -> list[list[str]]:
    """Run ``script`` with PATH holding only stubs named ``commands``; the argv each stub received.

    Anything else the script tried to run would fail (exit 127) and fail the test: nothing on this
    machine is touched.
    """
    bin_dir = work / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in commands:
        stub = bin_dir / name
        stub.write_text(_STUB.format(python=sys.executable))
        stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    record = work / "argv.jsonl"
    record.write_text("")
    shell_path = subprocess.run(["which", shell], capture_output=True, text=True, check=True).stdout.strip()
    ran = subprocess.run(
        [shell_path, "-c", script, "phoenix-test"],
        env={"PATH": str(bin_dir), "PHOENIX_TEST_RECORD": str(record), "HOME": str(work)},
        cwd=work,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr.decode(errors="replace")
    return [json.loads(line) for line in record.read_text(encoding="utf-8").splitlines()]


def shell_variables(env_file: str, names: Sequence[str], work: Path) -> dict[str, str | None]:
    """Source ``env_file`` with ``sh`` (``set -a``: every assignment exported) and read the variables back."""
    path = work / "vars.env"
    path.write_text(env_file, encoding="utf-8")
    show = "import json, os, sys; print(json.dumps({n: os.environ.get(n) for n in sys.argv[1:]}))"
    shown = subprocess.run(
        [
            "sh",
            "-c",
            'set -a; . "$1"; shift; exec "$@"',
            "phoenix-test",
            str(path),
            sys.executable,
            "-c",
            show,
        ]
        + list(names),
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    values: dict[str, str | None] = json.loads(shown)
    return values
