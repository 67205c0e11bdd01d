"""HaloPSA: agents, the agent mappings, and each fiscal year's timesheets and time entries.

`halo_timesheets` walks its fiscal year in bounded date chunks. For each chunk it fetches the
time entries and the per-day timesheets (two requests), and in one transaction makes the
warehouse's live rows for those days equal to what Halo returned: new and changed rows are
upserted, rows Halo no longer has are soft-deleted (`deleted_at`). A failed run leaves whole
chunks. Entries are keyed by their entry key (resources/halo.py); what contradicts the sync's
assumptions (repeated keys, time on a timesheet but no entries, far fewer entries than last
time, a change of identity, unreadable approvals) is reported by the check
`halo_responses_as_expected`, never swallowed.
"""

from collections import Counter
from datetime import date

import dagster as dg
import polars as pl
import sqlalchemy as sa

from resources.halo import TIME_KINDS, HaloClient, HaloPSAResource, KeyedEntries, agent_row, date_chunks, key_entries, timesheet_row
from resources.halo_tables import (
    agent_mappings as mappings_table,
    halo_agents as agents_table,
    halo_sync_ranges as ranges_table,
    halo_time_entries as entries_table,
    halo_timesheets as timesheets_table,
)
from resources.mappings import MappingFilesResource, read_agent_mappings
from resources.organisations import asset_key, key_prefix, scoped
from resources.records import WRITES, parse_each
from resources.tables import frame_schema
from resources.warehouse import WarehouseResource, key_of, rekey, replace_rows, soft_delete, sync_scope, upsert, utcnow
from sync_assets.fiscal_years import FISCAL_YEARS, FiscalCalendar, MalformedKey
from sync_assets.step import SyncStep, listed, nothing_lost, sync_step, table_metadata

GROUP = "halopsa"
KINDS = {"halopsa", "sql"}
FEWER_SHARE = 0.5  # a sync of a range that gets fewer than this share of the last sync's entries warns
LISTED = 20  # examples named per finding in the check's metadata
RESPONSES_CHECK = "halo_responses_as_expected"


class TimesheetsConfig(dg.Config):
    start: str | None = None
    """First day to sync (YYYY-MM-DD) within the fiscal year; default the year's first day."""
    end: str | None = None
    """Last day to sync (YYYY-MM-DD) within the fiscal year; default the year's last day."""


def _frame(rows: list[dict], table: sa.Table) -> pl.DataFrame:
    """Parsed rows as a frame of the table's columns (a row may carry more, as an entry's times as
    sent); with no rows, the table's key and `content_hash` (what `sync_scope` reads)."""
    if rows:
        names = [c.name for c in table.columns if c.name in rows[0]]
        return pl.DataFrame([{n: r[n] for n in names} for r in rows], orient="row", infer_schema_length=None,
                            schema_overrides={n: t for n, t in frame_schema(table, *names).items() if n == "raw"})
    return pl.DataFrame(schema=frame_schema(table, key_of(table).name, "content_hash"))


@dg.asset(key_prefix=key_prefix(), group_name=GROUP, kinds=KINDS, pool=scoped(GROUP), tags={"sync/cadence": "hourly"}, metadata=table_metadata(agents_table),
          check_specs=[nothing_lost("halo_agents")])
def halo_agents(context: dg.AssetExecutionContext, halopsa: HaloPSAResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """HaloPSA agents (table `halo_agents`), enabled and disabled, from `GET /api/Agent`.

    Agents Halo no longer lists are soft-deleted."""
    with sync_step(context, GROUP) as step, step.open(halopsa, warehouse.engine) as client:
        records = client.agents()
    step.books.receive(len(records))
    rows, rejects = parse_each(records, agent_row, "agent ")
    if rejects:
        # Every mapping and every timesheet hangs off the agents: a partial list is not written.
        raise step.failure("Halo returned agents that cannot be read: " + "; ".join(f"{r['record_id']}: {r['reason']}" for r in rejects))
    with warehouse.engine.begin() as conn:
        counts, gone = sync_scope(conn, agents_table, _frame(rows, agents_table), sa.true())
        step.books.store(counts)
        counts["deleted"] = soft_delete(conn, agents_table, gone)
        stored = conn.execute(sa.select(sa.func.count()).select_from(agents_table)).scalar_one()
    disabled = sum(row["is_disabled"] for row in rows)
    counts.update(fetched=len(records), written=sum(counts[k] for k in (*WRITES, "deleted")))
    context.log.info(f"{len(rows)} agents ({disabled} disabled): {dict(counts)}")
    return step.result(counts, agents=len(rows), disabled=disabled, **{k: counts[k] for k in (*WRITES, "deleted")},
                       **{"dagster/row_count": stored})


@dg.asset(key_prefix=key_prefix(), deps=[halo_agents], group_name=GROUP, kinds={"csv", "sql"}, tags={"sync/cadence": "hourly"},
          metadata=table_metadata(mappings_table), check_specs=[nothing_lost("agent_mappings")])
def agent_mappings(context: dg.AssetExecutionContext, mapping_files: MappingFilesResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Which Halo agent is which person (table `agent_mappings`), loaded from the mapping file
    (`AGENT_MAPPINGS_FILE`, default `config/agent_mappings.csv`).

    A file with any problem (a duplicate, a line that is not a mapping) is rejected whole with
    every problem named by line, and the last good mappings stay in place. Mappings to agents
    Halo does not know or has disabled are loaded and flagged by the check `mappings_match_agents`."""
    with sync_step(context, GROUP) as step:
        path = mapping_files.agent_mappings_path()
        mappings, problems = read_agent_mappings(path)
        if problems:
            raise step.refuse(f"{path.name}: {len(problems)} problem(s), nothing loaded (the previous mappings stay):\n" + "\n".join(problems))
        now = utcnow()
        step.books.receive(len(mappings))
        with warehouse.engine.begin() as conn:
            replace_rows(conn, mappings_table, [{**m.__dict__, "loaded_at": now} for m in mappings])
            enabled = conn.execute(
                sa.select(agents_table.c.id).where(agents_table.c.deleted_at.is_(None), agents_table.c.is_disabled.is_(False))
            ).scalars().all()
        step.books.store({"inserted": len(mappings)})
    unmapped = sorted(set(enabled) - {m.halo_agent_id for m in mappings})
    context.log.info(f"{len(mappings)} mappings loaded from {path.name}; enabled agents without one: {unmapped or 'none'}")
    return step.result({"fetched": len(mappings), "written": len(mappings)}, mappings=len(mappings), file=path.name,
                       enabled_agents_unmapped=len(unmapped), **{"dagster/row_count": len(mappings)})


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
        metadata={"problems": len(problems), "details": listed(problems), "file": mapping_files.agent_mappings_path().name},
    )


def _sync_range(step: SyncStep, key: str, config: TimesheetsConfig) -> tuple[date, date]:
    """The days this run syncs: the fiscal year, or the part of it the run config asks for."""
    try:
        first, last = FiscalCalendar.from_settings().range_for(key)
    except MalformedKey as error:
        raise step.refuse(str(error)) from None
    try:
        start = date.fromisoformat(config.start) if config.start else first
        end = date.fromisoformat(config.end) if config.end else last
    except ValueError as error:
        raise step.refuse(f"run config start/end must be dates as YYYY-MM-DD ({error})") from None
    if not first <= start <= end <= last:
        raise step.refuse(f"run config range {start}..{end} is not within {key} ({first}..{last})")
    return start, end


def _kept(table: sa.Table, rejects: list[dict]) -> sa.ColumnElement[bool]:
    """Rows a rejected record may be a bad new version of, which must not be soft-deleted: by id
    (timesheets), or every entry of the rejected entry's agent and day; all of the chunk's
    entries when not even that can be read."""
    if table is timesheets_table:
        ids = [int(r["record_id"]) for r in rejects if r["record_id"].isascii() and r["record_id"].isdigit()]
        return table.c.id.in_([i for i in ids if i < 2**31])
    if any(r.get("agent_day") is None for r in rejects):
        return sa.true()
    return sa.or_(sa.false(), *[(table.c.agent_id == agent) & (table.c.work_date == day) for agent, day in
                                {r["agent_day"] for r in rejects}])


class Observed:
    """What a sync saw that contradicts its own assumptions, for the check and the metadata."""

    def __init__(self):
        self.kinds: Counter = Counter()  # entries keyed by id / ticket / fingerprint
        self.identities: set[str] = set()
        self.repeated: list[str] = []  # fingerprints shared by identical entries (kept apart as ~2, ~3)
        self.collisions: list[str] = []  # ids or ticket keys claimed by different records of one response
        self.repeated_sheets: list[str] = []  # timesheet ids repeated within one response
        self.missing_time: list[str] = []  # agent-days whose timesheet has time but no entries came
        self.approval_problems: list[str] = []
        self.rekeyed = 0
        self.outside_range = 0  # records Halo returned outside the dates or agents asked for

    def see(self, keyed: KeyedEntries, sheet_frame: pl.DataFrame) -> set[tuple[int, date]]:
        """Note what the chunk's answers show; returns the agent-days whose timesheet has time
        but no entries came (their stored entries must not be taken for deleted)."""
        self.kinds.update(keyed.kinds)
        if keyed.rows:
            self.identities.add(keyed.identity)
        self.repeated += keyed.repeated
        self.collisions += keyed.collisions
        missing = set()
        if not sheet_frame.is_empty():
            self.repeated_sheets += sorted(str(i) for i, n in Counter(sheet_frame["id"].to_list()).items() if n > 1)
            with_entries = {(r["agent_id"], r["work_date"]) for r in keyed.rows}
            for sheet in sheet_frame.iter_rows(named=True):
                if sheet["actual_minutes"] and (sheet["agent_id"], sheet["work_date"]) not in with_entries:
                    missing.add((sheet["agent_id"], sheet["work_date"]))
                    self.missing_time.append(f"agent {sheet['agent_id']} on {sheet['work_date']}: {sheet['actual_minutes']} min on the timesheet")
                if sheet["approval_problem"]:
                    self.approval_problems.append(f"agent {sheet['agent_id']} on {sheet['work_date']}: {sheet['approval_problem']}")
        return missing

    @property
    def identity(self) -> str:
        return "/".join(sorted(self.identities)) or "none"

    @property
    def received(self) -> int:
        return sum(self.kinds.values())

    def metadata(self) -> dict:
        return {
            "identity": self.identity,
            **{f"keyed_by_{k}": self.kinds[k] for k in ("id", "ticket", "fingerprint")},
            "rekeyed": self.rekeyed,
            "outside_range": self.outside_range,
            "identical_twins": len(self.repeated),
            "key_collisions": len(self.collisions),
            "days_with_time_but_no_entries": len(self.missing_time),
            "malformed_approvals": len(self.approval_problems),
        }


class YearSync:
    """One run of `halo_timesheets` over the days [start, end] of fiscal year `key`: what its
    chunks wrote (`totals`), the rows their days no longer have (`gone`, soft-deleted once every
    chunk is in: a row missing from its chunk may have moved to a later one), what they saw."""

    def __init__(self, step: SyncStep, warehouse: WarehouseResource, key: str, start: date, end: date):
        self.step, self.warehouse, self.key, self.start, self.end = step, warehouse, key, start, end
        self.totals: Counter = Counter()
        self.gone: dict[sa.Table, set] = {entries_table: set(), timesheets_table: set()}
        self.observed = Observed()
        self.synced_through: date | None = None  # the last day of the last chunk written

    def write_chunks(self, client: HaloClient) -> None:
        """Fetch and write the range chunk by chunk; a failure leaves the written chunks whole."""
        chunks = len(date_chunks(self.start, self.end, client.chunk_days))
        with self.step.phase(self.left_done):
            for number, (first, last, entries, sheets) in enumerate(client.period(self.start, self.end), start=1):
                counts = self.write_chunk(first, last, entries, sheets)
                self.synced_through = last
                self.step.context.log.info(f"{self.key} chunk {number}/{chunks} {first}..{last}: {counts}")
        self.observed.outside_range = client.outside_range
        self.step.books.receive(client.outside_range)
        self.step.books.exclude("outside the days or agents asked for", client.outside_range)

    def left_done(self) -> str:
        """What a provider's error leaves done: the chunks written before it are whole."""
        if self.synced_through is None:
            return "Nothing was written, deletions not yet applied; re-run the partition to finish."
        return f"Days through {self.synced_through} are synced, deletions not yet applied; re-run the partition to finish."

    def write_chunk(self, first: date, last: date, entries: list, sheets: list) -> dict:
        """Upsert one chunk in one transaction; collects the keys its days no longer have into `gone`."""
        books = self.step.books
        books.receive(len(entries) + len(sheets))
        keyed = key_entries(entries, self.key)
        books.exclude("sent twice, identical, in one response", keyed.sent_twice)
        books.collisions += [f"time entry {key}" for key in keyed.collisions]
        sheet_rows, sheet_rejects = parse_each(sheets, timesheet_row, "timesheet ", self.key)
        # Two different records on one key within this answer were held back (`key_entries`). A key
        # seen again in a later chunk is Halo's own identity (an id, a ticket action): the entry
        # moved days while the run read, and its newer version replaces the older one.
        entry_frame, sheet_frame = _frame(keyed.rows, entries_table), _frame(sheet_rows, timesheets_table)
        # Time on a timesheet but no entries: Halo's answer is wrong somewhere, so those entries stay.
        missing = [{"agent_day": day} for day in self.observed.see(keyed, sheet_frame)]

        def days(table: sa.Table, rejects: list[dict]) -> sa.ColumnElement[bool]:
            in_chunk = table.c.work_date.between(first, last)
            return in_chunk & ~_kept(table, rejects) if rejects else in_chunk

        with self.warehouse.engine.begin() as conn:
            self.observed.rekeyed += len(rekey(conn, entries_table, keyed.rows, entries_table.c.work_date.between(first, last)))
            entry_counts, entries_gone = sync_scope(conn, entries_table, entry_frame, days(entries_table, keyed.rejects + missing))
            sheet_counts, sheets_gone = sync_scope(conn, timesheets_table, sheet_frame, days(timesheets_table, sheet_rejects))
            self.step.keep_rejects(conn, "time entry", keyed.rejects)
            self.step.keep_rejects(conn, "timesheet", sheet_rejects)
        books.store(entry_counts)
        books.store(sheet_counts)
        for table, frame, now_gone in ((entries_table, entry_frame, entries_gone), (timesheets_table, sheet_frame, sheets_gone)):
            self.gone[table] = (self.gone[table] | now_gone) - set(frame[key_of(table).name].to_list())
        for name, counts in (("entries", entry_counts), ("days", sheet_counts)):
            self.totals.update({f"{name}_{k}": v for k, v in counts.items()})
            self.totals["written"] += sum(counts[k] for k in WRITES)
        self.totals["fetched"] += len(entries) + len(sheets)
        return {"entries": len(entry_frame), "days": len(sheet_frame), "rejected": len(keyed.rejects) + len(sheet_rejects)}

    def finish(self) -> sa.Row | None:
        """Soft-delete what the range no longer has and note what it received; returns what the
        previous sync of the same range received (None for the first)."""
        r = ranges_table
        with self.warehouse.engine.begin() as conn:
            self.totals["entries_deleted"] = soft_delete(conn, entries_table, self.gone[entries_table])
            self.totals["days_deleted"] = soft_delete(conn, timesheets_table, self.gone[timesheets_table])
            previous = conn.execute(sa.select(r).where(r.c.fiscal_year == self.key, r.c.range_start == self.start,
                                                       r.c.range_end == self.end)).first()
            upsert(conn, r, [{"fiscal_year": self.key, "range_start": self.start, "range_end": self.end,
                              "identity": self.observed.identity, "entries": self.observed.received, "synced_at": utcnow()}])
        self.totals["written"] += self.totals["entries_deleted"] + self.totals["days_deleted"]
        return previous


@dg.asset(
    key_prefix=key_prefix(),
    partitions_def=FISCAL_YEARS,
    deps=[agent_mappings],
    group_name=GROUP,
    kinds=KINDS,
    pool=scoped(GROUP),
    tags={"sync/cadence": "hourly"},
    metadata=table_metadata(entries_table),
    check_specs=[dg.AssetCheckSpec(
        RESPONSES_CHECK, asset=asset_key("halo_timesheets"),
        description="Warns when Halo's answers contradict the sync's assumptions: repeated entry keys or timesheet ids, "
                    "time on a timesheet without entries, far fewer entries than the last sync of the range, "
                    "a change of entry identity, unreadable approvals, records outside the range asked for."),
        nothing_lost("halo_timesheets")],
)
def halo_timesheets(
    context: dg.AssetExecutionContext, config: TimesheetsConfig, halopsa: HaloPSAResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """One fiscal year of HaloPSA time entries (table `halo_time_entries`, from `/api/TimesheetEvent`)
    and per-agent, per-day timesheets with their approval (table `halo_timesheets`, from `/api/Timesheet`).

    Reconciled within the year: entries deleted in Halo are soft-deleted here. Time is stored in
    whole minutes. Entries are keyed by `entry_key` (Halo's id where usable, else ticket and action,
    else a fingerprint). Entries of agents without a mapping are kept and counted (check
    `no_unmapped_agents`). Requests: one for agents, then two per chunk of `chunk_days` days."""
    key = context.partition_key
    with sync_step(context, GROUP) as step, step.open(halopsa, warehouse.engine) as client:
        start, end = _sync_range(step, key, config)
        run = YearSync(step, warehouse, key, start, end)
        run.write_chunks(client)
    previous = run.finish()
    summary = _year_summary(warehouse, key, start, end)
    findings = _findings(run.observed, previous)
    for finding in findings:
        context.log.warning(f"{key} {start}..{end}: {finding}")
    context.log.info(f"{key} {start}..{end}: {summary}, identity {run.observed.identity}, {step.stats()['requests']} requests")
    changes = ("entries_inserted", "entries_updated", "entries_restored", "entries_deleted", "days_inserted", "days_updated", "days_deleted")
    return step.result(
        run.totals,
        check_results=[dg.AssetCheckResult(check_name=RESPONSES_CHECK, passed=not findings, severity=dg.AssetCheckSeverity.WARN,
                                           metadata={"findings": len(findings), "details": listed(findings)})],
        fiscal_year=key,
        range=f"{start}..{end}",
        **summary,
        **{name: int(run.totals[name]) for name in changes},
        **run.observed.metadata(),
    )


def _findings(observed: Observed, previous: sa.Row | None) -> list[str]:
    """What this sync saw that it did not expect, each named with examples."""
    received, outside_range = observed.received, observed.outside_range
    def some(items: list[str]) -> str:
        return "; ".join(items[:LISTED]) + (f"; and {len(items) - LISTED} more" if len(items) > LISTED else "")

    found = []
    if observed.collisions:
        found.append(f"{len(observed.collisions)} ids or ticket keys carried by different entries in one response "
                     f"(held back, in sync_rejects; the run fails): {some(observed.collisions)}")
    if observed.repeated:
        found.append(f"{len(observed.repeated)} entries identical in every field (kept apart as key~2, ...): {some(observed.repeated)}")
    if observed.repeated_sheets:
        found.append(f"{len(observed.repeated_sheets)} timesheet ids repeated within one response: {some(observed.repeated_sheets)}")
    if observed.missing_time:
        found.append(f"{len(observed.missing_time)} agent-days have time on their timesheet but no time entries came "
                     f"(their stored entries are kept): {some(observed.missing_time)}")
    if observed.approval_problems:
        found.append(f"{len(observed.approval_problems)} timesheets with an unreadable approval (their day is not pushed to Xero): "
                     f"{some(observed.approval_problems)}")
    if previous is not None and previous.identity != observed.identity and received:
        found.append(f"entries were keyed by {observed.identity}, the last sync of this range by {previous.identity} "
                     f"({observed.rekeyed} stored entries took their new key)")
    elif observed.rekeyed:  # e.g. the first sync after the upgrade from numeric ids, of a tenant that hides them
        found.append(f"{observed.rekeyed} stored entries took a new key (keyed by {observed.identity} now)")
    if previous is not None and previous.entries and received < previous.entries * FEWER_SHARE:
        found.append(f"{received} entries received, the last sync of this range received {previous.entries}")
    if outside_range:
        found.append(f"Halo returned {outside_range} records outside the dates or agents asked for (dropped)")
    return found


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
        minutes = dict(conn.execute(sa.select(e.c.time_kind, sa.func.sum(e.c.minutes)).where(live_entries).group_by(e.c.time_kind)).all())
    return {"entries": entry_count, "days": days, "agents": agents, "approved_days": approved,
            "unapproved_days": days - approved, "unmapped_agents": unmapped,
            **{f"{kind}_hours": round((minutes.get(kind) or 0) / 60, 2) for kind in TIME_KINDS}}


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
            "agents": listed([f"agent {r.agent_id} ({r.name or 'unknown'}): {r.entries} entries" for r in rows]),
        },
    )


halo_timesheets_job = dg.define_asset_job("halo_timesheets_job", selection=[halo_timesheets])

assets = [halo_agents, agent_mappings, halo_timesheets]
asset_checks = [mappings_match_agents, no_unmapped_agents]
jobs = [halo_timesheets_job]
