"""The PVE channel against fakepve: logins, tasks, lock retries, 5xx handling, the root@pam rule, secrets.

Attempt counts are read from the fake's own request log (an observer independent of the client) and
compared with the client's counters.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest

from providers.channels.pve import PveClient, PveParamError, is_missing
from providers.channels.targets import Credentials
from providers.errors import PveError, PveLockedError, PvePermissionError, PveTaskError, PveTaskTimeoutError
from tests.lab.pve import FAST_POLICY, NODE, OS_TEMPLATE, ZFS_STORAGE, PveLab

pytestmark = pytest.mark.lab

CT = f"nodes/{NODE}/lxc"


def make_ct(client: PveClient, vmid: int, *, template: bool = False) -> None:
    """A Debian container on local-zfs, made through the API (and turned into a template if asked)."""
    client.run_task(
        "POST",
        CT,
        timeout=10,
        step=f"create CT {vmid}",
        vmid=vmid,
        ostemplate=OS_TEMPLATE,
        storage=ZFS_STORAGE,
        rootfs=f"{ZFS_STORAGE}:8",
        hostname=f"ct{vmid}",
    )
    if template:
        client.run_task("POST", f"{CT}/{vmid}/template", timeout=10, step=f"template CT {vmid}")


# ------------------------------------------------------------------------------------ logins


def test_password_login_once_then_reads_on_the_ticket(fresh_pve: PveLab) -> None:
    client = fresh_pve.client()
    assert client.get("version")["release"] == fresh_pve.pve.release_version
    client.get("nodes")
    client.get(f"nodes/{NODE}/storage/local/content", content="vztmpl")
    assert client.stats.logins == 1 and client.stats.reads == 3 and client.stats.mutations == 0
    assert len(fresh_pve.requests("POST", "/access/ticket")) == 1


def test_one_kept_alive_connection_per_client(fresh_pve: PveLab) -> None:
    client = fresh_pve.client()
    client.get("version")
    session, _auth = client._ensure_session()  # internals on purpose: the connection pool is the claim
    for _ in range(20):
        client.get("version")
    assert client._ensure_session()[0] is session
    pools = session.get_adapter(fresh_pve.url).poolmanager.pools
    # The login POST goes out on its own; all 21 reads share one TLS connection.
    assert [pools[key].num_connections for key in pools.keys()] == [1]  # noqa: SIM118 - no __iter__


def test_concurrent_callers_share_one_relogin(fresh_pve: PveLab) -> None:
    client = fresh_pve.client()
    client.get("version")
    fresh_pve.call(fresh_pve.pve.revoke_tickets)
    errors: list[BaseException] = []

    def read() -> None:
        try:
            client.get("nodes")
        except PveError as error:
            errors.append(error)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == [] and client.stats.logins == 2 and client.stats.reads >= 9


def test_expired_ticket_logs_in_again_once(fresh_pve: PveLab) -> None:
    client = fresh_pve.client()
    client.get("version")
    fresh_pve.call(fresh_pve.pve.revoke_tickets)  # as if the 2-hour ticket ran out
    assert client.get("version")["version"]
    assert client.stats.logins == 2
    assert len(fresh_pve.requests("GET", "/version")) == 3  # ok, 401, ok after the new login
    assert client.stats.mutations == 0  # the CSRF-protected login is not counted as a mutation


def test_refused_ticket_renewal_falls_back_to_the_password(fresh_pve: PveLab) -> None:
    client = fresh_pve.client()
    client.get("version")
    session, auth = client._ensure_session()
    auth.renew_age = 0  # proxmoxer now renews the ticket before every request, with the ticket itself
    fresh_pve.call(fresh_pve.pve.revoke_tickets)  # ... which PVE refuses once the ticket is gone
    assert client.get("version")["version"]
    assert client.stats.logins == 2 and client._ensure_session()[0] is session


def test_wrong_password_is_a_permission_error_without_the_password(fresh_pve: PveLab) -> None:
    wrong = "Wr0ng-" + fresh_pve.password
    client = PveClient(fresh_pve.target(), Credentials(pve_password=wrong))
    with pytest.raises(PvePermissionError) as caught:
        client.get("version")
    assert caught.value.status == 401 and "phoenix:pvePassword" in str(caught.value)
    assert wrong not in str(caught.value) and wrong not in repr(caught.value) and wrong not in repr(client)


def test_token_login_needs_no_ticket(fresh_pve: PveLab) -> None:
    fresh_pve.add_token("root@pam!phoenix", "tok-3f9d2c")
    client = fresh_pve.client(token_id="root@pam!phoenix")
    assert client.get("version")["version"]
    assert client.stats.logins == 0 and fresh_pve.requests("POST", "/access/ticket") == []

    bad = PveClient(
        fresh_pve.target(token_id="root@pam!phoenix"),
        fresh_pve.credentials(token_secret="tok-wrong"),
        policy=FAST_POLICY,
    )
    with pytest.raises(PvePermissionError) as caught:
        bad.get("version")
    assert caught.value.status == 401 and "tok-wrong" not in str(caught.value)


def test_token_refused_for_device_passthrough_before_any_mutation(fresh_pve: PveLab) -> None:
    make_ct(fresh_pve.client(), 100)
    fresh_pve.add_token("root@pam!phoenix", "tok-3f9d2c")
    token = fresh_pve.client(token_id="root@pam!phoenix")
    fresh_pve.call(fresh_pve.pve.requests.clear)
    with pytest.raises(PvePermissionError, match=r"device passthrough \(dev0\).*root@pam!phoenix"):
        token.set(f"{CT}/100/config", dev0="/dev/nvidia0", cores=2)
    with pytest.raises(PvePermissionError, match="feature flag keyctl"):
        token.create(CT, vmid=101, ostemplate=OS_TEMPLATE, features="nesting=1,keyctl=1")
    assert token.stats.mutations == 0
    assert fresh_pve.requests() == []  # fakepve would have accepted it: real PVE refuses tokens here
    # A token may still change what PVE lets tokens change.
    token.set(f"{CT}/100/config", cores=2, features="nesting=1")
    assert token.get(f"{CT}/100/config")["cores"] == 2


def test_tls_verification_follows_the_target(fresh_pve: PveLab) -> None:
    creds = fresh_pve.credentials()
    with pytest.raises(PveError, match="TLS verification"):
        PveClient(fresh_pve.target(verify=True), creds, policy=FAST_POLICY).get("version")
    assert PveClient(fresh_pve.target(verify=fresh_pve.cafile), creds, policy=FAST_POLICY).get("version")


# ------------------------------------------------------------------------------------ tasks


def test_linked_clone_task_waited_to_ok(fresh_pve: PveLab) -> None:
    client = fresh_pve.client()
    make_ct(client, 100, template=True)
    status = client.run_task(
        "POST", f"{CT}/100/clone", timeout=10, step="clone 100 -> 101", newid=101, full=False
    )
    assert status["status"] == "stopped" and status["exitstatus"] == "OK" and status["type"] == "vzclone"
    rootfs = client.get(f"{CT}/101/config")["rootfs"]
    # fakepve names the clone's volume subvol-101-disk-0; real PVE: basevol-100-disk-0/subvol-101-disk-0
    assert rootfs.startswith(f"{ZFS_STORAGE}:") and "subvol-101-disk-0" in rootfs
    assert client.stats.mutations == 3  # create, template, clone: nothing repeated


def test_failing_task_carries_upid_step_and_log_tail(fresh_pve: PveLab) -> None:
    client = fresh_pve.client()
    make_ct(client, 100, template=True)
    fresh_pve.fail("POST", f"/nodes/{NODE}/lxc/100/clone", error="clone_failed", times=1)
    with pytest.raises(PveTaskError) as caught:
        client.run_task("POST", f"{CT}/100/clone", timeout=10, step="clone 100 -> 102", newid=102, full=False)
    error = caught.value
    assert not isinstance(error, PveTaskTimeoutError)
    assert error.upid.startswith(f"UPID:{NODE}:") and ":vzclone:" in error.upid
    assert "clone failed: unexpected error" in error.log_tail
    assert "clone 100 -> 102" in str(error) and error.upid in str(error)


def test_task_error_from_the_worker_itself(fresh_pve: PveLab) -> None:
    missing = "local:vztmpl/debian-99-standard_99.0-1_amd64.tar.zst"
    with pytest.raises(PveTaskError) as caught:
        fresh_pve.client().run_task(
            "POST", CT, timeout=10, step="create CT 105", vmid=105, ostemplate=missing, storage=ZFS_STORAGE
        )
    assert f"volume '{missing}' does not exist" in caught.value.log_tail
    assert "TASK ERROR" in caught.value.log_tail


def test_task_past_its_deadline_times_out_and_can_be_awaited_again(fresh_pve: PveLab) -> None:
    client = fresh_pve.client()
    make_ct(client, 100, template=True)
    fresh_pve.set_time_scale(0.05)
    fresh_pve.call(fresh_pve.pve.ct_secs.__setitem__, "clone", 20)  # 20 PVE seconds = 1 s here
    started = time.monotonic()
    with pytest.raises(PveTaskTimeoutError) as caught:
        client.run_task(
            "POST", f"{CT}/100/clone", timeout=0.2, step="clone 100 -> 103", newid=103, full=False
        )
    assert 0.2 <= time.monotonic() - started < 0.9
    assert "still running after 0.2s" in str(caught.value) and "clone 100 -> 103" in str(caught.value)
    # The task goes on on the host; a longer wait sees it finish.
    assert client.wait_task(caught.value.upid, timeout=10, step="clone 100 -> 103")["exitstatus"] == "OK"


# ------------------------------------------------------------------------------------ locks


def test_lock_refusals_retried_until_the_lock_is_gone(fresh_pve: PveLab) -> None:
    client = fresh_pve.client()
    make_ct(client, 100)
    fresh_pve.fail("PUT", f"/nodes/{NODE}/lxc/100/config", error="locked", times=3)  # "CT is locked (backup)"
    before = client.stats
    client.set(f"{CT}/100/config", cores=2)
    assert len(fresh_pve.requests("PUT", "/lxc/100/config")) == 4
    assert (client.stats - before).mutations == 4 and (client.stats - before).retries == 3
    assert client.get(f"{CT}/100/config")["cores"] == 2


def test_cant_lock_file_retried_until_released(fresh_pve: PveLab) -> None:
    client = fresh_pve.client()
    make_ct(client, 100)
    fresh_pve.run(fresh_pve.pve.hold_config_lock(100, None))  # another task holds the config lock
    release = threading.Timer(0.3, fresh_pve.call, (fresh_pve.pve.release_config_lock, 100))
    release.start()
    try:
        client.set(f"{CT}/100/config", memory=1024)
    finally:
        release.join()
    puts = len(fresh_pve.requests("PUT", "/lxc/100/config"))
    assert puts >= 2 and client.stats.retries == puts - 1
    assert client.get(f"{CT}/100/config")["memory"] == 1024


def test_lock_held_past_the_budget_is_a_locked_error(fresh_pve: PveLab) -> None:
    client = fresh_pve.client(policy=replace(FAST_POLICY, lock_budget=0.3))
    make_ct(client, 100)
    fresh_pve.call(fresh_pve.pve.snapshot_lock, 100, "backup")  # a vzdump that does not end
    started = time.monotonic()
    with pytest.raises(PveLockedError) as caught:
        client.set(f"{CT}/100/config", cores=4)
    assert 0.3 <= time.monotonic() - started < 2.0
    assert "CT is locked (backup)" in str(caught.value) and "0.3s" in str(caught.value)
    puts = len(fresh_pve.requests("PUT", "/lxc/100/config"))
    assert puts >= 2 and client.stats.mutations == 1 + puts  # the create, then every PUT attempt


def test_lock_found_by_the_task_worker_is_retried(fresh_pve: PveLab) -> None:
    client = fresh_pve.client()
    make_ct(client, 100)
    # PVE's vzstart worker checks the lock after the UPID is returned: the task ends "CT is locked (backup)".
    fresh_pve.fail("POST", f"/nodes/{NODE}/lxc/100/status/start", error="locked", times=2)
    status = client.run_task("POST", f"{CT}/100/status/start", timeout=10, step="start CT 100")
    assert status["exitstatus"] == "OK"
    assert len(fresh_pve.requests("POST", "/lxc/100/status/start")) == 3
    assert client.get(f"{CT}/100/status/current")["status"] == "running"


# ------------------------------------------------------------------------------------ 5xx


def test_5xx_on_a_read_is_retried(fresh_pve: PveLab) -> None:
    client = fresh_pve.client()
    make_ct(client, 100)
    fresh_pve.fail("GET", f"/nodes/{NODE}/lxc/100/config", status=503, message="Service Unavailable", times=2)
    assert client.get(f"{CT}/100/config")["hostname"] == "ct100"
    assert len(fresh_pve.requests("GET", "/lxc/100/config")) == 3 and client.stats.retries == 2

    fresh_pve.fail("GET", f"/nodes/{NODE}/lxc/100/config", status=500, message="internal error")
    with pytest.raises(PveError) as caught:
        client.get(f"{CT}/100/config")
    assert caught.value.status == 500 and "internal error" in str(caught.value)
    assert len(fresh_pve.requests("GET", "/lxc/100/config")) == 3 + FAST_POLICY.read_attempts


@pytest.mark.parametrize("status", [500, 503])
def test_5xx_on_a_mutation_is_not_retried(fresh_pve: PveLab, status: int) -> None:
    client = fresh_pve.client()
    make_ct(client, 100, template=True)
    fresh_pve.fail("POST", f"/nodes/{NODE}/lxc/100/clone", status=status, message="proxy error", times=1)
    before = client.stats
    with pytest.raises(PveError) as caught:
        client.run_task("POST", f"{CT}/100/clone", timeout=10, step="clone", newid=101, full=False)
    assert caught.value.status == status
    assert len(fresh_pve.requests("POST", "/lxc/100/clone")) == 1
    assert (client.stats - before).mutations == 1 and (client.stats - before).retries == 0


def test_missing_guest_fails_fast(fresh_pve: PveLab) -> None:
    client = fresh_pve.client()
    with pytest.raises(PveError) as caught:
        client.get(f"{CT}/999/config")
    assert is_missing(caught.value) and caught.value.status == 500
    assert len(fresh_pve.requests("GET", "/lxc/999/config")) == 1  # "does not exist" is not transient


# ------------------------------------------------------------------------------------ errors


def test_parameter_errors_carry_pves_per_field_messages(fresh_pve: PveLab) -> None:
    client = fresh_pve.client()
    make_ct(client, 100)
    with pytest.raises(PveParamError) as caught:
        client.set(f"{CT}/100/config", net0="bogus=1")
    assert caught.value.status == 400 and "net0" in caught.value.errors
    assert "invalid key in comma-separated list property: bogus" in str(caught.value)
    assert str(caught.value).startswith(
        f"{client.host}: PUT /{CT}/100/config: Parameter verification failed."
    )


def test_password_never_in_errors_or_reprs(fresh_pve: PveLab) -> None:
    client = fresh_pve.client()
    make_ct(client, 100, template=True)
    texts = [repr(client), str(client.stats)]
    fresh_pve.fail("POST", f"/nodes/{NODE}/lxc/100/clone", error="clone_failed", times=1)
    failures: list[tuple[type[PveError], object]] = [
        (PveParamError, lambda: client.set(f"{CT}/100/config", net0="bogus=1")),
        (
            PveTaskError,
            lambda: client.run_task("POST", f"{CT}/100/clone", timeout=5, step="clone", newid=104),
        ),
        (PveError, lambda: client.get(f"{CT}/999/config")),
    ]
    for kind, call in failures:
        with pytest.raises(kind) as caught:
            call()  # type: ignore[operator]
        texts += [str(caught.value), repr(caught.value)]
    assert all(fresh_pve.password not in text for text in texts)
    assert fresh_pve.password not in repr(fresh_pve)
