"""A VM's own feature parameters reach its cloud-init user-data: files written first, values in each run."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from phoenix_components.config.errors import ConfigError
from phoenix_components.config.load import load_environment
from phoenix_components.render.vm import VM_RUNNER, vm_user_data

ROOT = Path(__file__).resolve().parents[2]


def edited_config(root: Path, **vm: Any) -> Path:
    """The repository's config under ``root``, the dev VM's keys set to ``vm``."""
    config = root / "config"
    shutil.copytree(ROOT / "config", config)
    shutil.copytree(ROOT / "apparmor", root / "apparmor")
    guests_file = config / "environments" / "dev" / "guests.json"
    guests = json.loads(guests_file.read_text())
    guests["vms"][0].update(vm)
    guests_file.write_text(json.dumps(guests))
    return config


def test_feature_env_and_files_reach_the_user_data(tmp_path: Path) -> None:
    config = edited_config(
        tmp_path,
        feature_env={"STACK": "apps; rm -rf /"},
        feature_files=[{"path": "/etc/phoenix/stack.env", "content": "A=1\n", "mode": "0600"}],
    )
    env = load_environment(config, "dev")
    vm = env.guests.vms[0]
    document = yaml.safe_load(vm_user_data(env, vm))
    files = {f["path"]: f for f in document["write_files"]}
    assert files["/etc/phoenix/stack.env"] == {
        "path": "/etc/phoenix/stack.env",
        "permissions": "0600",
        "content": "A=1\n",
    }
    runner = files[VM_RUNNER]["content"].splitlines()
    runs = [shlex.split(line) for line in runner if line.startswith("env ")]
    assert len(runs) == len(vm.features)
    for argv in runs:  # one argument each, however hostile the value
        assert "STACK=apps; rm -rf /" in argv
        assert any(a.startswith("PHOENIX_TARGET=vm") for a in argv), "the chain's values come first"


def test_parameters_without_features_are_refused(tmp_path: Path) -> None:
    config = edited_config(tmp_path, features=[], feature_env={"STACK": "apps"})
    with pytest.raises(ConfigError, match=r"vms\[0\].*feature_env and feature_files are only for a guest"):
        load_environment(config, "dev")


def test_a_reserved_variable_is_refused(tmp_path: Path) -> None:
    config = edited_config(tmp_path, feature_env={"PHOENIX_TARGET": "lxc"})
    with pytest.raises(ConfigError, match="PHOENIX_TARGET: PHOENIX_\\* variables are Phoenix's own"):
        load_environment(config, "dev")
