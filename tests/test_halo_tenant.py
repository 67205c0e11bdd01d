"""HaloPSA as real tenants behave (the emulator's default): entries shown with `id: 0`, date-only
ranges that drop their last day, time without a ticket, approvals in odd shapes. And the same
syncs against the ideal API (`Emulator(halo_ideal=True)`), and a tenant switching between them."""

from datetime import date, timedelta

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa
from conftest import halo_resources
from helpers import AUTUMN, YEAR, halo_entries, halo_keys, meta, stored_entries, sync_reference, sync_year

from emulator import halo as halo_emulator
from resources.warehouse import engine_for
from sync_assets.fiscal_years import FISCAL_YEARS

# The emulator's data has fixed dates: Dagster's clock agrees with them (conftest.NOW).
pytestmark = pytest.mark.usefixtures("frozen_clock")

OCTOBER = (date(2026, 10, 1), date(2026, 10, 31))
FALL = (date(2026, 9, 1), date(2026, 11, 30))  # AUTUMN's days


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(FISCAL_YEARS.name, [YEAR])
        yield instance


def check(result, name="halo_responses_as_expected"):
    (evaluation,) = [c for c in result.get_asset_check_evaluations() if c.check_name == name]
    return evaluation


def api(emulator, path: str, **params) -> list[dict]:
    form = {"grant_type": "client_credentials", "client_id": halo_emulator.CLIENT_ID, "client_secret": halo_emulator.CLIENT_SECRET}
    token = httpx.post(f"{emulator.url}/auth/token", data=form).json()["access_token"]
    return httpx.get(f"{emulator.url}{path}", params=params, headers={"Authorization": f"Bearer {token}"}).json()


def test_the_emulator_serves_what_real_tenants_do_and_the_ideal_api_on_request(emulator, ideal_emulator):
    day_only = api(emulator, "/api/TimesheetEvent", start_date="2026-11-16", end_date="2026-11-18", count=10, page=2)
    iso = api(emulator, "/api/TimesheetEvent", start_date="2026-11-16T00:00:00", end_date="2026-11-18T23:59:59")
    ideal = api(ideal_emulator, "/api/TimesheetEvent", start_date="2026-11-16", end_date="2026-11-18")

    assert {e["id"] for e in day_only + iso} == {0}  # the real event id is never shown
    assert {e["start_date"][:10] for e in day_only} == {"2026-11-16", "2026-11-17"}  # the last day silently dropped
    assert {e["start_date"][:10] for e in iso} == {"2026-11-16", "2026-11-17", "2026-11-18"}
    assert len(day_only) > 10  # count/page ignored
    assert 0 not in {e["id"] for e in ideal} and len(ideal) == len(iso)
    truth = emulator.halo.entries()
    work = [e for i, e in truth.items() if emulator.halo.kind(i) == "work"]
    ticketless = sum(e["ticket_id"] is None for e in work) / len(work)
    assert 0.03 < ticketless < 0.07  # about one in twenty of the work
    assert {emulator.halo.kind(i) for i in truth} == {"work", "break", "leave"}  # breaks and leave among the events
    served = [e for e in iso if not e["ticket_id"]]
    assert served and all(e["ticket_id"] == 0 and e["action_number"] == 0 for e in served)  # zero-filled, as .NET sends it
    assert {e["ticket_id"] for e in ideal if not e["ticket_id"]} == {None}
    tickets = [(e["ticket_id"], e["action_number"]) for e in truth.values() if e["ticket_id"] is not None]
    assert len(set(tickets)) == len(tickets)


def test_a_year_from_the_ideal_api_is_keyed_by_id_and_from_a_real_tenant_by_ticket_or_fingerprint(
        emulator, ideal_emulator, sqlite_warehouse_url, tmp_path, instance):
    for halo, url in ((emulator, sqlite_warehouse_url), (ideal_emulator, f"sqlite:///{tmp_path / 'ideal.db'}")):
        resources = halo_resources(halo, url)
        assert sync_reference(resources, instance).success
        result = sync_year(resources, instance)
        assert result.success
        assert stored_entries(url) == halo_entries(halo)
        assert check(result).passed, check(result).metadata["details"].value
    real, ideal = meta(sync_year(halo_resources(emulator, sqlite_warehouse_url), instance)), meta(result)
    assert (ideal["identity"], ideal["keyed_by_id"], ideal["keyed_by_ticket"]) == ("id", ideal["entries"], 0)
    assert real["identity"] == "ticket+fingerprint" and real["keyed_by_id"] == 0
    # Time without a ticket (5 % of the work, the breaks, the leave) is keyed by its fingerprint.
    assert real["keyed_by_fingerprint"] > 0 and real["keyed_by_ticket"] > 4 * real["keyed_by_fingerprint"]
    assert real["requests"] == 1 + 2 * 12 + 1  # agents, entries and timesheets per 31-day chunk, the token


def test_a_tenant_that_stops_showing_ids_keeps_each_entry_once_and_says_so(ideal_emulator, sqlite_warehouse_url, instance):
    resources = halo_resources(ideal_emulator, sqlite_warehouse_url)
    assert sync_year(resources, instance, days=AUTUMN).success
    before = len(stored_entries(sqlite_warehouse_url))
    ideal_emulator.halo.ideal = False

    result = sync_year(resources, instance, days=AUTUMN)

    counts = meta(result)
    assert (counts["entries_inserted"], counts["entries_deleted"], counts["rekeyed"]) == (0, 0, before)
    assert stored_entries(sqlite_warehouse_url, *FALL) == halo_entries(ideal_emulator, *FALL)
    details = check(result).metadata["details"].value
    assert not check(result).passed and "keyed by ticket+fingerprint, the last sync of this range by id" in details


def test_an_edited_ticketless_entry_is_one_delete_and_one_create(emulator, sqlite_warehouse_url, instance):
    resources = halo_resources(emulator, sqlite_warehouse_url)
    assert sync_year(resources, instance, days=AUTUMN).success
    ticketless = next(i for i, e in sorted(emulator.halo.entries().items())
                      if e["ticket_id"] is None and e["start_date"] >= "2026-10-01")
    emulator.halo.edit_entry(ticketless, minutes=emulator.halo.minutes(ticketless) + 5)

    counts = meta(sync_year(resources, instance, days=AUTUMN))

    assert (counts["entries_inserted"], counts["entries_updated"], counts["entries_deleted"]) == (1, 0, 1)
    assert stored_entries(sqlite_warehouse_url, *FALL) == halo_entries(emulator, *FALL)


def test_records_outside_the_range_asked_for_are_dropped_and_counted(emulator, sqlite_warehouse_url, instance):
    # Chunks of AUTUMN: 09-01..10-01, 10-02..11-01, ... The tenant answers a day past each chunk:
    # an entry at midnight on 10-02 comes back with the first chunk, and belongs to the second.
    midnight = emulator.halo.add_entry(2, date(2026, 10, 2), 30, start_date="2026-10-02T00:00:00", end_date="2026-10-02T00:30:00")
    emulator.halo.overreach = timedelta(days=1)

    result = sync_year(halo_resources(emulator, sqlite_warehouse_url), instance, days=AUTUMN)

    assert meta(result)["outside_range"] >= 1
    assert stored_entries(sqlite_warehouse_url)[halo_keys(emulator)[midnight]] == (2, date(2026, 10, 2), 30)
    assert stored_entries(sqlite_warehouse_url, *FALL) == halo_entries(emulator, *FALL)
    assert "outside the dates or agents asked for" in check(result).metadata["details"].value


def test_time_without_entries_and_far_fewer_entries_are_reported_and_nothing_is_deleted(emulator, sqlite_warehouse_url, instance):
    resources = halo_resources(emulator, sqlite_warehouse_url)
    assert sync_year(resources, instance, days=AUTUMN).success
    before = stored_entries(sqlite_warehouse_url)
    first, last = OCTOBER
    emulator.halo.hidden_days = {first + timedelta(days=n) for n in range((last - first).days + 1)}
    emulator.halo.hidden_days |= {date(2026, 9, 1) + timedelta(days=n) for n in range(30)}

    result = sync_year(resources, instance, days=AUTUMN)

    assert result.success and meta(result)["entries_deleted"] == 0
    assert stored_entries(sqlite_warehouse_url) == before
    details = check(result).metadata["details"].value
    assert not check(result).passed
    assert "have time on their timesheet but no time entries came" in details
    assert "entries received, the last sync of this range received" in details
    assert meta(result)["days_with_time_but_no_entries"] > 0


def test_identical_entries_are_kept_apart_and_reported(emulator, sqlite_warehouse_url, instance):
    twin = {"ticket_id": None, "action_number": None, "client_id": 12, "subject": "Site visit", "note": "same"}
    first, second = (emulator.halo.add_entry(4, date(2026, 10, 6), 45, **twin) for _ in range(2))

    result = sync_year(halo_resources(emulator, sqlite_warehouse_url), instance, days=AUTUMN)

    keys = halo_keys(emulator)
    assert keys[first] != keys[second] and {keys[first], keys[second]} <= set(stored_entries(sqlite_warehouse_url))
    assert meta(result)["identical_twins"] == 1 and meta(result)["key_collisions"] == 0
    assert "entries identical in every field (kept apart as key~2, ...)" in check(result).metadata["details"].value


def test_approvals_read_as_numbers_or_text_and_a_malformed_one_is_reported(emulator, sqlite_warehouse_url, instance, monkeypatch):
    day = date(2026, 10, 7)
    emulator.halo.set_approval(3, day, approvalstatus=1, approvedby="Jane Manager", approver=7)
    emulator.halo.set_approval(4, day, approvalstatus="approved?")
    emulator.halo.set_approval(5, day, approvalstatus=2)
    monkeypatch.setenv("HALO_APPROVED_STATUSES", "1,2")

    result = sync_year(halo_resources(emulator, sqlite_warehouse_url), instance, days=AUTUMN)

    with engine_for(sqlite_warehouse_url).connect() as conn:
        rows = {r.agent_id: r for r in conn.execute(sa.text(
            "SELECT * FROM halo_timesheets WHERE work_date = :day AND agent_id IN (3, 4, 5)"), {"day": day})}
    assert (rows[3].approved, rows[3].approved_by_text, rows[3].approver) == (True, "Jane Manager", "7")
    assert rows[4].approval_problem and "approvalstatus" in rows[4].approval_problem
    assert rows[5].approved  # 2 counts as approved when the setting says so
    assert meta(result)["malformed_approvals"] == 1
    assert f"agent 4 on {day}" in check(result).metadata["details"].value
