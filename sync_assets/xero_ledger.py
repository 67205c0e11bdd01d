"""Xero push, the ledger and the calls: `xero_ledger` remembers, per Halo entry, its Xero id and
the hash of the content Xero holds; a listing of the day in Xero is adopted as the truth where
the two disagree; the plan (sync_assets/xero_plan.py) is applied over HTTP, every outcome
committed to the ledger as it happens so a crash loses at most one step.
"""

from collections import Counter
from dataclasses import replace
from datetime import date
from typing import Any

import dagster as dg
import sqlalchemy as sa

from resources.http import RequestRejected
from resources.records import content_hash
from resources.warehouse import WarehouseResource, rekey, upsert, utcnow
from resources.xero import DayBudgetSpent, EntryLocked, Postpone, XeroClient, work_date_of
from resources.xero_tables import xero_ledger as ledger_table
from sync_assets.xero_plan import MARKER, Action, Held, Listing, idempotency_key, xero_content


def read_held(conn: sa.Connection, day: date, rows: list[dict]) -> tuple[dict[str, Held], list[tuple[str, str]]]:
    """The ledger's rows for the day and for these entries, by entry key, after re-keying rows
    made under another key of the same entry (see `rekey`); and the keys moved. The caller
    commits the move, or (a dry run) does not."""
    moved = rekey(conn, ledger_table, rows, ledger_table.c.work_date == day)
    keys = sorted(r["entry_key"] for r in rows)
    t = ledger_table
    found = conn.execute(sa.select(t).where((t.c.work_date == day) | t.c.entry_key.in_(keys))).all()
    return {r.entry_key: Held(r.status, r.xero_time_entry_id, r.xero_project_id, r.content_hash, r.attempts, r.work_date,
                              marker=r.marker) for r in found}, moved


class Ledger:
    """Writes to `xero_ledger`, one committed row at a time so a crash loses at most one step."""

    def __init__(self, warehouse: WarehouseResource, day: date, entries: dict[str, dict]):
        self.engine = warehouse.engine
        self.day = day
        self.entries = entries  # entry key -> the entry's row, for its agent and other keys

    def write(self, entry_key: str, status: str, **values: Any) -> None:
        entry = self.entries.get(entry_key, {})
        row = {"entry_key": entry_key, "work_date": self.day, "status": status, "updated_at": utcnow(), **values}
        if entry:
            row |= {"agent_id": entry["agent_id"], "ticket_key": entry["ticket_key"], "fingerprint": entry["fingerprint"]}
        t = ledger_table
        with self.engine.begin() as conn:
            if conn.execute(sa.select(t.c.attempts).where(t.c.entry_key == entry_key)).first():
                conn.execute(t.update().where(t.c.entry_key == entry_key).values(**row))
            else:
                upsert(conn, t, [{"attempts": 0, "marker": entry_key, **row}])

    def write_held(self, held: dict[str, Held]) -> None:
        """Every entry as `held` says (after a listing was adopted)."""
        for entry_key, have in held.items():
            self.write(entry_key, have.status, xero_time_entry_id=have.xero_id, xero_project_id=have.project_id,
                       content_hash=have.hash, marker=have.marker or entry_key)

    def write_verdicts(self, actions: list[Action]) -> None:
        """What the plan decided without a call: entries that cannot go, are locked or wait (those
        already in Xero keep their row as it is), and entries the listing showed already pushed."""
        for action in actions:
            if action.kind in ("invalid", "conflict"):
                self.write(action.entry_key, action.kind, last_error=action.reason)
            elif action.kind == "deferred" and (action.have is None or action.have.xero_id is None):
                self.write(action.entry_key, "deferred", last_error=action.reason)
            elif action.kind == "unchanged" and action.have.status != "pushed":
                self.write(action.entry_key, "pushed", last_error=None)


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
            entry_key = by_marker.get(match.group(1), match.group(1))
            kept = listing.ours.get(entry_key)
            have = held.get(entry_key)
            if kept is None:
                listing.ours[entry_key] = entry
            elif have and entry.get("timeEntryId") == have.xero_id:
                listing.duplicates.append(kept)
                listing.ours[entry_key] = entry
            else:
                listing.duplicates.append(entry)
    return listing


def adopt(held: dict[str, Held], listing: Listing, listed_projects: set[str], day: date) -> dict[str, Held]:
    """What `held` says once the listing is adopted: Xero's truth wins over the ledger's memory.
    A new mapping; `held` is left as the ledger read it."""
    adopted = {key: replace(have) for key, have in held.items()}
    for entry_key, entry in listing.ours.items():
        have = adopted.setdefault(entry_key, Held("pushed", work_date=day))
        have.marker = MARKER.search(entry["description"]).group(1)
        have.xero_id, have.project_id = entry["timeEntryId"], entry.get("projectId")
        have.hash, have.xero_status = content_hash(xero_content(entry)), entry.get("status")
        have.status = "pushed" if have.status in ("pending", "failed", "deleted", "postponed", "invalid", "deferred") else have.status
    for entry_key, have in adopted.items():
        # Only the listed day counts: an entry moved here from another day still has its Xero
        # entry on that day, and is updated (moved), not made again.
        on_listed_day = have.project_id in listed_projects and have.work_date == day
        if entry_key not in listing.ours and on_listed_day and have.xero_id is not None:
            have.status, have.xero_id = "deleted", None  # vanished from Xero (or never made): make it again
    return adopted


def adopt_listing(client: XeroClient, project_ids: set[str], day: date, held: dict[str, Held],
                  ledger: Ledger | None) -> tuple[Listing, dict[str, Held]]:
    """List the day in Xero for these projects; the listing, and `held` with it adopted (see
    `adopt`), written to the ledger unless `ledger` is None (a dry run)."""
    listing = list_day(client, project_ids, day, held)
    adopted = adopt(held, listing, project_ids, day)
    if ledger is not None:
        ledger.write_held(adopted)
    return listing, adopted


def apply(context: dg.AssetExecutionContext, client: XeroClient, ledger: Ledger, actions: list[Action],
          duplicates: list[dict]) -> Counter:
    """Make the planned calls, then delete `duplicates` (our entries made twice; a force run
    passes the listing's); every outcome lands in the ledger as it happens."""
    done: Counter = Counter()
    calls = [a for a in actions if a.kind in ("create", "update", "delete")]
    if calls or duplicates:
        client.connect()
    for position, action in enumerate(calls):
        try:
            if client.day_budget_low():
                raise DayBudgetSpent(f"Xero's day budget is down to {client.budget.day_remaining} calls")
            _call(client, ledger, action)
            done[f"{action.kind}d"] += 1
        except Postpone as error:  # the day's budget, or a wait longer than a run should make
            for later in calls[position:]:
                if later.kind == "create":
                    ledger.write(later.entry_key, "postponed", last_error="Xero's day budget is spent; the next run goes on")
            done["postponed"] = len(calls) - position
            context.log.warning(f"{error}: {done['postponed']} changes postponed to the next run")
            break
        except RequestRejected as error:
            locked = isinstance(error, EntryLocked)  # from the entry's listed status, not the message's wording
            ledger.write(action.entry_key, "conflict" if locked else "failed", last_error=error.detail[:500])
            done["conflicts" if locked else "failed"] += 1
            context.log.warning(f"Halo entry {action.entry_key}: {action.kind} refused by Xero: {error.detail[:200]}")
    for duplicate in duplicates:
        client.delete(duplicate["projectId"], duplicate["timeEntryId"], work_date_of(duplicate.get("dateUtc")))
        done["duplicates_deleted"] += 1
    return done


def _call(client: XeroClient, ledger: Ledger, action: Action) -> None:
    """One planned change: the ledger row is committed before each request (`pending` with the
    Idempotency-Key before a POST), so a crash between the two is found and adopted next run."""
    have, want = action.have, action.want
    attempts = (have.attempts if have else 0) + 1
    if action.kind == "update" and have.project_id != want.project_id:  # a time entry cannot move between projects
        client.delete(have.project_id, have.xero_id, have.work_date)
        ledger.write(action.entry_key, "deleted", xero_time_entry_id=None, attempts=attempts)
        attempts += 1
        action = Action("create", action.entry_key, want=want)
    if action.kind == "create":
        key = idempotency_key("create", action.entry_key, want.hash, attempts)
        ledger.write(action.entry_key, "pending", xero_project_id=want.project_id, idempotency_key=key, attempts=attempts,
                     last_error=None, marker=MARKER.search(want.payload["description"]).group(1))
        entry = client.create(want.project_id, want.payload, key)
        ledger.write(action.entry_key, "pushed", xero_time_entry_id=entry["timeEntryId"], content_hash=want.hash, pushed_at=utcnow())
    elif action.kind == "update":
        key = idempotency_key("update", action.entry_key, want.hash, attempts)
        ledger.write(action.entry_key, have.status, idempotency_key=key, attempts=attempts)
        client.update(want.project_id, have.xero_id, want.payload, key, have.work_date)
        ledger.write(action.entry_key, "pushed", content_hash=want.hash, pushed_at=utcnow(), last_error=None)
    else:
        client.delete(have.project_id, have.xero_id, have.work_date)
        ledger.write(action.entry_key, "deleted", xero_time_entry_id=None, attempts=attempts, pushed_at=utcnow(), last_error=None)
