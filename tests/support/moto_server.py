"""moto in server mode for boto3 code: a real HTTP S3/STS on 127.0.0.1, reset between tests.

Used through a fixture in each test module (``with moto_server() as aws: ...``); nothing starts at import.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config
from moto.server import ThreadedMotoServer

ACCOUNT = "123456789012"  # moto's default account: what sts get-caller-identity answers
REGION = "us-east-1"


@dataclass
class MotoAws:
    """The endpoint of a running moto server, and boto3 clients pointed at it."""

    endpoint: str
    calls: list[str] = field(default_factory=list)  # S3 operations made through client(record=True)

    def client(
        self, service: str, *, region: str = REGION, account: str | None = None, record: bool = False
    ) -> Any:
        client = boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=region,
            config=Config(retries={"max_attempts": 1}),
        )
        if account is not None:  # act as another AWS account (moto reads this header)

            def as_account(request: Any, **_: Any) -> None:
                request.headers["x-moto-account-id"] = account

            client.meta.events.register("before-sign.*.*", as_account)
        if record:
            client.meta.events.register(
                "before-call.*.*", lambda model, **_: self.calls.append(str(model.name))
            )
        return client


@contextmanager
def moto_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoAws]:
    """A moto server on a free loopback port, with fake credentials and no AWS config from the machine."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        yield MotoAws(endpoint)
    finally:
        # moto's backends are process-global: reset them so the next test starts from an empty account.
        requests.post(f"{endpoint}/moto-api/reset", timeout=10)
        server.stop()
