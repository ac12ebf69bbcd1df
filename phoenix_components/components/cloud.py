"""The AWS cloud stack as Pulumi components: a GPU instance running the chain's features, beside on-prem.

``build_cloud(env)`` declares, all through one ``aws`` provider pinned to ``cloud.json``'s region:

- ``phoenix:cloud:Network``     a VPC, public subnet, internet gateway and route table, or (``mode: default``)
  lookups of the account's default VPC and subnet;
- ``phoenix:cloud:ModelCache``  a private S3 bucket: versioned, SSE-S3 encrypted, public access blocked, owner
  enforced;
- ``phoenix:cloud:GpuInstance`` a security group (SSH and the vLLM port from ``allowed_ingress`` only), an
  instance role that may use the model cache, and the instance booted from the AMI :func:`pick_ami` chose,
  with the cloud-init user-data of :func:`ec2_user_data`.

No credentials are read or stored: the provider takes them from the AWS environment/profile as usual.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from phoenix_components.config.cloud import CloudEnvironment
from phoenix_components.config.cloud_models import AmiCriteria, Cloud, CloudNetwork, ModelCache
from phoenix_components.render.cloud import IMAGE_KEYS, ec2_user_data, pick_ami

SSH_PORT = 22
ALL_TRAFFIC = "0.0.0.0/0"


def cache_policy(bucket_arn: str) -> str:
    """IAM policy for the instance: list the bucket, read and write its objects, nothing else."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [bucket_arn]},
                {
                    "Effect": "Allow",
                    "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                    "Resource": [f"{bucket_arn}/*"],
                },
            ],
        },
        sort_keys=True,
    )


EC2_TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    },
    sort_keys=True,
)


@dataclass(frozen=True)
class VpcArgs:
    spec: CloudNetwork


class Vpc(pulumi.ComponentResource):
    """Where the instance lives: ``vpc_id``, and ``subnet_id``, a public subnet routed to the internet."""

    vpc_id: pulumi.Output[str]
    subnet_id: pulumi.Output[str]

    def __init__(self, name: str, args: VpcArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        # The type token is the class's old name: URNs in state carry it, and a new one would replace.
        super().__init__("phoenix:cloud:Network", name, None, opts)
        spec = args.spec
        child = pulumi.ResourceOptions(parent=self)
        if spec.mode == "default":
            invoke = pulumi.InvokeOutputOptions(parent=self)
            vpc = aws.ec2.get_vpc_output(default=True, opts=invoke)
            zone = [] if spec.availability_zone is None else [("availability-zone", spec.availability_zone)]
            filters = vpc.id.apply(
                lambda vpc_id: [
                    aws.ec2.GetSubnetsFilterArgs(name=key, values=[value])
                    for key, value in [("vpc-id", vpc_id), ("default-for-az", "true"), *zone]
                ]
            )
            subnets = aws.ec2.get_subnets_output(filters=filters, opts=invoke)
            self.vpc_id = vpc.id
            # Sorted, so the same subnet is chosen on every run whatever order EC2 lists them in.
            self.subnet_id = subnets.ids.apply(lambda ids: sorted(ids)[0])
        else:
            vpc_resource = aws.ec2.Vpc(
                f"{name}-vpc",
                cidr_block=spec.vpc_cidr,
                enable_dns_support=True,
                enable_dns_hostnames=True,
                opts=child,
            )
            subnet = aws.ec2.Subnet(
                f"{name}-subnet",
                vpc_id=vpc_resource.id,
                cidr_block=spec.subnet_cidr,
                availability_zone=spec.availability_zone,
                map_public_ip_on_launch=True,
                opts=child,
            )
            gateway = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc_resource.id, opts=child)
            routes = aws.ec2.RouteTable(
                f"{name}-routes",
                vpc_id=vpc_resource.id,
                routes=[{"cidr_block": ALL_TRAFFIC, "gateway_id": gateway.id}],
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-routes-subnet", subnet_id=subnet.id, route_table_id=routes.id, opts=child
            )
            self.vpc_id = vpc_resource.id
            self.subnet_id = subnet.id
        self.register_outputs({"vpc_id": self.vpc_id, "subnet_id": self.subnet_id, "mode": spec.mode})


@dataclass(frozen=True)
class ModelCacheBucketArgs:
    spec: ModelCache


class ModelCacheBucket(pulumi.ComponentResource):
    """The model-weights bucket. Private by four settings, not by the absence of a policy."""

    bucket: pulumi.Output[str]
    arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: ModelCacheBucketArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("phoenix:cloud:ModelCache", name, None, opts)
        spec = args.spec
        child = pulumi.ResourceOptions(parent=self)
        bucket = aws.s3.Bucket(
            f"{name}-bucket", bucket_prefix=spec.bucket_prefix, force_destroy=spec.force_destroy, opts=child
        )
        aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        aws.s3.BucketOwnershipControls(
            f"{name}-ownership",
            bucket=bucket.id,
            rule={"object_ownership": "BucketOwnerEnforced"},
            opts=child,
        )
        aws.s3.BucketVersioning(
            f"{name}-versioning", bucket=bucket.id, versioning_configuration={"status": "Enabled"}, opts=child
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-sse",
            bucket=bucket.id,
            rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"}}],
            opts=child,
        )
        self.bucket = bucket.bucket
        self.arn = bucket.arn
        self.register_outputs({"bucket": self.bucket, "arn": self.arn})


@dataclass(frozen=True)
class GpuInstanceArgs:
    environment: CloudEnvironment
    network: Vpc
    cache: ModelCacheBucket


def _image_record(result: Any) -> dict[str, Any]:
    return {key: getattr(result, key, None) for key in IMAGE_KEYS}


def _ami_lookup(criteria: AmiCriteria, opts: pulumi.InvokeOutputOptions) -> pulumi.Output[str]:
    """EC2 narrows by owner, name, architecture and state; :func:`pick_ami` makes (and checks) the choice."""
    image = aws.ec2.get_ami_output(
        owners=[criteria.owner],
        most_recent=True,
        include_deprecated=False,
        filters=[
            {"name": "name", "values": [criteria.name_pattern]},
            {"name": "architecture", "values": [criteria.architecture]},
            {"name": "state", "values": ["available"]},
            {"name": "virtualization-type", "values": ["hvm"]},
        ],
        opts=opts,
    )
    return image.apply(lambda result: pick_ami([_image_record(result)], criteria))


class GpuInstance(pulumi.ComponentResource):
    """The GPU instance, its security group and its role. ``endpoint`` is vLLM's OpenAI URL (or None)."""

    instance_id: pulumi.Output[str]
    public_ip: pulumi.Output[str]
    ami: pulumi.Output[str]
    endpoint: pulumi.Output[str | None]

    def __init__(self, name: str, args: GpuInstanceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("phoenix:cloud:GpuInstance", name, None, opts)
        env, cloud = args.environment, args.environment.cloud
        child = pulumi.ResourceOptions(parent=self)
        ports = {"SSH": SSH_PORT} if cloud.vllm is None else {"SSH": SSH_PORT, "vLLM": cloud.vllm.server.port}
        sources = list(cloud.network.allowed_ingress)
        group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            vpc_id=args.network.vpc_id,
            description=f"Phoenix {env.name}: SSH and vLLM from allowed_ingress only",
            ingress=[
                aws.ec2.SecurityGroupIngressArgs(
                    protocol="tcp", from_port=port, to_port=port, cidr_blocks=sources, description=what
                )
                for what, port in ports.items()
            ],
            egress=[
                aws.ec2.SecurityGroupEgressArgs(
                    protocol="-1", from_port=0, to_port=0, cidr_blocks=[ALL_TRAFFIC]
                )
            ],
            opts=child,
        )
        role = aws.iam.Role(f"{name}-role", assume_role_policy=EC2_TRUST, opts=child)
        aws.iam.RolePolicy(
            f"{name}-model-cache", role=role.id, policy=args.cache.arn.apply(cache_policy), opts=child
        )
        profile = aws.iam.InstanceProfile(f"{name}-profile", role=role.name, opts=child)
        ami = _ami_lookup(cloud.instance.ami, pulumi.InvokeOutputOptions(parent=self))
        instance = aws.ec2.Instance(
            f"{name}-instance",
            ami=ami,
            instance_type=cloud.instance.type,
            subnet_id=args.network.subnet_id,
            vpc_security_group_ids=[group.id],
            associate_public_ip_address=True,
            iam_instance_profile=profile.name,
            key_name=cloud.instance.key_name,
            user_data=args.cache.bucket.apply(lambda bucket: ec2_user_data(env, bucket)),
            user_data_replace_on_change=True,
            root_block_device={
                "volume_size": cloud.instance.root_volume_gib,
                "volume_type": "gp3",
                "encrypted": True,
                "delete_on_termination": True,
            },
            metadata_options={"http_tokens": "required", "http_endpoint": "enabled"},
            tags={"Name": f"phoenix-{env.name}"},
            # A newer AMI is taken on an explicit replace, not on whichever `up` first sees it: a plain
            # re-run must change nothing, and a replace loses the instance's disk.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["ami"]),
        )
        self.instance_id = instance.id
        self.public_ip = instance.public_ip
        self.ami = instance.ami
        self.endpoint = _endpoint(instance.public_ip, cloud)
        self.register_outputs(
            {
                "instance_id": self.instance_id,
                "public_ip": self.public_ip,
                "ami": self.ami,
                "security_group_id": group.id,
                "endpoint": self.endpoint,
            }
        )


def _endpoint(public_ip: pulumi.Output[str], cloud: Cloud) -> pulumi.Output[str | None]:
    if cloud.vllm is None:
        return pulumi.Output.from_input(None)
    port = cloud.vllm.server.port
    return public_ip.apply(lambda ip: f"http://{ip}:{port}/v1")


def build_cloud(env: CloudEnvironment) -> dict[str, Any]:
    """Declare the cloud stack for ``env``; return the stack exports."""
    cloud = env.cloud
    provider = aws.Provider(
        "aws",
        region=cloud.region,
        default_tags={"tags": {"phoenix:environment": env.name, **cloud.tags}},
    )
    in_region = pulumi.ResourceOptions(providers=[provider])
    network = Vpc("network", VpcArgs(spec=cloud.network), in_region)
    cache = ModelCacheBucket("model-cache", ModelCacheBucketArgs(spec=cloud.model_cache), in_region)
    gpu = GpuInstance("gpu", GpuInstanceArgs(environment=env, network=network, cache=cache), in_region)
    return {
        "environment": env.name,
        "region": cloud.region,
        "instance_id": gpu.instance_id,
        "public_ip": gpu.public_ip,
        "ami": gpu.ami,
        "vllm_endpoint": gpu.endpoint,
        "model_cache_bucket": cache.bucket,
    }
