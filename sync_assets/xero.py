"""Xero: approved HaloPSA time entries pushed to Xero Projects as time entries, exactly once.

A partition is a work date. Its run reads that day's entries and approvals from Halo (so an
approval reaches Xero without waiting for the hourly Halo sync), builds the time entry each
approved entry should be in Xero, compares it with the ledger (`xero_ledger`: per Halo entry,
its Xero id and the hash of the content Xero holds) and makes only the differences. An
unchanged entry costs no request.

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
import hashlib
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
import sqlalchemy as sa

from resources.halo import HaloPSAResource, KeyedEntries, content_hash, key_entries, timesheet_row
from resources.http import ProviderAuthError, ProviderError, RequestRejected
from resources.mappings import MappingFilesResource, ProjectMappings, read_project_mappings
from resources.doctor import push_gate
from resources.settings import setting, sync_env
from resources.warehouse import (
    WarehouseResource,
    lock_for_replace,
    rekey,
    upsert,
    utcnow,
)
from resources.halo_tables import agent_mappings as mappings_table
from resources.xero_tables import xero_findings as findings_table, xero_ledger as ledger
from resources.xero import MAX_DURATION_MIN, DayBudgetSpent, EntryLocked, Postpone, XeroClient, XeroResource, utc_stamp
from sync_assets.halo import agent_mappings
from sync_assets.runs import today, trigger_of

GROUP = "xero"
# `[halo #123]` (an id, as before entry keys), `[halo t12345.7]`, `[halo f0a1b2...]`
MARKER = re.compile(r"\[halo ([^\]\s]+)\]$")
LOCKED = ("LOCKED", "INVOICED")
PLAN_ROWS = 200


# Settings are validated once, by check_settings (sync_assets/__init__.py).
WORK_DATES = dg.DailyPartitionsDefinition(start_date=setting("XERO_FIRST_DAY"), timezone=setting("SYNC_TIMEZONE"), end_offset=1)


def push_enabled() -> bool:
    return setting("XERO_PUSH_ENABLED").lower() == "true"


class PushConfig(dg.Config):
    dry_run: bool | None = None
    """Only show what a push would do. Default: XERO_PUSH_ENABLED (false on a new installation)."""
    force: bool = False
    """List the day's entries in Xero and repair drift (vanished, changed by hand, duplicated)."""


@dataclass(frozen=True)
class Wanted:
    """What one approved Halo entry should be in Xero."""

    entry_id: str  # the entry key
    agent_id: int
    project_id: str
    payload: dict[str, Any]
    other_keys: tuple[str, ...] = ()  # the entry's ticket key and fingerprint

    def marked(self, marker: str) -> "Wanted":
        """The same entry, its description ending in another marker (the one Xero already has)."""
        text = MARKER.sub(f"[halo {marker}]", self.payload["description"])
        return Wanted(self.entry_id, self.agent_id, self.project_id, {**self.payload, "description": text}, self.other_keys)

    @property
    def hash(self) -> str:
        return content_hash({"projectId": self.project_id, **self.payload})


@dataclass
class Held:
    """What the ledger, or a listing of the day, says Xero holds for one Halo entry."""

    status: str
    xero_id: str | None = None
    project_id: str | None = None
    hash: str | None = None
    attempts: int = 0
    work_date: date | None = None
    xero_status: str | None = None  # ACTIVE, LOCKED or INVOICED, when the day was listed
    marker: str | None = None  # the key in the description's [halo <key>] marker in Xero


@dataclass
class Action:
    kind: str  # create | update | delete | unchanged | invalid | conflict
    entry_id: str
    reason: str = ""
    wanted: Wanted | None = None
    held: Held | None = None


@dataclass
class Listing:
    """The day as Xero holds it, when it was listed."""

    ours: dict[str, dict] = field(default_factory=dict)  # by entry key
    duplicates: list[dict] = field(default_factory=list)
    by_hand: list[dict] = field(default_factory=list)


def describe(row: dict) -> str:
    text = row.get("subject") or row.get("note") or "Time"
    ticket = f"Ticket {row['ticket_id']}: " if row.get("ticket_id") else ""
    return f"{ticket}{text}"[:400] + f" [halo {row['entry_key']}]"


def xero_content(entry: dict) -> dict[str, Any]:
    """A Xero time entry as the payload that would make it, to hash and compare."""
    moment = datetime.fromisoformat(str(entry.get("dateUtc")).replace("Z", "+00:00"))
    moment = moment.astimezone(UTC) if moment.tzinfo else moment
    return {"projectId": entry.get("projectId"), "userId": entry.get("userId"), "taskId": entry.get("taskId"),
            "dateUtc": utc_stamp(moment), "duration": entry.get("duration"), "description": entry.get("description")}


@dataclass
class HaloDay:
    """What Halo said about some days, read for a push or a reconciliation."""

    keyed: KeyedEntries
    approved: set[tuple[int, date]] = field(default_factory=set)  # (agent, day) of approved timesheets
    unreadable: dict[tuple[int, date], str] = field(default_factory=dict)  # approvals that cannot be read
    missing_time: list[str] = field(default_factory=list)  # approved agent-days with time but no entries
    outside_range: int = 0

    def findings(self) -> list[str]:
        found = [f"approval of agent {a} on {d} cannot be read ({why}); that day's entries are held back"
                 for (a, d), why in sorted(self.unreadable.items())]
        found += [f"entry key {k} repeated within Halo's answer (kept apart as {k}~2, ...)" for k in self.keyed.repeated]
        found += [f"{m}: approved with time on the timesheet, but Halo returned no entries" for m in self.missing_time]
        found += [f"Halo returned {self.outside_range} records outside the dates asked for (dropped)"] if self.outside_range else []
        found += [f"unreadable entry {r['record_id']}: {r['reason']}" for r in self.keyed.rejects]
        return found


def read_halo(entries: list, sheets: list, outside_range: int = 0) -> HaloDay:
    """Entries with their keys, and the approvals of their days, as a push needs them."""
    halo = HaloDay(key_entries(entries, ""), outside_range=outside_range)
    with_entries = {(r["agent_id"], r["work_date"]) for r in halo.keyed.rows}
    for sheet in sheets:
        try:
            row = timesheet_row(sheet, "")
        except (ValueError, TypeError, KeyError):
            continue  # no usable agent or day: it approves nothing, and halo_timesheets records it
        day = (row["agent_id"], row["work_date"])
        if row["approval_problem"]:
            halo.unreadable[day] = row["approval_problem"]
        elif row["approved"]:
            halo.approved.add(day)
            if row["actual_minutes"] and day not in with_entries:
                halo.missing_time.append(f"agent {day[0]} on {day[1]}")
    return halo


def wanted_entries(halo: HaloDay, users: dict[int, str], projects: ProjectMappings) -> tuple[dict[str, Wanted], dict[str, str]]:
    """The approved entries as Xero entries, and the approved ones that cannot go, with why. An
    entry whose day's approval cannot be read cannot go either: it is held back and named."""
    wanted, invalid = {}, {}
    for row in halo.keyed.rows:
        day = (row["agent_id"], row["work_date"])
        if day in halo.unreadable:
            invalid[row["entry_key"]] = f"the timesheet's approval cannot be read: {halo.unreadable[day]}"
            continue
        if day not in halo.approved:
            continue
        problem, mapping = None, projects.find(row["client_id"], row["contract_id"], row["ticket_id"])
        if row["agent_id"] not in users:
            problem = f"agent {row['agent_id']} has no xero_user_id in the agent mapping file"
        elif mapping is None:
            problem = (f"no Xero project for client {row['client_id']} ({row['client_name']}), contract {row['contract_id']}, "
                       f"ticket {row['ticket_id']} in the project mapping file")
        elif not 1 <= row["minutes"] <= MAX_DURATION_MIN:
            problem = f"duration {row['minutes']} min is outside Xero's 1..{MAX_DURATION_MIN}"
        if problem:
            invalid[row["entry_key"]] = problem
            continue
        wanted[row["entry_key"]] = Wanted(row["entry_key"], row["agent_id"], mapping.xero_project_id, {
            "userId": users[row["agent_id"]], "taskId": mapping.xero_task_id, "dateUtc": utc_stamp(row["start_at"]),
            "duration": row["minutes"], "description": describe(row)},
            tuple(k for k in (row["ticket_key"], row["fingerprint"]) if k))
    return wanted, invalid


def plan(wanted: dict[str, Wanted], invalid: dict[str, str], held: dict[str, Held], force: bool) -> list[Action]:
    """What to do for each entry: the difference between what should be and what Xero holds."""
    actions = []
    for entry_id, want in sorted(wanted.items()):
        have = held.get(entry_id)
        if have is None or have.xero_id is None:
            actions.append(Action("create", entry_id, wanted=want, held=have))
        elif have.hash == want.hash and have.status in ("pushed", "conflict"):
            actions.append(Action("unchanged", entry_id, wanted=want, held=have))
        elif have.xero_status in LOCKED or (have.status == "conflict" and not force):
            actions.append(Action("conflict", entry_id, f"changed in Halo, but Xero has it {have.xero_status or 'LOCKED or INVOICED'}", want, have))
        else:
            actions.append(Action("update", entry_id, wanted=want, held=have))
    for entry_id, reason in sorted(invalid.items()):
        actions.append(Action("invalid", entry_id, reason, held=held.get(entry_id)))
    for entry_id, have in sorted(held.items()):
        if entry_id in wanted or entry_id in invalid or have.xero_id is None:
            continue
        if have.xero_status in LOCKED or (have.status == "conflict" and not force):
            actions.append(Action("conflict", entry_id, "un-approved or deleted in Halo, but Xero has it locked", held=have))
        else:
            actions.append(Action("delete", entry_id, "un-approved or deleted in Halo", held=have))
    return actions


def idempotency_key(action: str, entry_id: str, content: str, attempt: int) -> str:
    """Retries of one request share a key; the next attempt (a re-creation after a delete, or
    after a listing showed the last POST never arrived) gets a new one."""
    digest = hashlib.sha256(f"{action}:{entry_id}:{content}:{attempt}".encode()).hexdigest()[:40]
    return f"halo-{re.sub(r'[^A-Za-z0-9.]', '', entry_id)[:40]}-{action}-{digest}"


def read_held(conn: sa.Connection, day: date, rows: list[dict]) -> tuple[dict[str, Held], list[tuple[str, str]]]:
    """The ledger's rows for the day and for these entries, by entry key, after re-keying rows
    made under another key of the same entry (see `rekey`); and the keys moved. The caller
    commits the move, or (a dry run) does not."""
    moved = rekey(conn, ledger, rows, ledger.c.work_date == day)
    keys = sorted(r["entry_key"] for r in rows)
    found = conn.execute(sa.select(ledger).where((ledger.c.work_date == day) | ledger.c.entry_key.in_(keys))).all()
    return {r.entry_key: Held(r.status, r.xero_time_entry_id, r.xero_project_id, r.content_hash, r.attempts, r.work_date,
                              marker=r.marker) for r in found}, moved


def keep_markers(wanted: dict[str, Wanted], held: dict[str, Held]) -> dict[str, Wanted]:
    """Entries already in Xero under another marker (an old `#id`) keep it: re-marking them
    would be an update of every such entry, and a conflict where Xero has them locked."""
    def kept(key: str) -> str | None:
        have = held.get(key)
        return have.marker if have and have.xero_id and have.marker not in (None, key) else None

    return {k: w.marked(kept(k)) if kept(k) else w for k, w in wanted.items()}


def list_day(client: XeroClient, project_ids: set[str], day: date, held: dict[str, Held]) -> Listing:
    """The day's entries in Xero for these projects, split into ours (by marker), our duplicates and hand-made."""
    listing = Listing()
    by_marker = {have.marker or key: key for key, have in held.items()}
    for project_id in sorted(project_ids):
        for entry in client.time_entries(project_id, day, day):
            match = MARKER.search(entry.get("description") or "")
            if not match:
                listing.by_hand.append(entry)
                continue
            entry_id = by_marker.get(match.group(1), match.group(1))
            kept = listing.ours.get(entry_id)
            known = held.get(entry_id)
            if kept is None:
                listing.ours[entry_id] = entry
            elif known and entry.get("timeEntryId") == known.xero_id:
                listing.duplicates.append(kept)
                listing.ours[entry_id] = entry
            else:
                listing.duplicates.append(entry)
    return listing


def adopt(held: dict[str, Held], listing: Listing, listed_projects: set[str], day: date) -> None:
    """Make `held` say what the listing saw: Xero's truth wins over the ledger's memory."""
    for entry_id, entry in listing.ours.items():
        have = held.setdefault(entry_id, Held("pushed", work_date=day))
        have.marker = MARKER.search(entry["description"]).group(1)
        have.xero_id, have.project_id = entry["timeEntryId"], entry.get("projectId")
        have.hash, have.xero_status = content_hash(xero_content(entry)), entry.get("status")
        have.status = "pushed" if have.status in ("pending", "failed", "deleted", "postponed", "invalid") else have.status
    for entry_id, have in held.items():
        # Only the listed day counts: an entry moved here from another day still has its Xero
        # entry on that day, and is updated (moved), not made again.
        listed = have.project_id in listed_projects and have.work_date == day
        if entry_id not in listing.ours and listed and have.xero_id is not None:
            have.status, have.xero_id = "deleted", None  # vanished from Xero (or never made): make it again


class Ledger:
    """Writes to `xero_ledger`, one committed row at a time so a crash loses at most one step."""

    def __init__(self, warehouse: WarehouseResource, day: date, entries: dict[str, dict]):
        self.engine = warehouse.engine
        self.day = day
        self.entries = entries  # entry key -> the entry's row, for its agent and other keys

    def write(self, entry_id: str, status: str, **values: Any) -> None:
        entry = self.entries.get(entry_id, {})
        row = {"entry_key": entry_id, "work_date": self.day, "status": status, "updated_at": utcnow(), **values}
        if entry:
            row |= {"agent_id": entry["agent_id"], "ticket_key": entry["ticket_key"], "fingerprint": entry["fingerprint"]}
        with self.engine.begin() as conn:
            exists = conn.execute(sa.select(ledger.c.attempts).where(ledger.c.entry_key == entry_id)).first()
            if exists:
                conn.execute(ledger.update().where(ledger.c.entry_key == entry_id).values(**row))
            else:
                upsert(conn, ledger, [{"attempts": 0, "marker": entry_id, **row}])

    def adopt(self, held: dict[str, Held]) -> None:
        for entry_id, have in held.items():
            self.write(entry_id, have.status, xero_time_entry_id=have.xero_id, xero_project_id=have.project_id,
                       content_hash=have.hash, marker=have.marker or entry_id)


def apply(context: dg.AssetExecutionContext, client: XeroClient, book: Ledger, actions: list[Action], listing: Listing,
          force: bool) -> Counter:
    """Make the planned calls; every outcome lands in the ledger as it happens."""
    done: Counter = Counter()
    calls = [a for a in actions if a.kind in ("create", "update", "delete")]
    if calls or (force and listing.duplicates):
        client.connect()
    for position, action in enumerate(calls):
        try:
            if client.day_budget_low():
                raise DayBudgetSpent(f"Xero's day budget is down to {client.budget.day_remaining} calls")
            _call(client, book, action)
            done[f"{action.kind}d"] += 1
        except Postpone as error:  # the day's budget, or a wait longer than a run should make
            for later in calls[position:]:
                if later.kind == "create":
                    book.write(later.entry_id, "postponed", last_error="Xero's day budget is spent; the next run goes on")
            done["postponed"] = len(calls) - position
            context.log.warning(f"{error}: {done['postponed']} changes postponed to the next run")
            break
        except RequestRejected as error:
            locked = isinstance(error, EntryLocked)  # from the entry's listed status, not the message's wording
            status = "conflict" if locked else "failed"
            book.write(action.entry_id, status, last_error=error.detail[:500])
            done["conflicts" if locked else "failed"] += 1
            context.log.warning(f"Halo entry {action.entry_id}: {action.kind} refused by Xero: {error.detail[:200]}")
    if force:
        for duplicate in listing.duplicates:
            client.delete(duplicate["projectId"], duplicate["timeEntryId"], _utc_day(duplicate))
            done["duplicates_deleted"] += 1
    return done


def _call(client: XeroClient, book: Ledger, action: Action) -> None:
    have, want = action.held, action.wanted
    attempts = (have.attempts if have else 0) + 1
    if action.kind == "update" and have.project_id != want.project_id:  # a time entry cannot move between projects
        client.delete(have.project_id, have.xero_id, have.work_date)
        book.write(action.entry_id, "deleted", xero_time_entry_id=None, attempts=attempts)
        attempts += 1
        action = Action("create", action.entry_id, wanted=want)
    if action.kind == "create":
        key = idempotency_key("create", action.entry_id, want.hash, attempts)
        book.write(action.entry_id, "pending", xero_project_id=want.project_id, idempotency_key=key, attempts=attempts,
                   last_error=None, marker=MARKER.search(want.payload["description"]).group(1))
        entry = client.create(want.project_id, want.payload, key)
        book.write(action.entry_id, "pushed", xero_time_entry_id=entry["timeEntryId"], content_hash=want.hash, pushed_at=utcnow())
    elif action.kind == "update":
        key = idempotency_key("update", action.entry_id, want.hash, attempts)
        book.write(action.entry_id, have.status, idempotency_key=key, attempts=attempts)
        client.update(want.project_id, have.xero_id, want.payload, key, have.work_date)
        book.write(action.entry_id, "pushed", content_hash=want.hash, pushed_at=utcnow(), last_error=None)
    else:
        client.delete(have.project_id, have.xero_id, have.work_date)
        book.write(action.entry_id, "deleted", xero_time_entry_id=None, attempts=attempts, pushed_at=utcnow(), last_error=None)


def _utc_day(entry: dict) -> date | None:
    try:
        return date.fromisoformat(str(entry.get("dateUtc"))[:10])
    except ValueError:
        return None


def plan_table(actions: list[Action]) -> str:
    shown = [a for a in actions if a.kind != "unchanged"][:PLAN_ROWS]
    lines = ["| action | Halo entry | minutes | date (UTC) | Xero entry | reason |", "|---|---|---|---|---|---|"]
    for a in shown:
        payload = a.wanted.payload if a.wanted else {}
        lines.append(f"| {a.kind} | {a.entry_id} | {payload.get('duration', '')} | {payload.get('dateUtc', '')} | "
                     f"{(a.held.xero_id if a.held else None) or ''} | {a.reason.replace('|', '/')} |")
    return "\n".join(lines) if shown else "nothing to change"


def _read_day(halopsa: HaloPSAResource, context, day: date) -> tuple[HaloDay, dict]:
    """The day from Halo: three requests (agents, entries, timesheets) and the token."""
    with halopsa.client(log=context.log.info) as halo:
        ((_, _, entries, sheets),) = halo.period(day, day)
        return read_halo(entries, sheets, halo.outside_range), halo.stats()


@dg.asset(
    partitions_def=WORK_DATES,
    deps=[agent_mappings],
    group_name=GROUP,
    kinds={"xero", "halopsa", "sql"},
    pool=GROUP,
    check_specs=[dg.AssetCheckSpec(
        "xero_halo_day_as_expected", asset="xero_time_entries",
        description="Warns when Halo's answer for the day contradicts the push's assumptions: unreadable approvals "
                    "(those entries are held back), repeated entry keys, approved time without entries, records outside the day.")],
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
    began = time.monotonic()
    day = date.fromisoformat(context.partition_key)
    dry_run = (not push_enabled()) if config.dry_run is None else config.dry_run
    gate = push_gate(warehouse.engine) if not dry_run and sync_env() == "production" else None
    if gate:
        context.log.warning(f"{day}: a dry run: {gate}")
        dry_run = True
    projects, problems = read_project_mappings(mapping_files.project_mappings_path())
    if problems:
        raise dg.Failure(description=f"{mapping_files.project_mappings_path().name}: nothing pushed:\n" + "\n".join(problems),
                         allow_retries=False)
    try:
        halo, halo_stats = _read_day(halopsa, context, day)
    except ProviderError as error:
        raise dg.Failure(description=f"{error}. Nothing was pushed.") from None
    surprises = halo.findings()
    for surprise in surprises:
        context.log.warning(f"{day}: {surprise}")
    with warehouse.engine.connect() as conn:
        users = dict(conn.execute(sa.select(mappings_table.c.halo_agent_id, mappings_table.c.xero_user_id)
                                  .where(mappings_table.c.xero_user_id.is_not(None))).all())
        held, moved = read_held(conn, day, halo.keyed.rows)
        if not dry_run:
            conn.commit()
    wanted, invalid = wanted_entries(halo, users, projects)
    wanted = keep_markers(wanted, held)
    book = Ledger(warehouse, day, {r["entry_key"]: r for r in halo.keyed.rows})
    listing, done = Listing(), Counter()
    pending = {h.project_id for h in held.values() if h.status == "pending" and h.project_id}
    # A dry run with nothing to list needs no Xero connection (a new installation has none yet).
    needs_xero = bool(pending) or config.force or not dry_run
    try:
        with xero.client(warehouse.engine, log=context.log.info) if needs_xero else contextlib.nullcontext() as client:
            if config.force or pending:
                to_list = (projects.project_ids() | {h.project_id for h in held.values() if h.project_id}) if config.force else pending
                listing = list_day(client, to_list, day, held)
                adopt(held, listing, to_list, day)
                if not dry_run:
                    book.adopt(held)
            actions = plan(wanted, invalid, held, config.force)
            if not dry_run:
                for action in actions:
                    if action.kind in ("invalid", "conflict"):
                        book.write(action.entry_id, action.kind, last_error=action.reason)
                    elif action.kind == "unchanged" and action.held.status != "pushed":
                        book.write(action.entry_id, "pushed", last_error=None)
                done = apply(context, client, book, actions, listing, config.force)
            stats = client.stats() if client else {"requests": 0}
    except ProviderAuthError as error:
        raise dg.Failure(description=str(error), allow_retries=False) from None
    except ProviderError as error:
        raise dg.Failure(description=f"{error}. What was pushed is in the ledger; re-run the partition to finish.") from None
    kinds = Counter(a.kind for a in actions)
    summary = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
    context.log.info(f"{day}: {'dry run, would ' if dry_run else ''}{summary}; Xero requests {stats['requests']}")
    return dg.MaterializeResult(metadata={
        "work_date": day.isoformat(),
        "dry_run": dry_run,
        "dry_run_reason": gate or ("XERO_PUSH_ENABLED is not true" if dry_run and config.dry_run is None else ""),
        "force": config.force,
        "approved_entries": len(wanted) + len(invalid),
        **{f"planned_{k}": kinds[k] for k in ("create", "update", "delete", "unchanged", "invalid", "conflict")},
        **{k: done[k] for k in ("created", "updated", "deleted", "failed", "conflicts", "postponed", "duplicates_deleted")},
        "made_by_hand_in_xero": len(listing.by_hand),
        "identity": halo.keyed.identity if halo.keyed.rows else "none",
        "ledger_rekeyed": len(moved),
        "outside_range": halo.outside_range,
        "unreadable_approvals": len(halo.unreadable),
        "repeated_keys": len(halo.keyed.repeated),
        "plan": dg.MetadataValue.md(plan_table(actions)),
        "xero_requests": stats["requests"],
        "day_limit_remaining": stats.get("day_limit_remaining"),
        "minute_limit_remaining": stats.get("minute_limit_remaining"),
        "halo_requests": halo_stats["requests"],
        "duration_s": round(time.monotonic() - began, 3),
        "triggered_by": trigger_of(context),
    }, check_results=[dg.AssetCheckResult(
        check_name="xero_halo_day_as_expected", passed=not surprises, severity=dg.AssetCheckSeverity.WARN,
        metadata={"findings": len(surprises), "details": "\n".join(surprises[:PLAN_ROWS]) or "none"})])


def _ledger_problems(statuses: tuple[str, ...], warehouse: WarehouseResource) -> list[sa.Row]:
    with warehouse.engine.connect() as conn:
        return conn.execute(sa.select(ledger).where(ledger.c.status.in_(statuses)).order_by(ledger.c.work_date, ledger.c.entry_key)).all()


def _listed(rows: list[sa.Row]) -> str:
    return "\n".join(f"{r.work_date} Halo entry {r.entry_key} ({r.status}): {r.last_error}" for r in rows[:PLAN_ROWS]) or "none"


@dg.asset_check(asset=xero_time_entries, name="xero_entries_pushable")
def xero_entries_pushable(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    """Warns while approved entries cannot go to Xero (unmapped agent or project, bad duration,
    refused by Xero), listing each with the reason."""
    rows = _ledger_problems(("invalid", "failed"), warehouse)
    return dg.AssetCheckResult(passed=not rows, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"entries": len(rows), "details": _listed(rows)})


@dg.asset_check(asset=xero_time_entries, name="xero_no_locked_conflicts")
def xero_no_locked_conflicts(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    """Warns while Halo changed entries that Xero has LOCKED or INVOICED (left untouched)."""
    rows = _ledger_problems(("conflict",), warehouse)
    return dg.AssetCheckResult(passed=not rows, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"entries": len(rows), "details": _listed(rows)})


RECONCILE_CHECKS = {
    "xero_no_vanished_entries": "Fails while entries the ledger pushed are gone from Xero (deleted by hand?).",
    "xero_no_changes_by_hand": "Warns while Xero has entries made by hand, or ours edited by hand, in the open period.",
    "xero_all_approved_pushed": "Warns while approved, pushable Halo entries are not in Xero (when pushing is on).",
    "xero_refresh_token_fresh": "Warns when the stored refresh token was last rotated 30+ days ago (Xero drops it at 60).",
}


def open_days(last: date) -> tuple[date, date]:
    """The open period ending on `last`: the XERO_OPEN_PERIOD_DAYS days before it and `last`."""
    return last - timedelta(days=int(setting("XERO_OPEN_PERIOD_DAYS"))), last


def open_period() -> tuple[date, date]:
    """Today's open period, from XERO_FIRST_DAY at the earliest: the work dates still pushed."""
    first, last = open_days(today())
    return max(first, date.fromisoformat(setting("XERO_FIRST_DAY"))), last


def _read_period(halopsa: HaloPSAResource, context, first: date, last: date) -> HaloDay:
    entries, sheets = [], []
    with halopsa.client(log=context.log.info) as halo:
        for _, _, chunk_entries, chunk_sheets in halo.period(first, last):
            entries += chunk_entries
            sheets += chunk_sheets
        return read_halo(entries, sheets, halo.outside_range)


def findings(wanted: dict[str, Wanted], rows: list[sa.Row], xero_entries: list[dict]) -> list[dict]:
    """The three-way differences between Halo (wanted), the ledger (rows) and Xero (entries)."""
    found = []
    by_id = {e["timeEntryId"]: e for e in xero_entries}
    ledger_ids = {r.xero_time_entry_id for r in rows if r.xero_time_entry_id}
    for entry in xero_entries:
        match = MARKER.search(entry.get("description") or "")
        day = date.fromisoformat(str(entry.get("dateUtc"))[:10])
        if not match:
            found.append({"kind": "made_by_hand", "xero_time_entry_id": entry["timeEntryId"], "entry_key": "",
                          "work_date": day, "detail": f"{entry.get('duration')} min: {entry.get('description')}"})
        elif entry["timeEntryId"] not in ledger_ids:
            found.append({"kind": "unknown_to_ledger", "xero_time_entry_id": entry["timeEntryId"],
                          "entry_key": match.group(1), "work_date": day, "detail": "carries our marker; a force run adopts it"})
    for row in rows:
        if row.status not in ("pushed", "conflict") or not row.xero_time_entry_id:
            continue
        entry = by_id.get(row.xero_time_entry_id)
        if entry is None:
            found.append({"kind": "vanished_from_xero", "xero_time_entry_id": row.xero_time_entry_id,
                          "entry_key": row.entry_key, "work_date": row.work_date, "detail": "a force run makes it again"})
        elif content_hash(xero_content(entry)) != row.content_hash:
            found.append({"kind": "changed_in_xero", "xero_time_entry_id": row.xero_time_entry_id,
                          "entry_key": row.entry_key, "work_date": row.work_date,
                          "detail": f"Xero status {entry.get('status')}; a force run puts Halo's version back unless locked"})
    pushed = {r.entry_key for r in rows if r.status in ("pushed", "conflict") and r.xero_time_entry_id}
    pushed |= {r.ticket_key for r in rows if r.status in ("pushed", "conflict") and r.xero_time_entry_id and r.ticket_key}
    pushed |= {r.fingerprint for r in rows if r.status in ("pushed", "conflict") and r.xero_time_entry_id and r.fingerprint}
    for entry_id, want in sorted(wanted.items()):
        if entry_id not in pushed and not set(want.other_keys) & pushed:
            found.append({"kind": "approved_not_in_xero", "xero_time_entry_id": "", "entry_key": entry_id,
                          "work_date": date.fromisoformat(want.payload["dateUtc"][:10]), "detail": "the next push of that date sends it"})
    return found


@dg.asset(
    deps=[agent_mappings],
    group_name=GROUP,
    kinds={"xero", "halopsa", "sql"},
    pool=GROUP,
    tags={"sync/cadence": "daily"},
    check_specs=[dg.AssetCheckSpec(name, asset="xero_reconciliation", description=text) for name, text in RECONCILE_CHECKS.items()],
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
    began = time.monotonic()
    first, last = open_period()
    projects, problems = read_project_mappings(mapping_files.project_mappings_path())
    if problems:
        raise dg.Failure(description=f"{mapping_files.project_mappings_path().name}:\n" + "\n".join(problems), allow_retries=False)
    token_age = xero.token_store(warehouse.engine).age()
    try:
        halo = _read_period(halopsa, context, first, last)
        with warehouse.engine.connect() as conn:
            users = dict(conn.execute(sa.select(mappings_table.c.halo_agent_id, mappings_table.c.xero_user_id)
                                      .where(mappings_table.c.xero_user_id.is_not(None))).all())
            rows = conn.execute(sa.select(ledger).where(ledger.c.work_date.between(first, last))).all()
        wanted, _ = wanted_entries(halo, users, projects)
        with xero.client(warehouse.engine, log=context.log.info) as client:
            xero_entries = [e for p in sorted(projects.project_ids() | {r.xero_project_id for r in rows if r.xero_project_id})
                            for e in client.time_entries(p, first, last)]
            stats = client.stats()
    except ProviderAuthError as error:
        raise dg.Failure(description=str(error), allow_retries=False) from None
    except ProviderError as error:
        raise dg.Failure(description=f"{error}. The previous findings stay.") from None
    found = findings(wanted, rows, xero_entries)
    with warehouse.engine.begin() as conn:
        lock_for_replace(conn, findings_table)
        conn.execute(findings_table.delete())
        if found:
            conn.execute(findings_table.insert(), [{**f, "found_at": utcnow()} for f in found])
    kinds = Counter(f["kind"] for f in found)
    context.log.info(f"{first}..{last}: {dict(kinds) or 'Halo, ledger and Xero agree'}; Xero requests {stats['requests']}")

    def listed(*names: str) -> str:
        lines = [f"{f['kind']}: {f['work_date']} Halo {f['entry_key'] or '-'} Xero {f['xero_time_entry_id']} {f['detail']}"
                 for f in found if f["kind"] in names]
        return "\n".join(lines[:PLAN_ROWS]) or "none"

    stale = token_age is not None and token_age >= timedelta(days=30)
    checks = [
        dg.AssetCheckResult(check_name="xero_no_vanished_entries", passed=not kinds["vanished_from_xero"],
                            severity=dg.AssetCheckSeverity.ERROR,
                            metadata={"entries": kinds["vanished_from_xero"], "details": listed("vanished_from_xero")}),
        dg.AssetCheckResult(check_name="xero_no_changes_by_hand", severity=dg.AssetCheckSeverity.WARN,
                            passed=not (kinds["made_by_hand"] or kinds["changed_in_xero"] or kinds["unknown_to_ledger"]),
                            metadata={"entries": kinds["made_by_hand"] + kinds["changed_in_xero"] + kinds["unknown_to_ledger"],
                                      "details": listed("made_by_hand", "changed_in_xero", "unknown_to_ledger")}),
        dg.AssetCheckResult(check_name="xero_all_approved_pushed", severity=dg.AssetCheckSeverity.WARN,
                            passed=not (push_enabled() and kinds["approved_not_in_xero"]),
                            metadata={"entries": kinds["approved_not_in_xero"], "push_enabled": push_enabled(),
                                      "details": listed("approved_not_in_xero")}),
        dg.AssetCheckResult(check_name="xero_refresh_token_fresh", severity=dg.AssetCheckSeverity.WARN, passed=not stale,
                            metadata={"days_since_rotation_before_this_run": round(token_age.total_seconds() / 86400, 1) if token_age else None}),
    ]
    return dg.MaterializeResult(
        metadata={"period": f"{first}..{last}", "halo_entries": len(halo.keyed.rows), "outside_range": halo.outside_range, "approved_pushable": len(wanted),
                  "ledger_rows": len(rows), "xero_entries": len(xero_entries), **{k: kinds[k] for k in sorted(kinds)},
                  "xero_requests": stats["requests"], "duration_s": round(time.monotonic() - began, 3)},
        check_results=checks,
    )


assets = [xero_time_entries, xero_reconciliation]
asset_checks = [xero_entries_pushable, xero_no_locked_conflicts]
