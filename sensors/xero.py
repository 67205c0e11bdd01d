"""The approval sensor: when a manager approves timesheets in Halo, push those work dates to Xero.

The cursor is the newest approval it has acted on, as Halo reports it: the timesheet's
approval moment (`submissiondate` of its approval, the only time Halo's approval record carries)
and the timesheet id to order approvals of the same second. Not the wall clock, so an approval
that Halo reports late is still seen while it lies in the open period.
"""

import json
from datetime import date, datetime

import dagster as dg

from resources.halo import HaloPSAResource, timesheet_row
from resources.http import ProviderError
from resources.settings import setting
from sync_assets.xero import open_period, xero_time_entries

# The sensor's cursor moves on when it asks for a run, so a run that dies must be retried by
# Dagster (run_retries in the instance's dagster.yaml); pushing a day again is harmless.
xero_push_job = dg.define_asset_job("xero_push_job", selection=[xero_time_entries], tags={"dagster/max_retries": "3"})
NEVER = datetime(1, 1, 1)


def approvals_after(sheets: list[dict], after: tuple[datetime, int], unreadable: list[str] | None = None
                    ) -> list[tuple[datetime, int, date]]:
    """(approved at, timesheet id, work date) of approved timesheets newer than `after`, oldest
    first. Timesheets whose approval cannot be read are named in `unreadable`."""
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
        if row["approved"] and (row["submitted_at"] or NEVER, row["id"]) > after:
            found.append((row["submitted_at"] or NEVER, row["id"], row["work_date"]))
    return sorted(found)


def _cursor(text: str | None) -> tuple[datetime, int]:
    if not text:
        return NEVER, 0
    data = json.loads(text)
    return datetime.fromisoformat(data["approved_at"]), int(data["timesheet_id"])


@dg.sensor(
    name="xero_approvals",
    target=xero_push_job,
    minimum_interval_seconds=int(setting("XERO_APPROVAL_POLL_SECONDS")),
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def xero_approvals(context: dg.SensorEvaluationContext, halopsa: HaloPSAResource) -> dg.SensorResult | dg.SkipReason:
    """Requests one Xero push per work date with timesheets approved since the last tick."""
    first, last = open_period()
    seen = _cursor(context.cursor)
    unreadable: list[str] = []
    try:
        # Per tick: a token when it has expired, the agents, and one request for the open period's timesheets.
        with halopsa.client(log=context.log.info) as halo:
            agent_ids = sorted(int(a["id"]) for a in halo.agents())
            approvals = approvals_after(halo.timesheets(first, last, agent_ids), seen, unreadable)
            requests = halo.stats()["requests"]
    except ProviderError as error:
        return dg.SkipReason(f"could not read approvals from Halo: {error}")
    for problem in unreadable[:20]:
        context.log.warning(f"approval cannot be read, that day is not pushed until it can: {problem}")
    context.log.info(f"{len(approvals)} new approvals, {len(unreadable)} unreadable, in {requests} Halo requests")
    if not approvals:
        return dg.SkipReason(f"no approvals in {first}..{last} since {seen[0]:%Y-%m-%d %H:%M:%S} (timesheet {seen[1]})")
    newest: dict[date, tuple[datetime, int]] = {}
    for approved_at, sheet_id, work_date in approvals:
        newest[work_date] = (approved_at, sheet_id)
    approved_at, sheet_id, _ = approvals[-1]
    context.log.info(f"{len(approvals)} new approvals on {len(newest)} work dates")
    return dg.SensorResult(
        run_requests=[
            # The key names the newest approval of that date: a repeated tick asks nothing new,
            # a later approval on the same date asks again.
            dg.RunRequest(run_key=f"approved-{day}-{at:%Y%m%dT%H%M%S}-{sid}", partition_key=day.isoformat())
            for day, (at, sid) in sorted(newest.items())
        ],
        cursor=json.dumps({"approved_at": approved_at.isoformat(), "timesheet_id": sheet_id}),
    )


jobs = [xero_push_job]
sensors = [xero_approvals]
