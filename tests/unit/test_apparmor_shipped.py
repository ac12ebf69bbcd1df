"""The shipped AppArmor profiles, read as text: what the VM tests (tests/apparmor_vm) prove for real holds
for every profile, so the profiles cannot drift apart or regain the escape between VM runs."""

from __future__ import annotations

from pathlib import Path

import pytest

APPARMOR = Path(__file__).resolve().parents[2] / "apparmor"
SHIPPED = sorted(p for p in APPARMOR.iterdir() if p.is_file())
BEGIN = "  # --- Phoenix hardening, the same in every Phoenix profile"
END = "  # --- end of the shared block ---"


def rules(profile: Path) -> list[str]:
    return [line.split("#", 1)[0].strip() for line in profile.read_text().splitlines()]


def shared_block(profile: Path) -> str:
    text = profile.read_text()
    assert BEGIN in text and END in text, f"{profile.name} lacks the shared hardening block"
    return text[text.index(BEGIN) : text.index(END)]


def test_three_profiles_ship() -> None:
    names = [p.name for p in SHIPPED]
    assert names == ["phoenix-lxc-confined", "phoenix-lxc-gpu-docker", "phoenix-lxc-nesting"]


@pytest.mark.parametrize("profile", SHIPPED, ids=lambda p: p.name)
def test_no_profile_includes_start_container_or_changes_profile(profile: Path) -> None:
    assert not [r for r in rules(profile) if "start-container" in r]
    assert not [r for r in rules(profile) if r.startswith("change_profile") or "unconfined" in r]


def test_every_profile_carries_the_same_hardening_block() -> None:
    blocks = {p.name: shared_block(p) for p in SHIPPED}
    first = blocks[SHIPPED[0].name]
    assert all(block == first for block in blocks.values()), "the shared block differs between profiles"


def test_only_the_gpu_profile_allows_nvidia_nodes() -> None:
    for profile in SHIPPED:
        allows = any(r.startswith("/dev/nvidia") for r in rules(profile))
        denies = any(r.startswith("deny /dev/nvidia") for r in rules(profile))
        assert allows == (profile.name == "phoenix-lxc-gpu-docker"), profile.name
        assert denies == (profile.name != "phoenix-lxc-gpu-docker"), profile.name


CONTAINER_BASE = Path("/etc/apparmor.d/abstractions/lxc/container-base")
BASE_BEGIN = "  # --- base: Debian lxc"
BASE_END = "  # --- end of base ---"
# The one change the Docker profiles' inline base makes to container-base (see the profiles' comment).
SYS_DENY = "deny /sys/[^fdc]*{,/**} wklx,"
SYS_DENY_BUT_NET = [
    "deny /sys/[^fdcn]*{,/**} wklx,",
    "deny /sys/n[^e]*{,/**} wklx,",
    "deny /sys/ne[^t]*{,/**} wklx,",
    "deny /sys/net?*{,/**} wklx,",
]


@pytest.mark.parametrize("name", ["phoenix-lxc-nesting", "phoenix-lxc-gpu-docker"])
def test_the_docker_profiles_base_is_container_base_with_only_sys_net_writable(name: str) -> None:
    if not CONTAINER_BASE.exists():
        pytest.skip(f"{CONTAINER_BASE} is missing (Debian's lxc package): nothing to compare against")
    text = (APPARMOR / name).read_text()
    assert "#include <abstractions/lxc/container-base>" not in text
    inline = text[text.index(BASE_BEGIN) : text.index(BASE_END)]
    ours = [line.strip() for line in inline.splitlines() if line.strip() and not line.strip().startswith("#")]
    debian = [
        line.strip()
        for line in CONTAINER_BASE.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert debian.count(SYS_DENY) == 1, "Debian's container-base changed its /sys denial: review the base"
    i = debian.index(SYS_DENY)
    assert ours == debian[:i] + SYS_DENY_BUT_NET + debian[i + 1 :]
