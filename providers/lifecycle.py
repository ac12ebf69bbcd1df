"""Shared lifecycle rules for Phoenix's dynamic providers (DESIGN.md "Dynamic provider rules").

Every provider file (one per resource noun) follows the same shape:

1. ``<Noun>Inputs``: a frozen dataclass with ``from_props`` (numbers arrive as floats over gRPC) and
   ``to_props``; the ``version`` input is the provider's logic version, bumped when its behaviour changes.
2. pure logic: functions that render argv commands and parse their output (unit-tested without SSH);
3. the provider (a :class:`providers.host.HostProvider`: plain data only, pickled into state) with
   ``check`` tolerant of unknowns at preview, an exact ``diff`` via :func:`diff_inputs`, ``update``
   returning every output, ``read`` for ``pulumi refresh`` and ``delete`` from stored outputs alone;
4. the ``pulumi.dynamic.Resource`` subclass with typed outputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pulumi.dynamic import CheckFailure, DiffResult
from pulumi.output import Unknown

PROVIDER_KEY = "__provider"
VERSION_KEY = "version"


def is_unknown(value: Any) -> bool:
    """True for a value not known yet at preview (an output of a resource still to be created)."""
    return isinstance(value, Unknown)


def has_unknowns(props: Mapping[str, Any]) -> bool:
    return any(is_unknown(v) for v in props.values())


def changed(olds: Mapping[str, Any], news: Mapping[str, Any], keys: Iterable[str]) -> list[str]:
    """Keys among ``keys`` whose value differs between the stored outputs and the new inputs.

    An unknown new value counts as a change (it may differ); ``None`` and a missing key are the same.
    Numbers compare by value, so ``8`` in state equals ``8.0`` from the wire.
    """
    return [k for k in keys if is_unknown(news.get(k)) or olds.get(k) != news.get(k)]


def diff_inputs(
    olds: Mapping[str, Any],
    news: Mapping[str, Any],
    *,
    replace_on: Iterable[str],
    update_on: Iterable[str],
    delete_before_replace: bool = False,
) -> DiffResult:
    """An exact diff: identity keys (``replace_on``) replace, the rest (``update_on``) update in place.

    Keys in neither list never cause a change; ``__provider`` is deliberately not compared, so moving a
    provider class between modules does not churn resources. The ``version`` input is always an update.
    """
    replaces = changed(olds, news, replace_on)
    updates = changed(olds, news, [*update_on, VERSION_KEY])
    return DiffResult(
        changes=bool(replaces or updates),
        replaces=replaces,
        delete_before_replace=delete_before_replace if replaces else False,
    )


def require(news: Mapping[str, Any], keys: Iterable[str]) -> list[CheckFailure]:
    """A failure per required key that is missing (unknowns pass: they are known at up)."""
    return [CheckFailure(k, f"{k} is required") for k in keys if news.get(k) is None]


def as_int(value: Any) -> int:
    """gRPC carries numbers as doubles; state wants the int back (``8.0 -> 8``)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise ValueError(f"expected an integer, got {value!r}")
    return int(value)
