"""The first start: on an empty instance every asset syncs once, in dependency order, without
anyone pressing a button, and a restart does not do it again.

The sensor on a frozen clock (which partitions, which order), then the real thing: `dagster-daemon
run` over an empty SQLite instance and the emulator anchored to the real now."""

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.test_utils import freeze_time

import cli
from definitions import defs as load_definitions

from emulator import Emulator
from resources.settings import PROJECT_ROOT, ensure_dagster_home
from sensors.first_sync import SENSOR_NAME, first_sync
from sensors.halo import halo_new_fiscal_year

defs = load_definitions()

BIN = Path(sys.executable).parent
NOW = datetime(2026, 11, 20, 12, 40, tzinfo=UTC)
FIRST_RUNS = (SENSOR_NAME, "halo_new_fiscal_year")  # the sensors that make the first sync
PUSH = "xero_time_entries"


def tick(sensor, instance, cursor: str | None = None) -> dg.SensorResult:
    with freeze_time(NOW):
        return sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs))


def requested(result) -> dict[str, str | None]:
    return {r.asset_selection[0].to_user_string(): r.partition_key for r in result.run_requests or []}


def test_the_first_wave_is_the_assets_without_upstreams_at_their_schedules_partitions():
    with dg.instance_for_test() as instance:
        first = requested(tick(first_sync, instance))
        fiscal_year = tick(halo_new_fiscal_year, instance)
        assert first == {
            "ghl_contacts": "2026-11-20-11:00",  # the last complete hour
            "ghl_contacts_reconciliation": None,
            "ghl_contacts_from_events": None,  # takes up the contact events stored before the daemon ran (none here)
            "halo_agents": None,
            "employes_employee_snapshots": "2026-11-20",  # today, as the nightly schedule runs it
            "sync_report": "2026-11-19",  # yesterday, as the morning schedule makes it
        }
        # The fiscal year is added, but its timesheets wait for agent_mappings.
        assert fiscal_year.run_requests == [] and fiscal_year.dynamic_partitions_requests[0].partition_keys == ["FY2026"]

        for name in first:
            instance.report_runless_asset_event(dg.AssetMaterialization(name))
        assert requested(tick(first_sync, instance)) == {"agent_mappings": None, "employes_employment_history": "2026-11-20"}
        instance.report_runless_asset_event(dg.AssetMaterialization("agent_mappings"))
        assert requested(tick(first_sync, instance)) == {
            "employes_employment_history": "2026-11-20", "xero_reconciliation": None, "xero_time_entries": "2026-11-20"}


def test_first_syncs_queue_behind_other_runs_and_an_asset_seen_done_is_not_asked_about_again():
    graph = defs.resolve_asset_graph()
    every = [k.to_user_string() for k in graph.toposorted_asset_keys if graph.get(k).is_materializable]
    with dg.instance_for_test() as instance:
        first = tick(first_sync, instance)
        for name in every:
            instance.report_runless_asset_event(dg.AssetMaterialization(name, partition="FY2026" if name == "halo_timesheets" else None))
        done = tick(first_sync, instance)
        instance.wipe_assets([dg.AssetKey("sync_report")])  # seen done: not synced a second time
        later = tick(first_sync, instance, done.cursor)

    assert {r.tags["dagster/priority"] for r in first.run_requests} == {"-10"}
    assert not done.run_requests and json.loads(done.cursor)["done"] == sorted(every)
    assert not later.run_requests and later.cursor in (None, done.cursor)


def test_an_asset_missing_from_the_cursor_gets_its_first_sync():
    with dg.instance_for_test() as instance:
        graph = defs.resolve_asset_graph()
        every = [k.to_user_string() for k in graph.toposorted_asset_keys if graph.get(k).is_materializable]
        # Every asset but sync_report was synced by an older release, whose cursor did not know it.
        for name in every:
            if name != "sync_report":
                instance.report_runless_asset_event(dg.AssetMaterialization(name, partition="FY2026" if name == "halo_timesheets" else None))
        result = tick(first_sync, instance, json.dumps({"done": [n for n in every if n != "sync_report"]}))

    assert requested(result) == {"sync_report": "2026-11-19"}


# -- under the real daemon ----------------------------------------------------------------------
def wait_for(what: str, check, seconds: float, seen=lambda: ""):
    """Poll `check` every 3 s; on giving up, say what was seen."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(3)
    raise AssertionError(f"{what}: not within {seconds:.0f} s. Seen: {seen()}")


class Daemon:
    """`dagster-daemon run` on the project's workspace, in its own session, stopped by its pid."""

    def __init__(self, env: dict, log: Path):
        self.log = log.open("a")
        self.process = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], cwd=PROJECT_ROOT, env=env,
                                        stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


def first_runs(instance) -> dict[str, list[dg.DagsterRun]]:
    """The runs of the first sync, by the assets they planned."""
    found: dict[str, list] = {}
    for sensor in FIRST_RUNS:
        for run in instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": sensor})):
            planned = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED).records
            for key in run.asset_selection or {r.event_log_entry.dagster_event.asset_key for r in planned}:
                found.setdefault(key.to_user_string(), []).append(run)
    return found


def last_tick(instance, sensor: str) -> float | None:
    states = [s for s in instance.all_instigator_state() if s.instigator_name == sensor]
    ticks = instance.get_ticks(states[0].instigator_origin_id, states[0].selector_id, limit=1) if states else []
    return ticks[0].timestamp if ticks else None


@pytest.mark.slow
def test_an_empty_instance_syncs_every_asset_once_and_a_restart_does_not_repeat_it(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    ensure_dagster_home()  # the local instance as `scripts/start` and the CLI create it
    emulator = Emulator(seed=7, anchor=datetime.now(UTC), contacts=200, agents=3, employees=10)
    emulator.start()
    xero_before = len(emulator.xero.entries())
    env = {**os.environ, "DAGSTER_HOME": str(home), "SYNC_ENV": "local", "EMULATOR_URL": emulator.url,
           "WAREHOUSE_URL": f"sqlite:///{tmp_path / 'warehouse.db'}", "XERO_OPEN_PERIOD_DAYS": "2"}
    env.pop("XERO_PUSH_ENABLED", None)
    log = tmp_path / "daemon.log"
    keys = [k.to_user_string() for k in defs.resolve_asset_graph().toposorted_asset_keys]
    daemon = None
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            started = time.monotonic()
            daemon = Daemon(env, log)

            def synced():
                return all(instance.get_latest_materialization_event(dg.AssetKey(k)) for k in keys)

            def seen() -> str:
                runs = {k: [r.status.value for r in v] for k, v in first_runs(instance).items()}
                missing = [k for k in keys if not instance.get_latest_materialization_event(dg.AssetKey(k))]
                return f"not synced {missing}; first-sync runs {runs}; daemon log: {log.read_text()[-2000:]}"

            wait_for("every asset synced", synced, 900, seen)
            print(f"every asset synced {time.monotonic() - started:.0f} s after dagster-daemon started")
            wait_for("the first sync's runs to finish", lambda: all(r.is_finished for v in first_runs(instance).values() for r in v), 300, seen)
            runs = first_runs(instance)
            # The approval sensor may push a recently approved day first: then that run is the
            # push's first sync, and this sensor asks for none.
            assert len(runs.pop(PUSH, [])) <= 1, seen()
            assert sorted(runs) == sorted(set(keys) - {PUSH}) and all(len(v) == 1 for v in runs.values()), seen()
            assert all(v[0].status == dg.DagsterRunStatus.SUCCESS for v in runs.values()), seen()
            graph = defs.resolve_asset_graph()
            for key in graph.toposorted_asset_keys:  # dependency order: asked for after its upstreams were written
                if key.to_user_string() not in runs:
                    continue
                run = instance.get_run_record_by_id(runs[key.to_user_string()][0].run_id)
                for parent in graph.get(key).parent_keys:
                    (written,) = instance.fetch_materializations(parent, limit=1, ascending=True).records
                    assert run.create_timestamp.timestamp() >= written.timestamp, (key, parent)
            assert len(emulator.xero.entries()) == xero_before  # the push stayed a dry run
            rows = cli.status_json(defs, instance, cli.status(defs, instance))
            assert all(row["first_sync_done"] for row in rows)
            assert all(row["light"] in ("green", None) for row in rows), json.dumps(rows, indent=1)
            counted = {k: len(v) for k, v in first_runs(instance).items()}

            daemon.stop()
            restarted = time.time()
            daemon = Daemon(env, log)
            for sensor in FIRST_RUNS:  # both sensors have ticked after the restart
                wait_for(f"a tick of {sensor} after the restart", lambda s=sensor: (last_tick(instance, s) or 0) > restarted + 1, 300, seen)
            assert {k: len(v) for k, v in first_runs(instance).items()} == counted
    finally:
        if daemon:
            daemon.stop()
        emulator.stop()
