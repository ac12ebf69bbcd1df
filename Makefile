# The single entry point. `make setup` once, then `make test`, `make lint`, `make bench`, `make preview`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STACK ?= dev
# The Pulumi CLI `make pulumi` builds (outside the tree, in ~/.cache/phoenix) goes first on PATH, so every
# target below, the tests and `phoenix` run that one; a CLI installed the usual way is used otherwise.
PULUMI_BIN := $(shell tools/pulumi/build.sh --bin-dir)
export PATH := $(PULUMI_BIN):$(PATH)
# The language host `make pulumi` builds reads the program's Python from here (docs/pulumi-cli.md).
export PULUMI_PYTHON_CMD := $(abspath $(BIN)/python)

.PHONY: setup lab-deps pulumi test test-fast lint format schema validate graph plan preview up demo demo-down \
	bench bench-quick clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

setup: $(BIN)/python ## Python virtualenv with Phoenix and its test tools
	$(BIN)/pip install -q -e '.[test]'

lab-deps: ## Debian packages the lab needs (root)
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server zfs-fuse apparmor lxc debootstrap shellcheck rsync qemu-system-x86 linux-image-amd64

pulumi: ## build the pinned Pulumi CLI and Python language host from their Go modules (cached), print the version
	tools/pulumi/build.sh

test: ## the full suite: unit, mocks, provider host, the lab, and the real Pulumi engine (cli)
	$(BIN)/pytest

test-fast: ## everything but the lab
	$(BIN)/pytest -m "not lab"

lint: ## ruff and mypy, both must be clean
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format:
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

schema: ## regenerate config/schema/*.json from the models
	$(BIN)/phoenix schema --write

validate: ## check every environment's config offline (exit 2 lists every mistake)
	$(BIN)/phoenix validate

graph: ## the resource graph as Mermaid (phoenix graph --format dot for Graphviz)
	$(BIN)/phoenix graph --stack $(STACK)

plan: ## per resource, the API calls and host commands an up would make; nothing runs
	$(BIN)/phoenix plan --stack $(STACK)

preview: ## pulumi preview when the CLI is installed, else the offline validate/graph/plan view
	$(BIN)/phoenix preview --stack $(STACK)

up:
	pulumi up --stack $(STACK)

demo: ## the Proxmox host in a box (simulated PVE API; real ZFS, LXC, sshd, AppArmor parser) and `pulumi up` of it
	$(BIN)/python -m tests.lab.box up

demo-down: ## destroy the demo stack and stop the box
	$(BIN)/python -m tests.lab.box down

bench: ## benchmarks; each prints its measured ratios
	$(BIN)/python -m bench

bench-quick:
	$(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .lab
