"""`phoenix plan` feeds each provider's step function the inputs the program gives that resource.

Under Pulumi mocks (no host), the program for ``dev`` registers every resource with its inputs; the plan
builds the same inputs from the same render functions (``phoenix_components/cli/plan.py``). Where the plan
cannot know a value before deploy time (a layer's vmid, a clone's mountpoint, a managed driver's GPU
minors, the guest's instance) it uses a placeholder; every other input must be the program's, so a new
input the components pass fails here until the plan passes it too.
"""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

from phoenix_components.cli.plan import container_inputs, service_inputs
from phoenix_components.config.load import load_environment
from phoenix_components.render.lxc import clone_dataset
from tests.mocks.test_program import run_program
from tests.support.recording import install

ROOT = Path(__file__).resolve().parents[2]
KNOWN_AT_DEPLOY = {"template_vmid", "guest_instance"}  # a layer's vmid; the guest's instance token


def registered(stack: str) -> dict[str, dict[str, Any]]:
    monitor = install(stack, {"phoenix:environment": stack})
    run_program(lambda: runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__"))
    return {
        name: {k: v for k, v in r.inputs.items() if k not in ("__provider", "version")}
        for name, r in monitor.by_name().items()
    }


def test_the_plans_guest_and_service_inputs_are_the_programs() -> None:
    env = load_environment(ROOT / "config", "dev")
    program = registered("dev")
    assert env.guests.containers
    for ct in env.guests.containers:
        # The mocks report a clone's mountpoint as ZFS's default, /<dataset>; the plan's placeholder is
        # replaced by what the clone reports, as at deploy time.
        mountpoints = {
            key: f"/{clone_dataset(data.dataset, ct.vmid)}" for key, data in env.guests.datasets.items()
        }
        planned = container_inputs(env, ct, mountpoints)
        sent = program[f"ct-{ct.vmid}-container"]
        assert set(planned) == set(sent) - {"pve_config_dir", "task_timeout_s"}  # the provider's defaults
        for key, value in planned.items():
            if key in KNOWN_AT_DEPLOY:
                continue
            if key == "params":
                # devN: a managed driver's minors are read at deploy time (the plan names them)
                assert set(value) == set(sent[key]), f"CT {ct.vmid}: params keys"
                assert {k: v for k, v in value.items() if not k.startswith("dev")} == {
                    k: v for k, v in sent[key].items() if not k.startswith("dev")
                }
            else:
                assert value == sent[key], f"CT {ct.vmid}: {key}"
        if ct.vllm is not None:
            service = program[f"ct-{ct.vmid}-vllm"]
            assert service_inputs(env, ct) == {k: v for k, v in service.items() if k not in KNOWN_AT_DEPLOY}
