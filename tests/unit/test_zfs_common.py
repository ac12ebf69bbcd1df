"""providers.zfs.common: names, property canonical forms, argv, `zfs get` parsing and error mapping (pure)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from providers.channels.command import CommandResult
from providers.zfs.common import (
    DatasetBusyError,
    DatasetExistsError,
    DatasetHasChildrenError,
    DatasetNotFoundError,
    DependentClonesError,
    ParentMissingError,
    ZfsError,
    apply_argv,
    canonical_properties,
    canonical_value,
    classify,
    clone_argv,
    create_argv,
    create_only_changes,
    dataset_name_problem,
    destroy_argv,
    get_argv,
    parse_get,
    parse_size,
    plan_properties,
    properties_problems,
    property_key_problem,
    read_datasets,
    removal,
    run_zfs,
    snapshot_name_problem,
)
from tests.support.fakes import Answer, ScriptedExecutor
from tests.unit.zfs_fakes import fixture, unknown

# --- names -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["rpool/data/models", "rpool/data/subvol-101-disk-0", "tank/a.b:c_d-e", "rpool/data/-x"]
)
def test_valid_dataset_names(name: str) -> None:
    assert dataset_name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("", "expected a dataset name"),
        (None, "expected a dataset name"),
        (5, "expected a dataset name"),
        ("rpool", "a pool is not a dataset"),
        ("rpool/", "empty path component"),
        ("/rpool/data", "empty path component"),
        ("rpool//data", "empty path component"),
        ("rpool/data/m@v1", "'@' separates a snapshot name"),
        ("rpool/da ta", "component 'da ta'"),
        ("rpool/../etc", "'..' is not a valid component"),
        ("rpool/x;rm -rf /", "component 'x;rm -rf '"),
        ("rpool/$(id)", "component '$(id)'"),
        ("1pool/data", "must start with a letter"),
        ("mirror/data", "not be a vdev keyword"),
        ("rpool/" + "a" * 300, "longer than 255"),
    ],
)
def test_invalid_dataset_names_say_why(name: Any, says: str) -> None:
    problem = dataset_name_problem(name)
    assert problem is not None and says in problem


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("rpool/data/m@v1", True),
        ("rpool/data/basevol-9000-disk-0@__base__", True),
        ("rpool/data/m", False),
        ("rpool/data/m@", False),
        ("rpool/data/m@v/1", False),
        ("rpool/data/m@v@1", False),
        ("rpool@v1", False),
    ],
)
def test_snapshot_names(name: str, ok: bool) -> None:
    assert (snapshot_name_problem(name) is None) is ok


# --- properties ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("compression", None),
        ("org.phoenix:role", None),
        ("userquota@bob", None),
        ("Compression", "not a ZFS property name"),
        ("org.phoenix:Role", "lowercase"),
        ("used", "read-only"),
        ("origin", "read-only"),
        ("volsize", "volumes"),
        ("", "non-empty"),
        ("quota=1G", "not a ZFS property name"),
    ],
)
def test_property_names(key: str, says: str | None) -> None:
    problem = property_key_problem(key)
    assert problem is None if says is None else (problem is not None and says in problem)


@pytest.mark.parametrize(
    ("key", "value", "canonical"),
    [
        ("quota", "1G", "1073741824"),
        ("quota", "1.5g", "1610612736"),
        ("quota", "512MiB", "536870912"),
        ("quota", "none", "none"),
        ("quota", 0, "none"),
        ("quota", "0", "none"),
        ("refreservation", 1024.0, "1024"),
        ("recordsize", "16K", "16384"),
        ("recordsize", 131072, "131072"),
        ("atime", False, "off"),
        ("readonly", True, "on"),
        ("copies", 2.0, "2"),
        ("compression", "lz4", "lz4"),
        ("mountpoint", "/srv/models/", "/srv/models"),
        ("mountpoint", "/", "/"),
        ("mountpoint", "legacy", "legacy"),
        ("org.phoenix:role", "model weights", "model weights"),
        ("org.phoenix:count", "0", "0"),  # user properties are text: never a size
    ],
)
def test_canonical_values_match_what_zfs_get_p_reports(key: str, value: Any, canonical: str) -> None:
    assert canonical_value(key, value) == canonical
    assert canonical_value(key, canonical) == canonical  # stable: live values map to themselves


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("quota", "lots", "not a size"),
        ("recordsize", "none", "not a size"),
        ("copies", 1.5, "not a whole number"),
        ("compression", "", "empty value"),
        ("org.phoenix:note", "a\tb", "tabs, newlines"),
        ("org.phoenix:note", "a\nb", "tabs, newlines"),
        ("atime", ["on"], "expected a string"),
    ],
)
def test_values_zfs_could_not_take_are_refused(key: str, value: Any, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        canonical_value(key, value)


def test_parse_size_rejects_non_sizes_and_fractions_of_a_byte() -> None:
    assert parse_size("2T") == 2 * 2**40
    assert parse_size("100") == 100
    assert parse_size("1.0000001K") is None
    assert parse_size("-1G") is None
    assert parse_size("G") is None


def test_property_problems_keep_unknowns_for_later() -> None:
    later = unknown()
    assert properties_problems({"quota": later, "atime": "off"}) == []
    assert properties_problems(later) == []
    assert properties_problems(["quota"]) == ["expected a map of property name to value, got list"]
    assert properties_problems({"used": "1", "quota": "x"}) == [
        "'used' is read-only: ZFS computes it",
        "quota: 'x' is not a size (e.g. 512K, 16G or bytes)",
    ]
    canonical = canonical_properties({"quota": "1K", "atime": later, "bad": []})
    assert canonical["quota"] == "1024" and canonical["atime"] is later and canonical["bad"] == []


def test_removed_properties_inherit_or_clear() -> None:
    assert removal("compression") == ("inherit", "compression")
    assert removal("org.phoenix:role") == ("inherit", "org.phoenix:role")
    assert removal("quota") == ("set", "quota=none")  # 'quota' property cannot be inherited
    assert removal("userquota@bob") == ("set", "userquota@bob=none")
    assert removal("canmount") == ("set", "canmount=on")


def test_plan_sets_what_changed_and_unsets_what_was_dropped() -> None:
    live = {"quota": "none", "atime": "on", "recordsize": "16384"}
    want = {"quota": "1073741824", "recordsize": "16384", "org.phoenix:role": "x"}
    assert plan_properties(live, want) == [
        ("set", "org.phoenix:role=x"),
        ("set", "quota=1073741824"),
        ("inherit", "atime"),
    ]
    assert plan_properties(want, want) == []


def test_create_only_changes() -> None:
    assert create_only_changes({"utf8only": "on"}, {"utf8only": "off"}) == ["utf8only"]
    assert create_only_changes({"utf8only": "on"}, {}) == ["utf8only"]
    assert create_only_changes({"quota": "1"}, {"quota": "2"}) == []
    assert create_only_changes({}, unknown()) == []


# --- argv ------------------------------------------------------------------------------------------------


def test_argv_are_lists_with_sorted_options() -> None:
    props = {"quota": "1073741824", "atime": "off"}
    assert create_argv("rpool/data/m", props) == [
        "zfs", "create", "-o", "atime=off", "-o", "quota=1073741824", "rpool/data/m",
    ]  # fmt: skip
    assert clone_argv("rpool/data/m@v1", "rpool/data/c", {}) == [
        "zfs",
        "clone",
        "rpool/data/m@v1",
        "rpool/data/c",
    ]
    assert destroy_argv("rpool/data/m@v1", recursive=True) == ["zfs", "destroy", "-r", "rpool/data/m@v1"]
    assert "-R" not in destroy_argv("rpool/data/m")
    assert get_argv(["a/b", "a/c"], ["type", "guid", "type"]) == [
        "zfs", "get", "-H", "-p", "-o", "name,property,value,source", "type,guid", "a/b", "a/c",
    ]  # fmt: skip


def test_a_property_value_with_shell_syntax_stays_one_argument() -> None:
    argv = create_argv("rpool/data/m", {"org.phoenix:note": "$(reboot); `id` 'x'"})
    assert argv[3] == "org.phoenix:note=$(reboot); `id` 'x'"


def test_apply_script_runs_each_step_then_reads_back(tmp_path: Path) -> None:
    """The script really runs under sh, with a stand-in `zfs` that logs its argv (one line per call)."""
    log = tmp_path / "log"
    stub = tmp_path / "zfs"
    stub.write_text(f'#!/bin/sh\nprintf "%s|" "$@" >> {log}\necho >> {log}\n')
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    steps = [("set", "org.phoenix:note=a b; rm -rf /"), ("inherit", "atime")]
    argv = apply_argv("rpool/data/m", steps, ["type", "quota"])
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    subprocess.run(argv, env=env, check=True)
    assert log.read_text().splitlines() == [
        "set|org.phoenix:note=a b; rm -rf /|rpool/data/m|",
        "inherit|atime|rpool/data/m|",
        "get|-H|-p|-o|name,property,value,source|type,quota|rpool/data/m|",
    ]


def test_apply_script_stops_at_the_first_failing_step(tmp_path: Path) -> None:
    stub = tmp_path / "zfs"
    stub.write_text(
        f'#!/bin/sh\necho "$1" >> {tmp_path}/log\n[ "$1" != set ] || {{ echo nope >&2; exit 3; }}\n'
    )
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    argv = apply_argv("rpool/data/m", [("set", "quota=1"), ("inherit", "atime")], ["type"])
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    assert (proc.returncode, proc.stderr) == (3, "nope\n")
    assert (tmp_path / "log").read_text() == "set\n"


def test_apply_refuses_other_verbs() -> None:
    with pytest.raises(ValueError, match="destroy"):
        apply_argv("rpool/data/m", [("destroy", "-r")], ["type"])


# --- parsing ---------------------------------------------------------------------------------------------


def test_parse_a_dataset_read_captured_from_the_lab() -> None:
    facts = parse_get(fixture("get-dataset.txt"))["rpool/data/models"]
    assert facts.type == "filesystem"
    assert facts.origin is None
    assert facts.value("guid") == "18396935636183793178"
    assert facts.props["mountpoint"].source == "inherited from rpool"
    declared = facts.declared(["quota", "org.phoenix:role", "recordsize", "org.phoenix:unset", "atime"])
    assert declared == {
        "quota": "268435456",
        "org.phoenix:role": "model weights",  # a value with a space survives the tab split
        "recordsize": "16384",
        "atime": "on",
    }  # the unset user property is absent, not "-"


def test_parse_a_clone_read_reports_its_origin_and_a_cleared_quota_as_none() -> None:
    facts = parse_get(fixture("get-clone.txt"))["rpool/data/vllm-301-models"]
    assert facts.origin == "rpool/data/models@v1"
    assert facts.declared(["quota"]) == {"quota": "none"}  # zfs get -p says 0


def test_parse_a_snapshot_and_several_datasets() -> None:
    snap = parse_get(fixture("get-snapshot.txt"))["rpool/data/models@v1"]
    assert (snap.type, snap.value("creation")) == ("snapshot", "1795655957")
    origins = parse_get(fixture("get-origins-recursive.txt"))
    assert {n: f.origin for n, f in origins.items() if f.origin} == {
        "rpool/data/vllm-301-models": "rpool/data/models@v1"
    }


def test_parse_refuses_a_malformed_line() -> None:
    with pytest.raises(ValueError, match="4 tab-separated"):
        parse_get("rpool/data/m type filesystem -\n")


# --- errors ----------------------------------------------------------------------------------------------


def failed(argv: str, stderr: str) -> CommandResult:
    return CommandResult("pve1", argv, 1, "", stderr, 0.0)


@pytest.mark.parametrize(
    ("fixture_name", "kind", "dataset"),
    [
        ("err-exists.txt", DatasetExistsError, "rpool/data/models"),
        ("err-clone-exists.txt", DatasetExistsError, "rpool/data/vllm-301-models"),
        ("err-snapshot-exists.txt", DatasetExistsError, "rpool/data/models@v1"),
        ("err-missing.txt", DatasetNotFoundError, "rpool/data/nope"),
        ("err-missing-origin.txt", DatasetNotFoundError, "rpool/data/models@v9"),
        ("err-parent-missing.txt", ParentMissingError, "rpool/data/a/b"),
        ("err-dependent-clones.txt", DependentClonesError, "rpool/data/models@v1"),
        ("err-snapshot-is-cloned.txt", DependentClonesError, "rpool/data/models@v1"),
        ("err-has-children.txt", DatasetHasChildrenError, "rpool/data/models"),
        ("err-busy.txt", DatasetBusyError, "/rpool/data/vllm-301-models"),
        ("err-bad-value.txt", ZfsError, "rpool/data/models"),
        ("err-quota-zero.txt", ZfsError, "rpool/data/q"),
    ],
)
def test_captured_errors_map_to_typed_errors(fixture_name: str, kind: type[ZfsError], dataset: str) -> None:
    error = classify(failed("zfs ...", fixture(fixture_name)), "doing it")
    assert type(error) is kind
    assert error.dataset == dataset
    assert str(error).startswith(f"pve1: doing it: {error.reason}")
    assert fixture(fixture_name).splitlines()[0] in str(error)  # ZFS's own words stay in the message


@pytest.mark.parametrize(
    "stderr",
    [
        "cannot destroy 'rpool/data/m': dataset is busy\n",  # OpenZFS
        "cannot unmount '/rpool/data/m': pool or dataset is busy\n",  # OpenZFS
    ],
)
def test_openzfs_busy_wordings(stderr: str) -> None:
    assert isinstance(classify(failed("zfs destroy rpool/data/m", stderr)), DatasetBusyError)


def test_dependent_clones_and_children_are_named() -> None:
    clones = classify(failed("zfs destroy", fixture("err-dependent-clones.txt")), "destroying")
    assert isinstance(clones, DependentClonesError)
    assert clones.clones == ("rpool/data/vllm-301-models",)
    assert "snapshot has dependent clones: rpool/data/vllm-301-models; delete those clones first" in str(
        clones
    )
    children = classify(failed("zfs destroy", fixture("err-has-children.txt")))
    assert isinstance(children, DatasetHasChildrenError)
    assert children.children == ["rpool/data/models/child", "rpool/data/models@v1"]
    is_cloned = classify(failed("zfs destroy -r", fixture("err-snapshot-is-cloned.txt")))
    assert isinstance(is_cloned, DependentClonesError) and is_cloned.clones == ()


BUSY = fixture("err-busy.txt")


def test_busy_is_retried_until_it_clears() -> None:
    argv = ["zfs", "destroy", "rpool/data/m"]
    fake = ScriptedExecutor([Answer(argv, 1, stderr=BUSY), Answer(argv, 1, stderr=BUSY), Answer(argv)])
    outcome = run_zfs(fake, argv, "destroying", busy_timeout=5.0)
    assert isinstance(outcome, CommandResult) and outcome.ok
    assert len(fake.calls) == 3


def test_busy_past_the_deadline_is_a_typed_error() -> None:
    argv = ["zfs", "destroy", "rpool/data/m"]
    fake = ScriptedExecutor([Answer(argv, 1, stderr=BUSY) for _ in range(50)])
    outcome = run_zfs(fake, argv, "destroying rpool/data/m", busy_timeout=0.25)
    assert isinstance(outcome, DatasetBusyError)
    assert 2 <= len(fake.calls) < 10  # retried with backoff, not spun
    assert "destroying rpool/data/m: dataset is busy" in str(outcome)


def test_other_errors_are_not_retried() -> None:
    argv = ["zfs", "destroy", "rpool/data/m@v1"]
    fake = ScriptedExecutor([Answer(argv, 1, stderr=fixture("err-dependent-clones.txt"))])
    assert isinstance(run_zfs(fake, argv, "destroying"), DependentClonesError)
    assert len(fake.calls) == 1


def test_a_read_over_a_missing_dataset_returns_the_others() -> None:
    fake = ScriptedExecutor(
        [
            Answer(
                ["zfs", "get"],
                1,
                fixture("get-partly-missing.stdout.txt"),
                fixture("get-partly-missing.stderr.txt"),
            )
        ]
    )
    facts = read_datasets(fake, ["rpool/data/models", "rpool/data/nope"], ["type"])
    assert list(facts) == ["rpool/data/models"]


def test_a_read_that_fails_otherwise_raises() -> None:
    fake = ScriptedExecutor(
        [Answer(["zfs", "get"], 2, stderr="bad property list: invalid property 'clones'\n")]
    )
    with pytest.raises(ZfsError, match="invalid property 'clones'"):
        read_datasets(fake, ["rpool/data/models"], ["clones"])
