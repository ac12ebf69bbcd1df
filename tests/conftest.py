"""Shared fixtures. Lab fixtures live in tests/lab/*, the real engine's in tests/support/engine.py; all
are registered here as plugins."""

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
