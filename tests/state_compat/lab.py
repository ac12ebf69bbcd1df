"""The lab stack the state-compatibility fixture was written from, and the lab it runs against.

``python -m tests.state_compat.lab write`` runs the real Phoenix program against a fresh lab (one vLLM guest
with a per-guest feature, its dataset clone, firewall and snapshot policy: every provider the on-prem stack
uses), exports the stack's state to ``tests/fixtures/state_compat/<name>.json``, then destroys it. The file
records what this lab run was (ports, host key pin, CA path, pool) so the test can point the stored
providers at the lab of its own run (:mod:`tests.state_compat.transplant`).

It was run once, at the commit before the folder move of issue 13, and the file committed; it is not run by
the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tests.lab.common import REPO_ROOT
from tests.lab.e2e import LabGuest, lab_stack_engine, write_lab_config
from tests.lab.host import LabHost, running_lab_host
from tests.lab.lxc import seed_rootfs
from tests.lab.pve import serve_fake_pve
from tests.lab.rootfs import build_rootfs
from tests.lab.sshd_server import serve_sshd
from tests.lab.zfs import fresh_pool, session_lock
from tests.state_compat.transplant import LabValues

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "state_compat"
FEATURE = "compat-motd"
FEATURE_SCRIPT = """#!/bin/sh
# TEST-ONLY per-guest feature of the state-compatibility fixture: writes its parameter into the guest.
set -eu
mkdir -p /etc/phoenix
printf '%s\\n' "$COMPAT_GREETING" > /etc/phoenix/compat-motd
"""
# A fixed port: the vLLM stand-in's port is an input of the guest (its server and firewall rule), and the
# fixture's inputs are compared with the program's as they are.
GUEST_PORT = 48801


def compat_guest(greeting: str = "hello") -> LabGuest:
    return LabGuest(
        801,
        gpu=0,
        served="compat",
        port=GUEST_PORT,
        snapshot_before_update=True,
        features=(FEATURE,),
        feature_env=(("COMPAT_GREETING", greeting),),
        feature_files=(("/etc/phoenix/compat.conf", "mode=compat\n"),),
    )


# The chain's layers when the fixture was written. Layers added to the product chain since (the ollama and
# llama.cpp servers of issue 14) are left out: the fixture's state has none of them, and a preview of it
# against a chain with more layers would plan their creation, which says nothing about the old state.
FIXTURE_LAYERS = ("base", "gpu", "docker", "vllm")


def fixture_scripts(fixture: Path = FIXTURES / "pre-move.json") -> dict[str, str]:
    """Feature name -> the script the fixture's layers ran (their stored inputs hold each one's text).

    The lab's stand-ins change with the features they stand in for (the model servers' shared systemctl,
    the compose stand-in of issue 14); a layer's key is a hash of its scripts, so today's would make every
    layer look like another one. The compatibility test is about the code reading old state, so its
    config runs the scripts the fixture was written with."""
    deployment = json.loads(fixture.read_text())["deployment"]
    return {
        feature["name"]: feature["script"]
        for resource in deployment["resources"]
        if resource["type"] == "pulumi-python:dynamic/phoenix:TemplateLayer"
        for feature in (resource.get("inputs") or {}).get("features") or []
    }


def write_compat_config(root: Path, host: LabHost, guests: Sequence[LabGuest]) -> Path:
    config = write_lab_config(root, host, guests)
    for name, script in fixture_scripts().items():
        (config / "features" / f"{name}.sh").write_text(script)
    (config / "features" / f"{FEATURE}.sh").write_text(FEATURE_SCRIPT)
    chain = json.loads((config / "chain.json").read_text())
    chain["layers"] = {name: layer for name, layer in chain["layers"].items() if name in FIXTURE_LAYERS}
    (config / "chain.json").write_text(json.dumps(chain, indent=2))
    return config


def lab_values(host: LabHost, root: Path) -> LabValues:
    """What this lab run's stored providers and props name (the values :mod:`transplant` rewrites)."""
    return LabValues(
        host.sshd.port,
        host.sshd.host_key_fingerprint,
        host.pve.url,
        host.pve.cafile,
        str(root),
        str(REPO_ROOT),
    )


@contextlib.contextmanager
def lab_host() -> Iterator[LabHost]:
    """A whole lab outside pytest (as the demo box composes it), under the lab's session lock."""
    rootfs = build_rootfs()
    with contextlib.ExitStack() as stack:
        stack.enter_context(session_lock())
        zpool = stack.enter_context(fresh_pool())
        pve = stack.enter_context(serve_fake_pve())
        sshd = stack.enter_context(serve_sshd("state-compat"))
        seed = seed_rootfs(zpool, rootfs)
        yield stack.enter_context(running_lab_host(pve, zpool, sshd, rootfs, seed))


def scrub_secrets(deployment: dict[str, Any]) -> dict[str, Any]:
    """The deployment with every secret's plaintext replaced (the automation API's export shows them):
    the lab's throwaway password and SSH key stay out of the repository. The test takes its own run's."""

    def scrub(value: Any) -> Any:
        if isinstance(value, dict):
            if "plaintext" in value:
                return {**value, "plaintext": json.dumps("lab secret removed: the test takes this run's")}
            return {k: scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        return value

    scrubbed: dict[str, Any] = scrub(deployment)
    return scrubbed


def write_fixture(name: str, root: Path) -> Path:
    with lab_host() as host:
        write_compat_config(root, host, [compat_guest()])
        with lab_stack_engine(root, host) as engine:
            report = engine.up()
            print(f"up: {report.summary}", flush=True)
            document: dict[str, Any] = {
                "lab": dataclasses.asdict(lab_values(host, root)),
                "deployment": scrub_secrets(engine.export()),
            }
    path = FIXTURES / f"{name}.json"
    path.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.state_compat.lab")
    sub = parser.add_subparsers(dest="command", required=True)
    write = sub.add_parser("write", help="write a fixture state from the code as it is now")
    write.add_argument("name")
    write.add_argument("--root", type=Path, required=True, help="an empty project directory")
    args = parser.parse_args(argv)
    print(write_fixture(args.name, args.root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
