"""The README's commands: the headless one-shot, the local start-up, and the schedules they run."""

import json
import os
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from helpers import free_port, stop_group, warehouse_contacts

from resources.settings import PROJECT_ROOT
from definitions import defs as load_definitions

defs = load_definitions()

CLI = str(Path(sys.executable).parent / "workforce-sync")


def run_once(emulator, warehouse_url, tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "EMULATOR_URL": emulator.url, "WAREHOUSE_URL": warehouse_url, "DAGSTER_HOME": str(tmp_path / "home")}
    env.pop("SYNC_ENV", None)
    return subprocess.run([CLI, "run-once"], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # a process that syncs everything once
def test_run_once_syncs_everything_and_prints_a_summary(emulator, sqlite_warehouse_url, tmp_path):
    result = run_once(emulator, sqlite_warehouse_url, tmp_path)

    assert result.returncode == 0, result.stderr[-2000:]
    table = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:] if line.startswith("ghl_")}
    assert set(table) == {"ghl_contacts", "ghl_contacts_reconciliation", "ghl_contacts_from_events"}
    assert table["ghl_contacts_reconciliation"][2:5] == ["ok", "300/300", "1"]  # 300 contacts fit one page of 500
    assert table["ghl_contacts_from_events"][2] == "ok"  # no event pending: nothing to fetch
    assert [table[name][-1] for name in ("ghl_contacts", "ghl_contacts_reconciliation")] == ["green", "green"]
    assert len(warehouse_contacts(sqlite_warehouse_url)) == 300


@pytest.mark.slow  # a process that tries every sync
def test_run_once_exits_non_zero_and_says_why_when_a_sync_fails(emulator, sqlite_warehouse_url, tmp_path):
    emulator.ghl.token = "revoked"

    result = run_once(emulator, sqlite_warehouse_url, tmp_path)

    assert result.returncode == 1
    assert result.stdout.count("FAILED") == 2
    assert "HTTP 401" in result.stdout and "GHL_TOKEN" in result.stdout


def test_hourly_schedule_syncs_the_last_complete_hour_once():
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 20, 14, 5, tzinfo=UTC))

    (request,) = defs.resolve_schedule_def("ghl_contacts_hourly_schedule").evaluate_tick(context).run_requests

    assert request.partition_key == "2026-11-20-13:00"
    assert request.run_key == "2026-11-20-13:00"


def test_reconciliation_runs_nightly_at_two_by_default():
    nightly = defs.resolve_schedule_def("ghl_contacts_reconciliation_nightly")
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 21, 2, 0, tzinfo=UTC))

    (request,) = nightly.evaluate_tick(context).run_requests

    assert nightly.cron_schedule == "0 2 * * *"
    assert request.tags["dagster/schedule_name"] == "ghl_contacts_reconciliation_nightly"
    assert defs.resolve_job_def(nightly.job_name).asset_layer.selected_asset_keys == {dg.AssetKey("ghl_contacts_reconciliation")}


def _graphql(ui: str, query: str) -> dict:
    request = urllib.request.Request(f"{ui}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["data"]


def _wait_for_assets(ui: str, process: subprocess.Popen, log: Path, deadline: float) -> list[str]:
    """Poll the UI until it lists the assets; on giving up, say what it last answered and what the script logged."""
    last = "no answer yet"
    while time.monotonic() < deadline:
        assert process.poll() is None, f"scripts/start exited early:\n{log.read_text()[-3000:]}"
        try:
            data = _graphql(ui, "{ assetNodes { assetKey { path } } }")
            if data.get("assetNodes"):
                return sorted("/".join(node["assetKey"]["path"]) for node in data["assetNodes"])
            last = repr(data)
        except (OSError, KeyError, TypeError, ValueError) as error:
            last = repr(error)
        time.sleep(1)
    raise AssertionError(f"the UI at {ui} did not list the assets in time; last answer: {last}\n{log.read_text()[-3000:]}")


@pytest.mark.slow  # installs and starts the emulator and dagster dev
def test_start_script_serves_the_ui_with_the_assets(tmp_path):
    # Free ports, not 3000 and 8700: the suite runs while a local install is up.
    ui_port, emulator_port = free_port(), free_port()
    ui = f"http://127.0.0.1:{ui_port}"
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "WAREHOUSE_URL": f"sqlite:///{tmp_path / 'w.db'}",
           "DAGSTER_PORT": str(ui_port), "EMULATOR_URL": f"http://127.0.0.1:{emulator_port}"}
    env.pop("SYNC_ENV", None)
    log_path = tmp_path / "start.log"
    log = log_path.open("w")
    process = subprocess.Popen([str(PROJECT_ROOT / "scripts" / "start")], env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        assets = _wait_for_assets(ui, process, log_path, time.monotonic() + 600)
        repository = '(repositorySelector: {repositoryName: "__repository__", repositoryLocationName: "workforce_sync"})'
        schedules = _graphql(ui, f'{{ schedulesOrError{repository} {{ ... on Schedules {{ results {{ name scheduleState {{ status }} }} }} }} }}')
        sensors = _graphql(ui, f'{{ sensorsOrError{repository} {{ ... on Sensors {{ results {{ name sensorState {{ status }} }} }} }} }}')
        with urllib.request.urlopen(f"http://127.0.0.1:{emulator_port}/api/authinfo", timeout=10) as answer:
            emulator_status = answer.status  # the emulator it started listens where EMULATOR_URL says
    finally:
        stop_group(process, 30)
    assert assets == sorted(key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys())
    assert "ghl_contacts" in assets
    assert emulator_status == 200
    states = {s["name"]: s["scheduleState"]["status"] for s in schedules["schedulesOrError"]["results"]}
    assert states == {schedule.name: "RUNNING" for schedule in defs.schedules}
    sensor_states = {s["name"]: s["sensorState"]["status"] for s in sensors["sensorsOrError"]["results"]}
    assert sensor_states == {sensor.name: "RUNNING" for sensor in defs.sensors}


def test_the_emulator_refuses_to_start_in_production():
    env = {**os.environ, "SYNC_ENV": "production"}
    result = subprocess.run([sys.executable, "-m", "emulator", "--port", "0"], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True, timeout=300)

    assert result.returncode == 2
    assert "does not run with SYNC_ENV=production" in result.stderr
