#!/bin/bash
# TEST-ONLY stand-in for config/features/docker.sh, run by the lab's template chain (tests/lab/e2e.py).
# Never ship it.
#
# Why a stand-in: Debian's docker.io would need the network to install (the lab's containers have none),
# and Debian bookworm has no Compose v2 (`docker compose ... up --wait`) at all; the lab's containers
# share the host's network namespace, so a daemon there would change the machine's networking (what was
# tried: tests/cli/test_lab_compose.py's docstring). This writes the NVIDIA container toolkit config the
# real script writes (no-cgroups, as LXC needs) and a `docker` CLI whose `info` lists the nvidia runtime
# only while that config is present, which is what the docker layer's smoke test asks, and whose
# `compose` is a stand-in of exactly the subset Phoenix's ComposeStack calls (up -d --wait, ps --all
# --format json, down): a process per service, its state in /var/lib/phoenix-lab-compose/<project>/.
# The e2e test edits REVISION to change this layer's script (a new key: docker and vllm are rebuilt).
set -euo pipefail

REVISION=1

: "${PHOENIX_DOCKER_VERSION:?pinned by the chain (versions.docker)}"
: "${PHOENIX_NVIDIA_CONTAINER_TOOLKIT_VERSION:?pinned by the chain (versions.nvidia_container_toolkit)}"
command -v nvidia-smi >/dev/null || {
    echo "docker stand-in: nvidia-smi is missing: this layer is not a clone of the gpu layer" >&2
    exit 1
}

install -d -m 0755 /etc/nvidia-container-runtime
cat >/etc/nvidia-container-runtime/config.toml <<'TOML'
# Written by the Phoenix lab's docker stand-in (test only), as the real feature's nvidia-ctk step does.
[nvidia-container-cli]
no-cgroups = true
TOML

install -d -m 0755 /usr/lib/phoenix-lab-standin
cat >/usr/lib/phoenix-lab-standin/compose.py <<'COMPOSE'
"""TEST-ONLY stand-in for `docker compose` (the Phoenix lab; never ship it): exactly the subset Phoenix
calls, with one process per service instead of containers. State: /var/lib/phoenix-lab-compose/<project>/.

  compose -p P [-f FILE] [--env-file ENV] up -d --wait [--wait-timeout S] [--remove-orphans]
  compose -p P [-f FILE] [--env-file ENV] ps --all --format json
  compose -p P [-f FILE] [--env-file ENV] down [--remove-orphans]

The Compose file is read with a small reader (no PyYAML in the lab's rootfs): the services are the keys
indented two spaces under a top-level `services:`, each one's `image:` is noted. `up` interpolates
nothing itself; it records the env file's NAME='value' lines, the file's sha256 and each service's pid
(`sleep` in its own session, its environment the env file's values) in state.json. A service whose
definition or environment changed is restarted; services no longer in the file are stopped. A service
whose image is `phoenix-lab/unhealthy` never becomes healthy: `up --wait` fails as Compose does.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

STATE_ROOT = "/var/lib/phoenix-lab-compose"


def fail(message, code=1):
    print(message, file=sys.stderr)
    sys.exit(code)


def parse_args(argv):
    opts = {"project": None, "file": None, "env_file": None}
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        flag = argv[i]
        if flag in ("-p", "--project-name"):
            opts["project"] = argv[i + 1]
        elif flag in ("-f", "--file"):
            opts["file"] = argv[i + 1]
        elif flag == "--env-file":
            opts["env_file"] = argv[i + 1]
        else:
            fail(f"compose stand-in: unknown option {flag}")
        i += 2
    if not opts["project"]:
        fail("compose stand-in: -p PROJECT is required (Phoenix always names the project)")
    return opts, argv[i:]


def services_of(text):
    services, current, inside = {}, None, False
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip(" "))
        if indent == 0:
            inside = line.strip() == "services:"
            continue
        if not inside:
            continue
        if indent == 2 and line.rstrip().endswith(":"):
            current = line.strip()[:-1].strip("'\"")
            services[current] = {"image": "", "definition": []}
        elif current is not None:
            services[current]["definition"].append(line.strip())
            if line.strip().startswith("image:"):
                services[current]["image"] = line.split(":", 1)[1].strip().strip("'\"")
    return services


def env_values(path):
    values = {}
    if path and os.path.exists(path):
        for line in open(path, encoding="utf-8"):
            name, sep, value = line.rstrip("\n").partition("=")
            if sep:
                values[name] = value[1:-1] if value[:1] == value[-1:] == "'" else value
    return values


def state_dir(project):
    return os.path.join(STATE_ROOT, project)


def load_state(project):
    path = os.path.join(state_dir(project), "state.json")
    return json.load(open(path)) if os.path.exists(path) else {"services": {}}


def save_state(project, state):
    os.makedirs(state_dir(project), exist_ok=True)
    path = os.path.join(state_dir(project), "state.json")
    with open(path + ".tmp", "w") as out:
        json.dump(state, out, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] not in "ZX"
    except (OSError, IndexError):
        return False


def stop(pid):
    if alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)


def start(project, name, env):
    log = open(os.path.join(state_dir(project), f"{name}.log"), "ab")
    process = subprocess.Popen(
        ["sleep", "2147483647"], env={"PATH": "/usr/bin:/bin", **env},
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
    )
    return process.pid


def up(opts, rest):
    if "-d" not in rest or "--wait" not in rest:
        fail("compose stand-in: only `up -d --wait` is simulated")
    if not opts["file"] or not os.path.exists(opts["file"]):
        fail(f"compose stand-in: no such file: {opts['file']}")
    text = open(opts["file"], encoding="utf-8").read()
    services = services_of(text)
    if not services:
        fail("compose stand-in: no services in the Compose file")
    env = env_values(opts["env_file"])
    project = opts["project"]
    os.makedirs(state_dir(project), exist_ok=True)
    state = load_state(project)
    running = state["services"]
    for name in [n for n in running if n not in services]:  # --remove-orphans
        stop(running.pop(name)["pid"])
    for name, service in services.items():
        spec = {"image": service["image"], "definition": service["definition"], "env": env}
        old = running.get(name)
        if old is not None and alive(old["pid"]) and old["spec"] == spec:
            print(f"Container {project}-{name}-1  Running", file=sys.stderr)
            continue
        if old is not None:
            stop(old["pid"])
        running[name] = {"pid": start(project, name, env), "spec": spec}
        print(f"Container {project}-{name}-1  Started", file=sys.stderr)
    state.update(compose_sha256=hashlib.sha256(text.encode()).hexdigest(), env=env, file=opts["file"])
    save_state(project, state)
    for name, service in services.items():
        if service["image"] == "phoenix-lab/unhealthy":
            fail(f"container {project}-{name}-1 is unhealthy")
    print(f"Container {project}-{name}-1  Healthy", file=sys.stderr)


def ps(opts, rest):
    if rest[:3] != ["--all", "--format", "json"] and rest[:3] != ["--format", "json", "--all"]:
        fail("compose stand-in: only `ps --all --format json` is simulated")
    project = opts["project"]
    for name, service in sorted(load_state(project)["services"].items()):
        state = "running" if alive(service["pid"]) else "exited"
        health = "unhealthy" if service["spec"]["image"] == "phoenix-lab/unhealthy" else ""
        print(json.dumps({"Name": f"{project}-{name}-1", "Project": project, "Service": name,
                          "State": state, "Health": health}))


def down(opts, rest):
    project = opts["project"]
    for name, service in load_state(project)["services"].items():
        stop(service["pid"])
        print(f"Container {project}-{name}-1  Removed", file=sys.stderr)
    shutil.rmtree(state_dir(project), ignore_errors=True)


def main(argv):
    opts, rest = parse_args(argv)
    if not rest:
        fail("compose stand-in: no command")
    commands = {"up": up, "ps": ps, "down": down}
    if rest[0] not in commands:
        fail(f"compose stand-in (Phoenix lab): only up, ps and down are simulated, not {rest[0]!r}")
    commands[rest[0]](opts, rest[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
COMPOSE

cat >/usr/bin/docker <<DOCKER
#!/bin/sh
# TEST-ONLY stand-in for the docker CLI, installed by the Phoenix lab (tests/lab/standins): no daemon.
# \`docker compose ...\` goes to the compose stand-in (a process per service, state under /var/lib).
if [ "\$1" = compose ]; then shift; exec python3 /usr/lib/phoenix-lab-standin/compose.py "\$@"; fi
runtimes='"io.containerd.runc.v2":{"path":"runc"},"runc":{"path":"runc"}'
if grep -q '^no-cgroups = true' /etc/nvidia-container-runtime/config.toml 2>/dev/null; then
    runtimes="\$runtimes"',"nvidia":{"path":"nvidia-container-runtime"}'
fi
case "\$1 \$2 \$3" in
"info --format {{json .Runtimes}}") echo "{\$runtimes}" ;;
"info "*) echo "Server Version: $PHOENIX_DOCKER_VERSION (Phoenix lab stand-in, test only)"
    echo "Runtimes: \$runtimes" ;;
"version "*) echo "Docker version $PHOENIX_DOCKER_VERSION (Phoenix lab stand-in, test only)" ;;
*) echo "docker stand-in (Phoenix lab): only 'info', 'version' and 'compose' are simulated" >&2; exit 1 ;;
esac
DOCKER
chmod 0755 /usr/bin/docker
printf 'docker=%s toolkit=%s revision=%s\n' "$PHOENIX_DOCKER_VERSION" \
    "$PHOENIX_NVIDIA_CONTAINER_TOOLKIT_VERSION" "$REVISION" >/etc/phoenix/docker
