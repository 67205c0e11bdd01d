"""The contact-event sensor: when GoHighLevel tells of changed contacts (table `inbound_events`,
source `gohighlevel.contacts`), sync those contacts now instead of at the next hourly sync.

The cursor is the newest event id it has asked a run for: an event is asked for once, while its
run (which marks it handled) is queued or running. A tick reads the warehouse only; the run
costs one GoHighLevel request per contact (`GET /contacts/{id}`). The hourly sync and the
nightly reconciliation stay the safety net: an event lost or failed is still synced within the hour.
"""

import dagster as dg

from resources import events
from resources.organisations import asset_key
from resources.warehouse import WarehouseResource


def ghl_contact_events(context: dg.SensorEvaluationContext, warehouse: WarehouseResource) -> dg.SensorResult | dg.SkipReason:
    """Requests one run of `ghl_contacts_from_events` for the contact events not yet asked for."""
    after = int(context.cursor or 0)
    waiting = [e.id for e in events.pending(warehouse.engine, events.GHL_CONTACTS) if e.id > after]
    if not waiting:
        return dg.SkipReason(f"no contact events after event {after}")
    config = {"ops": {asset_key("ghl_contacts_from_events").to_python_identifier(): {"config": {"event_ids": waiting}}}}
    # The key is the newest event's id: a repeated tick (a lost cursor) asks nothing new.
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"contact-events-{waiting[-1]}", run_config=config)],
                           cursor=str(waiting[-1]))


def sensors() -> list[dg.SensorDefinition]:
    return [dg.sensor(job_name="ghl_contact_events_job", name="ghl_contact_events", minimum_interval_seconds=events.EVENT_CHECK_SECONDS,
                      default_status=dg.DefaultSensorStatus.RUNNING)(ghl_contact_events)]
