"""GoHighLevel contacts end to end: real Dagster runs, real HTTP to the emulator, real databases."""

import json
import secrets
from datetime import timedelta

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa
from conftest import ANCHOR, ghl_resources
from helpers import assert_warehouse_matches_provider, failure_message, reconcile, run_metadata, warehouse_contacts

from emulator.ghl import LOCATION_ID
from resources.warehouse import WarehouseResource, engine_for
from resources.ghl_tables import ghl_contacts as ghl_contacts_table
from resources.tables import sync_rejects
from sync_assets.ghl import asset_checks, ghl_contacts_reconciliation, hourly_contacts, write_page

# Built as the code location builds it: its partitions read SYNC_TIMEZONE when built, not at import.
ghl_contacts = hourly_contacts()

# The emulator's data has fixed dates: Dagster's clock agrees with them (conftest.NOW). Every
# GoHighLevel and Xero exchange is checked against the published descriptions.
pytestmark = [pytest.mark.usefixtures("frozen_clock"), pytest.mark.openapi]

HOUR_1 = ANCHOR + timedelta(hours=1)  # partition 2026-11-20-13:00
HOUR_2 = ANCHOR + timedelta(hours=2)
# The search Contact's fields in GoHighLevel's description (apps/contacts.json of 2025-08-26).
SEARCH_CONTACT_FIELDS = {
    "id", "phoneLabel", "country", "address", "source", "type", "locationId", "dnd", "state", "businessName",
    "customFields", "tags", "dateAdded", "additionalEmails", "phone", "companyName", "additionalPhones", "dateUpdated",
    "city", "dateOfBirth", "firstName", "lastName", "firstNameLowerCase", "lastNameLowerCase", "email", "assignedTo",
    "followers", "validEmail", "dndSettings", "opportunities", "postalCode", "businessId", "searchAfter"}


def partition(hour) -> str:
    return hour.strftime("%Y-%m-%d-%H:%M")


def sync_hour(resources, hour, instance=None) -> dg.ExecuteInProcessResult:
    return dg.materialize([ghl_contacts, *asset_checks], resources=resources, partition_key=partition(hour),
                          instance=instance, selection=[ghl_contacts], raise_on_error=False)


def test_next_hour_writes_exactly_the_contacts_changed_in_it(emulator, warehouse_url):
    resources = ghl_resources(emulator, warehouse_url)
    ghl = emulator.ghl
    ids = sorted(ghl.truth())
    for minute, contact_id in zip((10, 30, 58), ids[:3], strict=True):
        ghl.update(contact_id, at=HOUR_1 + timedelta(minutes=minute), phone=f"+3100000{minute}")
    first = sync_hour(resources, HOUR_1)
    assert first.success
    assert run_metadata(first, ghl_contacts)["written"] == 3
    before = warehouse_contacts(warehouse_url)

    changed = ids[10:12]
    for contact_id in changed:
        ghl.update(contact_id, at=HOUR_2 + timedelta(minutes=20), city="Utrecht")
    second = sync_hour(resources, HOUR_2)

    meta = run_metadata(second, ghl_contacts)
    # The window re-reads the last minutes of hour 1 (the contact edited at :58) without rewriting it.
    assert (meta["written"], meta["inserted"], meta["unchanged"]) == (2, 2, 1)
    after = warehouse_contacts(warehouse_url)
    assert {i for i in after if i not in before or after[i]["synced_at"] != before[i]["synced_at"]} == set(changed)
    assert all(after[i]["city"] == "Utrecht" for i in changed)


def test_hour_without_changes_costs_one_request(emulator, warehouse_url):
    result = sync_hour(ghl_resources(emulator, warehouse_url), HOUR_2)

    assert result.success
    assert len(emulator.requests("gohighlevel")) == 1
    meta = run_metadata(result, ghl_contacts)
    assert (meta["requests"], meta["fetched"], meta["written"]) == (1, 0, 0)


def test_hour_pages_through_more_contacts_than_a_page(emulator, warehouse_url):
    ghl = emulator.ghl
    added = {ghl.add(at=HOUR_1 + timedelta(seconds=30 * n)) for n in range(120)}

    result = sync_hour(ghl_resources(emulator, warehouse_url, page_size=50), HOUR_1)

    assert set(warehouse_contacts(warehouse_url)) == added
    assert run_metadata(result, ghl_contacts)["requests"] == 3
    assert all("searchAfter" in r.body for r in emulator.requests("gohighlevel")[1:])


def test_hour_with_exactly_full_pages_asks_for_no_empty_page(emulator, sqlite_warehouse_url):
    ghl = emulator.ghl
    added = {ghl.add(at=HOUR_1 + timedelta(seconds=30 * n)) for n in range(100)}

    result = sync_hour(ghl_resources(emulator, sqlite_warehouse_url, page_size=50), HOUR_1)

    assert set(warehouse_contacts(sqlite_warehouse_url)) == added
    assert run_metadata(result, ghl_contacts)["requests"] == 2  # ceil(100 / 50), not a third, empty page


def test_older_version_never_overwrites_newer(emulator, warehouse_url):
    ghl = emulator.ghl
    contact_id = sorted(ghl.truth())[0]
    ghl.update(contact_id, at=HOUR_1, phone="old")
    old = dict(ghl.contacts[contact_id])
    ghl.update(contact_id, at=HOUR_2, phone="new")
    assert sync_hour(ghl_resources(emulator, warehouse_url), HOUR_2).success

    with engine_for(warehouse_url).begin() as conn:
        counts, _ = write_page(conn, [old], where="")

    assert counts["stale"] == 1 and counts["written"] == 0
    assert warehouse_contacts(warehouse_url)[contact_id]["phone"] == "new"


def test_malformed_records_are_skipped_named_and_kept_while_good_ones_land(emulator, warehouse_url):
    ghl = emulator.ghl
    good = ghl.add(at=HOUR_1 + timedelta(minutes=5))
    ghl.put_raw({"firstName": "No Id", "dateUpdated": "2026-11-20T13:06:00Z"}, at=HOUR_1 + timedelta(minutes=6))
    ghl.put_raw({"id": "badDate0001", "dateUpdated": "yesterday-ish"}, at=HOUR_1 + timedelta(minutes=7))

    with dg.instance_for_test() as instance:
        result = sync_hour(ghl_resources(emulator, warehouse_url), HOUR_1, instance)
        logged = "\n".join(e.user_message for e in instance.all_logs(result.run_id))

    assert result.success
    assert set(warehouse_contacts(warehouse_url)) == {good}
    assert run_metadata(result, ghl_contacts)["rejected"] == 2
    assert "skipped contact page 1 item 1: no id" in logged
    assert "skipped contact badDate0001: unparsable date" in logged
    with engine_for(warehouse_url).connect() as conn:
        rejects = conn.execute(sa.select(sync_rejects.c.record_id, sync_rejects.c.reason)).all()
    assert sorted(r.record_id for r in rejects) == ["badDate0001", "page 1 item 1"]
    assert "unparsable date" in dict(rejects)["badDate0001"]


def test_reconciliation_catches_adds_edits_and_deletes_made_behind_the_hourly_runs(emulator, warehouse_url):
    resources = ghl_resources(emulator, warehouse_url)
    assert reconcile(resources).success
    ghl = emulator.ghl
    ids = sorted(ghl.truth())
    # Behind the hourly runs' backs: changes stamped in hours that were never synced again.
    past = ANCHOR - timedelta(days=3)
    added = [ghl.add(at=past), ghl.add(at=past)]
    for contact_id in ids[:2]:
        ghl.update(contact_id, at=past, email="moved@example.com")
    gone = ids[5:8]
    for contact_id in gone:
        ghl.delete(contact_id)

    result = reconcile(resources)

    meta = run_metadata(result, ghl_contacts_reconciliation)
    assert {k: meta[k] for k in ("seen", "inserted", "updated", "deleted", "restored")} == {
        "seen": 299, "inserted": 2, "updated": 2, "deleted": 3, "restored": 0}
    assert_warehouse_matches_provider(emulator, warehouse_url)
    everything = warehouse_contacts(warehouse_url, live_only=False)
    assert all(everything[i]["deleted_at"] is not None for i in gone)
    assert set(added) <= set(everything)


def test_contact_that_comes_back_is_restored(emulator, warehouse_url):
    resources = ghl_resources(emulator, warehouse_url)
    ghl = emulator.ghl
    contact_id = sorted(ghl.truth())[0]
    contact = dict(ghl.contacts[contact_id])
    assert reconcile(resources).success
    ghl.delete(contact_id)
    assert run_metadata(reconcile(resources), ghl_contacts_reconciliation)["deleted"] == 1

    ghl.restore(contact, at=HOUR_1)
    result = reconcile(resources)

    assert run_metadata(result, ghl_contacts_reconciliation)["restored"] == 1
    assert warehouse_contacts(warehouse_url)[contact_id]["deleted_at"] is None


def test_reconciliation_refuses_a_mass_deletion_until_told_to(emulator, warehouse_url):
    resources = ghl_resources(emulator, warehouse_url)
    assert reconcile(resources).success
    ghl = emulator.ghl
    for contact_id in sorted(ghl.truth())[:200]:
        ghl.delete(contact_id)

    refused = reconcile(resources)

    assert not refused.success
    assert "would soft-delete 200 of 300" in failure_message(refused)
    assert len(warehouse_contacts(warehouse_url)) == 300
    accepted = reconcile(resources, max_delete_share=1.0)
    assert run_metadata(accepted, ghl_contacts_reconciliation)["deleted"] == 200
    assert_warehouse_matches_provider(emulator, warehouse_url)


def stored_contacts(url: str, **options) -> dict[str, dict]:
    """Rows of `ghl_contacts` read through the table definition, so `raw` comes back as JSON values."""
    with WarehouseResource(url=url, **options).engine.connect() as conn:
        return {row["id"]: dict(row) for row in conn.execute(sa.select(ghl_contacts_table)).mappings()}


def test_search_answers_the_search_shape_and_get_its_own(emulator):
    ghl = emulator.ghl
    contact_id = ghl.add(at=HOUR_1, assignedTo="user0001")
    headers = {"Authorization": f"Bearer {ghl.token}", "Version": "2021-07-28"}
    body = {"locationId": LOCATION_ID, "pageLimit": 1, "filters": [
        {"field": "dateUpdated", "operator": "range", "value": {"gte": HOUR_1.isoformat()}}]}

    found = httpx.post(f"{emulator.url}/contacts/search", json=body, headers=headers).json()
    by_id = httpx.get(f"{emulator.url}/contacts/{contact_id}", headers=headers).json()["contact"]

    (contact,) = found["contacts"]
    assert set(contact) <= SEARCH_CONTACT_FIELDS
    assert {"address", "businessName", "additionalEmails", "followers", "dndSettings", "searchAfter"} <= set(contact)
    assert not {"name", "address1", "timezone", "website"} & set(contact)
    assert (by_id["name"], by_id["address1"]) == (f"{contact['firstName']} {contact['lastName']}", contact["address"])


def test_every_field_of_a_search_result_is_kept_even_one_we_do_not_map(emulator, warehouse_url):
    ghl = emulator.ghl
    contact_id = ghl.add(at=HOUR_1 + timedelta(minutes=5), businessName="Polder Bakeries BV", address="Damrak 1",
                         additionalEmails=["billing@polder.example"], followers=["user0002"],
                         loyaltyTier={"level": "gold", "since": "2024-03-01"})
    resources = ghl_resources(emulator, warehouse_url)
    assert sync_hour(resources, HOUR_1).success

    row = stored_contacts(warehouse_url)[contact_id]
    assert row["raw"]["loyaltyTier"] == {"level": "gold", "since": "2024-03-01"}
    assert row["raw"] == ghl.contacts[contact_id] | {"searchAfter": row["raw"]["searchAfter"]}  # all of it, as sent
    assert (row["business_name"], row["address"]) == ("Polder Bakeries BV", "Damrak 1")
    assert json.loads(row["additional_emails"]) == ["billing@polder.example"]
    assert json.loads(row["followers"]) == ["user0002"]

    # A change to a field no column maps is still an update.
    ghl.update(contact_id, at=HOUR_2 + timedelta(minutes=5), loyaltyTier={"level": "platinum"})
    second = sync_hour(resources, HOUR_2)
    assert run_metadata(second, ghl_contacts)["updated"] == 1
    assert stored_contacts(warehouse_url)[contact_id]["raw"]["loyaltyTier"] == {"level": "platinum"}


OLD_CONTACTS_TABLE = """CREATE TABLE ghl_contacts (id VARCHAR(64) PRIMARY KEY, location_id VARCHAR(64), first_name TEXT,
    last_name TEXT, name TEXT, email TEXT, phone TEXT, company_name TEXT, timezone TEXT, dnd BOOLEAN, type TEXT, source TEXT,
    assigned_to TEXT, address1 TEXT, city TEXT, state TEXT, country TEXT, postal_code TEXT, website TEXT, date_of_birth TEXT,
    tags TEXT, custom_fields TEXT, date_added TIMESTAMP, date_updated TIMESTAMP NOT NULL, content_hash VARCHAR(32) NOT NULL,
    synced_at TIMESTAMP NOT NULL, seen_at TIMESTAMP, deleted_at TIMESTAMP)"""


def test_a_warehouse_made_before_the_raw_column_is_upgraded_in_place(emulator, warehouse_url):
    schema = f"upgrade_{secrets.token_hex(4)}" if warehouse_url.startswith("postgresql") else None
    admin = sa.create_engine(warehouse_url)
    contact_id = sorted(emulator.ghl.truth())[0]
    with admin.begin() as conn:
        if schema:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}; SET LOCAL search_path = {schema}"))
        conn.execute(sa.text(OLD_CONTACTS_TABLE))
        conn.execute(sa.text("INSERT INTO ghl_contacts (id, name, address1, date_updated, content_hash, synced_at) "
                             "VALUES (:id, 'Old Name', 'Old Street 1', '2020-01-01', 'old', '2020-01-01')"), {"id": contact_id})
    try:
        resources = {**ghl_resources(emulator, warehouse_url), "warehouse": WarehouseResource(url=warehouse_url, db_schema=schema)}
        result = reconcile(resources)

        assert result.success
        assert run_metadata(result, ghl_contacts_reconciliation)["updated"] == 1
        rows = stored_contacts(warehouse_url, db_schema=schema)
        assert len(rows) == 300 and all(row["raw"]["id"] == row["id"] for row in rows.values())
        assert rows[contact_id]["address"] == emulator.ghl.contacts[contact_id]["address"]
        with WarehouseResource(url=warehouse_url, db_schema=schema).engine.connect() as conn:
            old_name = conn.execute(sa.text("SELECT name FROM ghl_contacts WHERE id = :id"), {"id": contact_id}).scalar()
        assert old_name == "Old Name"  # the old column stays, unwritten
    finally:
        if schema:
            WarehouseResource(url=warehouse_url, db_schema=schema).engine.dispose()
            with admin.begin() as conn:
                conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def test_the_day_budget_is_reported_and_a_sync_stops_before_crossing_it(emulator, sqlite_warehouse_url):
    ghl = emulator.ghl
    added = {ghl.add(at=HOUR_1 + timedelta(seconds=30 * n)) for n in range(120)}
    ghl.daily_limit = 1 + 2  # after the first page, 2 calls are left: the reserve
    resources = ghl_resources(emulator, sqlite_warehouse_url, page_size=50, daily_reserve=2)

    with dg.instance_for_test() as instance:
        stopped = sync_hour(resources, HOUR_1, instance)
        assert not stopped.success
        assert instance.get_latest_materialization_event(ghl_contacts.key) is None  # the hour stays to do
        failure = next(e.step_failure_data for e in stopped.all_events if e.is_step_failure)
        assert "daily request budget is down to 2" in failure.error.message
        assert failure.user_failure_data.metadata["daily_limit_remaining"].value == 2
        assert len(emulator.requests("gohighlevel")) == 1
        assert len(warehouse_contacts(sqlite_warehouse_url)) == 50

        ghl.daily_used = 0  # the next day
        ghl.daily_limit = 200_000
        rerun = sync_hour(resources, HOUR_1, instance)
    assert rerun.success
    assert set(warehouse_contacts(sqlite_warehouse_url)) == added
    assert run_metadata(rerun, ghl_contacts)["daily_limit_remaining"] == 200_000 - 3


def test_a_429_for_the_spent_day_stops_at_once(emulator, sqlite_warehouse_url):
    emulator.ghl.daily_limit = 0

    result = reconcile(ghl_resources(emulator, sqlite_warehouse_url, daily_reserve=0))

    assert not result.success
    assert "daily request limit is used up" in failure_message(result)
    assert len(emulator.requests("gohighlevel")) == 1  # no retries against a day's wait
