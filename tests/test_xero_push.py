"""Approved Halo time to Xero, end to end: the approval sensor, exactly-once pushes, edits,
un-approvals, locked entries, drift repair, limits and the rotating refresh token, through real
Dagster runs over real HTTP to the emulator's Halo and Xero."""

import itertools
import json
import subprocess
import sys
from datetime import date, timedelta

import dagster as dg
import pytest
import sqlalchemy as sa
from conftest import ANCHOR, xero_resources
from helpers import (
    AGENT,
    DAY,
    Lockstep,
    built,
    check_results as checks,
    expected_task,
    failure_message,
    halo_day,
    ledger,
    load_mappings,
    push,
    xero_by_halo_id,
)
from cryptography.fernet import Fernet
from dagster._core.test_utils import freeze_time

from cli import xero_connect
from definitions import defs as load_definitions

from emulator import xero as xero_emulator
from resources.mappings import MappingFilesResource
from resources.settings import PROJECT_ROOT, setting
from resources.warehouse import engine_for
from resources.xero import local_token_key
from sensors.xero import sensors as xero_sensors
from resources.halo import timesheet_row
from sync_assets.xero import open_period, time_entries, xero_reconciliation

# Built as the code location builds them (the push's partitions and the approval sensor's interval
# are settings, read when built).
xero_time_entries = time_entries()
xero_approvals = built(xero_sensors(), "xero_approvals")

defs = load_definitions()

# The emulator's data has fixed dates: Dagster's clock agrees with them (conftest.NOW). Every
# GoHighLevel and Xero exchange is checked against the published descriptions.
pytestmark = [pytest.mark.usefixtures("frozen_clock"), pytest.mark.openapi]



@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def resources(emulator, sqlite_warehouse_url, instance):
    resources = xero_resources(emulator, sqlite_warehouse_url, Fernet.generate_key().decode())
    load_mappings(resources, instance)
    return resources


def meta(result, name="xero_time_entries") -> dict:
    (materialization,) = result.asset_materializations_for_node(name)
    return {k: v.value for k, v in materialization.metadata.items()}


def assert_xero_matches(emulator, entries: dict[int, dict]) -> None:
    """Xero holds exactly one entry per Halo entry, with Halo's user, task, date, minutes and text."""
    in_xero = xero_by_halo_id(emulator)
    assert set(in_xero) == set(entries)
    for entry_id, entry in entries.items():
        (pushed,) = in_xero[entry_id]
        assert pushed["userId"] == xero_emulator.user_id(entry["agent_id"])
        assert pushed["projectId"] == xero_emulator.project_id(entry["client_id"])
        assert pushed["taskId"] == expected_task(entry)
        assert pushed["dateUtc"].startswith(entry["start_date"][:19])
        assert pushed["duration"] == emulator.halo.minutes(entry_id)
        assert entry["subject"] in pushed["description"]


TICKS = itertools.count()


def tick(instance, resources, cursor):
    # Each tick a poll interval after the one before: the sensor reads Halo on its timer (no
    # approval events here; tests/test_events_consumers.py has them).
    with freeze_time(ANCHOR + timedelta(hours=1, seconds=int(setting("XERO_APPROVAL_POLL_SECONDS")) * next(TICKS))):
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"halopsa": resources["halopsa"], "warehouse": resources["warehouse"]},
                                          definitions=defs)
        return xero_approvals.evaluate_tick(context)


def test_an_approval_reaches_xero_once_through_the_sensor(emulator, resources, instance):
    first = tick(instance, resources, None)  # a new installation catches up on the open period's approvals
    assert DAY.isoformat() not in [r.partition_key for r in first.run_requests]
    emulator.halo.approve(AGENT, DAY)
    second = tick(instance, resources, first.cursor)
    assert [r.partition_key for r in second.run_requests] == [DAY.isoformat()]
    assert not tick(instance, resources, second.cursor).run_requests  # a repeated tick asks nothing new

    result = push(resources, instance, date.fromisoformat(second.run_requests[0].partition_key))
    assert result.success
    assert_xero_matches(emulator, halo_day(emulator))
    assert meta(result)["created"] == len(halo_day(emulator))


def test_the_first_catch_up_queues_behind_other_runs_and_a_later_approval_ahead_of_them(emulator, resources, instance):
    # dagster/priority: a new installation's pushes of the whole open period wait like a first
    # sync; an approval after that overtakes the queued syncs (the job's own tag).
    emulator.inject("halopsa", "500", path="/api/Timesheet", times=6)  # every attempt
    failed = tick(instance, resources, None)  # the first read fails: still a first read next time
    first = tick(instance, resources, failed.cursor)
    emulator.halo.approve(AGENT, DAY)
    second = tick(instance, resources, first.cursor)

    assert not failed.run_requests and "could not read approvals" in failed.skip_message
    assert first.run_requests and {r.tags["dagster/priority"] for r in first.run_requests} == {"-10"}
    assert [r.partition_key for r in second.run_requests] == [DAY.isoformat()] and "dagster/priority" not in second.run_requests[0].tags
    assert defs.resolve_job_def("xero_push_job").tags["dagster/priority"] == "10"


def test_a_tick_costs_one_halo_request_and_an_agent_new_to_the_sensor_has_its_approvals_pushed(emulator, resources, instance):
    first = tick(instance, resources, None)
    emulator.reset_requests()
    second = tick(instance, resources, first.cursor)  # agents from the warehouse, the token kept
    requests = [(r.method, r.path) for r in emulator.requests("halopsa")]
    cursor = json.loads(second.cursor)
    approved_days = {d for (agent, d), sheet in emulator.halo.timesheets().items() if agent == AGENT and timesheet_row(sheet, "")["approved"]}
    lost_agent = tick(instance, resources, json.dumps({**cursor, "agents": [a for a in cursor["agents"] if a != AGENT]}))

    assert requests == [("GET", "/api/Timesheet")]
    assert not second.run_requests
    assert AGENT in cursor["agents"] and lost_agent.run_requests
    assert {r.partition_key for r in lost_agent.run_requests} == {d.isoformat() for d in approved_days if d >= open_period()[0]}
    assert json.loads(lost_agent.cursor)["approved_at"] == cursor["approved_at"]  # the cursor does not go back


def test_a_retried_post_and_a_rerun_leave_exactly_one_entry(emulator, resources, instance, sqlite_warehouse_url):
    emulator.halo.approve(AGENT, DAY)
    emulator.inject("xero", "drop", path="/Time")  # Xero makes the entry, the answer is lost
    assert push(resources, instance).success
    assert_xero_matches(emulator, halo_day(emulator))

    emulator.reset_requests()
    rerun = push(resources, instance)
    assert rerun.success
    assert_xero_matches(emulator, halo_day(emulator))
    assert meta(rerun)["xero_requests"] == 0  # unchanged entries cost nothing
    assert emulator.requests("xero") == []


def test_a_run_killed_between_post_and_ledger_write_is_adopted_not_duplicated(emulator, resources, instance, sqlite_warehouse_url):
    emulator.halo.approve(AGENT, DAY)
    assert push(resources, instance).success
    # The state a kill leaves behind: the ledger still says pending, Xero has the entry, and the
    # Idempotency-Key has long expired.
    with engine_for(sqlite_warehouse_url).begin() as conn:
        conn.execute(sa.text("UPDATE xero_ledger SET status = 'pending', xero_time_entry_id = NULL, content_hash = NULL"))
    emulator.xero.idempotency_ttl_s = 0

    result = push(resources, instance)
    assert result.success
    assert_xero_matches(emulator, halo_day(emulator))
    assert meta(result)["created"] == 0
    rows = ledger(sqlite_warehouse_url)
    assert {r.status for r in rows.values()} == {"pushed"}
    assert {r.xero_time_entry_id for r in rows.values()} == {e[0]["timeEntryId"] for e in xero_by_halo_id(emulator).values()}


def test_edits_follow_unapproval_deletes_and_locked_entries_are_reported(emulator, resources, instance):
    emulator.halo.approve(AGENT, DAY)
    assert push(resources, instance).success
    edited, locked, *_ = sorted(halo_day(emulator))
    emulator.halo.edit_entry(edited, minutes=emulator.halo.minutes(edited) + 15)
    emulator.halo.edit_entry(locked, minutes=emulator.halo.minutes(locked) + 30)
    emulator.xero.set_status(xero_by_halo_id(emulator)[locked][0]["timeEntryId"], "LOCKED")
    (locked_in_xero,) = xero_by_halo_id(emulator)[locked]

    result = push(resources, instance)
    assert result.success
    assert meta(result)["updated"] == 1
    assert xero_by_halo_id(emulator)[edited][0]["duration"] == emulator.halo.minutes(edited)
    assert xero_by_halo_id(emulator)[locked][0] == locked_in_xero  # untouched
    assert checks(result)["xero_no_locked_conflicts"] is False

    emulator.halo.unapprove(AGENT, DAY)
    result = push(resources, instance)
    assert result.success
    assert set(xero_by_halo_id(emulator)) == {locked}  # the rest deleted, the locked one reported
    assert meta(result)["deleted"] == len(halo_day(emulator)) - 1


def test_entries_that_cannot_go_are_recorded_with_the_reason_and_the_rest_go(emulator, resources, instance, tmp_path, sqlite_warehouse_url):
    emulator.halo.approve(AGENT, DAY)
    entries = halo_day(emulator)
    left_out = next(iter(entries.values()))["client_id"]
    lines = (PROJECT_ROOT / "config/xero_projects.csv").read_text().splitlines()
    mapping = tmp_path / "projects.csv"
    mapping.write_text("\n".join(line for line in lines if not line.startswith(f"{left_out},")) + "\n")
    resources["mapping_files"] = MappingFilesResource(agent_mappings_file="config/agent_mappings.csv",
                                                      project_mappings_file=str(mapping))

    result = push(resources, instance)
    assert result.success
    unmapped = {i for i, e in entries.items() if e["client_id"] == left_out}
    assert set(xero_by_halo_id(emulator)) == set(entries) - unmapped
    rows = ledger(sqlite_warehouse_url, emulator)
    assert all(rows[i].status == "invalid" and f"client {left_out}" in rows[i].last_error for i in unmapped)
    assert checks(result)["xero_entries_pushable"] is False


def test_an_unreadable_approval_holds_its_entries_back_and_says_so(emulator, resources, instance, sqlite_warehouse_url):
    emulator.halo.approve(AGENT, DAY)
    emulator.halo.set_approval(AGENT, DAY, approvedby="Jane Manager", approver=1)  # text and a number: still approved
    emulator.halo.set_approval(AGENT + 1, DAY, approvalstatus="yes")

    result = push(resources, instance)

    assert result.success
    assert_xero_matches(emulator, halo_day(emulator))
    rows = ledger(sqlite_warehouse_url, emulator)
    held_back = halo_day(emulator, AGENT + 1)
    assert held_back and all(rows[i].status == "invalid" and "approval cannot be read" in rows[i].last_error for i in held_back)
    assert meta(result)["unreadable_approvals"] == 1
    assert checks(result)["xero_halo_day_as_expected"] is False and checks(result)["xero_entries_pushable"] is False


def test_a_dry_run_shows_the_plan_and_writes_nothing(emulator, resources, instance, sqlite_warehouse_url):
    emulator.halo.approve(AGENT, DAY)
    result = dg.materialize([xero_time_entries], resources=resources, instance=instance, partition_key=DAY.isoformat())
    metadata = meta(result)
    assert metadata["dry_run"] is True  # XERO_PUSH_ENABLED is off by default
    assert metadata["planned_create"] == len(halo_day(emulator))
    assert "| create |" in metadata["plan"]
    assert emulator.xero.entries() == {} and emulator.requests("xero") == []
    assert ledger(sqlite_warehouse_url) == {}


def test_force_repairs_drift_and_reconciliation_reports_it(emulator, resources, instance):
    emulator.halo.approve(AGENT, DAY)
    assert push(resources, instance).success
    vanished, changed, *_ = sorted(halo_day(emulator))
    emulator.xero.delete_entry_by_hand(xero_by_halo_id(emulator)[vanished][0]["timeEntryId"])
    changed_entry = xero_by_halo_id(emulator)[changed][0]
    emulator.xero.delete_entry_by_hand(changed_entry["timeEntryId"])
    emulator.xero.add_entry_by_hand(changed_entry["projectId"], changed_entry["userId"], changed_entry["taskId"],
                                    changed_entry["dateUtc"], 999, changed_entry["description"])
    hand_made = emulator.xero.add_entry_by_hand(changed_entry["projectId"], changed_entry["userId"], changed_entry["taskId"],
                                                changed_entry["dateUtc"], 30, "made in Xero by hand")

    with freeze_time(ANCHOR + timedelta(hours=1)):
        report = dg.materialize([xero_reconciliation], resources=resources, instance=instance)
    assert checks(report) == {"xero_no_vanished_entries": False, "xero_no_changes_by_hand": False,
                              "xero_all_approved_pushed": True, "xero_refresh_token_fresh": True, "nothing_lost": True}
    assert emulator.xero.entries()[hand_made]  # reporting changes nothing

    assert push(resources, instance, force=True).success
    assert_xero_matches(emulator, halo_day(emulator))
    assert hand_made in emulator.xero.entries()
    with freeze_time(ANCHOR + timedelta(hours=1)):
        report = dg.materialize([xero_reconciliation], resources=resources, instance=instance)
    assert checks(report)["xero_no_vanished_entries"] is True
    assert meta(report, "xero_reconciliation")["made_by_hand"] == 1


def test_pushes_stay_under_the_minute_limit(emulator, instance, sqlite_warehouse_url):
    emulator.xero.set_limits(per_minute=4, window_s=2.0)
    resources = xero_resources(emulator, sqlite_warehouse_url, Fernet.generate_key().decode(), calls_per_window=4, window_s=2.0)
    load_mappings(resources, instance)
    emulator.halo.approve(AGENT, DAY)
    emulator.halo.approve(AGENT + 1, DAY)
    assert push(resources, instance).success
    assert len(emulator.requests("xero", "/Time")) >= 8  # twice the window's allowance
    assert [r for r in emulator.requests("xero") if r.status == 429] == []


def test_a_spent_day_budget_postpones_the_rest_and_the_next_run_finishes(emulator, resources, instance):
    emulator.halo.approve(AGENT, DAY)
    emulator.xero.set_limits(per_day=3)
    result = push(resources, instance)
    assert result.success
    assert meta(result)["postponed"] > 0
    assert 0 < len(xero_by_halo_id(emulator)) < len(halo_day(emulator))

    emulator.xero.set_limits()  # the default day again
    assert push(resources, instance).success
    assert_xero_matches(emulator, halo_day(emulator))


def test_the_refresh_token_rotates_and_is_stored_encrypted(emulator, resources, instance, sqlite_warehouse_url):
    emulator.halo.approve(AGENT, DAY)
    assert push(resources, instance).success
    emulator.halo.edit_entry(min(halo_day(emulator)), minutes=5)
    assert push(resources, instance).success
    assert emulator.xero.refreshes == 2
    with engine_for(sqlite_warehouse_url).connect() as conn:
        (stored,) = conn.execute(sa.text("SELECT refresh_token FROM xero_tokens")).scalars()
    assert emulator.xero.current_refresh_token not in stored
    store = resources["xero"].token_store(engine_for(sqlite_warehouse_url))
    assert store.age() < timedelta(minutes=1)


CONCURRENT_REFRESH = """
import sys
from datetime import date
from resources.warehouse import engine_for
from resources.xero import XeroResource
from emulator import xero as x
url, warehouse, key = sys.argv[1:]
resource = XeroResource(api_url=url, identity_url=url, client_id=x.CLIENT_ID, client_secret=x.CLIENT_SECRET,
                        tenant_id=x.TENANT_ID, token_key=key, backoff_initial_s=0.01)
with resource.client(engine_for(warehouse)) as client:
    client.time_entries(x.project_id(12), date.today(), date.today())  # any day: the token is what counts
print("ok")
"""


def test_two_processes_refreshing_at_once_do_not_burn_each_others_token(emulator, postgres_warehouse_url):
    key = Fernet.generate_key().decode()
    resources = xero_resources(emulator, postgres_warehouse_url, key)
    resources["xero"].token_store(engine_for(postgres_warehouse_url))  # stores the initial token
    emulator.xero.grace_s = 0  # no grace: a token used twice would be refused
    emulator.inject("xero", "slow", path="/connect/token", times=2, delay_s=3.0)  # so the two refreshes overlap
    processes = [subprocess.Popen([sys.executable, "-c", CONCURRENT_REFRESH, emulator.url, postgres_warehouse_url, key],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = [p.communicate(timeout=600) for p in processes]
    assert [out.strip() for out, _ in outcomes] == ["ok", "ok"], [err[-500:] for _, err in outcomes]
    assert emulator.xero.refreshes == 2


def test_a_revoked_token_stops_the_run_with_how_to_reconnect(emulator, resources, instance, sqlite_warehouse_url):
    emulator.halo.approve(AGENT, DAY)
    emulator.xero.revoke_refresh_tokens()
    result = push(resources, instance)
    assert not result.success
    message = failure_message(result)
    assert "refused" in message and "workforce-sync xero-connect" in message
    assert len(emulator.requests("xero", "/connect/token")) == 1  # not retried
    assert emulator.xero.entries() == {} and ledger(sqlite_warehouse_url) == {}

    # The operator reconnects: a new token from Xero's consent flow, stored with xero-connect.
    emulator.xero.accept_unknown_refresh_tokens = True
    xero_connect(dg.Definitions(resources=resources), f"{xero_emulator.REFRESH_PREFIX}after-reconnect")
    assert push(resources, instance).success
    assert_xero_matches(emulator, halo_day(emulator))


def test_a_halo_error_says_nothing_was_pushed(emulator, resources, instance, sqlite_warehouse_url):
    emulator.halo.approve(AGENT, DAY)
    emulator.inject("halopsa", "revoked_token", path="/api/Timesheet")  # the day's entries and approvals refused
    result = push(resources, instance)
    assert not result.success
    assert failure_message(result).rstrip().endswith("Nothing was pushed."), failure_message(result)
    assert emulator.requests("xero") == [] and ledger(sqlite_warehouse_url) == {}


def test_a_xero_error_mid_push_says_what_was_pushed_is_in_the_ledger(emulator, resources, instance, sqlite_warehouse_url):
    emulator.halo.approve(AGENT, DAY)
    emulator.inject("xero", "revoked_token", path="/Time", after=1)  # the first entry is made, then Xero refuses
    result = push(resources, instance)
    assert not result.success
    message = failure_message(result)
    assert "What was pushed is in the ledger; re-run the partition to finish." in message, message
    assert [r.status for r in ledger(sqlite_warehouse_url).values()].count("pushed") == 1
    assert len(xero_by_halo_id(emulator)) == 1

    emulator.clear_faults()
    assert push(resources, instance).success  # the re-run the message asks for finishes the day, each entry once
    assert_xero_matches(emulator, halo_day(emulator))


def test_the_local_token_key_is_readable_by_its_owner_only(tmp_path, monkeypatch):
    # The key file a local installation makes in its .local/, made here in the test's own folder.
    monkeypatch.setattr("resources.settings.LOCAL_DIR", tmp_path / ".local")
    key = local_token_key()
    assert (tmp_path / ".local" / "xero_token.key").stat().st_mode & 0o777 == 0o600
    assert local_token_key() == key  # made once, then read


CONCURRENT_PUSH = """
import sys
import dagster as dg
from conftest import xero_resources
from sync_assets.xero import time_entries

url, warehouse, key, day = sys.argv[1:]
emulator = type("Remote", (), {"url": url})()
result = dg.materialize([time_entries()], resources=xero_resources(emulator, warehouse, key), partition_key=day,
                        run_config={"ops": {"xero_time_entries": {"config": {"dry_run": False}}}}, raise_on_error=False)
print("ok" if result.success else "failed")
"""


def test_two_runs_of_one_day_at_once_push_each_entry_once(emulator, postgres_warehouse_url, instance):
    key = Fernet.generate_key().decode()
    resources = xero_resources(emulator, postgres_warehouse_url, key)
    load_mappings(resources, instance)
    emulator.halo.approve(AGENT, DAY)
    emulator.halo.approve(AGENT + 1, DAY)
    # The first POST waits until the other run POSTs too: both runs push the same entries at once,
    # however long either process takes to start.
    emulator.on_request(Lockstep(lambda s: s.method == "POST" and s.path.endswith("/Time"), meetings=1))
    runs = [subprocess.Popen([sys.executable, "-c", CONCURRENT_PUSH, emulator.url, postgres_warehouse_url, key, DAY.isoformat()],
                             cwd=PROJECT_ROOT / "tests", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outcomes = [run.communicate(timeout=600) for run in runs]
    assert [out.strip() for out, _ in outcomes] == ["ok", "ok"], [err[-3000:] for _, err in outcomes]
    expected = {**halo_day(emulator, AGENT), **halo_day(emulator, AGENT + 1)}
    assert_xero_matches(emulator, expected)
    posts = [r for r in emulator.requests("xero", "/Time") if r.method == "POST"]
    assert len(posts) > len(expected)  # both runs pushed the same entries; Idempotency-Key made it once
