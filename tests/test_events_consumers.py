"""Provider events taken up by the sensors (resources/events.py): a Halo approval event makes the
approval sensor read Halo before its poll timer would, and no more often than the timer alone;
GoHighLevel contact events sync the changed contacts. Real sensor evaluations and runs, real
HTTP to the emulator, a real SQLite warehouse; Dagster's clock frozen and stepped."""

import json
from datetime import timedelta

import dagster as dg
import pytest
import sqlalchemy as sa
from conftest import ANCHOR, NOW, ghl_resources, halo_resources
from dagster._core.test_utils import freeze_time
from helpers import AGENT, DAY, assert_warehouse_matches_provider, built, load_mappings, reconcile, run_metadata, warehouse_contacts

from definitions import defs as load_definitions
from resources import events
from resources.settings import setting
from resources.tables import inbound_events
from emulator.ghl import LOCATION_ID
from sensors.ghl import sensors as ghl_sensors
from sensors.xero import sensors as xero_sensors
from sync_assets.ghl import asset_checks, ghl_contacts_from_events, ghl_contacts_reconciliation

defs = load_definitions()
xero_approvals = built(xero_sensors(), "xero_approvals")
T0 = ANCHOR + timedelta(hours=1)
# The emulator's data has fixed dates: Dagster's clock agrees with them (conftest.NOW).
pytestmark = pytest.mark.usefixtures("frozen_clock")
POLL_S = int(setting("XERO_APPROVAL_POLL_SECONDS"))


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def halo(emulator, sqlite_warehouse_url, instance):
    resources = halo_resources(emulator, sqlite_warehouse_url)
    load_mappings(resources, instance)
    return resources


class ApprovalDaemon:
    """Ticks the approval sensor at chosen moments, keeping its cursor as the daemon does."""

    def __init__(self, instance, resources):
        self.instance, self.resources, self.cursor = instance, resources, None

    def tick(self, moment):
        with freeze_time(moment):
            context = dg.build_sensor_context(instance=self.instance, cursor=self.cursor, definitions=defs,
                                              resources={k: self.resources[k] for k in ("halopsa", "warehouse")})
            result = xero_approvals.evaluate_tick(context)
        self.cursor = result.cursor or self.cursor
        return result


def halo_reads(emulator) -> int:
    return len(emulator.requests("halopsa", "/api/Timesheet"))


def event_rows(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(sa.select(inbound_events).order_by(inbound_events.c.id)).all()


def test_a_pending_approval_event_makes_the_next_tick_read_halo_and_is_marked_handled(emulator, halo, instance):
    engine = halo["warehouse"].engine
    daemon = ApprovalDaemon(instance, halo)
    daemon.tick(T0)  # the first read: catches up on the open period
    emulator.halo.approve(AGENT, DAY)
    emulator.reset_requests()
    with freeze_time(T0 + timedelta(seconds=3)):
        assert events.store_event(engine, events.HALO_APPROVALS, "halo-evt-1", {"timesheet_id": 1, "date": DAY.isoformat()})

    result = daemon.tick(T0 + timedelta(seconds=5))  # well within the poll interval

    assert halo_reads(emulator) == 1
    (request,) = result.run_requests
    assert request.partition_key == DAY.isoformat()
    (row,) = event_rows(engine)
    assert row.handled_at is not None and row.handled_by == request.run_key
    assert json.loads(daemon.cursor)["reads"] == [T0.timestamp(), (T0 + timedelta(seconds=5)).timestamp()]


def test_without_an_event_no_halo_request_within_the_interval_and_the_timer_restarts_at_each_read(emulator, halo, instance):
    engine = halo["warehouse"].engine
    daemon = ApprovalDaemon(instance, halo)
    daemon.tick(T0)
    emulator.reset_requests()
    quiet = [daemon.tick(T0 + timedelta(seconds=s)) for s in range(5, POLL_S, 5)]
    assert halo_reads(emulator) == 0 and all(r.skip_message.startswith("not reading Halo") for r in quiet)

    events.store_event(engine, events.HALO_APPROVALS, "halo-evt-2", {"id": 2})
    daemon.tick(T0 + timedelta(seconds=20))  # the event moves a read earlier...
    daemon.tick(T0 + timedelta(seconds=20 + POLL_S - 1))  # ...and the timer counts from it
    assert halo_reads(emulator) == 1
    daemon.tick(T0 + timedelta(seconds=20 + POLL_S))
    assert halo_reads(emulator) == 2
    (row,) = event_rows(engine)
    assert row.handled_by == f"tick {T0 + timedelta(seconds=20):%Y-%m-%dT%H:%M:%SZ}"  # no approval: no run key


def test_a_handled_event_makes_no_read(emulator, halo, instance):
    engine = halo["warehouse"].engine
    events.store_event(engine, events.HALO_APPROVALS, "halo-evt-3", {"date": DAY.isoformat()})
    daemon = ApprovalDaemon(instance, halo)
    daemon.tick(T0)  # reads (first read) and takes the event up
    emulator.reset_requests()
    assert not events.store_event(engine, events.HALO_APPROVALS, "halo-evt-3", {"date": DAY.isoformat()})  # a redelivery

    result = daemon.tick(T0 + timedelta(seconds=5))

    assert halo_reads(emulator) == 0 and not result.run_requests
    assert events.pending(engine, events.HALO_APPROVALS) == []


def test_events_never_make_more_reads_in_an_hour_than_the_poll_timer(emulator, halo, instance):
    engine = halo["warehouse"].engine
    daemon = ApprovalDaemon(instance, halo)
    emulator.reset_requests()
    for second in range(0, 3600, 5):  # an event before every tick of an hour: a storm
        with freeze_time(T0 + timedelta(seconds=second)):
            events.store_event(engine, events.HALO_APPROVALS, f"storm-{second}", {"id": second})
        daemon.tick(T0 + timedelta(seconds=second))

    assert halo_reads(emulator) == 3600 // POLL_S
    assert len(events.pending(engine, events.HALO_APPROVALS)) > 0  # the rest wait for the hour's reads to free up


# -- GoHighLevel contact events ------------------------------------------------------------------
ghl_contact_events = built(ghl_sensors(), "ghl_contact_events")


def contact_event(engine, kind: str, contact_id: str, key: str, location: str = LOCATION_ID) -> None:
    assert events.store_event(engine, events.GHL_CONTACTS, key, {"type": kind, "locationId": location, "id": contact_id})


def tick_contacts(instance, warehouse, cursor=None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"warehouse": warehouse}, definitions=defs)
    return ghl_contact_events.evaluate_tick(context)


def run_events(resources, instance, request) -> dg.ExecuteInProcessResult:
    return dg.materialize([ghl_contacts_from_events, *asset_checks], resources=resources, instance=instance,
                          selection=[ghl_contacts_from_events], run_config=request.run_config, raise_on_error=False)


def test_contact_events_sync_the_named_contacts_as_the_syncs_write_them(emulator, sqlite_warehouse_url, instance):
    resources = ghl_resources(emulator, sqlite_warehouse_url)
    engine = resources["warehouse"].engine
    assert reconcile(resources, instance).success
    ghl, ids = emulator.ghl, sorted(emulator.ghl.truth())
    moment = NOW - timedelta(minutes=1)
    ghl.update(ids[0], at=moment, city="Utrecht")
    ghl.update(ids[1], at=moment, email=None)  # a field cleared: GoHighLevel leaves it out
    ghl.delete(ids[2])
    contact_event(engine, "ContactUpdate", ids[0], "e1")
    contact_event(engine, "ContactUpdate", ids[1], "e2")
    contact_event(engine, "ContactUpdate", ids[0], "e3")  # the same contact again: read once
    contact_event(engine, "ContactDelete", ids[2], "e4")
    contact_event(engine, "ContactUpdate", ids[3], "e5", location="locSomeoneElse")
    emulator.reset_requests()

    first = tick_contacts(instance, resources["warehouse"])
    again = tick_contacts(instance, resources["warehouse"], first.cursor)  # while the run is queued
    (request,) = first.run_requests
    result = run_events(resources, instance, request)

    assert result.success and not again.run_requests
    newest = max(e.id for e in event_rows(engine))
    assert request.run_key == f"contact-events-{newest}"
    # One GET per contact named, nothing else (the other location's event is not acted on).
    assert sorted(r.path for r in emulator.requests("gohighlevel")) == sorted(f"/contacts/{i}" for i in ids[:3])
    rows = warehouse_contacts(sqlite_warehouse_url, live_only=False)
    assert rows[ids[0]]["city"] == "Utrecht" and rows[ids[1]]["email"] is None
    assert rows[ids[2]]["deleted_at"] is not None
    meta = run_metadata(result, ghl_contacts_from_events)
    assert (meta["events"], meta["contacts"], meta["not_found"], meta["updated"]) == (5, 3, 1, 2)
    assert all(c.passed for c in result.get_asset_check_evaluations())  # the books balance: nothing_lost
    assert all(r.handled_by == result.run_id for r in event_rows(engine))
    # Written exactly as the syncs write them: a full pass finds nothing to change.
    check = reconcile(resources, instance)
    meta = run_metadata(check, ghl_contacts_reconciliation)
    assert (meta["updated"], meta["inserted"], meta["deleted"]) == (0, 0, 0)
    assert_warehouse_matches_provider(emulator, sqlite_warehouse_url)


def test_a_contact_first_seen_by_its_event_is_stored_and_completed_by_the_next_sync(emulator, sqlite_warehouse_url, instance):
    resources = ghl_resources(emulator, sqlite_warehouse_url)
    engine = resources["warehouse"].engine
    new = emulator.ghl.add(at=NOW - timedelta(minutes=1))
    contact_event(engine, "ContactCreate", new, "c1")

    (request,) = tick_contacts(instance, resources["warehouse"]).run_requests
    result = run_events(resources, instance, request)

    assert result.success and run_metadata(result, ghl_contacts_from_events)["inserted"] == 1
    stored = warehouse_contacts(sqlite_warehouse_url)[new]
    truth = emulator.ghl.truth()[new]
    assert (stored["first_name"], stored["email"]) == (truth.get("firstName"), truth.get("email"))
    assert tick_contacts(instance, resources["warehouse"], "0").skip_message  # handled: nothing more to ask
