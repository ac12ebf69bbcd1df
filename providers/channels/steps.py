"""Steps as data: the PVE API calls and host commands a provider's ``create``/``update`` make.

Every provider folder computes its steps purely from its inputs as these values and executes exactly
them; ``phoenix plan`` renders the same values (:func:`plan_lines`), so the plan is the provider's own and
cannot drift from it. They live in the channel layer because every provider folder may import it (a
resource folder may not import another's ``common``). Step kinds that only guests have (raw lines, the
linked-clone check) and the runner that executes guest steps are in ``providers/guests/common.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from providers.channels.command import display

Wait = Literal["none", "task", "upid"]


@dataclass(frozen=True)
class ApiCall:
    """One PVE API request a step makes: what ``phoenix plan`` prints and what the provider sends.

    ``wait``: ``task`` — the call starts a task that must succeed (``PveClient.run_task``: lock
    retries, bounded concurrency); ``upid`` — PVE answers some calls at once and others with a task
    (resize, template), so a UPID answer is waited for; ``none`` — the answer is the data.
    """

    method: Literal["GET", "POST", "PUT", "DELETE"]
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    step: str = ""  # names the call in errors (a task's step) and in the answers
    wait: Wait = "none"

    @property
    def label(self) -> str:
        return self.step or f"{self.method} {self.path}"

    def render(self) -> str:
        args = " ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.method} /{self.path}" + (f" {args}" if args else "")

    def plan_lines(self, compact: bool = False) -> list[tuple[str, str]]:
        return [("api", self.render())]


@dataclass(frozen=True)
class HostCommand:
    """One command over SSH: ``argv`` with ``stdin``; ``what`` names it in errors, plans and answers.

    ``until`` marks a probe the provider repeats until it answers (a health check): the plan shows it
    once, with that condition; how many times it runs depends on the host. ``when`` says on what the
    provider runs it at all (what it read before), for the plan.
    """

    what: str
    argv: list[str]
    stdin: str = ""
    stdin_label: str = ""  # what the plan shows instead of the whole stdin
    log: str = ""  # where the command's output is kept inside the guest (features only)
    timeout_s: float | None = None
    until: str = ""
    when: str = ""

    @property
    def label(self) -> str:
        return self.what

    def plan_lines(self, compact: bool = False) -> list[tuple[str, str]]:
        shown = self.stdin_label or ("<stdin>" if self.stdin else "")
        line = (shown_argv(self.argv) if compact else display(self.argv)) + (f"  < {shown}" if shown else "")
        line += f"  (repeated until {self.until})" if self.until else ""
        return [("ssh", line + (f"  (only when {self.when})" if self.when else ""))]


def shown_argv(argv: Sequence[str]) -> str:
    """:func:`display` of ``argv`` for a plan: a script Phoenix sends as ``sh -c SCRIPT phoenix-NAME ...``
    (``sh_argv``, its values as ``$1``...) is named ``<phoenix-NAME script>`` instead of printed whole,
    so a plan line stays one line; any other value with line breaks in it (code a script runs) is shown
    as ``<N lines>``; the rest as they are."""
    words = [
        display([arg]) if "\n" not in arg else f"<{arg.strip().count(chr(10)) + 1} lines>" for arg in argv
    ]
    for i in range(1, len(argv) - 1):
        if argv[i - 1] == "-c" and argv[i + 1].startswith("phoenix-"):
            words[i] = f"<{argv[i + 1]} script>"
    return " ".join(words)


class PlannedStep(Protocol):
    """Anything ``phoenix plan`` can render: a step that says which requests and commands it makes."""

    def plan_lines(self, compact: bool = False) -> list[tuple[str, str]]: ...


def plan_lines(steps: Iterable[PlannedStep], *, compact: bool = False) -> list[tuple[str, str]]:
    """``(channel, line)`` for each request and command ``steps`` make. Exact by default (each command as
    the host runs it); ``compact`` names long scripts instead (:func:`shown_argv`): what ``phoenix plan``
    prints."""
    return [line for step in steps for line in step.plan_lines(compact)]
