"""Employes: snapshots on stepped days, employment history, and the changes between snapshots,
through real Dagster runs over real HTTP to the emulator, into SQLite and PostgreSQL."""

import time
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest
import sqlalchemy as sa
import conftest
from conftest import ANCHOR, serving
from helpers import built, failure_message
from dagster._core.test_utils import freeze_time

from definitions import defs as load_definitions
from emulator import Emulator
from resources.warehouse import engine_for
from resources.employes_tables import employes_employee_snapshots as snapshots_table
from sync_assets.employes import assets as build_employes_assets

# Built as the code location builds them: their partitions read SYNC_TIMEZONE when built, not at import.
assets = build_employes_assets()
employes_employee_snapshots = built(assets, "employes_employee_snapshots")
employes_employment_history = built(assets, "employes_employment_history")

defs = load_definitions()

DAY_1, DAY_2, DAY_3 = date(2026, 11, 20), date(2026, 11, 21), date(2026, 11, 22)


@pytest.fixture
def emulator(request):
    """The emulator without provider-side limits: these tests make many runs of about 80 requests
    each (a record and the employments of 40 employees); the limit has its own test below."""
    yield from serving(request, Emulator(seed=7, anchor=ANCHOR, contacts=10, rate_limits=False))


def employes_resources(emulator, warehouse_url, **options):
    """The resources, with the client's own limit lifted where the emulator sets none."""
    fast = {} if emulator.rate_limits else {"requests_per_second": 1000}
    return conftest.employes_resources(emulator, warehouse_url, **fast, **options)


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def sync_day(resources, instance, day: date, selection=assets) -> dg.ExecuteInProcessResult:
    """The nightly run of `day`, with the clock at 01:30 that day."""
    with freeze_time(datetime(day.year, day.month, day.day, 1, 30, tzinfo=UTC)):
        return dg.materialize(assets, selection=selection, resources=resources, instance=instance,
                              partition_key=day.isoformat(), raise_on_error=False)


def meta(result, name) -> dict:
    (materialization,) = result.asset_materializations_for_node(name)
    return {k: v.value for k, v in materialization.metadata.items()}


def query(url, sql, **params) -> list:
    with engine_for(url).connect() as conn:
        return conn.execute(sa.text(sql), params).all()


def changes_of(url, day) -> dict[tuple[str, str], tuple]:
    rows = query(url, "SELECT employee_id, field, old_value, new_value FROM employes_employee_changes WHERE snapshot_date = :d", d=day)
    return {(r.employee_id, r.field): (r.old_value, r.new_value) for r in rows}


def test_exactly_the_changes_made_between_two_snapshots_are_detected(emulator, warehouse_url, instance):
    resources = employes_resources(emulator, warehouse_url)
    assert sync_day(resources, instance, DAY_1).success
    company = emulator.employes
    active = sorted(i for i, e in company.employees().items() if e["status"] == "active")
    raised, fewer_hours, leaver, gone, renamed = active[:5]
    before = company.employees()
    hired = [company.hire(start=DAY_2), company.hire(start=DAY_2, hours_per_week=24.0)]
    company.leave(leaver, DAY_2)
    company.remove(gone)
    company.set_salary(raised, 61000.0, DAY_2)
    company.set_hours(fewer_hours, 28.5, DAY_2)
    company.update(renamed, surname="Renamed-Smit")

    result = sync_day(resources, instance, DAY_2)

    assert result.success
    after = company.employees()
    salary_before, salary_after = before[raised]["employment"]["salary"], after[raised]["employment"]["salary"]
    expected = {
        **{(i, "employee"): (None, "hired") for i in hired},
        (gone, "employee"): ("present", "removed"),
        (leaver, "status"): ("active", "out of service"),
        (leaver, "employment_end"): (None, DAY_2.isoformat()),
        **{(raised, f): (f"{salary_before[f]:.2f}", f"{salary_after[f]:.2f}") for f in ("yearly_wage", "month_wage", "hour_wage")},
        (fewer_hours, "hours_per_week"): (f"{before[fewer_hours]['employment']['contract']['hours_per_week']:.2f}", "28.50"),
        (renamed, "surname"): (before[renamed]["surname"], "Renamed-Smit"),
    }
    assert changes_of(warehouse_url, DAY_2) == expected
    summary = meta(result, "employes_employee_changes")
    assert (summary["hired"], summary["left"], summary["changes"]) == (2, 2, len(expected))


def test_history_answers_what_hours_a_person_had_on_a_day(emulator, warehouse_url, instance):
    resources = employes_resources(emulator, warehouse_url)
    company = emulator.employes
    person = sorted(i for i, e in company.employees().items() if e["status"] == "active")[0]
    hours_before = f"{company.employee(person)['employment']['contract']['hours_per_week']:.2f}"
    assert sync_day(resources, instance, DAY_1).success
    company.set_hours(person, 28.0, DAY_2)
    assert sync_day(resources, instance, DAY_2).success
    assert sync_day(resources, instance, DAY_3).success

    def hours_on(day):
        (row,) = query(warehouse_url, "SELECT hours_per_week FROM employes_employee_history WHERE employee_id = :p "
                       "AND valid_from <= :d AND (valid_to IS NULL OR valid_to > :d)", p=person, d=day)
        return f"{row.hours_per_week:.2f}"

    assert [hours_on(d) for d in (DAY_1, DAY_2, DAY_3)] == [hours_before, "28.00", "28.00"]


def test_a_field_going_to_none_is_a_change_and_history_keeps_the_old_value(emulator, sqlite_warehouse_url, instance):
    resources = employes_resources(emulator, sqlite_warehouse_url)
    company = emulator.employes
    person = next(i for i, e in sorted(company.employees().items()) if e["department"])
    department = company.employee(person)["department"]
    assert sync_day(resources, instance, DAY_1).success
    company.update(person, department=None)

    assert sync_day(resources, instance, DAY_2).success

    assert changes_of(sqlite_warehouse_url, DAY_2) == {(person, "department"): (department, None)}
    versions = query(sqlite_warehouse_url, "SELECT department, valid_from, valid_to FROM employes_employee_history "
                     "WHERE employee_id = :p ORDER BY valid_from", p=person)
    assert [(v.department, str(v.valid_from), v.valid_to and str(v.valid_to)) for v in versions] == [
        (department, str(DAY_1), str(DAY_2)), (None, str(DAY_2), None)]


def test_employment_history_is_one_row_per_period_with_no_placeholder_dates(emulator, sqlite_warehouse_url, instance):
    company = emulator.employes
    person = sorted(company.employees())[0]
    company.set_salary(person, 70000.0, DAY_1 - timedelta(days=10))

    assert sync_day(employes_resources(emulator, sqlite_warehouse_url), instance, DAY_1).success

    served = [p for e in company.employments(person) for p in e["salary"]]
    stored = query(sqlite_warehouse_url, "SELECT start_date, end_date, yearly_wage FROM employes_salary_periods "
                   "WHERE employee_id = :p ORDER BY start_date", p=person)
    assert len(stored) == len(served)
    assert stored[-1].end_date is None and f"{stored[-1].yearly_wage:.2f}" == "70000.00"
    assert str(stored[-2].end_date) == str(DAY_1 - timedelta(days=11))
    assert not query(sqlite_warehouse_url, "SELECT 1 FROM employes_salary_periods WHERE end_date < '1900-01-01'")


def test_rerunning_today_replaces_today_and_past_days_stay(emulator, sqlite_warehouse_url, instance):
    resources = employes_resources(emulator, sqlite_warehouse_url)
    company = emulator.employes
    assert sync_day(resources, instance, DAY_1).success
    company.hire(start=DAY_2)
    assert sync_day(resources, instance, DAY_2).success
    company.hire(start=DAY_2)

    again = sync_day(resources, instance, DAY_2)

    counts = dict(query(sqlite_warehouse_url, "SELECT snapshot_date, count(*) FROM employes_employee_snapshots GROUP BY snapshot_date"))
    assert again.success
    assert counts == {str(DAY_1): 40, str(DAY_2): 42}
    assert sum(1 for _, new in changes_of(sqlite_warehouse_url, DAY_2).values() if new == "hired") == 2


def test_a_past_day_cannot_be_snapshotted_again(emulator, sqlite_warehouse_url, instance):
    with freeze_time(datetime(2026, 11, 21, 9, 0, tzinfo=UTC)):
        result = dg.materialize([employes_employee_snapshots], resources=employes_resources(emulator, sqlite_warehouse_url),
                                instance=instance, partition_key="2026-11-20", raise_on_error=False)

    assert "2026-11-20 is not today (2026-11-21" in failure_message(result)
    assert emulator.requests("employes") == []
    (run,) = instance.get_runs()
    assert run.tags.get("dagster/retry_on_asset_or_op_failure") == "false"  # run retries cannot help either


def test_failure_half_way_through_history_leaves_the_previous_day_and_the_rerun_completes(emulator, warehouse_url, instance):
    resources = employes_resources(emulator, warehouse_url, max_attempts=2)
    company = emulator.employes
    person = sorted(company.employees())[3]
    assert sync_day(resources, instance, DAY_1).success
    history_of_day_1 = query(warehouse_url, "SELECT * FROM employes_salary_periods ORDER BY employment_id, start_date")
    company.set_salary(person, 80000.0, DAY_2)
    emulator.inject("employes", "500", path="/employments", after=10, times=100)

    failed = sync_day(resources, instance, DAY_2)

    assert not failed.success
    assert "nothing was written, the previous history is unchanged" in failure_message(failed)
    assert query(warehouse_url, "SELECT * FROM employes_salary_periods ORDER BY employment_id, start_date") == history_of_day_1
    emulator.clear_faults()
    rerun = sync_day(resources, instance, DAY_2)
    assert rerun.success
    latest = query(warehouse_url, "SELECT yearly_wage FROM employes_salary_periods WHERE employee_id = :p AND end_date IS NULL", p=person)
    assert [f"{r.yearly_wage:.2f}" for r in latest] == ["80000.00"]
    assert changes_of(warehouse_url, DAY_2)[(person, "yearly_wage")][1] == "80000.00"


@pytest.mark.slow  # a minute by design: 302 requests at under five a second
def test_a_few_hundred_employees_and_their_histories_stay_under_five_requests_a_second(sqlite_warehouse_url, instance):
    emulator = Emulator(anchor=ANCHOR, employees=150)
    emulator.start()
    try:
        began = time.monotonic()
        result = sync_day(employes_resources(emulator, sqlite_warehouse_url), instance, DAY_1,
                          selection=[employes_employee_snapshots, employes_employment_history])
        elapsed = time.monotonic() - began
        served = emulator.requests("employes")
    finally:
        emulator.stop()

    statuses = [s.status for s in served]
    asked = {(s.method, s.path, tuple(sorted(s.query.items()))) for s in served}
    assert result.success
    # Two pages of the list, then each employee's record and employments; on a busy machine an
    # answer slower than the client's timeout is asked for again, so count what was asked for.
    assert len(asked) == 2 + 150 + 150 and 429 not in statuses
    assert meta(result, "employes_employee_snapshots")["employee_records_read"] == 150
    assert elapsed >= (len(statuses) - 5) / 5  # the limiter, not luck, kept it under the limit


def test_personal_data_stays_out_of_logs_metadata_and_unneeded_tables(emulator, sqlite_warehouse_url, instance):
    served = emulator.employes.employees().values()
    assert sync_day(employes_resources(emulator, sqlite_warehouse_url), instance, DAY_1).success

    logs = "\n".join(str(entry) for run in instance.get_runs() for entry in instance.all_logs(run.run_id))
    with engine_for(sqlite_warehouse_url).connect() as conn:
        tables = sa.inspect(conn).get_table_names()
        stored = "\n".join(str(conn.execute(sa.text(f"SELECT * FROM {t}")).all()) for t in tables)
    for employee in served:
        assert employee["iban"] not in stored and employee["iban"] not in logs
        assert employee["date_of_birth"][:10] not in logs
        assert f"{employee['employment']['salary']['yearly_wage']:.2f}" not in logs


def test_nightly_schedule_runs_todays_partition_once():
    schedule = defs.resolve_schedule_def("employes_nightly")
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 21, 1, 30, tzinfo=UTC),
                                        repository_def=defs.get_repository_def())

    (request,) = schedule.evaluate_tick(context).run_requests

    assert (request.partition_key, request.run_key) == ("2026-11-21", "2026-11-21")


def test_the_snapshot_comes_from_each_employees_own_record_kept_whole_but_personal_data(emulator, warehouse_url, instance):
    company = emulator.employes
    someone = sorted(company.employees())[0]
    company.update(someone, pension_scheme={"name": "PFZW", "since": "2021-01-01T00:00:00"})

    result = sync_day(employes_resources(emulator, warehouse_url), instance, DAY_1, selection=[employes_employee_snapshots])

    assert result.success
    records = [s for s in emulator.requests("employes") if s.path.count("/") == 3 and "/employees/" in s.path]
    assert len(records) == len(company.employees()) == meta(result, "employes_employee_snapshots")["employee_records_read"]
    with engine_for(warehouse_url).connect() as conn:
        kept = dict(conn.execute(sa.select(snapshots_table.c.employee_id, snapshots_table.c.raw)).all())
    served = company.employee(someone)
    assert kept[someone]["pension_scheme"] == {"name": "PFZW", "since": "2021-01-01T00:00:00"}
    assert kept[someone]["employment"] == served["employment"]
    assert not {"iban", "date_of_birth", "email", "phone_number", "street", "gender"} & set(kept[someone])


@pytest.mark.parametrize("wrapped", [(False, True), (True, False)], ids=["as met: record bare, employments in data", "the other shapes"])
def test_both_shapes_of_the_employee_and_employments_answers_are_read(emulator, sqlite_warehouse_url, instance, wrapped):
    emulator.employes.employee_wrapped, emulator.employes.employments_wrapped = wrapped

    result = sync_day(employes_resources(emulator, sqlite_warehouse_url), instance, DAY_1,
                      selection=[employes_employee_snapshots, employes_employment_history])

    assert result.success
    assert meta(result, "employes_employee_snapshots")["employees"] == len(emulator.employes.employees())
    periods = sum(len(e["salary"]) for i in emulator.employes.employees() for e in emulator.employes.employments(i))
    assert meta(result, "employes_employment_history")["salary_rows"] == periods


def test_an_employee_removed_between_the_list_and_their_record_is_left_out(emulator, sqlite_warehouse_url, instance):
    company = emulator.employes
    last = max(company.employees(), key=lambda i: int(company.employees()[i]["employee_number"]))
    removed = []

    def remove_after_the_list(served):
        if not removed and served.path.endswith("/employees"):
            removed.append(last)
            company.remove(last)

    emulator.on_request(remove_after_the_list)
    result = sync_day(employes_resources(emulator, sqlite_warehouse_url), instance, DAY_1, selection=[employes_employee_snapshots])

    assert result.success
    stored = {r.employee_id for r in query(sqlite_warehouse_url, "SELECT employee_id FROM employes_employee_snapshots")}
    assert stored == set(company.employees()) and last not in stored
