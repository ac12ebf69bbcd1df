"""Config loading beyond the corpus: the shipped examples, layer keys, lineage, schema freshness."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from phoenix_components.config.errors import ConfigError
from phoenix_components.config.load import environment_names, json_path, load_environment
from phoenix_components.config.models import Container
from phoenix_components.config.schema import SCHEMAS, render, stale

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"


@pytest.fixture
def config_copy(tmp_path: Path) -> Path:
    shutil.copytree(CONFIG, tmp_path / "config")
    shutil.copytree(ROOT / "apparmor", tmp_path / "apparmor")
    return tmp_path / "config"


def test_shipped_example_is_a_two_gpu_host_with_the_chain_two_vllm_guests_and_a_docker_vm() -> None:
    env = load_environment(CONFIG, "dev")
    assert [g.index for g in env.host.gpus] == [0, 1]
    assert env.layer_order() == ["base", "gpu", "docker", "ollama", "llamacpp", "vllm"]
    # Its guests run on vllm: that layer and its ancestors are built, the model servers no guest here
    # runs are not (chain.json is shared by every environment).
    assert env.built_layers() == ["base", "gpu", "docker", "vllm"]
    vllm = [ct for ct in env.guests.containers if ct.vllm is not None]
    assert len(vllm) == 2
    assert sorted(g for ct in vllm for g in ct.gpus) == [0, 1], "the two vLLM guests use separate GPUs"
    assert [vm.features for vm in env.guests.vms] == [["base_setup", "docker"]]
    assert all(ct.unprivileged and ct.apparmor_profile != "unconfined" for ct in env.guests.containers)


def test_every_environment_loads() -> None:
    assert environment_names(CONFIG) == ["dev", "lab", "prod", "staging"]
    for name in environment_names(CONFIG):
        assert load_environment(CONFIG, name).name == name


def test_unknown_environment_names_the_known_ones() -> None:
    with pytest.raises(ConfigError) as raised:
        load_environment(CONFIG, "qa")
    assert "no environment 'qa' (known: dev, lab, prod, staging)" in str(raised.value)


def test_a_feature_script_change_rekeys_its_layer_and_every_layer_above(config_copy: Path) -> None:
    before = load_environment(config_copy, "dev")
    script = config_copy / "features/docker.sh"
    script.write_text(script.read_text() + "\n# a change\n")
    after = load_environment(config_copy, "dev")
    changed = {name for name in before.layer_order() if before.layer_key(name) != after.layer_key(name)}
    assert changed == {"docker", "vllm"}


def test_a_pinned_version_change_rekeys_and_guest_fields_do_not(config_copy: Path) -> None:
    before = load_environment(config_copy, "dev")
    chain_file = config_copy / "chain.json"
    chain = json.loads(chain_file.read_text())
    chain["layers"]["vllm"]["versions"]["vllm"] = "0.10.2"
    chain_file.write_text(json.dumps(chain))
    guests_file = config_copy / "environments/dev/guests.json"
    guests = json.loads(guests_file.read_text())
    guests["containers"][0]["cores"] = 16
    guests_file.write_text(json.dumps(guests))
    after = load_environment(config_copy, "dev")
    # Only the vllm layer pins vLLM (the ollama and llama.cpp layers sit beside docker, on gpu).
    assert {n: before.layer_key(n) == after.layer_key(n) for n in before.layer_order()} == {
        "base": True,
        "gpu": True,
        "docker": True,
        "vllm": False,
        "ollama": True,
        "llamacpp": True,
    }


def test_lineage_walks_to_the_os_template() -> None:
    env = load_environment(CONFIG, "dev")
    assert env.layer_lineage("vllm") == ["base", "gpu", "docker", "vllm"]
    assert env.layer_lineage("base") == ["base"]


def test_models_are_frozen() -> None:
    ct = load_environment(CONFIG, "dev").guests.containers[0]
    with pytest.raises(ValueError, match="frozen"):
        ct.cores = 1  # type: ignore[misc]
    assert isinstance(ct, Container)


def test_json_path_drops_pydantic_tags_and_keeps_list_indices() -> None:
    data = {"containers": [{"mounts": [{"type": "volume"}]}]}
    assert (
        json_path(("containers", 0, "mounts", 0, "volume", "size_gib"), data)
        == "containers[0].mounts[0].size_gib"
    )
    assert json_path((), data) == "$"


def test_schema_files_match_the_models() -> None:
    assert stale(CONFIG / "schema") == [], "run `make schema` and commit config/schema"


def test_stale_schema_is_detected(tmp_path: Path) -> None:
    for name, model in SCHEMAS.items():
        (tmp_path / name).write_text(render(model))
    assert stale(tmp_path) == []
    (tmp_path / "host.schema.json").write_text("{}\n")
    assert stale(tmp_path) == ["host.schema.json"]


def test_every_config_file_points_at_its_schema() -> None:
    files = [CONFIG / "chain.json", *CONFIG.glob("environments/*/*.json")]
    for path in files:
        ref = json.loads(path.read_text())["$schema"]
        target = (path.parent / ref).resolve()
        assert target.is_file(), f"{path}: $schema {ref} does not exist"
        assert target.name == f"{path.stem}.schema.json"
