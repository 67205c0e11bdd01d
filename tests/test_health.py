"""The health light: freshness states the daemon records as time passes after a sync.

Uses Dagster's private test helpers (`freeze_time`, the daemon workspace context): they are
kept to this one module."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from conftest import ghl_resources
from dagster._core.definitions.freshness import FreshnessState
from dagster._core.test_utils import create_test_daemon_workspace_context, freeze_time
from dagster._core.workspace.load_target import ModuleTarget
from dagster._daemon.freshness import FreshnessDaemon

from resources.settings import PROJECT_ROOT
from sync_assets.ghl import ghl_contacts_reconciliation, hourly_contacts

# Built as the code location builds it: its partitions read SYNC_TIMEZONE when built, not at import.
ghl_contacts = hourly_contacts()


@pytest.fixture(params=["sqlite", "postgresql"])
def instance(request, tmp_path):
    """A Dagster instance with its storage on each database a deployment may use."""
    overrides = {}
    if request.param == "postgresql":
        overrides = {"storage": {"postgres": {"postgres_url": request.getfixturevalue("postgres_url")}}}
    with dg.instance_for_test(overrides=overrides, temp_dir=str(tmp_path)) as instance:
        yield instance


@pytest.fixture
def daemon_context(instance, emulator, sqlite_warehouse_url, monkeypatch):
    """The code location as `dagster dev` loads it, pointed at the test emulator."""
    monkeypatch.setenv("EMULATOR_URL", emulator.url)
    monkeypatch.setenv("WAREHOUSE_URL", sqlite_warehouse_url)
    target = ModuleTarget(module_name="definitions", attribute=None, working_directory=str(PROJECT_ROOT), location_name="workforce_sync")
    with create_test_daemon_workspace_context(target, instance) as context:
        yield context


def health_after(context, instance, asset, moment) -> FreshnessState:
    with freeze_time(moment):
        list(FreshnessDaemon().run_iteration(context))
    return instance.get_freshness_state_records([asset.key])[asset.key].freshness_state


def test_hourly_sync_is_green_at_1h_yellow_at_3h_red_at_7h(daemon_context, instance, emulator, sqlite_warehouse_url):
    synced_at = datetime.now(UTC)
    with freeze_time(synced_at):
        result = dg.materialize([ghl_contacts], resources=ghl_resources(emulator, sqlite_warehouse_url),
                                partition_key="2026-11-20-13:00", instance=instance)
    assert result.success

    states = [health_after(daemon_context, instance, ghl_contacts, synced_at + timedelta(hours=h)) for h in (1, 3, 7)]

    assert states == [FreshnessState.PASS, FreshnessState.WARN, FreshnessState.FAIL]


def test_nightly_reconciliation_stays_green_through_the_day_and_turns_red_after_a_missed_night(
    daemon_context, instance, emulator, sqlite_warehouse_url
):
    synced_at = datetime.now(UTC)
    with freeze_time(synced_at):
        assert dg.materialize([ghl_contacts_reconciliation], resources=ghl_resources(emulator, sqlite_warehouse_url), instance=instance).success

    states = [health_after(daemon_context, instance, ghl_contacts_reconciliation, synced_at + timedelta(hours=h)) for h in (20, 27, 31)]

    assert states == [FreshnessState.PASS, FreshnessState.WARN, FreshnessState.FAIL]
