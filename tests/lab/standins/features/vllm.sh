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

# @include lab_systemd.sh
printf 'vllm=%s\n' "$PHOENIX_VLLM_VERSION" >/etc/phoenix/vllm
