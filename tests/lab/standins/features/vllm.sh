#!/bin/bash
# TEST-ONLY stand-in for config/features/vllm.sh, run by the lab's template chain (tests/lab/e2e.py).
# Never ship it.
#
# Why a stand-in: vLLM needs the network (pip), a GPU and gigabytes; the lab has none of them. This makes
# /opt/vllm look like the real feature's venv to Phoenix: `/opt/vllm/bin/python -c 'import vllm'` works
# (a stub package with the pinned version), `/opt/vllm/bin/vllm serve MODEL ...` starts a small HTTP
# server speaking the two endpoints Phoenix's health check reads (GET /health, GET /v1/models listing the
# --served-model-name), and, because the lab's init is `sleep infinity` rather than systemd, stand-ins for
# `systemctl` and `journalctl` run the unit VllmService writes (ExecStart, Environment) in the background
# with a pid file and a log. Lab switch: `--lab-standin-hide-model` (in extra_args) makes /v1/models list
# nothing, a server that never becomes ready.
set -euo pipefail

: "${PHOENIX_VLLM_VERSION:?pinned by the chain (versions.vllm)}"
test -f /etc/phoenix/docker || {
    echo "vllm stand-in: /etc/phoenix/docker is missing: this layer is not a clone of the docker layer" >&2
    exit 1
}
for tool in systemctl journalctl; do
    if [ -e "/usr/bin/$tool" ] && ! grep -q 'PHOENIX-LAB-STANDIN' "/usr/bin/$tool"; then
        echo "vllm stand-in: a real /usr/bin/$tool exists; refusing to replace it" >&2
        exit 1
    fi
done

venv=/opt/vllm
pyver=$(python3 -c 'import sys; print("python%d.%d" % sys.version_info[:2])')
site="$venv/lib/$pyver/site-packages"
install -d -m 0755 "$venv/bin" "$site/vllm" /etc/systemd/system
# A venv without the venv module (not in minbase): pyvenv.cfg beside bin/ is what makes it one.
printf 'home = /usr/bin\ninclude-system-site-packages = false\n' >"$venv/pyvenv.cfg"
ln -sfn /usr/bin/python3 "$venv/bin/python"
printf '"""TEST-ONLY stub of the vllm package (Phoenix lab stand-in)."""\n__version__ = "%s"\n' \
    "$PHOENIX_VLLM_VERSION" >"$site/vllm/__init__.py"

cat >"$site/vllm/lab_standin_server.py" <<'PY'
"""TEST-ONLY stand-in for vLLM's OpenAI-compatible server (Phoenix lab): no model, no GPU.

Answers GET /health (200) and GET /v1/models (the --served-model-name, or the model); every other flag of
`vllm serve` is accepted and ignored. `--lab-standin-hide-model` lists no model: never ready.
"""

import argparse
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import vllm


def main(argv):
    if not argv or argv[0] != "serve":
        print("usage: vllm serve MODEL [options] (Phoenix lab stand-in)", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog="vllm serve")
    parser.add_argument("model")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name")
    parser.add_argument("--lab-standin-hide-model", action="store_true")
    args, ignored = parser.parse_known_args(argv[1:])
    served = args.served_model_name or args.model
    listed = [] if args.lab_standin_hide_model else [served]
    created = int(time.time())

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/health":
                self.answer(200, b"", "text/plain")
            elif self.path == "/v1/models":
                if args.lab_standin_hide_model:  # said every time: the log's last lines always tell why
                    print("WARNING:  /v1/models: not listing %r (--lab-standin-hide-model)" % served, flush=True)
                data = [
                    {"id": name, "object": "model", "created": created, "owned_by": "vllm", "root": args.model}
                    for name in listed
                ]
                self.answer(200, json.dumps({"object": "list", "data": data}).encode(), "application/json")
            else:
                self.answer(404, b'{"detail":"Not Found"}', "application/json")

        def answer(self, status, body, kind):
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *values):
            print("INFO:     %s - %s" % (self.address_string(), fmt % values), flush=True)

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(
        "INFO:     vLLM %s stand-in (Phoenix lab, TEST ONLY) serving %r as %r on http://%s:%d; ignored: %s"
        % (vllm.__version__, args.model, served, args.host, args.port, " ".join(ignored) or "-"),
        flush=True,
    )
    if args.lab_standin_hide_model:
        print("WARNING:  --lab-standin-hide-model: /v1/models lists no model; this server never gets ready",
              flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
PY

cat >"$venv/bin/vllm" <<'PY'
#!/opt/vllm/bin/python
# TEST-ONLY entry point of the Phoenix lab's vLLM stand-in (the real venv's bin/vllm runs vllm's CLI).
import sys

from vllm.lab_standin_server import main

sys.exit(main(sys.argv[1:]))
PY
chmod 0755 "$venv/bin/vllm"

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
printf 'vllm=%s\n' "$PHOENIX_VLLM_VERSION" >/etc/phoenix/vllm
