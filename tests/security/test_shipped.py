"""What Phoenix ships: the environment configs, the SSH policy, the AppArmor profiles.

- Every ``config/environments/*`` loads, and no container in it is privileged or unconfined (the models
  allow either only with a named ``insecure`` reason; the shipped config uses neither).
- No JSON file under ``config/`` holds a secret: no password/token/secret/private-key field with a value,
  and no value that looks like a private key or a PVE API token secret.
- A changed host key is refused: the SSH module never accepts a key it was not given (no AutoAddPolicy, no
  known_hosts). The behaviour is tested end to end in tests/faults/test_ssh_faults.py
  (``test_a_changed_host_key_is_refused_before_any_command_and_state_is_unchanged``, lab) and per key type
  in tests/unit/test_ssh_unit.py.
- Every shipped AppArmor profile compiles: tests/lab/test_apparmor_profiles_compile.py (lab: the real
  apparmor_parser against Debian's lxc abstractions); here only that it covers every file in apparmor/.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from phoenix_components.config.load import load_environment
from phoenix_components.config.models import UNCONFINED

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
ENVIRONMENTS = sorted(p.name for p in (CONFIG / "environments").iterdir() if (p / "guests.json").exists())
SECRET_KEY = re.compile(r"pass(word)?|secret|token(?!_id)|private_?key|api_?key|credential", re.I)
SECRET_VALUE = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----"
    r"|\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"  # a PVE API token secret
    r"|PVE(?:AuthCookie)?:[A-Za-z0-9@!]+:[0-9A-F]{8}::"  # a PVE ticket
    r"|AKIA[0-9A-Z]{16}"  # an AWS access key id
)


def walk(value: Any, path: str = "$") -> Iterator[tuple[str, str, Any]]:
    """(json path, key, value) for every key at any depth."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield f"{path}.{key}", key, item
            yield from walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for n, item in enumerate(value):
            yield from walk(item, f"{path}[{n}]")


def test_every_environment_with_guests_is_checked() -> None:
    assert {"dev", "staging", "prod", "lab"} <= set(ENVIRONMENTS)


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_no_shipped_guest_is_privileged_or_unconfined(environment: str) -> None:
    env = load_environment(CONFIG, environment)
    assert env.guests.containers, f"{environment}: no containers to check"
    for ct in env.guests.containers:
        assert ct.unprivileged, f"{environment}: CT {ct.vmid} is privileged"
        assert ct.apparmor_profile != UNCONFINED, f"{environment}: CT {ct.vmid} is unconfined"
        assert ct.insecure.unconfined_apparmor is None, ct.vmid


@pytest.mark.parametrize("path", sorted(CONFIG.rglob("*.json")), ids=lambda p: str(p.relative_to(CONFIG)))
def test_no_secret_looking_value_in_shipped_json(path: Path) -> None:
    for where, key, value in walk(json.loads(path.read_text())):
        if SECRET_KEY.search(key) and not isinstance(value, dict | list | bool):
            assert value in (None, ""), f"{path.name}: {where} holds a value; secrets come from secret config"
        if isinstance(value, str):
            assert not SECRET_VALUE.search(value), f"{path.name}: {where} looks like a secret"


def test_the_secret_patterns_would_catch_a_leak() -> None:
    leaked = {"api": {"password": "hunter2"}, "note": "-----BEGIN OPENSSH PRIVATE KEY-----"}
    found = [w for w, k, v in walk(leaked) if SECRET_KEY.search(k) or SECRET_VALUE.search(str(v))]
    assert found == ["$.api.password", "$.note"]


def test_ssh_never_trusts_a_key_it_was_not_given() -> None:
    source = (ROOT / "providers" / "channels" / "ssh.py").read_text()
    for forbidden in ("AutoAddPolicy", "WarningPolicy", "load_system_host_keys", "load_host_keys"):
        assert forbidden not in source, forbidden
    assert "set_missing_host_key_policy(PinnedHostKeyPolicy" in source.replace("\n", "").replace(" ", "")


def test_the_apparmor_compile_test_covers_every_shipped_profile() -> None:
    compile_test = (ROOT / "tests" / "lab" / "test_apparmor_profiles_compile.py").read_text()
    assert "def test_shipped_profile_compiles" in compile_test
    profiles = sorted(p.name for p in (ROOT / "apparmor").iterdir() if p.is_file())
    assert profiles, "no shipped profiles"
    assert 'glob("*")' in compile_test or "iterdir()" in compile_test  # parametrized over the whole folder
