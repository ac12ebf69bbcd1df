"""NVIDIA host driver: parsers on real output formats (1, 2 and 4 GPUs), commands, diff, CRUD.

The rule that a container's userspace is the host driver's version is a config check
(tests/config_corpus/32-nvidia-container-host-mismatch.json).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import dill
import pytest
from pulumi.output import Unknown

from providers.channels.command import render
from providers.channels.targets import SshTarget
from providers.nvidia_driver import (
    EXIT_CHECKSUM,
    EXIT_MODULES_BUSY,
    EXIT_NO_UNINSTALLER,
    INSTALL_ARGS,
    INSTALL_SCRIPT,
    PROVIDER_VERSION,
    UNINSTALL_SCRIPT,
    ChecksumMismatchError,
    GpuQueryRow,
    NvidiaDriverError,
    NvidiaHostDriver,
    NvidiaHostDriverArgs,
    NvidiaHostDriverInputs,
    NvidiaHostDriverProvider,
    NvidiaHostPaths,
    NvidiaOutputError,
    gpu_inventory,
    install_argv,
    normalize_bus_id,
    nvidia_majors,
    parse_char_majors,
    parse_driver_version,
    parse_gpu_information,
    parse_gpu_query,
    parse_read,
    read_argv,
    uninstall_argv,
)
from tests.support.capture import capture
from tests.support.fakes import ANY, Answer, ScriptedExecutor

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "nvidia"
SHA = "a" * 64
UNKNOWN: Any = Unknown()  # type: ignore[no-untyped-call]  # a value not known yet (preview)
URL = "https://us.download.nvidia.com/XFree86/Linux-x86_64/580.76.05/NVIDIA-Linux-x86_64-580.76.05.run"


def fixture(host: str, name: str) -> str:
    return (FIXTURES / host / name).read_text()


def informations(host: str) -> list[str]:
    return [p.read_text() for p in sorted((FIXTURES / host / "gpus").glob("*/information"))]


def read_output(host: str) -> str:
    """What the batched read prints on that host (the lab runs the script itself against a fake)."""
    parts = [
        f"@@driver_version 0\n{fixture(host, 'driver-version.txt')}",
        f"@@gpus 0\n{fixture(host, 'query-gpu.csv')}",
        f"@@devices\n{fixture(host, 'devices')}",
        *(f"@@information\n{text}" for text in informations(host)),
    ]
    return "".join(parts)


# -- parsers -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "count", "name", "memory", "buses"),
    [
        ("1gpu", 1, "NVIDIA GeForce RTX 4090", 24564, ["0000:01:00.0"]),
        ("2gpu", 2, "NVIDIA GeForce RTX 5060 Ti", 16311, ["0000:01:00.0", "0000:08:00.0"]),
        (
            "4gpu",
            4,
            "NVIDIA H100 80GB HBM3",
            81559,
            ["0000:18:00.0", "0000:2a:00.0", "0000:3a:00.0", "0000:5d:00.0"],
        ),
    ],
)
def test_gpu_query_rows(host: str, count: int, name: str, memory: int, buses: list[str]) -> None:
    rows = parse_gpu_query(fixture(host, "query-gpu.csv"))
    assert [r.index for r in rows] == list(range(count))
    assert {r.name for r in rows} == {name} and {r.memory_mib for r in rows} == {memory}
    assert [r.pci_bus_id for r in rows] == buses  # nvidia-smi's 00000000:2A:00.0 in /proc's form
    assert all(r.uuid.startswith("GPU-") and len(r.uuid) == 40 for r in rows)


def test_a_gpu_name_with_a_comma_still_parses() -> None:
    (row,) = parse_gpu_query(
        "0, GPU-11111111-2222-3333-4444-555555555555, Quadro RTX 8000, Rev. B, 48601, 00000000:03:00.0"
    )
    assert (row.name, row.memory_mib, row.pci_bus_id) == ("Quadro RTX 8000, Rev. B", 48601, "0000:03:00.0")


@pytest.mark.parametrize(
    "line", ["0, GPU-x, name, [N/A], 00000000:01:00.0", "0, name, 1", "x, GPU-1, n, 1, 0:1:0.0"]
)
def test_gpu_query_garbage_is_an_error_quoting_the_line(line: str) -> None:
    with pytest.raises(NvidiaOutputError, match="nvidia-smi"):
        parse_gpu_query(line)


@pytest.mark.parametrize(
    ("host", "version"), [("1gpu", "570.172.08"), ("2gpu", "580.76.05"), ("4gpu", "535.183.01")]
)
def test_driver_version_one_line_per_gpu(host: str, version: str) -> None:
    assert parse_driver_version(fixture(host, "driver-version.txt")) == version


@pytest.mark.parametrize(
    "text", ["", "580.76.05\n575.64.05\n", (FIXTURES / "errors" / "no-driver.txt").read_text()]
)
def test_driver_version_not_one_version_is_an_error(text: str) -> None:
    with pytest.raises(NvidiaOutputError, match="one driver version"):
        parse_driver_version(text)


@pytest.mark.parametrize(
    ("host", "majors"),
    [
        ("1gpu", {"nvidia": 195, "nvidia-uvm": 234, "nvidia-caps": 235, "nvidia-caps-imex-channels": 236}),
        ("2gpu", {"nvidia": 195, "nvidia-uvm": 243, "nvidia-caps": 235, "nvidia-caps-imex-channels": 236}),
        (
            "4gpu",
            {
                "nvidia": 195,
                "nvidia-uvm": 510,
                "nvidia-caps": 508,
                "nvidia-caps-imex-channels": 505,
                "nvidia-nvswitch": 506,
                "nvidia-nvlink": 507,
            },
        ),
    ],
)
def test_nvidia_majors_are_parsed_not_assumed(host: str, majors: dict[str, int]) -> None:
    # 1gpu lists the frontend as "nvidia", 2gpu/4gpu as "nvidia-frontend": both are reported as "nvidia".
    assert nvidia_majors(fixture(host, "devices")) == majors


def test_proc_devices_block_section_is_ignored() -> None:
    majors = parse_char_majors(fixture("1gpu", "devices"))
    assert majors["cec"] == 253 and "device-mapper" not in majors and "zvol" not in majors
    assert majors["tty"] == 4  # several names under one major, each kept


def test_no_nvidia_module_means_no_majors() -> None:
    assert nvidia_majors("Character devices:\n  1 mem\n 10 misc\n\nBlock devices:\n  7 loop\n") == {}


@pytest.mark.parametrize("host", ["1gpu", "2gpu", "4gpu"])
def test_gpu_information_gives_bus_and_minor(host: str) -> None:
    found = [parse_gpu_information(text) for text in informations(host)]
    assert [minor for _, minor in found] == list(range(len(found)))
    assert [bus for bus, _ in found] == [
        r.pci_bus_id for r in parse_gpu_query(fixture(host, "query-gpu.csv"))
    ]


def test_bus_ids_normalise_across_nvidia_smi_and_proc() -> None:
    assert normalize_bus_id("00000000:2A:00.0") == normalize_bus_id("0000:2a:00.0") == "0000:2a:00.0"
    with pytest.raises(NvidiaOutputError):
        normalize_bus_id("2a:00")


def test_device_nodes_follow_the_kernel_minor_not_the_nvidia_smi_index() -> None:
    # Minors are assigned in probe order, nvidia-smi's index in PCI order: they can disagree.
    rows = [
        GpuQueryRow(0, "GPU-a", "H100", 81559, "0000:18:00.0"),
        GpuQueryRow(1, "GPU-b", "H100", 81559, "0000:28:00.0"),
    ]
    info = [
        "Bus Location: \t 0000:18:00.0\nDevice Minor: \t 1\n",
        "Bus Location: \t 0000:28:00.0\nDevice Minor: \t 0\n",
    ]
    assert [(g.index, g.device) for g in gpu_inventory(rows, info)] == [
        (0, "/dev/nvidia1"),
        (1, "/dev/nvidia0"),
    ]
    with pytest.raises(NvidiaOutputError, match="device minor"):
        gpu_inventory(rows, info[:1])


@pytest.mark.parametrize(("host", "count"), [("1gpu", 1), ("2gpu", 2), ("4gpu", 4)])
def test_the_batched_read_gives_version_inventory_and_majors(host: str, count: int) -> None:
    facts = parse_read(read_output(host))
    assert facts.driver_version == parse_driver_version(fixture(host, "driver-version.txt"))
    assert [g.device for g in facts.gpus] == [f"/dev/nvidia{i}" for i in range(count)]
    assert facts.majors["nvidia"] == 195 and "nvidia-uvm" in facts.majors
    assert facts.gpus[0].to_props()["device"] == "/dev/nvidia0"


def test_the_batched_read_absent_and_broken() -> None:
    absent = parse_read("@@absent\n")
    assert (absent.driver_version, absent.installed) == (None, False)
    message = (FIXTURES / "errors" / "version-mismatch.txt").read_text()
    broken = parse_read(f"@@driver_version 18\n{message}")
    assert broken.driver_version is None and broken.installed
    assert "Driver/library version mismatch" in broken.error and "exited 18" in broken.error
    with pytest.raises(NvidiaOutputError):
        parse_read("bash: line 1: sh: command not found\n")


# -- commands ----------------------------------------------------------------------------------------------


def test_install_is_one_command_with_the_pinned_values_as_arguments() -> None:
    inputs = NvidiaHostDriverInputs("pve1", "580.76.05", URL, SHA)
    argv = install_argv(inputs, NvidiaHostPaths())
    assert argv[:2] == ["sh", "-c"] and argv[3] == "phoenix-nvidia-install"
    assert argv[4:] == [
        URL,
        SHA,
        "/var/cache/phoenix/NVIDIA-Linux-x86_64-580.76.05.run",
        "/var/log/nvidia-installer.log",
        "--dkms",
        "--silent",
        "--no-questions",
        "--ui=none",
    ]
    script = argv[2]
    # the checksum is verified with sha256sum -c before the file is renamed into the cache or run
    assert (
        script.index("sha256sum -c") < script.index('mv -f "$tmp" "$runfile"') < script.index('sh "$runfile"')
    )
    assert URL not in script and SHA not in script  # values are arguments, quoted once by render()
    assert render(argv).endswith("--dkms --silent --no-questions --ui=none")


def test_the_scripts_exit_with_the_codes_the_provider_maps_to_typed_errors() -> None:
    assert f"exit {EXIT_CHECKSUM}" in INSTALL_SCRIPT and f"exit {EXIT_MODULES_BUSY}" in INSTALL_SCRIPT
    assert f"exit {EXIT_NO_UNINSTALLER}" in UNINSTALL_SCRIPT


def test_the_host_install_builds_the_module_with_dkms() -> None:
    assert "--dkms" in INSTALL_ARGS and "--no-kernel-module" not in INSTALL_ARGS


def test_read_and_uninstall_commands() -> None:
    paths = NvidiaHostPaths()
    assert read_argv(paths)[3:] == [
        "phoenix-nvidia-read",
        "nvidia-smi",
        "/proc/devices",
        "/proc/driver/nvidia/gpus",
    ]
    script = read_argv(paths)[2]
    assert "--query-gpu=driver_version --format=csv,noheader" in script
    assert "--query-gpu=index,uuid,name,memory.total,pci.bus_id --format=csv,noheader,nounits" in script
    argv = uninstall_argv("580.76.05", paths)
    assert argv[4:] == [
        "nvidia-smi",
        "nvidia-uninstall",
        "/var/cache/phoenix/NVIDIA-Linux-x86_64-580.76.05.run",
    ]
    assert "--uninstall --silent" in argv[2]


# -- diff and check ----------------------------------------------------------------------------------------

OLD: dict[str, Any] = {
    **NvidiaHostDriverInputs("pve1", "580.76.05", URL, SHA).to_props(),
    "gpus": [],
    "majors": {"nvidia": 195},
    "__provider": "old",
}


@pytest.mark.parametrize(
    ("change", "changes", "replaces"),
    [
        ({}, False, []),
        ({"__provider": "moved"}, False, []),
        ({"driver_version": "575.64.05"}, True, []),
        ({"runfile_url": URL.replace("us.download", "mirror")}, True, []),
        ({"sha256": "b" * 64}, True, []),
        ({"uninstall_on_delete": True}, True, []),
        ({"version": "2"}, True, []),
        ({"host": "pve2"}, True, ["host"]),
        ({"driver_version": UNKNOWN}, True, []),
    ],
)
def test_diff_table(change: dict[str, Any], changes: bool, replaces: list[str]) -> None:
    news = {k: v for k, v in {**OLD, **change}.items() if k not in ("gpus", "majors")}
    result = NvidiaHostDriverProvider().diff("id", OLD, news)
    assert (result.changes, result.replaces) == (changes, replaces)


def test_driver_check_fills_defaults_and_validates_known_values() -> None:
    provider = NvidiaHostDriverProvider()
    news = {"host": "pve1", "driver_version": "580.76.05", "runfile_url": URL, "sha256": SHA.upper()}
    result = provider.check({}, news)
    assert result.failures == []
    assert result.inputs["sha256"] == SHA and result.inputs["uninstall_on_delete"] is False
    bad = provider.check({}, {**news, "driver_version": "latest", "sha256": "abc", "runfile_url": "ftp://x"})
    assert sorted(f.property for f in bad.failures) == ["driver_version", "runfile_url", "sha256"]
    unknown = provider.check({}, {**news, "driver_version": UNKNOWN, "sha256": UNKNOWN})
    assert unknown.failures == []


# -- the provider's command flow, on a scripted executor ---------------------------------------------------


def step(name: str, exit_status: int = 0, stdout: str = "", stderr: str = "") -> Answer:
    """An answer for one of the provider's scripts, by its name (``sh -c SCRIPT NAME ...``)."""
    return Answer(["sh", "-c", ANY, name], exit_status, stdout, stderr)


def scripted(*answers: Answer) -> ScriptedExecutor:
    return ScriptedExecutor(list(answers))


def ran(ex: ScriptedExecutor) -> list[str]:
    return [call.argv[3] for call in ex.calls]


def provider_on(ex: ScriptedExecutor) -> NvidiaHostDriverProvider:
    provider = NvidiaHostDriverProvider()
    provider.ssh = lambda: ex  # type: ignore[method-assign]
    return provider


PROPS = NvidiaHostDriverInputs("pve1", "580.76.05", URL, SHA).to_props()


def test_the_pinned_version_already_there_costs_one_session_and_installs_nothing() -> None:
    ex = scripted(step("phoenix-nvidia-read", stdout=read_output("2gpu")))
    result = provider_on(ex).create({**PROPS, "__provider": "pickle"})
    assert ran(ex) == ["phoenix-nvidia-read"]
    assert result.outs is not None and result.outs["driver_version"] == "580.76.05"
    assert [g["device"] for g in result.outs["gpus"]] == ["/dev/nvidia0", "/dev/nvidia1"]
    assert result.outs["majors"]["nvidia-uvm"] == 243


def test_another_version_is_installed_then_verified() -> None:
    ex = scripted(
        step("phoenix-nvidia-read", stdout="@@absent\n"),
        step("phoenix-nvidia-install"),
        step("phoenix-nvidia-read", stdout=read_output("2gpu")),
    )
    provider_on(ex).create(dict(PROPS))
    assert ran(ex) == ["phoenix-nvidia-read", "phoenix-nvidia-install", "phoenix-nvidia-read"]
    assert ex.calls[1].argv == install_argv(NvidiaHostDriverInputs.from_props(PROPS), NvidiaHostPaths())


def test_checksum_mismatch_is_typed_and_names_both_hashes() -> None:
    ex = scripted(
        step("phoenix-nvidia-read", stdout="@@absent\n"),
        step("phoenix-nvidia-install", 65, stderr="sha256 mismatch: " + "c" * 64 + "\n"),
    )
    with pytest.raises(ChecksumMismatchError) as caught:
        provider_on(ex).create(dict(PROPS))
    assert (caught.value.expected, caught.value.actual) == (SHA, "c" * 64)
    assert "nothing from the file was run" in str(caught.value)


def test_an_install_that_does_not_take_effect_is_an_error_with_what_the_host_says() -> None:
    mismatch = (FIXTURES / "errors" / "version-mismatch.txt").read_text()
    ex = scripted(
        step("phoenix-nvidia-read", stdout="@@absent\n"),
        step("phoenix-nvidia-install"),
        step("phoenix-nvidia-read", stdout=f"@@driver_version 18\n{mismatch}"),
    )
    with pytest.raises(NvidiaDriverError, match="Driver/library version mismatch"):
        provider_on(ex).create(dict(PROPS))


def test_busy_modules_are_a_clear_error() -> None:
    ex = scripted(
        step("phoenix-nvidia-read", stdout=read_output("1gpu")),
        step("phoenix-nvidia-install", 66, stderr="kernel module nvidia_uvm is in use\n"),
    )
    with pytest.raises(NvidiaDriverError, match="stop the GPU guests"):
        provider_on(ex).update("id", dict(PROPS), dict(PROPS))


def test_read_gone_drifted_and_delete_keeps_the_driver_by_default() -> None:
    gone = provider_on(scripted(step("phoenix-nvidia-read", stdout="@@absent\n"))).read("id", dict(PROPS))
    assert (gone.id, gone.outs) == (None, {})
    drifted = provider_on(scripted(step("phoenix-nvidia-read", stdout=read_output("1gpu")))).read(
        "id", {**PROPS, "__provider": "pickle"}
    )
    assert drifted.outs is not None and drifted.outs["driver_version"] == "570.172.08"
    assert "__provider" not in drifted.outs
    ex = scripted()
    provider_on(ex).delete("id", dict(PROPS))
    assert ex.calls == []


def test_delete_uninstalls_only_when_asked_and_says_why_it_cannot() -> None:
    props = {**PROPS, "uninstall_on_delete": True}
    ex = scripted(step("phoenix-nvidia-uninstall"))
    provider_on(ex).delete("id", props)
    assert ex.calls[0].argv == uninstall_argv("580.76.05", NvidiaHostPaths()) and ex.done()
    ex = scripted(step("phoenix-nvidia-uninstall", EXIT_NO_UNINSTALLER, stderr="no nvidia-uninstall\n"))
    with pytest.raises(NvidiaDriverError, match="cannot uninstall the driver: no nvidia-uninstall"):
        provider_on(ex).delete("id", props)


# -- the resources as the program registers them ----------------------------------------------------------

TARGET = SshTarget("192.0.2.10", 22, "root", "SHA256:" + "A" * 43)


def test_the_driver_registers_its_token_defaults_host_and_a_by_reference_provider() -> None:
    args = NvidiaHostDriverArgs(driver_version="580.76.05", runfile_url=URL, sha256=SHA)
    seen = capture(lambda: NvidiaHostDriver("driver", args, ssh_target=TARGET))["driver"]
    assert seen.type == "pulumi-python:dynamic/phoenix:NvidiaHostDriver"
    assert {k: v for k, v in seen.inputs.items() if k != "__provider"} == {
        "driver_version": "580.76.05",
        "runfile_url": URL,
        "sha256": SHA,
        "host": "192.0.2.10",
        "uninstall_on_delete": False,
        "version": PROVIDER_VERSION,
    }
    pickled = base64.b64decode(seen.provider)
    assert b"providers.nvidia_driver" in pickled and len(pickled) < 2048  # by reference: no code in state
    provider = dill.loads(pickled)
    assert (provider.ssh_target, provider.paths) == (TARGET, NvidiaHostPaths())


def test_parsers_on_output_captured_from_a_real_h200_host() -> None:
    """tests/fixtures/nvidia/h200-real was captured on a real GPU machine, not reconstructed."""
    real = FIXTURES / "h200-real"
    assert parse_driver_version((real / "driver-version.txt").read_text()) == "580.159.04"
    rows = parse_gpu_query((real / "query-gpu.csv").read_text())
    majors = nvidia_majors((real / "devices").read_text())
    assert majors["nvidia"] == 195 and majors["nvidia-uvm"] == 238
    information = [(real / "gpus/0000:00:06.0/information").read_text()]
    (gpu,) = gpu_inventory(rows, information)
    assert (gpu.index, gpu.name, gpu.memory_mib) == (0, "NVIDIA H200", 143771)
    assert gpu.uuid == "GPU-c9022eae-fbca-803b-2288-3ab76e53b9d5"
    assert gpu.device == "/dev/nvidia0"
    # the device node the kernel made agrees with the parsed major
    assert "crw-rw-rw- 1 root root 195,   0" in (real / "dev-nodes.txt").read_text()
