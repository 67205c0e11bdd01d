"""Employes: the nightly employee snapshot, each employee's employment history, and the
changes between one snapshot and the one before it.

Employes serves only the current state, so a snapshot can only be taken of today: running
today's partition again replaces today's snapshot, and past days are never rewritten. Each
step reads everything it needs first and writes in one transaction at the end, so a failure
half-way leaves the warehouse as it was and a re-run completes the day.
"""

import json
from collections import Counter
from collections.abc import Callable
from datetime import date
from typing import Any

import dagster as dg
import polars as pl
import sqlalchemy as sa

from resources.employes import TRACKED, EmployesClient, EmployesResource, employment_rows, kept_record, snapshot_row
from resources.employes_tables import (
    employes_contract_periods,
    employes_employee_changes as changes_table,
    employes_employee_history as history_table,
    employes_employee_snapshots as snapshots_table,
    employes_employments,
    employes_hours_periods,
    employes_salary_periods,
)
from resources.organisations import asset_key, key_prefix, scoped
from resources.records import Books, content_hash, parse_each, reject
from resources.settings import history_start, setting
from resources.tables import frame_schema
from resources.warehouse import WarehouseResource, lock_for_replace, replace_rows, utcnow
from sync_assets.runs import today
from sync_assets.step import SyncStep, nothing_lost, sync_step, table_metadata

GROUP = "employes"
KINDS = {"employes", "sql"}
TAGS = {"sync/cadence": "daily"}
PERIOD_TABLES = {"employments": employes_employments, "salary": employes_salary_periods,
                 "hours": employes_hours_periods, "contracts": employes_contract_periods}
# The polars shape of snapshot rows, from the table. Amounts take the table's own precision
# (Numeric(6, 2) hours, Numeric(4, 2) days, Numeric(12, 2) wages), not one Decimal(12, 2) for
# all as before: changes compare amounts as text, which only the scale (2 everywhere) shapes,
# so "28.50" reads the same; the emulator's and any real hours fit; and a record whose amount
# the column cannot hold is rejected by `snapshot_row`, so no stored snapshot overflows it.
SNAPSHOT_SCHEMA = frame_schema(snapshots_table, "snapshot_date", "employee_id", *TRACKED, "content_hash")
# Why a record read was not stored (the books' reasons).
LEFT = "left between the list and their own read"
READ_TWICE = "the same record read twice in this run"
# A key that two different records of one run landed on: neither is stored as the other's
# newer version (Employes gives none), the first stands and the run fails (a collision).
COLLIDED = "another record of this run holds its key"


def _todays_partition(step: SyncStep) -> date:
    day = date.fromisoformat(step.context.partition_key)
    if day != today():
        raise step.refuse(
            f"{day} is not today ({today()}, {setting('SYNC_TIMEZONE')}): Employes only tells the current state, so "
            "only today's snapshot can be taken; past snapshots stay as they were. Run today's partition."
        )
    return day


def _read_snapshot(conn: sa.Connection, day: date | None) -> pl.DataFrame:
    query = sa.select(*(snapshots_table.c[c] for c in SNAPSHOT_SCHEMA))
    if day is not None:
        query = query.where(snapshots_table.c.snapshot_date == day)
    return pl.DataFrame(conn.execute(query).all(), schema=SNAPSHOT_SCHEMA, orient="row")


def take_snapshot(context: dg.AssetExecutionContext, employes: EmployesResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Today's snapshot: the asset `employes_employee_snapshots`."""
    with sync_step(context, GROUP) as step:
        day = _todays_partition(step)
        with step.open(employes) as client, step.phase("Nothing was written; earlier snapshots are unchanged."):
            pages, records_read = _read_employees(step, client)
        rows, rejects = _snapshot_rows(pages, day)
        rows = _one_each(step.books, rows, lambda row: f"employee {row['employee_id']}", lambda row: row["raw"])
        with warehouse.engine.begin() as conn:
            written = _write_snapshot(conn, day, rows, [r["record_id"] for r in rejects])
            step.keep_rejects(conn, "employee", rejects)
        # The rows carried forward for rejected records are not counted again: the books hold those records as rejected.
        step.books.store({"inserted": len(rows)})
    statuses = Counter(row["status"] for row in rows)
    context.log.info(f"snapshot {day}: {len(rows)} employees {dict(statuses)}, {len(rejects)} rejected, "
                     f"{step.stats()['requests']} requests")
    return step.result(
        {"fetched": len(rows) + len(rejects), "written": written},
        employees=written,
        **{f"status_{status.replace(' ', '_')}": n for status, n in statuses.items() if status},
        employee_records_read=records_read,
    )


def _read_employees(step: SyncStep, client: EmployesClient) -> tuple[list[list[dict]], int]:
    """Each listed employee's own record, page by page, without the personal fields never stored,
    and how many records were read (a listed entry without an id is taken as it is). The books
    receive every listed employee; one removed before their own read is excluded."""
    pages, records_read = [], 0
    for number, page in enumerate(client.employees(), start=1):
        step.books.receive(len(page))
        records = []
        for listed in page:
            listed_id = listed.get("id") if isinstance(listed, dict) else None
            record = client.employee(str(listed_id)) if listed_id else listed
            records_read += bool(listed_id)
            if record is None:  # removed since the list was read
                step.books.exclude(LEFT)
            else:
                records.append(kept_record(record))
        pages.append(records)
        step.context.log.info(f"page {number}: {sum(map(len, pages))} employee records so far")
    return pages, records_read


def _snapshot_rows(pages: list[list[dict]], day: date) -> tuple[list[dict], list[dict]]:
    """The day's rows (each with its record as sent, `raw`) and the records rejected."""
    rows, rejects = [], []
    for number, records in enumerate(pages, start=1):
        page_rows, page_rejects = parse_each(records, _snapshot_row, f"page {number} ", day)
        rows += page_rows
        rejects += page_rejects
    return rows, rejects


def _snapshot_row(record: dict, day: date) -> dict:
    # `record` is already the kept record: snapshot_row reads none of the personal fields.
    return {**snapshot_row(record, day), "raw": json.dumps(record, default=str)}


def _one_each(books: Books, rows: list[dict], key: Callable[[dict], str], content: Callable[[dict], Any]) -> list[dict]:
    """The first row for each key. A later row with the same content is the same record read
    twice (excluded); one with other content collides with it (excluded, and the run fails):
    inserting both would fail on the table's key, with the rows' values in the error."""
    kept: dict[str, dict] = {}
    for row in rows:
        row_key = key(row)
        claimed = books.claim(row_key, content_hash(content(row)))
        if row_key not in kept:
            kept[row_key] = row
        else:
            books.exclude(READ_TWICE if claimed else COLLIDED)
    return list(kept.values())


def _write_snapshot(conn: sa.Connection, day: date, rows: list[dict], rejected_ids: list[str]) -> int:
    """Replace the day's snapshot with `rows`, and the previous day's rows of the rejected
    employees; returns the rows the day holds."""
    fetched_at = utcnow()
    replace_rows(conn, snapshots_table, [{**row, "fetched_at": fetched_at} for row in rows], snapshots_table.c.snapshot_date == day)
    return len(rows) + _carry_forward(conn, day, rejected_ids)


def _carry_forward(conn: sa.Connection, day: date, employee_ids: list[str]) -> int:
    """Copy the latest earlier snapshot rows of these employees to `day`; returns how many."""
    t = snapshots_table
    latest = sa.select(sa.func.max(t.c.snapshot_date)).where(t.c.snapshot_date < day).scalar_subquery()
    rows = conn.execute(sa.select(t).where(t.c.snapshot_date == latest, t.c.employee_id.in_(employee_ids))).mappings().all()
    if rows:
        # `raw` reads back as values and is written as the JSON text (RawJSON): encode it again.
        conn.execute(t.insert(), [{**row, "raw": json.dumps(row["raw"]), "snapshot_date": day, "fetched_at": utcnow()} for row in rows])
    return len(rows)


def sync_employments(context: dg.AssetExecutionContext, employes: EmployesResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Today's employment history: the asset `employes_employment_history`."""
    with sync_step(context, GROUP) as step:
        day = _todays_partition(step)
        with warehouse.engine.connect() as conn:
            t = snapshots_table
            employee_ids = conn.execute(sa.select(t.c.employee_id).where(t.c.snapshot_date == day).order_by(t.c.employee_id)).scalars().all()
        with step.open(employes) as client:
            fetched, done, rejects = _read_employments(step, client, employee_ids)
        fetched = {kind: _one_each(step.books, rows, _period_key(kind), _period_content) for kind, rows in fetched.items()}
        with warehouse.engine.begin() as conn:
            _write_employments(conn, day, fetched, done)
            step.keep_rejects(conn, "employment history", rejects)
        step.books.store({"inserted": sum(map(len, fetched.values()))})
    counts = {f"{kind}_rows": len(rows) for kind, rows in fetched.items()}
    context.log.info(f"history {day}: {len(done)} employees, {counts}, {step.stats()['requests']} requests")
    return step.result({"fetched": len(employee_ids), "written": sum(counts.values())}, employees=len(done), **counts)


def _read_employments(step: SyncStep, client: EmployesClient, employee_ids: list[str]) -> tuple[dict[str, list[dict]], list[str], list[dict]]:
    """Each employee's periods by kind, the employees read, and those whose answer was rejected.
    The books receive each row an answer gives (an employment, a salary, hours or contract
    period), and an answer that cannot be read as one record: it is rejected whole."""
    fetched: dict[str, list[dict]] = {kind: [] for kind in PERIOD_TABLES}
    done, rejects = [], []
    for number, employee_id in enumerate(employee_ids, start=1):
        with step.phase(lambda: f"Stopped after {len(done)} of {len(employee_ids)} employees; nothing was written, "
                                "the previous history is unchanged. Re-run today's partition to complete the day."):
            items = client.employments(employee_id)
        try:
            rows = employment_rows(employee_id, items)
        except ValueError as error:
            step.books.receive(1)
            rejects.append(reject(items, str(error), employee_id))
            continue
        step.books.receive(sum(map(len, rows.values())))
        for kind, kind_rows in rows.items():
            fetched[kind] += kind_rows
        done.append(employee_id)
        if number % 50 == 0:
            step.context.log.info(f"employments of {number}/{len(employee_ids)} employees fetched")
    return fetched, done, rejects


def _period_key(kind: str) -> Callable[[dict], str]:
    """A row's key in its table, named with the kind: the employment's id, and for a period its
    start too (periods have no id of their own, so two periods of one employment starting on one
    day land on one key)."""
    if kind == "employments":
        return lambda row: f"employment {row['employment_id']}"
    return lambda row: f"{kind} period of employment {row['employment_id']} from {row['start_date']}"


def _period_content(row: dict) -> str:
    return json.dumps(row, sort_keys=True, default=str)


def _write_employments(conn: sa.Connection, day: date, fetched: dict[str, list[dict]], done: list[str]) -> None:
    """Replace the periods of the employees read with those fetched."""
    lock_for_replace(conn, *PERIOD_TABLES.values())
    for kind, table in PERIOD_TABLES.items():
        for start in range(0, len(done), 500):  # bound the IN list: SQLite limits a statement's parameters
            conn.execute(table.delete().where(table.c.employee_id.in_(done[start : start + 500])))
        if fetched[kind]:
            conn.execute(table.insert(), [{**row, "snapshot_date": day} for row in fetched[kind]])


def detect_changes(previous: pl.DataFrame, current: pl.DataFrame) -> pl.DataFrame:
    """Field-level differences between two snapshots, matched by employee id (so renames are
    changes, not a leaver plus a hire). Hires and removals are rows of the field `employee`."""
    as_text = [pl.col(f).cast(pl.String) for f in TRACKED]
    old = previous.select("employee_id", *as_text)
    new = current.select("employee_id", *as_text)
    joined = old.join(new, on="employee_id", how="full", coalesce=True, suffix="_new")
    present_before = pl.col("employee_id").is_in(old["employee_id"].implode())
    present_now = pl.col("employee_id").is_in(new["employee_id"].implode())
    number = pl.coalesce("employee_number_new", "employee_number")
    hired = joined.filter(~present_before).select(
        "employee_id", number.alias("employee_number"), field=pl.lit("employee"),
        old_value=pl.lit(None, pl.String), new_value=pl.lit("hired"),
    )
    removed = joined.filter(~present_now).select(
        "employee_id", number.alias("employee_number"), field=pl.lit("employee"),
        old_value=pl.lit("present"), new_value=pl.lit("removed"),
    )
    both = joined.filter(present_before & present_now)
    fields = [
        both.filter(pl.col(f).ne_missing(pl.col(f"{f}_new"))).select(
            "employee_id", number.alias("employee_number"), field=pl.lit(f),
            old_value=pl.col(f), new_value=pl.col(f"{f}_new"),
        )
        for f in TRACKED
    ]
    return pl.concat([hired, removed, *fields]).sort("employee_id", "field")


def build_history(snapshots: pl.DataFrame) -> pl.DataFrame:
    """Type-2 history from every snapshot: one row per employee per run of unchanged values,
    valid from the first snapshot with them until (exclusive) the first snapshot without them."""
    dates = snapshots.select(pl.col("snapshot_date").unique().sort())
    following = dates.with_columns(valid_to=pl.col("snapshot_date").shift(-1))
    ordered = snapshots.sort("employee_id", "snapshot_date").join(
        dates.with_columns(previous_date=pl.col("snapshot_date").shift(1)), on="snapshot_date"
    )
    changed = pl.col("content_hash") != pl.col("content_hash").shift(1).over("employee_id")
    was_absent = pl.col("snapshot_date").shift(1).over("employee_id").ne_missing(pl.col("previous_date"))
    versions = ordered.with_columns(version=(changed.fill_null(True) | was_absent).cum_sum().over("employee_id"))
    return (
        versions.group_by("employee_id", "version")
        .agg(pl.col("snapshot_date").min().alias("valid_from"), pl.col("snapshot_date").max().alias("last_seen"),
             *(pl.col(f).first() for f in TRACKED))
        .join(following.rename({"snapshot_date": "last_seen"}), on="last_seen", how="left")
        .select("employee_id", "valid_from", "valid_to", *TRACKED)
        .sort("employee_id", "valid_from")
    )


def detect_day_changes(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """The partition's changes and the rebuilt history: the asset `employes_employee_changes`."""
    day = date.fromisoformat(context.partition_key)
    with sync_step(context, GROUP) as step:
        with warehouse.engine.connect() as conn:
            current = _read_snapshot(conn, day)
            previous_day = conn.execute(
                sa.select(sa.func.max(snapshots_table.c.snapshot_date)).where(snapshots_table.c.snapshot_date < day)
            ).scalar_one()
            previous = _read_snapshot(conn, previous_day) if previous_day else current
            snapshots = _read_snapshot(conn, None)
            history = build_history(snapshots)
        if current.is_empty():
            raise step.refuse(f"there is no snapshot of {day}; materialize employes_employee_snapshots for it first")
        changes = detect_changes(previous, current)
        _account_history(step.books, snapshots, history)
        with warehouse.engine.begin() as conn:
            _write_changes(conn, day, previous_day, changes, history)
    summary = _summary(current, changes)
    context.log.info(f"changes {previous_day or '(first snapshot)'} -> {day}: {summary}")
    return step.result(
        {"written": len(changes) + len(history)},
        **summary,
        previous_snapshot=str(previous_day) if previous_day else "none (first snapshot)",
        history_rows=len(history),
    )


def _account_history(books: Books, snapshots: pl.DataFrame, history: pl.DataFrame) -> None:
    """Receive every snapshot row, and store those one history version answers for; a row two
    versions claim is a collision (the history would give two answers for that day)."""
    books.receive(snapshots.height)
    text = lambda name, alias=None: pl.col(name).cast(pl.String).alias(alias or name)  # noqa: E731
    versions = history.select("employee_id", "valid_from", "valid_to", *(text(f, f"{f}_version") for f in TRACKED))
    answered = snapshots.select("employee_id", "snapshot_date", *map(text, TRACKED)).join(versions, on="employee_id").filter(
        pl.col("valid_from") <= pl.col("snapshot_date"),
        pl.col("valid_to").is_null() | (pl.col("snapshot_date") < pl.col("valid_to")),
        *(pl.col(f).eq_missing(pl.col(f"{f}_version")) for f in TRACKED),
    )
    rows = answered.select("employee_id", "snapshot_date")
    books.store({"inserted": rows.n_unique()})
    for row in answered.filter(rows.is_duplicated()).iter_rows(named=True):
        books.claim(f"history of employee {row['employee_id']} on {row['snapshot_date']}", str(row["valid_from"]))


def _write_changes(conn: sa.Connection, day: date, previous_day: date | None, changes: pl.DataFrame, history: pl.DataFrame) -> None:
    """Replace the day's changes, and the whole history (rebuilt from every snapshot)."""
    replace_rows(conn, changes_table, changes.with_columns(
        snapshot_date=pl.lit(day), previous_snapshot_date=pl.lit(previous_day, pl.Date), detected_at=pl.lit(utcnow())
    ).to_dicts(), changes_table.c.snapshot_date == day)
    replace_rows(conn, history_table, history.to_dicts())


def _summary(current: pl.DataFrame, changes: pl.DataFrame) -> dict[str, int]:
    """Employees, hires, leavers (removed, or now out of service), employees changed, changes."""
    employee_rows = changes.filter(pl.col("field") == "employee")
    status_left = changes.filter((pl.col("field") == "status") & (pl.col("new_value") == "out of service"))
    return {
        "employees": len(current),
        "hired": int((employee_rows["new_value"] == "hired").sum()),
        "left": int((employee_rows["new_value"] == "removed").sum()) + len(status_left),
        "changed": changes.filter(pl.col("field") != "employee")["employee_id"].n_unique(),
        "changes": len(changes),
    }


def daily() -> dg.DailyPartitionsDefinition:
    """The days in SYNC_TIMEZONE, read when the code location is built (never at import).
    end_offset=1: today's partition exists from midnight, so the nightly run can snapshot it. From
    the day the history starts (`history_start`: SYNC_HISTORY_START, else the installation's)."""
    return dg.DailyPartitionsDefinition(start_date=history_start().strftime("%Y-%m-%d"), end_offset=1, timezone=setting("SYNC_TIMEZONE"))


def assets() -> list[dg.AssetsDefinition]:
    """The three assets, built when the code location is: their partitions read SYNC_TIMEZONE."""
    days = daily()

    @dg.asset(key_prefix=key_prefix(), partitions_def=days, group_name=GROUP, kinds=KINDS, pool=scoped(GROUP), tags=TAGS, metadata=table_metadata(snapshots_table),
              check_specs=[nothing_lost("employes_employee_snapshots")])
    def employes_employee_snapshots(
        context: dg.AssetExecutionContext, employes: EmployesResource, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        """Every employee of the company as of the partition's day (table `employes_employee_snapshots`).

        Lists the employees for their ids, then reads each one's own record (`GET /employees/{id}`),
        as the system this replaces did, within Employes' 5 requests a second. Keeps names, employee
        number, status, department, role, employment dates, hours and wages, and the record as sent
        (`raw`) without IBAN, birth date, address, phone, e-mail, gender or citizen number.
        Re-running today replaces today's snapshot. An employee record that cannot be read keeps its
        previous day's row (and is logged and kept in `sync_rejects`), so it is never reported as
        having left; one removed between the list and its read is left out."""
        return take_snapshot(context, employes, warehouse)

    @dg.asset(key_prefix=key_prefix(), partitions_def=days, deps=[employes_employee_snapshots], group_name=GROUP, kinds=KINDS, pool=scoped(GROUP), tags=TAGS,
              metadata=table_metadata(employes_employments), check_specs=[nothing_lost("employes_employment_history")])
    def employes_employment_history(
        context: dg.AssetExecutionContext, employes: EmployesResource, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        """Each employee's employments, one row per period: `employes_employments`,
        `employes_salary_periods`, `employes_hours_periods`, `employes_contract_periods`
        (Employes' `0001-01-01` is stored as no date). Fetched for everyone in today's snapshot and
        written in one transaction at the end: a failure half-way changes nothing."""
        return sync_employments(context, employes, warehouse)

    @dg.asset(key_prefix=key_prefix(), partitions_def=days, deps=[employes_employment_history], group_name=GROUP, kinds={"polars", "sql"}, tags=TAGS,
              metadata=table_metadata(changes_table), check_specs=[nothing_lost("employes_employee_changes")])
    def employes_employee_changes(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        """What changed between the partition's snapshot and the one before it (table
        `employes_employee_changes`: employee, field, old value, new value), and the per-employee
        history rebuilt from all snapshots (table `employes_employee_history`, valid_from/valid_to),
        so "what were this person's hours on date X" is one query.

        Its books receive the snapshot rows read (every day's: the history is rebuilt from all of
        them, the two compared among them), and count as stored each row the history answers for:
        one version of its employee valid on its day, with its values."""
        return detect_day_changes(context, warehouse)

    return [employes_employee_snapshots, employes_employment_history, employes_employee_changes]


# Run by the schedule `employes_nightly` (schedules/employes.py): today's partition of all three. By
# key: the job takes the assets' partitions when the code location resolves it.
employes_nightly_job = dg.define_asset_job(
    "employes_nightly_job", selection=[asset_key(name) for name in ("employes_employee_snapshots", "employes_employment_history", "employes_employee_changes")]
)
jobs = [employes_nightly_job]
