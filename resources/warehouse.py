"""The warehouse: the engine, the schema's creation and upgrades, and the bulk writes every sync
shares; the same code on SQLite and PostgreSQL. The tables themselves are defined next to each
provider's client (`resources/<provider>_tables.py`, shared ones in `resources/tables.py`).

Tables are created, and upgraded by adding missing columns, the first time a process opens a
warehouse URL. Writes are upserts, one transaction per batch: a re-run never duplicates and a
failed run leaves no half-written batch. All timestamps are naive UTC.
"""

from __future__ import annotations

import functools
import io
import json
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import polars as pl
import psycopg2
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from resources.http import redact
from resources.records import WRITES, classify
from resources.settings import ConfigError
from resources.tables import LOADED_PROVIDERS, TABLES, UPGRADES, sync_rejects

# PostgreSQL advisory lock key held while the tables are created or upgraded (any fixed number).
SCHEMA_LOCK = 0x776F726B666F7263


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@functools.cache
def engine_for(url: str, db_schema: str | None = None) -> sa.Engine:
    """One engine per URL per process, with the tables created or upgraded on first use. On
    PostgreSQL, `db_schema` keeps the warehouse in its own schema (created if missing)."""
    if db_schema and not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", db_schema):
        raise ConfigError("WAREHOUSE_SCHEMA must be a lower-case SQL name (letters, digits, _)")
    try:
        dialect = sa.make_url(url).get_backend_name()
        options = {"connect_args": {"options": f"-csearch_path={db_schema}"}} if db_schema and dialect == "postgresql" else {}
        # hide_parameters: a failed statement's error (run logs, alerts) must not carry its rows:
        # wages, contacts' details, the encrypted Xero refresh token.
        engine = sa.create_engine(url, pool_pre_ping=True, hide_parameters=True, **options)
    except (sa.exc.ArgumentError, ImportError, ValueError) as error:
        raise ConfigError(f"WAREHOUSE_URL is not a usable SQLAlchemy URL ({type(error).__name__})") from None
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    try:
        if options:
            with engine.begin() as conn:
                conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{db_schema}"'))
        ensure_schema(engine)
    except sa.exc.OperationalError as error:
        raise ConfigError(
            f"WAREHOUSE_URL: cannot open the warehouse ({redact(str(error.orig), [url, engine.url.password or ''])})"
        ) from None
    return engine


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL and a busy timeout let a sync run write while the UI's next run or a test reads.
    # synchronous=NORMAL: a commit survives the process being killed, not a power cut, and skips
    # an fsync per commit (the Xero ledger commits twice per entry). A ledger row lost to a power
    # cut is harmless: the retried POST carries the same Idempotency-Key.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    _switch_to_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _switch_to_wal(cursor, attempts: int = 50) -> None:
    """WAL mode, which is kept in the file: set once per database. SQLite answers "database is
    locked" at once, without waiting out the busy timeout, when processes opening a new
    database together switch it at the same moment (runs launched together on a fresh install;
    about one open in twenty when three race), so the switch is tried again."""
    for attempt in range(1, attempts + 1):
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or attempt == attempts:
                raise
            time.sleep(0.02 * attempt)


def ensure_schema(engine: sa.Engine) -> None:
    """Create missing tables and add missing (nullable) columns to existing ones. Runs launched
    together on a new warehouse would race to create the same tables, so this holds the
    database's write lock (SQLite) or an advisory lock (PostgreSQL) from the first look to the
    commit: the second process waits, then finds the tables made. Each provider's tables and
    upgrades join `TABLES` and `UPGRADES` when the provider registry loads (providers/__init__.py)."""
    if not LOADED_PROVIDERS:
        raise RuntimeError("the warehouse was opened before the provider registry loaded (import providers first): "
                           "its tables would be missing")
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
        states = [upgrade.before(conn) for upgrade in UPGRADES]
        TABLES.create_all(conn)
        inspector = sa.inspect(conn)
        for table in TABLES.sorted_tables:
            present = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name not in present:
                    column_type = column.type.compile(dialect=engine.dialect)
                    conn.execute(sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {column_type}'))
        for upgrade, state in zip(UPGRADES, states):
            upgrade.after(conn, state)
        conn.commit()


def upsert(conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]], *, newer_or_equal: str | None = None) -> None:
    """Insert rows, or update them by primary key; with `newer_or_equal`, never overwrite a row
    whose value in that column is newer than the incoming one (so batches can land in any order)."""
    if not rows:
        return
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    conn.execute(_on_conflict_update(dialect_insert(table), table, list(rows[0]), newer_or_equal), list(rows))


def _on_conflict_update(insert, table: sa.Table, names: list[str], newer_or_equal: str | None):
    keys = [c.name for c in table.primary_key.columns]
    where = table.c[newer_or_equal] <= insert.excluded[newer_or_equal] if newer_or_equal else None
    return insert.on_conflict_do_update(
        index_elements=keys,
        set_={name: insert.excluded[name] for name in names if name not in keys},
        where=where,
    )


def bulk_upsert(conn: sa.Connection, table: sa.Table, frame: pl.DataFrame, *, newer_or_equal: str | None = None) -> None:
    """`upsert` for a frame of rows with unique keys. On PostgreSQL the rows are copied (COPY)
    into a temporary staging table and merged with one INSERT ... ON CONFLICT: row-by-row
    inserts cost several times more, in the database and in the client. Elsewhere: `upsert`."""
    if frame.is_empty():
        return
    if conn.dialect.name != "postgresql":
        upsert(conn, table, frame.to_dicts(), newer_or_equal=newer_or_equal)
        return
    stage = f"stage_{table.name}"
    # Created once per connection; emptied at each commit, and here in case of an earlier
    # merge in the same transaction.
    conn.execute(sa.text(f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table.name}) ON COMMIT DELETE ROWS; DELETE FROM {stage}"))
    buffer = io.BytesIO()
    # Polars writes null as an empty field and an empty string as "": PostgreSQL's CSV rules.
    frame.write_csv(buffer, include_header=False)
    buffer.seek(0)
    columns = ", ".join(f'"{name}"' for name in frame.columns)
    with conn.connection.cursor() as cursor:
        try:
            cursor.copy_expert(f"COPY {stage} ({columns}) FROM STDIN WITH (FORMAT csv)", buffer)
        except psycopg2.Error as error:
            # Only the primary message: the server's context quotes the failing row's value
            # (a contact's details), and the chained error would carry it into the run log.
            raise ValueError(f"COPY into {table.name}: {error.diag.message_primary}") from None
    insert = postgresql.insert(table).from_select(frame.columns, sa.select(*map(sa.column, frame.columns)).select_from(sa.table(stage)))
    conn.execute(_on_conflict_update(insert, table, frame.columns, newer_or_equal))


def lock_for_replace(conn: sa.Connection, *tables: sa.Table) -> None:
    """Hold off other writers of `tables` until this transaction ends: a replace (delete, then
    insert) racing another run's replace of the same rows fails on their key. Readers are not
    held. SQLite has one writer at a time anyway."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text(f"LOCK TABLE {', '.join(t.name for t in tables)} IN SHARE ROW EXCLUSIVE MODE"))


def replace_rows(conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]],
                 where: sa.ColumnElement[bool] | None = None) -> None:
    """Make `rows` the table's rows (those matching `where`, or all), other writers held off."""
    lock_for_replace(conn, table)
    conn.execute(table.delete().where(where) if where is not None else table.delete())
    if rows:
        conn.execute(table.insert(), list(rows))


def sync_scope(conn: sa.Connection, table: sa.Table, frame: pl.DataFrame, scope: sa.ColumnElement[bool]) -> tuple[Counter, set]:
    """Upsert `frame` (rows with the table's key and `content_hash`) into `table`: insert new rows,
    update changed ones, restore returning ones. Returns the counts of each, and the keys of live
    rows within `scope` that the frame does not have: the caller soft-deletes them with
    `soft_delete` once it knows they are gone for good (not just moved to another scope)."""
    key = key_of(table)
    frame = frame.unique(subset=key.name, keep="last", maintain_order=True)  # one merge may touch a key once
    query = sa.select(key, table.c.content_hash, table.c.deleted_at).where(scope | key.in_(frame[key.name].to_list()))
    stored = pl.DataFrame(
        conn.execute(query).all(),
        schema={key.name: frame.schema[key.name], "content_hash": pl.String, "deleted_at": pl.Datetime("us")},
        orient="row",
    )
    joined = classify(frame, stored, key.name)
    changed = joined.filter(pl.col("change").is_in(WRITES)).select(frame.columns)
    bulk_upsert(conn, table, changed.with_columns(synced_at=pl.lit(utcnow()), deleted_at=pl.lit(None, pl.Datetime("us"))))
    gone = set(joined.filter((pl.col("change") == "gone") & pl.col("deleted_at_stored").is_null())[key.name].to_list())
    return Counter(joined.filter(pl.col("change") != "gone")["change"].to_list()), gone


def key_of(table: sa.Table) -> sa.Column:
    """The one-column primary key of a synced table (`id`, or `entry_key` for time entries)."""
    (key,) = table.primary_key.columns
    return key


def soft_delete(conn: sa.Connection, table: sa.Table, ids: Collection) -> int:
    """Mark rows as deleted at the provider (`deleted_at`); returns how many."""
    ids, now, key = sorted(ids), utcnow(), key_of(table)
    for start in range(0, len(ids), 1000):
        conn.execute(table.update().where(key.in_(ids[start : start + 1000])).values(deleted_at=now))
    return len(ids)


def rekey(conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]], scope: sa.ColumnElement[bool]) -> list[tuple[str, str]]:
    """Rows of `table` (time entries or the Xero ledger) stored within `scope` under another key of
    the same entry take the key the rows now have: matched by ticket key, else by fingerprint. So
    an entry keyed `#<id>` yesterday and `t<ticket>.<action>` today (a tenant that stopped showing
    ids, or a warehouse from before entry keys) is one entry, not a deletion and a new one.
    Returns the (old, new) keys moved."""
    incoming = {r["entry_key"] for r in rows}
    stored = conn.execute(sa.select(table.c.entry_key, table.c.ticket_key, table.c.fingerprint)
                          .where(scope | table.c.entry_key.in_(sorted(incoming)))).all()
    present = {s.entry_key for s in stored}
    spare = [s for s in stored if s.entry_key not in incoming]
    by_ticket = {s.ticket_key: s.entry_key for s in spare if s.ticket_key}
    by_print = {s.fingerprint: s.entry_key for s in spare if s.fingerprint}
    moves, used = [], set()
    for row in rows:
        if row["entry_key"] in present:
            continue
        old = by_ticket.get(row.get("ticket_key")) if row.get("ticket_key") else None
        old = old if old and old not in used else by_print.get(row.get("fingerprint"))
        if old and old not in used:
            used.add(old)
            moves.append((old, row["entry_key"]))
    for old, new in moves:
        conn.execute(table.update().where(table.c.entry_key == old).values(entry_key=new))
    return moves


def record_rejects(conn: sa.Connection, provider: str, entity: str, rejects: Sequence[dict[str, Any]], run_id: str) -> None:
    """Keep records that failed validation, with the reason, so nothing is silently dropped."""
    if rejects:
        now = utcnow()
        conn.execute(
            sync_rejects.insert(),
            [
                {
                    "provider": provider,
                    "entity": entity,
                    "record_id": r["record_id"],
                    "reason": r["reason"],
                    "payload": json.dumps(r["payload"], default=str),
                    "run_id": run_id,
                    "rejected_at": now,
                }
                for r in rejects
            ],
        )


class WarehouseResource(dg.ConfigurableResource):
    """Where synced data lands: an SQLAlchemy URL (SQLite locally, PostgreSQL in production)."""

    url: str
    db_schema: str | None = None

    @property
    def engine(self) -> sa.Engine:
        return engine_for(self.url, self.db_schema)
