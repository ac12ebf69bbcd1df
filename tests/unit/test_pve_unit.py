"""The pure parts of the PVE channel: root@pam rule, lock wording, backoff, UPIDs, no secret in reprs."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from providers.base import HostProvider
from providers.channels.pve import (
    PveClient,
    PveParamError,
    PveStats,
    RetryPolicy,
    backoff_delay,
    client_for,
    close_clients,
    is_lock_error,
    is_transient_read_failure,
    is_upid,
    parse_property_string,
    parse_upid,
    poll_intervals,
    root_only_operations,
    task_succeeded,
)
from providers.channels.targets import ApiTarget, Credentials
from providers.errors import InvalidTargetError, MissingCredentialsError, NoTargetError, PvePermissionError

PASSWORD = "pw-Zq8v!unit"
TOKEN_SECRET = "5e1c7a3e-unit-token-secret"
TARGET = ApiTarget(url="https://pve.example:8006", node="pve1")
TOKEN_TARGET = ApiTarget(url="https://pve.example:8006", node="pve1", token_id="root@pam!phoenix")


# ------------------------------------------------------------------------------ root@pam rule


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"hostname": "ct", "memory": 2048, "net0": "name=eth0,bridge=vmbr0"}, []),
        ({"features": "nesting=1"}, []),
        ({"features": "nesting=0"}, []),
        ({"rootfs": "local-zfs:8", "mp0": "local-zfs:16,mp=/data"}, []),
        ({"mp0": "local-zfs:subvol-100-disk-1,mp=/data"}, []),
        ({"dev0": "/dev/nvidia0,gid=44"}, ["device passthrough (dev0)"]),
        (
            {"dev0": "/dev/nvidia0", "dev1": "/dev/nvidiactl"},
            ["device passthrough (dev0)", "device passthrough (dev1)"],
        ),
        ({"features": "nesting=1,keyctl=1"}, ["feature flag keyctl (features)"]),
        ({"features": "fuse=1,mknod=1"}, ["feature flag fuse (features)", "feature flag mknod (features)"]),
        ({"hookscript": "local:snippets/hook.sh"}, ["hookscript"]),
        ({"mp0": "/srv/models,mp=/models"}, ["bind mount mp0 (/srv/models)"]),
        ({"mp1": "volume=/srv/models,mp=/models,ro=1"}, ["bind mount mp1 (/srv/models)"]),
        ({"mp2": "/dev/sdb1,mp=/disk"}, ["device mount mp2 (/dev/sdb1)"]),
        (
            {"unprivileged": 0, "features": "nesting=1"},
            ["feature flags on a privileged container (features)"],
        ),
        ({"delete": "dev0,hookscript,mp0"}, ["removing dev0", "removing hookscript"]),
    ],
)
def test_root_only_operations(config: dict[str, object], expected: list[str]) -> None:
    assert root_only_operations(config) == expected


def test_token_refused_for_root_only_config_before_any_request() -> None:
    client = PveClient(TOKEN_TARGET, Credentials(pve_token_secret=TOKEN_SECRET))
    with pytest.raises(PvePermissionError) as caught:
        client.set("nodes/pve1/lxc/100/config", dev0="/dev/nvidia0")
    message = str(caught.value)
    assert "device passthrough (dev0)" in message
    assert "root@pam!phoenix" in message and "phoenix:pvePassword" in message
    assert client.stats == PveStats()  # nothing was sent: the host in TOKEN_TARGET does not even exist


def test_non_root_user_refused_and_root_password_login_allowed() -> None:
    other = PveClient(
        ApiTarget(url="https://pve:8006", node="pve1", user="ops@pve"), Credentials(pve_password="x")
    )
    with pytest.raises(PvePermissionError, match="logs in as ops@pve"):
        other.require_root("hookscript")
    PveClient(TARGET, Credentials(pve_password=PASSWORD)).require_root("hookscript")


@pytest.mark.parametrize(
    ("target", "creds", "key"),
    [
        (TARGET, Credentials(), "phoenix:pvePassword"),
        (TOKEN_TARGET, Credentials(pve_password=PASSWORD), "phoenix:pveTokenSecret"),
    ],
)
def test_missing_secret_names_the_config_key(target: ApiTarget, creds: Credentials, key: str) -> None:
    with pytest.raises(MissingCredentialsError, match=key):
        PveClient(target, creds)


def test_malformed_token_id_is_an_invalid_target() -> None:
    target = ApiTarget(url="https://pve:8006", node="pve1", token_id="phoenix")
    with pytest.raises(InvalidTargetError, match="user@realm!name"):
        PveClient(target, Credentials(pve_token_secret=TOKEN_SECRET))


# ------------------------------------------------------------------------------ classification


@pytest.mark.parametrize(
    "message",
    [
        "CT is locked (backup)",
        "VM is locked (migrate)",
        "CT is locked (disk)\n",
        "can't lock file '/run/lock/lxc/pve-config-100.lock' - got timeout",  # pve-container
        "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout",  # qemu-server
        "can't lock file '/var/lock/pve-manager/pve-storage-local-zfs' - got timeout",  # parallel clones
        "cfs-lock 'file-user_cfg' error: got lock request timeout",
        "unable to create CT 105 - can't lock file '/run/lock/lxc/pve-config-105.lock' - got timeout",
    ],
)
def test_lock_errors_recognised(message: str) -> None:
    assert is_lock_error(message)


@pytest.mark.parametrize(
    "message",
    [
        "Configuration file 'nodes/pve1/lxc/100.conf' does not exist",
        "Parameter verification failed.",
        "CT 100 already running",
        "unable to lock the door",  # not PVE's wording
        "clone failed: unexpected error",
    ],
)
def test_other_errors_are_not_lock_errors(message: str) -> None:
    assert not is_lock_error(message)


@pytest.mark.parametrize(
    ("status", "message", "retry"),
    [
        (500, "internal error", True),
        (503, "Service Unavailable", True),
        (595, "No route to host", True),
        (596, "Connection timed out", True),
        (500, "Configuration file 'nodes/pve1/lxc/100.conf' does not exist", False),
        (501, "Method 'GET /x' not implemented", False),
        (400, "Parameter verification failed.", False),
        (404, "Not Found", False),
    ],
)
def test_transient_read_failures(status: int, message: str, retry: bool) -> None:
    assert is_transient_read_failure(status, message) is retry


@pytest.mark.parametrize(
    ("exitstatus", "ok"),
    [("OK", True), ("WARNINGS: 2", True), ("clone failed: unexpected error", False), ("", False)],
)
def test_task_success(exitstatus: str, ok: bool) -> None:
    assert task_succeeded(exitstatus) is ok


def test_parse_upid() -> None:
    upid = "UPID:pve1:000003E8:00001B58:6B078442:vzclone:100:root@pam!phoenix:"
    assert parse_upid(upid) == {
        "node": "pve1",
        "pid": "000003E8",
        "pstart": "00001B58",
        "starttime": "6B078442",
        "type": "vzclone",
        "id": "100",
        "user": "root@pam!phoenix",
    }
    with pytest.raises(ValueError, match="UPID"):
        parse_upid("not-a-upid")


# ------------------------------------------------------------------------------ backoff and polling


@given(attempt=st.integers(min_value=0, max_value=10_000), jitter=st.floats(min_value=0.0, max_value=1.0))
def test_backoff_is_bounded_and_jittered(attempt: int, jitter: float) -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=8.0)
    ceiling = min(8.0, 0.5 * 2 ** min(attempt, 30))
    delay = backoff_delay(attempt, policy, jitter)
    assert ceiling / 2 <= delay <= ceiling <= policy.max_delay


def test_backoff_schedule_doubles_then_caps() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=8.0)
    assert [backoff_delay(n, policy, 0.999999) for n in range(7)] == pytest.approx([0.5, 1, 2, 4, 8, 8, 8])
    # Every retry that fits the lock budget: a bounded count, not an endless loop.
    budget, spent, tries = 120.0, 0.0, 0
    while spent < budget:
        spent += backoff_delay(tries, policy, 0.0)
        tries += 1
    assert tries < 40


def test_poll_interval_grows_and_is_capped() -> None:
    intervals = poll_intervals(RetryPolicy(poll_initial=0.1, poll_max=2.0))
    taken = [next(intervals) for _ in range(12)]
    assert taken[0] == 0.1
    assert all(b >= a for a, b in zip(taken, taken[1:], strict=False))
    assert max(taken) == 2.0


# ------------------------------------------------------------------------------ secrets


def test_no_secret_in_repr_error_or_pickle() -> None:
    client = PveClient(TARGET, Credentials(pve_password=PASSWORD))
    token_client = PveClient(TOKEN_TARGET, Credentials(pve_token_secret=TOKEN_SECRET))
    for text in (repr(client), str(client), repr(token_client), repr(client.credentials)):
        assert PASSWORD not in text and TOKEN_SECRET not in text
    assert "root@pam!phoenix" in repr(token_client)
    with pytest.raises(TypeError, match="client_for"):
        pickle.dumps(client)
    error = PveParamError("pve", "Parameter verification failed.", {"net0": "bad"}, status=400, path="PUT /x")
    assert "net0: bad" in str(error) and error.errors == {"net0": "bad"}


def test_client_for_caches_per_target_and_replaces_on_new_secret() -> None:
    try:
        first = client_for(TARGET, Credentials(pve_password=PASSWORD))
        assert client_for(TARGET, Credentials(pve_password=PASSWORD)) is first
        assert client_for(TOKEN_TARGET, Credentials(pve_token_secret=TOKEN_SECRET)) is not first
        rotated = client_for(TARGET, Credentials(pve_password="rotated"))
        assert rotated is not first and client_for(TARGET, Credentials(pve_password="rotated")) is rotated
    finally:
        close_clients()


def test_host_provider_pve_needs_an_api_target() -> None:
    with pytest.raises(NoTargetError, match="no api_target"):
        HostProvider().pve()
    provider = HostProvider(api_target=TARGET, _credentials=Credentials(pve_password=PASSWORD))
    try:
        assert provider.pve() is client_for(TARGET, Credentials(pve_password=PASSWORD))
    finally:
        close_clients()


def test_property_strings_parse_into_the_positional_part_and_the_keyed_parts() -> None:
    assert parse_property_string("local-zfs:8,mp=/data, backup=0") == (
        "local-zfs:8",
        {"mp": "/data", "backup": "0"},
    )
    assert parse_property_string("nesting=1,keyctl=1") == ("", {"nesting": "1", "keyctl": "1"})
    assert parse_property_string("name=eth0,bridge=vmbr0,ip=dhcp") == (
        "",
        {"name": "eth0", "bridge": "vmbr0", "ip": "dhcp"},
    )
    assert parse_property_string("") == ("", {})


def test_a_upid_answer_is_waited_for_and_any_other_answer_passes_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    upid = "UPID:pve1:000003E8:00001B58:6B078442:resize:100:root@pam:"
    assert is_upid(upid) and not is_upid(None) and not is_upid({"data": 1})
    client = PveClient(TARGET, Credentials(pve_password=PASSWORD))
    waited: list[tuple[str, float, str]] = []

    def wait_task(answer: str, *, timeout: float, step: str) -> dict[str, str]:
        waited.append((answer, timeout, step))
        return {"status": "stopped", "exitstatus": "OK"}

    monkeypatch.setattr(client, "wait_task", wait_task)
    assert client.wait_if_task(upid, timeout=30, step="resize") == {"status": "stopped", "exitstatus": "OK"}
    assert client.wait_if_task(None, timeout=30, step="resize") is None
    assert waited == [(upid, 30, "resize")]
