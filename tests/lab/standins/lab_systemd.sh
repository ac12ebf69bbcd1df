# TEST-ONLY: the lab's systemctl/journalctl stand-in, which the stand-ins of the model server features
# (vllm.sh, ollama.sh, llamacpp.sh in features/) install. tests/lab/e2e.py puts this file's text, without
# these leading comment lines, where a stand-in has the line `# @include lab_systemd.sh`. Never ship it.
#
# Why: the lab's containers run `sleep infinity` as init, not systemd. The stand-in runs a unit's
# ExecStart (systemd quoting undone) with its Environment= lines in the background, with a pid file and a
# log that `journalctl -u` reads; the lab's pct shim runs `systemctl lab-boot` after a container starts.
cat >/usr/bin/systemctl <<'PY'
#!/usr/bin/python3
"""PHOENIX-LAB-STANDIN: TEST-ONLY systemctl and journalctl for the lab's containers, whose init is
`sleep infinity`, not systemd. A unit is its ExecStart (systemd quoting, %% and $$ unescaped) with its
Environment= lines, run in its own session with output to a log; a pid file tracks it.

systemctl daemon-reload | enable [--now] U | disable [--now] U | start U | stop U | restart U
          | is-active U | lab-boot (start every enabled unit: what systemd does at boot; the lab's pct shim
          calls it after a start)
journalctl -u U [-n N] [--no-pager]
"""

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

UNIT_DIRS = (Path("/etc/systemd/system"), Path("/lib/systemd/system"))
STATE = Path("/var/lib/phoenix-lab-systemd")
STOP_TIMEOUT_S = 10.0


def log(unit, text):
    with open(STATE / (unit + ".log"), "a") as out:
        out.write("%s systemd[1]: %s\n" % (time.strftime("%b %d %H:%M:%S"), text))


def parse(unit):
    path = next((d / unit for d in UNIT_DIRS if (d / unit).is_file()), None)
    if path is None:
        raise SystemExit("Failed to start %s: Unit %s not found." % (unit, unit))
    argv, env = None, {}
    for line in path.read_text().splitlines():
        if line.lstrip().startswith(("#", ";", "[")):  # comments and section headers
            continue
        key, equals, value = line.strip().partition("=")
        words = [w.replace("%%", "%").replace("$$", "$") for w in shlex.split(value)] if equals else []
        if key == "ExecStart":
            argv = words
        elif key == "Environment":
            env.update(word.partition("=")[::2] for word in words)
    if not argv:
        raise SystemExit("%s has no ExecStart=" % unit)
    return argv, env


def running_pid(unit):
    try:
        pid = int((STATE / (unit + ".pid")).read_text())
        state = Path("/proc/%d/stat" % pid).read_text().rpartition(")")[2].split()[0]
    except (OSError, ValueError, IndexError):
        return None
    return None if state == "Z" else pid


def start(unit):
    if running_pid(unit):
        return 0
    argv, env = parse(unit)
    with open(STATE / (unit + ".log"), "ab") as out:
        proc = subprocess.Popen(
            argv, env={**os.environ, **env, "PYTHONUNBUFFERED": "1"}, cwd="/", stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    (STATE / (unit + ".pid")).write_text("%d\n" % proc.pid)
    log(unit, "Started %s (pid %d)." % (unit, proc.pid))
    return 0


def stop(unit):
    pid = running_pid(unit)
    if pid is None:
        return 0
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while running_pid(unit) and time.monotonic() < deadline:
        time.sleep(0.05)
    if running_pid(unit):
        os.killpg(pid, signal.SIGKILL)
    (STATE / (unit + ".pid")).unlink()
    log(unit, "Stopped %s." % unit)
    return 0


def systemctl(args):
    now = "--now" in args
    args = [a for a in args if a != "--now"]
    verb, units = (args[0] if args else ""), args[1:]
    enabled = STATE / "enabled"
    enabled.mkdir(parents=True, exist_ok=True)
    if verb == "daemon-reload":
        return 0
    if verb == "lab-boot":
        return max([start(p.name) for p in enabled.iterdir()] or [0])
    if verb == "is-active":
        states = ["active" if running_pid(u) else "inactive" for u in units]
        print("\n".join(states))
        return 0 if all(s == "active" for s in states) else 3
    actions = {
        "start": [start], "stop": [stop], "restart": [stop, start],
        "enable": [start] if now else [], "disable": [stop] if now else [],
    }
    if verb not in actions or not units:
        print("systemctl stand-in (Phoenix lab): unsupported: %s" % " ".join(args), file=sys.stderr)
        return 1
    for unit in units:
        if verb == "enable":
            (enabled / unit).touch()
        elif verb == "disable":
            (enabled / unit).unlink(missing_ok=True)
        for action in actions[verb]:
            action(unit)
    return 0


def journalctl(args):
    unit = args[args.index("-u") + 1] if "-u" in args else None
    lines = int(args[args.index("-n") + 1]) if "-n" in args else 10
    path = STATE / ("%s.log" % unit)
    if unit is None or not path.exists():
        print("-- No entries --")
        return 0
    print("\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
    return 0


if __name__ == "__main__":
    STATE.mkdir(parents=True, exist_ok=True)
    tool = os.path.basename(sys.argv[0])
    sys.exit(journalctl(sys.argv[1:]) if tool == "journalctl" else systemctl(sys.argv[1:]))
PY
chmod 0755 /usr/bin/systemctl
ln -sfn systemctl /usr/bin/journalctl
