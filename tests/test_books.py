"""Nothing lost (issue 26): every GoHighLevel and Employes run accounts for each record it received
(stored, rejected or excluded with a reason) in its metadata, and its blocking check
`nothing_lost` fails the run when the books do not balance or two different records of the run
land on one key. Real runs over real HTTP to the emulator, into SQLite."""

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest
from conftest import ANCHOR, employes_resources, ghl_resources
from dagster._core.test_utils import freeze_time
from helpers import built, reconcile, run_metadata, warehouse_contacts
from syncs import GoHighLevel

from sync_assets.employes import LEFT, assets as build_employes_assets
from sync_assets.ghl import SUPERSEDED, asset_checks, ghl_contacts_reconciliation, hourly_contacts
from sync_assets.step import NOTHING_LOST, nothing_lost, sync_step

# Built as the code location builds them: their partitions read SYNC_TIMEZONE when built, not at import.
ghl_contacts = hourly_contacts()
employes_assets = build_employes_assets()
employes_employee_snapshots = built(employes_assets, "employes_employee_snapshots")
employes_employment_history = built(employes_assets, "employes_employment_history")
employes_employee_changes = built(employes_assets, "employes_employee_changes")

HOUR_1 = ANCHOR + timedelta(hours=1)
DAY_1, DAY_2 = date(2026, 11, 20), date(2026, 11, 21)
BOOKS = ("received", "stored", "rejected", "excluded", "unaccounted", "collisions")


def books(result, asset) -> dict:
    """The run's books from the asset's metadata, and whether its nothing_lost check passed."""
    meta = run_metadata(result, asset)
    (check,) = [e for e in result.get_asset_check_evaluations() if e.asset_key == asset.key and e.check_name == NOTHING_LOST]
    return {**{k: meta[k] for k in BOOKS}, "passed": check.passed,
            "by_reason": check.metadata["excluded_by_reason"].value, "line": check.metadata["books"].value}


def balanced(entry: dict) -> bool:
    return (entry["passed"] and entry["unaccounted"] == 0 and entry["collisions"] == 0
            and entry["received"] == entry["stored"] + entry["rejected"] + entry["excluded"])


# -- GoHighLevel ------------------------------------------------------------------------------------
def sync_hour(resources) -> dg.ExecuteInProcessResult:
    return dg.materialize([ghl_contacts, *asset_checks], resources=resources, partition_key=HOUR_1.strftime("%Y-%m-%d-%H:%M"),
                          selection=[ghl_contacts], raise_on_error=False)


def test_an_hour_with_a_bad_record_and_a_full_pass_balance(small_emulator, sqlite_warehouse_url, frozen_clock):  # the hour is over
    ghl = small_emulator.ghl
    resources = ghl_resources(small_emulator, sqlite_warehouse_url)
    for minute in range(3):
        ghl.add(at=HOUR_1 + timedelta(minutes=minute))
    ghl.put_raw({"id": "badDate0001", "dateUpdated": "yesterday-ish"}, at=HOUR_1 + timedelta(minutes=9))

    hour = sync_hour(resources)
    full = reconcile(resources)

    assert hour.success and full.success
    assert books(hour, ghl_contacts) | {"line": ""} == {"received": 4, "stored": 3, "rejected": 1, "excluded": 0, "unaccounted": 0,
                                                      "collisions": 0, "passed": True, "by_reason": {}, "line": ""}
    pass_books = books(full, ghl_contacts_reconciliation)
    assert balanced(pass_books) and pass_books["received"] == 304 and pass_books["rejected"] == 1
    assert pass_books["line"] == "received 304 = stored 303 + rejected 1 + excluded 0"


def test_a_contact_edited_while_the_pass_pages_is_stored_once_its_older_version_excluded(small_emulator, sqlite_warehouse_url, frozen_clock):
    with dg.instance_for_test() as instance:
        sync = GoHighLevel(small_emulator, sqlite_warehouse_url, instance)
        sync.change_while_paging()  # one contact read, edited and read again; one deleted, one added

        result = sync.run()

    assert result.success
    entry = books(result, ghl_contacts_reconciliation)
    assert balanced(entry)
    assert entry["by_reason"] == {SUPERSEDED: 1}
    assert (entry["received"], entry["stored"]) == (301, 300)
    assert sync.compare().exact


def test_a_contact_sent_unreadable_stays_live_and_is_counted_rejected_not_deleted(small_emulator, sqlite_warehouse_url, frozen_clock):
    ghl = small_emulator.ghl
    resources = ghl_resources(small_emulator, sqlite_warehouse_url)
    assert reconcile(resources).success
    broken = sorted(ghl.truth())[0]
    ghl.delete(broken)
    ghl.put_raw({"id": broken, "dateUpdated": "not a date"}, at=HOUR_1)

    result = reconcile(resources)

    # Before, the pass took a contact it could not read for one GoHighLevel no longer has.
    assert result.success
    assert run_metadata(result, ghl_contacts_reconciliation)["deleted"] == 0
    assert broken in warehouse_contacts(sqlite_warehouse_url)
    entry = books(result, ghl_contacts_reconciliation)
    assert balanced(entry) and entry["rejected"] == 1


# -- Employes ---------------------------------------------------------------------------------------
def sync_day(resources, instance, day, selection=employes_assets) -> dg.ExecuteInProcessResult:
    with freeze_time(datetime(day.year, day.month, day.day, 1, 30, tzinfo=UTC)):
        return dg.materialize(employes_assets, selection=selection, resources=resources, instance=instance,
                              partition_key=day.isoformat(), raise_on_error=False)


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def employes(small_emulator, sqlite_warehouse_url):
    return employes_resources(small_emulator, sqlite_warehouse_url, requests_per_second=1000)


def test_two_nightly_runs_balance_every_asset_with_a_leaver_and_bad_records_accounted(small_emulator, warehouse_url, instance):
    employes = employes_resources(small_emulator, warehouse_url, requests_per_second=1000)  # both databases: the carried-forward row
    company = small_emulator.employes
    people = sorted(company.employees())
    assert sync_day(employes, instance, DAY_1).success
    company.hire(start=DAY_2)
    company.set_hours(people[0], 123456.0, DAY_2)  # more than the snapshot's column holds: rejected
    company.history[people[1]][-1]["salary"].insert(0, {"start_date": None, "yearly_wage": 1.0})  # a period with no start
    last = max(company.employees(), key=lambda i: int(company.employees()[i]["employee_number"]))

    def remove_after_the_list(served):
        if served.path.endswith("/employees") and last in company.people:
            company.remove(last)

    small_emulator.on_request(remove_after_the_list)
    result = sync_day(employes, instance, DAY_2)

    assert result.success
    snapshot = books(result, employes_employee_snapshots)
    assert balanced(snapshot)
    assert (snapshot["received"], snapshot["rejected"], snapshot["by_reason"]) == (11, 1, {LEFT: 1})
    history = books(result, employes_employment_history)
    # Two answers rejected, each kept whole: the period with no start, and the hours too large
    # for the column (which, before, failed the whole history's write on PostgreSQL).
    assert balanced(history) and history["rejected"] == 2
    changes = books(result, employes_employee_changes)
    # Day 1's 10 rows, day 2's 9 read and the rejected employee's row carried forward (which, before, failed the run).
    assert balanced(changes) and changes["received"] == 10 + 10


def test_two_salary_periods_of_one_employment_from_one_day_fail_the_run_naming_the_key(small_emulator, employes, instance):
    company = small_emulator.employes
    person = sorted(company.employees())[2]
    employment = company.history[person][-1]
    period = employment["salary"][-1]
    employment["salary"].append({**period, "yearly_wage": period["yearly_wage"] + 1000})  # a correction, sent as a second period

    result = sync_day(employes, instance, DAY_1, selection=[employes_employee_snapshots, employes_employment_history])

    # Before, the insert failed on the table's key, the wages in the error.
    assert not result.success
    entry = books(result, employes_employment_history)
    assert not entry["passed"] and entry["collisions"] == 1
    assert f"salary period of employment {employment['id']} from {period['start_date'][:10]}" in entry["line"]
    assert str(period["yearly_wage"]) not in entry["line"]


# -- The check itself ---------------------------------------------------------------------------------
class Booked(dg.Config):
    stored: int
    excluded: int
    claims: list[str]


@dg.asset(check_specs=[nothing_lost("tiny_sync")])
def tiny_sync(context: dg.AssetExecutionContext, config: Booked) -> dg.MaterializeResult:
    """Receives three records and books them as the run's config says."""
    with sync_step(context, "tiny") as step:
        step.books.receive(3)
        step.books.store({"inserted": config.stored})
        step.books.exclude("filtered", config.excluded)
        for content in config.claims:
            step.books.claim("key 1", content)
    return step.result({"fetched": 3})


@pytest.mark.parametrize(("booked", "passes", "says"), [
    ({"stored": 2, "excluded": 1, "claims": []}, True, "received 3 = stored 2 + rejected 0 + excluded 1 (1 filtered)"),
    ({"stored": 2, "excluded": 0, "claims": []}, False, "received 3 = stored 2 + rejected 0 + excluded 0; 1 records unaccounted for"),
    ({"stored": 3, "excluded": 0, "claims": ["a", "a", "b"]}, False, "; 1 keys claimed by two different records: key 1"),
], ids=["balanced", "a record lost", "two records on one key"])
def test_books_that_do_not_balance_fail_the_run_and_the_check_says_why(booked, passes, says):
    with dg.instance_for_test() as instance:
        result = dg.materialize([tiny_sync], instance=instance, raise_on_error=False,
                                run_config={"ops": {"tiny_sync": {"config": booked}}})
        (run,) = instance.get_runs()

    assert result.success is passes and run.is_success is passes
    (check,) = result.get_asset_check_evaluations()
    assert check.passed is passes
    assert says in check.metadata["books"].value
