"""TEST-ONLY stand-in for an NVIDIA driver on the lab host (the lab has no GPU). Never product code.

:class:`FakeNvidia` owns one directory (a test's ``tmp_path``) that plays the host's driver state:

- ``www/NVIDIA-Linux-x86_64-<ver>.run``: fake runfiles (small shell scripts) served by a real HTTP server on
  127.0.0.1, so the provider's download (curl) and ``sha256sum -c`` run for real;
- run with ``--dkms --silent --no-questions --ui=none``, a fake runfile "installs" ``host/bin/nvidia-smi``
  (prints its version once per GPU and the 2-GPU inventory of tests/fixtures/nvidia/2gpu) and
  ``host/bin/nvidia-uninstall``, and the kernel's view: ``host/proc/devices`` and ``host/proc/gpus``;
- every run of a runfile or of the uninstaller appends a line to ``host/runs.log``: tests count installs.

The provider reaches these through :class:`providers.nvidia_driver.NvidiaHostPaths` (plain data whose
defaults are a real host's), so no PATH entry and nothing outside the test's directory is touched.

Host preparation (issue 16), after :meth:`FakeNvidia.fresh_host`: TEST-ONLY stand-ins in ``host/bin`` for
``uname`` (``host/kernel``), ``dpkg-query``/``apt-cache``/``apt-get`` (``host/dpkg/installed`` and
``host/dpkg/archive``, one package a line), ``mokutil`` (``host/sb-state``), ``dkms status``, ``systemctl``
(``is-enabled``, ``daemon-reload``, ``enable --now``: it runs the unit's ExecStart lines; ``reboot``: see
:meth:`FakeNvidia.reboot`), ``update-initramfs``, ``nvidia-modprobe`` (device nodes as plain files under
``host/dev``), ``nvidia-persistenced`` and ``proxmox-boot-tool``; nouveau is the directory
``host/sys/module/nouveau``. The fake runfile then refuses to install, as the real one does, without dkms
and the running kernel's headers, or while nouveau is loaded.
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from providers.nvidia_driver import INSTALL_ARGS, NvidiaHostPaths, runfile_name

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "nvidia"
HOST_FIXTURE = FIXTURES / "2gpu"

RUNFILE = """\
#!/bin/sh
# TEST-ONLY stand-in for NVIDIA's {name} (tests/lab/fake_nvidia.py). Never ship it.
set -eu
prefix={prefix}
fixtures={fixtures}
echo "run {version} $*" >> "$prefix/runs.log"
case " $* " in
    *" --uninstall "*) exec sh "$prefix/bin/nvidia-uninstall" --silent ;;
esac
if [ "$*" != {expected} ]; then
    echo "fake runfile: unexpected arguments: $*" >&2
    exit 2
fi
if [ -e "$prefix/prepared-host" ]; then
    kernel=$(cat "$prefix/kernel")
    if [ -d "$prefix/sys/module/nouveau" ]; then
        echo "ERROR: The Nouveau kernel driver is currently in use by your system." >&2; exit 1
    fi
    grep -qx dkms "$prefix/dpkg/installed" || {{ echo "ERROR: dkms is not installed" >&2; exit 1; }}
    grep -qx "proxmox-headers-$kernel" "$prefix/dpkg/installed" || {{
        echo "ERROR: Unable to find the kernel source tree for the currently running kernel." >&2; exit 1; }}
    echo "$kernel" > "$prefix/dkms-built-for"
fi
mkdir -p "$prefix/bin" "$prefix/proc"
rm -rf "$prefix/proc/gpus"
cp -r "$fixtures/gpus" "$prefix/proc/gpus"
cp "$fixtures/devices" "$prefix/proc/devices"
echo {version} > "$prefix/version"
cat > "$prefix/bin/nvidia-smi" <<'EOF'
{smi}
EOF
cat > "$prefix/bin/nvidia-uninstall" <<'EOF'
{uninstall}
EOF
chmod 0755 "$prefix/bin/nvidia-smi" "$prefix/bin/nvidia-uninstall"
"""

NVIDIA_SMI = """\
#!/bin/sh
# TEST-ONLY fake nvidia-smi (tests/lab/fake_nvidia.py): the two queries Phoenix makes, nothing else.
prefix={prefix}
fixtures={fixtures}
if [ -e "$prefix/broken" ]; then cat "$prefix/broken"; exit 18; fi
case "$*" in
    "--query-gpu=driver_version --format=csv,noheader")
        while read -r _line; do cat "$prefix/version"; done < "$fixtures/query-gpu.csv" ;;
    "--query-gpu=index,uuid,name,memory.total,pci.bus_id --format=csv,noheader,nounits")
        cat "$fixtures/query-gpu.csv" ;;
    *) echo "fake nvidia-smi: unsupported arguments: $*" >&2; exit 2 ;;
esac"""

NVIDIA_UNINSTALL = """\
#!/bin/sh
# TEST-ONLY fake nvidia-uninstall (tests/lab/fake_nvidia.py).
prefix={prefix}
echo "uninstall $*" >> "$prefix/runs.log"
rm -rf "$prefix/bin/nvidia-smi" "$prefix/version" "$prefix/proc" "$prefix/bin/nvidia-uninstall"
"""


# TEST-ONLY stand-ins for the host tools the preparation uses; "prefix" is set on the line after the shebang.
STANDINS: dict[str, str] = {
    "uname": """[ "$1" = -r ] && cat "$prefix/kernel" """,
    "dpkg-query": """
for pkg; do :; done  # the last argument
grep -qx "$pkg" "$prefix/dpkg/installed" 2>/dev/null || {
    echo "dpkg-query: no packages found matching $pkg" >&2; exit 1; }
echo "$pkg ii "
""",
    "apt-cache": """for pkg; do :; done; grep -qx "$pkg" "$prefix/dpkg/archive" """,
    "apt-get": """
echo "apt-get $*" >> "$prefix/runs.log"
[ "$1" = install ] || exit 2
shift
for pkg in "$@"; do
    case "$pkg" in -*) continue ;; esac
    grep -qx "$pkg" "$prefix/dpkg/archive" || { echo "E: Unable to locate package $pkg" >&2; exit 100; }
    echo "$pkg" >> "$prefix/dpkg/installed"
done
""",
    "mokutil": """[ "$1" = --sb-state ] && cat "$prefix/sb-state" """,
    "dkms": """
[ "$1 $2" = "status nvidia" ] || exit 2
[ -r "$prefix/dkms-built-for" ] && [ -r "$prefix/version" ] || exit 0
echo "nvidia/$(cat "$prefix/version"), $(cat "$prefix/dkms-built-for"), x86_64: installed"
""",
    "update-initramfs": """echo "update-initramfs $*" >> "$prefix/runs.log" """,
    "nvidia-modprobe": """
echo "nvidia-modprobe $*" >> "$prefix/runs.log"
mkdir -p "$prefix/dev"
for arg in "$@"; do
    case "$arg" in
        -u) : > "$prefix/dev/nvidia-uvm"; : > "$prefix/dev/nvidia-uvm-tools" ;;
        -c=*) : > "$prefix/dev/nvidia${arg#-c=}"; : > "$prefix/dev/nvidiactl" ;;
    esac
done
""",
    "nvidia-persistenced": """echo "nvidia-persistenced $*" >> "$prefix/runs.log" """,
    "proxmox-boot-tool": """
case "$1 $2" in
    "kernel pin") echo "$3" > "$prefix/pinned"; echo "proxmox-boot-tool $*" >> "$prefix/runs.log" ;;
    "kernel list")
        printf 'Manually selected kernels:\nNone.\n\nAutomatically selected kernels:\n%s\n' \
            "$(cat "$prefix/kernel")"
        [ -r "$prefix/pinned" ] && printf '\nPinned kernel:\n%s\n' "$(cat "$prefix/pinned")" ;;
    *) exit 2 ;;
esac
""",
    # systemctl: units are files in host/etc/systemd/system; "enabled" is a marker in host/systemd.
    # Starting a unit runs its ExecStart lines (Phoenix's renderer quotes each word in double quotes).
    "systemctl": """
start() {
    sed -n 's/^ExecStart=//p' "$prefix/etc/systemd/system/$1" | while read -r line; do eval "$line"; done
}
boot() {
    rm -rf "$prefix/dev"; mkdir -p "$prefix/dev"
    if grep -qx 'blacklist nouveau' "$prefix/etc/modprobe.d/blacklist-nouveau.conf" 2>/dev/null; then
        rm -rf "$prefix/sys/module/nouveau"
    fi
    cat /proc/sys/kernel/random/uuid > "$prefix/boot_id"
    for marker in "$prefix"/systemd/*.enabled; do
        [ -e "$marker" ] && start "$(basename "$marker" .enabled)"
    done
    return 0
}
case "$1" in
    is-enabled) if [ -e "$prefix/systemd/$2.enabled" ]; then echo enabled; else echo disabled; exit 1; fi ;;
    daemon-reload) echo "systemctl daemon-reload" >> "$prefix/runs.log" ;;
    enable)
        [ "$2" = --now ] || exit 2
        shift 2
        echo "systemctl enable --now $*" >> "$prefix/runs.log"
        for unit in "$@"; do : > "$prefix/systemd/$unit.enabled"; start "$unit"; done ;;
    reboot) echo "systemctl reboot" >> "$prefix/runs.log"; boot ;;
    boot) boot ;;
    *) exit 2 ;;
esac
""",
}


class _Handler(SimpleHTTPRequestHandler):
    def __init__(self, *args: Any, requests: list[str], **kwargs: Any) -> None:
        self._requests = requests
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        self._requests.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        return None  # pytest output stays readable; requests are recorded instead


class FakeNvidia:
    """The fake driver world of one test. Use :meth:`running` (it starts and stops the HTTP server)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.www = root / "www"
        self.prefix = root / "host"
        self.www.mkdir(parents=True, exist_ok=True)
        self.prefix.mkdir(parents=True, exist_ok=True)
        self.requests: list[str] = []
        """Paths the HTTP server was asked for (downloads)."""
        handler = partial(_Handler, requests=self.requests, directory=str(self.www))
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @classmethod
    @contextmanager
    def running(cls, root: Path) -> Iterator[FakeNvidia]:
        fake = cls(root)
        fake._thread.start()
        try:
            yield fake
        finally:
            fake._server.shutdown()
            fake._server.server_close()
            fake._thread.join(timeout=5)

    @property
    def paths(self) -> NvidiaHostPaths:
        return NvidiaHostPaths(
            nvidia_smi=str(self.prefix / "bin" / "nvidia-smi"),
            nvidia_uninstall=str(self.prefix / "bin" / "nvidia-uninstall"),
            proc_devices=str(self.prefix / "proc" / "devices"),
            proc_gpus=str(self.prefix / "proc" / "gpus"),
            cache_dir=str(self.prefix / "cache"),
            installer_log=str(self.prefix / "nvidia-installer.log"),
            **{
                field: str(self.prefix / "bin" / tool)
                for field, tool in (
                    ("uname", "uname"),
                    ("dpkg_query", "dpkg-query"),
                    ("apt_get", "apt-get"),
                    ("apt_cache", "apt-cache"),
                    ("mokutil", "mokutil"),
                    ("update_initramfs", "update-initramfs"),
                    ("systemctl", "systemctl"),
                    ("nvidia_modprobe", "nvidia-modprobe"),
                    ("nvidia_persistenced", "nvidia-persistenced"),
                    ("dkms", "dkms"),
                    ("proxmox_boot_tool", "proxmox-boot-tool"),
                )
            },
            efivars=str(self.prefix / "efivars"),
            sys_module=str(self.prefix / "sys" / "module"),
            modprobe_d=str(self.prefix / "etc" / "modprobe.d"),
            unit_dir=str(self.prefix / "etc" / "systemd" / "system"),
            dev=str(self.prefix / "dev"),
            boot_id=str(self.prefix / "boot_id"),
            pci_devices=str(self.prefix / "sys" / "bus" / "pci" / "devices"),
            iommu_groups=str(self.prefix / "sys" / "kernel" / "iommu_groups"),
        )

    # -- host preparation (issue 16) ------------------------------------------------------------------

    KERNEL = "6.8.12-4-pve"
    ARCHIVE = (
        f"proxmox-headers-{KERNEL}",
        "proxmox-default-headers",
        "dkms",
        "build-essential",
        "pkg-config",
    )

    def fresh_host(self, *, secure_boot: bool = False, nouveau: bool = False) -> None:
        """A fresh PVE install: running :data:`KERNEL`, none of the prerequisites installed (the archive
        has them), Secure Boot as given, nouveau loaded or not, no device nodes."""
        for folder in (
            "bin",
            "dpkg",
            "systemd",
            "etc/modprobe.d",
            "etc/systemd/system",
            "sys/module",
            "efivars",
        ):
            (self.prefix / folder).mkdir(parents=True, exist_ok=True)
        (self.prefix / "prepared-host").touch()
        (self.prefix / "kernel").write_text(self.KERNEL + "\n")
        (self.prefix / "boot_id").write_text("00000000-0000-4000-8000-000000000001\n")
        (self.prefix / "dpkg" / "archive").write_text("".join(f"{p}\n" for p in self.ARCHIVE))
        (self.prefix / "dpkg" / "installed").write_text("")
        (self.prefix / "sb-state").write_text(f"SecureBoot {'enabled' if secure_boot else 'disabled'}\n")
        if nouveau:
            (self.prefix / "sys" / "module" / "nouveau").mkdir()
        prefix = shlex.quote(str(self.prefix))
        for tool, body in STANDINS.items():
            path = self.prefix / "bin" / tool
            path.write_text(
                f"#!/bin/sh\n# TEST-ONLY stand-in for {tool} (tests/lab/fake_nvidia.py). Never ship it.\n"
                f"prefix={prefix}\n{body.strip()}\n"
            )
            path.chmod(0o755)

    def pci_group(self, group: int, members: list[str], driver: str = "vfio-pci") -> None:
        """An IOMMU group as sysfs shows it: ``iommu_groups/<n>/devices/<addr>``, and each device's
        ``iommu_group`` and ``driver`` links (real sysfs links them the same way, relative or not)."""
        sys = self.prefix / "sys"
        devices = sys / "kernel" / "iommu_groups" / str(group) / "devices"
        devices.mkdir(parents=True, exist_ok=True)
        (sys / "bus" / "pci" / "drivers" / driver).mkdir(parents=True, exist_ok=True)
        for address in members:
            device = sys / "bus" / "pci" / "devices" / address
            device.mkdir(parents=True, exist_ok=True)
            (devices / address).symlink_to(device)
            (device / "iommu_group").symlink_to(devices.parent)
            (device / "driver").symlink_to(sys / "bus" / "pci" / "drivers" / driver)

    def installed_packages(self) -> list[str]:
        path = self.prefix / "dpkg" / "installed"
        return path.read_text().split() if path.exists() else []

    def device_nodes(self) -> list[str]:
        dev = self.prefix / "dev"
        return sorted(p.name for p in dev.iterdir()) if dev.exists() else []

    def remove_device_nodes(self) -> None:
        """Nodes gone, as after a reboot before anything opened the GPU."""
        shutil.rmtree(self.prefix / "dev", ignore_errors=True)

    def reboot(self) -> None:
        """A simulated reboot: device nodes gone, a new boot id, nouveau gone if blacklisted, then the
        enabled units run (what systemd does at boot)."""
        subprocess.run([str(self.prefix / "bin" / "systemctl"), "boot"], check=True)

    def unit(self, name: str) -> str:
        return (self.prefix / "etc" / "systemd" / "system" / name).read_text()

    def blacklist(self) -> str | None:
        path = self.prefix / "etc" / "modprobe.d" / "blacklist-nouveau.conf"
        return path.read_text() if path.exists() else None

    def nouveau_loaded(self) -> bool:
        return (self.prefix / "sys" / "module" / "nouveau").exists()

    def runfile(self, version: str) -> tuple[str, str]:
        """Serve a fake runfile for ``version``; returns ``(url, sha256)``."""
        name = runfile_name(version)
        q = shlex.quote
        values = {"prefix": q(str(self.prefix)), "fixtures": q(str(HOST_FIXTURE))}
        text = RUNFILE.format(
            name=name,
            version=q(version),
            expected=q(" ".join(INSTALL_ARGS)),
            smi=NVIDIA_SMI.format(**values),
            uninstall=NVIDIA_UNINSTALL.format(**values),
            **values,
        )
        path = self.www / name
        path.write_text(text)
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}/{name}", hashlib.sha256(text.encode()).hexdigest()

    def preinstall(self, version: str) -> None:
        """Put ``version`` in place as if installed before Phoenix ran; the run is not counted."""
        self.runfile(version)
        subprocess.run(["sh", str(self.www / runfile_name(version)), *INSTALL_ARGS], check=True)
        (self.prefix / "runs.log").unlink()

    def runs(self) -> list[str]:
        log = self.prefix / "runs.log"
        return log.read_text().splitlines() if log.exists() else []

    def installs(self) -> list[str]:
        """Runfile runs that installed (``run <version> --dkms ...``)."""
        return [line for line in self.runs() if line.startswith("run ") and "--uninstall" not in line]

    def uninstalls(self) -> list[str]:
        return [line for line in self.runs() if line.startswith("uninstall")]

    def installed_version(self) -> str | None:
        version = self.prefix / "version"
        return version.read_text().strip() if version.exists() else None

    def change_version_out_of_band(self, version: str) -> None:
        """Someone upgraded the driver by hand."""
        (self.prefix / "version").write_text(version + "\n")

    def remove_out_of_band(self) -> None:
        """Someone removed the driver by hand."""
        shutil.rmtree(self.prefix / "bin")
        shutil.rmtree(self.prefix / "proc")

    def break_driver(self, message: str) -> None:
        """nvidia-smi fails from now on with ``message`` (e.g. a module/userspace mismatch)."""
        (self.prefix / "broken").write_text(message)

    def cache_files(self) -> list[str]:
        cache = self.prefix / "cache"
        return sorted(p.name for p in cache.iterdir()) if cache.exists() else []
