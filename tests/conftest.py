"""Shared fixtures. Lab fixtures live in tests/lab/*, the real engine's in tests/support/engine.py; all
are registered here as plugins."""

import pytest

pytest_plugins = [
    "tests.lab.sshd",
    "tests.lab.zfs",
    "tests.lab.rootfs",
    "tests.lab.lxc",
    "tests.lab.apparmor",
    "tests.lab.pve",
    "tests.lab.host",
    "tests.support.engine",
    "tests.lab.e2e",
]


# --- the figures tests print, as one short section at the end of the run -----------------------------
# Tests print the counts and ratios they measure (the engine's change count of a second up, mutating
# calls, sessions, timings). pytest's -rP would show them only among every passing test's captured logs
# (thousands of lines of server chatter); this keeps just what each test printed to stdout.

_FIGURES: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.passed and report.capstdout.strip():
        _FIGURES.append((report.nodeid, report.capstdout.strip()))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("figures the tests printed")
    for nodeid, text in _FIGURES:
        terminalreporter.write_line(nodeid)
        for line in text.splitlines():
            terminalreporter.write_line(f"    {line}")
