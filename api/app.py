"""The API's application: `create_app()` builds it over the Dagster instance at `DAGSTER_HOME`,
the code location's definitions (read for the syncs, their jobs and schedules; nothing is run in
this process) and the warehouse the syncs write. Runs are launched through the Dagster
webserver at `API_LAUNCH_URL`, so the daemon's run queue and the pools decide when they
start, as for a schedule's runs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property

import dagster as dg
import sqlalchemy as sa
from fastapi import FastAPI, Request
from starlette.middleware.base import BaseHTTPMiddleware

import providers  # noqa: F401  (the registry's tables join the warehouse's before it is opened)
from api import problems
from resources.organisations import current
from resources.settings import ensure_dagster_home, local_warehouse_url, setting
from resources.warehouse import engine_for

PREFIX = "/api/v1"
MAX_BODY_BYTES = 256 * 1024  # a webhook is a few KiB; the proxy holds bodies to the same size


@dataclass
class Service:
    """What every request reads: loaded once per process."""

    instance: dg.DagsterInstance
    webserver_url: str
    warehouse_url: str
    warehouse_schema: str | None

    @cached_property
    def defs(self) -> dg.Definitions:
        from definitions import defs as load_definitions

        return load_definitions()

    @cached_property
    def engine(self) -> sa.Engine:
        return engine_for(self.warehouse_url, self.warehouse_schema)


def service_from_environment() -> Service:
    ensure_dagster_home()
    return Service(instance=dg.DagsterInstance.get(), webserver_url=setting("API_LAUNCH_URL"),
                   warehouse_url=os.environ.get("WAREHOUSE_URL") or local_warehouse_url(),
                   warehouse_schema=setting("WAREHOUSE_SCHEMA"))


class BodyLimit(BaseHTTPMiddleware):
    """A body over MAX_BODY_BYTES is refused before it is read (413), by its Content-Length, or
    (chunked) as it arrives."""

    async def dispatch(self, request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return problems.problem_response(413, "request too large", f"the body may hold at most {MAX_BODY_BYTES} bytes",
                                             request.url.path)
        if length is None and request.method in ("POST", "PUT", "PATCH"):
            body = b""
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    return problems.problem_response(413, "request too large", f"the body may hold at most {MAX_BODY_BYTES} bytes",
                                                     request.url.path)
            request._body = body  # read once: the route sees it as if unread
        return await call_next(request)


def create_app(service: Service | None = None) -> FastAPI:
    from api import events, runs, status

    # An organisation's API (one of several, on its socket) answers under /api/v1/orgs/<name>,
    # the path the proxy routes by, so the links it gives (a run's Location) work as they are.
    prefix = PREFIX + (f"/orgs/{current()}" if current() else "")
    app = FastAPI(title="workforce-sync", version="1", summary="Status, sync now, and events in, for host applications",
                  openapi_url=f"{prefix}/openapi.json", docs_url=f"{prefix}/docs", redoc_url=None)
    app.state.service = service or service_from_environment()
    problems.install(app)
    app.add_middleware(BodyLimit)
    for module in (status, runs, events):
        app.include_router(module.router, prefix=prefix)
    return app
