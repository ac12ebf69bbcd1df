"""Every renderer, fed hostile values, means exactly what it was given — read back as its consumer reads it.

The renderers: VM cloud-init user-data (``render.vm.vm_user_data`` and its runner), EC2 user-data
(``cloud_render.render_user_data``: scripts, runner, model-cache environment file, vLLM unit), the vLLM
systemd unit (``vllm.render_unit``), feature environments sent with ``pct exec`` (``script_argv`` from
a layer's inputs) and the raw ``lxc.*`` lines written into a container's config (``raw_lines``). Values
bypass the config models here (``model_copy`` / ``model_construct``), so what is shown is the renderer's
own quoting, not validation; the models' refusals are tested at the end.

Each output is read back by its consumer's rules (tests/security/readers.py): ``yaml.safe_load`` and the
``#cloud-config`` header for cloud-init, cloud-init's own runcmd quoting, ``sh -n`` and a real run of the
shell text with recording stubs for every command it calls (compared as argv lists), and systemd's
unit-file and ExecStart rules.
"""

from __future__ import annotations

import atexit
import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from phoenix_components.components.chain import layer_inputs
from phoenix_components.config.load import Environment, load_environment
from phoenix_components.config.models import (
    CacheSection,
    CloudInit,
    FeatureFile,
    ModelSection,
    NvidiaDriver,
    ParallelSection,
    ServerSection,
    VllmEngine,
    Vm,
)
from phoenix_components.render.cloud import MODEL_CACHE_ENV, RUNNER, render_user_data
from phoenix_components.render.features import chain_feature_env
from phoenix_components.render.lxc import raw_lines
from phoenix_components.render.vllm import UNIT_PATH, engine_args, render_unit
from phoenix_components.render.vm import VM_FEATURES_DIR, VM_RUNNER, vm_user_data
from providers.channels.command import render
from providers.channels.pct import script_argv
from providers.errors import PhoenixError
from tests.security.hostile import arg, env_key, hostile
from tests.security.readers import (
    environment_words,
    exec_words,
    expand_specifiers,
    run_with_stubs,
    sh_parses,
    shell_variables,
    shellify,
    unit_entries,
)

ROOT = Path(__file__).resolve().parents[2]
ENV = load_environment(ROOT / "config", "dev")
SLOW = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Shell-line values: argv cannot carry NUL, and every other character must survive.
value = arg

# The two exploits the issue reported, verbatim in spirit.
CR_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPhoenix user@lab\r  - name: evil\r    sudo: ALL=(ALL) NOPASSWD:ALL"
)
EVIL_URL = (
    "https://us.download.nvidia.com/XFree86/Linux-x86_64/580.76.05/NVIDIA-Linux-x86_64-580.76.05.run"
    ";touch${IFS}/tmp/phoenix-pwned;#"
)


# Every example's scratch directory lives under one per-process directory, removed at exit: hypothesis
# runs hundreds of examples, and a directory each must not pile up in /tmp.
_SCRATCH = Path(tempfile.mkdtemp(prefix="phoenix-render-"))
atexit.register(shutil.rmtree, _SCRATCH, True)


def _work() -> Path:
    return Path(tempfile.mkdtemp(dir=_SCRATCH))


# ------------------------------------------------------------------------------- VM cloud-init


def hostile_vm_env(
    *, keys: list[str], user: str, url: str, docker_pin: str, own: str = "plain", content: str = "a=1\n"
) -> tuple[Environment, Vm]:
    """The dev environment with hostile values where the VM renderer reads them (no validation)."""
    assert ENV.host.nvidia is not None
    host = ENV.host.model_copy(update={"nvidia": ENV.host.nvidia.model_copy(update={"runfile_url": url})})
    docker = ENV.chain.layers["docker"]
    layers = {**ENV.chain.layers, "docker": docker.model_copy(update={"versions": {"docker": docker_pin}})}
    chain = ENV.chain.model_copy(update={"layers": layers})
    env = dataclasses.replace(ENV, host=host, chain=chain)
    vm = ENV.guests.vms[0].model_copy(
        update={
            "features": ["nvidia", "docker"],
            "cloud_init": CloudInit.model_construct(user=user, ssh_authorized_keys=keys),
            # The VM's own parameters: a value its scripts get, a file written before they run.
            "feature_env": {"STACK_NAME": own},
            "feature_files": [
                FeatureFile.model_construct(path="/etc/phoenix/stack.env", content=content, mode="0600")
            ],
        }
    )
    return env, vm


def read_vm_user_data(text: str) -> tuple[dict[str, Any], dict[str, str]]:
    """cloud-init's view: the header, the document, and the files it writes (decoded)."""
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict)
    assert set(doc) <= {"write_files", "runcmd", "users"}, sorted(doc)
    files = {}
    for entry in doc.get("write_files", []):
        assert set(entry) == {"path", "permissions", "content"}
        files[entry["path"]] = entry["content"]
    return doc, files


def check_vm_user_data(env: Environment, vm: Vm, *, keys: list[str], user: str, url: str, pin: str) -> None:
    doc, files = read_vm_user_data(vm_user_data(env, vm))
    expected_user: dict[str, Any] = {"name": user, "sudo": "ALL=(ALL) NOPASSWD:ALL"}
    if keys:
        expected_user["ssh_authorized_keys"] = keys
    # Exactly one user besides the default one, with exactly the keys given: nothing added a user or sudo.
    assert doc["users"] == ["default", expected_user]
    for feature in vm.features:
        assert files[f"{VM_FEATURES_DIR}/{feature}.sh"] == env.feature_scripts[feature]
    for own in vm.feature_files:
        assert files[own.path] == own.content
    assert doc["runcmd"] == [["bash", VM_RUNNER]]
    work = _work()
    runcmd = shellify(doc["runcmd"])
    sh_parses(runcmd)
    assert run_with_stubs(runcmd, ["bash"], work / "runcmd") == [["bash", VM_RUNNER]]
    runner = files[VM_RUNNER]
    sh_parses(runner, shell="bash")
    ran = run_with_stubs(runner, ["env"], work / "runner", shell="bash")
    assert ran == [
        [
            "env",
            *(f"{k}={v}" for k, v in {**chain_feature_env(env, [f], "vm"), **vm.feature_env}.items()),
            "bash",
            f"{VM_FEATURES_DIR}/{f}.sh",
        ]
        for f in vm.features
    ]
    assert f"PHOENIX_NVIDIA_RUNFILE_URL={url}" in ran[0]
    assert f"PHOENIX_DOCKER_VERSION={pin}" in ran[1]


def test_an_ssh_key_with_carriage_returns_adds_no_user_and_no_sudo_rule() -> None:
    env, vm = hostile_vm_env(keys=[CR_KEY], user="phoenix", url=EVIL_URL, docker_pin="1")
    check_vm_user_data(env, vm, keys=[CR_KEY], user="phoenix", url=EVIL_URL, pin="1")


def test_a_runfile_url_with_a_command_in_it_stays_one_argument() -> None:
    """``;cmd;#`` would run ``cmd`` and comment out the rest of the line if the runner were interpolated;
    here the stubbed shell may run only ``env``, so any other command would fail the run."""
    env, vm = hostile_vm_env(keys=[], user="phoenix", url=EVIL_URL, docker_pin="1")
    check_vm_user_data(env, vm, keys=[], user="phoenix", url=EVIL_URL, pin="1")


@SLOW
@given(keys=st.lists(arg, max_size=3), user=arg, url=value, pin=value, own=value, content=value)
def test_vm_user_data_means_exactly_its_hostile_values(
    keys: list[str], user: str, url: str, pin: str, own: str, content: str
) -> None:
    env, vm = hostile_vm_env(keys=keys, user=user, url=url, docker_pin=pin, own=own, content=content)
    check_vm_user_data(env, vm, keys=keys, user=user, url=url, pin=pin)


# ------------------------------------------------------------------------------- EC2 user-data


def hostile_engine(*, model: str, served: str, extra: list[str]) -> VllmEngine:
    return VllmEngine.model_construct(
        model=ModelSection.model_construct(model=model, revision=served),
        cache=CacheSection(),
        parallel=ParallelSection(),
        server=ServerSection.model_construct(served_model_name=served),
        extra_args=extra,
        startup_timeout_s=900,
    )


@SLOW
@given(
    scripts=st.dictionaries(
        st.sampled_from(["base_setup", "nvidia", "docker"]), st.text(max_size=40), min_size=1
    ),
    values=st.dictionaries(env_key, value, max_size=3),
    cache=st.dictionaries(env_key, value, max_size=2),
    vllm=st.booleans(),
    extra=st.lists(value, max_size=2),
)
def test_ec2_user_data_means_exactly_its_hostile_values(
    scripts: dict[str, str], values: dict[str, str], cache: dict[str, str], vllm: bool, extra: list[str]
) -> None:
    features = list(scripts)
    variables = {f: {"PHOENIX_TARGET": "ec2", **values} for f in features}
    engine = hostile_engine(model="Qwen/Qwen2.5", served="qwen", extra=extra) if vllm else None
    try:
        unit = render_unit(engine) if engine is not None else None
    except ValueError:
        return  # a control character in an ExecStart argument is refused (covered below)
    text = render_user_data(
        environment="cloud-dev",
        features=features,
        scripts=scripts,
        variables=variables,
        vllm=engine,
        model_cache=cache,
    )
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    assert set(doc) == {"write_files", "runcmd"}
    files = {f["path"]: f["content"] for f in doc["write_files"]}
    for feature, script in scripts.items():
        assert files[f"/opt/phoenix/features/{feature}.sh"] == script
    if unit is not None:
        assert files[UNIT_PATH] == unit
    assert doc["runcmd"] == [["bash", RUNNER]]
    work = _work()
    sh_parses(shellify(doc["runcmd"]))
    runner = files[RUNNER]
    sh_parses(runner, shell="bash")
    ran = run_with_stubs(runner, ["env", "systemctl", "mkdir", "touch"], work, shell="bash")
    expected = [
        ["env", *(f"{k}={v}" for k, v in variables[f].items()), "bash", f"/opt/phoenix/features/{f}.sh"]
        for f in features
    ]
    if engine is not None:
        expected += [["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", "vllm.service"]]
    expected += [["mkdir", "-p", "/var/lib/phoenix"], ["touch", "/var/lib/phoenix/features-done"]]
    assert ran == expected
    assert shell_variables(files[MODEL_CACHE_ENV], list(cache), work) == cache


@given(name=hostile)
def test_ec2_user_data_names_only_plain_names_in_its_header_comment(name: str) -> None:
    """The header is a YAML comment, which cannot be escaped: anything but a plain name is refused."""
    base: dict[str, Any] = {
        "features": ["base_setup"],
        "scripts": {"base_setup": "true\n"},
        "vllm": None,
        "model_cache": {},
    }
    for kwargs in (
        {"environment": name, "variables": {"base_setup": {}}},
        {
            "environment": "cloud-dev",
            "variables": {name: {}},
            "features": [name],
            "scripts": {name: ""},
        },
    ):
        try:
            text = render_user_data(**{**base, **kwargs})
        except PhoenixError as error:
            assert "cloud-init comment" in str(error)
            continue
        header = text.split("\n")[:2]
        assert header[0] == "#cloud-config" and header[1].startswith("# Phoenix environment ")
        assert yaml.safe_load(text)["runcmd"] == [["bash", RUNNER]]


# ------------------------------------------------------------------------------- the vLLM unit

SERVICE_KEYS = {"Type", "ExecStart", "Restart", "RestartSec", "TimeoutStartSec"}


@settings(max_examples=200)
@given(
    model=value,
    served=value,
    extra=st.lists(value, max_size=4),
    env=st.dictionaries(env_key, value, max_size=3),
)
def test_the_vllm_unit_read_as_systemd_reads_it_runs_exactly_the_engine_argv(
    model: str, served: str, extra: list[str], env: dict[str, str]
) -> None:
    engine = hostile_engine(model=model, served=served, extra=extra)
    words = [*engine_args(engine), *(f"{k}={v}" for k, v in env.items())]
    controls = any(ord(c) < 0x20 or c == "\x7f" for w in [*words, served] for c in w)
    try:
        unit = render_unit(engine, environment=env)
    except ValueError as error:
        assert controls or served.endswith("\\"), error  # refused only for what systemd cannot carry
        return
    assert not controls
    entries = unit_entries(unit)
    assert [s for s, _, _ in entries if s not in ("Unit", "Service", "Install")] == []
    service = [(k, v) for s, k, v in entries if s == "Service"]
    assert {k for k, _ in service} - {"Environment"} == SERVICE_KEYS  # nothing injected a key
    (exec_start,) = [v for k, v in service if k == "ExecStart"]
    assert exec_words(exec_start) == engine_args(engine)
    seen: dict[str, str] = {}
    for assignment in (v for k, v in service if k == "Environment"):
        seen.update(environment_words(assignment))
    assert seen == env
    (description,) = [v for s, k, v in entries if s == "Unit" and k == "Description"]
    assert expand_specifiers(description) == f"vLLM serving {served}".strip(" \t")


# ------------------------------------------------------------------------------- feature environments


@SLOW
@given(pin=value, url=value)
def test_a_layer_build_sends_its_hostile_feature_environment_as_exactly_those_words(
    pin: str, url: str
) -> None:
    """From a layer's inputs (what the TemplateLayer provider runs) to the argv ``pct`` receives."""
    env, _vm = hostile_vm_env(keys=[], user="u", url=url, docker_pin=pin)
    work = _work()
    for layer in ("gpu", "docker"):
        for feature in layer_inputs(env, layer)["features"]:  # type: ignore[attr-defined]
            argv = script_argv(9001, feature["env"])
            line = render(argv)
            sh_parses(line)
            assert run_with_stubs(line, ["pct"], work / layer) == [argv]
            sent = dict(word.split("=", 1) for word in argv[5:-2])
            assert sent == feature["env"]
            if layer == "gpu":
                assert sent["PHOENIX_NVIDIA_RUNFILE_URL"] == url
            else:
                assert sent["PHOENIX_DOCKER_VERSION"] == pin


# ------------------------------------------------------------------------------- raw lxc.* config lines


@given(profile=value)
def test_raw_config_lines_stay_one_line_each(profile: str) -> None:
    """Read as PVE reads /etc/pve/lxc/<vmid>.conf: one `key: value` per line."""
    ct = ENV.guests.containers[0].model_copy(update={"apparmor_profile": profile})
    try:
        lines = raw_lines(ct)
    except ValueError as error:
        assert "one plain line" in str(error)
        assert any(ord(c) < 0x20 or c == "\x7f" for c in profile) or profile != profile.strip()
        return
    conf = "\n".join(lines) + "\n"
    parsed = [line.partition(": ") for line in conf.split("\n") if line]
    assert [(k, v) for k, _, v in parsed] == [("lxc.apparmor.profile", profile)]


# ------------------------------------------------------------------------------- and the models refuse


@pytest.mark.parametrize(
    "key", [CR_KEY, "ssh-ed25519 AAAA x\ny", "ssh-ed25519 AAAA\x1b[2J", "ssh-ed25519 AAAA\x7f"]
)
def test_ssh_keys_with_control_characters_are_refused_naming_the_field(key: str) -> None:
    with pytest.raises(ValidationError) as raised:
        CloudInit.model_validate({"ssh_authorized_keys": [key]})
    assert "ssh_authorized_keys" in str(raised.value)


def test_a_plain_ssh_key_with_a_comment_is_accepted() -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPhoenixKey+/= alice@laptop (work)"
    assert CloudInit.model_validate({"ssh_authorized_keys": [key]}).ssh_authorized_keys == [key]


@pytest.mark.parametrize("bad", ["\r", "\n", "\x00", "\x1b", "\x7f", " "])
def test_runfile_urls_with_control_characters_are_refused(bad: str) -> None:
    url = f"https://mirror.lan/580.76.05/NVIDIA-Linux-x86_64-580.76.05.run{bad}x"
    with pytest.raises(ValidationError) as raised:
        NvidiaDriver.model_validate({"version": "580.76.05", "runfile_url": url, "sha256": "0" * 64})
    assert "runfile_url" in str(raised.value)


def test_a_runfile_url_with_shell_metacharacters_is_a_url_and_is_quoted() -> None:
    """``;`` and ``#`` are legal in URLs (RFC 3986); the renderers quote them, so the model keeps them."""
    url = EVIL_URL.replace("${IFS}", "")
    driver = NvidiaDriver.model_validate({"version": "580.76.05", "runfile_url": url, "sha256": "0" * 64})
    assert driver.runfile_url == url
