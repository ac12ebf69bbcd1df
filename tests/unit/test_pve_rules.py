"""Validation follows PVE's own rules, neither weaker nor stricter, and its messages read as a person would.

What PVE accepts is accepted (each value through the whole load of an edited dev config, so the cross
checks see it too); what PVE or the host refuses at deploy time is refused before any call (the cases are
in tests/config_corpus). Messages name guests by vmid and hostname, state a pattern's rule in words,
and `phoenix validate` prints a shared chain mistake once and validates exactly the stack it is given.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from phoenix_components.cli.main import main
from phoenix_components.config.cloud_models import Cloud
from phoenix_components.config.errors import ConfigError
from phoenix_components.config.load import load_environment
from phoenix_components.config.models import PATTERN_RULES, Chain, Guests, Host, VllmEngine
from phoenix_components.config.promotion import PromotionLock

ROOT = Path(__file__).resolve().parents[2]
GUESTS = "environments/dev/guests.json"
HOST = "environments/dev/host.json"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "config", tmp_path / "config")
    shutil.copytree(ROOT / "apparmor", tmp_path / "apparmor")
    return tmp_path / "config"


def edit(config: Path, file: str, change: Callable[[Any], object]) -> None:
    path = config / file
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc, indent=2))


# --------------------------------------------------------------------------- what PVE accepts, Phoenix takes


def test_mixed_case_storage_ids_are_pve_storage_ids(config: Path) -> None:
    edit(config, HOST, lambda d: d["storage"].update(rootfs="Local-ZFS.fast", vm_disks="NVMe_1"))
    edit(
        config,
        GUESTS,
        lambda d: d["containers"][0].update(
            mounts=[{"type": "volume", "path": "/data", "storage": "Tank-01", "size_gib": 10}]
        ),
    )
    env = load_environment(config, "dev")
    assert (env.host.storage.rootfs, env.host.storage.vm_disks) == ("Local-ZFS.fast", "NVMe_1")


@pytest.mark.parametrize("hostname", ["Web01", "vllm.lab.example.com", "a", "GPU-Box-7.LAN", "9lives"])
def test_hostnames_are_taken_as_pve_takes_dns_names(config: Path, hostname: str) -> None:
    edit(config, GUESTS, lambda d: d["containers"][0].update(hostname=hostname))
    assert load_environment(config, "dev").guests.containers[0].hostname == hostname


@pytest.mark.parametrize("hostname", ["-web", "web-", "a..b", "web_01", "a" * 65, "web.", ".web"])
def test_hostnames_pve_or_the_kernel_refuse_are_refused(config: Path, hostname: str) -> None:
    edit(config, GUESTS, lambda d: d["containers"][0].update(hostname=hostname))
    with pytest.raises(ConfigError) as raised:
        load_environment(config, "dev")
    assert f"{GUESTS}: containers[0].hostname (CT 201 " in str(raised.value)


def test_served_model_names_may_have_a_slash(config: Path) -> None:
    edit(
        config,
        GUESTS,
        lambda d: d["containers"][0]["vllm"]["server"].update(served_model_name="Qwen/Qwen2.5-7B"),
    )
    env = load_environment(config, "dev")
    assert env.guests.containers[0].vllm is not None
    assert env.guests.containers[0].vllm.server.served_model_name == "Qwen/Qwen2.5-7B"


@pytest.mark.parametrize("dport", ["80,443", "8000:8010", "22,80,443,8000:8010", "0", "65535", "1:1"])
def test_firewall_port_lists_and_ranges_are_pve_port_specs(config: Path, dport: str) -> None:
    edit(config, GUESTS, lambda d: d["containers"][0]["firewall"]["rules"][0].update(dport=dport))
    assert load_environment(config, "dev").guests.containers[0].firewall.rules[0].dport == dport


@pytest.mark.parametrize(
    ("dport", "why"),
    [
        ("80,", "port numbers and low:high ranges"),
        ("80,,443", "port numbers and low:high ranges"),
        ("ssh", "numbers only"),
        ("65536", "invalid port '65536'"),
        ("8010:8000", "backwards range '8010:8000' not allowed"),
        (",".join(str(p) for p in range(1, 17)), "too many entries in port list (16 > 15"),
    ],
)
def test_port_specs_pve_refuses_are_refused_in_its_words(config: Path, dport: str, why: str) -> None:
    edit(config, GUESTS, lambda d: d["containers"][0]["firewall"]["rules"][0].update(dport=dport))
    with pytest.raises(ConfigError) as raised:
        load_environment(config, "dev")
    (line,) = raised.value.problems
    assert line.startswith(f"{GUESTS}: containers[0].firewall.rules[0].dport (CT 201 vllm-qwen): ")
    assert why in line


def test_a_bridge_need_not_be_called_vmbr(config: Path) -> None:
    edit(config, HOST, lambda d: d["bridges"][0].update(name="lan0"))
    edit(
        config, GUESTS, lambda d: [g["network"].update(bridge="lan0") for g in [*d["containers"], *d["vms"]]]
    )
    assert load_environment(config, "dev").host.bridges[0].name == "lan0"


def test_manual_ip_configuration_is_accepted() -> None:
    guests = Guests.model_validate(
        {"containers": [{"vmid": 201, "hostname": "a", "layer": "x", "network": {"ip": "manual"}}]}
    )
    assert guests.containers[0].network.address is None


def test_a_read_only_bind_of_a_system_path_and_an_opted_out_writable_one_pass(config: Path) -> None:
    def mounts(d: Any) -> None:
        ct = d["containers"][0]
        ct["mounts"] += [
            {"type": "bind", "path": "/host-etc", "host_path": "/etc", "read_only": True},
            {"type": "bind", "path": "/scratch", "host_path": "/srv/scratch", "read_only": False},
            {"type": "bind", "path": "/var-log", "host_path": "/var/log", "read_only": False},
        ]
        ct["insecure"] = {"writable_host_system_mount": "ships its own logs into the host journal directory"}

    edit(config, GUESTS, mounts)
    assert len(load_environment(config, "dev").guests.containers[0].mounts) == 4


@pytest.mark.parametrize("host_path", ["/etc/pve", "//etc//pve/", "/", "/var/lib/vz"])
def test_a_writable_bind_of_a_system_path_is_refused_however_it_is_spelt(
    config: Path, host_path: str
) -> None:
    mount = {"type": "bind", "path": "/host", "host_path": host_path, "read_only": False}
    edit(config, GUESTS, lambda d: d["containers"][0]["mounts"].append(mount))
    with pytest.raises(ConfigError) as raised:
        load_environment(config, "dev")
    (line,) = raised.value.problems
    assert line.startswith(
        f"{GUESTS}: containers[0].mounts[1].read_only (CT 201 vllm-qwen): a read-write bind"
    )


def test_a_mount_path_with_a_trailing_slash_is_a_path_and_still_clashes(config: Path) -> None:
    """PVE takes `/models/`; it is the same directory as `/models`, so mounting both is a clash."""
    extra = {"type": "volume", "path": "/models/", "storage": "local-zfs", "size_gib": 1}
    edit(config, GUESTS, lambda d: d["containers"][0]["mounts"].append(extra))
    with pytest.raises(ConfigError) as raised:
        load_environment(config, "dev")
    assert "containers[0].mounts[1].path (CT 201 vllm-qwen): /models is already mounted at" in str(
        raised.value
    )
    edit(config, GUESTS, lambda d: d["containers"][0]["mounts"][1].update(path="/scratch/"))
    assert load_environment(config, "dev").guests.containers[0].mounts[1].path == "/scratch/"


# --------------------------------------------------------------------------- free-form vs managed fields


@pytest.mark.parametrize(
    "arg",
    [
        "--port",
        "--port=9000",
        "--model=x",
        "--served-model-name=q",
        "-tp",
        "--tensor_parallel_size=2",
        "--dtype=half",
        "--host=1.2.3.4",
    ],
)
def test_extra_args_cannot_set_what_the_engine_config_manages(arg: str) -> None:
    engine = {"model": {"model": "m"}, "server": {"served_model_name": "s"}, "extra_args": [arg]}
    with pytest.raises(ValidationError, match="which the engine config manages"):
        VllmEngine.model_validate(engine)


def test_extra_args_the_sections_do_not_model_pass() -> None:
    engine = {
        "model": {"model": "m"},
        "server": {"served_model_name": "s"},
        "extra_args": ["--enable-prefix-caching", "--max-num-seqs", "8"],
    }
    assert VllmEngine.model_validate(engine).extra_args == ["--enable-prefix-caching", "--max-num-seqs", "8"]


# --------------------------------------------------------------------------- messages


def _patterns(schema: Any) -> Iterator[str]:
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "pattern":
                yield value
            elif key == "patternProperties":
                yield from value
                yield from _patterns(list(value.values()))
            else:
                yield from _patterns(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from _patterns(item)


def test_every_pattern_of_every_document_has_its_rule_in_words() -> None:
    patterns = {
        p
        for model in (Host, Guests, Chain, Cloud, PromotionLock)
        for p in _patterns(model.model_json_schema())
    }
    assert patterns, "the walk found no patterns at all"
    assert sorted(patterns - set(PATTERN_RULES)) == []


def test_a_pattern_error_states_the_rule_not_the_regex(config: Path) -> None:
    edit(config, HOST, lambda d: d["storage"].update(rootfs="local zfs"))
    with pytest.raises(ConfigError) as raised:
        load_environment(config, "dev")
    (line,) = raised.value.problems
    assert line.startswith(f"{HOST}: storage.rootfs: must be a PVE storage ID: a letter, then letters")
    assert "'local zfs'" in line
    assert not re.search(r"\^|\$'|\[A-Za-z", line), line  # no regex in the message


def test_guests_are_named_by_vmid_and_hostname_in_every_message_about_them(config: Path) -> None:
    def mistakes(d: Any) -> None:
        d["containers"][1]["cores"] = 0  # a model error (pydantic)
        d["containers"][1]["network"]["ip"] = d["containers"][0]["network"]["ip"]  # would be a cross check
        d["vms"][0]["gpus"] = [7]

    edit(config, GUESTS, mistakes)
    with pytest.raises(ConfigError) as raised:
        load_environment(config, "dev")
    assert (
        f"{GUESTS}: containers[1].cores (CT 202 vllm-granite): Input should be greater than or equal to 1"
        in raised.value.problems[0]
    )
    edit(config, GUESTS, lambda d: d["containers"][1].update(cores=2))
    with pytest.raises(ConfigError) as raised:
        load_environment(config, "dev")
    text = "\n".join(raised.value.problems)
    assert (
        f"{GUESTS}: containers[1].network.ip (CT 202 vllm-granite): IP address 10.0.10.201 is already "
        "used at containers[0].network.ip (CT 201 vllm-qwen)"
    ) in text
    assert f"{GUESTS}: vms[0].gpus[0] (VM 231 docker-vm): GPU 7 is not on the host" in text


def test_a_mistake_in_the_shared_chain_is_printed_once(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(config, "chain.json", lambda d: d["layers"]["docker"].update(parent="cuda"))
    assert main(["validate", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    line = "chain.json: layers.docker.parent: no layer named 'cuda'"
    assert err.count(line) == 1, err
    assert err.startswith("invalid config (1 problem):"), err


def test_validate_stack_validates_that_stack_only(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(config, "environments/prod/guests.json", lambda d: d["containers"][0].update(cores=0))
    assert main(["validate", "--config", str(config), "--stack", "staging"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("staging: ok") and "prod" not in out and "dev:" not in out
    assert main(["validate", "--config", str(config), "--stack", "prod"]) == 2
    assert "environments/prod/guests.json: containers[0].cores" in capsys.readouterr().err


def test_validate_of_an_unknown_stack_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--stack", "qa"]) == 2
    assert "Pulumi.qa.yaml: $: no such stack file" in capsys.readouterr().err
