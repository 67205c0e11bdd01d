"""The warehouse's tables: the one `sa.MetaData` they all belong to, what they share, and the
tables no single provider owns. Each provider's tables sit next to its client
(`resources/<provider>_tables.py`); `resources/warehouse.py` creates and upgrades them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

# Named TABLES, not `metadata`: to a Dagster reader `metadata` is a run's or an asset's.
TABLES = sa.MetaData()
ENTRY_KEY = sa.String(80)  # a Halo time entry's key (resources/halo.py `entry_row`), kept by Halo's and Xero's tables



@dataclass(frozen=True)
class Upgrade:
    """An upgrade of older warehouses, kept next to the tables it upgrades and run by
    `resources.warehouse.ensure_schema` in the order the registry loads them: `before(conn)` runs
    before missing tables are created (to rename a table whose key changed) and returns what
    `after(conn, state)` needs once they are."""

    name: str
    before: Callable[[sa.Connection], Any] = lambda conn: None
    after: Callable[[sa.Connection, Any], None] = lambda conn, state: None


UPGRADES: list[Upgrade] = []
# The providers whose tables have joined TABLES: set once by the registry (providers/__init__.py),
# so that opening a warehouse before it has loaded is an error, not a warehouse missing tables.
LOADED_PROVIDERS: list[str] = []

class RawJSON(sa.types.TypeDecorator):
    """A record exactly as the provider sent it: JSONB on PostgreSQL, JSON on SQLite. Written as
    the JSON text the parser encoded once (not encoded again), read back as Python values."""

    impl = sa.Text
    cache_ok = True

    def load_dialect_impl(self, dialect):
        return dialect.type_descriptor(postgresql.JSONB() if dialect.name == "postgresql" else sqlite.JSON())

    def bind_processor(self, dialect):
        return None  # the value is already JSON text

    def process_result_value(self, value, dialect):
        return value


def synced_columns(deleted: str | None = None) -> list[sa.Column]:
    """The columns every synced table ends with: the content's hash (what makes a change), when
    this version was written, and when the provider stopped having the row."""
    return [
        sa.Column("content_hash", sa.String(32), nullable=False),
        sa.Column("synced_at", sa.DateTime, nullable=False, comment="when this version was written"),
        sa.Column("deleted_at", sa.DateTime, comment=deleted or "set when the provider no longer has the row"),
    ]


POLARS_TYPES = {sa.String: pl.String, sa.Text: pl.String, sa.Integer: pl.Int64, sa.Boolean: pl.Boolean,
                sa.DateTime: pl.Datetime("us"), sa.Date: pl.Date, RawJSON: pl.String}


def frame_schema(table: sa.Table, *names: str) -> dict[str, pl.DataType]:
    """The polars schema of `table`'s columns (all, or those named, in that order), derived from
    the table so a column is written down once. Numeric columns stay exact as decimals."""
    columns = [table.c[name] for name in names] if names else list(table.columns)
    return {c.name: _polars_type(c.type) for c in columns}


def _polars_type(column_type: sa.types.TypeEngine) -> pl.DataType:
    if isinstance(column_type, sa.Numeric):
        return pl.Decimal(column_type.precision, column_type.scale)
    for sql_type, polars_type in POLARS_TYPES.items():
        if isinstance(column_type, sql_type):
            return polars_type
    raise TypeError(f"no polars type for {column_type!r}")


# `workforce-sync doctor`: each provider's latest outcome (the production push waits for a pass).
doctor_results = sa.Table(
    "doctor_results",
    TABLES,
    sa.Column("provider", sa.String(32), primary_key=True),
    sa.Column("passed", sa.Boolean, nullable=False, comment="no check failed"),
    sa.Column("checked_at", sa.DateTime, nullable=False),
    sa.Column("findings", sa.Text, nullable=False, comment="JSON list of {check, severity, seen, action}"),
)

sync_rejects = sa.Table(
    "sync_rejects",
    TABLES,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("entity", sa.String(64), nullable=False),
    sa.Column("record_id", sa.Text, comment="the record's id, or its position when it has none"),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("payload", sa.Text, comment="the record as received (JSON)"),
    sa.Column("run_id", sa.String(64)),
    sa.Column("rejected_at", sa.DateTime, nullable=False),
)

# The requests sent to a rate-limited provider account, by every process that talks to it (runs,
# sensor ticks, the doctor): the shared sliding log of `resources.http.SharedRateLimiter`.
# Wall-clock epoch seconds, since monotonic clocks are not shared between processes; rows older
# than the provider's window are pruned as requests are made.
provider_requests = sa.Table(
    "provider_requests",
    TABLES,
    sa.Column("account", sa.String(300), nullable=False, comment="provider and account, e.g. `halopsa <base url>`"),
    sa.Column("sent_at", sa.Float, nullable=False, comment="epoch seconds (time.time) the request was let through"),
    sa.Index("ix_provider_requests_account_sent_at", "account", "sent_at"),
)

# A hold on an account that every process honours (a 429 seen by one holds the others back).
provider_pauses = sa.Table(
    "provider_pauses",
    TABLES,
    sa.Column("account", sa.String(300), primary_key=True),
    sa.Column("paused_until", sa.Float, nullable=False, comment="epoch seconds before which no request is sent"),
)

# The host-application API's keys (api/keys.py): the SHA-256 of each key's secret, never the key.
api_keys = sa.Table(
    "api_keys",
    TABLES,
    sa.Column("id", sa.String(12), primary_key=True, comment="the key's public id (`wsk_<id>.<secret>`)"),
    sa.Column("name", sa.String(64), nullable=False, comment="the client application"),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("scopes", sa.String(100), nullable=False, comment="space-separated: read, trigger, events"),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("last_used_at", sa.DateTime),
    sa.Column("revoked_at", sa.DateTime),
)

# Events in from the providers (api/events.py: a Halo approval, a GoHighLevel contact change),
# stored before the API answers 2xx and taken up by the sensors that act on them. An event is a
# hint to look now, never the only copy of the data: polling stays the safety net.
inbound_events = sa.Table(
    "inbound_events",
    TABLES,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(32), nullable=False, comment="'halopsa.approvals' or 'gohighlevel.contacts'"),
    sa.Column("dedup_key", sa.String(200), nullable=False, comment="the provider's event id, or the SHA-256 of the body"),
    sa.Column("received_at", sa.DateTime, nullable=False),
    sa.Column("payload", RawJSON, nullable=False, comment="the event exactly as received"),
    sa.Column("handled_at", sa.DateTime, comment="when a sensor took it up"),
    sa.Column("handled_by", sa.String(200), comment="the run key or run id that acted on it"),
    sa.UniqueConstraint("source", "dedup_key", name="uq_inbound_events_source_dedup_key"),
    sa.Index("ix_inbound_events_source_handled_at", "source", "handled_at"),
)
