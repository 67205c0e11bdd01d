"""Provider events taken up by the sensors (resources/events.py): a Halo approval event makes the
approval sensor read Halo before its poll timer would, and no more often than the timer alone;
GoHighLevel contact events sync the changed contacts. Real sensor evaluations and runs, real
HTTP to the emulator, a real SQLite warehouse; Dagster's clock frozen and stepped."""

import json
from datetime import timedelta

import dagster as dg
import pytest
import sqlalchemy as sa
from conftest import ANCHOR, halo_resources
from dagster._core.test_utils import freeze_time
from helpers import AGENT, DAY, built, load_mappings

from definitions import defs as load_definitions
from resources import events
from resources.settings import setting
from resources.tables import inbound_events
from sensors.xero import sensors as xero_sensors

defs = load_definitions()
xero_approvals = built(xero_sensors(), "xero_approvals")
T0 = ANCHOR + timedelta(hours=1)
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
        assert events.store_event(engine, events.HALOPSA_APPROVALS, "halo-evt-1", {"timesheet_id": 1, "date": DAY.isoformat()})

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

    events.store_event(engine, events.HALOPSA_APPROVALS, "halo-evt-2", {"id": 2})
    daemon.tick(T0 + timedelta(seconds=20))  # the event moves a read earlier...
    daemon.tick(T0 + timedelta(seconds=20 + POLL_S - 1))  # ...and the timer counts from it
    assert halo_reads(emulator) == 1
    daemon.tick(T0 + timedelta(seconds=20 + POLL_S))
    assert halo_reads(emulator) == 2
    (row,) = event_rows(engine)
    assert row.handled_by == f"tick {T0 + timedelta(seconds=20):%Y-%m-%dT%H:%M:%SZ}"  # no approval: no run key


def test_a_handled_event_makes_no_read(emulator, halo, instance):
    engine = halo["warehouse"].engine
    events.store_event(engine, events.HALOPSA_APPROVALS, "halo-evt-3", {"date": DAY.isoformat()})
    daemon = ApprovalDaemon(instance, halo)
    daemon.tick(T0)  # reads (first read) and takes the event up
    emulator.reset_requests()
    assert not events.store_event(engine, events.HALOPSA_APPROVALS, "halo-evt-3", {"date": DAY.isoformat()})  # a redelivery

    result = daemon.tick(T0 + timedelta(seconds=5))

    assert halo_reads(emulator) == 0 and not result.run_requests
    assert events.pending(engine, events.HALOPSA_APPROVALS) == []


def test_events_never_make_more_reads_in_an_hour_than_the_poll_timer(emulator, halo, instance):
    engine = halo["warehouse"].engine
    daemon = ApprovalDaemon(instance, halo)
    emulator.reset_requests()
    for second in range(0, 3600, 5):  # an event before every tick of an hour: a storm
        with freeze_time(T0 + timedelta(seconds=second)):
            events.store_event(engine, events.HALOPSA_APPROVALS, f"storm-{second}", {"id": second})
        daemon.tick(T0 + timedelta(seconds=second))

    assert halo_reads(emulator) == 3600 // POLL_S
    assert len(events.pending(engine, events.HALOPSA_APPROVALS)) > 0  # the rest wait for the hour's reads to free up
