"""The production deployment as the deployment and access-control tests start it: `deploy/start`
on free ports against a fresh PostgreSQL instance database, the emulator anchored at the real
today (a real daemon runs on the real clock), and patient waits that say what they saw."""

import itertools
import os
import secrets
import shutil
import signal
import subprocess
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa
from conftest import POSTGRES_ADMIN_URL
from helpers import free_port, wait_until

from emulator import Emulator, halo as halo_emulator
from resources.settings import PROJECT_ROOT

AGENT = 3
OPEN_PERIOD_DAYS = 5  # XERO_OPEN_PERIOD_DAYS of this deployment
WAIT_S = 600  # generous: a busy machine is slow, not wrong; a wait that gives up says what it saw
IN_PROGRESS = (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
               dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING)
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium")
ASSETS_SHOWN = ("ghl_contacts", "halo_timesheets", "employes_employee_snapshots", "xero_time_entries")


def weekdays_before(day: date):
    """Weekdays (the emulator seeds time entries on weekdays) before `day`, newest first."""
    while True:
        day -= timedelta(days=1)
        if day.weekday() < 5:
            yield day


class WorkDays:
    """The work dates the tests approve, derived from the real today: the daemon runs the approval
    sensor on the real clock, and its open period is counted back from the real today
    (XERO_OPEN_PERIOD_DAYS, SYNC_TIMEZONE UTC). The emulator is anchored at the same now, so its
    seeded data ends yesterday."""

    def __init__(self, now: datetime):
        self.today = now.astimezone(UTC).date()
        open_from = self.today - timedelta(days=OPEN_PERIOD_DAYS)
        # Two weekdays inside the open period (four days back hold at least two), one for each sensor test.
        self.approved, self.retried = list(itertools.takewhile(lambda d: d > open_from, weekdays_before(self.today)))[:2]
        # Older than the open period, so only the test's own runs push it.
        self.contested = next(d for d in weekdays_before(open_from))


def wait_for(what: str, check, seen):
    """Poll `check` every 2 s for up to WAIT_S; on giving up, say what `seen` saw."""
    return wait_until(what, check, WAIT_S, seen=seen, every_s=2)


class Deployment:
    def __init__(self, tmp: Path, extra_env: dict[str, str] | None = None):
        self.db = f"workforce_sync_e2e_{secrets.token_hex(4)}"
        self.admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{self.db}"'))
        self.pg_url = self.admin.url.set(database=self.db).render_as_string(hide_password=False)
        self.warehouse_url = self.admin.url.set(database=self.db).render_as_string(hide_password=False)
        self.home = tmp / "dagster_home"
        self.home.mkdir()
        shutil.copy(PROJECT_ROOT / "deploy/dagster.yaml", self.home / "dagster.yaml")
        now = datetime.now(UTC)
        self.days = WorkDays(now)
        self.emulator = Emulator(seed=7, anchor=now, contacts=200)
        # Seeded approvals go up to a week before the anchor: the contested day starts unapproved.
        for (agent_id, day), sheet in self.emulator.halo.timesheets().items():
            if day == self.days.contested and sheet["approval"]["approvalstatus"] == halo_emulator.APPROVED:
                self.emulator.halo.unapprove(agent_id, day)
        self.emulator.start()
        self.web_port = free_port()
        self.log = (tmp / "deploy.log").open("w")
        self.env = {
            **os.environ,
            "DAGSTER_HOME": str(self.home),
            "DAGSTER_PG_URL": self.pg_url,
            "CODE_SERVER_PORT": str(free_port()),
            "DAGSTER_WEBSERVER_PORT": str(self.web_port),
            "VIEWER_WEBSERVER_PORT": str(free_port()),
            "PROXY_HOST": "127.0.0.1",
            "PROXY_PORT": str(free_port()),
            "API_PORT": str(free_port()),
            "SYNC_ENV": "local",
            "EMULATOR_URL": self.emulator.url,
            "WAREHOUSE_URL": self.warehouse_url,
            "WAREHOUSE_SCHEMA": "warehouse",
            "GHL_RECONCILE_CRON": "* * * * *",
            "XERO_APPROVAL_POLL_SECONDS": "5",
            "XERO_OPEN_PERIOD_DAYS": str(OPEN_PERIOD_DAYS),
            "XERO_PUSH_ENABLED": "true",
            **(extra_env or {}),
        }
        self.process = subprocess.Popen([str(PROJECT_ROOT / "deploy/start")], env=self.env, stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self.instance = None

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.web_port}{path}"

    def proxy_url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.env['PROXY_PORT']}{path}"

    def wait_until_up(self) -> None:
        def up():
            assert self.process.poll() is None, f"deploy/start exited: {self.tail()}"
            try:
                return httpx.get(self.url("/server_info"), timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for("the webserver", up, seen=self.tail)
        wait_for("the code location", self.location_loaded, seen=self.tail)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("DAGSTER_PG_URL", self.pg_url)
            self.instance = dg.DagsterInstance.from_config(str(self.home))

    def location_loaded(self) -> bool:
        """The webserver answers before the code server has loaded the definitions; a run
        submitted in between is refused."""
        query = "{ workspaceOrError { ... on Workspace { locationEntries { loadStatus locationOrLoadError { __typename } } } } }"
        entries = httpx.post(self.url("/graphql"), json={"query": query}, timeout=10).json()["data"]["workspaceOrError"]["locationEntries"]
        loaded = [e for e in entries if e["loadStatus"] == "LOADED"]
        assert all(e["locationOrLoadError"]["__typename"] == "RepositoryLocation" for e in loaded), f"{entries}\n{self.tail()}"
        return bool(loaded)

    def runs(self) -> list[dg.DagsterRun]:
        return list(self.instance.get_runs())

    def seen(self) -> str:
        """What a wait that gives up reports: the runs, the last ticks of each sensor and schedule, the log's tail."""
        runs = [f"{r.run_id[:8]} {r.status.value} {dict((k, v) for k, v in r.tags.items() if k.startswith('dagster/'))}"
                for r in self.runs()]
        query = """{ repositoryOrError(repositorySelector: {repositoryName: "__repository__", repositoryLocationName: "workforce_sync"}) {
            ... on Repository { sensors { name sensorState { ticks(limit: 3) { status skipReason error { message } } } }
                                schedules { name scheduleState { ticks(limit: 3) { status skipReason error { message } } } } } } }"""
        try:
            repo = httpx.post(self.url("/graphql"), json={"query": query}, timeout=30).json()["data"]["repositoryOrError"]
            ticks = [f"{k} {i['name']}: {i[k + 'State']['ticks']}" for k in ("sensor", "schedule") for i in repo[k + "s"]]
        except (httpx.HTTPError, KeyError, TypeError) as error:
            ticks = [f"ticks not readable: {error!r}"]
        return "\n".join([f"today {self.days.today}", "runs:", *runs, "ticks:", *ticks, "log:", self.tail()])

    def tail(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=60)

    def close(self) -> None:
        try:
            self.stop()
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.instance:
            self.instance.dispose()
        self.emulator.stop()
        self.log.close()
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)'))
        self.admin.dispose()
