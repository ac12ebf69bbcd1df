"""GuestSnapshot's pure parts: the family, retention, names, the diff, the checks."""

from __future__ import annotations

from providers.guests.snapshot import GuestSnapshotProvider, family, next_name, to_prune

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
