"""Dagster's run retries (on in the instance's dagster.yaml) retry a failed run once more only
when retrying can help: a provider that was down, yes; refused credentials or a refused
deletion share, no: those wait for the operator instead of failing three more times."""

import dagster as dg
import pytest
from conftest import ghl_resources
from helpers import reconcile

WILL_RETRY = "dagster/will_retry"  # Dagster's verdict on a failed run, set when the failure is stored


@pytest.fixture
def instance():
    with dg.instance_for_test(overrides={"run_retries": {"enabled": True, "max_retries": 3}}) as instance:
        yield instance


def verdict(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> str:
    assert not result.success
    return instance.get_run_by_id(result.run_id).tags.get(WILL_RETRY)


def test_a_provider_that_keeps_failing_is_retried(emulator, sqlite_warehouse_url, instance):
    emulator.inject("gohighlevel", "500", times=100)

    assert verdict(instance, reconcile(ghl_resources(emulator, sqlite_warehouse_url, max_attempts=2), instance)) == "true"


def test_refused_credentials_are_not_retried(emulator, sqlite_warehouse_url, instance):
    emulator.ghl.token = "rotated-in-the-provider-ui"

    assert verdict(instance, reconcile(ghl_resources(emulator, sqlite_warehouse_url), instance)) == "false"


def test_a_refused_mass_deletion_is_not_retried(emulator, sqlite_warehouse_url, instance):
    resources = ghl_resources(emulator, sqlite_warehouse_url)
    assert reconcile(resources, instance).success
    for contact in sorted(emulator.ghl.truth())[:200]:
        emulator.ghl.delete(contact)

    assert verdict(instance, reconcile(resources, instance)) == "false"
