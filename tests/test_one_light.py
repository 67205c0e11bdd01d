"""One health light: `workforce-sync status`, `status --json`, the `health_alerts` sensor and the
daily report show the same light for every asset at the same moment, as the clock moves from
green to yellow to red, and red also when the freshness daemon has stopped."""

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from conftest import ghl_resources
from health_daemon import daemon_workspace, freeze_time, step_health

import cli
from definitions import defs as load_definitions
from resources.warehouse import WarehouseResource
from sensors.alerts import health_alerts
from sync_assets.ghl import hourly_contacts

# Built as the code location builds it: its partitions read SYNC_TIMEZONE when built, not at import.
ghl_contacts = hourly_contacts()

SYNCED_AT = datetime(2026, 11, 20, 14, 2, tzinfo=UTC)


@pytest.fixture
def home(tmp_path, monkeypatch, emulator, sqlite_warehouse_url):
    """The instance `workforce-sync` opens (DAGSTER_HOME), shared with the test, the daemon and
    the sensor; the code location pointed at the test emulator, warehouse and webhook."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("EMULATOR_URL", emulator.url)
    monkeypatch.setenv("WAREHOUSE_URL", sqlite_warehouse_url)
    monkeypatch.setenv("ALERT_WEBHOOK_URL", emulator.webhook.url)
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        yield instance


def status_lights(capsys) -> dict[str, str]:
    capsys.readouterr()
    cli.main(["status"])
    return {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]}


def status_json_lights(capsys) -> dict[str, str]:
    capsys.readouterr()
    cli.main(["status", "--json"])
    return {row["asset"]: row["light"] or "-" for row in json.loads(capsys.readouterr().out)}


def alert_lights(defs, instance, cursor) -> tuple[dict[str, str], str]:
    """The lights one `health_alerts` tick saw (its cursor keeps them), and the cursor."""
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, sensor_name=health_alerts.name)
    cursor = health_alerts.evaluate_tick(context).cursor
    return json.loads(cursor)["states"], cursor


def report_lights(defs, instance, warehouse_url: str) -> dict[str, str]:
    """The light column of the report the morning schedule's job makes (and posts) of the day before."""
    result = defs.resolve_job_def("sync_report_job").execute_in_process(
        instance=instance, partition_key=(SYNCED_AT.date() - timedelta(days=1)).isoformat(), resources={"warehouse": WarehouseResource(url=warehouse_url)})
    (materialization,) = result.asset_materializations_for_node("sync_report")
    lines = materialization.metadata["report"].value.splitlines()[2:]
    return {line.split("|")[1].strip(): line.split("|")[2].strip() for line in lines}


def test_status_json_alerts_and_report_show_one_light(home, emulator, sqlite_warehouse_url, capsys):
    defs = load_definitions()
    with freeze_time(SYNCED_AT):
        assert dg.materialize([ghl_contacts], resources=ghl_resources(emulator, sqlite_warehouse_url),
                              partition_key="2026-11-20-13:00", instance=home).success

    cursor = None
    seen = {}
    # (hours after the sync, whether the freshness daemon runs then, ghl_contacts' light)
    moments = [(1, True, "green"), (3, True, "yellow"), (7, False, "red")]  # at 7 h the daemon has stopped at WARN
    with daemon_workspace(home) as workspace:
        for hours, daemon_runs, expected in moments:
            moment = SYNCED_AT + timedelta(hours=hours)
            if daemon_runs:
                step_health(workspace, moment)
            with freeze_time(moment):
                table, as_json = status_lights(capsys), status_json_lights(capsys)
                alerts, cursor = alert_lights(defs, home, cursor)
                report = report_lights(defs, home, sqlite_warehouse_url)
            seen[hours] = table["ghl_contacts"]
            assert len(table) == 12  # every asset of the code location
            assert as_json == table
            assert alerts == {name: light for name, light in table.items() if light != "-"}  # the watched ones
            assert report == {name: light for name, light in table.items() if name != "sync_report"}
            assert table["ghl_contacts_reconciliation"] == "unknown" and table["xero_time_entries"] == "-"

    assert seen == {hours: expected for hours, _, expected in moments}
    messages = [m["text"] for m in emulator.webhook.messages()]
    (red,) = [text for text in messages if "is red" in text]  # the alert, at 7 h, from the age of the last success
    assert "ghl_contacts is red" in red
    posted = [text for text in messages if text.startswith("*Sync report")]  # the report posts the same light
    assert [next(line for line in text.splitlines() if "`ghl_contacts`" in line).split()[2].rstrip(":") for text in posted] \
        == ["green", "yellow", "red"]
