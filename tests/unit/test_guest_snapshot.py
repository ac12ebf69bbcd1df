"""GuestSnapshot: its pure parts (the family, retention, names, the diff, the checks) and its CRUD against
the fake PVE host."""

from __future__ import annotations

from providers.guests.common import family, next_name, plan_lines, to_prune
from providers.guests.snapshot import GuestSnapshotInputs, GuestSnapshotProvider, plan_steps
from tests.support.fakes import FakePve

SNAPS = [
    {"name": "current", "snaptime": 0},
    {"name": "nightly-20261126T030000", "snaptime": 300},
    {"name": "nightly-20261124T030000", "snaptime": 100},
    {"name": "before-upgrade", "snaptime": 50},
    {"name": "nightly-extra", "snaptime": 60},
    {"name": "nightly-20261125T030000", "snaptime": 200},
]


def test_the_family_is_ours_only_oldest_first() -> None:
    assert family(SNAPS, "nightly") == [
        "nightly-20261124T030000",
        "nightly-20261125T030000",
        "nightly-20261126T030000",
    ], "hand-made snapshots and other names are never part of it"


def test_retention_prunes_the_oldest() -> None:
    names = family(SNAPS, "nightly")
    assert to_prune(names, 2) == ["nightly-20261124T030000"]
    assert to_prune(names, 3) == []


def test_names_are_utc_times_unique_within_a_second() -> None:
    assert next_name("pre", [], 0) == "pre-19700101T000000"
    assert next_name("pre", ["pre-19700101T000000"], 0) == "pre-19700101T000000-2"


def test_a_new_trigger_updates_a_new_guest_replaces() -> None:
    props = {"node": "pve", "vmid": 201.0, "prefix": "nightly", "retention": 3, "trigger": "a"}
    provider = GuestSnapshotProvider()
    assert (
        provider.diff("x", props, {**props, "trigger": "b"}).changes,
        provider.diff("x", props, {**props, "trigger": "b"}).replaces,
    ) == (True, [])
    assert provider.diff("x", props, {**props, "vmid": 202}).replaces == ["vmid"]
    assert provider.diff("x", props, {**props, "vmid": 201}).changes is False


def test_checks() -> None:
    provider = GuestSnapshotProvider()
    ok = {"node": "pve", "vmid": 201, "prefix": "nightly", "retention": 2}
    assert provider.check({}, ok).failures == []
    assert [f.property for f in provider.check({}, {**ok, "prefix": "1 bad"}).failures] == ["prefix"]
    assert [f.property for f in provider.check({}, {**ok, "retention": 0}).failures] == ["retention"]


# ------------------------------------------------------------------ CRUD against the fake PVE host

PROPS = {"node": "pve1", "vmid": 201.0, "prefix": "nightly", "retention": 2.0, "trigger": "v1"}


def lab(kind: str = "lxc") -> tuple[FakePve, GuestSnapshotProvider]:
    pve = FakePve()
    guest = pve.add_guest(201, kind=kind, status="running")
    guest.snapshots.append({"name": "by-hand", "snaptime": 1})
    provider = GuestSnapshotProvider()
    pve.serve(provider)
    return pve, provider


def names(pve: FakePve) -> list[str]:
    return [s["name"] for s in pve.guests[201].snapshots]


def test_create_takes_one_of_the_family_and_leaves_other_snapshots_alone() -> None:
    pve, provider = lab()
    result = provider.create(provider.check({}, dict(PROPS)).inputs)
    (taken,) = result.outs["snapshots"]
    assert taken.startswith("nightly-") and family(pve.guests[201].snapshots, "nightly") == [taken]
    assert names(pve) == ["by-hand", taken]
    assert result.id == "lxc/201/nightly"


def test_a_new_trigger_takes_another_and_prunes_to_the_retention() -> None:
    pve, provider = lab()
    outs = dict(provider.create(provider.check({}, dict(PROPS)).inputs).outs)
    for trigger in ("v2", "v3"):
        news = provider.check(outs, {**PROPS, "trigger": trigger}).inputs
        outs = dict(provider.update("x", outs, news).outs)
    kept = family(pve.guests[201].snapshots, "nightly")
    assert len(kept) == 2 and outs["snapshots"] == kept
    assert "by-hand" in names(pve)


def test_a_new_retention_alone_prunes_without_taking_one() -> None:
    pve, provider = lab()
    outs = dict(provider.create(provider.check({}, dict(PROPS)).inputs).outs)
    outs = dict(provider.update("x", outs, provider.check(outs, {**PROPS, "trigger": "v2"}).inputs).outs)
    pve.calls.clear()
    news = provider.check(outs, {**PROPS, "trigger": "v2", "retention": 1.0}).inputs
    after = provider.update("x", outs, news).outs
    assert [m for m, _ in pve.mutations] == ["DELETE"]
    assert after["snapshots"] == family(pve.guests[201].snapshots, "nightly") == outs["snapshots"][-1:]


def test_read_reports_the_family_as_the_host_has_it() -> None:
    pve, provider = lab()
    outs = dict(provider.create(provider.check({}, dict(PROPS)).inputs).outs)
    assert provider.read("x", outs).outs["snapshots"] == outs["snapshots"]
    pve.guests[201].snapshots = [s for s in pve.guests[201].snapshots if s["name"] == "by-hand"]
    assert provider.read("x", outs).id is None, "all of the family deleted by hand: the next up takes one"
    del pve.guests[201]
    assert provider.read("x", outs).id is None


def test_delete_removes_the_family_only_and_a_guest_gone_is_no_error() -> None:
    pve, provider = lab("qemu")
    outs = dict(provider.create(provider.check({}, {**PROPS, "kind": "qemu"}).inputs).outs)
    assert pve.requests("POST")[0].path == "nodes/pve1/qemu/201/snapshot"
    provider.delete("x", outs)
    assert names(pve) == ["by-hand"]
    del pve.guests[201]
    provider.delete("x", outs)


def test_the_plan_is_the_list_read_and_one_snapshot() -> None:
    inputs = GuestSnapshotInputs.from_props({**PROPS, "description": "nightly restore point"})
    assert plan_lines(plan_steps(inputs)) == [
        ("api", "GET /nodes/pve1/lxc/201/snapshot"),
        (
            "api",
            "POST /nodes/pve1/lxc/201/snapshot snapname=nightly-<UTC time> description=nightly restore point",
        ),
    ]
