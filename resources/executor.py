"""Where the steps of every job run, chosen by `SYNC_EXECUTOR`.

`multiprocess` (the default, as before this setting existed): Dagster's default executor, a
process per step on the machine of the run worker; the jobs that ask for it (the Xero push, the
contact-event sync) and the first syncs run their steps in the run's own process.

`celery`: every step of every job (the implicit asset job, every `define_asset_job`, the op jobs)
is a task on Celery workers (dagster-celery), which can run on other machines
(`deploy/celery-workers`). The run worker only plans the steps, hands them to the broker and
reads their events back. Every process (daemon, run workers, Celery workers) must share the run
and event storage: PostgreSQL instance storage (deploy/dagster.yaml), and the warehouse on
PostgreSQL too.

The broker is RabbitMQ (`CELERY_BROKER_URL`, default this machine's, guest/guest): dagster-celery
declares its queue with RabbitMQ's message priorities, and RabbitMQ gives an unacknowledged task
back to the queue the moment its worker's connection drops, where Redis's transport waits out a
visibility timeout (an hour by default) first. Tasks are acknowledged when they end (`acks_late`),
so a worker machine that dies mid-step loses no step: another worker runs it again (every sync
writes by upsert, and the Xero push reads its ledger and Xero's markers first, so a repeated step
writes nothing twice). A step whose worker process alone dies (OOM kill) fails its run, naming the
step, rather than being handed round the workers for ever. Results come back over the broker
(`rpc://`), one reply queue per run worker, so no second service is needed.

Read when the code location loads (`on_executor`, the first sync's run config) and by the worker
app (resources/celery_app.py); never at import.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

import dagster as dg

from resources.settings import SETTINGS, ConfigError, setting

EXECUTORS = ("multiprocess", "celery")
# Celery's settings, the same for the run workers that send tasks and the workers that take
# them (resources/celery_app.py builds the workers' app from this too).
CELERY_SETTINGS = {
    # Acknowledged when the task ends: a worker that dies mid-step leaves its task to another.
    "task_acks_late": True,
    # ...but a task whose pool process alone died (the worker survived) fails instead of
    # being retried: it may be the step that kills its process.
    "task_reject_on_worker_lost": False,
    # One task fetched at a time: a worker busy with a long sync does not hold others' steps.
    "worker_prefetch_multiplier": 1,
    "broker_connection_retry_on_startup": True,
}
# The URLs a worker on another machine reaches by another address (deploy/celery-workers rewrites
# those that name this machine's loopback): every service URL the code location reads, and the
# instance's. The webserver's and the API's own addresses are for people and for the API.
NOT_FOR_WORKERS = {"DAGSTER_WEBSERVER_URL", "API_LAUNCH_URL"}
SERVICE_URLS = ("DAGSTER_PG_URL", *(s.name for s in SETTINGS if s.kind in ("url", "sqlalchemy_url", "broker_url")
                                    and s.name not in NOT_FOR_WORKERS))


def executor_name(environ: dict | None = None) -> str:
    value = (setting("SYNC_EXECUTOR", environ) or "multiprocess").lower()
    if value not in EXECUTORS:
        raise ConfigError(f"SYNC_EXECUTOR must be one of {', '.join(EXECUTORS)}, not {value!r}")
    return value


def _value(name: str) -> str | None:
    return os.environ.get(name, "").strip() or setting(name)


def _secret_source(name: str) -> str | dict:
    """A URL that may hold a password: Dagster reads it from the environment itself (and shows
    its name, never its value); unset, the setting's default."""
    return {"env": name} if os.environ.get(name, "").strip() else setting(name)


def celery_config() -> dict:
    """The dagster-celery executor's config: broker, result backend, Celery's settings."""
    return {"broker": _secret_source("CELERY_BROKER_URL"), "backend": _secret_source("CELERY_BACKEND_URL"),
            "config_source": dict(CELERY_SETTINGS)}


def celery_app_args() -> dict:
    """The same, resolved, as dagster-celery's `make_app` takes it (the workers' app)."""
    from dagster_celery.executor import CeleryExecutor

    return CeleryExecutor.for_cli(broker=_value("CELERY_BROKER_URL"), backend=_value("CELERY_BACKEND_URL"),
                                  config_source=dict(CELERY_SETTINGS)).app_args()


def on_executor(defs: dg.Definitions) -> dg.Definitions:
    """`defs` with every job's steps on the chosen executor. `multiprocess` changes nothing;
    `celery` replaces the executor of every job, including those that chose in-process steps for
    speed on one machine (with Celery a step is a task, wherever it runs)."""
    if executor_name() != "celery":
        return defs
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
    from dagster_celery import celery_executor
    from dagster_shared.record import replace

    celery = celery_executor.configured(celery_config(), name="celery")

    def on_celery(job):
        if isinstance(job, UnresolvedAssetJobDefinition):
            return replace(job, executor_def=celery)
        return job.with_executor_def(celery)

    jobs = {job.name: on_celery(job) for job in defs.jobs or []}
    # Schedules and sensors built from a job hold that job: they get the same one, on Celery
    # (those that name their job, or target assets, resolve it from the jobs or the default).
    schedules = [s.with_updated_job(jobs[s.job.name]) if _holds_job(s) and s.job.name in jobs else s for s in defs.schedules or []]
    sensors = [s.with_updated_jobs([jobs.get(j.name, j) for j in s.jobs]) if _holds_job(s) else s for s in defs.sensors or []]
    return replace(defs, jobs=list(jobs.values()), schedules=schedules, sensors=sensors, executor=celery)


def _holds_job(instigator) -> bool:
    """Built from a job object (not by a job's name, nor on assets: those resolve on their own)."""
    held = getattr(instigator, "has_job", None) or getattr(instigator, "has_jobs", None)
    return bool(held) and not instigator.has_anonymous_job


IN_PROCESS = {"execution": {"config": {"in_process": {}}}}


def first_sync_run_config() -> dict:
    """The first sync's runs: their steps in the run's own process on one machine; on Celery,
    as every run's (the executor's own config: `in_process` is no option of it)."""
    return {} if executor_name() == "celery" else IN_PROCESS


# -- the workers' view of this machine's services (deploy/celery-workers) --------------------------
LOOPBACK = ("127.0.0.1", "localhost")


def _loopback_port(value: str) -> int | None:
    try:
        parts = urlsplit(value)
        return (parts.port or {"postgresql": 5432, "pyamqp": 5672, "amqp": 5672, "redis": 6379, "http": 80}.get(
            parts.scheme.split("+")[0])) if parts.hostname in LOOPBACK else None
    except ValueError:
        return None


def worker_view(via: str, environ: dict | None = None) -> tuple[dict[str, str], list[int]]:
    """The service URLs (SERVICE_URLS, with their defaults where unset) that name this machine's
    loopback, as a worker in a network namespace reaches them (`via`: this machine's end of its
    veth pair), and the loopback ports to forward there."""
    env = os.environ if environ is None else environ
    changed, ports = {}, set()
    for name in SERVICE_URLS:
        value = env.get(name, "").strip() or (setting(name, env) if name != "DAGSTER_PG_URL" else "")
        port = _loopback_port(value) if value else None
        if port is None:
            continue
        ports.add(port)
        parts = urlsplit(value)
        userinfo, at, _ = parts.netloc.rpartition("@")
        changed[name] = urlunsplit(parts._replace(netloc=f"{userinfo}{at}{via}:{port}"))
    return changed, sorted(ports)


if __name__ == "__main__":  # `python -m resources.executor worker-view ADDRESS`: shell lines for deploy/celery-workers
    import shlex
    import sys

    if sys.argv[1:2] != ["worker-view"] or len(sys.argv) != 3:
        sys.exit("usage: python -m resources.executor worker-view ADDRESS")
    changed, ports = worker_view(sys.argv[2])
    for name, value in changed.items():
        print(f"export {name}={shlex.quote(value)}")
    print(f"forward_ports={shlex.quote(' '.join(map(str, ports)))}")
