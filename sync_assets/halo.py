"""HaloPSA: agents, the agent mappings, and each fiscal year's timesheets and time entries.

`halo_timesheets` walks its fiscal year in bounded date chunks. For each chunk it fetches the
time entries and the per-day timesheets, and in one transaction makes the warehouse's live
rows for those days equal to what Halo returned: new and changed rows are upserted, rows
Halo no longer has are soft-deleted (`deleted_at`). A failed run leaves whole chunks.
"""

import time
from collections import Counter
from datetime import date, timedelta

import dagster as dg
import polars as pl
import sqlalchemy as sa

from resources.halo import MAX_INT, HaloPSAResource, agent_row, entry_row, timesheet_row
from resources.http import ProviderError
from resources.mappings import MappingFilesResource, read_agent_mappings
from resources.warehouse import (
    WarehouseResource,
    agent_mappings as mappings_table,
    halo_agents as agents_table,
    halo_time_entries as entries_table,
    halo_timesheets as timesheets_table,
    lock_for_replace,
    record_rejects,
    soft_delete,
    sync_scope,
    utcnow,
)
from sync_assets.fiscal_years import FISCAL_YEARS, FiscalCalendar, MalformedKey
from sync_assets.runs import trigger_of

GROUP = "halopsa"
LOGGED_REJECTS = 50
WRITES = ("inserted", "updated", "restored", "deleted")


class TimesheetsConfig(dg.Config):
    start: str | None = None
    """First day to sync (YYYY-MM-DD) within the fiscal year; default the year's first day."""
    end: str | None = None
    """Last day to sync (YYYY-MM-DD) within the fiscal year; default the year's last day."""


def date_chunks(first: date, last: date, days: int) -> list[tuple[date, date]]:
    """[first, last] cut into inclusive ranges of at most `days` days."""
    chunks = []
    while first <= last:
        end = min(first + timedelta(days=days - 1), last)
        chunks.append((first, end))
        first = end + timedelta(days=1)
    return chunks


def _provider_failure(error: ProviderError, stats: dict, done: str) -> dg.Failure:
    return dg.Failure(description=f"{error}. {done}", metadata=stats)


@dg.asset(group_name=GROUP, kinds={"halopsa", "sql"}, pool=GROUP, tags={"sync/cadence": "hourly"})
def halo_agents(context: dg.AssetExecutionContext, halopsa: HaloPSAResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """HaloPSA agents (table `halo_agents`), enabled and disabled, from `GET /api/Agent`.

    Agents Halo no longer lists are soft-deleted."""
    began = time.monotonic()
    with halopsa.client(log=context.log.info) as client:
        try:
            records = client.agents()
        except ProviderError as error:
            raise _provider_failure(error, client.stats(), "Nothing was written.") from None
        stats = client.stats()
    frame, rejects = _parse(records, agent_row, "agent")
    if rejects:
        raise dg.Failure(description="Halo returned agents that cannot be read: " + "; ".join(f"{r['record_id']}: {r['reason']}" for r in rejects))
    with warehouse.engine.begin() as conn:
        counts, gone = sync_scope(conn, agents_table, frame, sa.true())
        counts["deleted"] = soft_delete(conn, agents_table, gone)
    disabled = int(frame["is_disabled"].sum())
    context.log.info(f"{len(frame)} agents ({disabled} disabled): {dict(counts)}")
    return dg.MaterializeResult(
        metadata={
            "agents": len(frame),
            "disabled": disabled,
            "fetched": len(records),
            "written": sum(counts[k] for k in WRITES),
            **{k: counts[k] for k in WRITES},
            **stats,
            "duration_s": round(time.monotonic() - began, 3),
        }
    )


@dg.asset(deps=[halo_agents], group_name=GROUP, kinds={"csv", "sql"}, tags={"sync/cadence": "hourly"})
def agent_mappings(context: dg.AssetExecutionContext, mapping_files: MappingFilesResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Which Halo agent is which person (table `agent_mappings`), loaded from the mapping file
    (`AGENT_MAPPINGS_FILE`, default `config/agent_mappings.csv`).

    A file with any problem (a duplicate, a line that is not a mapping) is rejected whole with
    every problem named by line, and the last good mappings stay in place. Mappings to agents
    Halo does not know or has disabled are loaded and flagged by the check `mappings_match_agents`."""
    path = mapping_files.agent_mappings_path()
    mappings, problems = read_agent_mappings(path)
    if problems:
        raise dg.Failure(
            description=f"{path.name}: {len(problems)} problem(s), nothing loaded (the previous mappings stay):\n" + "\n".join(problems),
            allow_retries=False,
        )
    now = utcnow()
    with warehouse.engine.begin() as conn:
        lock_for_replace(conn, mappings_table)
        conn.execute(mappings_table.delete())
        if mappings:
            conn.execute(mappings_table.insert(), [{**m.__dict__, "loaded_at": now} for m in mappings])
        enabled = conn.execute(
            sa.select(agents_table.c.id).where(agents_table.c.deleted_at.is_(None), agents_table.c.is_disabled.is_(False))
        ).scalars().all()
    unmapped = sorted(set(enabled) - {m.halo_agent_id for m in mappings})
    context.log.info(f"{len(mappings)} mappings loaded from {path.name}; enabled agents without one: {unmapped or 'none'}")
    return dg.MaterializeResult(
        metadata={"mappings": len(mappings), "fetched": len(mappings), "written": len(mappings), "file": path.name,
                  "enabled_agents_unmapped": len(unmapped)}
    )


@dg.asset_check(asset=agent_mappings, name="mappings_match_agents", additional_deps=[halo_agents])
def mappings_match_agents(mapping_files: MappingFilesResource, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    """Every mapping names an agent Halo knows and has enabled."""
    with warehouse.engine.connect() as conn:
        agents = {r.id: r for r in conn.execute(sa.select(agents_table).where(agents_table.c.deleted_at.is_(None)))}
        mappings = conn.execute(sa.select(mappings_table).order_by(mappings_table.c.line)).all()
    problems = [
        f"line {m.line}: agent {m.halo_agent_id} " + ("is not in Halo" if m.halo_agent_id not in agents else f"({agents[m.halo_agent_id].name}) is disabled")
        for m in mappings
        if m.halo_agent_id not in agents or agents[m.halo_agent_id].is_disabled
    ]
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={"problems": len(problems), "details": "\n".join(problems) or "none", "file": mapping_files.agent_mappings_path().name},
    )


def _sync_range(first: date, last: date, key: str, config: TimesheetsConfig) -> tuple[date, date]:
    """The days this run syncs: the fiscal year, or the part of it the run config asks for."""
    try:
        start = date.fromisoformat(config.start) if config.start else first
        end = date.fromisoformat(config.end) if config.end else last
    except ValueError as error:
        raise dg.Failure(description=f"run config start/end must be dates as YYYY-MM-DD ({error})", allow_retries=False) from None
    if not first <= start <= end <= last:
        raise dg.Failure(
            description=f"run config range {start}..{end} is not within {key} ({first}..{last})", allow_retries=False
        )
    return start, end


def _parse(records: list, parse, kind: str, *args) -> tuple[pl.DataFrame, list[dict]]:
    """Records -> a frame of rows, plus the rejects with their reasons."""
    rows, rejects = [], []
    for position, record in enumerate(records):
        try:
            rows.append(parse(record, *args))
        except (ValueError, TypeError, KeyError) as error:
            record_id = record.get("id") if isinstance(record, dict) else None
            rejects.append({"record_id": str(record_id if record_id is not None else f"{kind} item {position}"),
                            "reason": str(error), "payload": record})
    return pl.DataFrame(rows, orient="row", infer_schema_length=None) if rows else pl.DataFrame(schema={"id": pl.Int64, "content_hash": pl.String}), rejects


def _kept_ids(rejects: list[dict]) -> list[int]:
    """Ids of rejected records: a bad new version must not soft-delete the good stored one."""
    ids = [int(r["record_id"]) for r in rejects if r["record_id"].isascii() and r["record_id"].isdigit()]
    return [i for i in ids if i <= MAX_INT]


@dg.asset(
    partitions_def=FISCAL_YEARS,
    deps=[agent_mappings],
    group_name=GROUP,
    kinds={"halopsa", "sql"},
    pool=GROUP,
    tags={"sync/cadence": "hourly"},
)
def halo_timesheets(
    context: dg.AssetExecutionContext, config: TimesheetsConfig, halopsa: HaloPSAResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """One fiscal year of HaloPSA time entries (table `halo_time_entries`, from `/api/TimesheetEvent`)
    and per-agent, per-day timesheets with their approval (table `halo_timesheets`, from `/api/Timesheet`).

    Reconciled within the year: entries deleted in Halo are soft-deleted here. Time is stored in
    whole minutes. Entries of agents without a mapping are kept and counted (check `no_unmapped_agents`)."""
    key = context.partition_key
    try:
        first, last = FiscalCalendar.from_settings().range_for(key)
    except MalformedKey as error:
        raise dg.Failure(description=str(error), allow_retries=False) from None
    start, end = _sync_range(first, last, key, config)
    began = time.monotonic()
    totals: Counter = Counter()
    gone: dict[sa.Table, set] = {entries_table: set(), timesheets_table: set()}
    done_through = None
    with halopsa.client(log=context.log.info) as client:
        try:
            agent_ids = sorted(int(a["id"]) for a in client.agents())
            chunks = date_chunks(start, end, halopsa.chunk_days)
            for number, (chunk_start, chunk_end) in enumerate(chunks, start=1):
                entries = client.time_entries(chunk_start, chunk_end, agent_ids)
                sheets = client.timesheets(chunk_start, chunk_end, agent_ids)
                counts = _write_chunk(context, warehouse, key, chunk_start, chunk_end, entries, sheets, totals, gone)
                done_through = chunk_end
                context.log.info(f"{key} chunk {number}/{len(chunks)} {chunk_start}..{chunk_end}: {counts}")
        except ProviderError as error:
            done = f"Days through {done_through} are synced" if done_through else "Nothing was written"
            raise _provider_failure(error, client.stats(), f"{done}, deletions not yet applied; re-run the partition to finish.") from None
        stats = client.stats()
    # Only now is a row missing from its days known to be deleted rather than moved to a later chunk.
    with warehouse.engine.begin() as conn:
        totals["entries_deleted"] = soft_delete(conn, entries_table, gone[entries_table])
        totals["days_deleted"] = soft_delete(conn, timesheets_table, gone[timesheets_table])
    totals["written"] += totals["entries_deleted"] + totals["days_deleted"]
    summary = _year_summary(warehouse, key, start, end)
    context.log.info(f"{key} {start}..{end}: {summary}, {stats['requests']} requests")
    return dg.MaterializeResult(
        metadata={
            "fiscal_year": key,
            "range": f"{start}..{end}",
            **summary,
            **{k: int(totals[k]) for k in ("entries_inserted", "entries_updated", "entries_restored", "entries_deleted",
                                           "days_inserted", "days_updated", "days_deleted", "rejected", "fetched", "written")},
            **stats,
            "duration_s": round(time.monotonic() - began, 3),
            "triggered_by": trigger_of(context),
        }
    )


def _write_chunk(context, warehouse: WarehouseResource, key: str, first: date, last: date,
                 entries: list, sheets: list, totals: Counter, gone: dict[sa.Table, set]) -> dict:
    """Upsert one chunk in one transaction; collects the ids its days no longer have into `gone`."""
    entry_frame, entry_rejects = _parse(entries, entry_row, "entry", key)
    sheet_frame, sheet_rejects = _parse(sheets, timesheet_row, "timesheet", key)

    def days(table: sa.Table, rejects: list[dict]) -> sa.ColumnElement[bool]:
        return table.c.work_date.between(first, last) & table.c.id.not_in(_kept_ids(rejects))

    with warehouse.engine.begin() as conn:
        entry_counts, entries_gone = sync_scope(conn, entries_table, entry_frame, days(entries_table, entry_rejects))
        sheet_counts, sheets_gone = sync_scope(conn, timesheets_table, sheet_frame, days(timesheets_table, sheet_rejects))
        record_rejects(conn, "halopsa", "time entry", entry_rejects, context.run.run_id)
        record_rejects(conn, "halopsa", "timesheet", sheet_rejects, context.run.run_id)
    for reject in entry_rejects + sheet_rejects:
        if totals["rejected"] < LOGGED_REJECTS:
            context.log.warning(f"skipped Halo record {reject['record_id']}: {reject['reason']}")
        totals["rejected"] += 1
    for table, frame, now_gone in ((entries_table, entry_frame, entries_gone), (timesheets_table, sheet_frame, sheets_gone)):
        gone[table] = (gone[table] | now_gone) - set(frame["id"].to_list())
    for name, counts in (("entries", entry_counts), ("days", sheet_counts)):
        totals.update({f"{name}_{k}": v for k, v in counts.items()})
        totals["written"] += sum(counts[k] for k in WRITES)
    totals["fetched"] += len(entries) + len(sheets)
    return {"entries": len(entry_frame), "days": len(sheet_frame), "rejected": len(entry_rejects) + len(sheet_rejects)}


def _year_summary(warehouse: WarehouseResource, key: str, first: date, last: date) -> dict[str, int]:
    """Counts over the live rows of the synced range, as the warehouse now holds them."""
    e, t, m = entries_table, timesheets_table, mappings_table
    live_entries = sa.and_(e.c.deleted_at.is_(None), e.c.work_date.between(first, last), e.c.fiscal_year == key)
    live_days = sa.and_(t.c.deleted_at.is_(None), t.c.work_date.between(first, last), t.c.fiscal_year == key)
    with warehouse.engine.connect() as conn:
        entry_count, agents = conn.execute(sa.select(sa.func.count(), sa.func.count(e.c.agent_id.distinct())).where(live_entries)).one()
        approved = conn.execute(sa.select(sa.func.count()).where(live_days, t.c.approved.is_(True))).scalar_one()
        days = conn.execute(sa.select(sa.func.count()).where(live_days)).scalar_one()
        unmapped = conn.execute(
            sa.select(sa.func.count(e.c.agent_id.distinct())).where(live_entries, e.c.agent_id.not_in(sa.select(m.c.halo_agent_id)))
        ).scalar_one()
    return {"entries": entry_count, "days": days, "agents": agents, "approved_days": approved,
            "unapproved_days": days - approved, "unmapped_agents": unmapped}


@dg.asset_check(asset=halo_timesheets, name="no_unmapped_agents", additional_deps=[agent_mappings])
def no_unmapped_agents(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    """Warns while time entries belong to agents with no line in the mapping file, listing them:
    their time cannot reach payroll or Xero until they are mapped."""
    e, a, m = entries_table, agents_table, mappings_table
    query = (
        sa.select(e.c.agent_id, a.c.name, sa.func.count().label("entries"))
        .select_from(e.outerjoin(a, a.c.id == e.c.agent_id))
        .where(e.c.deleted_at.is_(None), e.c.agent_id.not_in(sa.select(m.c.halo_agent_id)))
        .group_by(e.c.agent_id, a.c.name)
        .order_by(e.c.agent_id)
    )
    with warehouse.engine.connect() as conn:
        rows = conn.execute(query).all()
    return dg.AssetCheckResult(
        passed=not rows,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "unmapped_agents": len(rows),
            "entries": sum(r.entries for r in rows),
            "agents": "\n".join(f"agent {r.agent_id} ({r.name or 'unknown'}): {r.entries} entries" for r in rows) or "none",
        },
    )


assets = [halo_agents, agent_mappings, halo_timesheets]
asset_checks = [mappings_match_agents, no_unmapped_agents]
