"""The cloud-dev stack under mocks: resources, parents, data edges, the security group, the bucket's
settings, the user-data and the exports. The mocks answer the AMI/VPC invokes the way EC2 would."""

from __future__ import annotations

import json
import runpy
import shutil
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from phoenix_components.components.cloud import build_cloud
from phoenix_components.config.cloud import load_cloud_environment
from phoenix_components.render.errors import AmiNotFoundError
from tests.mocks.test_program import run_program, stack_outputs
from tests.support.recording import RecordingMonitor, Registration, install

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
STACK = "cloud-dev"
PUBLIC_IP = "198.51.100.7"
IMAGE = {
    "imageId": "ami-0newest",
    "name": "debian-12-amd64-20250801-2190",
    "architecture": "x86_64",
    "creationDate": "2025-08-01T10:00:00.000Z",
    "deprecationTime": "2099-08-01T10:00:00.000Z",
    "state": "available",
    "ownerId": "136693071363",
}
SECRETS = {"phoenix:pvePassword": "hunter2-pve-secret", "phoenix:sshPrivateKey": "-----BEGIN KEY-----s3cr3t"}


class Ec2Mocks(pulumi.runtime.Mocks):
    """Outputs = inputs plus what AWS computes (bucket name, ARNs, public IP); invokes answered like EC2."""

    def __init__(self, image: dict[str, Any]) -> None:
        self.image = image
        self.invokes: list[pulumi.runtime.MockCallArgs] = []
        self.providers: dict[str, str] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        outs = dict(args.inputs)
        self.providers[args.name] = args.provider
        rid = f"{args.name}-id"
        if args.typ == "aws:s3/bucket:Bucket":
            rid = outs["bucket"] = f"{args.inputs['bucketPrefix']}20250801abcdef"
            outs["arn"] = f"arn:aws:s3:::{rid}"
        elif args.typ == "aws:ec2/instance:Instance":
            outs["publicIp"] = PUBLIC_IP
        elif args.typ in ("aws:iam/role:Role", "aws:iam/instanceProfile:InstanceProfile"):
            outs["name"] = rid
            outs["arn"] = f"arn:aws:iam::123456789012:role/{rid}"
        return rid, outs

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        self.invokes.append(args)
        if args.token == "aws:ec2/getAmi:getAmi":
            return dict(self.image)
        if args.token == "aws:ec2/getVpc:getVpc":
            return {"id": "vpc-default", "cidrBlock": "172.31.0.0/16", "default": True}
        if args.token == "aws:ec2/getSubnets:getSubnets":
            return {"id": "subnets", "ids": ["subnet-bbb", "subnet-aaa"]}
        return {}


@pytest.fixture
def mocks() -> Ec2Mocks:
    return Ec2Mocks(IMAGE)


@pytest.fixture
def monitor(mocks: Ec2Mocks) -> RecordingMonitor:
    monitor = install(STACK, {"phoenix:environment": STACK}, mocks=mocks)
    pulumi.runtime.set_all_config({"phoenix:environment": STACK, **SECRETS}, list(SECRETS))
    return monitor


def _by_type(monitor: RecordingMonitor, typ: str) -> list[Registration]:
    return [r for r in monitor.registrations if r.type == typ]


def _one(monitor: RecordingMonitor, typ: str) -> Registration:
    found = _by_type(monitor, typ)
    assert len(found) == 1, f"{typ}: {[r.name for r in found]}"
    return found[0]


def test_the_stack_declares_network_cache_and_instance_in_the_configured_region(
    monitor: RecordingMonitor, mocks: Ec2Mocks
) -> None:
    env = load_cloud_environment(CONFIG, STACK)
    run_program(lambda: build_cloud(env))
    regs = monitor.by_name()

    provider = _one(monitor, "pulumi:providers:aws")
    assert provider.inputs["region"] == "us-east-1"
    # Providers take their nested config JSON-encoded.
    assert json.loads(provider.inputs["defaultTags"])["tags"]["phoenix:environment"] == STACK
    components = {"network": "Network", "model-cache": "ModelCache", "gpu": "GpuInstance"}
    for name, kind in components.items():
        assert regs[name].type == f"phoenix:cloud:{kind}"
        assert not regs[name].custom
    children = {
        "network": [f"network-{s}" for s in ("vpc", "subnet", "igw", "routes", "routes-subnet")],
        "model-cache": [f"model-cache-{s}" for s in ("bucket", "public-access", "ownership", "versioning")]
        + ["model-cache-sse"],
        "gpu": [f"gpu-{s}" for s in ("sg", "role", "model-cache", "profile", "instance")],
    }
    for parent, names in children.items():
        for name in names:
            assert regs[name].parent == regs[parent].urn, name
            # Every AWS resource goes through the one regional provider (inherited from the component).
            assert mocks.providers[name].startswith(provider.urn + "::"), name
    assert {r.name for r in monitor.registrations if r.custom} == {"aws"} | {
        n for names in children.values() for n in names
    }

    vpc, subnet = regs["network-vpc"], regs["network-subnet"]
    assert vpc.inputs["cidrBlock"] == "10.42.0.0/16"
    assert subnet.inputs["cidrBlock"] == "10.42.1.0/24"
    assert subnet.inputs["availabilityZone"] == "us-east-1a"
    assert subnet.inputs["mapPublicIpOnLaunch"] is True
    routes = regs["network-routes"]
    assert routes.inputs["routes"] == [{"cidrBlock": "0.0.0.0/0", "gatewayId": "network-igw-id"}]
    assert regs["network-igw"].urn in routes.dependencies
    assert {subnet.urn, routes.urn} <= set(regs["network-routes-subnet"].dependencies)


def test_the_instance_depends_on_its_security_group_subnet_and_profile(monitor: RecordingMonitor) -> None:
    env = load_cloud_environment(CONFIG, STACK)
    run_program(lambda: build_cloud(env))
    regs = monitor.by_name()
    instance = regs["gpu-instance"]

    assert {regs["gpu-sg"].urn, regs["network-subnet"].urn, regs["gpu-profile"].urn} <= set(
        instance.dependencies
    )
    assert instance.inputs["instanceType"] == "g5.xlarge"
    assert instance.inputs["ami"] == "ami-0newest"
    assert instance.inputs["subnetId"] == "network-subnet-id"
    assert instance.inputs["vpcSecurityGroupIds"] == ["gpu-sg-id"]
    assert instance.inputs["iamInstanceProfile"] == "gpu-profile-id"
    assert instance.inputs["userDataReplaceOnChange"] is True
    assert instance.inputs["metadataOptions"]["httpTokens"] == "required"
    assert instance.inputs["rootBlockDevice"] == {
        "volumeSize": 200,
        "volumeType": "gp3",
        "encrypted": True,
        "deleteOnTermination": True,
    }
    assert regs["gpu-sg"].inputs["vpcId"] == "network-vpc-id"


def test_the_security_group_admits_ssh_and_vllm_from_the_configured_cidrs_only(
    monitor: RecordingMonitor,
) -> None:
    env = load_cloud_environment(CONFIG, STACK)
    run_program(lambda: build_cloud(env))
    group = monitor.by_name()["gpu-sg"]

    ingress = group.inputs["ingress"]
    assert sorted((r["fromPort"], r["toPort"], r["protocol"]) for r in ingress) == [
        (22, 22, "tcp"),
        (8000, 8000, "tcp"),
    ]
    assert all(r["cidrBlocks"] == ["203.0.113.0/24"] for r in ingress)
    assert not any(r.get("ipv6CidrBlocks") for r in ingress)
    assert group.inputs["egress"] == [
        {"protocol": "-1", "fromPort": 0, "toPort": 0, "cidrBlocks": ["0.0.0.0/0"]}
    ]


def test_the_model_cache_is_versioned_encrypted_private_and_owner_enforced(monitor: RecordingMonitor) -> None:
    env = load_cloud_environment(CONFIG, STACK)
    run_program(lambda: build_cloud(env))
    regs = monitor.by_name()
    bucket = regs["model-cache-bucket"]
    name = "phoenix-cloud-dev-models-20250801abcdef"

    assert bucket.inputs["bucketPrefix"] == "phoenix-cloud-dev-models-"
    assert bucket.inputs.get("forceDestroy") is False
    settings = {
        "model-cache-versioning": {"versioningConfiguration": {"status": "Enabled"}},
        "model-cache-sse": {"rules": [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}}]},
        "model-cache-public-access": {
            "blockPublicAcls": True,
            "blockPublicPolicy": True,
            "ignorePublicAcls": True,
            "restrictPublicBuckets": True,
        },
        "model-cache-ownership": {"rule": {"objectOwnership": "BucketOwnerEnforced"}},
    }
    for child, expected in settings.items():
        reg = regs[child]
        assert reg.inputs["bucket"] == name, child
        assert bucket.urn in reg.dependencies, child
        assert {k: reg.inputs[k] for k in expected} == expected, child

    policy = json.loads(regs["gpu-model-cache"].inputs["policy"])
    resources = sorted(r for s in policy["Statement"] for r in s["Resource"])
    assert resources == [f"arn:aws:s3:::{name}", f"arn:aws:s3:::{name}/*"]
    assert bucket.urn in regs["gpu-model-cache"].dependencies


def test_user_data_runs_the_chain_feature_scripts_on_ec2_with_the_pinned_versions(
    monitor: RecordingMonitor,
) -> None:
    env = load_cloud_environment(CONFIG, STACK)
    run_program(lambda: build_cloud(env))
    text = monitor.by_name()["gpu-instance"].inputs["userData"]
    chain = json.loads((CONFIG / "chain.json").read_text())["layers"]

    assert text.startswith("#cloud-config\n")
    document = yaml.safe_load(text)
    files = {f["path"]: f["content"] for f in document["write_files"]}
    for feature in ("base_setup", "nvidia", "docker", "vllm"):
        assert files[f"/opt/phoenix/features/{feature}.sh"] == (CONFIG / f"features/{feature}.sh").read_text()
    runner = files["/opt/phoenix/run-features.sh"]
    assert document["runcmd"] == [["bash", "/opt/phoenix/run-features.sh"]]
    lines = [line for line in runner.splitlines() if line.startswith("env ")]
    order = [line.rsplit("/", 1)[1] for line in lines]
    assert order == ["base_setup.sh", "nvidia.sh", "docker.sh", "vllm.sh"]
    assert all("PHOENIX_TARGET=ec2" in line for line in lines)
    nvidia, docker, vllm = lines[1], lines[2], lines[3]
    assert f"PHOENIX_NVIDIA_VERSION={chain['gpu']['versions']['nvidia']}" in nvidia
    assert "PHOENIX_NVIDIA_SHA256=219be636" in nvidia
    assert f"PHOENIX_CONTAINERD_VERSION={chain['docker']['versions']['containerd']}" in docker
    assert f"'PHOENIX_DOCKER_VERSION={chain['docker']['versions']['docker']}'" in docker  # quoted: ~ and :
    assert f"PHOENIX_VLLM_VERSION={chain['vllm']['versions']['vllm']}" in vllm
    assert "--served-model-name" in files["/etc/systemd/system/vllm.service"]
    assert (
        "PHOENIX_MODEL_CACHE_BUCKET=phoenix-cloud-dev-models-20250801abcdef"
        in files["/etc/phoenix/model-cache.env"]
    )


def test_the_ami_lookup_asks_for_the_criteria_and_its_answer_is_checked(
    monitor: RecordingMonitor, mocks: Ec2Mocks
) -> None:
    env = load_cloud_environment(CONFIG, STACK)
    run_program(lambda: build_cloud(env))
    (lookup,) = [c for c in mocks.invokes if c.token == "aws:ec2/getAmi:getAmi"]
    assert lookup.args["owners"] == ["136693071363"]
    assert lookup.args["mostRecent"] is True
    assert lookup.args["includeDeprecated"] is False
    filters = {f["name"]: f["values"] for f in lookup.args["filters"]}
    assert filters["name"] == ["debian-12-amd64-*"]
    assert filters["architecture"] == ["x86_64"]


def test_a_deprecated_ami_stops_the_program(monitor: RecordingMonitor, mocks: Ec2Mocks) -> None:
    mocks.image = {**IMAGE, "deprecationTime": "2020-01-01T00:00:00.000Z"}
    env = load_cloud_environment(CONFIG, STACK)
    with pytest.raises(AmiNotFoundError, match="1 deprecated"):
        run_program(lambda: build_cloud(env))
    assert "gpu-instance" not in monitor.by_name()


def test_exports_and_no_secret_material_anywhere(monitor: RecordingMonitor) -> None:
    env = load_cloud_environment(CONFIG, STACK)

    def program() -> None:
        for name, value in build_cloud(env).items():
            pulumi.export(name, value)

    run_program(program)
    outputs = stack_outputs()
    assert outputs == {
        "environment": STACK,
        "region": "us-east-1",
        "instance_id": "gpu-instance-id",
        "public_ip": PUBLIC_IP,
        "ami": "ami-0newest",
        "vllm_endpoint": f"http://{PUBLIC_IP}:8000/v1",
        "model_cache_bucket": "phoenix-cloud-dev-models-20250801abcdef",
    }
    everything = json.dumps([r.inputs for r in monitor.registrations], default=str) + json.dumps(outputs)
    for secret in SECRETS.values():
        assert secret not in everything


def test_default_vpc_mode_creates_no_network_and_uses_the_default_subnet(
    monitor: RecordingMonitor, mocks: Ec2Mocks, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    shutil.copytree(CONFIG, config)
    cloud_file = config / "environments" / STACK / "cloud.json"
    cloud = json.loads(cloud_file.read_text())
    cloud["network"]["mode"] = "default"
    cloud_file.write_text(json.dumps(cloud))
    env = load_cloud_environment(config, STACK)

    run_program(lambda: build_cloud(env))
    types = {r.type for r in monitor.registrations}
    assert not types & {"aws:ec2/vpc:Vpc", "aws:ec2/subnet:Subnet", "aws:ec2/internetGateway:InternetGateway"}
    regs = monitor.by_name()
    assert regs["gpu-instance"].inputs["subnetId"] == "subnet-aaa"  # the first by id, not by list order
    assert regs["gpu-sg"].inputs["vpcId"] == "vpc-default"
    (subnets,) = [c for c in mocks.invokes if c.token == "aws:ec2/getSubnets:getSubnets"]
    filters = {f["name"]: f["values"] for f in subnets.args["filters"]}
    assert filters == {
        "vpc-id": ["vpc-default"],
        "default-for-az": ["true"],
        "availability-zone": ["us-east-1a"],
    }


def test_main_builds_the_cloud_stack_for_its_stack_file(monitor: RecordingMonitor) -> None:
    run_program(lambda: runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__"))
    assert monitor.by_name()["gpu"].type == "phoenix:cloud:GpuInstance"
    assert "chain" not in monitor.by_name(), "a cloud stack builds no template chain"
    assert stack_outputs()["vllm_endpoint"] == f"http://{PUBLIC_IP}:8000/v1"


def test_an_invalid_cloud_config_stops_the_program_before_any_resource(
    monitor: RecordingMonitor, tmp_path: Path
) -> None:
    from phoenix_components.program import load_stack_environment

    config = tmp_path / "config"
    shutil.copytree(CONFIG, config)
    cloud_file = config / "environments" / STACK / "cloud.json"
    cloud = json.loads(cloud_file.read_text())
    cloud["network"]["allowed_ingress"] = ["0.0.0.0/0"]
    cloud_file.write_text(json.dumps(cloud))
    with pytest.raises(pulumi.RunError, match=r"cloud.json: network.allowed_ingress: 0.0.0.0/0 opens SSH"):
        load_stack_environment(config)
    assert monitor.registrations == []
