"""Run history that does not grow forever: tick retention in both instances' dagster.yaml, and
`scripts/purge-runs` for old runs and their event logs."""

import os
import subprocess
from datetime import timedelta

import dagster as dg
import pytest
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.scheduler.instigation import TickStatus
from dagster._core.test_utils import freeze_time
from dagster._time import get_current_datetime

from resources.settings import PROJECT_ROOT, ensure_dagster_home

WANTED = {
    InstigatorType.SCHEDULE: {status: 90 for status in TickStatus},
    InstigatorType.SENSOR: {TickStatus.SKIPPED: 7, TickStatus.FAILURE: 30, TickStatus.SUCCESS: 90},
}


def retention(home) -> dict:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return {kind: {status: days for status, days in instance.get_tick_retention_settings(kind).items()
                       if status in WANTED[kind]} for kind in WANTED}


def test_the_deployment_purges_old_ticks(tmp_path, monkeypatch, postgres_url):
    monkeypatch.setenv("DAGSTER_PG_URL", postgres_url)  # the instance opens its storage: the session's database
    (tmp_path / "dagster.yaml").write_text((PROJECT_ROOT / "deploy/dagster.yaml").read_text())

    assert retention(tmp_path) == WANTED


@pytest.mark.parametrize("existing", [None, "telemetry:\n  enabled: false\n"])
def test_the_local_instance_purges_old_ticks_new_or_made_before(tmp_path, monkeypatch, existing):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    if existing:
        (tmp_path / "dagster.yaml").write_text(existing)

    ensure_dagster_home()
    ensure_dagster_home()  # a second start adds nothing

    assert retention(tmp_path) == WANTED
    assert (tmp_path / "dagster.yaml").read_text().count("retention:") == 1


@dg.asset
def step():
    """A stand-in for a sync: the runs are what is purged."""


def test_purge_runs_deletes_finished_runs_older_than_the_given_days(tmp_path):
    now = get_current_datetime()  # the script reads the real clock: the seeded runs are placed around it
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        with freeze_time(now - timedelta(days=100)):
            old = dg.materialize([step], instance=instance).run_id
        with freeze_time(now - timedelta(days=80)):
            kept = dg.materialize([step], instance=instance).run_id

        result = subprocess.run([str(PROJECT_ROOT / "scripts/purge-runs"), "90"], env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
                                capture_output=True, text=True, timeout=120)

        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("deleted 1 finished runs created before")
        assert [r.run_id for r in instance.get_runs()] == [kept]
        assert instance.all_logs(old) == [] and instance.all_logs(kept)
