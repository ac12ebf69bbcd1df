"""Where a channel connects and with what: plain, picklable targets plus credentials read at configure.

A dynamic provider object is pickled (dill) into Pulumi state, so it holds only a :class:`SshTarget` /
:class:`ApiTarget` (host, port, user, pinned key: no secrets). Secrets arrive in the provider host through
``configure()`` from the stack's secret config (``phoenix:sshPrivateKey``, ``phoenix:pvePassword``,
``phoenix:pveTokenSecret``) or, for local tooling and the lab, from ``PHOENIX_*`` environment variables.
Live clients are opened lazily in the CRUD methods and shared per process (see ``providers.channels.ssh``
and ``providers.channels.pve``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SshTarget:
    """How to reach a host over SSH. ``host_key`` is a pinned ``SHA256:...`` fingerprint."""

    host: str
    port: int
    user: str
    host_key: str

    @property
    def label(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


@dataclass(frozen=True)
class ApiTarget:
    """How to reach the PVE API. ``token_id`` set means API-token auth, else root@pam password/ticket.

    ``verify`` is True (system CAs), False (only for a lab) or the path of a CA bundle.
    ``max_parallel_tasks`` bounds the PVE tasks this process has in flight on the host (see
    ``providers.channels.pve.PveClient.run_task``).
    """

    url: str
    node: str
    user: str = "root@pam"
    token_id: str | None = None
    verify: bool | str = True
    max_parallel_tasks: int = 4


@dataclass(frozen=True, repr=False)
class Credentials:
    """Secrets for one provider process. Never pickled into state: set in ``configure()`` only."""

    ssh_private_key: str | None = None
    ssh_key_file: str | None = None
    pve_password: str | None = None
    pve_token_secret: str | None = None

    def __repr__(self) -> str:  # never leak a secret through a traceback or log line
        return "Credentials(***)"

    def secrets(self) -> list[str]:
        return [s for s in (self.ssh_private_key, self.pve_password, self.pve_token_secret) if s]

    @classmethod
    def from_sources(cls, config: Any = None) -> Credentials:
        """Stack secret config first (``phoenix:<key>``), then ``PHOENIX_*`` environment variables."""

        def get(key: str, env: str) -> str | None:
            value = config.get(key) if config is not None else None
            return value or os.environ.get(env) or None

        return cls(
            ssh_private_key=get("sshPrivateKey", "PHOENIX_SSH_PRIVATE_KEY"),
            ssh_key_file=get("sshKeyFile", "PHOENIX_SSH_KEY_FILE"),
            pve_password=get("pvePassword", "PHOENIX_PVE_PASSWORD"),
            pve_token_secret=get("pveTokenSecret", "PHOENIX_PVE_TOKEN_SECRET"),
        )
