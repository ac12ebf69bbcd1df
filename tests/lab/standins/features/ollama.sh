#!/bin/bash
# TEST-ONLY stand-in for config/features/ollama.sh, run by the lab's template chain (tests/lab/e2e.py).
# Never ship it.
#
# Why a stand-in: ollama's release tarball needs the network and its runners a GPU; the lab has neither.
# This installs a small `/usr/local/bin/ollama` that speaks what Phoenix's ModelServer uses: `ollama serve`
# listens on OLLAMA_HOST and answers GET /api/version, GET /api/tags and GET /v1/models (the models pulled
# so far) and POST /api/pull; `ollama pull MODEL` asks the server at OLLAMA_HOST to pull (no download: the
# name is recorded), as the real client does; `ollama --version` prints the pinned version. The unit runs
# under the lab's `systemctl` stand-in (tests/lab/standins/lab_systemd.sh, included at the end). Lab
# switch: a model whose name contains `lab-standin-missing` cannot be pulled (the registry's "file does
# not exist"), a server that never lists it.
set -euo pipefail

: "${PHOENIX_OLLAMA_VERSION:?pinned by the chain (versions.ollama)}"
test -f /etc/phoenix/nvidia || {
    echo "ollama stand-in: /etc/phoenix/nvidia is missing: this layer is not a clone of the gpu layer" >&2
    exit 1
}
for tool in systemctl journalctl; do
    if [ -e "/usr/bin/$tool" ] && ! grep -q 'PHOENIX-LAB-STANDIN' "/usr/bin/$tool"; then
        echo "ollama stand-in: a real /usr/bin/$tool exists; refusing to replace it" >&2
        exit 1
    fi
done

install -d -m 0755 /usr/local/bin /usr/local/lib/ollama
printf '%s\n' "$PHOENIX_OLLAMA_VERSION" >/usr/local/lib/ollama/.phoenix-version
cat >/usr/local/bin/ollama <<'PY'
#!/usr/bin/python3
"""TEST-ONLY stand-in for ollama (Phoenix lab): no model, no GPU, no network. See features/ollama.sh."""

import json
import os
import sys
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

VERSION = Path("/usr/local/lib/ollama/.phoenix-version").read_text().strip()
PULLED = Path(os.environ.get("OLLAMA_MODELS", "/var/lib/phoenix-lab-ollama")) / "pulled.json"


def tagged(name):
    return name if ":" in name.rpartition("/")[2] else name + ":latest"


def address():
    host = os.environ.get("OLLAMA_HOST", "127.0.0.1:11434")
    name, _, port = host.rpartition(":")
    return (name or "127.0.0.1"), int(port)


def pulled():
    try:
        return json.loads(PULLED.read_text())
    except (OSError, ValueError):
        return []


def serve():
    host, port = address()
    PULLED.parent.mkdir(parents=True, exist_ok=True)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            now = int(time.time())
            if self.path == "/api/version":
                self.answer(200, {"version": VERSION})
            elif self.path == "/api/tags":
                self.answer(200, {"models": [{"name": m, "model": m, "size": 0} for m in pulled()]})
            elif self.path == "/v1/models":
                data = [{"id": m, "object": "model", "created": now, "owned_by": "library"} for m in pulled()]
                self.answer(200, {"object": "list", "data": data})
            else:
                self.answer(404, {"error": "not found"})

        def do_POST(self):
            if self.path != "/api/pull":
                return self.answer(404, {"error": "not found"})
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            name = tagged(body.get("model") or body.get("name") or "")
            if "lab-standin-missing" in name:
                print("pull %s: file does not exist (lab stand-in switch)" % name, flush=True)
                return self.answer(500, {"error": "pull model manifest: file does not exist"})
            models = pulled()
            if name not in models:
                PULLED.write_text(json.dumps(models + [name]))
            print("pulled %s (lab stand-in: nothing downloaded)" % name, flush=True)
            self.answer(200, {"status": "success"})

        def answer(self, status, data):
            body = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *values):
            print("[GIN] %s | %s" % (self.address_string(), fmt % values), flush=True)

    server = ThreadingHTTPServer((host, port), Handler)
    print("Listening on %s:%d (version %s, Phoenix lab stand-in, TEST ONLY)" % (host, port, VERSION), flush=True)
    server.serve_forever()


def pull(name):
    host, port = address()
    request = urllib.request.Request(
        "http://%s:%d/api/pull" % (host, port), data=json.dumps({"model": name}).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            print(json.load(answer)["status"])
    except urllib.error.HTTPError as error:
        print("Error: %s" % json.load(error)["error"], file=sys.stderr)
        return 1
    except OSError as error:
        print("Error: could not connect to ollama server at %s:%d: %s" % (host, port, error), file=sys.stderr)
        return 1
    return 0


def main(argv):
    if argv[:1] in (["--version"], ["-v"]):
        print("ollama version is %s (Phoenix lab stand-in)" % VERSION)
        return 0
    if argv[:1] == ["serve"]:
        serve()
        return 0
    if argv[:1] == ["pull"] and len(argv) == 2:
        return pull(argv[1])
    print("ollama stand-in (Phoenix lab): only serve, pull MODEL and --version", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
PY
chmod 0755 /usr/local/bin/ollama
printf 'ollama=%s\n' "$PHOENIX_OLLAMA_VERSION" >/etc/phoenix/ollama

# @include lab_systemd.sh
