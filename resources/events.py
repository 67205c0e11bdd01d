"""Inbound provider events (table `inbound_events`): stored by the API before it answers, taken
up by the sensors that act on them (sensors/xero.py `xero_approvals`, sensors/ghl.py
`ghl_contact_events`). An event is a hint to look now; polling stays the safety net.

Minimal on purpose: the API helper's module of the same name is to be reconciled with this one
at the merge (the names and signatures below are the agreed ones).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from dagster._time import get_current_datetime  # Dagster's clock: frozen in tests

from resources.tables import inbound_events

HALOPSA_APPROVALS = "halopsa.approvals"
GOHIGHLEVEL_CONTACTS = "gohighlevel.contacts"

# How often the sensors that take events up tick. The sensor daemon's loop evaluates sensors at
# most every 5 s (MIN_INTERVAL_LOOP_TIME in dagster/_daemon/sensor.py, dagster 1.13): no interval
# ticks faster. An interval of exactly 5 would skip every other loop whenever a tick lands a hair
# under 5 s after the last one, so the interval is below the loop's: a tick on every loop.
EVENT_CHECK_SECONDS = 2


def _now():
    return get_current_datetime().replace(tzinfo=None)


def store_event(engine: sa.Engine, source: str, dedup_key: str, payload: Any) -> bool:
    """Store one event; False when this source already has one with `dedup_key` (a provider's
    retry of a delivery it did not see answered)."""
    row = {"source": source, "dedup_key": dedup_key, "received_at": _now(), "payload": json.dumps(payload, default=str)}
    try:
        with engine.begin() as conn:
            conn.execute(inbound_events.insert().values(**row))
    except sa.exc.IntegrityError:
        return False
    return True


def pending(engine: sa.Engine, source: str, limit: int = 500) -> list[sa.Row]:
    """The source's events no sensor has taken up yet, oldest first."""
    t = inbound_events
    query = sa.select(t).where(t.c.source == source, t.c.handled_at.is_(None)).order_by(t.c.id).limit(limit)
    with engine.connect() as conn:
        return list(conn.execute(query).all())


def mark_handled(engine: sa.Engine, ids: Iterable[int], by: str) -> None:
    """Note that `by` (a run key, a run id, or "tick <time>") took these events up; an event
    already handled keeps who handled it first."""
    ids = list(ids)
    if not ids:
        return
    t = inbound_events
    with engine.begin() as conn:
        conn.execute(t.update().where(t.c.id.in_(ids), t.c.handled_at.is_(None)).values(handled_at=_now(), handled_by=by[:200]))
