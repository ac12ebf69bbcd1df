"""RetryPolicy.from_env: the provider host's PVE retry tuning from PHOENIX_PVE_* variables."""

from __future__ import annotations

import pytest

from providers.channels.pve import RetryPolicy
from providers.errors import InvalidTargetError


def test_unset_variables_keep_the_defaults() -> None:
    assert RetryPolicy.from_env({}) == RetryPolicy()


def test_lock_budget_and_first_delay_are_read() -> None:
    env = {"PHOENIX_PVE_LOCK_BUDGET_S": "300", "PHOENIX_PVE_RETRY_DELAY_S": "0.05"}
    assert RetryPolicy.from_env(env) == RetryPolicy(lock_budget=300.0, base_delay=0.05)


@pytest.mark.parametrize("text", ["soon", "-1", "nan", ""])
def test_a_bad_value_is_a_config_error_naming_the_variable(text: str) -> None:
    with pytest.raises(InvalidTargetError, match="PHOENIX_PVE_LOCK_BUDGET_S"):
        RetryPolicy.from_env({"PHOENIX_PVE_LOCK_BUDGET_S": text})
