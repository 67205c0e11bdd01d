"""SYNC_EXECUTOR=celery: every step a task on Celery workers that live on "hosts" of their own.

The workers are started by `deploy/celery-workers`, each in a Linux network namespace of its own
(veth pair, its own hostname), reaching this machine's PostgreSQL, RabbitMQ and the emulator
only through the forwarders the script starts. The run is orchestrated here, in the test
process, as a run worker does it (`dg.execute_job` of the code location's job, loaded from
`definitions` like the code server loads it): so every step that ran did so in a worker.

The emulator is anchored at the real now and the partitions are the ones a schedule would take
now: the workers run on the real clock, which no test can freeze.
"""

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from conftest import POSTGRES_ADMIN_URL
from dagster._core.definitions.reconstruct import ReconstructableRepository
from deployment import weekdays_before
from helpers import assert_warehouse_matches_provider, halo_day, halo_entries, stored_entries, xero_by_halo_id

from definitions import defs as load_definitions
from emulator import Emulator, halo as halo_emulator
from resources.employes import snapshot_row
from resources.settings import PROJECT_ROOT
from resources.warehouse import engine_for
from sensors.first_sync import partition_to_sync
from sync_assets.fiscal_years import FISCAL_YEARS, FiscalCalendar

SCRIPT = PROJECT_ROOT / "deploy/celery-workers"
VENV = Path(sys.executable).parent.parent
WORKERS = 2
CELERY_STEP = "in celery worker"  # dagster-celery's engine event: "Executing steps X in celery worker"


# -- without services: which executor the jobs get --------------------------------------------
def executors(monkeypatch, value: str | None) -> dict[str, str]:
    if value:
        monkeypatch.setenv("SYNC_EXECUTOR", value)
    else:
        monkeypatch.delenv("SYNC_EXECUTOR", raising=False)
    return {job.name: job.executor_def.name for job in load_definitions().resolve_all_job_defs()}


def test_celery_puts_every_job_on_the_celery_executor(monkeypatch):
    chosen = executors(monkeypatch, "celery")
    assert "__ASSET_JOB" in chosen and "xero_push_job" in chosen and "provider_doctor" in chosen
    assert set(chosen.values()) == {"celery"}, chosen


def test_without_the_setting_every_job_keeps_its_executor(monkeypatch):
    chosen = executors(monkeypatch, None)
    # The two event-driven jobs chose in-process steps; the rest take Dagster's default.
    assert {name for name, executor in chosen.items() if executor == "in_process"} == {"xero_push_job", "ghl_contact_events_job"}
    assert {executor for name, executor in chosen.items() if name not in ("xero_push_job", "ghl_contact_events_job")} == {
        "multi_or_in_process_executor"}


# -- with workers in network namespaces --------------------------------------------------------
class Site:
    """A PostgreSQL instance (deploy/dagster.yaml), the warehouse on PostgreSQL, the emulator at the
    real now, and WORKERS Celery workers started by deploy/celery-workers."""

    def __init__(self, tmp: Path, warehouse_url: str, monkeypatch):
        self.db = f"workforce_sync_celery_{secrets.token_hex(4)}"
        self.admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{self.db}"'))
        self.home = tmp / "dagster_home"
        self.home.mkdir()
        shutil.copy(PROJECT_ROOT / "deploy/dagster.yaml", self.home / "dagster.yaml")
        self.emulator = Emulator(seed=7, anchor=datetime.now(UTC), contacts=200, agents=3, employees=10, rate_limits=False)
        self.emulator.start()
        self.warehouse_url = warehouse_url
        self.prefix = f"wst{secrets.token_hex(2)}"
        self.env = {
            "DAGSTER_HOME": str(self.home),
            "DAGSTER_PG_URL": self.admin.url.set(database=self.db).render_as_string(hide_password=False),
            "WAREHOUSE_URL": warehouse_url,
            "SYNC_ENV": "local",
            "SYNC_EXECUTOR": "celery",
            "EMULATOR_URL": self.emulator.url,
            "XERO_PUSH_ENABLED": "true",
            "CELERY_WORKER_PREFIX": self.prefix,
            "VENV": str(VENV),
        }
        for name, value in self.env.items():  # this process is the run worker: the same settings
            monkeypatch.setenv(name, value)
        self.instance = dg.DagsterInstance.from_config(str(self.home))
        self.workers("start", str(WORKERS))
        self.repository = ReconstructableRepository.for_module("definitions", "defs", working_directory=str(PROJECT_ROOT))

    def workers(self, *args: str) -> str:
        done = subprocess.run([str(SCRIPT), *args], env={**os.environ, **self.env}, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"deploy/celery-workers {' '.join(args)}: {done.stdout}{done.stderr}"
        return done.stdout + done.stderr

    def names(self) -> list[str]:
        return [f"{self.prefix}-{i}" for i in range(1, WORKERS + 1)]

    def pids(self, name: str) -> set[int]:
        """The processes of a worker's namespace: the Celery worker and its pool."""
        done = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
        return {int(p) for p in done.stdout.split()}

    def run(self, job: str, assets: list[str], partition: str | None = None) -> str:
        """Materialize `assets` with `job` of the code location, as a run worker does; the run's id."""
        recon = self.repository.get_reconstructable_job(job)
        result = dg.execute_job(recon, self.instance, asset_selection=[dg.AssetKey(a) for a in assets],
                                tags={"dagster/partition": partition} if partition else None, raise_on_error=False)
        return result.run_id

    def run_ok(self, job: str, assets: list[str], partition: str | None = None) -> str:
        run_id = self.run(job, assets, partition)
        run = self.instance.get_run_by_id(run_id)
        assert run.status == dg.DagsterRunStatus.SUCCESS, self.failure(run_id)
        return run_id

    def failure(self, run_id: str) -> str:
        errors = [e.dagster_event.message for e in self.instance.all_logs(run_id) if e.dagster_event and e.dagster_event.is_failure]
        return f"run {run_id}: {errors}; worker logs: " + " | ".join(
            (self.home / "celery-workers" / n / "worker.log").read_text()[-1500:] for n in self.names())

    def steps(self, run_id: str) -> dict[str, list[tuple[str, int | None]]]:
        """Each step's executions: the Celery node that took it, and the pid its STEP_START came from."""
        taken: dict[str, list[str]] = {}
        started: dict[str, list[int]] = {}
        for entry in self.instance.all_logs(run_id):
            event = entry.dagster_event
            if event is None:
                continue
            if event.event_type == dg.DagsterEventType.ENGINE_EVENT and CELERY_STEP in (event.message or ""):
                taken.setdefault(event.step_key, []).append(event.engine_event_data.metadata["Celery worker"].value)
            elif event.event_type == dg.DagsterEventType.STEP_START:
                started.setdefault(event.step_key, []).append(event.pid)
        return {key: list(zip(taken.get(key, []), started.get(key, []))) for key in started.keys() | taken.keys()}

    def close(self) -> None:
        try:
            self.workers("stop")
        finally:
            self.instance.dispose()
            self.emulator.stop()
            with self.admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)'))
            self.admin.dispose()


@pytest.fixture
def site(tmp_path, postgres_warehouse_url, monkeypatch):
    site = Site(tmp_path, postgres_warehouse_url, monkeypatch)
    try:
        yield site
    finally:
        site.close()


def approved_day(emulator) -> tuple:
    """The newest weekday before the real today (the emulator's data ends at the real now), approved
    for agent 1 in Halo; the agents whose day is approved and the day's work entries they bill."""
    day = next(weekdays_before(datetime.now(UTC).date()))
    emulator.halo.approve(1, day)
    approved = {agent for (agent, d), s in emulator.halo.timesheets().items()
                if d == day and s["approval"]["approvalstatus"] == halo_emulator.APPROVED}
    return day, {i for agent in approved for i in halo_day(emulator, agent, day)}


def assert_each_once_in_xero(emulator, entries: set[int]) -> None:
    found = xero_by_halo_id(emulator)
    assert entries, "the day has work to push"
    assert {i: len(found.get(i, [])) for i in entries} == dict.fromkeys(entries, 1)
    assert set(found) == entries  # nothing else pushed


@pytest.mark.slow
def test_every_sync_runs_its_steps_on_the_workers_and_matches_the_emulator(site):
    emulator, defs, today = site.emulator, load_definitions(), datetime.now(UTC).date()
    graph = defs.resolve_asset_graph()
    last = lambda asset: partition_to_sync(graph.get(dg.AssetKey(asset)).partitions_def)  # noqa: E731 - as a schedule would
    year = FiscalCalendar.from_settings().key_for(today)
    site.instance.add_dynamic_partitions(FISCAL_YEARS.name, [year])
    day, entries = approved_day(emulator)

    runs = [
        site.run_ok("__ASSET_JOB", ["ghl_contacts_reconciliation", "ghl_contacts_from_events"]),
        site.run_ok("ghl_contacts_hourly_job", ["ghl_contacts"], last("ghl_contacts")),
        site.run_ok("__ASSET_JOB", ["halo_agents", "agent_mappings"]),
        site.run_ok("halo_timesheets_job", ["halo_timesheets"], year),
        site.run_ok("employes_nightly_job", ["employes_employee_snapshots", "employes_employment_history", "employes_employee_changes"],
                    last("employes_employee_snapshots")),
        site.run_ok("xero_push_job", ["xero_time_entries"], day.isoformat()),
        site.run_ok("__ASSET_JOB", ["xero_reconciliation"]),
    ]

    # Every step of every run ran once, in a worker: taken by one of our Celery nodes, started by a
    # process of that worker's namespace, never by this process (the run worker).
    nodes = {f"worker@{name}": name for name in site.names()}
    for run_id in runs:
        steps = site.steps(run_id)
        assert steps and all(len(executions) == 1 for executions in steps.values()), steps
        for key, [(node, pid)] in steps.items():
            assert node in nodes, (key, node)
            assert pid != os.getpid() and pid in site.pids(nodes[node]), (key, node, pid)
    used = {node for run_id in runs for executions in site.steps(run_id).values() for node, _ in executions}
    records = [site.instance.get_run_record_by_id(run_id) for run_id in runs]
    print(f"{len(runs)} runs, {sum(len(site.steps(r)) for r in runs)} steps on {sorted(used)}: "
          + ", ".join(f"{r.dagster_run.job_name} {r.end_time - r.start_time:.1f} s" for r in records))

    # The warehouse (and Xero) match the emulator, as the in-process sync tests check.
    assert_warehouse_matches_provider(emulator, site.warehouse_url)
    first, last_day = FiscalCalendar.from_settings().range_for(year)
    assert stored_entries(site.warehouse_url, first, last_day) == halo_entries(emulator, first, last_day) != {}
    snapshot_day = datetime.fromisoformat(last("employes_employee_snapshots")).date()
    with engine_for(site.warehouse_url).connect() as conn:
        held = dict(conn.execute(sa.text("SELECT employee_id, content_hash FROM employes_employee_snapshots WHERE snapshot_date = :d"),
                                 {"d": snapshot_day}).all())
    assert held == {i: snapshot_row(e, snapshot_day)["content_hash"] for i, e in emulator.employes.employees().items()}
    assert_each_once_in_xero(emulator, entries)


def kill_at_first_post(site, whole_worker: bool) -> list[tuple[str, float]]:
    """An emulator observer that, when Xero has made the push's first entry and before its answer
    leaves, SIGKILLs the worker running the step: its whole namespace (the worker's machine dies)
    or only the pool process executing the step (the kernel's OOM killer). What it killed, and when."""
    killed: list[tuple[str, float]] = []
    watcher = dg.DagsterInstance.from_config(str(site.home))  # the emulator's thread reads the run's events on its own

    def kill(served) -> None:
        if killed or served.method != "POST" or "/Time" not in served.path:
            return
        (run,) = watcher.get_runs(limit=1)
        (start,) = [e.dagster_event for e in watcher.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)]
        (name,) = [n for n in site.names() if start.pid in site.pids(n)]
        for pid in site.pids(name) if whole_worker else [start.pid]:
            os.kill(pid, signal.SIGKILL)
        killed.append((name, time.time()))
        watcher.dispose()

    site.emulator.on_request(kill)
    return killed


@pytest.mark.slow
def test_a_worker_killed_mid_push_loses_nothing_and_writes_nothing_twice(site):
    emulator = site.emulator
    site.run_ok("__ASSET_JOB", ["halo_agents", "agent_mappings"])
    day, entries = approved_day(emulator)
    killed = kill_at_first_post(site, whole_worker=True)

    run_id = site.run("xero_push_job", ["xero_time_entries"], day.isoformat())
    run = site.instance.get_run_by_id(run_id)

    assert killed, "the push reached Xero"
    assert run.status == dg.DagsterRunStatus.SUCCESS, site.failure(run_id)
    # The step was taken again by the other worker once the broker saw the first one's connection drop.
    (first, _), (second, _) = site.steps(run_id)["xero_time_entries"]
    assert first == f"worker@{killed[0][0]}" and second != first
    taken_again = max(e.timestamp for e in site.instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START))
    print(f"{first} killed mid-push; {second} took the step {taken_again - killed[0][1]:.1f} s later")
    # Every entry once in Xero: the repeated step adopted the entry the killed one had made (by its
    # marker) instead of posting it again.
    assert_each_once_in_xero(emulator, entries)
    posts = [s for s in emulator.requests("xero", "/Time") if s.method == "POST"]
    assert len(posts) == len(entries)

    # Starting the workers again brings the dead one back and leaves the live one alone.
    said = site.workers("start", str(WORKERS))
    assert f"{second.removeprefix('worker@')} is running" in said
    assert all(site.pids(name) for name in site.names())


@pytest.mark.slow
def test_a_step_whose_process_alone_is_killed_fails_its_run_naming_the_step(site):
    emulator = site.emulator
    site.run_ok("__ASSET_JOB", ["halo_agents", "agent_mappings"])
    day, entries = approved_day(emulator)
    killed = kill_at_first_post(site, whole_worker=False)

    run_id = site.run("xero_push_job", ["xero_time_entries"], day.isoformat())

    assert killed, "the push reached Xero"
    assert site.instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
    (failure,) = [e.dagster_event for e in site.instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)]
    reason = failure.event_specific_data.error.to_string()
    assert "[xero_time_entries]" in reason and "WorkerLostError" in reason, reason
    assert len(site.steps(run_id)["xero_time_entries"]) == 1  # not handed round the workers
    # The lost step never recorded its end, so its `xero` pool slot is still the failed run's:
    # the daemon frees it (run_monitoring.free_slots_after_run_end_seconds in deploy/dagster.yaml,
    # which this instance has); no daemon runs here, so the test does what its iteration does.
    assert run_id in site.instance.event_log_storage.get_concurrency_run_ids()
    assert site.instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0
    site.instance.event_log_storage.free_concurrency_slots_for_run(run_id)
    # The run again, as Dagster's run retries start it (the push job asks for them): the rest is
    # pushed and the entry the killed step had made is adopted, not made twice.
    site.run_ok("xero_push_job", ["xero_time_entries"], day.isoformat())
    assert_each_once_in_xero(emulator, entries)
    assert len([s for s in emulator.requests("xero", "/Time") if s.method == "POST"]) == len(entries)
