"""NVIDIA host preparation (issue 16): parsers, the rendered units, and converge's order over a scripted host.

The parsers read the formats in tests/fixtures/nvidia/host-prep/ (synthetic: no GPU host was available
when they were written; see that folder's README). The lab flows are tests/lab/test_nvidia_driver_lab.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import providers.nvidia_driver as nv
from providers.errors import (
    IommuError,
    RebootRequiredError,
    RebootTimeoutError,
    SecureBootError,
    SshConnectError,
)
from providers.nvidia_driver import (
    KERNEL_HEADERS,
    NODES_UNIT,
    PREREQUISITES,
    HostFacts,
    NvidiaHostDriverInputs,
    NvidiaHostDriverProvider,
    NvidiaHostPaths,
    nodes_unit,
    parse_dkms_status,
    parse_dpkg_status,
    parse_host_read,
    parse_pinned_kernel,
    parse_secure_boot,
    plan_steps,
    systemd_word,
)
from tests.support.fakes import ANY, Answer, ScriptedExecutor

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "nvidia"
SHA = "a" * 64
URL = "https://us.download.nvidia.com/XFree86/Linux-x86_64/580.76.05/NVIDIA-Linux-x86_64-580.76.05.run"
KERNEL = "6.8.12-4-pve"
BOOT_A, BOOT_B = "6f0c1b9e-0000-4000-8000-00000000000a", "6f0c1b9e-0000-4000-8000-00000000000b"


def prep(name: str) -> str:
    return (FIXTURES / "host-prep" / name).read_text()


def driver_read(host: str = "2gpu") -> str:
    """The driver's batched read on that fixture host."""
    informations = sorted((FIXTURES / host / "gpus").glob("*/information"))
    return "".join(
        [
            f"@@driver_version 0\n{(FIXTURES / host / 'driver-version.txt').read_text()}",
            f"@@gpus 0\n{(FIXTURES / host / 'query-gpu.csv').read_text()}",
            f"@@devices\n{(FIXTURES / host / 'devices').read_text()}",
            *(f"@@information\n{p.read_text()}" for p in informations),
        ]
    )


def host_read(
    *,
    installed: tuple[str, ...] = (),
    secure_boot: str = "mokutil-sb-disabled.txt",
    nouveau: bool = False,
    units: dict[str, str] | None = None,
    missing: tuple[str, ...] = (),
    dkms: str = "",
    boot: str = "kernel-list.txt",
    boot_id: str = BOOT_A,
    iommu_groups: int = 0,
    pci: dict[str, tuple[str, str, tuple[str, ...]]] | None = None,
) -> str:
    """What the preparation read prints (its sections, in the script's order)."""
    parts = [f"@@kernel\n{KERNEL}\n", "@@packages\n", *(f"{p} ii \n" for p in installed)]
    parts += [f"@@available\nproxmox-headers-{KERNEL}\n", f"@@secure_boot\n{prep(secure_boot)}"]
    parts += ["@@nouveau\n" + ("loaded\n" if nouveau else ""), "@@blacklist\n"]
    for unit in (NODES_UNIT, nv.PERSISTENCED_UNIT):
        text = (units or {}).get(unit)
        parts.append(f"@@unit {unit} {'enabled' if text else 'disabled'}\n{text or ''}\n")
    parts += ["@@nodes\n", *(f"/dev/{n}\n" for n in missing), f"@@dkms\n{dkms}\n", f"@@boot\n{prep(boot)}"]
    parts.append(f"@@boot_id\n{boot_id}\n")
    parts.append(f"@@iommu {iommu_groups}\n")
    for address, (group, driver, members) in (pci or {}).items():
        parts.append(f"@@pci {address} {group} {driver}\n" + "".join(f"{m}\n" for m in members))
    return "".join(parts)


ALL = (f"proxmox-headers-{KERNEL}", *PREREQUISITES[1:])
RENDERED = nv.units(NvidiaHostPaths(), [0, 1])


def step(name: str, exit_status: int = 0, stdout: str = "") -> Answer:
    return Answer(["sh", "-c", ANY, name], exit_status, stdout)


def provider_on(ex: ScriptedExecutor) -> NvidiaHostDriverProvider:
    provider = NvidiaHostDriverProvider()
    provider.ssh = lambda: ex  # type: ignore[method-assign]
    return provider


def props(**extra: Any) -> dict[str, Any]:
    inputs = NvidiaHostDriverInputs(
        "pve1", "580.76.05", URL, SHA, prerequisites=PREREQUISITES, nodes_unit=True
    )
    return {**inputs.to_props(), **extra}


def names(ex: ScriptedExecutor) -> list[str]:
    return [c.argv[3] if c.argv[:2] == ["sh", "-c"] else " ".join(c.argv[:3]) for c in ex.calls]


# -- parsers -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "enabled"),
    [
        ("mokutil-sb-enabled.txt", True),
        ("mokutil-sb-disabled.txt", False),
        ("mokutil-no-efi.txt", False),
        ("efivar-enabled.txt", True),
    ],
)
def test_secure_boot_is_read_from_mokutil_or_the_efivar(name: str, enabled: bool) -> None:
    state, evidence = parse_secure_boot(prep(name))
    assert state is enabled and evidence


def test_no_secure_boot_evidence_is_unknown_not_off() -> None:
    assert parse_secure_boot("") == (None, "")


def test_dpkg_status_keeps_only_installed_packages() -> None:
    installed = parse_dpkg_status(prep("dpkg-query.txt"))
    assert "pkg-config" not in installed  # "un": known, not installed
    assert {"dkms", "build-essential", f"proxmox-headers-{KERNEL}"} <= installed


def test_dkms_status_both_formats_only_installed_kernels() -> None:
    assert parse_dkms_status(prep("dkms-status-3.txt")) == (KERNEL,)
    assert parse_dkms_status(prep("dkms-status-2.txt")) == ("6.8.4-2-pve",)  # 6.8.12-4 only "built"


def test_pinned_kernel_only_when_the_section_is_there() -> None:
    assert parse_pinned_kernel(prep("kernel-list-pinned.txt")) == KERNEL
    assert parse_pinned_kernel(prep("kernel-list.txt")) is None


def test_the_host_read_resolves_the_headers_and_reports_what_is_missing() -> None:
    facts = parse_host_read(host_read(installed=("dkms",), missing=("nvidia-uvm",)))
    assert facts.kernel == KERNEL and facts.secure_boot is False and not facts.nouveau_loaded
    assert facts.satisfied(PREREQUISITES) == ["dkms"]
    assert facts.missing_packages(PREREQUISITES) == [
        f"proxmox-headers-{KERNEL}",
        "proxmox-default-headers",
        "build-essential",
        "pkg-config",
    ]
    assert facts.missing_nodes == ("/dev/nvidia-uvm",) and facts.boot_id == BOOT_A


def test_pve7_headers_count_for_the_running_kernel() -> None:
    facts = HostFacts(kernel="5.15.158-2-pve", installed=frozenset({"pve-headers-5.15.158-2-pve"}))
    assert facts.headers() == "pve-headers-5.15.158-2-pve" and facts.satisfied([KERNEL_HEADERS]) == [
        KERNEL_HEADERS
    ]


# -- the units ---------------------------------------------------------------------------------------------


def test_the_nodes_unit_runs_nvidia_modprobe_per_minor_before_the_guests() -> None:
    text = nodes_unit(NvidiaHostPaths(), [0, 3])
    assert "Before=pve-guests.service" in text.splitlines()
    assert [line for line in text.splitlines() if line.startswith("ExecStart=")] == [
        'ExecStart="/usr/bin/nvidia-modprobe" "-u" "-c=0"',
        'ExecStart="/usr/bin/nvidia-modprobe" "-u" "-c=3"',
    ]


@pytest.mark.parametrize(
    ("word", "quoted"),
    [("a b", '"a b"'), ('x"y', '"x\\"y"'), ("100%", '"100%%"'), ("$HOME", '"$$HOME"'), ("a\\b", '"a\\\\b"')],
)
def test_systemd_words_are_quoted_with_systemds_own_rules(word: str, quoted: str) -> None:
    assert systemd_word(word) == quoted


def test_a_line_break_never_reaches_a_unit() -> None:
    with pytest.raises(ValueError, match="control character"):
        systemd_word("/usr/bin/x\nExecStartPre=/bin/evil")


# -- converge ----------------------------------------------------------------------------------------------


def test_a_fresh_host_gets_prerequisites_then_the_driver_then_the_units() -> None:
    ex = ScriptedExecutor(
        [
            step("phoenix-nvidia-read", stdout="@@absent\n"),
            step("phoenix-nvidia-host-read", stdout=host_read()),
            Answer(
                [
                    "env",
                    "DEBIAN_FRONTEND=noninteractive",
                    "apt-get",
                    "install",
                    "-y",
                    "--no-install-recommends",
                    *ALL,
                ]
            ),
            step("phoenix-nvidia-host-read", stdout=host_read(installed=ALL)),
            step("phoenix-nvidia-install"),
            step("phoenix-nvidia-read", stdout=driver_read()),
            step(
                "phoenix-nvidia-host-read", stdout=host_read(installed=ALL, missing=("nvidia0", "nvidia-uvm"))
            ),
            step("phoenix-write"),
            step("phoenix-write"),
            Answer(["systemctl", "daemon-reload"]),
            Answer(["systemctl", "enable", "--now", NODES_UNIT, nv.PERSISTENCED_UNIT]),
            step(
                "phoenix-nvidia-host-read",
                stdout=host_read(
                    installed=ALL, units=RENDERED, dkms=f"nvidia/580.76.05, {KERNEL}, x86_64: installed"
                ),
            ),
        ]
    )
    result = provider_on(ex).create(props())
    assert ex.done()
    assert [c.stdin for c in ex.calls if c.argv[3:4] == ["phoenix-write"]] == list(RENDERED.values())
    outs = result.outs
    assert outs is not None
    assert (
        outs["prerequisites"] == list(PREREQUISITES) and outs["kernel_headers"] == f"proxmox-headers-{KERNEL}"
    )
    assert outs["nodes_unit"] is True and outs["missing_nodes"] == []
    assert outs["dkms_kernels"] == [KERNEL] and outs["module_for_running_kernel"] is True


def test_secure_boot_on_stops_before_anything_is_installed() -> None:
    ex = ScriptedExecutor(
        [
            step("phoenix-nvidia-read", stdout="@@absent\n"),
            step("phoenix-nvidia-host-read", stdout=host_read(secure_boot="mokutil-sb-enabled.txt")),
        ]
    )
    with pytest.raises(SecureBootError, match="sign the module.*turn Secure Boot off") as caught:
        provider_on(ex).create(props())
    assert "mokutil --sb-state: SecureBoot enabled" in str(caught.value) and ex.done()


def test_nouveau_loaded_is_blacklisted_and_a_reboot_is_asked_for() -> None:
    ex = ScriptedExecutor(
        [
            step("phoenix-nvidia-read", stdout="@@absent\n"),
            step("phoenix-nvidia-host-read", stdout=host_read(installed=ALL, nouveau=True)),
            step("phoenix-write"),
            Answer(["update-initramfs", "-u"]),
        ]
    )
    with pytest.raises(RebootRequiredError) as caught:
        provider_on(ex).create(props())
    assert ex.done() and ex.calls[2].stdin == nv.BLACKLIST
    assert caught.value.done == ["write /etc/modprobe.d/blacklist-nouveau.conf", "rebuild the initramfs"]
    assert "allow_reboot" in str(caught.value)


def test_allow_reboot_reboots_waits_for_a_new_boot_id_and_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nv, "REBOOT_POLL", 0.0)
    ex = ScriptedExecutor(
        [
            step("phoenix-nvidia-read", stdout=driver_read()),
            step("phoenix-nvidia-host-read", stdout=host_read(installed=ALL, nouveau=True, units=RENDERED)),
            step("phoenix-write"),
            Answer(["update-initramfs", "-u"]),
            Answer(["systemctl", "reboot"], exit_status=255),  # the session dies with the host
            Answer(["cat"], stdout=BOOT_A),  # still going down
            Answer(["cat"], stdout=BOOT_B),
            step("phoenix-nvidia-host-read", stdout=host_read(installed=ALL, units=RENDERED, boot_id=BOOT_B)),
            step("phoenix-nvidia-host-read", stdout=host_read(installed=ALL, units=RENDERED, boot_id=BOOT_B)),
        ]
    )
    result = provider_on(ex).create(props(allow_reboot=True))
    assert ex.done() and result.outs is not None and result.outs["nodes_unit"] is True


def test_a_host_that_does_not_come_back_fails_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nv, "REBOOT_POLL", 0.0)
    monkeypatch.setattr(nv, "REBOOT_TIMEOUT", 0.05)

    class Down(ScriptedExecutor):
        def run(self, argv: Any, **kwargs: Any) -> Any:
            if list(argv)[:1] == ["cat"]:
                raise SshConnectError("pve1", "connection refused")
            return super().run(argv, **kwargs)

    ex = Down(
        [
            step("phoenix-nvidia-read", stdout=driver_read()),
            step("phoenix-nvidia-host-read", stdout=host_read(installed=ALL, nouveau=True)),
            step("phoenix-write"),
            Answer(["update-initramfs", "-u"]),
            Answer(["systemctl", "reboot"]),
        ]
    )
    with pytest.raises(RebootTimeoutError, match="connection refused"):
        provider_on(ex).create(props(allow_reboot=True))


def test_the_kernel_pin_runs_only_when_another_kernel_is_pinned() -> None:
    ex = ScriptedExecutor(
        [
            step("phoenix-nvidia-read", stdout=driver_read()),
            step("phoenix-nvidia-host-read", stdout=host_read(installed=ALL, units=RENDERED)),
            step("phoenix-nvidia-host-read", stdout=host_read(installed=ALL, units=RENDERED)),
            Answer(["proxmox-boot-tool", "kernel", "pin", KERNEL]),
            step(
                "phoenix-nvidia-host-read",
                stdout=host_read(installed=ALL, units=RENDERED, boot="kernel-list-pinned.txt"),
            ),
        ]
    )
    result = provider_on(ex).create(props(kernel_pin=KERNEL))
    assert ex.done() and result.outs is not None and result.outs["kernel_pin"] == KERNEL


def test_read_reports_a_booted_kernel_the_module_was_not_built_for_and_missing_nodes() -> None:
    ex = ScriptedExecutor(
        [
            step("phoenix-nvidia-read", stdout=driver_read()),
            step(
                "phoenix-nvidia-host-read",
                stdout=host_read(
                    installed=ALL, units=RENDERED, dkms=prep("dkms-status-2.txt"), missing=("nvidia-uvm",)
                ),
            ),
        ]
    )
    outs = provider_on(ex).read("id", props()).outs
    assert outs is not None
    assert outs["kernel"] == KERNEL and outs["dkms_kernels"] == ["6.8.4-2-pve"]
    assert outs["module_for_running_kernel"] is False and outs["missing_nodes"] == ["/dev/nvidia-uvm"]
    diff = NvidiaHostDriverProvider().diff("id", outs, props())
    assert diff.changes  # the next up starts the unit again


def test_a_state_from_before_the_preparation_diffs_as_unchanged() -> None:
    old = NvidiaHostDriverInputs("pve1", "580.76.05", URL, SHA).to_props()
    for key in nv.PREPARATION:
        old.pop(key)
    news = NvidiaHostDriverProvider().check({}, dict(old)).inputs
    assert not NvidiaHostDriverProvider().diff("id", old, news).changes


def test_the_plan_lists_the_prerequisites_for_a_fresh_host() -> None:
    inputs = NvidiaHostDriverInputs.from_props(props())
    whats = [s.what for s in plan_steps(inputs, NvidiaHostPaths())]
    assert whats[:3] == [
        "read the NVIDIA driver and GPUs",
        "read the host's NVIDIA prerequisites",
        "install proxmox-headers-<uname -r>, proxmox-default-headers, dkms, build-essential, pkg-config",
    ]
    assert "rebuild the initramfs" in whats and whats[-1] == "enable and start the NVIDIA units"


# -- VM passthrough (IOMMU) ---------------------------------------------------------------------------------

GPU_VM = "0000:41:00.0"


@pytest.mark.parametrize(
    ("iommu", "pci", "why"),
    [
        (0, {}, "the IOMMU is off"),
        (40, {GPU_VM: ("", "", ())}, "in no IOMMU group"),
        (
            40,
            {GPU_VM: ("12", "vfio-pci", (GPU_VM, "0000:41:00.1", "0000:40:01.0"))},
            "group 12 also holds 0000:40:01.0",
        ),
        (40, {GPU_VM: ("12", "nvidia", (GPU_VM, "0000:41:00.1"))}, "nvidia driver is bound"),
    ],
)
def test_a_gpu_for_a_vm_needs_iommu_its_own_group_and_no_nvidia_driver(
    iommu: int, pci: dict[str, tuple[str, str, tuple[str, ...]]], why: str
) -> None:
    ex = ScriptedExecutor(
        [
            step("phoenix-nvidia-read", stdout=driver_read()),
            step("phoenix-nvidia-host-read", stdout=host_read(installed=ALL, iommu_groups=iommu, pci=pci)),
        ]
    )
    with pytest.raises(IommuError, match=why) as caught:
        provider_on(ex).create(props(passthrough=[GPU_VM]))
    assert GPU_VM in str(caught.value) and ex.done()  # nothing ran after the read


def test_an_isolated_gpu_with_its_audio_function_passes() -> None:
    group: dict[str, tuple[str, str, tuple[str, ...]]] = {
        GPU_VM: ("12", "vfio-pci", (GPU_VM, "0000:41:00.1"))
    }
    facts = parse_host_read(host_read(iommu_groups=40, pci=group))
    assert facts.passthrough_problems([GPU_VM]) == {}
    assert facts.pci[GPU_VM] == ("12", "vfio-pci", (GPU_VM, "0000:41:00.1"))
