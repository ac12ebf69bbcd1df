"""Providers are pickled into Pulumi state: they must carry targets only, never credentials."""

import dill

from providers.base import HostProvider
from providers.channels.targets import Credentials, SshTarget


def test_credentials_are_not_pickled_with_the_provider() -> None:
    provider = HostProvider(ssh_target=SshTarget("pve1", 22, "root", "SHA256:abc"))
    provider._credentials = Credentials(pve_password="s3cret-pw")
    blob = dill.dumps(provider, recurse=True)
    assert b"s3cret-pw" not in blob
    restored = dill.loads(blob)
    assert restored.ssh_target == provider.ssh_target
    assert restored._credentials is None


def test_credentials_repr_hides_secrets(monkeypatch) -> None:
    monkeypatch.setenv("PHOENIX_PVE_PASSWORD", "from-env")
    creds = Credentials.from_sources()
    assert creds.pve_password == "from-env"
    assert "from-env" not in repr(creds)


class _Config:
    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    def get(self, key: str) -> str | None:
        return self.values.get(key)


def test_stack_config_wins_over_environment(monkeypatch) -> None:
    monkeypatch.setenv("PHOENIX_PVE_PASSWORD", "from-env")
    assert Credentials.from_sources(_Config({"pvePassword": "from-stack"})).pve_password == "from-stack"
