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
        )

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
