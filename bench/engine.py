"""Phoenix under the real Pulumi CLI (the Go-built one of tools/pulumi/build.sh, driven as
tests/support/engine drives it): ``pulumi preview`` at scale, and the lab stack's no-op ``pulumi up``.

1. ``pulumi preview`` from an empty state of Phoenix's program for N guests (50 and 500; ``--quick``: 20, 50),
   against a bare program registering as many dynamic resources, and against an empty program (the CLI's
   fixed start-up: CLI, file backend, language host, Python and the SDK's import). Phoenix's program is
   the repo's ``__main__.py`` in a project directory of its own, reading a generated environment
   ``bench-<N>`` (bench/eval_scale's guests, made valid: see :func:`write_environment`). Preview calls
   the dynamic providers' ``check`` only, which never reaches a host, so the generated host.json points
   at the dev example's unreachable ``pve-dev.lan``. Prints wall times, Phoenix / bare, the resource
   counts, and the start-up's share of each.
2. :func:`lab_noop_up`: the lab stack's second ``pulumi up`` (nothing to change): wall time and provider
   RPCs per resource. It needs the lab (root, zfs-fuse, sshd, fakepve, LXC) and runs only when asked
   (``python -m bench engine --lab`` or ``PHOENIX_BENCH_LAB=1``).

Figures only, nothing is asserted. The timed runs leave ``PULUMI_DEBUG_GRPC`` off (it logs every RPC).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pulumi.automation.events import EngineEvent

from bench.eval_scale import scaled
from phoenix_components.config.load import load_environment
from tests.support.engine import Engine, cli_dir

ROOT = Path(__file__).resolve().parents[1]
DYNAMIC = "pulumi-python:dynamic/"
# The stack's secret config, as a real stack has it (the lab's values are real; these reach no host).
SECRETS = {"phoenix:pvePassword": "bench-placeholder", "phoenix:sshPrivateKey": "bench-placeholder"}
EMPTY_PROGRAM = '"""bench/engine: an empty program, the CLI\'s fixed start-up."""\n'
# The floor: N dynamic resources, two small inputs each, whose provider's check echoes the inputs. It
# registers them through providers.base.DynamicResource, the SDK's own constructor less its two
# scaling bugs (a dill pickle per resource; a recursion-limit crash past ~980 resources), so the floor
# is what the SDK and engine cost, not those bugs.
BARE_PROGRAM = '''"""bench/engine's bare floor: `bench:count` dynamic resources with a trivial provider."""

import pulumi
from pulumi.dynamic import CheckResult, ResourceProvider

from providers.base import DynamicResource


class Echo(ResourceProvider):
    serialize_as_secret_always = False  # as Phoenix's providers (no secret in the pickle)

    def __init__(self):
        # A field, as Phoenix's providers have: DynamicResource keys its pickle cache on the provider's
        # state, and an object without fields has none (object.__getstate__ returns None).
        self.kind = "echo"

    def check(self, _olds, news):
        return CheckResult(news, [])


class Plain(DynamicResource, module="bench", name="Plain"):
    def __init__(self, name, props):
        self._register(Echo(), name, props)


for i in range(pulumi.Config("bench").require_int("count")):
    Plain(f"r{i}", {"n": i, "name": f"r{i}"})
'''


def write_project(directory: Path, name: str, program: str | None = None) -> Path:
    """A project directory: the repo's Pulumi.yaml (named ``name``, its virtualenv made absolute, as
    tests/lab/e2e does) and ``program`` as ``__main__.py`` (default: a copy of the repo's)."""
    directory.mkdir(parents=True, exist_ok=True)
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    project["name"] = name
    project["runtime"]["options"]["virtualenv"] = str(Path(sys.executable).parent.parent)
    (directory / "Pulumi.yaml").write_text(yaml.safe_dump(project, sort_keys=False))
    if program is None:
        shutil.copy(ROOT / "__main__.py", directory / "__main__.py")
    else:
        (directory / "__main__.py").write_text(program)
    return directory


def write_environment(config: Path, guests: int) -> str:
    """Environment ``bench-<guests>`` under ``config``: the dev example scaled by eval_scale.scaled, and
    made to pass validation (eval_scale skips it; ``__main__.py`` does not): the host's guest vmid range
    and bridge cover the generated vmids and 10.128.0.0/16 addresses, all guests share GPU 0 at 1/N of
    its memory each, and the OS template has no download URL (nothing for pulumi-proxmoxve, whose plugin
    an offline CLI does not have; the lab's host.json does the same)."""
    name = f"bench-{guests}"
    env = scaled(load_environment(ROOT / "config", "dev"), guests)
    host = env.host.model_dump(mode="json", by_alias=True, exclude_none=True)
    first = min(ct.vmid for ct in env.guests.containers)
    host["vmid_ranges"]["guests"] = {"start": first, "end": first + guests - 1}
    host["bridges"] = [
        {"name": "vmbr0", "cidr": "10.128.0.0/16", "gateway": "10.128.0.1", "vlan_aware": True}
    ]
    for template in host["os_templates"].values():
        template.pop("url", None)
    document = env.guests.model_dump(mode="json", by_alias=True, exclude_none=True)
    share = math.floor(10_000 / guests) / 10_000  # rounded down: the sum per GPU must stay <= 1.0
    for container in document["containers"]:
        if container.get("vllm"):
            container["vllm"]["cache"]["gpu_memory_utilization"] = share
    env_dir = config / "environments" / name
    env_dir.mkdir(parents=True, exist_ok=True)
    (env_dir / "host.json").write_text(json.dumps(host, indent=1))
    (env_dir / "guests.json").write_text(json.dumps(document, indent=1))
    load_environment(config, name)  # a config error here, not as a failed preview minutes later
    return name


def preview(engine: Engine) -> tuple[float, Counter[str]]:
    """Wall time of one ``pulumi preview`` and the resources it would create, by type.

    ``stack.preview`` rather than ``Engine.preview``, which turns the gRPC log on (see module docstring).
    """
    kinds: Counter[str] = Counter()

    def on_event(event: EngineEvent) -> None:
        pre = event.resource_pre_event
        if pre is not None:
            kinds[pre.metadata.type] += 1

    started = time.perf_counter()
    engine.stack.preview(color="never", on_event=on_event)
    return time.perf_counter() - started, kinds


def best(engine: Engine, rounds: int) -> tuple[float, Counter[str]]:
    runs = [preview(engine) for _ in range(rounds)]
    return min(t for t, _ in runs), runs[-1][1]


def main(quick: bool = False) -> None:
    bin_dir = cli_dir()
    print("== engine: `pulumi preview` from an empty state through the real CLI, Phoenix vs a bare program")
    if bin_dir is None:
        print("  skipped: no Pulumi CLI (make pulumi: tools/pulumi/build.sh)")
        return
    sizes = (20, 50) if quick else (50, 500)  # two sizes even when quick: the growth is not linear
    with tempfile.TemporaryDirectory(prefix="phoenix-bench-engine-") as tmp:
        root = Path(tmp)
        phoenix_dir = write_project(root / "phoenix", "phoenix")
        shutil.copytree(ROOT / "config", phoenix_dir / "config")
        shutil.copytree(ROOT / "apparmor", phoenix_dir / "apparmor")  # config's ../apparmor
        bare_dir = write_project(root / "bare", "bench-bare", BARE_PROGRAM)
        empty_dir = write_project(root / "empty", "bench-empty", EMPTY_PROGRAM)

        def engine(work_dir: Path, stack: str, config: dict[str, str], secrets: dict[str, str]) -> Engine:
            return Engine(
                root / "engines" / f"{work_dir.name}-{stack}",
                stack,
                work_dir=work_dir,
                config=config,
                secrets=secrets,
                bin_dir=bin_dir,
            )

        # Start-up first: its first run also warms the OS's caches (CLI binary, SDK's .pyc) for the rest.
        empty = engine(empty_dir, "bench", {}, {})
        preview(empty)
        startup, _ = best(empty, 3)
        print(f"  CLI fixed start-up (preview of an empty program, best of 3): {startup:6.2f}s")
        for guests in sizes:
            rounds = 1 if quick or guests > 100 else 2  # a 500-guest preview takes minutes on 2 cores
            environment = write_environment(phoenix_dir / "config", guests)
            config = {"phoenix:environment": environment}
            phoenix, kinds = best(engine(phoenix_dir, environment, config, SECRETS), rounds)
            dynamic = sum(n for kind, n in kinds.items() if kind.startswith(DYNAMIC))
            # Phoenix's own component types (the rest are the stack and the dynamic provider).
            components = sum(n for kind, n in kinds.items() if not kind.startswith("pulumi"))
            bare, bare_kinds = best(
                engine(bare_dir, f"n{dynamic}", {"bench:count": str(dynamic)}, {}), rounds
            )

            def per_resource(total: float, count: int) -> float:
                return (total - startup) / max(count, 1) * 1000

            print(
                f"  {guests:4d} guests: {sum(kinds.values()):5d} resources ({dynamic} dynamic, "
                f"{components} components)  phoenix {phoenix:7.2f}s  bare ({sum(bare_kinds.values())} "
                f"resources) {bare:7.2f}s  phoenix/bare = {phoenix / bare:.2f}x  (best of {rounds})"
            )
            print(
                f"        start-up is {startup / phoenix:.0%} of phoenix, {startup / bare:.0%} of bare; "
                f"beyond it: phoenix {per_resource(phoenix, dynamic):.1f} ms, bare "
                f"{per_resource(bare, dynamic):.1f} ms per dynamic resource"
            )
    if os.environ.get("PHOENIX_BENCH_LAB") == "1":
        lab_noop_up(rounds=1 if quick else 3)
    else:
        print("  lab no-op up: not run (python -m bench engine --lab, or PHOENIX_BENCH_LAB=1)")


# ---------------------------------------------------------------------------------------------- the lab


@contextlib.contextmanager
def lab_stack(root: Path) -> Iterator[Engine]:
    """The lab and its deployed-to-be ``lab`` stack, composed from the pieces the pytest fixtures use
    (tests/lab/e2e.py ``lab_stack`` and the session fixtures it asks for, in their order); everything
    is stopped and removed on the way out, the stack destroyed first."""
    from bench.zfs_clone import lab_pool
    from tests.lab.e2e import PROFILE, LabGuest, lab_stack_engine, write_lab_config
    from tests.lab.host import running_lab_host
    from tests.lab.lxc import seed_rootfs
    from tests.lab.pve import serve_fake_pve
    from tests.lab.rootfs import build_rootfs
    from tests.lab.sshd_server import serve_sshd

    profile = Path("/etc/apparmor.d") / PROFILE  # the up installs it; the fixture removes it afterwards
    profile_existed = profile.exists()
    with contextlib.ExitStack() as stack:
        pve = stack.enter_context(serve_fake_pve())
        if not profile_existed:
            stack.callback(profile.unlink, missing_ok=True)
        pool = stack.enter_context(lab_pool())  # waits on the lab's session lock: never shares the pool
        sshd = stack.enter_context(serve_sshd())
        rootfs = build_rootfs()
        host = stack.enter_context(running_lab_host(pve, pool, sshd, rootfs, seed_rootfs(pool, rootfs)))
        # The e2e module's two guests, one per stand-in GPU.
        guests = [
            LabGuest(801, gpu=0, served="tiny-a", snapshot_before_update=True),
            LabGuest(802, gpu=1, served="tiny-b"),
        ]
        write_lab_config(root, host, guests)
        yield stack.enter_context(lab_stack_engine(root, host))


def lab_noop_up(rounds: int = 3) -> None:
    """The lab stack's no-op ``pulumi up``: wall time and provider RPCs per resource.

    Off by default (it needs the lab): ``.venv/bin/python -m bench engine --lab`` (or
    ``PHOENIX_BENCH_LAB=1``), as root, on a machine that can run the lab. The first up builds the lab's
    chain and two guests; then ``rounds`` timed no-op ups with the gRPC log off, and one more with it on
    for the RPC counts (tests/support/engine's ``Report.provider_calls``). It takes the lab's pool lock,
    so it waits while a test session holds it.
    """
    from tests.lab.requirements import lab_missing

    print("== engine: the lab stack's no-op `pulumi up` (real CLI, fakepve, sshd, zfs-fuse, LXC)")
    missing = lab_missing(
        "zfs-fuse", "zfs", "lxc-start", "rsync", "sshd", "ssh-keygen", "debootstrap", "apparmor_parser"
    )
    if missing is not None:
        print(f"  skipped: {missing}")
        return
    with tempfile.TemporaryDirectory(prefix="phoenix-bench-lab-") as tmp, lab_stack(Path(tmp)) as engine:
        started = time.perf_counter()
        first = engine.up()
        built = time.perf_counter() - started
        print(f"  first up (builds the chain and the guests): {built:6.1f}s, summary {first.summary}")
        # The timed ups go through the stack directly: no gRPC log (only Engine's own runs turn it on).
        walls: list[float] = []
        for _ in range(rounds):
            started = time.perf_counter()
            engine.stack.up(color="never", suppress_progress=True)
            walls.append(time.perf_counter() - started)
        counted = engine.up()  # gRPC log on: counts the RPCs
        custom = len(engine.resources())  # dynamic resources in the state (no components, no providers)
        every = sum(counted.summary.values())  # everything the engine stepped over, the stack included
        calls = counted.provider_calls
        print(
            f"  no-op up: best {min(walls):6.2f}s of {rounds} (all: {', '.join(f'{w:.2f}' for w in walls)}); "
            f"engine summary {counted.summary}, {counted.changes} changes, "
            f"{counted.provider_mutations} provider mutations"
        )
        print(
            f"  {every} resources ({custom} custom): {sum(calls.values())} provider RPCs = "
            f"{sum(calls.values()) / max(custom, 1):.2f} per custom resource; "
            f"by method per custom resource: {_per(calls, custom)}"
        )


def _per(calls: Counter[str], resources: int) -> dict[str, Any]:
    return {method: round(n / max(resources, 1), 2) for method, n in sorted(calls.items())}


if __name__ == "__main__":  # python -m bench.engine [--quick] [--lab]
    if "--lab" in sys.argv:
        os.environ["PHOENIX_BENCH_LAB"] = "1"
    main(quick="--quick" in sys.argv)
