"""A throwaway Debian root (a ZFS clone of the lab's seed) in which a feature script runs for real as root.

TEST-ONLY. What the lab cannot download or must not do (apt, curl, gpg, systemd, the NVIDIA tools, pip) is
a stub in the clone's /usr/local/bin, first on PATH. Every stub appends its argv to a log inside the clone,
one line per call, tab-separated, so a test asserts on what the script ran and in which order. Everything
else is the rootfs's own: bash, coreutils, sed, dpkg/dpkg-query, python3 and, above all, `sha256sum`
(the stub of that name only logs the call and execs the real one).

The script runs as `chroot <root> /usr/bin/env -i PATH=... K=V bash -s < script`: this machine's /etc is
never touched. /dev in the clone is a small tmpfs with the few nodes a script uses (FUSE mounts are
`nodev`); it is unmounted and the clone destroyed on exit, even when the test fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tests.lab.common import mounts_under, run

if TYPE_CHECKING:  # fixtures are wired by name; a runtime import would tie plugin registration order
    from tests.lab.zfs import LabZpool

PATH = "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LOG = "/var/log/phoenix-stubs.log"
URLS = "/etc/phoenix-stubs/urls"
"""`URL<TAB>file` lines: what the curl stub serves; any other URL fails like a 404 (curl -f, exit 22)."""
RUN_TIMEOUT_S = 60
DEV_NODES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9)}

_PRELUDE = f"""#!/bin/bash
# TEST-ONLY stub (tests/lab/script_sandbox.py): records its argv, one tab-separated line per call.
set -euo pipefail
log() {{ local IFS=$'\\t'; printf '%s\\n' "$*" >>{LOG}; }}
"""

STUBS: dict[str, str] = {
    # Installing marks the packages installed in dpkg's real database, so the real dpkg-query sees them.
    "apt-get": """log apt-get "$@"
cmd=""
pkgs=()
for arg in "$@"; do
    case "$arg" in
        -*) ;;
        *) if [[ -z "$cmd" ]]; then cmd="$arg"; else pkgs+=("$arg"); fi ;;
    esac
done
if [[ "$cmd" == install ]]; then
    for pkg in "${pkgs[@]}"; do
        name="${pkg%%=*}"
        version=1.0-stub
        [[ "$pkg" == *=* ]] && version="${pkg#*=}"
        printf '\\nPackage: %s\\nStatus: install ok installed\\nPriority: optional\\nSection: misc\\n' \\
            "$name" >>/var/lib/dpkg/status
        printf 'Maintainer: stub <stub@invalid>\\nArchitecture: all\\nVersion: %s\\n' "$version" \\
            >>/var/lib/dpkg/status
        printf 'Description: TEST-ONLY stub package\\n' >>/var/lib/dpkg/status
    done
fi
""",
    "apt-mark": 'log apt-mark "$@"\n',
    "systemctl": 'log systemctl "$@"\n',
    "nvidia-ctk": 'log nvidia-ctk "$@"\n',
    "curl": f"""log curl "$@"
out=""
url=""
while (($#)); do
    case "$1" in
        -o) out="$2"; shift ;;
        --retry | --connect-timeout | --max-time) shift ;;
        -*) ;;
        *) url="$1" ;;
    esac
    shift
done
body="$(awk -F '\\t' -v u="$url" '$1 == u {{ print $2; exit }}' {URLS} 2>/dev/null || true)"
if [[ -z "$body" ]]; then
    echo "curl: (22) The requested URL returned error: 404 ($url)" >&2
    exit 22
fi
if [[ -n "$out" ]]; then cat "$body" >"$out"; else cat "$body"; fi
""",
    "gpg": """log gpg "$@"
out=/dev/stdout
dearmor=""
while (($#)); do
    case "$1" in
        -o | --output) out="$2"; shift ;;
        --dearmor) dearmor=1 ;;
    esac
    shift
done
[[ -n "$dearmor" ]] || { echo "gpg stub: only --dearmor is faked" >&2; exit 2; }
cat >"$out"
""",
    # The real one does the checking; the stub only puts the call in the log, in order with the others.
    "sha256sum": 'log sha256sum "$@"\nexec /usr/bin/sha256sum "$@"\n',
    # Debian's python3 without python3-venv has no ensurepip: make the venv for real without pip and put
    # a pip stub in it. Every other use of python3 is the real interpreter.
    "python3": """if [[ "${1:-}" == -m && "${2:-}" == venv ]]; then
    log python3 "$@"
    dir="${*: -1}"
    /usr/bin/python3 -m venv --without-pip "$dir"
    cp /usr/local/lib/phoenix-stubs/pip "$dir/bin/pip"
    chmod 0755 "$dir/bin/pip"
    exit 0
fi
exec /usr/bin/python3 "$@"
""",
}

# Lives in the venv's bin/: `pip install vllm==X` leaves vllm's metadata, so importlib sees version X.
PIP_STUB = """log pip "$@"
here="$(cd "$(dirname "$0")" && pwd)"
site="$("$here/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
for arg in "$@"; do
    if [[ "$arg" == vllm==* ]]; then
        version="${arg#vllm==}"
        rm -rf "$site"/vllm-*.dist-info
        mkdir -p "$site/vllm-$version.dist-info"
        printf 'Metadata-Version: 2.1\\nName: vllm\\nVersion: %s\\n' "$version" \\
            >"$site/vllm-$version.dist-info/METADATA"
    fi
done
"""


def nvidia_smi_stub(driver_version: str) -> str:
    """`nvidia-smi --version` as the real one prints it, for an installed driver of driver_version."""
    return (
        'log nvidia-smi "$@"\n'
        "cat <<'EOF'\n"
        f"NVIDIA-SMI version  : {driver_version}\n"
        f"NVML version        : {driver_version.rsplit('.', 1)[0]}\n"
        f"DRIVER version      : {driver_version}\n"
        "CUDA Version        : 13.0\n"
        "EOF\n"
    )


def fake_runfile(version: str) -> bytes:
    """A stand-in for NVIDIA's .run (run by `sh`): records its args, leaves the userspace library behind."""
    return (
        "#!/bin/sh\n"
        f"# TEST-ONLY fake NVIDIA-Linux-x86_64-{version}.run\n"
        f'{{ printf "runfile"; for a in "$@"; do printf "\\t%s" "$a"; done; echo; }} >>{LOG}\n'
        "mkdir -p /usr/lib/x86_64-linux-gnu\n"
        f": >/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.{version}\n"
    ).encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Sandbox:
    """One clone of the seed rootfs, mounted at root, with the stubs installed."""

    dataset: str
    root: Path

    def path(self, inside: str) -> Path:
        """A path inside the sandbox, as seen from this machine."""
        return self.root / inside.lstrip("/")

    def run(
        self, script: Path, env: Mapping[str, str], *, timeout: float = RUN_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        """Run script as root inside the sandbox with exactly env (plus PATH); never raises on exit status."""
        argv = ["chroot", str(self.root), "/usr/bin/env", "-i", f"PATH={PATH}"]
        argv += [f"{key}={value}" for key, value in env.items()]
        argv += ["bash", "-s"]
        return subprocess.run(
            argv, input=script.read_text(), capture_output=True, text=True, timeout=timeout, check=False
        )

    def calls(self) -> list[list[str]]:
        """Every stub call so far, in order: [command, arg, ...]."""
        log = self.path(LOG)
        return [line.split("\t") for line in log.read_text().splitlines()] if log.exists() else []

    def calls_to(self, command: str) -> list[list[str]]:
        """Argument lists of the calls to command."""
        return [call[1:] for call in self.calls() if call[0] == command]

    def clear_log(self) -> None:
        self.path(LOG).unlink(missing_ok=True)

    def add_stub(self, name: str, body: str) -> None:
        _write_executable(self.path(f"/usr/local/bin/{name}"), _PRELUDE + body)

    def serve(self, url: str, body: bytes) -> None:
        """Make the curl stub answer url with body."""
        stored = self.path(f"/var/lib/phoenix-stubs/{sha256(url.encode())}")
        stored.parent.mkdir(parents=True, exist_ok=True)
        stored.write_bytes(body)
        with self.path(URLS).open("a") as urls:
            urls.write(f"{url}\t/{stored.relative_to(self.root)}\n")


def _write_executable(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


def _mount_dev(root: Path) -> None:
    dev = root / "dev"
    run(["mount", "-t", "tmpfs", "-o", "mode=0755,size=1m,nosuid,noexec", "phoenix-sandbox-dev", str(dev)])
    for name, (major, minor) in DEV_NODES.items():
        run(["mknod", "-m", "0666", str(dev / name), "c", str(major), str(minor)])
    (dev / "fd").symlink_to("/proc/self/fd")


@contextlib.contextmanager
def sandbox(zpool: LabZpool, seed: str) -> Iterator[Sandbox]:
    """A fresh clone of seed (O(1)) with /dev and the stubs; unmounted and destroyed on exit."""
    dataset = f"{seed.partition('@')[0].rpartition('/')[0]}/features-{uuid.uuid4().hex[:10]}"
    zpool.zfs("clone", seed, dataset)
    root = zpool.mountpoint(dataset)
    try:
        _mount_dev(root)
        for name, body in STUBS.items():
            _write_executable(root / "usr/local/bin" / name, _PRELUDE + body)
        _write_executable(root / "usr/local/lib/phoenix-stubs/pip", _PRELUDE + PIP_STUB)
        (root / URLS.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        yield Sandbox(dataset=dataset, root=root)
    finally:
        try:
            for mount in reversed(mounts_under(root)):
                if mount != str(root.resolve()) and run(["umount", mount], check=False).returncode != 0:
                    run(["umount", "-l", mount], check=False)  # still busy: detach it, the clone must go
        finally:
            zpool.zfs("destroy", "-R", dataset, check=False)
