#!/bin/bash
# TEST-ONLY stand-in for config/features/base_setup.sh, run by the lab's template chain (tests/lab/e2e.py).
# Never ship it; the product scripts in config/features are what real hosts run.
#
# Why a stand-in: the lab's containers are Debian minbase with `sleep infinity` as init and no network, so
# the real script (apt, locales, systemd units) cannot run there. This one proves the chain's machinery:
# it runs through `pct exec` with Phoenix's environment, leaves a marker every layer above must inherit
# through the linked clones, and is idempotent like the real one.
set -euo pipefail

: "${PHOENIX_TARGET:?Phoenix sets PHOENIX_TARGET for every feature}"

install -d -m 0755 /etc/phoenix
printf 'phoenix-base target=%s\n' "$PHOENIX_TARGET" >/etc/phoenix/base
