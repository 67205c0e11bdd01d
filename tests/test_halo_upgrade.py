"""Upgrading a warehouse and a Xero organisation filled before entry keys, when time entries, the
Xero ledger and the `[halo #<id>]` markers rested on Halo's numeric id: the first start of the
new code migrates the tables, recognises what is already in Xero, pushes nothing twice and
leaves nothing orphaned, whether the tenant goes on showing ids or (as real tenants do) not."""

import secrets
from datetime import date, timedelta

import dagster as dg
import pytest
import sqlalchemy as sa
from conftest import ANCHOR, xero_resources
from cryptography.fernet import Fernet
from dagster._core.test_utils import freeze_time
from helpers import AGENT, AUTUMN, DAY, YEAR, check_results as checks, halo_day, halo_entries, halo_keys, meta, xero_by_halo_id

from resources.warehouse import WarehouseResource, engine_for
from resources.tables import TABLES
from sync_assets.fiscal_years import FISCAL_YEARS
from sync_assets.halo import agent_mappings, halo_agents, halo_timesheets
from sync_assets.xero import time_entries, xero_reconciliation
from sync_assets.xero_plan import MARKER

xero_time_entries = time_entries()  # built as the code location builds it (its partitions are settings)

# The emulator's data has fixed dates: Dagster's clock agrees with them (conftest.NOW).
pytestmark = pytest.mark.usefixtures("frozen_clock")

FALL = (date(2026, 9, 1), date(2026, 11, 30))

# The three tables as the code before entry keys made them (resources/warehouse.py at b69fa8e).
OLD = sa.MetaData()
sa.Table(
    "halo_time_entries", OLD,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    *(sa.Column(c.name, c.type, nullable=c.nullable) for c in TABLES.tables["halo_time_entries"].columns
      if c.name not in ("entry_key", "halo_id", "ticket_key", "fingerprint",
                        "time_kind", "break_type", "break_type_name", "holiday_id", "charge_type_name", "raw")),
    sa.Index("ix_halo_time_entries_work_date", "work_date"),
)
sa.Table(
    "xero_ledger", OLD,
    sa.Column("halo_entry_id", sa.Integer, primary_key=True, autoincrement=False),
    *(sa.Column(c.name, c.type, nullable=c.nullable) for c in TABLES.tables["xero_ledger"].columns
      if c.name not in ("entry_key", "halo_entry_id", "ticket_key", "fingerprint", "marker")),
    sa.Index("ix_xero_ledger_work_date", "work_date"),
)
sa.Table(
    "xero_findings", OLD,
    sa.Column("kind", sa.String(32), primary_key=True),
    sa.Column("xero_time_entry_id", sa.String(64), primary_key=True),
    sa.Column("halo_entry_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("work_date", sa.Date),
    sa.Column("detail", sa.Text),
    sa.Column("found_at", sa.DateTime, nullable=False),
)


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(FISCAL_YEARS.name, [YEAR])
        yield instance


@pytest.fixture(params=["sqlite", "postgresql"])
def old_warehouse(request, tmp_path):
    """(url, schema) of an empty place for the old warehouse."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}", None
        return
    schema = f"upgrade_{secrets.token_hex(4)}"
    url = request.getfixturevalue("postgres_url")
    yield url, schema
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()


def plain_engine(url: str, schema: str | None) -> sa.Engine:
    """An engine that does not upgrade anything (engine_for would)."""
    if schema:
        engine = sa.create_engine(url, connect_args={"options": f"-csearch_path={schema}"})
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        return engine
    return sa.create_engine(url)


def as_before_entry_keys(new_url: str, old_url: str, schema: str | None) -> None:
    """Copy a warehouse made by the new code from the ideal API (keys `#<id>`) into the old
    tables: the state the code before entry keys left behind."""
    source, target = engine_for(new_url), plain_engine(old_url, schema)
    renamed = {"halo_time_entries": "id", "xero_ledger": "halo_entry_id"}
    with source.connect() as read, target.begin() as write:
        OLD.create_all(write)
        kept = [t for t in TABLES.sorted_tables if t.name not in (*OLD.tables, "halo_sync_ranges")]
        TABLES.create_all(write, tables=kept)
        for table in kept:
            rows = [dict(r) for r in read.execute(sa.select(table)).mappings()]
            if rows:
                write.execute(table.insert(), rows)
        for name, old_key in renamed.items():
            old = OLD.tables[name]
            rows = [{**{c.name: r[c.name] for c in old.columns if c.name in r}, old_key: int(r["entry_key"].lstrip("#"))}
                    for r in read.execute(sa.select(TABLES.tables[name])).mappings()]
            assert rows and all(r["entry_key"].startswith("#") for r in read.execute(sa.select(TABLES.tables[name])).mappings())
            write.execute(old.insert(), rows)
    target.dispose()


@pytest.mark.parametrize("tenant", ["shows ids", "hides ids"])
def test_an_old_warehouse_and_xero_are_adopted_without_pushing_anything_twice(
        ideal_emulator, sqlite_warehouse_url, old_warehouse, instance, tenant):
    emulator, (old_url, schema) = ideal_emulator, old_warehouse
    key = Fernet.generate_key().decode()
    # Before: the old scheme, made from a tenant that shows its ids.
    before = xero_resources(emulator, sqlite_warehouse_url, key)
    assert dg.materialize([halo_agents, agent_mappings], resources=before, instance=instance).success
    assert dg.materialize([halo_timesheets], resources=before, instance=instance, partition_key=YEAR,
                          run_config={"ops": {"halo_timesheets": {"config": AUTUMN}}}).success
    emulator.halo.approve(AGENT, DAY)
    emulator.halo.approve(AGENT + 1, DAY)
    push_config = {"ops": {"xero_time_entries": {"config": {"dry_run": False}}}}
    assert dg.materialize([xero_time_entries], resources=before, instance=instance, partition_key=DAY.isoformat(),
                          run_config=push_config).success
    in_xero = {e["timeEntryId"]: e["description"] for e in emulator.xero.entries().values()}
    assert in_xero and all(MARKER.search(text).group(1).startswith("#") for text in in_xero.values())
    as_before_entry_keys(sqlite_warehouse_url, old_url, schema)

    # The new code starts on the old warehouse; the tenant shows ids as before, or hides them.
    emulator.halo.ideal = tenant == "shows ids"
    emulator.reset_requests()
    after = {**xero_resources(emulator, old_url, key), "warehouse": WarehouseResource(url=old_url, db_schema=schema)}
    synced = dg.materialize([halo_timesheets], resources=after, instance=instance, partition_key=YEAR,
                            run_config={"ops": {"halo_timesheets": {"config": AUTUMN}}})
    pushed = dg.materialize([xero_time_entries], resources=after, instance=instance, partition_key=DAY.isoformat(),
                            run_config=push_config)
    forced = dg.materialize([xero_time_entries], resources=after, instance=instance, partition_key=DAY.isoformat(),
                            run_config={"ops": {"xero_time_entries": {"config": {"dry_run": False, "force": True}}}})

    assert synced.success and pushed.success and forced.success
    counts = meta(synced)
    assert (counts["entries_inserted"], counts["entries_deleted"]) == (0, 0)
    (said,) = [c for c in synced.get_asset_check_evaluations() if c.check_name == "halo_responses_as_expected"]
    assert said.passed == (tenant == "shows ids")  # a tenant hiding its ids: every entry took a new key, and we say so
    assert tenant == "shows ids" or f"{counts['rekeyed']} stored entries took a new key" in said.metadata["details"].value
    writes = [r for r in emulator.requests("xero", "/Time") if r.method in ("POST", "PUT", "DELETE")]
    assert writes == []  # nothing pushed twice, nothing re-marked
    assert {e["timeEntryId"]: e["description"] for e in emulator.xero.entries().values()} == in_xero
    keys = halo_keys(emulator)
    day = {**halo_day(emulator, AGENT), **halo_day(emulator, AGENT + 1)}
    engine = engine_for(old_url, schema)
    entries = TABLES.tables["halo_time_entries"]
    with engine.connect() as conn:
        ledger = {r.entry_key: r for r in conn.execute(sa.select(TABLES.tables["xero_ledger"]))}
        stored = {r.entry_key: (r.agent_id, r.work_date, r.minutes) for r in conn.execute(
            sa.select(entries).where(entries.c.deleted_at.is_(None), entries.c.work_date.between(*FALL)))}
    assert stored == halo_entries(emulator, *FALL)  # each entry once, under its key
    assert {"halo_time_entries_v1", "xero_ledger_v1"} <= set(sa.inspect(engine).get_table_names())  # kept for a look back
    assert set(ledger) == {keys[i] for i in day}  # every row under the entry's key now
    assert {r.status for r in ledger.values()} == {"pushed"}
    assert {r.xero_time_entry_id for r in ledger.values()} == set(in_xero)
    assert meta(forced, "xero_time_entries")["duplicates_deleted"] == 0

    # After the upgrade, an edit is one update of the entry already in Xero, under its old marker.
    edited = min(i for i, e in day.items() if e["ticket_id"] is not None)
    emulator.halo.edit_entry(edited, minutes=emulator.halo.minutes(edited) + 10)
    again = dg.materialize([xero_time_entries], resources=after, instance=instance, partition_key=DAY.isoformat(),
                           run_config=push_config)
    assert meta(again, "xero_time_entries")["updated"] == 1 and meta(again, "xero_time_entries")["created"] == 0
    markers = {f"#{i}": i for i in day}
    (only,) = xero_by_halo_id(emulator, markers)[edited]
    assert only["duration"] == emulator.halo.minutes(edited)
    with freeze_time(ANCHOR + timedelta(hours=1)):
        report = dg.materialize([xero_reconciliation], resources=after, instance=instance)
    assert checks(report)["xero_no_vanished_entries"] and checks(report)["xero_no_changes_by_hand"]
