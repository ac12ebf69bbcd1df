"""The product feature scripts (config/features/*.sh): shellcheck-clean, and tested for what they run.

The lab cannot download NVIDIA's driver, Docker or vLLM, so each script runs for real, as root, in a
throwaway clone of the lab's Debian rootfs with stubs for the commands that would reach the network or a
daemon (tests/lab/script_sandbox.py). The assertions are on the stubs' argv logs, the files the scripts
write inside the clone, and their exit status; the checksum is verified by the rootfs's real sha256sum.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from phoenix_components.render.features import version_variable
from tests.lab.common import REPO_ROOT
from tests.lab.requirements import require_lab
from tests.lab.script_sandbox import Sandbox, fake_runfile, nvidia_smi_stub, sandbox, sha256
from tests.lab.zfs import LabZpool

FEATURES = REPO_ROOT / "config" / "features"
SCRIPTS = sorted(FEATURES.glob("*.sh"))
NVIDIA, DOCKER, VLLM, BASE = (FEATURES / f"{name}.sh" for name in ("nvidia", "docker", "vllm", "base_setup"))

# The pins the product ships (config/chain.json), in the variables Phoenix passes (features.feature_env).
PINS = {
    version_variable(name): version
    for layer in json.loads((REPO_ROOT / "config" / "chain.json").read_text())["layers"].values()
    for name, version in layer.get("versions", {}).items()
}
DRIVER = PINS["PHOENIX_NVIDIA_VERSION"]
RUNFILE_URL = f"https://us.download.nvidia.com/XFree86/Linux-x86_64/{DRIVER}/NVIDIA-Linux-x86_64-{DRIVER}.run"
RUNFILE = fake_runfile(DRIVER)
NVIDIA_ENV = {
    "PHOENIX_NVIDIA_VERSION": DRIVER,
    "PHOENIX_NVIDIA_RUNFILE_URL": RUNFILE_URL,
    "PHOENIX_NVIDIA_SHA256": sha256(RUNFILE),
}
DOCKER_ENV = {
    key: PINS[key]
    for key in (
        "PHOENIX_DOCKER_VERSION",
        "PHOENIX_CONTAINERD_VERSION",
        "PHOENIX_NVIDIA_CONTAINER_TOOLKIT_VERSION",
    )
}
VLLM_ENV = {"PHOENIX_VLLM_VERSION": PINS["PHOENIX_VLLM_VERSION"]}
DOCKER_KEY_URL = "https://download.docker.com/linux/debian/gpg"
CTK_KEY_URL = "https://nvidia.github.io/libnvidia-container/gpgkey"
BASE_PACKAGES = ("ca-certificates", "curl", "gnupg", "locales", "tzdata", "python3", "procps")


# --- shellcheck (runs anywhere) -------------------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_feature_script_is_shellcheck_clean(script: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        reason = "shellcheck is not installed (make lab-deps)"
        if os.environ.get("CI"):  # CI installs it: a missing linter there must not pass silently
            pytest.fail(f"{reason}, and CI must lint the product scripts")
        pytest.skip(reason)
    proc = subprocess.run(
        [shellcheck, "-x", str(script)], capture_output=True, text=True, timeout=60, check=False, cwd=FEATURES
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_feature_script_is_covered() -> None:
    # A new product script must get its tests here, not slip past them.
    assert [p.name for p in SCRIPTS] == [
        "base_setup.sh",
        "docker.sh",
        "llamacpp.sh",
        "nvidia.sh",
        "ollama.sh",
        "vllm.sh",
    ]


# --- the scripts run for real, in a throwaway root ------------------------------------------------------


@pytest.fixture
def box(lab_lxc_seed: str, lab_zfs: LabZpool) -> Iterator[Sandbox]:
    """A fresh clone of the seed rootfs with the stubs; gone (and unmounted) when the test ends."""
    require_lab("zfs", "chroot", "mknod")
    with sandbox(lab_zfs, lab_lxc_seed) as made:
        yield made


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def installed_packages(box: Sandbox) -> list[list[str]]:
    """The package arguments of every `apt-get install`, one list per call."""
    return [
        [a for a in args if not a.startswith("-")][1:]
        for args in box.calls_to("apt-get")
        if "install" in args
    ]


def order(box: Sandbox) -> Callable[[str], int]:
    """Index in the call log of the first call to a command (a failing lookup fails the test)."""
    commands = [call[0] for call in box.calls()]
    return commands.index


# nvidia.sh


@pytest.mark.lab
def test_nvidia_lxc_verifies_then_installs_userspace_only(box: Sandbox) -> None:
    box.serve(RUNFILE_URL, RUNFILE)

    proc = ok(box.run(NVIDIA, {**NVIDIA_ENV, "PHOENIX_TARGET": "lxc"}))

    assert box.calls_to("curl") and box.calls_to("curl")[0][-1] == RUNFILE_URL
    (runfile_args,) = box.calls_to("runfile")
    assert "--no-kernel-module" in runfile_args and "--silent" in runfile_args
    assert "--dkms" not in runfile_args
    (check,) = box.calls_to("sha256sum")
    assert check[:2] == ["-c", "--quiet"]
    at = order(box)
    assert at("curl") < at("sha256sum") < at("runfile")
    assert not any(p.startswith(("dkms", "linux-headers")) for pkgs in installed_packages(box) for p in pkgs)
    assert f"installed {DRIVER} (lxc)" in proc.stdout
    assert list(box.path("/tmp").iterdir()) == []  # the download went with its temporary directory

    # Built layer, run again: the userspace library is there (no device for nvidia-smi): nothing to do.
    box.clear_log()
    again = ok(box.run(NVIDIA, {**NVIDIA_ENV, "PHOENIX_TARGET": "lxc"}))
    assert "already installed" in again.stdout
    assert box.calls() == []


@pytest.mark.lab
@pytest.mark.parametrize("target", ["vm", "ec2"])
def test_nvidia_vm_and_ec2_build_the_kernel_module_with_dkms(box: Sandbox, target: str) -> None:
    box.serve(RUNFILE_URL, RUNFILE)

    ok(box.run(NVIDIA, {**NVIDIA_ENV, "PHOENIX_TARGET": target}))

    packages = [p for pkgs in installed_packages(box) for p in pkgs]
    assert "dkms" in packages
    # chroot shares this machine's kernel, so `uname -r` inside is ours.
    assert f"linux-headers-{os.uname().release}" in packages
    (runfile_args,) = box.calls_to("runfile")
    assert "--dkms" in runfile_args and "--silent" in runfile_args
    assert "--no-kernel-module" not in runfile_args
    at = order(box)
    assert at("apt-get") < at("curl") < at("sha256sum") < at("runfile")


@pytest.mark.lab
def test_nvidia_wrong_checksum_fails_and_never_runs_the_runfile(box: Sandbox) -> None:
    box.serve(RUNFILE_URL, RUNFILE)
    wrong = sha256(RUNFILE + b"tampered")

    proc = box.run(NVIDIA, {**NVIDIA_ENV, "PHOENIX_NVIDIA_SHA256": wrong, "PHOENIX_TARGET": "lxc"})

    assert proc.returncode != 0
    assert box.calls_to("curl") and box.calls_to("sha256sum")
    assert box.calls_to("runfile") == []
    assert "did NOT match" in proc.stderr  # sha256sum's own verdict
    assert not box.path(f"/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.{DRIVER}").exists()


@pytest.mark.lab
def test_nvidia_tampered_download_fails(box: Sandbox) -> None:
    # The pinned hash is right, but what the URL serves is not the pinned runfile.
    box.serve(RUNFILE_URL, RUNFILE.replace(b"TEST-ONLY", b"EVIL-ONLY"))

    proc = box.run(NVIDIA, {**NVIDIA_ENV, "PHOENIX_TARGET": "vm"})

    assert proc.returncode != 0
    assert box.calls_to("runfile") == []


@pytest.mark.lab
def test_nvidia_already_installed_downloads_nothing(box: Sandbox) -> None:
    box.add_stub("nvidia-smi", nvidia_smi_stub(DRIVER))

    proc = ok(box.run(NVIDIA, {**NVIDIA_ENV, "PHOENIX_TARGET": "vm"}))

    assert f"{DRIVER} already installed" in proc.stdout
    assert [call[0] for call in box.calls()] == ["nvidia-smi"]


@pytest.mark.lab
def test_nvidia_a_different_installed_version_is_replaced(box: Sandbox) -> None:
    box.add_stub("nvidia-smi", nvidia_smi_stub("575.64.05"))
    box.serve(RUNFILE_URL, RUNFILE)

    ok(box.run(NVIDIA, {**NVIDIA_ENV, "PHOENIX_TARGET": "lxc"}))

    assert box.calls_to("curl")[0][-1] == RUNFILE_URL
    (runfile_args,) = box.calls_to("runfile")
    assert "--no-kernel-module" in runfile_args


# docker.sh


@pytest.mark.lab
@pytest.mark.parametrize("target", ["lxc", "vm"])
def test_docker_installs_the_pinned_versions_from_the_right_repos(box: Sandbox, target: str) -> None:
    box.serve(DOCKER_KEY_URL, b"FAKE DOCKER KEY\n")
    box.serve(CTK_KEY_URL, b"FAKE NVIDIA KEY\n")

    ok(box.run(DOCKER, {**DOCKER_ENV, "PHOENIX_TARGET": target}))

    docker = DOCKER_ENV["PHOENIX_DOCKER_VERSION"]
    containerd = DOCKER_ENV["PHOENIX_CONTAINERD_VERSION"]
    ctk = DOCKER_ENV["PHOENIX_NVIDIA_CONTAINER_TOOLKIT_VERSION"]
    pinned = {
        "docker-ce": docker,
        "docker-ce-cli": docker,
        "containerd.io": containerd,
        "nvidia-container-toolkit": ctk,
        "nvidia-container-toolkit-base": ctk,
        "libnvidia-container-tools": ctk,
        "libnvidia-container1": ctk,
    }
    pinned_install = [pkgs for pkgs in installed_packages(box) if any("=" in p for p in pkgs)]
    assert pinned_install == [[f"{name}={version}" for name, version in pinned.items()]]
    (hold,) = box.calls_to("apt-mark")
    assert hold[0] == "hold" and set(hold[1:]) == set(pinned)

    sources = box.path("/etc/apt/sources.list.d")
    assert (sources / "docker.list").read_text() == (
        "deb [arch=amd64 signed-by=/etc/apt/keyrings/docker.gpg] "
        "https://download.docker.com/linux/debian bookworm stable\n"
    )
    assert (sources / "nvidia-container-toolkit.list").read_text() == (
        "deb [signed-by=/etc/apt/keyrings/nvidia-container-toolkit.gpg] "
        "https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /\n"
    )
    # The keyrings the sources name are what gpg --dearmor made of the downloaded keys.
    assert box.path("/etc/apt/keyrings/docker.gpg").read_bytes() == b"FAKE DOCKER KEY\n"
    assert box.path("/etc/apt/keyrings/nvidia-container-toolkit.gpg").read_bytes() == b"FAKE NVIDIA KEY\n"
    # The pinned install reads the indexes of the repos just added, so a second update precedes it.
    assert [args[0] for args in box.calls_to("apt-get")] == ["update", "install", "update", "install"]
    at = order(box)
    assert at("gpg") < at("apt-mark")

    ctk_calls = box.calls_to("nvidia-ctk")
    assert ctk_calls[0] == ["runtime", "configure", "--runtime=docker"]
    no_cgroups = ["config", "--in-place", "--set", "nvidia-container-cli.no-cgroups=true"]
    assert (no_cgroups in ctk_calls) == (target == "lxc")
    assert ["restart", "docker"] in box.calls_to("systemctl")


@pytest.mark.lab
def test_docker_second_run_keeps_the_keys_and_pins(box: Sandbox) -> None:
    box.serve(DOCKER_KEY_URL, b"FAKE DOCKER KEY\n")
    box.serve(CTK_KEY_URL, b"FAKE NVIDIA KEY\n")
    ok(box.run(DOCKER, {**DOCKER_ENV, "PHOENIX_TARGET": "lxc"}))
    first = [pkgs for pkgs in installed_packages(box) if any("=" in p for p in pkgs)]
    box.clear_log()

    ok(box.run(DOCKER, {**DOCKER_ENV, "PHOENIX_TARGET": "lxc"}))

    assert box.calls_to("curl") == [] and box.calls_to("gpg") == []  # keyrings already in place
    assert [pkgs for pkgs in installed_packages(box) if any("=" in p for p in pkgs)] == first


# vllm.sh


@pytest.mark.lab
def test_vllm_installs_the_pinned_version_in_its_venv_once(box: Sandbox) -> None:
    version = VLLM_ENV["PHOENIX_VLLM_VERSION"]

    proc = ok(box.run(VLLM, VLLM_ENV))

    assert box.calls_to("python3") == [["-m", "venv", "/opt/vllm"]]
    pip_installs = [args for args in box.calls_to("pip") if args[0] == "install"]
    assert [a for a in pip_installs[-1] if not a.startswith("-")] == ["install", f"vllm=={version}"]
    assert box.path("/opt/vllm/bin/python").exists()
    assert f"installed {version}" in proc.stdout

    box.clear_log()
    again = ok(box.run(VLLM, VLLM_ENV))
    assert f"{version} already installed" in again.stdout
    assert box.calls() == []


@pytest.mark.lab
def test_vllm_a_new_pin_reinstalls(box: Sandbox) -> None:
    ok(box.run(VLLM, {"PHOENIX_VLLM_VERSION": "0.9.2"}))
    box.clear_log()

    ok(box.run(VLLM, VLLM_ENV))

    assert [f"vllm=={VLLM_ENV['PHOENIX_VLLM_VERSION']}"] == [
        a for args in box.calls_to("pip") for a in args if a.startswith("vllm==")
    ]


# base_setup.sh


def _dpkg_installed(box: Sandbox, package: str) -> bool:
    proc = subprocess.run(
        ["chroot", str(box.root), "dpkg-query", "-W", "-f=${Status}", package],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return proc.stdout == "install ok installed"


@pytest.mark.lab
def test_base_setup_installs_only_what_is_missing_and_runs_twice(box: Sandbox) -> None:
    missing = [p for p in BASE_PACKAGES if not _dpkg_installed(box, p)]
    assert missing and len(missing) < len(BASE_PACKAGES)  # the seed has python3 and tzdata, not curl
    localtime = box.path("/etc/localtime")
    localtime.unlink()
    localtime.symlink_to("/usr/share/zoneinfo/Europe/Berlin")

    ok(box.run(BASE, {"PHOENIX_TARGET": "lxc"}))

    assert installed_packages(box) == [missing]
    assert os.readlink(localtime) == "/usr/share/zoneinfo/Etc/UTC"
    assert box.path("/etc/timezone").read_text() == "Etc/UTC\n"

    # Everything is installed now (the apt-get stub marked it in dpkg's database): nothing to install.
    box.clear_log()
    ok(box.run(BASE, {"PHOENIX_TARGET": "lxc"}))
    assert installed_packages(box) == []
    assert box.calls_to("apt-get") == [["clean"]]


@pytest.mark.lab
def test_base_setup_passes_only_the_declared_environment_from_init_to_systemd(
    box: Sandbox, tmp_path: Path
) -> None:
    """guests.json `environment` reaches init as lxc.environment lines (render/lxc.py); the base layer's
    unit hands exactly the names PHOENIX_GUEST_ENVIRONMENT lists to `systemctl set-environment`, each
    value one argv word as init had it (spaces, `$`, `=` and quotes untouched)."""
    ok(box.run(BASE, {"PHOENIX_TARGET": "lxc"}))
    unit = box.path("/etc/systemd/system/phoenix-guest-environment.service").read_text()
    assert "ExecStart=/usr/local/lib/phoenix/guest-environment" in unit
    assert box.path("/etc/systemd/system/sysinit.target.wants/phoenix-guest-environment.service").is_symlink()

    init_environ = {
        "container": "lxc",
        "HF_HOME": "/models/hf cache",
        "TOKEN_HINT": "a=$HOME 'q' \\",
        "NOT_DECLARED": "stays with init",
        "PHOENIX_GUEST_ENVIRONMENT": "HF_HOME,TOKEN_HINT,ABSENT",
    }
    box.path("/tmp/environ").write_bytes(
        b"".join(f"{k}={v}".encode() + b"\0" for k, v in init_environ.items())
    )
    box.clear_log()
    caller = tmp_path / "call.sh"
    caller.write_text("/usr/local/lib/phoenix/guest-environment /tmp/environ\n")
    ok(box.run(caller, {}))
    assert box.calls_to("systemctl") == [
        ["set-environment", "HF_HOME=/models/hf cache", "TOKEN_HINT=a=$HOME 'q' \\"]
    ]

    # A container that declares nothing: the unit does nothing.
    box.path("/tmp/environ").write_bytes(b"container=lxc\0")
    box.clear_log()
    ok(box.run(caller, {}))
    assert box.calls_to("systemctl") == []


# Every script with inputs: a missing or empty one fails before anything runs. (base_setup.sh has none;
# PHOENIX_TARGET is optional everywhere, defaulting to lxc; an unknown one is refused, tested below.)

REQUIRED = (
    [(NVIDIA, NVIDIA_ENV, var) for var in NVIDIA_ENV]
    + [(DOCKER, DOCKER_ENV, var) for var in DOCKER_ENV]
    + [(VLLM, VLLM_ENV, var) for var in VLLM_ENV]
)


@pytest.mark.lab
@pytest.mark.parametrize("how", ["unset", "empty"])
@pytest.mark.parametrize(
    ("script", "env", "missing"), REQUIRED, ids=[f"{s.stem}-{v}" for s, _, v in REQUIRED]
)
def test_a_missing_required_variable_fails_fast(
    box: Sandbox, script: Path, env: dict[str, str], missing: str, how: str
) -> None:
    box.serve(RUNFILE_URL, RUNFILE)
    given = {k: v for k, v in env.items() if k != missing} | ({missing: ""} if how == "empty" else {})

    proc = box.run(script, {**given, "PHOENIX_TARGET": "lxc"})

    assert proc.returncode != 0
    assert f"{missing}: parameter null or not set" in proc.stderr  # bash's `${VAR:?}` names the variable
    assert box.calls() == []  # nothing downloaded, installed or configured


@pytest.mark.lab
@pytest.mark.parametrize(
    ("script", "env"), [(NVIDIA, NVIDIA_ENV), (DOCKER, DOCKER_ENV)], ids=["nvidia", "docker"]
)
def test_an_unknown_target_is_refused_before_anything_runs(
    box: Sandbox, script: Path, env: dict[str, str]
) -> None:
    box.serve(RUNFILE_URL, RUNFILE)

    proc = box.run(script, {**env, "PHOENIX_TARGET": "k8s"})

    assert proc.returncode == 2
    assert "PHOENIX_TARGET must be lxc, vm or ec2, not 'k8s'" in proc.stderr
    assert box.calls() == []


# ollama.sh and llamacpp.sh: the downloads need the network, so the sandbox proves the pins' refusals and
# the idempotent exit; the real tarball and build run only on a host with network.

OLLAMA, LLAMACPP = FEATURES / "ollama.sh", FEATURES / "llamacpp.sh"
OLLAMA_ENV = {"PHOENIX_OLLAMA_VERSION": PINS["PHOENIX_OLLAMA_VERSION"]}
OLLAMA_URL = (
    f"https://github.com/ollama/ollama/releases/download/v{OLLAMA_ENV['PHOENIX_OLLAMA_VERSION']}/"
    "ollama-linux-amd64.tgz"
)
LLAMACPP_ENV = {key: PINS[key] for key in ("PHOENIX_LLAMACPP_VERSION", "PHOENIX_CUDA_TOOLKIT_VERSION")}


@pytest.mark.lab
def test_ollama_refuses_a_tarball_whose_sha256_is_not_the_pinned_one(box: Sandbox) -> None:
    box.serve(OLLAMA_URL, b"TEST-ONLY: not ollama's release tarball\n")

    proc = box.run(OLLAMA, OLLAMA_ENV)

    assert proc.returncode != 0
    assert box.calls_to("curl")[0][-1] == OLLAMA_URL and box.calls_to("sha256sum")  # checked, then stopped
    assert not box.path("/usr/local/bin/ollama").exists() and not box.path("/usr/local/lib/ollama").exists()


@pytest.mark.lab
@pytest.mark.parametrize(
    ("script", "variable"), [(OLLAMA, "PHOENIX_OLLAMA_VERSION"), (LLAMACPP, "PHOENIX_LLAMACPP_VERSION")]
)
def test_a_version_without_a_pinned_digest_is_refused_before_any_download(
    box: Sandbox, script: Path, variable: str
) -> None:
    env = {**OLLAMA_ENV, **LLAMACPP_ENV, variable: "0.0.0-unpinned"}

    proc = box.run(script, env)

    assert proc.returncode == 2 and "0.0.0-unpinned" in proc.stderr
    assert box.calls() == []


@pytest.mark.lab
@pytest.mark.parametrize(
    ("script", "binary", "marker", "env"),
    [
        (OLLAMA, "/usr/local/bin/ollama", "/usr/local/lib/ollama/.phoenix-version", OLLAMA_ENV),
        (LLAMACPP, "/usr/local/bin/llama-server", "/usr/local/lib/llama.cpp.phoenix-version", LLAMACPP_ENV),
    ],
)
def test_an_installed_pinned_version_is_left_alone(
    box: Sandbox, script: Path, binary: str, marker: str, env: dict[str, str]
) -> None:
    version = next(v for k, v in env.items() if k != "PHOENIX_CUDA_TOOLKIT_VERSION")
    box.path(marker).parent.mkdir(parents=True, exist_ok=True)
    box.path(marker).write_text(version + "\n")
    box.path(binary).write_text("#!/bin/sh\n# TEST-ONLY: an installed binary\n")
    box.path(binary).chmod(0o755)

    proc = ok(box.run(script, env))

    assert f"{version} already installed" in proc.stdout
    assert box.calls() == []
