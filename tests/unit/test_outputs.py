"""``with_values`` gives what ``Output.all(...).apply(...)`` gives for plain-data values, without lifting
them deeply (bench/eval_scale measures what that saves; here only that the answer is the same)."""

from __future__ import annotations

import asyncio
from typing import Any

import pulumi

from phoenix_components.components.outputs import with_values
from tests.support.capture import capture


def _output(value: Any, *, known: bool = True, secret: bool = False) -> pulumi.Output[Any]:
    """An Output as a resource's would be: ``known=False`` is a value not known yet (preview)."""
    loop = asyncio.get_event_loop()
    futures = [loop.create_future() for _ in range(3)]
    for future, result in zip(futures, (value, known, secret), strict=True):
        future.set_result(result)
    return pulumi.Output(set(), futures[0], futures[1], futures[2])


async def _data(output: pulumi.Output[Any]) -> tuple[Any, bool, bool]:
    return await output.future(), await output.is_known(), await output.is_secret()


def _resolve(output: pulumi.Output[Any]) -> tuple[Any, bool, bool]:
    return asyncio.get_event_loop().run_until_complete(_data(output))


def test_the_values_come_in_order_whether_outputs_or_plain() -> None:
    minors = {"0": 195, "1": 196}
    got = _resolve(with_values([_output(minors), "/tank/a", _output(3)], lambda values: values))
    assert got == ([minors, "/tank/a", 3], True, False)


def test_no_outputs_at_all_is_still_an_output() -> None:
    result = with_values([1, 2], sum)
    assert isinstance(result, pulumi.Output)
    assert _resolve(result) == (3, True, False)


def test_one_secret_value_makes_the_result_secret() -> None:
    got = _resolve(with_values([_output("a"), _output("b", secret=True)], "".join))
    assert got == ("ab", True, True)


def test_one_unknown_value_makes_the_result_unknown_and_then_is_not_run() -> None:
    ran: list[list[Any]] = []
    got = _resolve(with_values([_output("a"), _output(None, known=False)], ran.append))
    assert got[1] is False
    assert ran == []


def test_the_result_depends_on_the_resources_of_every_value() -> None:
    def program() -> None:
        first = pulumi.CustomResource("test:index:Thing", "first", {"size": 1})
        second = pulumi.CustomResource("test:index:Thing", "second", {"size": 2})
        combined = with_values([first.id, 7, second.id], lambda values: "-".join(map(str, values)))
        pulumi.CustomResource("test:index:Thing", "user", {"label": combined})

    seen = capture(program)
    assert set(seen["user"].dependencies) == {seen["first"].urn, seen["second"].urn}
    assert seen["user"].inputs["label"] == "first-id-7-second-id"
