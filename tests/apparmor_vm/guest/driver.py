"""The AppArmor VM's session driver: runs INSIDE the VM as its init's only job (stdlib only).

It loads each profile with ``apparmor_parser -r -W`` (as the AppArmorProfile provider does on a PVE host),
runs probe.py once unconfined (the control: every probe can succeed) and once under each profile via
``aa-exec -p``, then starts the unprivileged LXC container of the nesting test. Everything it learns goes
to the results port as JSON lines: {"event": ...} for its own steps, the probes' lines tagged with the
profile they ran under.

    python3 driver.py /lab/plan.json /dev/ttyS1
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import termios
import time
import tty

LAB = "/lab"
OUT_DIR = "/run/phoenix-ct-out"
BYSTANDER = """\
profile phoenix-lab-bystander flags=(attach_disconnected) {
  file,
  capability,
  mount,
  umount,
  network,
  signal,
  ptrace,
  unix,
  change_profile,
}
"""
OTHER_NAMESPACE = "phoenix-lab-other"


class Results:
    def __init__(self, port: str) -> None:
        self.f = open(port, "w")  # noqa: SIM115 - lives as long as the driver
        if self.f.isatty():
            tty.setraw(self.f.fileno(), termios.TCSANOW)  # no \n -> \r\n, no echo
        self.t0 = time.monotonic()

    def put(self, line: dict) -> None:
        line.setdefault("t", round(time.monotonic() - self.t0, 3))
        self.f.write(json.dumps(line) + "\n")
        self.f.flush()

    def event(self, name: str, **extra: object) -> None:
        self.put({"event": name, **extra})


def run(argv: list[str], timeout: float, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kw)  # type: ignore[call-overload]


def relay(results: Results, proc: subprocess.CompletedProcess[str], **tags: object) -> None:
    """Each JSON line a probe printed, tagged; anything else it printed as one "noise" event."""
    other = []
    for raw in proc.stdout.splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            other.append(raw)
            continue
        results.put({**line, **tags})
    if other or proc.returncode != 0:
        results.event(
            "probe_exit", rc=proc.returncode, stdout=other[-20:], stderr=proc.stderr[-2000:], **tags
        )


def make_nodes(nodes: list[dict]) -> None:
    for node in nodes:
        path = node["path"]
        if os.path.exists(path):
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        kind = stat.S_IFBLK if node["type"] == "b" else stat.S_IFCHR
        os.mknod(path, kind | 0o666, os.makedev(node["major"], node["minor"]))
        os.chmod(path, 0o666)  # mknod honours the umask; container root is "other" to these nodes


def load(results: Results, name: str, path: str) -> bool:
    started = time.monotonic()
    proc = run(["apparmor_parser", "-r", "-W", path], 120)
    results.event(
        "load",
        profile=name,
        rc=proc.returncode,
        stderr=proc.stderr[-2000:],
        seconds=round(time.monotonic() - started, 3),
    )
    return proc.returncode == 0


def probes(results: Results, spec: dict, profile: str | None) -> None:
    argv = ["python3", f"{LAB}/probe.py", profile or "unconfined", json.dumps(spec)]
    if profile is not None:
        argv = ["aa-exec", "-p", profile, "--", *argv]
    relay(results, run(argv, 300), profile=profile or "unconfined", context="vm-root")


def nesting(results: Results, plan: dict, spec: dict) -> None:
    """The unprivileged LXC container under the chosen profile: probes inside it, then Docker."""
    nest = plan["nesting"]
    name = plan["container"]
    os.makedirs(OUT_DIR, exist_ok=True)
    os.chown(OUT_DIR, 100000, 100000)
    lines = [
        f"lxc.uts.name = {name}",
        f"lxc.rootfs.path = dir:/var/lib/lxc/{name}/rootfs",
        "lxc.include = /usr/share/lxc/config/common.conf",
        "lxc.include = /usr/share/lxc/config/userns.conf",
        "lxc.idmap = u 0 100000 65536",
        "lxc.idmap = g 0 100000 65536",
        "lxc.net.0.type = empty",
        f"lxc.apparmor.profile = {nest['profile']}",
        "lxc.init.cmd = /bin/sh /lab/ct-init.sh",
        f"lxc.mount.entry = {LAB} lab none bind,ro,create=dir 0 0",
        f"lxc.mount.entry = {OUT_DIR} out none bind,create=dir 0 0",
        "lxc.console.path = none",
        # userns.conf clears common.conf's device list; put back what PVE allows every container (null,
        # zero, full, tty, random, urandom, ptys, ptmx, fuse), then the GPU nodes this guest is given.
        "lxc.cgroup2.devices.deny = a",
        *(
            f"lxc.cgroup2.devices.allow = {rule}"
            for rule in (
                "c 1:3 rwm",
                "c 1:5 rwm",
                "c 1:7 rwm",
                "c 5:0 rwm",
                "c 5:1 rwm",
                "c 5:2 rwm",
                "c 1:8 rwm",
                "c 1:9 rwm",
                "c 136:* rwm",
                "c 10:229 rwm",
            )
        ),
    ]
    for node in nest["devices"]:
        lines.append(f"lxc.cgroup2.devices.allow = c {node['major']}:{node['minor']} rwm")
        rel = node["path"].lstrip("/")
        lines.append(f"lxc.mount.entry = {node['path']} {rel} none bind,optional,create=file 0 0")
    lines.extend(nest.get("raw", []))
    with open(f"/var/lib/lxc/{name}/config", "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(f"{OUT_DIR}/spec.json", "w") as f:
        json.dump({**spec, "docker": nest["docker"], "profile": nest["profile"]}, f)
    results.event("container_start", profile=nest["profile"])
    started = time.monotonic()
    proc = run(
        ["lxc-start", "-n", name, "-F", "-l", "DEBUG", "-o", f"{OUT_DIR}/lxc.log"],
        nest["timeout_s"],
        stdin=subprocess.DEVNULL,
    )
    seconds = round(time.monotonic() - started, 3)
    with open(f"{OUT_DIR}/lxc.log") as f:
        log_tail = [line for line in f.read().splitlines() if " ERROR " in line][-20:]
    results.event(
        "container_exit", rc=proc.returncode, seconds=seconds, stderr=proc.stderr[-2000:], lxc_errors=log_tail
    )
    try:
        with open(f"{OUT_DIR}/ct.jsonl") as f:
            ct_out = f.read()
    except FileNotFoundError:
        ct_out = ""
    relay(
        results,
        subprocess.CompletedProcess([], 0, ct_out, ""),
        profile=nest["profile"],
        context="container",
    )
    denials = run(["dmesg"], 30).stdout.splitlines()
    results.event("dmesg_denials", lines=[d for d in denials if 'apparmor="DENIED"' in d][-60:])


def main() -> None:
    plan_path, port = sys.argv[1], sys.argv[2]
    results = Results(port)
    with open("/proc/uptime") as f:
        results.event("boot", uptime=float(f.read().split()[0]))
    with open("/sys/module/apparmor/parameters/enabled") as f:
        enabled = f.read().strip()
    results.event("apparmor", enabled=enabled, kernel=os.uname().release)
    with open(plan_path) as f:
        plan = json.load(f)
    spec = plan["probe"]
    make_nodes(plan["nodes"])
    with open("/tmp/phoenix-lab-bystander", "w") as f:
        f.write(BYSTANDER)
    os.makedirs(f"/sys/kernel/security/apparmor/policy/namespaces/{OTHER_NAMESPACE}", exist_ok=True)
    for profile in plan["profiles"]:
        load(results, profile["name"], profile["path"])
    load(results, "phoenix-lab-bystander", "/tmp/phoenix-lab-bystander")
    probes(results, spec, None)
    for profile in plan["profiles"]:
        # The bystander is reloaded each time: a profile that can write .remove would have deleted it.
        load(results, "phoenix-lab-bystander", "/tmp/phoenix-lab-bystander")
        probes(results, spec, profile["name"])
    if plan.get("nesting"):
        nesting(results, plan, spec)
    results.event("done")


if __name__ == "__main__":
    try:
        main()
    except BaseException as exc:  # the host must see why, not just a silent power-off
        with open(sys.argv[2], "w") as port:
            port.write(json.dumps({"event": "driver_error", "error": repr(exc)}) + "\n")
        raise
