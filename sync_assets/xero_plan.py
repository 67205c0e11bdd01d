"""Xero push, the pure part: what Halo said, what each approved entry should be in Xero, and the
plan that turns what Xero holds into that. No database, no HTTP: the ledger and the calls are in
sync_assets/xero_ledger.py, the assets in sync_assets/xero.py.

Names used throughout: an entry is known by its entry key (`entry_key`, resources/halo.py
`key_entries`); `wanted` maps entry keys to what should be in Xero (one a `Wanted`, called
`want`), `held` maps them to what the ledger or a listing says Xero holds (one a `Held`, `have`).
"""

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from resources.halo import KeyedEntries, key_entries, timesheet_row
from resources.mappings import ProjectMappings
from resources.records import content_hash
from resources.xero import LOCKED_STATUSES, MAX_DURATION_MIN, utc_stamp, work_date_of

# `[halo #123]` (an id, as before entry keys), `[halo t12345.7]`, `[halo f0a1b2...]`
MARKER = re.compile(r"\[halo ([^\]\s]+)\]$")
PLAN_ROWS = 200


@dataclass(frozen=True)
class Wanted:
    """What one approved Halo entry should be in Xero."""

    entry_key: str
    agent_id: int
    project_id: str
    payload: dict[str, Any]
    other_keys: tuple[str, ...] = ()  # the entry's ticket key and fingerprint

    def marked(self, marker: str) -> "Wanted":
        """The same entry, its description ending in another marker (the one Xero already has)."""
        text = MARKER.sub(f"[halo {marker}]", self.payload["description"])
        return Wanted(self.entry_key, self.agent_id, self.project_id, {**self.payload, "description": text}, self.other_keys)

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
    kind: str  # create | update | delete | unchanged | invalid | conflict | deferred
    entry_key: str
    reason: str = ""
    want: Wanted | None = None
    have: Held | None = None


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

    def surprises(self) -> list[str]:
        """Where Halo's answer contradicts what the push assumes (check xero_halo_day_as_expected)."""
        found = [f"approval of agent {a} on {d} cannot be read ({why}); that day's entries are held back"
                 for (a, d), why in sorted(self.unreadable.items())]
        found += [f"entries identical in every field within Halo's answer (kept apart as {k}~2, ...)" for k in self.keyed.repeated]
        found += [f"key {k} carried by different entries in Halo's answer: held back" for k in self.keyed.collisions]
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


def _unpushable(row: dict, users: dict[int, str], mapping: Any) -> str | None:
    """Why an approved entry cannot go to Xero, or None."""
    if row["agent_id"] not in users:
        return f"agent {row['agent_id']} has no xero_user_id in the agent mapping file"
    if mapping is None:
        return (f"no Xero project for client {row['client_id']} ({row['client_name']}), contract {row['contract_id']}, "
                f"ticket {row['ticket_id']} in the project mapping file")
    if not 1 <= row["minutes"] <= MAX_DURATION_MIN:
        return f"duration {row['minutes']} min is outside Xero's 1..{MAX_DURATION_MIN}"
    return None


def wanted_entries(halo: HaloDay, users: dict[int, str], projects: ProjectMappings) -> tuple[dict[str, Wanted], dict[str, str]]:
    """The approved work entries as Xero entries, and the approved ones that cannot go, with why.
    Breaks, leave and other time are never billed (`time_kind`). An entry whose day's approval
    cannot be read cannot go either: it is held back and named."""
    wanted, invalid = {}, {}
    for row in halo.keyed.rows:
        if row["time_kind"] != "work":
            continue
        day = (row["agent_id"], row["work_date"])
        if day in halo.unreadable:
            invalid[row["entry_key"]] = f"the timesheet's approval cannot be read: {halo.unreadable[day]}"
            continue
        if day not in halo.approved:
            continue
        mapping = projects.find(row["client_id"], row["contract_id"], row["ticket_id"])
        problem = _unpushable(row, users, mapping)
        if problem:
            invalid[row["entry_key"]] = problem
            continue
        wanted[row["entry_key"]] = Wanted(row["entry_key"], row["agent_id"], mapping.xero_project_id, {
            "userId": users[row["agent_id"]], "taskId": mapping.xero_task_id, "dateUtc": utc_stamp(row["start_at"]),
            "duration": row["minutes"], "description": describe(row)},
            tuple(k for k in (row["ticket_key"], row["fingerprint"]) if k))
    return wanted, invalid


def deferred_entries(halo: HaloDay, reason: str) -> dict[str, str]:
    """The approved entries, each waiting with `reason`: what the plan rests on has not loaded yet."""
    return {row["entry_key"]: reason for row in halo.keyed.rows
            if row["time_kind"] == "work" and (row["agent_id"], row["work_date"]) in halo.approved}


def defer(deferred: dict[str, str], held: dict[str, Held]) -> list[Action]:
    """The plan of a day that cannot be planned yet: every approved entry waits, and nothing in
    Xero is touched (without mappings every entry we pushed would look un-approved: a delete)."""
    return [Action("deferred", entry_key, reason, have=held.get(entry_key)) for entry_key, reason in sorted(deferred.items())]


def plan(wanted: dict[str, Wanted], invalid: dict[str, str], held: dict[str, Held], force: bool) -> list[Action]:
    """What to do for each entry: the difference between what should be and what Xero holds."""
    actions = []
    for entry_key, want in sorted(wanted.items()):
        have = held.get(entry_key)
        if have is None or have.xero_id is None:
            actions.append(Action("create", entry_key, want=want, have=have))
        elif have.hash == want.hash and have.status in ("pushed", "conflict"):
            actions.append(Action("unchanged", entry_key, want=want, have=have))
        elif have.xero_status in LOCKED_STATUSES or (have.status == "conflict" and not force):
            actions.append(Action("conflict", entry_key, f"changed in Halo, but Xero has it {have.xero_status or 'LOCKED or INVOICED'}", want, have))
        else:
            actions.append(Action("update", entry_key, want=want, have=have))
    for entry_key, reason in sorted(invalid.items()):
        actions.append(Action("invalid", entry_key, reason, have=held.get(entry_key)))
    for entry_key, have in sorted(held.items()):
        if entry_key in wanted or entry_key in invalid or have.xero_id is None:
            continue
        if have.xero_status in LOCKED_STATUSES or (have.status == "conflict" and not force):
            actions.append(Action("conflict", entry_key, "un-approved or deleted in Halo, but Xero has it locked", have=have))
        else:
            actions.append(Action("delete", entry_key, "un-approved or deleted in Halo", have=have))
    return actions


def idempotency_key(action: str, entry_key: str, content: str, attempt: int) -> str:
    """Retries of one request share a key; the next attempt (a re-creation after a delete, or
    after a listing showed the last POST never arrived) gets a new one."""
    digest = hashlib.sha256(f"{action}:{entry_key}:{content}:{attempt}".encode()).hexdigest()[:40]
    return f"halo-{re.sub(r'[^A-Za-z0-9.]', '', entry_key)[:40]}-{action}-{digest}"


def keep_markers(wanted: dict[str, Wanted], held: dict[str, Held]) -> dict[str, Wanted]:
    """Entries already in Xero under another marker (an old `#id`) keep it: re-marking them
    would be an update of every such entry, and a conflict where Xero has them locked."""
    def kept(key: str) -> str | None:
        have = held.get(key)
        return have.marker if have and have.xero_id and have.marker not in (None, key) else None

    return {k: w.marked(kept(k)) if kept(k) else w for k, w in wanted.items()}


def plan_table(actions: list[Action]) -> str:
    shown = [a for a in actions if a.kind != "unchanged"][:PLAN_ROWS]
    lines = ["| action | Halo entry | minutes | date (UTC) | Xero entry | reason |", "|---|---|---|---|---|---|"]
    for a in shown:
        payload = a.want.payload if a.want else {}
        lines.append(f"| {a.kind} | {a.entry_key} | {payload.get('duration', '')} | {payload.get('dateUtc', '')} | "
                     f"{(a.have.xero_id if a.have else None) or ''} | {a.reason.replace('|', '/')} |")
    return "\n".join(lines) if shown else "nothing to change"


def _finding(kind: str, xero_id: str, entry_key: str, work_date: date, detail: str) -> dict:
    return {"kind": kind, "xero_time_entry_id": xero_id, "entry_key": entry_key, "work_date": work_date, "detail": detail}


def findings(wanted: dict[str, Wanted], rows: list, xero_entries: list[dict]) -> list[dict]:
    """The three-way differences between Halo (wanted), the ledger (its rows) and Xero (entries)."""
    found = []
    ledger_ids = {r.xero_time_entry_id for r in rows if r.xero_time_entry_id}
    for entry in xero_entries:
        match = MARKER.search(entry.get("description") or "")
        day = work_date_of(entry.get("dateUtc"))
        if not match:
            found.append(_finding("made_by_hand", entry["timeEntryId"], "", day, f"{entry.get('duration')} min: {entry.get('description')}"))
        elif entry["timeEntryId"] not in ledger_ids:
            found.append(_finding("unknown_to_ledger", entry["timeEntryId"], match.group(1), day, "carries our marker; a force run adopts it"))
    by_id = {e["timeEntryId"]: e for e in xero_entries}
    pushed_rows = [r for r in rows if r.status in ("pushed", "conflict") and r.xero_time_entry_id]
    for row in pushed_rows:
        entry = by_id.get(row.xero_time_entry_id)
        if entry is None:
            found.append(_finding("vanished_from_xero", row.xero_time_entry_id, row.entry_key, row.work_date, "a force run makes it again"))
        elif content_hash(xero_content(entry)) != row.content_hash:
            found.append(_finding("changed_in_xero", row.xero_time_entry_id, row.entry_key, row.work_date,
                                  f"Xero status {entry.get('status')}; a force run puts Halo's version back unless locked"))
    pushed = {key for r in pushed_rows for key in (r.entry_key, r.ticket_key, r.fingerprint) if key}
    for entry_key, want in sorted(wanted.items()):
        if entry_key not in pushed and not set(want.other_keys) & pushed:
            found.append(_finding("approved_not_in_xero", "", entry_key, work_date_of(want.payload["dateUtc"]),
                                  "the next push of that date sends it"))
    return found
