"""GuestFeatures: its steps as data, its diff, and the runner and status scripts run for real by ``sh``.

The provider's own commands run here through :class:`LocalPct`, which strips ``pct exec <vmid> --`` and
points the guest's state and log directories at a temporary directory: the shell the guest would run is
the shell that runs, only the container boundary is left out (the lab test has it).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from phoenix_components.cli.plan import build_plan
from phoenix_components.components.guests import container_feature_inputs
from phoenix_components.config.load import load_environment
from providers.channels.command import Argv, CommandResult, render
from providers.channels.steps import plan_lines
from providers.errors import CommandTimeoutError
from providers.guests.features import (
    LOG_DIR,
    STATE_DIR,
    GuestFeatureError,
    GuestFeaturesInputs,
    GuestFeaturesProvider,
    drifted,
    feature_steps,
    marker,
    parse_status,
)
from tests.support.fakes import LocalExecutor

ROOT = Path(__file__).resolve().parents[2]

PROPS: dict[str, Any] = {
    "node": "pve",
    "vmid": 301.0,  # numbers arrive as floats over gRPC
    "features": [
        {
            "name": "proxy",
            "script": "#!/bin/bash\necho proxy\n",
            "env": {"PHOENIX_TARGET": "lxc", "SITE": "a"},
        },
        {"name": "ca", "script": "#!/bin/bash\necho ca\n", "env": {"PHOENIX_TARGET": "lxc"}},
    ],
    "files": [{"path": "/etc/caddy/Caddyfile", "content": ":80 {\n}\n", "mode": "0640"}],
    "guest_instance": "0f1e",
    "guest_name": "edge",
}


def inputs(**changes: Any) -> GuestFeaturesInputs:
    return GuestFeaturesInputs.from_props({**PROPS, **changes})


# ------------------------------------------------------------------ steps


def test_steps_write_the_files_then_run_each_feature_in_order_in_the_guest() -> None:
    steps = feature_steps(inputs())
    assert [s.what for s in steps] == [
        "file /etc/caddy/Caddyfile",
        "file /etc/caddy/Caddyfile",
        "feature proxy",
        "feature ca",
    ]
    assert all(s.argv[:4] == ["pct", "exec", "301", "--"] for s in steps)
    assert steps[0].argv[4:] == ["mkdir", "-p", "/etc/caddy"]
    write = steps[1]
    assert write.argv[-2:] == ["/etc/caddy/Caddyfile", "640"] and write.stdin == ":80 {\n}\n"
    proxy = steps[2]
    # The environment is `env` arguments before the runner; the script itself is stdin.
    assert proxy.argv[4:7] == ["env", "PHOENIX_TARGET=lxc", "SITE=a"]
    assert proxy.argv[7:9] == ["sh", "-c"] and proxy.argv[10:] == [
        "phoenix-feature",
        "proxy",
        marker(inputs().features[0], inputs().files),
        STATE_DIR,
        LOG_DIR,
    ]
    assert proxy.stdin == "#!/bin/bash\necho proxy\n"
    assert proxy.log == f"{LOG_DIR}/proxy.log"


def test_a_hostile_environment_value_stays_one_argument_of_env() -> None:
    hostile = "x'; touch /pwned; echo '$(id)` \\"
    step = feature_steps(inputs(features=[{"name": "proxy", "script": "", "env": {"SITE": hostile}}]))[-1]
    words = shlex.split(render(step.argv))  # the line SSH sends, split as the host's shell splits it
    assert words == step.argv and f"SITE={hostile}" in words


def test_the_marker_hashes_the_script_the_environment_and_the_files() -> None:
    base = inputs()
    first = marker(base.features[0], base.files)
    assert marker(replace(base.features[0], script="#!/bin/bash\necho other\n"), base.files) != first
    assert marker(replace(base.features[0], env={"SITE": "b"}), base.files) != first
    assert marker(base.features[0], [replace(base.files[0], content="other")]) != first
    assert marker(base.features[0], [replace(base.files[0], mode="0600")]) != first
    # The guest's name and the timeout are not part of what runs.
    again = inputs(guest_name="renamed", feature_timeout_s=10.0)
    assert marker(again.features[0], again.files) == first


# ------------------------------------------------------------------ diff


def test_a_changed_script_env_or_file_is_an_update_never_a_replace() -> None:
    provider = GuestFeaturesProvider()
    changed_script = [{**PROPS["features"][0], "script": "#!/bin/bash\necho v2\n"}, PROPS["features"][1]]
    changed_env = [{**PROPS["features"][0], "env": {"SITE": "b"}}, PROPS["features"][1]]
    for news in (
        {**PROPS, "features": changed_script},
        {**PROPS, "features": changed_env},
        {**PROPS, "files": [{**PROPS["files"][0], "content": "other"}]},
        {**PROPS, "features": PROPS["features"][:1]},
    ):
        diff = provider.diff("301/features", PROPS, news)
        assert (diff.changes, diff.replaces) == (True, [])


def test_a_replaced_guest_runs_them_again_in_place_and_messages_are_no_change() -> None:
    provider = GuestFeaturesProvider()
    moved = provider.diff("x", PROPS, {**PROPS, "guest_instance": "9a8b"})
    assert (moved.changes, moved.replaces) == (True, [])
    assert provider.diff("x", PROPS, dict(PROPS)).changes is False
    assert (
        provider.diff("x", PROPS, {**PROPS, "guest_name": "other", "feature_timeout_s": 5}).changes is False
    )
    assert provider.diff("x", PROPS, {**PROPS, "vmid": 302.0}).replaces == ["vmid"]


def test_check_refuses_names_and_paths_that_would_escape_the_state_directory() -> None:
    provider = GuestFeaturesProvider()
    bad = {
        **PROPS,
        "features": [
            {"name": "../x", "script": ""},
            {"name": "ca", "script": ""},
            {"name": "ca", "script": ""},
        ],
        "files": [{"path": "etc/x", "content": ""}, {"path": "/etc/../x", "content": "", "mode": "644"}],
    }
    reasons = [f.reason for f in provider.check({}, bad).failures]
    assert any("'../x' is not a Phoenix name" in r for r in reasons)
    assert any("listed twice" in r for r in reasons)
    assert any("'etc/x' is not an absolute path" in r for r in reasons)
    assert any("'/etc/../x' is not an absolute path" in r for r in reasons)
    assert any("mode '644'" in r for r in reasons)
    assert provider.check({}, PROPS).failures == []


# ------------------------------------------------------------------ the scripts, run by sh


@dataclass
class LocalPct:
    """``pct exec <vmid> -- ARGV`` run here as ARGV, with the guest's state/log dirs under ``root``."""

    root: Path
    calls: list[list[str]] = field(default_factory=list)
    host: str = "pve1"

    def run(
        self,
        argv: Argv,
        *,
        stdin: str | bytes | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> CommandResult:
        words = [str(a) for a in argv]
        assert words[:2] == ["pct", "exec"] and words[3] == "--", words
        self.calls.append(words)
        moved = {STATE_DIR: str(self.root / "state"), LOG_DIR: str(self.root / "log")}
        local = [moved.get(w, w) for w in words[4:]]
        return LocalExecutor(self.host).run(local, stdin=stdin, check=check, timeout=timeout)


@dataclass
class LocalProvider(GuestFeaturesProvider):
    local: LocalPct | None = None

    def ssh(self) -> LocalPct:  # type: ignore[override]
        assert self.local is not None
        return self.local


def local_props(tmp_path: Path, *scripts: tuple[str, str]) -> dict[str, Any]:
    return {
        **PROPS,
        "features": [
            {"name": name, "script": script, "env": {"PHOENIX_TARGET": "lxc", "SITE": "it's here"}}
            for name, script in scripts
        ],
        "files": [{"path": str(tmp_path / "etc" / "site.conf"), "content": "site=a\n", "mode": "0600"}],
    }


WRITES = (
    '#!/bin/bash\nset -eu\necho "running with $SITE"\nprintf "%s\\n" "$SITE" > "$(dirname "$0")/../seen"\n'
)


def test_create_writes_the_files_runs_the_features_keeps_logs_and_records_markers(tmp_path: Path) -> None:
    local = LocalPct(tmp_path)
    provider = LocalProvider(local=local)
    props = local_props(tmp_path, ("writer", WRITES), ("second", "#!/bin/bash\necho second\n"))
    created = provider.create(props)
    assert created.id == "301/features"
    conf = tmp_path / "etc" / "site.conf"
    assert conf.read_text() == "site=a\n" and oct(conf.stat().st_mode & 0o777) == "0o600"
    assert (tmp_path / "seen").read_text() == "it's here\n"  # the environment value reached the script
    assert (tmp_path / "state" / "writer.sh").read_text() == WRITES  # the script as it ran, kept
    log = (tmp_path / "log" / "writer.log").read_text().splitlines()
    assert log[0].startswith("=== ") and "phoenix feature writer sha256=" in log[0]
    assert log[1] == "running with it's here"
    recorded = {
        name: (tmp_path / "state" / f"{name}.sha256").read_text().strip() for name in ("writer", "second")
    }
    assert created.outs["applied"] == recorded

    # read: every marker is ours, so no drift; a marker gone (or another run's) is drift on that feature.
    assert provider.read(created.id, created.outs).outs["features"] == created.outs["features"]
    (tmp_path / "state" / "second.sha256").unlink()
    read = provider.read(created.id, created.outs)
    assert read.outs["features"][0] == created.outs["features"][0]
    assert read.outs["features"][1]["script"] == "# not applied in the guest (marker missing)\n"
    assert provider.diff(created.id, read.outs, props).changes is True

    # An update runs everything again in order (the scripts are idempotent); the log keeps both runs.
    provider.update(created.id, created.outs, props)
    assert (tmp_path / "state" / "second.sha256").exists()
    assert (tmp_path / "log" / "writer.log").read_text().count("=== ") == 2


def test_a_failing_feature_is_a_typed_error_naming_the_guest_and_step_with_its_log_tail(
    tmp_path: Path,
) -> None:
    local = LocalPct(tmp_path)
    provider = LocalProvider(local=local)
    failing = (
        "#!/bin/bash\nfor i in $(seq 1 60); do echo line-$i; done\necho 'apt: no such package' >&2\nexit 7\n"
    )
    props = local_props(tmp_path, ("first", "#!/bin/bash\ntrue\n"), ("broken", failing), ("never", "true\n"))
    with pytest.raises(GuestFeatureError) as raised:
        provider.create(props)
    error = raised.value
    assert (error.vmid, error.guest_name, error.step, error.exit_status) == (301, "edge", "feature broken", 7)
    assert error.log == f"{LOG_DIR}/broken.log"
    message = str(error)
    assert message.startswith("pve1: feature broken in CT 301 (edge) exited 7")
    assert "apt: no such package" in message and "line-60" in message
    assert "line-10\n" not in message  # a tail, not the whole log
    assert "phoenix-feature broken" in error.argv  # the command, as sent
    # It stopped there: no marker for the broken feature, the next one never ran.
    assert (tmp_path / "state" / "first.sha256").exists()
    assert not (tmp_path / "state" / "broken.sha256").exists()
    assert not any("never" in call for call in local.calls)
    assert "apt: no such package" in (tmp_path / "log" / "broken.log").read_text()


def test_a_feature_past_its_deadline_is_the_same_typed_error(tmp_path: Path) -> None:
    class Slow(LocalPct):
        def run(self, argv: Argv, **kwargs: Any) -> CommandResult:
            if "phoenix-feature" in argv:
                raise CommandTimeoutError(self.host, "pct exec 301 -- ...", 5.0, "still compiling")
            return super().run(argv, **kwargs)

    provider = LocalProvider(local=Slow(tmp_path))
    with pytest.raises(
        GuestFeatureError, match=r"feature writer in CT 301 \(edge\) did not finish"
    ) as raised:
        provider.create(local_props(tmp_path, ("writer", WRITES)))
    assert raised.value.exit_status is None and raised.value.stderr_tail == "still compiling"


def test_read_of_a_guest_that_is_gone_reports_the_features_gone(tmp_path: Path) -> None:
    class Gone(LocalPct):
        def run(self, argv: Argv, **kwargs: Any) -> CommandResult:
            return CommandResult(self.host, "pct exec", 255, "", "Configuration file does not exist", 0.0)

    provider = LocalProvider(local=Gone(tmp_path))
    assert provider.read("301/features", PROPS).id is None


def test_status_parsing_and_drift() -> None:
    base = inputs()
    want = {f.name: marker(f, base.files) for f in base.features}
    assert parse_status(f"proxy {want['proxy']}\nca missing\n") == {"proxy": want["proxy"], "ca": None}
    assert drifted(base, {"proxy": want["proxy"], "ca": None}) == ["ca"]
    assert drifted(base, {"proxy": "0" * 64, "ca": want["ca"]}) == ["proxy"]
    assert drifted(base, want) == []


def test_delete_changes_nothing_in_the_guest(tmp_path: Path) -> None:
    local = LocalPct(tmp_path)
    LocalProvider(local=local).delete("301/features", PROPS)
    assert local.calls == []


# ------------------------------------------------------------------ program and plan share the inputs


def test_the_plan_shows_exactly_the_providers_steps_for_a_guest_with_features(tmp_path: Path) -> None:
    import shutil

    shutil.copytree(ROOT / "config", tmp_path / "config")
    shutil.copytree(ROOT / "apparmor", tmp_path / "apparmor")
    guests_file = tmp_path / "config/environments/dev/guests.json"
    guests = json.loads(guests_file.read_text())
    guests["containers"][0].update(
        features=["base_setup"],
        feature_env={"GREETING": "hello; world"},
        feature_files=[{"path": "/etc/phoenix/greeting", "content": "hi\n"}],
    )
    guests_file.write_text(json.dumps(guests))
    env = load_environment(tmp_path / "config", "dev")
    ct = env.guests.containers[0]
    plan = {r.name: r for r in build_plan(env)}
    planned = plan[f"ct-{ct.vmid}-features"]
    assert planned.kind == "GuestFeatures" and planned.depends_on == (f"ct-{ct.vmid}",)
    steps = feature_steps(GuestFeaturesInputs.from_props(container_feature_inputs(env, ct, "any-instance")))
    # The plan holds the provider's own steps (those create runs); its lines are their compact rendering.
    assert list(planned.calls) == steps
    assert [s.action for s in planned.steps] == [line for _, line in plan_lines(steps, compact=True)]
    assert f"ct-{ct.vmid}-features" in plan[f"vllm-{ct.vmid}"].depends_on
    # The guest's own steps no longer pretend to run features before the start.
    assert not any("phoenix-feature" in str(s) for s in plan[f"ct-{ct.vmid}"].steps)
    feature = steps[-1]
    assert "GREETING=hello; world" in feature.argv and "PHOENIX_TARGET=lxc" in feature.argv
    assert feature.stdin == env.feature_scripts["base_setup"]
