"""`workforce-sync status`: each asset's health light, last success and last failure; exit 1
while anything is red."""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from conftest import ghl_resources
from health_daemon import daemon_workspace, freeze_time, step_health

import cli
from sync_assets.ghl import hourly_contacts

# Built as the code location builds it: its partitions read SYNC_TIMEZONE when built, not at import.
ghl_contacts = hourly_contacts()

CLI = str(Path(sys.executable).parent / "workforce-sync")
PARTITION = "2026-11-20-13:00"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """The instance `workforce-sync` opens (DAGSTER_HOME), shared with the test."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        yield instance


def status(capsys) -> tuple[int, dict[str, list[str]]]:
    """Exit code, and the printed table by asset."""
    capsys.readouterr()
    code = cli.main(["status"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["asset", "health", "last_success_utc", "last_failure_utc", "failed_run"]
    return code, {line.split()[0]: line.split() for line in lines[1:]}


def test_green_after_a_sync_red_seven_hours_later(home, emulator, sqlite_warehouse_url, monkeypatch, capsys):
    monkeypatch.setenv("EMULATOR_URL", emulator.url)
    monkeypatch.setenv("WAREHOUSE_URL", sqlite_warehouse_url)
    synced_at = datetime.now(UTC).replace(second=0, microsecond=0)
    with freeze_time(synced_at):
        assert dg.materialize([ghl_contacts], resources=ghl_resources(emulator, sqlite_warehouse_url),
                              partition_key=PARTITION, instance=home).success

    with freeze_time(synced_at + timedelta(minutes=5)):
        code, table = status(capsys)
    assert code == 0
    assert table["ghl_contacts"] == ["ghl_contacts", "green", f"{synced_at:%Y-%m-%dT%H:%M}Z", "-", "-"]
    assert table["ghl_contacts_reconciliation"][1:] == ["unknown", "-", "-", "-"]  # never synced: not red
    assert table["xero_time_entries"][1] == "-"  # no freshness policy: no light
    assert len(table) == 12  # every asset of the code location

    with daemon_workspace(home) as workspace:
        step_health(workspace, synced_at + timedelta(hours=7))
    with freeze_time(synced_at + timedelta(hours=7)):
        code, table = status(capsys)
    assert code == 1
    assert table["ghl_contacts"][1:3] == ["red", f"{synced_at:%Y-%m-%dT%H:%M}Z"]


def test_a_failed_run_shows_as_the_last_failure(home, emulator, sqlite_warehouse_url, capsys, frozen_clock):
    resources = ghl_resources(emulator, sqlite_warehouse_url)
    assert dg.materialize([ghl_contacts], resources=resources, partition_key=PARTITION, instance=home).success
    emulator.ghl.token = "revoked"
    failed = dg.materialize([ghl_contacts], resources=resources, partition_key=PARTITION, instance=home, raise_on_error=False)
    assert not failed.success
    ended = datetime.fromtimestamp(home.get_run_record_by_id(failed.run_id).end_time, UTC)

    code, table = status(capsys)

    assert code == 0  # failed, but synced minutes ago: still green
    assert table["ghl_contacts"][1] == "green"
    assert table["ghl_contacts"][3:] == [f"{ended:%Y-%m-%dT%H:%M}Z", failed.run_id]
    assert table["ghl_contacts_reconciliation"][3:] == ["-", "-"]


def test_a_configuration_error_exits_2(tmp_path):
    env = {**os.environ, "SYNC_ENV": "staging", "DAGSTER_HOME": str(tmp_path)}

    result = subprocess.run([CLI, "status"], env=env, capture_output=True, text=True, timeout=600)

    assert result.returncode == 2
    assert "SYNC_ENV must be 'local' or 'production', not 'staging'" in result.stderr


def test_json_says_what_the_table_says_and_more(home, emulator, sqlite_warehouse_url, capsys):
    resources = ghl_resources(emulator, sqlite_warehouse_url)
    synced_at = datetime(2026, 11, 20, 14, 2, tzinfo=UTC)
    with freeze_time(synced_at):
        assert dg.materialize([ghl_contacts], resources=resources, partition_key=PARTITION, instance=home).success
    emulator.ghl.token = "revoked"
    with freeze_time(synced_at + timedelta(minutes=20)):
        failed = dg.materialize([ghl_contacts], resources=resources, partition_key=PARTITION, instance=home, raise_on_error=False)

    with freeze_time(synced_at + timedelta(minutes=30)):
        code, table = status(capsys)
        json_code = cli.main(["status", "--json"])
    rows = {row["asset"]: row for row in json.loads(capsys.readouterr().out)}

    assert json_code == code == 0
    assert sorted(rows) == sorted(table)
    for name, row in rows.items():  # the same light, last success and last failure as the table
        line = table[name]
        assert (row["light"] or "-") == line[1]
        assert [cli._utc(datetime.fromisoformat(t).timestamp()) if t else "-" for t in (row["last_success_utc"], row["last_failure_utc"])] == line[2:4]
        assert (row["failed_run"] or "-") == line[4]
    contacts = rows["ghl_contacts"]
    assert contacts["last_run"] == {"run_id": failed.run_id, "started_utc": "2026-11-20T14:22:00+00:00",
                                    "finished_utc": "2026-11-20T14:22:00+00:00", "result": "failure", "rows": None}
    assert contacts["last_success_utc"] == "2026-11-20T14:02:00+00:00"
    assert contacts["first_sync_done"] is True
    # the next hourly tick at :05 after 14:32, the nightly reconciliation at 02:00 (GHL_RECONCILE_CRON)
    assert (contacts["next_scheduled_start_utc"], contacts["next_schedule"]) == ("2026-11-20T15:05:00+00:00", "ghl_contacts_hourly_schedule")
    assert rows["ghl_contacts_reconciliation"]["next_scheduled_start_utc"] == "2026-11-21T02:00:00+00:00"
    assert rows["ghl_contacts_reconciliation"]["first_sync_done"] is False
    assert rows["ghl_contacts_reconciliation"]["last_run"] is None
    assert rows["xero_time_entries"]["sensors"] == ["xero_approvals", "xero_mapping_changes"]
    assert rows["xero_time_entries"]["next_scheduled_start_utc"] is None
