"""The health light as the `health` asset check: declared on every asset with a freshness policy,
evaluated by the `health_checks` sensor without a run, passed -> WARN -> ERROR as the clock moves
past the warn and the fail window, stored as the sensor daemon stores it, and reported again only
when the light changes or an hour has passed."""

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from conftest import ghl_resources
from health_daemon import freeze_time

from definitions import defs as load_definitions
from resources.health import health, policies_of
from sensors.health import CHECK_NAME, health_checks_sensor
from sync_assets.ghl import hourly_contacts

ghl_contacts = hourly_contacts()
SYNCED_AT = datetime(2026, 11, 20, 14, 2, tzinfo=UTC)
CHECK = dg.AssetCheckKey(ghl_contacts.key, CHECK_NAME)


@pytest.fixture
def instance(tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        yield instance


def tick(defs, instance, cursor):
    """One sensor tick, its asset events stored on the instance as the sensor daemon stores them."""
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, sensor_name=health_checks_sensor.name)
    result = health_checks_sensor.evaluate_tick(context)
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return result


def stored(instance):
    record = instance.event_log_storage.get_latest_asset_check_execution_by_key([CHECK])[CHECK]
    return record.event.dagster_event.event_specific_data


def test_every_asset_with_a_policy_has_the_health_check():
    defs = load_definitions()
    graph = defs.resolve_asset_graph()
    watched = {key for key, policy in policies_of(graph).items() if policy is not None}
    checked = {key.asset_key for key in graph.asset_check_keys if key.name == CHECK_NAME}
    assert watched and checked == watched
    assert not any(graph.get_check_spec(dg.AssetCheckKey(key, CHECK_NAME)).blocking for key in watched)
    assert health_checks_sensor.name in {s.name for s in defs.sensors}
    assert health_checks_sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_passed_warn_error_as_the_clock_moves(instance, emulator, sqlite_warehouse_url):
    defs = load_definitions()
    policies = {key: p for key, p in policies_of(defs.resolve_asset_graph()).items() if p is not None}
    # A new install: nothing synced, every light unknown, no evaluation (no failed check before a first sync).
    with freeze_time(SYNCED_AT):
        first = tick(defs, instance, None)
        assert first.asset_events == []
        assert dg.materialize([ghl_contacts], resources=ghl_resources(emulator, sqlite_warehouse_url),
                              partition_key="2026-11-20-13:00", instance=instance).success

    cursor = first.cursor
    expected = [(1, True, None, "green"), (3, False, dg.AssetCheckSeverity.WARN, "yellow"), (7, False, dg.AssetCheckSeverity.ERROR, "red")]
    for hours, passed, severity, light in expected:
        with freeze_time(SYNCED_AT + timedelta(hours=hours)):
            result = tick(defs, instance, cursor)
            assert [e.asset_key for e in result.asset_events] == [ghl_contacts.key]  # the others never synced
            (event,) = result.asset_events
            assert health(instance, policies)[ghl_contacts.key].light == light  # the light `status` shows
            evaluation = stored(instance)
            assert evaluation.passed is passed and evaluation.check_name == CHECK_NAME
            if severity:
                assert evaluation.severity == severity
            metadata = {k: v.value for k, v in evaluation.metadata.items()}
            assert metadata["light"] == light
            assert metadata["age_hours"] == pytest.approx(hours, abs=0.01)
            assert metadata["last_success"] == event.metadata["last_success"].value
            assert datetime.fromisoformat(metadata["last_success"]).astimezone(UTC).date() == SYNCED_AT.date()
            assert (metadata["warn_window_hours"], metadata["fail_window_hours"]) == (2, 6)
            cursor = result.cursor

            # The next tick, same light, same hour: nothing reported, nothing stored.
            again = tick(defs, instance, cursor)
            assert again.asset_events == [] and json.loads(again.cursor) == json.loads(cursor)
            cursor = again.cursor

    # An unchanged light is reported again once its last report is an hour old (the age moves on).
    with freeze_time(SYNCED_AT + timedelta(hours=7, minutes=59)):
        assert tick(defs, instance, cursor).asset_events == []
    with freeze_time(SYNCED_AT + timedelta(hours=8)):
        (event,) = tick(defs, instance, cursor).asset_events
        assert event.metadata["age_hours"].value == pytest.approx(8, abs=0.01)
        assert stored(instance).severity == dg.AssetCheckSeverity.ERROR


def test_the_check_run_in_a_run_says_the_same(instance, emulator, sqlite_warehouse_url):
    """Run in a run (the UI's "Execute"), the check gives the sensor's evaluation."""
    defs = load_definitions()
    with freeze_time(SYNCED_AT):
        assert dg.materialize([ghl_contacts], resources=ghl_resources(emulator, sqlite_warehouse_url),
                              partition_key="2026-11-20-13:00", instance=instance).success
    with freeze_time(SYNCED_AT + timedelta(hours=3)):
        job = defs.resolve_implicit_global_asset_job_def()
        result = job.get_subset(asset_check_selection={CHECK}, asset_selection=set()).execute_in_process(instance=instance)
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.metadata["light"].value == "yellow"
