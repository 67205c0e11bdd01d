"""The daily sync report: its numbers are the run history of the day it covers. Runs are seeded
with known outcomes (real runs against the emulator, some throttled or refused by injected
faults) and known durations on a frozen clock, the day before and the day after included to show
the window holds."""

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest
from conftest import employes_resources, ghl_resources
from health_daemon import freeze_time, move_frozen_clock

import cli
from definitions import defs as load_definitions

from resources.warehouse import WarehouseResource
from sync_assets.employes import assets as build_employes_assets
from sync_assets.ghl import hourly_contacts

# Built as the code location builds them: their partitions read SYNC_TIMEZONE when built, not at import.
employes_assets = build_employes_assets()
ghl_contacts = hourly_contacts()

defs = load_definitions()

DAY = date(2026, 11, 20)  # the day reported; the emulator's contacts change through 12:00 that day


def at(hour: int, minute: int = 0, day: date = DAY) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


class RunClock:
    """Gives a run a known duration on the frozen clock: the run's first request to the emulator
    moves the clock on by the seconds asked for, so the run starts at its moment and ends that
    many seconds later."""

    def __init__(self, emulator):
        self.pending_s = 0.0
        emulator.on_request(self._served)

    def _served(self, served) -> None:
        if self.pending_s:
            move_frozen_clock(self.pending_s)
            self.pending_s = 0.0


def contacts_run(instance, resources, moment: datetime, emulator=None, new_contacts: int = 0,
                 clock: RunClock | None = None, lasting_s: float = 0.0) -> dg.ExecuteInProcessResult:
    """The hourly sync of the hour before `moment`, as its schedule runs it, after `new_contacts`
    contacts were added in that hour; with a `clock`, the run lasts `lasting_s`."""
    for _ in range(new_contacts):
        emulator.ghl.add(at=moment - timedelta(minutes=30))
    if clock is not None:
        clock.pending_s = lasting_s
    with freeze_time(moment):
        partition = (moment - timedelta(hours=1)).strftime("%Y-%m-%d-%H:00")
        return dg.materialize([ghl_contacts], resources=resources, instance=instance, partition_key=partition, raise_on_error=False)


def employes_run(instance, resources, day: date) -> dg.ExecuteInProcessResult:
    with freeze_time(at(1, 30, day)):
        return dg.materialize(employes_assets, resources=resources, instance=instance, partition_key=day.isoformat())


def make_report(instance, warehouse_url: str, day: date) -> dg.ExecuteInProcessResult:
    """The morning schedule's run: the code location's `sync_report_job` (which posts), so the
    report sees every sync of the code location as a deployed run does."""
    return defs.resolve_job_def("sync_report_job").execute_in_process(
        instance=instance, partition_key=day.isoformat(), resources={"warehouse": WarehouseResource(url=warehouse_url)})


def numbers(result: dg.ExecuteInProcessResult) -> dict:
    """What one run of ghl_contacts reported: its materialization's metadata, or its failure's."""
    if result.success:
        (materialization,) = result.asset_materializations_for_node("ghl_contacts")
        return {k: v.value for k, v in materialization.metadata.items()}
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    return {k: v.value for k, v in failure.step_failure_data.user_failure_data.metadata.items()}


@pytest.mark.slow
def test_the_report_is_the_days_run_history(small_emulator, sqlite_warehouse_url, instance, monkeypatch):
    monkeypatch.setenv("ALERT_WEBHOOK_URL", small_emulator.webhook.url)
    ghl, employes = ghl_resources(small_emulator, sqlite_warehouse_url), employes_resources(small_emulator, sqlite_warehouse_url)
    assert contacts_run(instance, ghl, at(23, 5, DAY - timedelta(days=1))).success  # the day before: not reported
    assert employes_run(instance, employes, DAY - timedelta(days=1)).success
    hired = small_emulator.employes.hire(start=DAY)
    assert employes_run(instance, employes, DAY).success  # 01:30: snapshot, history, changes
    clock = RunClock(small_emulator)
    seeded = [contacts_run(instance, ghl, at(9, 5), small_emulator, 2, clock, lasting_s=40)]
    small_emulator.inject("gohighlevel", "429", retry_after=1, times=1)  # retried after a second
    paced = ghl_resources(small_emulator, sqlite_warehouse_url, page_size=1, requests_per_10s=2)
    # One contact a page, two requests per 10 s: throttled.
    seeded.append(contacts_run(instance, paced, at(10, 5), small_emulator, 3, clock, lasting_s=15))
    small_emulator.ghl.token = "revoked"
    seeded.append(contacts_run(instance, ghl, at(11, 5), small_emulator, 1, clock, lasting_s=5))  # refused: fails
    small_emulator.ghl.token = ghl["gohighlevel"].token
    seeded.append(contacts_run(instance, ghl, at(12, 5), small_emulator, 4, clock, lasting_s=90))
    assert [r.success for r in seeded] == [True, True, False, True]
    assert contacts_run(instance, ghl, at(5, 5, DAY + timedelta(days=1))).success  # the day after: not reported
    records = [instance.get_run_record_by_id(r.run_id) for r in seeded]
    assert [r.end_time - r.start_time for r in records] == [40, 15, 5, 90]  # as seeded: the clock moved inside each run
    seeded_numbers = [numbers(r) for r in seeded]

    with freeze_time(at(7, 0, DAY + timedelta(days=1))):  # the morning schedule's moment
        report = make_report(instance, sqlite_warehouse_url, DAY)
        lights = {row["asset"]: row["health"] for row in cli.status(defs, instance)}
    (materialization,) = report.asset_materializations_for_node("sync_report")
    meta = {k: v.value for k, v in materialization.metadata.items()}

    assert seeded_numbers[1]["throttled_s"] > 5 and seeded_numbers[1]["retries"] == 1
    assert meta["ghl_contacts/runs"] == 4
    assert meta["ghl_contacts/failures"] == 1
    assert meta["ghl_contacts/rows_written"] == sum(n.get("written", 0) for n in seeded_numbers) >= 2 + 3 + 4
    assert meta["ghl_contacts/requests"] == sum(n["requests"] for n in seeded_numbers)
    assert meta["ghl_contacts/throttled_s"] == round(sum(n["throttled_s"] for n in seeded_numbers), 2)
    # Nearest rank over 5, 15, 40 and 90 s: the 2nd and the 4th.
    assert (meta["ghl_contacts/p50_s"], meta["ghl_contacts/p95_s"]) == (15, 90)
    assert meta["employes_employee_snapshots/runs"] == meta["employes_employee_changes/runs"] == 1
    assert meta["ghl_contacts_reconciliation/runs"] == 0 and "ghl_contacts_reconciliation/p50_s" not in meta
    assert meta["runs"] == 4 + 3 and meta["failed_runs"] == 1

    table = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in meta["report"].splitlines()[2:]}
    assert set(table) == set(lights) - {"sync_report"}  # every sync of the code location
    assert table["ghl_contacts"][:5] == [lights["ghl_contacts"], "4", "3", "1", str(meta["ghl_contacts/rows_written"])]
    assert lights["ghl_contacts"] == "green" and lights["employes_employee_snapshots"] == "yellow"  # 1 h 55 min and 29.5 h old
    assert "HTTP 401" in meta["failures"] and "ghl_contacts" in meta["failures"]
    assert meta["employee_change_count"] == 1
    number = small_emulator.employes.employees()[hired]["employee_number"]
    assert meta["employee_changes"] == f"- employee {number}: hired"

    (posted,) = small_emulator.webhook.messages()
    assert posted["text"].startswith(f"*Sync report for {DAY}*")
    assert "`ghl_contacts` green: 3/4 runs ok" in posted["text"] and "hired" in posted["text"]


def test_the_morning_schedule_reports_yesterday_and_posts_it():
    schedule = defs.resolve_schedule_def("sync_report_morning")
    context = dg.build_schedule_context(scheduled_execution_time=at(7, 0, DAY + timedelta(days=1)))

    (request,) = schedule.evaluate_tick(context).run_requests

    assert (request.partition_key, request.run_key) == (DAY.isoformat(), DAY.isoformat())
