"""Shared fixtures. Lab fixtures live in tests/lab/* and are registered here as plugins."""

pytest_plugins = [
    "tests.lab.sshd",
    "tests.lab.zfs",
    "tests.lab.rootfs",
    "tests.lab.lxc",
    "tests.lab.apparmor",
    "tests.lab.pve",
    "tests.lab.host",
    "tests.lab.e2e",
]
