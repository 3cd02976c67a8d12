"""The registry lock: a slot left taken (a run killed while registering, on a store that never
revokes its lease) bounds the next run's wait with an error naming the command that frees it."""

from __future__ import annotations

import pytest


def _take_slot(name: str, active: int) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    with get_client(sync_client=True) as client:
        client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=active))


def test_a_lock_left_taken_ends_the_wait_naming_how_to_free_it(prefect_server):
    from tasks.register import RegistryLockTimeout, holding_registry_lock, registry_lock_name

    with holding_registry_lock("lock-test"):  # free: taken and given back
        pass
    name = registry_lock_name("lock-test")
    _take_slot(name, 1)  # what a run killed inside the lock leaves behind
    try:
        with pytest.raises(RegistryLockTimeout, match=rf"prefect gcl update {name} --active-slots 0"):
            with holding_registry_lock("lock-test", wait_seconds=2):
                pytest.fail("entered a lock that was taken")
    finally:
        _take_slot(name, 0)


def test_a_timeout_inside_the_lock_is_not_taken_for_the_wait(prefect_server):
    from tasks.register import holding_registry_lock

    with pytest.raises(TimeoutError) as raised:
        with holding_registry_lock("lock-test-inner", wait_seconds=30):
            raise TimeoutError("the champion's scoring timed out")
    assert type(raised.value) is TimeoutError
