"""The guest providers read a state the code before the folder move wrote (tests/fixtures/state_compat).

Without the lab: each stored guest resource's provider unpickles to today's class, its stored inputs come
back through today's typed inputs unchanged, and check + diff of the stored state against those same
inputs is no change (so an ``up`` with an unchanged program does nothing). tests/state_compat runs the
same state through the real engine against the lab.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import dill
import pytest

import providers  # noqa: F401  # the old module paths the pickles name
from providers.base import PROVIDER_KEY
from providers.guests.features import GuestFeaturesProvider
from providers.guests.firewall import GuestFirewallProvider
from providers.guests.lxc_guest import LxcGuestProvider
from providers.guests.template_layer import TemplateLayerProvider

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "state_compat" / "pre-move.json"
PROVIDERS: dict[str, type] = {
    "TemplateLayer": TemplateLayerProvider,
    "LxcGuest": LxcGuestProvider,
    "GuestFirewall": GuestFirewallProvider,
    "GuestFeatures": GuestFeaturesProvider,
}
SECRET_SIG = "4dabf18193072939515e22adb298388d"


def plain(value: Any) -> Any:
    """A stored value without Pulumi's secret envelope."""
    if isinstance(value, dict) and SECRET_SIG in value:
        inner = value.get("plaintext", value.get("value"))
        return json.loads(inner) if isinstance(inner, str) and inner.startswith('"') else inner
    return value


def stored() -> list[tuple[str, dict[str, Any]]]:
    state = json.loads(FIXTURE.read_text())
    deployment = state.get("deployment", state.get("checkpoint", {}).get("latest", state))
    return [
        (r["type"].rsplit(":", 1)[-1], r)
        for r in deployment["resources"]
        if r["type"].startswith("pulumi-python:dynamic/phoenix:")
        and r["type"].rsplit(":", 1)[-1] in PROVIDERS
    ]


RESOURCES = stored()


def test_the_fixture_has_every_guest_resource_kind() -> None:
    assert {kind for kind, _ in RESOURCES} == set(PROVIDERS)


@pytest.mark.parametrize(
    ("kind", "resource"), RESOURCES, ids=[r["urn"].rsplit("::", 1)[-1] for _, r in RESOURCES]
)
def test_a_stored_guest_resource_unpickles_round_trips_and_diffs_clean(
    kind: str, resource: dict[str, Any]
) -> None:
    provider = dill.loads(base64.b64decode(plain(resource["inputs"][PROVIDER_KEY])))
    assert type(provider) is PROVIDERS[kind]
    inputs = {k: plain(v) for k, v in resource["inputs"].items() if k != PROVIDER_KEY}
    outputs = {k: plain(v) for k, v in resource["outputs"].items() if k != PROVIDER_KEY}
    typed = provider.inputs_class.from_props(inputs)
    props = {k: v for k, v in typed.to_props().items() if v is not None}
    assert {k: props[k] for k in inputs} == inputs
    # An input newer than the state reads as its declared default (what the code before it did).
    defaults = provider.inputs_class.defaults()
    assert {k: props[k] for k in props if k not in inputs} == {
        k: defaults[k] for k in props if k not in inputs
    }
    checked = provider.check(outputs, inputs)
    assert checked.failures == []
    diff = provider.diff(resource["id"], outputs, checked.inputs)
    assert (diff.changes, diff.replaces) == (False, [])
