"""Dagster's run retries (on in the instance's dagster.yaml) retry a failed run once more only
when retrying can help: a provider that was down, yes; refused credentials or a refused
deletion share, no: those wait for the operator instead of failing three more times.

No sync asset has a step retry policy of its own (README "Bad records, failures and retries");
a job given one (`op_retry_policy`) retries a step only where retrying can help, as run retries do."""

import dagster as dg
import pytest
from conftest import ghl_resources
from helpers import reconcile

from sync_assets.ghl import ghl_contacts_reconciliation

WILL_RETRY = "dagster/will_retry"  # Dagster's verdict on a failed run, set when the failure is stored
STEP_RETRY = dg.RetryPolicy(max_retries=2)  # as an operator would give a job; no delay, so the test is quick


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


def with_step_retries(resources: dict, instance: dg.DagsterInstance) -> tuple[dg.ExecuteInProcessResult, int]:
    """The reconciliation in a job with a step retry policy: its result, and how often the step was retried."""
    job = dg.define_asset_job("reconcile_with_step_retries", selection=[ghl_contacts_reconciliation], op_retry_policy=STEP_RETRY)
    definitions = dg.Definitions(assets=[ghl_contacts_reconciliation], jobs=[job], resources=resources)
    result = definitions.resolve_job_def(job.name).execute_in_process(instance=instance, raise_on_error=False)
    return result, sum(event.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY for event in result.all_events)


def test_a_step_retry_policy_gets_past_a_provider_down_for_a_moment(emulator, sqlite_warehouse_url, instance):
    # Both attempts the client makes at the first request fail: its step fails once, then succeeds.
    emulator.inject("gohighlevel", "500", times=2)

    result, retries = with_step_retries(ghl_resources(emulator, sqlite_warehouse_url, max_attempts=2), instance)

    assert (result.success, retries) == (True, 1)


def test_a_step_retry_policy_does_not_retry_refused_credentials(emulator, sqlite_warehouse_url, instance):
    emulator.ghl.token = "rotated-in-the-provider-ui"

    result, retries = with_step_retries(ghl_resources(emulator, sqlite_warehouse_url), instance)

    assert (result.success, retries) == (False, 0)
