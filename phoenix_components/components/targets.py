"""Where the providers connect, from the host config: plain, picklable targets (no secrets)."""

from __future__ import annotations

from phoenix_components.config.models import Host
from providers.channels.targets import ApiTarget, SshTarget


def ssh_target(host: Host) -> SshTarget:
    return SshTarget(host=host.ssh.host, port=host.ssh.port, user=host.ssh.user, host_key=host.ssh.host_key)


def api_target(host: Host) -> ApiTarget:
    return ApiTarget(
        url=host.api.endpoint,
        node=host.node,
        user=host.api.user,
        token_id=host.api.token_id if host.api.auth == "token" else None,
        verify=host.api.verify_tls,
        max_parallel_tasks=host.max_parallel_tasks,
    )
