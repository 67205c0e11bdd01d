"""Runs for host applications: the "sync now" button and the admin tab that follows a run.

`{sync}` is a job's name as the Dagster UI shows it (`GET /api/v1/syncs` lists them), or for a
schedule that targets assets (its job is anonymous) the schedule's name: every job a schedule or a
sensor of the code location launches, so "sync now" launches exactly what the
schedule would. The run is submitted through the Dagster webserver's GraphQL API
(`dagster_graphql.DagsterGraphQLClient`, as the UI's Materialize button does), so the daemon's run
queue and the provider pools start it as they start a scheduled run: there is no second
scheduler. It is tagged `sync/source=api` and `sync/trigger="api: <triggered_by> (key <name>)"`,
which the run history, the alerts and each asset's `triggered_by` metadata show.

A partitioned sync takes `partition` (a contacts hour `2026-11-20-13:00`, a fiscal year `FY2026`,
a work date `2026-11-18`); without one, a time-partitioned sync runs its last partition, as its
schedule does, and a fiscal-year sync needs one named. A second launch is refused (409) while a
run of the same job and partition is queued or running.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import dagster as dg
from dagster._core.definitions.partitions.context import partition_loading_context
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from api.keys import Caller, require
from api.problems import PROBLEM_SCHEMA, Problem
from resources.organisations import current, location_name
from sync_assets.runs import TRIGGER_TAG

router = APIRouter(tags=["runs"])
SOURCE_TAG = "sync/source"
REPOSITORY = "__repository__"
IN_PROGRESS = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
               dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


class Sync(BaseModel):
    sync: str
    job: str
    assets: list[str]
    partitioned: bool
    launched_by: list[str]


class RunRequest(BaseModel):
    triggered_by: str = Field(min_length=1, max_length=200, description="who asked, e.g. the user's e-mail")
    partition: str | None = Field(default=None, min_length=1, max_length=64)


class Launched(BaseModel):
    run_id: str
    sync: str
    partition: str | None


class RunState(BaseModel):
    run_id: str
    sync: str
    status: str
    partition: str | None
    triggered_by: str | None
    started_utc: str | None
    finished_utc: str | None
    steps_done: int
    steps_total: int
    rows: int
    failure: str | None


ANONYMOUS = "__anonymous_asset_job_"  # Dagster's name for the job of a schedule that targets assets


def sync_name(job_name: str) -> str:
    """A job's name, or for a schedule's anonymous asset job the schedule's name that Dagster puts in it."""
    return job_name.removeprefix(ANONYMOUS)


def syncs_of(defs: dg.Definitions) -> dict[str, dict]:
    """Every job a schedule or a sensor launches, by its sync name, with its job, its assets and
    what launches it."""
    repo = defs.get_repository_def()
    found: dict[str, dict] = {}
    targets = [(s.job_name, f"schedule {s.name}") for s in repo.schedule_defs]
    targets += [(t.job_name, f"sensor {s.name}") for s in repo.sensor_defs for t in s.targets]
    for job_name, by in targets:
        if job_name == "__ASSET_JOB":  # the first sync: any asset, once
            continue
        job = repo.get_job(job_name)
        entry = found.setdefault(sync_name(job_name), {"sync": sync_name(job_name), "job": job_name, "launched_by": [], "partitioned": job.partitions_def is not None,
                                            "assets": sorted(k.to_user_string() for k in job.asset_layer.executable_asset_keys)})
        entry["launched_by"].append(by)
    return dict(sorted(found.items()))


def _iso(timestamp: float | None) -> str | None:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds") if timestamp else None


def _partition(job: dg.JobDefinition, asked: str | None, instance: dg.DagsterInstance) -> str | None:
    partitions = job.partitions_def
    if partitions is None:
        if asked is not None:
            raise Problem(422, "invalid request", f"body.partition: the sync {job.name} has no partitions")
        return None
    if asked is None:
        if isinstance(partitions, dg.DynamicPartitionsDefinition):
            known = instance.get_dynamic_partitions(partitions.name)
            raise Problem(422, "invalid request", f"body.partition: the sync {job.name} needs one of {', '.join(known) or '(none yet)'}")
        return partitions.get_last_partition_key()
    with partition_loading_context(dynamic_partitions_store=instance):  # a fiscal year is a key of the instance
        known = partitions.has_partition_key(asked)
    if not known:
        raise Problem(422, "invalid request", f"body.partition: {asked!r} is not a partition of {job.name}")
    return asked


def _client(url: str) -> DagsterGraphQLClient:
    parts = urlsplit(url)
    return DagsterGraphQLClient(parts.hostname, port_number=parts.port, use_https=parts.scheme == "https",
                                path_prefix=parts.path.rstrip("/"), timeout=30)


@router.get("/syncs", response_model=list[Sync], dependencies=[require("read")], responses={401: PROBLEM_SCHEMA, 403: PROBLEM_SCHEMA},
            summary="The syncs a host application may launch: each job a schedule or sensor launches")
def list_syncs(request: Request) -> list[dict]:
    return list(syncs_of(request.app.state.service.defs).values())


@router.post("/syncs/{sync}/runs", status_code=202, response_model=Launched,
             responses={401: PROBLEM_SCHEMA, 403: PROBLEM_SCHEMA, 404: PROBLEM_SCHEMA, 409: PROBLEM_SCHEMA, 422: PROBLEM_SCHEMA,
                        503: PROBLEM_SCHEMA},
             summary="Sync now: launch the job its schedule launches")
def launch(sync: str, body: RunRequest, request: Request, response: Response, caller: Caller = require("trigger")) -> dict:
    service = request.app.state.service
    known = syncs_of(service.defs)
    if sync not in known:
        raise Problem(404, "not found", f"no sync named {sync!r}; the syncs are {', '.join(known)}")
    job = service.defs.get_repository_def().get_job(known[sync]["job"])
    partition = _partition(job, body.partition, service.instance)
    tags = {"dagster/partition": partition} if partition else {}
    running = [r for r in service.instance.get_runs(filters=dg.RunsFilter(job_name=job.name, statuses=IN_PROGRESS, tags=tags), limit=50)
               if ours(r)]
    if running:
        raise Problem(409, "already running", f"run {running[0].run_id} of {sync}"
                      + (f" for {partition}" if partition else "") + " is queued or running", run_id=running[0].run_id)
    tags |= {SOURCE_TAG: "api", TRIGGER_TAG: f"api: {body.triggered_by} (key {caller.name})"}
    try:
        run_id = _client(service.webserver_url).submit_job_execution(
            job.name, repository_location_name=location_name(), repository_name=REPOSITORY, tags=tags)
    except DagsterGraphQLClientError as error:
        # The client says "Exception occured during execution of query" (and the whole query) when
        # no answer came; otherwise the webserver answered and refused, and says why.
        reason = str(error).split("\n")[0]
        if reason.startswith("Exception occured"):
            raise Problem(503, "launch failed", f"the Dagster webserver at API_LAUNCH_URL did not answer; {sync} was not launched") from None
        raise Problem(503, "launch failed", f"the Dagster webserver did not launch {sync}: {reason[:300]}") from None
    response.headers["Location"] = f"{request.url.path.rsplit('/syncs/', 1)[0]}/runs/{run_id}"
    return {"run_id": run_id, "sync": sync, "partition": partition}


def ours(run: dg.DagsterRun) -> bool:
    """Whether a run is this organisation's: with several the instance holds every one's runs,
    under the same job names (a one-organisation installation's are all its own)."""
    if current() is None:
        return True
    return run.remote_job_origin is not None and run.remote_job_origin.location_name == current()


def _failure(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """The first failed step's error, else the run's own failure message."""
    steps = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    for entry in steps:
        error = entry.dagster_event.step_failure_data.error
        if error is not None:
            return f"{entry.dagster_event.step_key}: {error.message.strip()}"
    runs = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    return runs[0].dagster_event.message if runs else None


@router.get("/runs/{run_id}", response_model=RunState, dependencies=[require("read")],
            responses={401: PROBLEM_SCHEMA, 403: PROBLEM_SCHEMA, 404: PROBLEM_SCHEMA}, summary="A run's state, steps, rows and failure")
def get_run(run_id: str, request: Request) -> dict:
    instance = request.app.state.service.instance
    record = instance.get_run_record_by_id(run_id) if len(run_id) <= 64 else None
    if record is None or not ours(record.dagster_run):
        raise Problem(404, "not found", f"no run {run_id!r}")
    run = record.dagster_run
    stats = instance.get_run_step_stats(run_id)
    rows = 0
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        value = entry.asset_materialization.metadata.get("written")
        rows += int(value.value) if value is not None and isinstance(value.value, (int, float)) else 0
    return {
        "run_id": run_id, "sync": sync_name(run.job_name), "status": run.status.value, "partition": run.tags.get("dagster/partition"),
        "triggered_by": run.tags.get(TRIGGER_TAG), "started_utc": _iso(record.start_time), "finished_utc": _iso(record.end_time),
        "steps_done": sum(1 for s in stats if s.status is not None and s.status.value == "SUCCESS"),
        "steps_total": len(run.step_keys_to_execute or []) or len(stats),
        "rows": rows, "failure": _failure(instance, run_id) if run.status == dg.DagsterRunStatus.FAILURE else None,
    }
