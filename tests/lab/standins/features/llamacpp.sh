#!/bin/bash
# TEST-ONLY stand-in for config/features/llamacpp.sh, run by the lab's template chain (tests/lab/e2e.py).
# Never ship it.
#
# Why a stand-in: building llama.cpp with CUDA needs the network, the CUDA toolkit and minutes of
# compiling; serving needs a GPU and a GGUF file. This installs a small `/usr/local/bin/llama-server` that
# takes llama-server's flags (-m PATH or -hf REPO, --alias, --host, --port, -c, -ngl, -np; others are
# accepted and ignored) and answers what Phoenix's ModelServer probes: GET /health is 503 "Loading model"
# for the first second, then 200; GET /v1/models lists the --alias. A -m file that does not exist fails
# to start, as the real server does. `--version` prints the pinned tag. The unit runs under the lab's
# `systemctl` stand-in (tests/lab/standins/lab_systemd.sh, included at the end).
set -euo pipefail

: "${PHOENIX_LLAMACPP_VERSION:?pinned by the chain (versions.llamacpp)}"
: "${PHOENIX_CUDA_TOOLKIT_VERSION:?pinned by the chain (versions.cuda_toolkit)}"
test -f /etc/phoenix/nvidia || {
    echo "llamacpp stand-in: /etc/phoenix/nvidia is missing: this layer is not a clone of the gpu layer" >&2
    exit 1
}
for tool in systemctl journalctl; do
    if [ -e "/usr/bin/$tool" ] && ! grep -q 'PHOENIX-LAB-STANDIN' "/usr/bin/$tool"; then
        echo "llamacpp stand-in: a real /usr/bin/$tool exists; refusing to replace it" >&2
        exit 1
    fi
done

install -d -m 0755 /usr/local/bin /usr/local/lib
printf '%s\n' "$PHOENIX_LLAMACPP_VERSION" >/usr/local/lib/llama.cpp.phoenix-version
cat >/usr/local/bin/llama-server <<'PY'
#!/usr/bin/python3
"""TEST-ONLY stand-in for llama.cpp's llama-server (Phoenix lab): no model, no GPU. See features/llamacpp.sh."""

import argparse
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

VERSION = Path("/usr/local/lib/llama.cpp.phoenix-version").read_text().strip()
LOADING_S = 1.0


def main(argv):
    if argv[:1] == ["--version"]:
        print("version: %s (Phoenix lab stand-in, TEST ONLY)" % VERSION)
        return 0
    parser = argparse.ArgumentParser(prog="llama-server")
    parser.add_argument("-m", "--model")
    parser.add_argument("-hf", "--hf-repo")
    parser.add_argument("-a", "--alias")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("-c", "--ctx-size", type=int)
    parser.add_argument("-ngl", "--n-gpu-layers", type=int)
    parser.add_argument("-np", "--parallel", type=int)
    args, ignored = parser.parse_known_args(argv)
    if not args.model and not args.hf_repo:
        print("error: no model given (-m or -hf)", file=sys.stderr)
        return 1
    if args.model and not os.path.isfile(args.model):
        print("llama_model_load: error loading model: failed to open %s" % args.model, flush=True)
        return 1
    alias = args.alias or args.model or args.hf_repo
    started = time.monotonic()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            loading = time.monotonic() - started < LOADING_S
            if self.path == "/health":
                if loading:
                    self.answer(503, {"error": {"code": 503, "message": "Loading model"}})
                else:
                    self.answer(200, {"status": "ok"})
            elif self.path == "/v1/models":
                data = [{"id": alias, "object": "model", "created": int(started), "owned_by": "llamacpp"}]
                self.answer(200, {"object": "list", "data": data})
            else:
                self.answer(404, {"error": {"code": 404, "message": "File Not Found"}})

        def answer(self, status, data):
            body = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *values):
            print("srv  log_server_r: %s" % (fmt % values), flush=True)

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(
        "main: server is listening on http://%s:%d (%s as %r, -c %s -ngl %s -np %s; ignored: %s; "
        "Phoenix lab stand-in, TEST ONLY)"
        % (args.host, args.port, args.model or args.hf_repo, alias, args.ctx_size, args.n_gpu_layers,
           args.parallel, " ".join(ignored) or "-"),
        flush=True,
    )
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
PY
chmod 0755 /usr/local/bin/llama-server
printf 'llamacpp=%s cuda_toolkit=%s\n' "$PHOENIX_LLAMACPP_VERSION" "$PHOENIX_CUDA_TOOLKIT_VERSION" >/etc/phoenix/llamacpp

# @include lab_systemd.sh
