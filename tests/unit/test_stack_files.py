"""Compose stacks in the config (phoenix_components/config/stack_files.py): the shipped example loads, the
checks the corpus does not cover, the content key, and `phoenix plan`/`graph` drawing stacks and the
guests' `after` edges."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from phoenix_components.cli.main import main
from phoenix_components.cli.plan import build_plan, render_plan
from phoenix_components.config.errors import ConfigError
from phoenix_components.config.load import load_environment
from phoenix_components.config.stack_files import content_key

ROOT = Path(__file__).resolve().parents[2]


def config(tmp_path: Path, stacks: list[dict[str, Any]], **guest_edits: dict[str, Any]) -> Path:
    shutil.copytree(ROOT / "config", tmp_path / "config")
    shutil.copytree(ROOT / "apparmor", tmp_path / "apparmor")
    guests_file = tmp_path / "config/environments/dev/guests.json"
    doc = json.loads(guests_file.read_text())
    doc["stacks"] = stacks
    for guest in [*doc["containers"], *doc["vms"]]:
        guest.update(guest_edits.get(str(guest["vmid"]), {}))
    guests_file.write_text(json.dumps(doc))
    return tmp_path / "config"


def write(cfg: Path, name: str, files: dict[str, str]) -> None:
    directory = cfg / "stacks" / name
    directory.mkdir(parents=True, exist_ok=True)
    for file, text in files.items():
        (directory / file).write_text(text)


def problems(cfg: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_environment(cfg, "dev")
    return caught.value.problems


def test_the_shipped_example_loads_with_its_service_port_and_secret(tmp_path: Path) -> None:
    env = load_environment(config(tmp_path, [{"name": "qdrant", "guest": 231}]), "dev")
    stack = env.stacks["qdrant"]
    assert (stack.services, stack.compose_file, stack.guest) == (("qdrant",), "compose.yaml", 231)
    assert [(p.port, p.proto) for p in stack.ports] == [(6333, "tcp")]
    assert stack.settings.secrets == ["QDRANT_API_KEY"]
    assert stack.compose == (ROOT / "config/stacks/qdrant/compose.yaml").read_text()


def test_the_content_key_hashes_secrets_and_changes_with_each_part() -> None:
    base = content_key("services: {}", {"A": "1"}, {"S": "h1"})
    assert base != content_key("services: {x: {}}", {"A": "1"}, {"S": "h1"})
    assert base != content_key("services: {}", {"A": "2"}, {"S": "h1"})
    assert base != content_key("services: {}", {"A": "1"}, {"S": "h2"})
    assert base == content_key("services: {}", {"A": "1"}, {"S": "h1"})


def test_a_stack_placed_twice_and_a_container_without_docker_are_refused(tmp_path: Path) -> None:
    # A container on the gpu layer (no docker feature in it or its parents).
    cfg = config(
        tmp_path,
        [
            {"name": "qdrant", "guest": 231},
            {"name": "qdrant", "guest": 202},
            {"name": "qdrant2", "guest": 202},
        ],
        **{"202": {"layer": "gpu", "vllm": None}},
    )
    shutil.copytree(cfg / "stacks/qdrant", cfg / "stacks/qdrant2")
    found = problems(cfg)
    assert (
        "environments/dev/guests.json: stacks[1].name (CT 202 vllm-granite): stack qdrant is already "
        "placed at stacks[0]" in found
    )
    assert (
        "environments/dev/guests.json: stacks[2].guest (CT 202 vllm-granite): containers[1] cannot run a "
        "Compose stack: its layer 'gpu' (and its parents) run no 'docker' feature" in found
    )


def test_port_forms_defaults_and_two_stacks_on_one_guest(tmp_path: Path) -> None:
    cfg = config(tmp_path, [{"name": "one", "guest": 231}, {"name": "two", "guest": 231}])
    write(
        cfg,
        "one",
        {
            "compose.yaml": "services:\n  a:\n    image: x\n    command: echo $$HOME ${UNSET:-fallback}\n"
            '    ports: ["127.0.0.1:8080:80/udp", "9000", {"published": 7000, "target": 70}]\n'
        },
    )
    write(cfg, "two", {"compose.yml": 'services:\n  b:\n    image: y\n    ports: ["8080:80", "7000:1"]\n'})
    found = problems(cfg)
    # 8080/udp and 8080/tcp differ; 7000/tcp clashes with the other stack's long-syntax port.
    assert found == [
        "stacks/two/compose.yml: services.b.ports[1] (VM 231 docker-vm): port 7000/tcp clashes with "
        "stacks/one/compose.yaml services.a.ports[2] (VM 231 docker-vm)"
    ]


def test_both_compose_names_and_a_quote_in_a_value_are_refused(tmp_path: Path) -> None:
    cfg = config(tmp_path, [{"name": "both", "guest": 231}, {"name": "quoted", "guest": 231}])
    write(cfg, "both", {"compose.yaml": "services: {a: {}}\n", "compose.yml": "services: {a: {}}\n"})
    write(
        cfg,
        "quoted",
        {"compose.yaml": "services: {a: {}}\n", "stack.json": json.dumps({"environment": {"A": "it's"}})},
    )
    found = problems(cfg)
    assert any(
        p.startswith("stacks/both/: $ (VM 231 docker-vm): both compose.yaml and compose.yml") for p in found
    )
    assert any(
        p.startswith("stacks/quoted/stack.json: environment (VM 231 docker-vm): A: a value may not contain")
        for p in found
    )


def graph(cfg: Path, fmt: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["graph", "--config", str(cfg), "--env", "dev", "--format", fmt]) == 0
    return capsys.readouterr().out


def test_graph_draws_stacks_on_their_guests_and_the_guests_after_edges(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(
        tmp_path, [{"name": "qdrant", "guest": 231}], **{"201": {"after": [202]}, "231": {"after": [201]}}
    )
    mermaid = graph(cfg, "mermaid", capsys)
    assert '  subgraph stacks["Compose stacks"]' in mermaid
    assert '    stack_qdrant["ComposeStack<br/>qdrant: qdrant in VM 231 (docker-vm)"]' in mermaid
    assert "  vm_231 --> stack_qdrant" in mermaid
    assert "  ct_202 -. after .-> ct_201" in mermaid and "  ct_201 -. after .-> vm_231" in mermaid
    dot = graph(cfg, "dot", capsys)
    assert '  subgraph cluster_stacks { label="stacks";' in dot
    assert '  "vm-231" -> "stack-qdrant";' in dot
    assert '  "ct-202" -> "ct-201" [style=dashed, label="after"];' in dot
    assert dot.rstrip().endswith("}")


def test_plan_lists_the_stack_after_its_guest_with_compose_up_wait(tmp_path: Path) -> None:
    env = load_environment(config(tmp_path, [{"name": "qdrant", "guest": 201}]), "dev")
    plan = build_plan(env)
    names = [r.name for r in plan]
    stack = plan[names.index("stack-qdrant")]
    assert {"ct-201", "vllm-201"} <= set(stack.depends_on)
    assert all(names.index(dep) < names.index("stack-qdrant") for dep in stack.depends_on)
    text = render_plan(env, plan)
    assert (
        "pct exec 201 -- docker compose -p qdrant -f /opt/phoenix/stacks/qdrant/compose.yaml "
        "--env-file /opt/phoenix/stacks/qdrant/phoenix.env up -d --wait --wait-timeout 300 --remove-orphans"
    ) in text
    assert "the environment file (1 plain values, 1 secrets, never shown)" in text
