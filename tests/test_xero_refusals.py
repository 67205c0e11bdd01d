"""Points Xero's published description leaves open, handled without guessing: a lock is read from
the entry's listed status (not a message's wording), a DELETE of a gone entry (404 or 400) is
confirmed by listing, a day-limit 429 is known in each of its forms and a long Retry-After
postpones, and the listing of a day reaches its last second."""

from datetime import date, timedelta

import dagster as dg
import pytest
from conftest import xero_resources
from cryptography.fernet import Fernet
from helpers import AGENT, DAY, halo_day, ledger, load_mappings, meta, push, xero_by_halo_id

from emulator import xero as xero_emulator
from resources.warehouse import engine_for

# Fixed work dates: Dagster's clock agrees with them (conftest.NOW); every exchange is also
# checked against the published descriptions.
pytestmark = [pytest.mark.usefixtures("frozen_clock"), pytest.mark.openapi]


@pytest.fixture
def resources(emulator, sqlite_warehouse_url, instance):
    resources = xero_resources(emulator, sqlite_warehouse_url, Fernet.generate_key().decode())
    load_mappings(resources, instance)
    return resources


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def test_an_entry_invoiced_since_the_last_push_is_a_conflict_read_from_its_status(emulator, resources, instance, sqlite_warehouse_url):
    emulator.halo.approve(AGENT, DAY)
    assert push(resources, instance).success
    edited = min(halo_day(emulator))
    emulator.halo.edit_entry(edited, minutes=emulator.halo.minutes(edited) + 15)
    (in_xero,) = xero_by_halo_id(emulator)[edited]
    # Invoiced in Xero after our last push: the ledger-driven plan does not know, the PUT is refused.
    emulator.xero.set_status(in_xero["timeEntryId"], "INVOICED")

    result = push(resources, instance)

    assert result.success
    assert (meta(result, "xero_time_entries")["conflicts"], meta(result, "xero_time_entries")["failed"]) == (1, 0)
    row = ledger(sqlite_warehouse_url, emulator)[edited]
    assert row.status == "conflict" and "INVOICED" in row.last_error
    assert xero_by_halo_id(emulator)[edited] == [in_xero | {"status": "INVOICED"}]  # untouched


@pytest.mark.parametrize("gone_status", [404, 400])
def test_deleting_an_entry_already_gone_is_confirmed_by_listing(emulator, resources, instance, sqlite_warehouse_url, gone_status):
    emulator.halo.approve(AGENT, DAY)
    assert push(resources, instance).success
    emulator.halo.unapprove(AGENT, DAY)
    emulator.xero.gone_status = gone_status
    pushed = [e[0]["timeEntryId"] for e in xero_by_halo_id(emulator).values()]
    for entry_id in pushed:  # deleted in Xero by hand after our last push
        emulator.xero.delete_entry_by_hand(entry_id)

    result = push(resources, instance)

    assert result.success
    assert (meta(result, "xero_time_entries")["deleted"], meta(result, "xero_time_entries")["failed"]) == (len(pushed), 0)
    assert {r.status for r in ledger(sqlite_warehouse_url, emulator).values()} == {"deleted"}
    deletes = [s for s in emulator.requests("xero") if s.method == "DELETE"]
    assert {s.status for s in deletes} == {gone_status}


@pytest.mark.parametrize("headers, retry_after", [
    ({"X-Rate-Limit-Problem": "Day"}, 60),
    ({"x-rate-limit-problem": "DAY"}, 60),
    ({"X-DayLimit-Remaining": "0"}, 60),
    ({"X-Rate-Limit-Problem": "minute"}, 7200),  # a wait no run should sit through
], ids=["Day", "lower-case header", "DayLimit-Remaining 0", "long Retry-After"])
def test_a_429_no_run_can_outlast_postpones_the_rest(emulator, resources, instance, sqlite_warehouse_url, headers, retry_after):
    emulator.halo.approve(AGENT, DAY)
    emulator.inject("xero", "429", method="POST", path="/Time", after=1, retry_after=retry_after, headers=headers)

    result = push(resources, instance)

    assert result.success
    entries = halo_day(emulator)
    assert (meta(result, "xero_time_entries")["created"], meta(result, "xero_time_entries")["postponed"], meta(result, "xero_time_entries")["failed"]) == (1, len(entries) - 1, 0)
    assert sorted(r.status for r in ledger(sqlite_warehouse_url, emulator).values()) == ["postponed"] * (len(entries) - 1) + ["pushed"]
    assert [s.status for s in emulator.requests("xero") if s.method == "POST" and "/Time" in s.path] == [200, 429]
    assert push(resources, instance).success  # the next run goes on
    assert set(xero_by_halo_id(emulator)) == set(entries)


def test_the_listing_of_a_day_reaches_its_last_second(emulator, sqlite_warehouse_url):
    project, user, task = xero_emulator.project_id(12), xero_emulator.user_id(1), xero_emulator.task_id(12, "support")
    last_second = emulator.xero.add_entry_by_hand(project, user, task, f"{DAY}T23:59:59.700Z", 5, "late")
    emulator.xero.add_entry_by_hand(project, user, task, f"{DAY + timedelta(days=1)}T00:00:00Z", 5, "next day")
    emulator.xero.add_entry_by_hand(project, user, task, f"{DAY}T00:00:00Z", 5, "first second")
    resources = xero_resources(emulator, sqlite_warehouse_url, Fernet.generate_key().decode())
    with resources["xero"].client(engine_for(sqlite_warehouse_url)) as client:
        listed = client.time_entries(project, DAY, DAY)

    assert sorted(e["description"] for e in listed) == ["first second", "late"]
    assert last_second in {e["timeEntryId"] for e in listed}
    assert date.fromisoformat(listed[-1]["dateUtc"][:10]) == DAY
