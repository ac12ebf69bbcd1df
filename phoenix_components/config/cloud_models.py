"""``config/environments/<env>/cloud.json``: an AWS environment (a GPU instance beside the on-prem host).

A cloud environment has no ``host.json``: the "host" is one EC2 GPU instance that runs the same feature
scripts as the template chain (``config/features``), with the versions the chain pins, through cloud-init.
Single-record rules live here; facts that need the chain or the feature scripts are checked by
:mod:`phoenix_components.config.cloud`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, field_validator, model_validator

from phoenix_components.config.models import (
    PATTERN_RULES,
    Document,
    Ipv4Cidr,
    Model,
    Name,
    NvidiaDriver,
    VllmEngine,
    ipv4_network,
    once_each,
)

Region = Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-[0-9]{1,2}$")]
InstanceType = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")]
# An account id, or one of the aliases EC2 accepts in DescribeImages' Owners.
AmiOwner = Annotated[str, StringConstraints(pattern=r"^([0-9]{12}|amazon|aws-marketplace|self)$")]
# EC2's filter wildcards are `*` and `?`; the rest is what AMI names may hold.
AmiNamePattern = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9*?()\[\]./_ '@-]{3,128}$")]
# bucket_prefix: S3 appends a 26-character suffix, and a bucket name has at most 63 characters.
BucketPrefix = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{1,35}-$")]
Architecture = Literal["x86_64", "arm64"]

# GPU families with NVIDIA GPUs (g4ad carries AMD GPUs; the nvidia feature cannot serve it).
_NVIDIA_FAMILY = re.compile(r"^(g[4-9]|p[2-9])[a-z]*$")
_NOT_NVIDIA = frozenset({"g4ad"})
# A `g` right after the generation digit is Graviton: g5g (and c7g, m6gd …) run arm64.
_GRAVITON = re.compile(r"^[a-z]+[0-9]+g")


def instance_architecture(instance_type: str) -> Architecture:
    """``g5g.xlarge -> arm64``, ``g5.xlarge -> x86_64``."""
    return "arm64" if _GRAVITON.match(instance_type.split(".", 1)[0]) else "x86_64"


class AmiCriteria(Model):
    """Which AMI to boot: the newest available image of ``owner`` whose name matches, for the right CPU."""

    owner: AmiOwner = Field(description="account id (099720109477 = Canonical) or amazon / self")
    name_pattern: AmiNamePattern = Field(
        description="EC2 name filter, `*` and `?` wildcards, e.g. debian-12-amd64-*"
    )
    architecture: Architecture = "x86_64"


class CloudNetwork(Model):
    """``create``: a VPC, public subnet, internet gateway and route table of Phoenix's own.
    ``default``: the account's default VPC and its default subnet (no network resources created)."""

    mode: Literal["create", "default"] = "create"
    vpc_cidr: Ipv4Cidr = "10.42.0.0/16"
    subnet_cidr: Ipv4Cidr = "10.42.1.0/24"
    availability_zone: Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]+[a-z]$")] | None = Field(
        default=None, description="GPU types are not in every zone; pin one when the default has none"
    )
    allowed_ingress: Annotated[list[str], Field(min_length=1)] = Field(
        description="CIDRs that may reach SSH and the vLLM port, e.g. 203.0.113.7/32"
    )

    @field_validator("allowed_ingress")
    @classmethod
    def _ingress(cls, value: list[str]) -> list[str]:
        for cidr in value:
            if ipaddress.IPv4Network(ipv4_network(cidr)).prefixlen == 0:
                raise ValueError(f"{cidr} opens SSH and vLLM to the whole internet; list your own networks")
        return once_each(value, "a CIDR is")

    @model_validator(mode="after")
    def _subnet_in_vpc(self) -> CloudNetwork:
        if not ipaddress.IPv4Network(self.subnet_cidr).subnet_of(ipaddress.IPv4Network(self.vpc_cidr)):
            raise ValueError(f"subnet_cidr {self.subnet_cidr} is outside vpc_cidr {self.vpc_cidr}")
        return self


class Instance(Model):
    type: InstanceType = Field(description="an NVIDIA GPU type: g4dn, g5, g6, g6e, p4d, p5 …")
    ami: AmiCriteria
    root_volume_gib: Annotated[int, Field(ge=30, le=16384)] = Field(
        default=200, description="gp3, encrypted; the driver, Docker images and model weights live here"
    )
    key_name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9 ._:/=+@-]{1,255}$")] | None = Field(
        default=None, description="an existing EC2 key pair for SSH; none = no SSH key on the instance"
    )

    @field_validator("type")
    @classmethod
    def _nvidia_gpu(cls, value: str) -> str:
        family = value.split(".", 1)[0]
        if not _NVIDIA_FAMILY.match(family) or family in _NOT_NVIDIA:
            raise ValueError(f"{value} is not an NVIDIA GPU instance type (g4dn, g5, g6, g6e, p4d, p5 …)")
        return value

    @model_validator(mode="after")
    def _ami_fits_cpu(self) -> Instance:
        cpu = instance_architecture(self.type)
        if self.ami.architecture != cpu:
            raise ValueError(f"{self.type} runs {cpu}, but ami.architecture is {self.ami.architecture}")
        return self


class ModelCache(Model):
    """A private, versioned, SSE-encrypted S3 bucket the instance may read and write model weights in."""

    bucket_prefix: BucketPrefix = Field(description="S3 adds a unique suffix; end it with '-'")
    force_destroy: bool = Field(
        default=False, description="let `pulumi destroy` delete a bucket that still holds objects"
    )


class Cloud(Document):
    region: Region
    network: CloudNetwork
    instance: Instance
    features: Annotated[list[Name], Field(min_length=1)] = Field(
        description="feature scripts from config/features, run in this order by cloud-init"
    )
    nvidia: NvidiaDriver | None = Field(
        default=None, description="where the runfile comes from; the version must be the chain's pin"
    )
    vllm: VllmEngine | None = None
    model_cache: ModelCache
    tags: dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9 ._:/=+@-]{1,128}$")], str] = {}

    @field_validator("features")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return once_each(value, "a feature is")


PATTERN_RULES.update(
    {
        r"^([0-9]{12}|amazon|aws-marketplace|self)$": "a 12-digit AWS account id, amazon, aws-marketplace "
        "or self",
        r"^[A-Za-z0-9*?()\[\]./_ '@-]{3,128}$": "an EC2 name filter of 3 to 128 characters (letters, "
        "digits, `*`, `?`, brackets, `./_ '@-`)",
        r"^[a-z0-9-]+[a-z]$": "an availability zone, e.g. us-east-1a",
        r"^[a-z][a-z0-9-]*\.[a-z0-9]+$": "an EC2 instance type, e.g. g5.xlarge",
        r"^[A-Za-z0-9 ._:/=+@-]{1,255}$": "an EC2 key pair name of 1 to 255 characters",
        r"^[A-Za-z0-9 ._:/=+@-]{1,128}$": "an AWS tag key of 1 to 128 letters, digits, spaces or `._:/=+@-`",
        r"^[a-z0-9][a-z0-9-]{1,35}-$": "a bucket name prefix: lower-case letters, digits and `-`, ending in "
        "`-`, at most 37 characters",
        r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-[0-9]{1,2}$": "an AWS region, e.g. us-east-1",
    }
)
