"""`GET /api/v1/status`: per synced asset the light, the last run, the last success, the next
scheduled start and whether the first sync happened: the JSON of `workforce-sync status --json`,
built by the same functions (cli.py `status`, `status_json`), so the CLI and a host application's
navigation light never disagree."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from api.keys import require
from api.problems import PROBLEM_SCHEMA

router = APIRouter(tags=["status"])


class LastRun(BaseModel):
    run_id: str
    started_utc: str | None
    finished_utc: str | None
    result: str
    rows: int | None = None


class AssetStatus(BaseModel):
    asset: str
    light: str | None  # green / yellow / red / unknown; null for an asset without a light
    last_run: LastRun | None
    last_success_utc: str | None
    last_failure_utc: str | None
    failed_run: str | None
    next_scheduled_start_utc: str | None
    next_schedule: str | None
    sensors: list[str]
    first_sync_done: bool


def status_rows(service) -> list[dict]:
    import cli  # the CLI's own status: one shape for both

    defs = service.defs
    return cli.status_json(defs, service.instance, cli.status(defs, service.instance))


@router.get("/status", response_model=list[AssetStatus], dependencies=[require("read")],
            responses={401: PROBLEM_SCHEMA, 403: PROBLEM_SCHEMA},
            summary="Each synced asset's light, last run, last success and next scheduled start")
def get_status(request: Request) -> list[dict]:
    return status_rows(request.app.state.service)
