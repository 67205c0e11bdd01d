"""The date-sensitive behaviour on hard days: the turn of the year (calendar and default fiscal
year), a leap day, and both daylight-saving changes of Europe/Amsterdam (helpers.hard_instants).

Each test freezes Dagster's clock at the instant and anchors the emulator there (its data ends at
the frozen now), so what "today", "the last complete hour", "the open period" and "the current
fiscal year" mean is decided by the instant, never by the machine's date. The module runs in the
suite's SYNC_TIMEZONE (UTC) and once more in a child pytest with SYNC_TIMEZONE=Europe/Amsterdam:
the partitions are built from SYNC_TIMEZONE when the code location (and this module's assets) is
built, and sync_assets/xero.py reads it at import, so another zone needs another process.
"""

import os
import subprocess
import sys
from datetime import UTC, date, timedelta

import dagster as dg
import pytest
from conftest import employes_resources, ghl_resources, halo_resources
from dagster._core.test_utils import freeze_time
from helpers import built, failure_message, hard_instants, warehouse_contacts

from definitions import defs as load_definitions
from resources import events
from resources.settings import PROJECT_ROOT, setting
from sensors.halo import halo_new_fiscal_year
from sensors.xero import sensors as xero_sensors
from sync_assets.employes import assets as build_employes_assets
from sync_assets.ghl import asset_checks, hourly_contacts
from sync_assets.xero import open_period

defs = load_definitions()
# Built as the code location builds them: partitions and the approval sensor's interval are settings, read when built.
ghl_contacts = hourly_contacts()
employes_employee_snapshots = built(build_employes_assets(), "employes_employee_snapshots")
xero_approvals = built(xero_sensors(), "xero_approvals")

INSTANTS = hard_instants()
DST_ZONE = "Europe/Amsterdam"


@pytest.fixture(params=list(INSTANTS.values()), ids=list(INSTANTS))
def now(request):
    """The frozen now, as a wall-clock time in SYNC_TIMEZONE (Dagster's clock is frozen in UTC)."""
    with freeze_time(request.param.astimezone(UTC)):
        yield request.param


def weekday_before(day: date) -> date:
    day -= timedelta(days=1)
    while day.weekday() >= 5:
        day -= timedelta(days=1)
    return day


def test_the_employes_snapshot_is_of_today_in_the_sync_timezone(now, emulator_at, sqlite_warehouse_url):
    emulator = emulator_at(now)
    resources = employes_resources(emulator, sqlite_warehouse_url)
    today, yesterday = now.date(), now.date() - timedelta(days=1)

    taken = dg.materialize([employes_employee_snapshots], resources=resources, partition_key=today.isoformat())
    refused = dg.materialize([employes_employee_snapshots], resources=resources, partition_key=yesterday.isoformat(),
                             raise_on_error=False)

    assert taken.success
    assert f"{yesterday} is not today ({today}, {setting('SYNC_TIMEZONE')})" in failure_message(refused)


def test_the_new_fiscal_year_sensor_adds_the_year_of_today(now):
    with dg.instance_for_test() as instance:
        # Past the first start: the sensor waits for agent_mappings' first sync (test_first_sync).
        instance.report_runless_asset_event(dg.AssetMaterialization("agent_mappings"))
        context = dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), definitions=defs)
        result = halo_new_fiscal_year.evaluate_tick(context)

    assert [r.partition_key for r in result.run_requests] == [f"FY{now.year}"]  # FISCAL_YEAR_START 01-01


def test_the_approval_sensor_asks_for_the_last_work_day_not_for_one_before_the_open_period(now, emulator_at, sqlite_warehouse_url):
    emulator = emulator_at(now)  # seeded time entries end the day before today
    resources = {k: v for k, v in halo_resources(emulator, sqlite_warehouse_url).items() if k in ("halopsa", "warehouse")}
    first, last = open_period()
    assert last == now.date()
    recent, too_old = weekday_before(now.date()), weekday_before(first)

    def tick(cursor):
        context = dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), cursor=cursor, resources=resources, definitions=defs)
        return xero_approvals.evaluate_tick(context)

    caught_up = tick(None)  # a new installation catches up on the open period's approvals
    emulator.halo.approve(1, recent)
    emulator.halo.approve(1, too_old)
    # At the same moment, before the poll timer's next read: Halo's approval event makes the read.
    events.store_event(resources["warehouse"].engine, events.HALO_APPROVALS, "approvals", {"date": recent.isoformat()})
    after = tick(caught_up.cursor)

    assert recent.isoformat() not in [r.partition_key for r in caught_up.run_requests]
    assert [r.partition_key for r in after.run_requests] == [recent.isoformat()]


def test_the_hourly_schedule_syncs_the_last_complete_hour(now, emulator_at, sqlite_warehouse_url):
    schedule = defs.resolve_schedule_def("ghl_contacts_hourly_schedule")
    (request,) = schedule.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=now)).run_requests
    window = ghl_contacts.partitions_def.time_window_for_partition_key(request.partition_key)
    # In UTC: arithmetic on wall-clock times of one zone ignores a daylight-saving change.
    start, end = window.start.astimezone(UTC), window.end.astimezone(UTC)
    # An hour long in real time (also across a daylight-saving change), and the last one that has ended.
    assert end - start == timedelta(hours=1)
    assert end <= now < end + timedelta(hours=1)

    emulator = emulator_at(start - timedelta(hours=1))
    added = {emulator.ghl.add(at=start + timedelta(minutes=m)) for m in (0, 30, 59)}
    emulator.ghl.add(at=end)  # the next hour's
    result = dg.materialize([ghl_contacts, *asset_checks], selection=[ghl_contacts], partition_key=request.partition_key,
                            resources=ghl_resources(emulator, sqlite_warehouse_url))
    assert set(warehouse_contacts(sqlite_warehouse_url)) == added
    # An hour that has ended is not in the future (the check reads Dagster's clock, not the machine's).
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["no_future_date_updated"] is True


def test_the_nightly_employes_schedule_runs_todays_partition(now):
    schedule = defs.resolve_schedule_def("employes_nightly")
    context = dg.build_schedule_context(scheduled_execution_time=now, repository_def=defs.get_repository_def())

    (request,) = schedule.evaluate_tick(context).run_requests

    assert request.partition_key == now.date().isoformat()


@pytest.mark.skipif(setting("SYNC_TIMEZONE") == DST_ZONE, reason="this is the run in Europe/Amsterdam")
def test_the_same_in_a_zone_with_daylight_saving():
    env = {**os.environ, "SYNC_TIMEZONE": DST_ZONE}
    result = subprocess.run([sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-k", "not daylight"],
                            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=900)

    assert result.returncode == 0, result.stdout[-4000:]
    expected = len(INSTANTS) * 5 + 1  # five tests per instant, and the check of the instants
    assert f"{expected} passed" in result.stdout, result.stdout[-2000:]


def test_the_instants_are_the_hard_ones():
    """In Europe/Amsterdam: the hour after the clocks jump forward, and the repeated hour after they go back."""
    instants = hard_instants(DST_ZONE)
    spring, autumn = instants["dst-spring-forward"], instants["dst-fall-back"]
    hour = timedelta(hours=1)
    assert (spring.hour, spring.utcoffset(), (spring.astimezone(UTC) - hour).astimezone(spring.tzinfo).utcoffset()) == (3, 2 * hour, hour)
    assert (autumn.hour, autumn.utcoffset(), (autumn.astimezone(UTC) - hour).astimezone(autumn.tzinfo).hour) == (2, hour, 2)
    assert instants["leap-day"].date() == date(2028, 2, 29)
    # Half past midnight on New Year's Day in Amsterdam is still the old year in UTC: a product that
    # took the UTC date for "today" fails there.
    assert (instants["new-years-day-00h30"].year, instants["new-years-day-00h30"].astimezone(UTC).year) == (2027, 2026)
