"""Pure rendering shared by the providers and `phoenix plan`: PVE params, raw lines, feature env, the unit."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from phoenix_components.config.cloud import load_cloud_environment
from phoenix_components.config.features import feature_env as one_feature_env
from phoenix_components.config.features import feature_pins
from phoenix_components.config.load import load_environment
from phoenix_components.config.models import Container, Dns, Network, Startup, VllmEngine
from phoenix_components.render.cloud import ec2_user_data
from phoenix_components.render.features import chain_feature_env, exec_argv
from phoenix_components.render.lxc import container_params, net0, raw_lines, startup
from phoenix_components.render.vllm import render_unit, systemd_quote
from providers.channels.command import render

ROOT = Path(__file__).resolve().parents[2]
ENV = load_environment(ROOT / "config", "dev")


def test_net0_keeps_the_configured_mac_vlan_and_firewall() -> None:
    net = Network(ip="10.0.10.5/24", gateway="10.0.10.1", mac="bc:24:11:00:00:05", vlan=20)
    assert (
        net0(net)
        == "name=eth0,bridge=vmbr0,ip=10.0.10.5/24,gw=10.0.10.1,hwaddr=BC:24:11:00:00:05,tag=20,firewall=1"
    )
    assert net0(Network(ip="dhcp", firewall=False)) == "name=eth0,bridge=vmbr0,ip=dhcp"


def test_gpu_container_params_pass_its_gpu_and_the_control_devices_only() -> None:
    ct = ENV.guests.containers[1]  # vllm-granite on GPU 1
    params = container_params(ct, {"models": "/mnt/models-ct202"}, {"0": 0, "1": 1})
    devices = sorted(v for k, v in params.items() if k.startswith("dev"))
    assert devices == sorted(
        f"{d},mode=0666"
        for d in ("/dev/nvidia1", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")
    )
    assert params["mp0"] == "/mnt/models-ct202,mp=/models"
    assert params["features"] == "nesting=1"
    assert "unprivileged" not in params  # inherited from the layer: a linked clone cannot change it


def test_a_container_without_gpus_gets_no_devices() -> None:
    ct = ENV.guests.containers[0].model_copy(update={"gpus": [], "vllm": None, "mounts": []})
    assert not [k for k in container_params(ct, {}) if k.startswith(("dev", "mp"))]


def test_the_apparmor_profile_is_a_raw_line() -> None:
    assert raw_lines(ENV.guests.containers[0]) == ["lxc.apparmor.profile: phoenix-lxc-gpu-docker"]


def test_a_declared_environment_is_lxc_environment_lines_with_the_names_for_systemd() -> None:
    spec = ENV.guests.containers[0].model_dump(mode="json")
    ct = Container.model_validate({**spec, "environment": {"HF_HOME": "/models/hf", "A_B": "x = $y 'z'"}})
    assert raw_lines(ct) == [
        "lxc.apparmor.profile: phoenix-lxc-gpu-docker",
        "lxc.environment: A_B=x = $y 'z'",
        "lxc.environment: HF_HOME=/models/hf",
        "lxc.environment: PHOENIX_GUEST_ENVIRONMENT=A_B,HF_HOME",
    ]


@pytest.mark.parametrize(
    ("environment", "refusal"),
    [
        ({"PHOENIX_GUEST_ENVIRONMENT": "A"}, "PHOENIX_\\* variables are Phoenix's own"),
        ({"container": "docker"}, "set by LXC itself"),
        ({"A": "trailing "}, "ending in blanks"),
        ({"A": "line\nbreak"}, "String should match pattern"),
        ({"1A": "x"}, "String should match pattern"),
    ],
)
def test_an_environment_value_pve_or_lxc_would_change_is_refused(
    environment: dict[str, str], refusal: str
) -> None:
    spec = ENV.guests.containers[0].model_dump(mode="json")
    with pytest.raises(ValidationError, match=refusal):
        Container.model_validate({**spec, "environment": environment})


def test_feature_env_carries_the_versions_pinned_by_the_introducing_layer() -> None:
    assert feature_pins(ENV.chain)["docker"].versions["nvidia_container_toolkit"] == "1.17.8-1"
    variables = chain_feature_env(ENV, ["docker", "vllm"], "vm")
    assert variables["PHOENIX_TARGET"] == "vm"
    assert variables["PHOENIX_DOCKER_VERSION"] == "5:28.2.2-1~debian.12~bookworm"
    assert variables["PHOENIX_NVIDIA_CONTAINER_TOOLKIT_VERSION"] == "1.17.8-1"
    assert variables["PHOENIX_VLLM_VERSION"] == "0.10.1.1"
    assert "PHOENIX_NVIDIA_SHA256" not in variables
    nvidia = chain_feature_env(ENV, ["nvidia"], "lxc")
    assert ENV.host.nvidia is not None
    assert nvidia["PHOENIX_NVIDIA_VERSION"] == ENV.host.nvidia.version


def test_every_feature_script_reads_exactly_the_variables_it_is_given() -> None:
    for feature in feature_pins(ENV.chain):
        script = (ROOT / "config/features" / f"{feature}.sh").read_text()
        for variable in chain_feature_env(ENV, [feature], "lxc"):
            if variable != "PHOENIX_TARGET":
                assert variable in script, f"{feature}.sh ignores {variable}"


def test_exec_argv_passes_the_environment_as_arguments_quoted_once() -> None:
    argv = exec_argv(201, {"PHOENIX_X": "a b;$(reboot)"})
    assert shlex.split(render(argv)) == [
        "pct",
        "exec",
        "201",
        "--",
        "env",
        "PHOENIX_X=a b;$(reboot)",
        "bash",
        "-s",
    ]


def test_unit_runs_vllm_serve_with_every_flag_escaped_for_systemd() -> None:
    engine = VllmEngine.model_validate(
        {
            "model": {"model": "org/m"},
            "server": {"served_model_name": "m"},
            "extra_args": ["--chat-template=%x$y"],
        }
    )
    unit = render_unit(engine, environment={"HF_HOME": "/models/.hf"})
    exec_line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_line.startswith('ExecStart="/opt/vllm/bin/vllm" "serve" "org/m"')
    assert '"--chat-template=%%x$$y"' in exec_line
    assert 'Environment="HF_HOME=/models/.hf"' in unit
    assert systemd_quote('a"b\\c') == '"a\\"b\\\\c"'
    assert "WantedBy=multi-user.target" in unit


def _ec2_feature_env(text: str) -> dict[str, dict[str, str]]:
    """Each feature's environment as the EC2 runner passes it: ``env K=V ... bash <dir>/<feature>.sh``."""
    files = {f["path"]: f["content"] for f in yaml.safe_load(text)["write_files"]}
    found: dict[str, dict[str, str]] = {}
    for line in files["/opt/phoenix/run-features.sh"].splitlines():
        argv = shlex.split(line)
        if argv[:1] == ["env"] and argv[-2] == "bash":
            feature = argv[-1].rsplit("/", 1)[1].removesuffix(".sh")
            found[feature] = dict(a.split("=", 1) for a in argv[1:-2])
    return found


def test_lxc_vm_and_ec2_run_a_feature_with_the_same_environment() -> None:
    """One feature, one environment: a layer's build (LXC), a VM's cloud-init and EC2's user-data send the
    same variables for the layer that introduces it; only PHOENIX_TARGET differs."""
    cloud = load_cloud_environment(ROOT / "config", "cloud-dev")
    assert ENV.host.nvidia == cloud.cloud.nvidia, "dev and cloud-dev run the same driver"
    ec2 = _ec2_feature_env(ec2_user_data(cloud, "bucket-1"))
    assert list(ec2) == cloud.cloud.features
    for feature, pin in feature_pins(ENV.chain).items():
        lxc = ENV.layer_feature_env(pin.layer, feature)
        vm = chain_feature_env(ENV, [feature], "vm")
        assert (lxc.pop("PHOENIX_TARGET"), vm.pop("PHOENIX_TARGET")) == ("lxc", "vm")
        assert vm == lxc, feature
        if feature in ec2:
            assert ec2[feature].pop("PHOENIX_TARGET") == "ec2"
            assert ec2[feature] == lxc, feature
    assert ec2["nvidia"]["PHOENIX_NVIDIA_VERSION"] == cloud.cloud.nvidia.version


def test_the_nvidia_feature_gets_the_driver_version_from_the_driver_on_every_target() -> None:
    """Not only from a pin: the EC2 copy of this rule used to drop PHOENIX_NVIDIA_VERSION."""
    assert ENV.host.nvidia is not None
    for target in ("lxc", "vm", "ec2"):
        variables = one_feature_env(target, "nvidia", {}, ENV.host.nvidia)
        assert variables == {
            "PHOENIX_NVIDIA_RUNFILE_URL": ENV.host.nvidia.runfile_url,
            "PHOENIX_NVIDIA_SHA256": ENV.host.nvidia.sha256,
            "PHOENIX_NVIDIA_VERSION": ENV.host.nvidia.version,
            "PHOENIX_TARGET": target,
        }


def test_startup_is_pve_property_string_only_when_configured() -> None:
    ct = ENV.guests.containers[0]
    assert "startup" not in container_params(ct, {"models": "/m"}, {"0": 0})  # absent stays absent
    assert container_params(ct, {"models": "/m"}, {"0": 0})["onboot"] == 1
    timed = ct.model_copy(update={"startup": Startup(order=2, up=30, down=10), "start_on_boot": False})
    params = container_params(timed, {"models": "/m"}, {"0": 0})
    assert (params["startup"], params["onboot"]) == ("order=2,up=30,down=10", 0)
    assert startup(Startup(up=0)) == "up=0"  # 0 is a value PVE takes, not an absent part


def test_more_nics_dns_and_tags_reach_the_params_only_when_configured() -> None:
    ct = ENV.guests.containers[0]
    plain = container_params(ct, {"models": "/m"}, {"0": 0})
    assert not {"net1", "nameserver", "searchdomain", "tags"} & set(plain)
    second = Network(bridge="vmbr1", ip="10.0.20.5/24", vlan=20, firewall=False)
    full = ct.model_copy(
        update={
            "networks": [second],
            "dns": Dns(nameserver=["10.0.10.53", "fd00::53"], searchdomain="lab.internal"),
            "tags": ["vllm", "GPU", "prod_1"],
        }
    )
    params = container_params(full, {"models": "/m"}, {"0": 0})
    assert params["net0"] == plain["net0"]  # net0 as it was
    assert params["net1"] == "name=eth1,bridge=vmbr1,ip=10.0.20.5/24,tag=20"
    assert (params["nameserver"], params["searchdomain"]) == ("10.0.10.53 fd00::53", "lab.internal")
    assert params["tags"] == "gpu;prod_1;vllm"  # lower-case and sorted, as PVE stores them
