"""The output types the SDK reads for every resource it resolves are read once per resource class.

bench/eval_scale measures what this saves; here only that the SDK still gets the same answer.
"""

from __future__ import annotations

import pulumi
from pulumi import _types as sdk_types
from pulumi.runtime import rpc

import providers.base as base
from providers.base import DynamicResource


class _Annotated(DynamicResource):
    size: pulumi.Output[int]
    labels: pulumi.Output[dict[str, str]]


class _Component(pulumi.ComponentResource):
    vmid: int


def test_the_sdk_looks_up_phoenix_s_reader() -> None:
    # rpc.resolve_outputs calls _types.resource_types through the module, so the wrapper is what it gets.
    assert rpc._types.resource_types is base._resource_types


def test_a_dynamic_resource_gets_the_sdk_s_types_read_once() -> None:
    base._declared_types.pop(_Annotated, None)
    first = sdk_types.resource_types(_Annotated)
    assert first == base._sdk_resource_types(_Annotated) == {"size": int, "labels": dict[str, str]}
    assert _Annotated in base._declared_types
    again = sdk_types.resource_types(_Annotated)
    assert again == first and again is not first  # a fresh dict each time: a caller may change its own


def test_a_component_s_types_are_read_once_too_with_the_sdk_s_answer() -> None:
    base._declared_types.pop(_Component, None)
    assert sdk_types.resource_types(_Component) == base._sdk_resource_types(_Component)
    assert _Component in base._declared_types
