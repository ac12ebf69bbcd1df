"""Combining resource outputs the cheap way, for code that runs once per guest.

``pulumi.Output.all(a, b)`` passes every argument through ``Output.from_input``, which lifts a value
*deeply*: an Output holding a dict becomes one more Output per key and value, each with its own asyncio
task, and the SDK keeps them all alive until the program ends. For a guest's devN map (GPU index ->
device minor, one entry per GPU on the host) that was the largest single cost Phoenix added to the SDK's
per-guest work (bench/eval_scale: about 4 % of all the Python calls at 500 guests).

:func:`with_values` gives the same result for values that are plain data (no Outputs nested inside them),
as every resource output Phoenix combines is: one ``apply`` per Output, nested, so the result is unknown
when any of them is, secret when any is, and depends on the resources of all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pulumi

T = TypeVar("T")


def with_values(values: Sequence[pulumi.Input[Any]], then: Callable[[list[Any]], T]) -> pulumi.Output[T]:
    """``then`` applied to the values of ``values`` (Outputs or plain values, in order), as an Output.

    Outputs are resolved shallowly: a value must not hold further Outputs inside it.
    """

    def step(index: int, got: list[Any]) -> Any:
        if index == len(values):
            return then(got)
        value = values[index]
        if isinstance(value, pulumi.Output):
            return value.apply(lambda resolved: step(index + 1, [*got, resolved]))
        return step(index + 1, [*got, value])

    result = step(0, [])
    return result if isinstance(result, pulumi.Output) else pulumi.Output.from_input(result)
