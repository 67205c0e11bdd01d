"""HaloPSA end to end: agents, mappings and a fiscal year of timesheets, through real Dagster
runs over real HTTP to the emulator, into SQLite and PostgreSQL."""

from datetime import date, datetime, timedelta

import dagster as dg
import polars as pl
import pytest
import sqlalchemy as sa
from conftest import NOW, halo_resources
from dagster._core.test_utils import freeze_time
from helpers import AUTUMN, YEAR, failure_message, halo_entries, halo_keys, meta, stored_entries, sync_reference, sync_year

from definitions import defs as load_definitions
from resources.warehouse import engine_for, sync_scope
from resources.halo_tables import halo_agents as agents_table
from sync_assets.fiscal_years import FISCAL_YEARS
from sync_assets.halo import halo_timesheets

defs = load_definitions()

# The emulator's data has fixed dates: Dagster's clock agrees with them (conftest.NOW).
pytestmark = pytest.mark.usefixtures("frozen_clock")



@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(FISCAL_YEARS.name, [YEAR])
        yield instance


def truth_ids(emulator, first=date(2026, 1, 1), last=date(2026, 12, 31)) -> list[int]:
    """The emulator's own ids of its entries in the range, to edit them."""
    return sorted(i for i, e in emulator.halo.entries().items() if first <= date.fromisoformat(e["start_date"][:10]) <= last)


def stored_approvals(url) -> dict[tuple, bool]:
    with engine_for(url).connect() as conn:
        rows = conn.execute(sa.text("SELECT agent_id, work_date, approved FROM halo_timesheets WHERE deleted_at IS NULL")).all()
    return {(r.agent_id, str(r.work_date)[:10]): bool(r.approved) for r in rows}


def test_year_resync_after_edits_deletions_and_approvals_matches_halo_exactly(emulator, warehouse_url, instance):
    resources = halo_resources(emulator, warehouse_url)
    assert sync_reference(resources, instance).success
    first = sync_year(resources, instance)
    assert first.success
    assert stored_entries(warehouse_url) == halo_entries(emulator)

    halo = emulator.halo
    ids = truth_ids(emulator)
    halo.edit_entry(ids[0], minutes=95)
    halo.edit_entry(ids[1], day=date(2026, 11, 18))
    for entry_id in ids[10:13]:
        halo.delete_entry(entry_id)
    added = [halo.add_entry(3, date(2026, 11, 19), 20), halo.add_entry(4, date(2026, 2, 2), 50)]
    halo.approve(5, date(2026, 11, 18))
    halo.unapprove(6, date(2026, 3, 3))
    second = sync_year(resources, instance)

    assert second.success
    assert stored_entries(warehouse_url) == halo_entries(emulator)
    counts = meta(second)
    assert (counts["entries_inserted"], counts["entries_updated"], counts["entries_deleted"]) == (2, 2, 3)
    approvals = stored_approvals(warehouse_url)
    assert approvals[(5, "2026-11-18")] is True and approvals[(6, "2026-03-03")] is False
    keys = halo_keys(emulator)
    assert {keys[i] for i in added} <= set(stored_entries(warehouse_url))


def test_a_record_listed_twice_in_one_response_is_stored_once_as_its_last_version(warehouse_url):
    listed = pl.DataFrame([{"id": 7, "name": "Ann", "is_disabled": False, "content_hash": "first"},
                           {"id": 7, "name": "Ann B", "is_disabled": False, "content_hash": "second"}])

    with engine_for(warehouse_url).begin() as conn:
        counts, _ = sync_scope(conn, agents_table, listed, sa.true())
        stored = conn.execute(sa.select(agents_table.c.name, agents_table.c.content_hash)).all()

    assert counts == {"inserted": 1}
    assert stored == [("Ann B", "second")]


def test_minutes_are_exact_where_hours_are_not(emulator, sqlite_warehouse_url, instance):
    halo = emulator.halo
    ten, fifty = halo.add_entry(1, date(2026, 10, 1), 10), halo.add_entry(1, date(2026, 10, 1), 50)

    assert sync_year(halo_resources(emulator, sqlite_warehouse_url), instance, days=AUTUMN).success

    stored, keys = stored_entries(sqlite_warehouse_url), halo_keys(emulator)
    assert (stored[keys[ten]][2], stored[keys[fifty]][2]) == (10, 50)
    autumn = halo_entries(emulator, date(2026, 9, 1), date(2026, 11, 30))
    assert sum(m for *_, m in stored.values()) == sum(m for *_, m in autumn.values())


def test_unmapped_agents_are_kept_counted_and_listed(emulator, sqlite_warehouse_url, instance, tmp_path):
    mapping = tmp_path / "agents.csv"
    mapping.write_text("halo_agent_id,employee_number,xero_user_id,note\n" +
                       "".join(f"{i},E{i},,\n" for i in range(1, 23) if i not in (5, 6)))
    resources = halo_resources(emulator, sqlite_warehouse_url, mappings_file=str(mapping))
    assert sync_reference(resources, instance).success

    result = sync_year(resources, instance, days=AUTUMN)

    assert result.success
    assert meta(result)["unmapped_agents"] == 2
    assert {agent for agent, *_ in stored_entries(sqlite_warehouse_url).values()} >= {5, 6}
    (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "no_unmapped_agents"]
    assert not check.passed
    assert "agent 5 (" in check.metadata["agents"].value and "agent 6 (" in check.metadata["agents"].value


def test_tokens_expiring_in_the_provider_are_fetched_again(emulator, sqlite_warehouse_url, instance):
    resources = halo_resources(emulator, sqlite_warehouse_url)
    assert sync_year(resources, instance, days={"start": "2026-11-01", "end": "2026-11-19"}).success
    tokens_before = len(emulator.requests("halopsa", "/auth/token"))
    emulator.halo.expire_tokens()

    assert sync_year(resources, instance, days={"start": "2026-11-01", "end": "2026-11-19"}).success
    assert len(emulator.requests("halopsa", "/auth/token")) == tokens_before + 1


def test_wrong_client_secret_fails_naming_the_settings(emulator, sqlite_warehouse_url, instance):
    resources = halo_resources(emulator, sqlite_warehouse_url, client_secret="not-the-secret")

    result = sync_year(resources, instance, days=AUTUMN)

    assert not result.success
    message = failure_message(result)
    assert "HALO_CLIENT_ID and HALO_CLIENT_SECRET" in message and "not-the-secret" not in message


def test_malformed_fiscal_year_key_fails_clearly(emulator, sqlite_warehouse_url, instance):
    instance.add_dynamic_partitions(FISCAL_YEARS.name, ["FY26"])

    result = sync_year(halo_resources(emulator, sqlite_warehouse_url), instance, key="FY26")

    assert not result.success
    assert "malformed fiscal-year key 'FY26'" in failure_message(result)
    assert emulator.requests("halopsa") == []


def test_date_range_outside_the_fiscal_year_is_refused(emulator, sqlite_warehouse_url, instance):
    result = sync_year(halo_resources(emulator, sqlite_warehouse_url), instance, days={"start": "2025-12-01", "end": "2026-01-31"})

    assert "2025-12-01..2026-01-31 is not within FY2026 (2026-01-01..2026-12-31)" in failure_message(result)


def test_date_range_sync_touches_only_its_days(emulator, sqlite_warehouse_url, instance):
    resources = halo_resources(emulator, sqlite_warehouse_url)
    assert sync_year(resources, instance, days=AUTUMN).success
    emulator.halo.delete_entry(truth_ids(emulator, date(2026, 9, 1), date(2026, 9, 30))[0])
    before = stored_entries(sqlite_warehouse_url)

    october = sync_year(resources, instance, days={"start": "2026-10-01", "end": "2026-10-31"})

    assert meta(october)["entries_deleted"] == 0
    assert stored_entries(sqlite_warehouse_url) == before


def tick(instance, name: str, moment: datetime):
    """Evaluates a schedule as the daemon does at `moment` (Dagster's clock frozen there too)."""
    with freeze_time(moment):
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=moment, repository_def=defs.get_repository_def())
        return defs.resolve_schedule_def(name).evaluate_tick(context)


def ranges(result) -> list[tuple[str, str, str]]:
    return [(r.partition_key, r.run_config["ops"]["halo_timesheets"]["config"]["start"],
             r.run_config["ops"]["halo_timesheets"]["config"]["end"]) for r in result.run_requests]


def run(request: dg.RunRequest, resources, instance) -> dg.ExecuteInProcessResult:
    return sync_year(resources, instance, key=request.partition_key, days=request.run_config["ops"]["halo_timesheets"]["config"])


HOURLY = NOW.replace(minute=15)  # a tick of halo_timesheets_hourly on conftest's day
NIGHTLY = NOW.replace(hour=0, minute=40)  # halo_timesheets_nightly's default HALO_YEAR_SYNC_CRON
OPEN_FROM = NOW.date() - timedelta(days=31)  # HALO_OPEN_PERIOD_DAYS back


def test_hourly_schedule_reads_the_open_period_and_nightly_the_whole_year(instance):
    next_year = f"FY{NOW.year + 1}"
    early_next_year = NOW.replace(year=NOW.year + 1, month=1, day=10, minute=15)

    hourly, nightly = tick(instance, "halo_timesheets_hourly", HOURLY), tick(instance, "halo_timesheets_nightly", NIGHTLY)
    not_yet = tick(instance, "halo_timesheets_hourly", early_next_year)
    instance.add_dynamic_partitions(FISCAL_YEARS.name, [next_year])
    across = tick(instance, "halo_timesheets_hourly", early_next_year)

    assert ranges(hourly) == [(YEAR, OPEN_FROM.isoformat(), NOW.date().isoformat())]
    assert ranges(nightly) == [(YEAR, f"{NOW.year}-01-01", f"{NOW.year}-12-31")]
    assert f"{next_year} is not a partition yet" in not_yet.skip_message
    # Early in a year the open period reaches into the old one: a run per fiscal year.
    assert ranges(across) == [(YEAR, f"{NOW.year}-12-10", f"{NOW.year}-12-31"),
                              (next_year, f"{NOW.year + 1}-01-01", f"{NOW.year + 1}-01-10")]


def test_hourly_run_catches_recent_edits_and_deletions_and_nightly_old_deletions(emulator, sqlite_warehouse_url, instance):
    resources = halo_resources(emulator, sqlite_warehouse_url)
    assert sync_reference(resources, instance).success
    assert sync_year(resources, instance).success
    recent = truth_ids(emulator, OPEN_FROM, NOW.date())
    old = truth_ids(emulator, date(NOW.year, 3, 1), date(NOW.year, 3, 31))
    emulator.halo.edit_entry(recent[0], minutes=95)
    emulator.halo.delete_entry(recent[1])
    emulator.halo.delete_entry(old[0])

    (hourly,) = tick(instance, "halo_timesheets_hourly", HOURLY).run_requests
    after_hourly = run(hourly, resources, instance)
    stored_after_hourly = stored_entries(sqlite_warehouse_url)
    (nightly,) = tick(instance, "halo_timesheets_nightly", NIGHTLY + timedelta(days=1)).run_requests
    after_nightly = run(nightly, resources, instance)

    assert (meta(after_hourly)["entries_deleted"], meta(after_nightly)["entries_deleted"]) == (1, 1)
    assert stored_entries(sqlite_warehouse_url, OPEN_FROM, NOW.date()) == halo_entries(emulator, OPEN_FROM, NOW.date())
    assert len(stored_after_hourly) == len(halo_entries(emulator)) + 1  # the old deletion waits for the night
    assert stored_entries(sqlite_warehouse_url) == halo_entries(emulator)
    assert meta(after_hourly)["requests"] < meta(after_nightly)["requests"]


def test_sensor_and_schedule_runs_say_what_started_them(emulator, sqlite_warehouse_url, instance):
    resources = halo_resources(emulator, sqlite_warehouse_url)
    tags = {"dagster/sensor_name": "halo_new_fiscal_year"}
    result = dg.materialize([halo_timesheets], resources=resources, instance=instance, partition_key=YEAR, tags=tags,
                            run_config={"ops": {"halo_timesheets": {"config": AUTUMN}}})

    assert meta(result)["triggered_by"] == "sensor halo_new_fiscal_year"
    assert meta(sync_year(resources, instance, days=AUTUMN))["triggered_by"] == "manual (UI)"
