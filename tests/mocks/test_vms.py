"""VMs under mocks: a linked clone of a cloud-image template, cloud-init running the same feature scripts."""

from __future__ import annotations

import runpy
import shlex

import yaml

from phoenix_components.config.load import load_environment
from phoenix_components.render.vm import VM_RUNNER, cloud_image_template_vmid, vm_user_data
from tests.mocks.test_program import ROOT, run_program
from tests.support.recording import install

ENV = load_environment(ROOT / "config", "dev")


def test_user_data_writes_and_runs_each_feature_script_in_order() -> None:
    vm = ENV.guests.vms[0]
    data = yaml.safe_load(vm_user_data(ENV, vm))
    written = {f["path"]: f["content"] for f in data["write_files"]}
    for feature in vm.features:
        assert written[f"/var/lib/phoenix/features/{feature}.sh"] == ENV.feature_scripts[feature]
    # One runner, run once by cloud-init: `set -e` stops at the first failing feature (runcmd would not).
    assert data["runcmd"] == [["bash", VM_RUNNER]]
    runner = written[VM_RUNNER]
    assert runner.splitlines()[:3] == ["#!/usr/bin/env bash", runner.splitlines()[1], "set -euo pipefail"]
    commands = [shlex.split(line) for line in runner.splitlines()[3:]]
    assert [c[-1] for c in commands] == [f"/var/lib/phoenix/features/{f}.sh" for f in vm.features]
    docker = commands[vm.features.index("docker")]
    assert docker[0] == "env" and docker[-2] == "bash"
    assert "PHOENIX_TARGET=vm" in docker and "PHOENIX_DOCKER_VERSION=5:28.2.2-1~debian.12~bookworm" in docker


def test_vm_is_a_linked_clone_of_the_image_template_with_its_snippet_and_firewall() -> None:
    monitor = install("dev", {"phoenix:environment": "dev"})
    run_program(lambda: runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__"))
    regs = monitor.by_name()
    for vm in ENV.guests.vms:
        machine = regs[f"vm-{vm.vmid}-vm"]
        template = regs[f"cloud-image-{vm.image}-template"]
        download = regs[f"cloud-image-{vm.image}-download"]
        assert template.inputs["template"] is True
        assert template.inputs["vmId"] == cloud_image_template_vmid(ENV, vm.image)
        assert (
            download.inputs["contentType"] == "import"
            and download.inputs["url"] == ENV.host.cloud_images[vm.image].url
        )
        assert machine.inputs["clone"] == {"vmId": template.inputs["vmId"], "full": False}
        assert (
            machine.inputs["cpu"]["cores"] == vm.cores
            and machine.inputs["memory"]["dedicated"] == vm.memory_mib
        )
        (nic,) = machine.inputs["networkDevices"]
        assert (nic["bridge"], nic["macAddress"], nic["firewall"]) == (
            vm.network.bridge,
            vm.network.mac,
            True,
        )
        ip = machine.inputs["initialization"]["ipConfigs"][0]["ipv4"]
        assert ip == {"address": vm.network.ip, "gateway": vm.network.gateway}
        snippet = regs[f"vm-{vm.vmid}-cloud-init"]
        assert snippet.type == "pulumi-python:dynamic/phoenix:HostFile", "written over the pinned SSH"
        file_name = f"phoenix-{vm.vmid}-user-data.yaml"
        assert snippet.inputs["path"] == f"{ENV.host.storage.snippets_path}/{file_name}"
        assert snippet.inputs["content"] == vm_user_data(ENV, vm)
        assert (
            machine.inputs["initialization"]["userDataFileId"]
            == f"{ENV.host.storage.snippets}:snippets/{file_name}"
        )
        assert snippet.urn in machine.dependencies
        firewall = regs[f"vm-{vm.vmid}-firewall"]
        assert firewall.type == "pulumi-python:dynamic/phoenix:GuestFirewall"
        assert (firewall.inputs["kind"], firewall.inputs["vmid"]) == ("qemu", vm.vmid)
        assert machine.urn in firewall.dependencies
        assert machine.dependencies and template.urn in machine.dependencies
