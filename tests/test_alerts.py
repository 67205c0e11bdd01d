"""Alerts: a failed run and a red health light reach the webhook (the emulator's Slack-compatible
sink) once, with the reason and a link into the UI; without a webhook they are only logged."""

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from conftest import ghl_resources
from health_daemon import daemon_workspace, freeze_time, step_health

from sensors.alerts import health_alerts, run_failure_alerts
from sync_assets.ghl import hourly_contacts

# Built as the code location builds it: its partitions read SYNC_TIMEZONE when built, not at import.
ghl_contacts = hourly_contacts()

UI = "https://dagster.example.com"
SECRET = "pit-DISTINCTIVE-alert-token-91c4"
HOURS = dg.HourlyPartitionsDefinition(start_date="2026-11-01-00:00")
REASON = "HTTP 401 from GoHighLevel: the token was refused; check GHL_TOKEN"


@dg.asset(partitions_def=HOURS)
def contacts_sync() -> None:
    raise dg.Failure(description=f"{REASON}. (sent Authorization: Bearer {SECRET})")


@dg.asset
def contacts_crash() -> None:
    raise RuntimeError("connection reset by peer")


@pytest.fixture
def instance(tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        yield instance


@pytest.fixture
def webhook(emulator, monkeypatch):
    monkeypatch.setenv("ALERT_WEBHOOK_URL", emulator.webhook.url)
    monkeypatch.setenv("DAGSTER_WEBSERVER_URL", UI + "/")
    monkeypatch.setenv("GHL_TOKEN", SECRET)
    return emulator.webhook


def failure_tick(instance, cursor):
    """One tick of the run-failure sensor as the daemon runs it: over the instance's run events."""
    context = dg.build_sensor_context(instance=instance, cursor=cursor, sensor_name=run_failure_alerts.name)
    return run_failure_alerts.evaluate_tick(context).cursor


def failed_run(instance, asset=contacts_sync, **options):
    result = dg.materialize([asset], instance=instance, raise_on_error=False, **options)
    assert not result.success
    return result


def test_a_failed_run_posts_one_alert_with_its_asset_partition_reason_and_link(instance, webhook):
    cursor = failure_tick(instance, None)  # the first tick starts from now
    result = failed_run(instance, partition_key="2026-11-20-13:00")

    cursor = failure_tick(instance, cursor)
    failure_tick(instance, cursor)  # a later tick: the run was already alerted

    (message,) = webhook.messages()
    text = message["text"]
    assert f"{UI}/runs/{result.run_id}" in text
    assert REASON in text
    assert "contacts_sync" in text and "2026-11-20-13:00" in text
    assert "Traceback" not in text and 'File "' not in text
    assert SECRET not in json.dumps(message)
    button = message["blocks"][-1]["elements"][0]
    assert button["url"] == f"{UI}/runs/{result.run_id}"


def test_an_exception_without_a_description_is_reported_by_its_message(instance, webhook):
    result = failed_run(instance, contacts_crash)
    context = dg.build_run_status_sensor_context(
        sensor_name=run_failure_alerts.name, dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id), dagster_event=result.get_run_failure_event(),
    ).for_run_failure()

    run_failure_alerts(context)

    (message,) = webhook.messages()
    assert "RuntimeError: connection reset by peer" in message["text"]
    assert "contacts_crash" in message["text"]


def test_without_a_webhook_a_failed_run_is_logged_and_nothing_is_posted(instance, emulator, monkeypatch, capfd):
    monkeypatch.delenv("ALERT_WEBHOOK_URL", raising=False)
    cursor = failure_tick(instance, None)
    result = failed_run(instance, partition_key="2026-11-20-13:00")
    capfd.readouterr()

    failure_tick(instance, cursor)

    assert emulator.webhook.messages() == []
    assert emulator.requests("webhook") == []
    logged = capfd.readouterr().err  # the sensor tick's log (the UI shows it on the tick)
    assert "WARNING - ALERT_WEBHOOK_URL is not set, so this alert is only logged" in logged
    assert f"/runs/{result.run_id}" in logged


def test_a_webhook_that_fails_is_logged_and_the_sensor_moves_on(instance, emulator, webhook, capfd):
    emulator.inject("webhook", "500", times=5)
    cursor = failure_tick(instance, None)
    first = failed_run(instance, partition_key="2026-11-20-13:00")
    capfd.readouterr()

    cursor = failure_tick(instance, cursor)
    logged = capfd.readouterr().err
    emulator.clear_faults()
    second = failed_run(instance, partition_key="2026-11-20-14:00")
    failure_tick(instance, cursor)

    assert "ERROR - the alert webhook answered HTTP 500" in logged and first.run_id in logged
    assert emulator.webhook.url not in logged
    (message,) = webhook.messages()  # the second run's alert; the first was logged, not retried
    assert second.run_id in message["text"]


# -- the health light -------------------------------------------------------------------------
@pytest.fixture
def workspace(instance, emulator, sqlite_warehouse_url, monkeypatch):
    monkeypatch.setenv("EMULATOR_URL", emulator.url)
    monkeypatch.setenv("WAREHOUSE_URL", sqlite_warehouse_url)
    with daemon_workspace(instance) as context:
        yield context


def health_tick(instance, cursor):
    from definitions import defs as load_definitions
    defs = load_definitions()
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, sensor_name=health_alerts.name)
    return health_alerts.evaluate_tick(context).cursor


def test_red_health_posts_once_and_recovery_posts_once(workspace, instance, emulator, webhook, sqlite_warehouse_url):
    resources = ghl_resources(emulator, sqlite_warehouse_url)
    synced_at = datetime.now(UTC).replace(microsecond=0)
    with freeze_time(synced_at):
        assert dg.materialize([ghl_contacts], resources=resources, partition_key="2026-11-20-13:00", instance=instance).success

    step_health(workspace, synced_at + timedelta(hours=1))
    cursor = health_tick(instance, None)
    assert webhook.messages() == []  # green: nothing to say

    step_health(workspace, synced_at + timedelta(hours=7))
    cursor = health_tick(instance, cursor)
    cursor = health_tick(instance, cursor)  # still red: no second alert
    (red,) = webhook.messages()

    with freeze_time(synced_at + timedelta(hours=8)):
        assert dg.materialize([ghl_contacts], resources=resources, partition_key="2026-11-20-14:00", instance=instance).success
    step_health(workspace, synced_at + timedelta(hours=8, minutes=1))
    cursor = health_tick(instance, cursor)
    health_tick(instance, cursor)
    _, green = webhook.messages()

    assert "ghl_contacts is red" in red["text"]
    assert "no successful sync for more than 6 hours" in red["text"]
    assert f"last success: {synced_at:%Y-%m-%d %H:%M} UTC" in red["text"]
    assert f"{UI}/assets/ghl_contacts" in red["text"]
    assert "ghl_contacts is green again" in green["text"]
    assert len(webhook.messages()) == 2
    assert "ghl_contacts_reconciliation" not in json.dumps(webhook.messages())  # never synced: unknown, not red
