"""Provider events stored before the API answers (table `inbound_events`), read by the sensors
that act on them. Shared by api/events.py (which writes) and the sensors (which read and mark);
no FastAPI here, so a sensor's process never loads the web stack.

    store_event(engine, source, dedup_key, payload) -> bool   True if new, committed on return
    pending(engine, source, limit=500)                        unhandled rows, oldest first
    mark_handled(engine, ids, by)                             taken up by a run (run key or run id)

A row's `payload` is the event exactly as the provider sent it (the request's body, not a
re-encoding of it), so a consumer can tell what the provider said from what we made of it. A
`(source, dedup_key)` pair is unique: an event delivered twice, or by two requests at once, is one
row (INSERT ... ON CONFLICT DO NOTHING, on SQLite and PostgreSQL alike).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from resources.tables import inbound_events

HALO_APPROVALS = "halopsa.approvals"
GHL_CONTACTS = "gohighlevel.contacts"
SOURCES = (HALO_APPROVALS, GHL_CONTACTS)
MAX_DEDUP_KEY = 200  # the column's length; a longer provider id is kept by its SHA-256


def now_utc() -> datetime:
    """Dagster's clock (frozen in tests), as the naive UTC the warehouse's DateTime columns hold."""
    from dagster._time import get_current_datetime

    return get_current_datetime().astimezone(UTC).replace(tzinfo=None)


def _insert(engine: sa.Engine):
    return (postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert)(inbound_events)


def store_raw_event(engine: sa.Engine, source: str, dedup_key: str, payload_json: str) -> int | None:
    """Store `payload_json` (JSON text, kept as is) under `(source, dedup_key)`: the new row's id,
    or None when that pair is stored already. Committed before it returns."""
    if source not in SOURCES:
        raise ValueError(f"unknown event source {source!r}: one of {', '.join(SOURCES)}")
    if not dedup_key or len(dedup_key) > MAX_DEDUP_KEY:
        raise ValueError(f"a dedup key has 1 to {MAX_DEDUP_KEY} characters")
    statement = (_insert(engine).values(source=source, dedup_key=dedup_key, received_at=now_utc(), payload=payload_json)
                 .on_conflict_do_nothing(index_elements=["source", "dedup_key"]).returning(inbound_events.c.id))
    with engine.begin() as conn:
        return conn.execute(statement).scalar_one_or_none()


def store_event(engine: sa.Engine, source: str, dedup_key: str, payload: dict) -> bool:
    """Store `payload` under `(source, dedup_key)`; True if it was new. Committed before it returns."""
    return store_raw_event(engine, source, dedup_key, json.dumps(payload)) is not None


def pending(engine: sa.Engine, source: str, limit: int = 500) -> list[sa.Row]:
    """The events of `source` no run has taken up yet, oldest first (by arrival, then id)."""
    query = (sa.select(inbound_events).where(inbound_events.c.source == source, inbound_events.c.handled_at.is_(None))
             .order_by(inbound_events.c.received_at, inbound_events.c.id).limit(limit))
    with engine.connect() as conn:
        return list(conn.execute(query))


def mark_handled(engine: sa.Engine, ids: Collection[int], by: str) -> None:
    """Mark events `ids` as taken up by `by` (a run key or run id). An event marked already keeps
    its first mark: the run that acted on it first is the one to look at."""
    ids = sorted(set(ids))
    if not ids:
        return
    with engine.begin() as conn:
        conn.execute(inbound_events.update().where(inbound_events.c.id.in_(ids), inbound_events.c.handled_at.is_(None))
                     .values(handled_at=now_utc(), handled_by=by[:200]))


# How often the sensors that take events up tick. The sensor daemon's loop evaluates sensors at
# most every 5 s (MIN_INTERVAL_LOOP_TIME in dagster/_daemon/sensor.py, dagster 1.13): no interval
# ticks faster. An interval of exactly 5 would skip every other loop whenever a tick lands a hair
# under 5 s after the last one, so the interval is below the loop's: a tick on every loop.
EVENT_CHECK_SECONDS = 2
