"""GoHighLevel contacts end to end: real Dagster runs, real HTTP to the emulator, real databases."""

from datetime import timedelta

import dagster as dg
import pytest
import sqlalchemy as sa
from conftest import ANCHOR, ghl_resources
from helpers import assert_warehouse_matches_provider, failure_message, reconcile, run_metadata, warehouse_contacts

from resources.warehouse import engine_for, sync_rejects
from sync_assets.ghl import asset_checks, ghl_contacts, ghl_contacts_reconciliation, write_page

# The emulator's data has fixed dates: Dagster's clock agrees with them (conftest.NOW).
pytestmark = pytest.mark.usefixtures("frozen_clock")

HOUR_1 = ANCHOR + timedelta(hours=1)  # partition 2026-11-20-13:00
HOUR_2 = ANCHOR + timedelta(hours=2)


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
        counts, _ = write_page(conn, [old], run_id="late-partition", where="")

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
