"""Xero: approved HaloPSA time entries pushed to Xero Projects as time entries, exactly once.

A partition is a work date. Its run reads that day's entries and approvals from Halo (so an
approval reaches Xero without waiting for the hourly Halo sync), builds the time entry each
approved entry should be in Xero, compares it with the ledger (`xero_ledger`: per Halo entry,
its Xero id and the hash of the content Xero holds) and makes only the differences. An
unchanged entry costs no request. The plan is pure (sync_assets/xero_plan.py); the ledger and
the calls are in sync_assets/xero_ledger.py.

The push is a pipeline of values, each phase taking what it needs and returning what it made:
the request (`PushRequest`: day, dry run and why, force), Halo's day (`HaloRead`), the ledger's
view (`LedgerRead`), what was planned and done in Xero (`PushOutcome`), then the books and the
report. A provider's error in the Halo phase fails the run saying nothing was pushed; in the
Xero phase, that what was pushed is in the ledger.

A push plans only against what has loaded: before the agent mappings ever have (a new
installation whose approval sensor ticks first), it writes nothing to Xero and records the day's
approved entries as `deferred`. The sensor `xero_mapping_changes` (sensors/xero.py) pushes such
dates again once they load, and the open period's dates any later mapping change affects.

Exactly once:
- Before a POST the ledger row is committed as `pending` with the Idempotency-Key; a retried
  POST with the same key gets the same entry back from Xero.
- A run that finds `pending` rows (an earlier run died between the POST and the ledger write)
  first lists the day in Xero and adopts what it made, known by the `[halo <key>]` marker that
  ends each description.

Entries are known by their entry key (resources/halo.py `key_entries`): `#<id>` where Halo's
ids are usable, else `t<ticket>.<action>` or `f<fingerprint>`. A ledger row made under another
key of the same entry (before entry keys, or when the tenant's identity changed) is re-keyed,
and the marker already in Xero's description is kept, so nothing is pushed twice.
- `force` lists the day for every mapped project and repairs drift: vanished entries are made
  again, entries changed by hand are put back, duplicates we made are deleted. Entries made by
  hand (no marker) are reported, never touched.
"""

import contextlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import dagster as dg
import sqlalchemy as sa

from resources.doctor import push_gate
from resources.halo import HaloClient, HaloPSAResource
from resources.halo_tables import agent_mappings as mappings_table
from resources.mappings import MappingFilesResource, ProjectMappings, read_project_mappings
from resources.organisations import asset_key, key_prefix, scoped
from resources.records import Books
from resources.settings import setting, sync_env
from resources.warehouse import WarehouseResource, replace_rows, utcnow
from resources.xero import XeroResource
from resources.xero_tables import xero_findings as findings_table, xero_ledger as ledger_table
from sync_assets.runs import WAITED_ON, today
from sync_assets.step import SyncStep, listed, nothing_lost, sync_step, table_metadata
from sync_assets.xero_ledger import Ledger, adopt_listing, apply, read_held
from sync_assets.xero_plan import (
    PLAN_ROWS, Action, HaloDay, Held, Listing, Wanted, defer, deferred_entries, findings, keep_markers, plan, plan_table,
    read_halo, wanted_entries,
)

GROUP = "xero"
# A dry run that lists nothing opens no Xero client: these keep its metadata's keys the same.
NO_XERO_CLIENT = {"xero_requests": 0, "day_limit_remaining": None, "minute_limit_remaining": None}



def work_dates() -> dg.DailyPartitionsDefinition:
    """The work dates from XERO_FIRST_DAY in SYNC_TIMEZONE, read when the code location is built (never at import)."""
    return dg.DailyPartitionsDefinition(start_date=setting("XERO_FIRST_DAY"), timezone=setting("SYNC_TIMEZONE"), end_offset=1)


def push_enabled() -> bool:
    return setting("XERO_PUSH_ENABLED").lower() == "true"


class PushConfig(dg.Config):
    dry_run: bool | None = None
    """Only show what a push would do. Default: XERO_PUSH_ENABLED (false on a new installation)."""
    force: bool = False
    """List the day's entries in Xero and repair drift (vanished, changed by hand, duplicated)."""


def open_days(last: date) -> tuple[date, date]:
    """The open period ending on `last`: the XERO_OPEN_PERIOD_DAYS days before it and `last`."""
    return last - timedelta(days=int(setting("XERO_OPEN_PERIOD_DAYS"))), last


def open_period() -> tuple[date, date]:
    """Today's open period, from XERO_FIRST_DAY at the earliest: the work dates still pushed."""
    first, last = open_days(today())
    return max(first, date.fromisoformat(setting("XERO_FIRST_DAY"))), last


def read_period(client: HaloClient, first: date, last: date) -> HaloDay:
    """Halo's entries and approvals of the days [first, last]."""
    entries, sheets = [], []
    for _, _, chunk_entries, chunk_sheets in client.period(first, last):
        entries += chunk_entries
        sheets += chunk_sheets
    return read_halo(entries, sheets, client.outside_range)


def project_mappings(step: SyncStep, mapping_files: MappingFilesResource, done: str) -> ProjectMappings:
    """The project mapping file; a broken one refuses the run (`done` says what that left done)."""
    projects, problems = read_project_mappings(mapping_files.project_mappings_path())
    if problems:
        raise step.refuse(f"{mapping_files.project_mappings_path().name}{done}:\n" + "\n".join(problems))
    return projects


def xero_users(warehouse: WarehouseResource) -> dict[int, str]:
    """Halo agent id -> Xero user id, from the agent mapping file as last loaded."""
    with warehouse.engine.connect() as conn:
        return dict(conn.execute(sa.select(mappings_table.c.halo_agent_id, mappings_table.c.xero_user_id)
                                 .where(mappings_table.c.xero_user_id.is_not(None))).all())


# Why a day's approved entries wait: planned now, every one would be "no xero_user_id".
MAPPINGS_NOT_LOADED = ("the agent mappings have not loaded yet (asset agent_mappings, table agent_mappings is empty); "
                       "the sensor xero_mapping_changes pushes this date again once they have")


def agent_mappings_loaded(warehouse: WarehouseResource) -> bool:
    """Whether the agent mapping file has ever loaded (on a new installation the approval sensor
    can be first)."""
    with warehouse.engine.connect() as conn:
        return conn.execute(sa.select(mappings_table.c.halo_agent_id).limit(1)).first() is not None


@dataclass(frozen=True)
class PushRequest:
    """One work date's push as asked: whether it only shows its plan (and why, when the config
    did not ask for that), and whether it lists the day in Xero to repair drift."""

    day: date
    dry_run: bool
    reason: str
    force: bool


@dataclass(frozen=True)
class HaloRead:
    """The day as Halo answered it, and where that answer contradicts the push's assumptions."""

    answer: HaloDay
    surprises: tuple[str, ...]


@dataclass(frozen=True)
class LedgerRead:
    """What the ledger holds for the day's entries (`held`, after re-keying `rekeyed` rows), what
    they should be in Xero (`wanted`), the approved entries that cannot go (`invalid`) or wait
    (`deferred`), each with why, and how many entries were approved."""

    held: dict[str, Held]
    wanted: dict[str, Wanted]
    invalid: dict[str, str]
    deferred: dict[str, str]
    approved: int
    rekeyed: int


@dataclass(frozen=True)
class DayRead:
    """What a push knows before it touches Xero: the request, Halo's day and the ledger's view."""

    request: PushRequest
    halo: HaloRead
    ledger: LedgerRead


@dataclass(frozen=True)
class PushOutcome:
    """What the push planned, the day as Xero listed it (empty when not listed), and the changes made."""

    actions: list[Action]
    listing: Listing = field(default_factory=Listing)
    done: Counter = field(default_factory=Counter)


def push_request(context: dg.AssetExecutionContext, config: PushConfig, warehouse: WarehouseResource) -> PushRequest:
    """A dry run by config, else by XERO_PUSH_ENABLED; in production also while the doctor's gate is shut."""
    day = date.fromisoformat(context.partition_key)
    dry_run = (not push_enabled()) if config.dry_run is None else config.dry_run
    gate = push_gate(warehouse.engine) if not dry_run and sync_env() == "production" else None
    if gate:
        context.log.warning(f"{day}: a dry run: {gate}")
    reason = gate or ("XERO_PUSH_ENABLED is not true" if dry_run and config.dry_run is None else "")
    return PushRequest(day, dry_run or bool(gate), reason, config.force)


def read_halo_day(step: SyncStep, halopsa: HaloPSAResource, warehouse: WarehouseResource, day: date) -> HaloRead:
    """The day from Halo (three requests: agents, entries, timesheets; and the token); its
    surprises are logged and checked."""
    with step.open(halopsa, warehouse.engine) as client:
        ((_, _, entries, sheets),) = client.period(day, day)
        answer = read_halo(entries, sheets, client.outside_range)
    surprises = tuple(answer.surprises())
    for surprise in surprises:
        step.context.log.warning(f"{day}: {surprise}")
    return HaloRead(answer, surprises)


def read_ledger(warehouse: WarehouseResource, request: PushRequest, halo: HaloDay, projects: ProjectMappings) -> LedgerRead:
    """What the ledger holds for the day's entries (re-keyed where their key changed: committed
    unless a dry run), what should be in Xero, and the approved entries that cannot go. Before the
    agent mappings have ever loaded nothing can be planned: the approved entries are deferred."""
    with warehouse.engine.connect() as conn:
        held, moved = read_held(conn, request.day, halo.keyed.rows)
        if not request.dry_run:
            conn.commit()
    if not agent_mappings_loaded(warehouse):
        deferred = deferred_entries(halo, MAPPINGS_NOT_LOADED)
        return LedgerRead(held, {}, {}, deferred, approved=len(deferred), rekeyed=len(moved))
    wanted, invalid = wanted_entries(halo, xero_users(warehouse), projects)
    return LedgerRead(held, keep_markers(wanted, held), invalid, {}, approved=len(wanted) + len(invalid), rekeyed=len(moved))


def defer_day(step: SyncStep, ledger: Ledger, read: DayRead) -> PushOutcome:
    """A day that cannot be planned yet: no Xero call; the next push of the day, once the
    mappings are in, plans it."""
    request, deferred = read.request, read.ledger.deferred
    actions = defer(deferred, read.ledger.held)
    if not request.dry_run:
        ledger.write_verdicts(actions)
    step.context.log.warning(f"{request.day}: {len(deferred)} approved entries deferred, nothing pushed: {MAPPINGS_NOT_LOADED}")
    return PushOutcome(actions)


def push_to_xero(step: SyncStep, xero: XeroResource, warehouse: WarehouseResource, read: DayRead,
                 projects: ProjectMappings) -> PushOutcome:
    """List the day in Xero when needed (a force run, or a run that died mid-POST), plan, and,
    unless a dry run, make the differences."""
    request, known = read.request, read.ledger
    ledger = Ledger(warehouse, request.day, {r["entry_key"]: r for r in read.halo.answer.keyed.rows})
    if known.deferred:
        return defer_day(step, ledger, read)
    pending = {h.project_id for h in known.held.values() if h.status == "pending" and h.project_id}
    # A dry run with nothing to list needs no Xero connection (a new installation has none yet).
    needs_xero = bool(pending) or request.force or not request.dry_run
    with step.open(xero, warehouse.engine) if needs_xero else contextlib.nullcontext() as client:
        listing, held = Listing(), known.held
        if request.force or pending:
            to_list = (projects.project_ids() | {h.project_id for h in held.values() if h.project_id}) if request.force else pending
            listing, held = adopt_listing(client, to_list, request.day, held, None if request.dry_run else ledger)
        actions = plan(known.wanted, known.invalid, held, request.force)
        if request.dry_run:
            return PushOutcome(actions, listing)
        ledger.write_verdicts(actions)
        duplicates = listing.duplicates if request.force else []  # deleted by a force run only
        return PushOutcome(actions, listing, apply(step.context, client, ledger, actions, duplicates))


def push_day(context: dg.AssetExecutionContext, config: PushConfig, halopsa: HaloPSAResource, xero: XeroResource,
             mapping_files: MappingFilesResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """The push of the partition's work date: the asset `xero_time_entries` (`time_entries`)."""
    request = push_request(context, config, warehouse)
    with sync_step(context, GROUP) as step:
        projects = project_mappings(step, mapping_files, ": nothing pushed")
        with step.phase("Nothing was pushed."):
            halo = read_halo_day(step, halopsa, warehouse, request.day)
        read = DayRead(request, halo, read_ledger(warehouse, request, halo.answer, projects))
        with step.phase("What was pushed is in the ledger; re-run the partition to finish."):
            outcome = push_to_xero(step, xero, warehouse, read, projects)
    return push_report(step, read, outcome)


def time_entries() -> dg.AssetsDefinition:
    """The asset `xero_time_entries`, built when the code location is: its partitions read
    XERO_FIRST_DAY and SYNC_TIMEZONE."""

    @dg.asset(
        key_prefix=key_prefix(),
        partitions_def=work_dates(),
        deps=[asset_key("agent_mappings")],
        group_name=GROUP,
        kinds={"xero", "halopsa", "sql"},
        pool=scoped(GROUP),
        metadata=table_metadata(ledger_table),
        check_specs=[dg.AssetCheckSpec(
            "xero_halo_day_as_expected", asset=asset_key("xero_time_entries"),
            description="Warns when Halo's answer for the day contradicts the push's assumptions: unreadable approvals "
                        "(those entries are held back), keys carried by different entries, identical entries, approved time without "
                        "entries, records outside the day."),
            nothing_lost("xero_time_entries")],
    )
    def xero_time_entries(
        context: dg.AssetExecutionContext,
        config: PushConfig,
        halopsa: HaloPSAResource,
        xero: XeroResource,
        mapping_files: MappingFilesResource,
        warehouse: WarehouseResource,
    ) -> dg.MaterializeResult:
        """Approved HaloPSA time entries of one work date, as time entries in Xero Projects.

        Creates what is missing, updates what changed since the last push, deletes what was
        un-approved or deleted in Halo; LOCKED or INVOICED entries are reported, not touched. The
        ledger (table `xero_ledger`) records each entry's Xero id, content hash, status, attempts and
        last error. Dry run (the default until XERO_PUSH_ENABLED=true) shows the plan without writing."""
        return push_day(context, config, halopsa, xero, mapping_files, warehouse)

    return xero_time_entries


# What a planned entry is in the books: in the ledger with its verdict (pushed, or failed or
# postponed with the reason, which the ledger keeps per entry).
STORED_AS = {"create": "inserted", "update": "updated", "unchanged": "unchanged", "conflict": "unchanged"}


def keep_books(books: Books, read: DayRead, outcome: PushOutcome) -> None:
    """Where each of the day's entries from Halo went: planned into Xero and the ledger (stored),
    cannot go (rejected; the reason is in the ledger), or excluded with the reason (not approved,
    not work, deferred, a dry run)."""
    halo = read.halo.answer
    books.receive(halo.keyed.received + halo.outside_range)
    books.exclude("outside the day asked for", halo.outside_range)
    books.exclude("sent twice, identical, in one response", halo.keyed.sent_twice)
    books.reject(len(halo.keyed.rejects))  # unreadable: named by the check xero_halo_day_as_expected
    books.collisions += [f"time entry {key}" for key in halo.keyed.collisions]
    planned = {a.entry_key: a.kind for a in outcome.actions}
    stored = Counter()
    for row in halo.keyed.rows:
        kind = planned.get(row["entry_key"])
        if row["time_kind"] != "work":
            books.exclude(f"{row['time_kind']}: never billed")
        elif kind in (None, "delete"):  # a delete: pushed before, un-approved since
            books.exclude("its timesheet is not approved")
        elif kind == "invalid":
            books.reject(1)
        elif kind == "deferred":
            books.exclude("deferred until the agent mappings load")
        elif read.request.dry_run:
            books.exclude("a dry run: planned, not pushed")
        else:
            stored[STORED_AS[kind]] += 1
    books.store(stored)


def push_report(step: SyncStep, read: DayRead, outcome: PushOutcome) -> dg.MaterializeResult:
    """The push's metadata (its plan as a table) and the check of Halo's answer."""
    keep_books(step.books, read, outcome)
    halo, done, surprises = read.halo.answer, outcome.done, read.halo.surprises
    kinds = Counter(a.kind for a in outcome.actions)
    summary = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
    step.context.log.info(f"{read.request.day}: {'dry run, would ' if read.request.dry_run else ''}{summary}; "
                          f"Xero requests {step.clients['xero'].stats()['requests'] if 'xero' in step.clients else 0}")
    changes = ("created", "updated", "deleted", "duplicates_deleted")
    counts = {"fetched": len(halo.keyed.rows) + len(halo.keyed.rejects), "written": sum(done[k] for k in changes),
              "rejected": len(halo.keyed.rejects)}
    return step.result(
        counts,
        check_results=[dg.AssetCheckResult(
            check_name="xero_halo_day_as_expected", passed=not surprises, severity=dg.AssetCheckSeverity.WARN,
            metadata={"findings": len(surprises), "details": listed(surprises, PLAN_ROWS)})],
        **push_metadata(read, outcome, kinds),
        **({} if "xero" in step.clients else {**NO_XERO_CLIENT, "halopsa_requests": step.stats()["requests"]}),
    )


def push_metadata(read: DayRead, outcome: PushOutcome, kinds: Counter) -> dict[str, Any]:
    """The push's own metadata: what was asked, planned (`kinds` of its actions) and done, and
    what Halo's answer held."""
    request, halo, done = read.request, read.halo.answer, outcome.done
    return {
        "work_date": request.day.isoformat(),
        "dry_run": request.dry_run,
        "dry_run_reason": request.reason,
        "force": request.force,
        "approved_entries": read.ledger.approved,
        **{f"planned_{k}": kinds[k] for k in ("create", "update", "delete", "unchanged", "invalid", "conflict")},
        "deferred": kinds["deferred"],
        "deferred_reason": next(iter(read.ledger.deferred.values()), ""),
        **{k: done[k] for k in ("created", "updated", "deleted", "failed", "conflicts", "postponed", "duplicates_deleted")},
        "made_by_hand_in_xero": len(outcome.listing.by_hand),
        "identity": halo.keyed.identity if halo.keyed.rows else "none",
        "ledger_rekeyed": read.ledger.rekeyed,
        "outside_range": halo.outside_range,
        "unreadable_approvals": len(halo.unreadable),
        "identical_twins": len(halo.keyed.repeated),
        "key_collisions": len(halo.keyed.collisions),
        "plan": dg.MetadataValue.md(plan_table(outcome.actions)),
    }


def _ledger_problems(statuses: tuple[str, ...], warehouse: WarehouseResource) -> list[sa.Row]:
    t = ledger_table
    with warehouse.engine.connect() as conn:
        return conn.execute(sa.select(t).where(t.c.status.in_(statuses)).order_by(t.c.work_date, t.c.entry_key)).all()


def _ledger_check(statuses: tuple[str, ...], warehouse: WarehouseResource, **metadata) -> dg.AssetCheckResult:
    rows = _ledger_problems(statuses, warehouse)
    lines = [f"{r.work_date} Halo entry {r.entry_key} ({r.status}): {r.last_error}" for r in rows]
    return dg.AssetCheckResult(passed=not rows, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"entries": len(rows), **metadata, "details": listed(lines, PLAN_ROWS)})


@dg.asset_check(asset=asset_key("xero_time_entries"), name="xero_entries_pushable")
def xero_entries_pushable(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    """Warns while approved entries cannot go to Xero (unmapped agent or project, bad duration,
    refused by Xero), listing each with the reason. Deferred entries wait for the agent mappings'
    first load and are pushed then: counted (`deferred`), not failures."""
    return _ledger_check(("invalid", "failed"), warehouse, deferred=len(_ledger_problems(("deferred",), warehouse)))


@dg.asset_check(asset=asset_key("xero_time_entries"), name="xero_no_locked_conflicts")
def xero_no_locked_conflicts(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    """Warns while Halo changed entries that Xero has LOCKED or INVOICED (left untouched)."""
    return _ledger_check(("conflict",), warehouse)


# The sensor's cursor moves on when it asks for a run, so a run that dies must be retried by
# Dagster (run_retries in the instance's dagster.yaml); pushing a day again is harmless.
# In-process steps: the push and its two checks run in the run's own process instead of starting
# a process each, a few seconds of every approval's wait (bench/approval_latency.py); the `xero`
# pool holds the same.
# By key: the job takes the asset's partitions when the code location resolves it.
xero_push_job = dg.define_asset_job("xero_push_job", selection=[asset_key("xero_time_entries")],
                                    tags={"dagster/max_retries": "3", **WAITED_ON},
                                    executor_def=dg.in_process_executor)


RECONCILE_CHECKS = {
    "xero_no_vanished_entries": "Fails while entries the ledger pushed are gone from Xero (deleted by hand?).",
    "xero_no_changes_by_hand": "Warns while Xero has entries made by hand, or ours edited by hand, in the open period.",
    "xero_all_approved_pushed": "Warns while approved, pushable Halo entries are not in Xero (when pushing is on).",
    "xero_refresh_token_fresh": "Warns when the stored refresh token was last rotated 30+ days ago (Xero drops it at 60).",
}


def keep_findings(warehouse: WarehouseResource, found: list[dict]) -> None:
    """Replace the table `xero_findings` with this reconciliation's findings."""
    with warehouse.engine.begin() as conn:
        replace_rows(conn, findings_table, [{**f, "found_at": utcnow()} for f in found])


def reconcile_checks(found: list[dict], token_age: timedelta | None) -> list[dg.AssetCheckResult]:
    """The reconciliation's four checks, from its findings and the stored token's age."""
    def check(name: str, severity: dg.AssetCheckSeverity, *kinds: str, passed: bool | None = None, **metadata) -> dg.AssetCheckResult:
        lines = [f"{f['kind']}: {f['work_date']} Halo {f['entry_key'] or '-'} Xero {f['xero_time_entry_id']} {f['detail']}"
                 for f in found if f["kind"] in kinds]
        return dg.AssetCheckResult(check_name=name, severity=severity, passed=not lines if passed is None else passed,
                                   metadata={"entries": len(lines), **metadata, "details": listed(lines, PLAN_ROWS)})

    stale = token_age is not None and token_age >= timedelta(days=30)
    not_pushed = any(f["kind"] == "approved_not_in_xero" for f in found)
    return [
        check("xero_no_vanished_entries", dg.AssetCheckSeverity.ERROR, "vanished_from_xero"),
        check("xero_no_changes_by_hand", dg.AssetCheckSeverity.WARN, "made_by_hand", "changed_in_xero", "unknown_to_ledger"),
        # Approved entries wait in Halo while pushing is off: that is the setting, not a problem.
        check("xero_all_approved_pushed", dg.AssetCheckSeverity.WARN, "approved_not_in_xero",
              passed=not (push_enabled() and not_pushed), push_enabled=push_enabled()),
        dg.AssetCheckResult(check_name="xero_refresh_token_fresh", severity=dg.AssetCheckSeverity.WARN, passed=not stale,
                            metadata={"days_since_rotation_before_this_run": round(token_age.total_seconds() / 86400, 1) if token_age else None}),
    ]


def keep_compared(books: Books, halo: HaloDay, xero_entries: int) -> None:
    """A report's books: every record read is compared, and what differs is a finding; nothing is stored."""
    books.receive(halo.keyed.received + halo.outside_range + xero_entries)
    books.reject(len(halo.keyed.rejects))
    books.exclude("outside the period asked for", halo.outside_range)
    books.exclude("compared (what differs is in xero_findings)", len(halo.keyed.rows) + halo.keyed.sent_twice + xero_entries)


@dg.asset(
    key_prefix=key_prefix(),
    deps=[asset_key("agent_mappings")],
    group_name=GROUP,
    kinds={"xero", "halopsa", "sql"},
    pool=scoped(GROUP),
    tags={"sync/cadence": "daily"},
    metadata=table_metadata(findings_table),
    check_specs=[*(dg.AssetCheckSpec(name, asset=asset_key("xero_reconciliation"), description=text) for name, text in RECONCILE_CHECKS.items()),
                 nothing_lost("xero_reconciliation")],
)
def xero_reconciliation(
    context: dg.AssetExecutionContext,
    halopsa: HaloPSAResource,
    xero: XeroResource,
    mapping_files: MappingFilesResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    """Nightly three-way comparison of Halo, the ledger and Xero over the open period
    (XERO_OPEN_PERIOD_DAYS), kept in table `xero_findings`. Reports; changes nothing in Xero.
    Its nightly refresh also keeps the Xero connection alive through quiet months."""
    first, last = open_period()
    with sync_step(context, GROUP) as step:
        projects = project_mappings(step, mapping_files, "")
        token_age = xero.token_store(warehouse.engine).age()
        with step.phase("The previous findings stay."):
            with step.open(halopsa, warehouse.engine) as client:
                halo = read_period(client, first, last)
            with warehouse.engine.connect() as conn:
                rows = conn.execute(sa.select(ledger_table).where(ledger_table.c.work_date.between(first, last))).all()
            wanted, _ = wanted_entries(halo, xero_users(warehouse), projects)
            with step.open(xero, warehouse.engine) as client:
                project_ids = sorted(projects.project_ids() | {r.xero_project_id for r in rows if r.xero_project_id})
                xero_entries = [e for p in project_ids for e in client.time_entries(p, first, last)]
    found = findings(wanted, rows, xero_entries)
    keep_findings(warehouse, found)
    keep_compared(step.books, halo, len(xero_entries))
    kinds = Counter(f["kind"] for f in found)
    context.log.info(f"{first}..{last}: {dict(kinds) or 'Halo, ledger and Xero agree'}; "
                     f"Xero requests {step.clients['xero'].stats()['requests']}")
    return step.result(
        {"fetched": len(halo.keyed.rows) + len(xero_entries), "written": len(found), "rejected": len(halo.keyed.rejects)},
        check_results=reconcile_checks(found, token_age),
        period=f"{first}..{last}", halo_entries=len(halo.keyed.rows), outside_range=halo.outside_range,
        approved_pushable=len(wanted), ledger_rows=len(rows), xero_entries=len(xero_entries),
        **{k: kinds[k] for k in sorted(kinds)},
        **{"dagster/row_count": len(found)},
    )




def assets() -> list[dg.AssetsDefinition]:
    return [time_entries(), xero_reconciliation]


asset_checks = [xero_entries_pushable, xero_no_locked_conflicts]
jobs = [xero_push_job]
