"""The approval sensor: when a manager approves timesheets in Halo, push those work dates to Xero.

The cursor is the newest approval it has acted on, as Halo reports it: the timesheet's
approval moment (`submissiondate` of its approval, the only time Halo's approval record carries)
and the timesheet id to order approvals of the same second. Not the wall clock, so an approval
that Halo reports late is still seen while it lies in the open period. The cursor also names
the agents it has asked about: an agent new to the warehouse's `halo_agents` has all of its
open period's approvals taken as new once, whatever their moment.

A read costs one Halo request: the open period's timesheets. The agents come from the warehouse
(kept by the hourly `halo_agents` sync; Halo is asked only before its first sync) and the token
is kept between ticks until it expires.

When it reads: the sensor ticks every few seconds (events.EVENT_CHECK_SECONDS) but reads Halo only when
XERO_APPROVAL_POLL_SECONDS have passed since its last read, or when Halo approval events (table
`inbound_events`, source `halopsa.approvals`) are pending. The poll timer restarts at every read,
so an event moves a read earlier rather than adding one; and no more reads are made in any hour
than the timer alone makes (3600 / XERO_APPROVAL_POLL_SECONDS): a storm of events costs no more
requests than today's poll, it only waits for the hour's reads to free up. A tick that reads
marks the events it saw pending as handled, by the run keys it asks for (or "tick <time>").
The last reads' times are kept in the cursor, not in the process: the daemon evaluates the
sensor in the code server, which may restart, and the instance's last tick is every few seconds.

The mapping sensor: a push plans against the agent mappings as loaded and the project mapping
file, and a date planned before they were right (deferred before the agent mappings' first load,
or invalid for want of a mapping) is not pushed again by any approval. `xero_mapping_changes`
keeps a digest of both and, when it changes, requests a push of each open-period date it affects.
A tick reads the warehouse and the file only; no provider is asked.
"""

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime

import dagster as dg
import sqlalchemy as sa

from dagster._time import get_current_timestamp  # Dagster's clock: frozen in tests

from resources import events
from resources.halo import HaloPSAResource, timesheet_row
from resources.halo_tables import agent_mappings as mappings_table, halo_agents
from resources.http import ProviderError
from resources.mappings import MappingFilesResource
from resources.settings import setting
from resources.warehouse import WarehouseResource
from resources.xero_tables import xero_ledger as ledger_table
from sync_assets.runs import BACKGROUND
from sync_assets.xero import open_period

NEVER = datetime(1, 1, 1)
TICK_WAIT_S = 20.0  # at most this long for Halo's budget in a tick (Dagster gives a tick 60 s)
READ_WINDOW_S = 3600.0  # the reads of the last hour, kept in the cursor to hold them to the poll's


def approvals_after(sheets: list[dict], after: tuple[datetime, int], unreadable: list[str] | None = None,
                    new_agents: frozenset[int] = frozenset()) -> list[tuple[datetime, int, date]]:
    """(approved at, timesheet id, work date) of approved timesheets newer than `after`, or of
    `new_agents` whatever their moment, oldest first. Timesheets whose approval cannot be read
    are named in `unreadable`."""
    found = []
    for sheet in sheets:
        try:
            row = timesheet_row(sheet, "")
        except (ValueError, TypeError, KeyError) as error:
            if unreadable is not None:
                unreadable.append(f"a timesheet without a usable agent or day ({error})")
            continue
        if row["approval_problem"] and unreadable is not None:
            unreadable.append(f"agent {row['agent_id']} on {row['work_date']}: {row['approval_problem']}")
        if row["approved"] and ((row["submitted_at"] or NEVER, row["id"]) > after or row["agent_id"] in new_agents):
            found.append((row["submitted_at"] or NEVER, row["id"], row["work_date"]))
    return sorted(found)


def _cursor(text: str | None) -> tuple[tuple[datetime, int], frozenset[int] | None]:
    """(the newest approval acted on, the agents asked about: None in a cursor from before they were kept)."""
    data = json.loads(text) if text else {}
    if "approved_at" not in data:  # never read (a first read that failed keeps only its time)
        return (NEVER, 0), None
    agents = frozenset(data["agents"]) if "agents" in data else None
    return (datetime.fromisoformat(data["approved_at"]), int(data["timesheet_id"])), agents


def _reads(text: str | None) -> tuple[list[float], bool]:
    """(when the sensor read Halo in the last hour, epoch seconds oldest first: none in a cursor
    from before they were kept; whether the last read failed)."""
    data = json.loads(text) if text else {}
    return [float(t) for t in data.get("reads", [])], bool(data.get("read_failed"))


def read_due(reads: list[float], now: float, poll_s: float, events_pending: bool, last_failed: bool) -> str | None:
    """Why this tick reads Halo ("poll", "event"), or None. A read is due when `poll_s` have passed
    since the last one, or earlier for a pending event (not after a failed read: a Halo that
    fails is not asked again before the timer); never when the last hour already holds as many
    reads as the timer alone makes in an hour."""
    recent = [t for t in reads if now - t < READ_WINDOW_S]
    if len(recent) >= int(READ_WINDOW_S // poll_s):
        return None
    if not recent or now - recent[-1] >= poll_s:
        return "poll"
    return "event" if events_pending and not last_failed else None


def stored_agents(warehouse: WarehouseResource) -> list[int]:
    """Halo's agents as the warehouse has them (disabled ones too: their time still counts); none
    before the first agents sync."""
    try:
        with warehouse.engine.connect() as conn:
            return sorted(conn.execute(sa.select(halo_agents.c.id).where(halo_agents.c.deleted_at.is_(None))).scalars())
    except sa.exc.SQLAlchemyError:
        return []


def xero_approvals(context: dg.SensorEvaluationContext, halopsa: HaloPSAResource, warehouse: WarehouseResource
                   ) -> dg.SensorResult | dg.SkipReason:
    """Requests one Xero push per work date with timesheets approved since the last read of Halo,
    reading it every XERO_APPROVAL_POLL_SECONDS or earlier when an approval event is pending."""
    now = get_current_timestamp()
    reads, last_failed = _reads(context.cursor)
    waiting = events.pending(warehouse.engine, events.HALO_APPROVALS)
    why = read_due(reads, now, float(setting("XERO_APPROVAL_POLL_SECONDS")), bool(waiting), last_failed)
    if why is None:
        return dg.SkipReason(f"not reading Halo: last read {now - reads[-1]:.0f} s ago"
                             + (f"; {len(waiting)} approval events wait for the hour's reads to free up" if waiting else ""))
    # Counted before the read: a read that fails has cost its request too.
    reads = [t for t in reads if now - t < READ_WINDOW_S] + [now]
    first, last = open_period()
    seen, known_agents = _cursor(context.cursor)
    kept = json.loads(context.cursor) if context.cursor else {}
    unreadable: list[str] = []
    try:
        # Per tick: the open period's timesheets; a token only when the kept one has expired, the
        # agents only while the warehouse has none.
        # The tenant's budget is shared with the runs through the warehouse; a tick that would
        # wait long for it (a backfill spent it, or a 429 is being waited out) skips instead.
        with halopsa.client(warehouse.engine, log=context.log.info, keep_token=True, max_wait_s=TICK_WAIT_S) as halo:
            agent_ids = stored_agents(warehouse) or halo.agent_ids()
            new_agents = frozenset(agent_ids) - known_agents if known_agents is not None else frozenset()
            approvals = approvals_after(halo.timesheets(first, last, agent_ids), seen, unreadable, new_agents)
            stats = halo.stats()
    except ProviderError as error:
        # The approvals cursor stays; the events stay pending for the next read.
        return dg.SensorResult(skip_reason=f"could not read approvals from Halo: {error}",
                               cursor=json.dumps({**kept, "reads": reads, "read_failed": True}))
    for problem in unreadable[:20]:
        context.log.warning(f"approval cannot be read, that day is not pushed until it can: {problem}")
    context.log.info(f"{len(approvals)} new approvals, {len(unreadable)} unreadable, in {stats['requests']} Halo requests "
                     f"({stats['rate_limit_remaining']} left in the tenant's rate-limit window)"
                     + (f"; agents new to the sensor: {sorted(new_agents)}" if new_agents else ""))
    newest_seen = max([seen, *((at, sid) for at, sid, _ in approvals)])
    cursor = json.dumps({"approved_at": newest_seen[0].isoformat(), "timesheet_id": newest_seen[1], "agents": agent_ids,
                         "reads": reads})
    newest: dict[date, tuple[datetime, int]] = {}
    for approved_at, sheet_id, work_date in approvals:
        newest[work_date] = max(newest.get(work_date, (NEVER, 0)), (approved_at, sheet_id))
    # The key names the newest approval of that date: a repeated read asks nothing new, a later
    # approval on the same date asks again.
    # The first read takes the whole open period as new: that is a first sync, and it queues as one
    # (sync_assets/runs.py); later pushes keep the job's priority, ahead of the syncs.
    tags = BACKGROUND if "approved_at" not in kept else {}
    requests = [dg.RunRequest(run_key=f"approved-{day}-{at:%Y%m%dT%H%M%S}-{sid}", partition_key=day.isoformat(), tags=tags)
                for day, (at, sid) in sorted(newest.items())]
    # The events seen before the read are answered by it (an approval made before its event was
    # stored is in Halo's answer); one stored during the read waits for the next read.
    events.mark_handled(warehouse.engine, [e.id for e in waiting],
                        " ".join(r.run_key for r in requests) or f"tick {datetime.fromtimestamp(now, UTC):%Y-%m-%dT%H:%M:%SZ}")
    why_text = f"read for {len(waiting)} approval events" if why == "event" else "read on the poll timer"
    if not approvals:
        return dg.SensorResult(skip_reason=f"{why_text}: no approvals in {first}..{last} since "
                                           f"{seen[0]:%Y-%m-%d %H:%M:%S} (timesheet {seen[1]})", cursor=cursor)
    context.log.info(f"{why_text}: {len(approvals)} new approvals on {len(newest)} work dates")
    return dg.SensorResult(run_requests=requests, cursor=cursor)


# -- re-planning when what the push plans against changes --------------------------------------
MAPPING_POLL_SECONDS = 60
WAITING = ("deferred", "invalid")  # ledger statuses a mapping change may let go


@dataclass(frozen=True)
class PlanInputs:
    """What the push plans against: the agent mappings as loaded (Halo agent -> Xero user, None
    where the line has none) and the project mapping file's content, as a digest."""

    agents: dict[int, str | None]
    projects: str

    @property
    def digest(self) -> str:
        text = json.dumps({"agents": sorted(self.agents.items()), "projects": self.projects})
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def plan_inputs(warehouse: WarehouseResource, mapping_files: MappingFilesResource) -> PlanInputs:
    with warehouse.engine.connect() as conn:
        agents = dict(conn.execute(sa.select(mappings_table.c.halo_agent_id, mappings_table.c.xero_user_id)).all())
    try:
        projects = hashlib.sha256(mapping_files.project_mappings_path().read_bytes()).hexdigest()[:16]
    except OSError as error:  # the push refuses such a run, naming the file; its return is a change
        projects = f"unreadable: {error.strerror}"
    return PlanInputs(agents, projects)


def _mapping_cursor(text: str | None) -> tuple[PlanInputs | None, frozenset[str]]:
    """(what the last tick saw, None on the first; the dates it requested under that digest)."""
    if not text:
        return None, frozenset()
    data = json.loads(text)
    return (PlanInputs({int(k): v for k, v in data["agents"].items()}, data["projects"]),
            frozenset(data.get("requested", ())))


def replan_dates(rows: list[tuple[date, str, int | None]], before: PlanInputs | None, now: PlanInputs) -> set[date]:
    """The work dates whose plan a change from `before` (None: not known) to `now` may change,
    from the open period's ledger rows (work date, status, agent): those with entries waiting
    (deferred or invalid); an agent's whose Xero user changed; every one when the project file did."""
    dates = {day for day, status, _ in rows if status in WAITING}
    if before is not None:
        changed = {a for a in before.agents.keys() | now.agents.keys() if before.agents.get(a) != now.agents.get(a)}
        dates |= {day for day, _, agent in rows if agent in changed}
        if before.projects != now.projects:
            dates |= {day for day, _, _ in rows}
    return dates


def xero_mapping_changes(context: dg.SensorEvaluationContext, warehouse: WarehouseResource, mapping_files: MappingFilesResource
                         ) -> dg.SensorResult | dg.SkipReason:
    """Requests a Xero push of each open-period date a change of the mappings affects: the agent
    mappings as loaded (their first load lets deferred dates go) or the project mapping file."""
    first, last = open_period()
    before, requested = _mapping_cursor(context.cursor)
    now = plan_inputs(warehouse, mapping_files)
    if not now.agents:
        return dg.SkipReason("the agent mappings have not loaded yet: approved entries wait (deferred)")
    with warehouse.engine.connect() as conn:
        t = ledger_table
        rows = conn.execute(sa.select(t.c.work_date, t.c.status, t.c.agent_id).where(t.c.work_date.between(first, last))).all()
    if before is not None and before.digest == now.digest:
        # A date deferred by a push that read the mappings just before they loaded still goes.
        dates = {day for day, status, _ in rows if status == "deferred" and day.isoformat() not in requested}
    else:
        dates, requested = replan_dates(rows, before, now), frozenset()
    cursor = json.dumps({"agents": {str(k): v for k, v in sorted(now.agents.items())}, "projects": now.projects,
                         "requested": sorted(requested | {d.isoformat() for d in dates})})
    if not dates:
        changed = before is None or before.digest != now.digest
        skip = f"mappings {'changed' if changed else 'unchanged'} (digest {now.digest}); no date of {first}..{last} to push again"
        return dg.SensorResult(skip_reason=skip, cursor=cursor) if cursor != context.cursor else dg.SkipReason(skip)
    context.log.info(f"mappings as the push plans against them: digest {now.digest}; pushing {len(dates)} work dates again: "
                     + ", ".join(d.isoformat() for d in sorted(dates)))
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"replan-{day}-{now.digest}", partition_key=day.isoformat()) for day in sorted(dates)],
        cursor=cursor,
    )


def sensors() -> list[dg.SensorDefinition]:
    """Built when the code location is: the approval sensor's interval is a setting. Both start
    `xero_push_job` (sync_assets/xero.py), named: the code location resolves it."""
    running = dg.DefaultSensorStatus.RUNNING
    return [
        # Ticks every loop of the daemon; reads Halo on its timer or for an event (see the module).
        dg.sensor(job_name="xero_push_job", name="xero_approvals", minimum_interval_seconds=events.EVENT_CHECK_SECONDS,
                  default_status=running)(xero_approvals),
        dg.sensor(job_name="xero_push_job", name="xero_mapping_changes", minimum_interval_seconds=MAPPING_POLL_SECONDS,
                  default_status=running)(xero_mapping_changes),
    ]
