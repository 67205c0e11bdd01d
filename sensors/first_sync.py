"""The first sync: on a new installation, sync every asset once, within minutes of starting,
instead of waiting for each schedule's next tick (the hourly ones at :05 of the next hour, the
nightly ones for the night), so every health light is green, or red with a reason, in the first
hour.

An asset is due when it has never been materialized and no run has planned it: the sensor asks
for one run of it as soon as each of its upstream assets is synced or has had its own first run
(failed or not: a failed upstream does not keep the rest unsynced). So runs go in dependency
order, and the pools hold them to one step per provider as always. The partition is the one its
schedule would run now: the last complete hour for `ghl_contacts`, today for the daily Employes
and Xero partitions, yesterday for `sync_report`. `halo_timesheets` (fiscal-year partitions) is
left to `halo_new_fiscal_year`, which adds the current fiscal year and syncs each new one once,
after `agent_mappings`' first sync.

Nothing is kept on the side: the state is the instance's own (materializations, planned runs,
and this sensor's runs, whose run keys also stop a second request), so a restart, or a second
daemon, never repeats a first sync; an asset added in a later release gets its first sync on
the next start. The cursor only names the assets seen done, so they are not asked about again.
The Xero push stays a dry run unless XERO_PUSH_ENABLED is true.
"""

import json

import dagster as dg

from resources.executor import first_sync_run_config
from sync_assets.runs import BACKGROUND

SENSOR_NAME = "first_sync"
# A first sync is one asset and its checks: run its steps in the run's own process rather than a
# process per step (each would load the code location again), so a new installation's burst of
# runs weighs less on a small machine. Pools hold in-process steps all the same. On Celery
# (SYNC_EXECUTOR) the steps are the workers' like every run's (resources/executor.py).


def partition_to_sync(partitions_def) -> str | None:
    """The partition a schedule would run now: the last one of a time-partitioned asset (the
    hourly contacts' last complete hour; today for the daily partitions, which end a day ahead)."""
    if partitions_def is None:
        return None
    return partitions_def.get_last_partition_key()


def _own_runs(instance: dg.DagsterInstance) -> dict[dg.AssetKey, dg.DagsterRun]:
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": SENSOR_NAME}))
    return {key: run for run in runs for key in (run.asset_selection or ())}


def _state(instance: dg.DagsterInstance, key: dg.AssetKey, own: dict) -> str:
    """`done` (synced, or its first run finished), `running` (a run has planned it) or `due`."""
    if instance.get_latest_materialization_event(key) is not None:
        return "done"
    run = own.get(key)
    if run is None:
        planned = instance.get_latest_planned_materialization_info(key)
        run = instance.get_run_by_id(planned.run_id) if planned else None
    if run is None:
        return "due"
    return "done" if run.is_finished else "running"


def first_sync_done(instance: dg.DagsterInstance, key: dg.AssetKey) -> bool:
    """`key` has been synced, or its first sync has run (successfully or not)."""
    return _state(instance, key, _own_runs(instance)) == "done"


def due_requests(instance: dg.DagsterInstance, graph, known_done: frozenset[str] = frozenset()
                 ) -> tuple[list[dg.RunRequest], frozenset[str]]:
    """One request per never-synced asset whose upstream assets are all done, and the assets now
    done. Those in `known_done` (by key) are not asked about again: done stays done."""
    keys = [k for k in graph.toposorted_asset_keys if graph.get(k).is_materializable]
    open_keys = [k for k in keys if k.to_user_string() not in known_done]
    own = _own_runs(instance) if open_keys else {}
    states = {key: "done" for key in keys} | {key: _state(instance, key, own) for key in open_keys}
    requests = []
    for key in open_keys:
        node = graph.get(key)
        if states[key] != "due" or isinstance(node.partitions_def, dg.DynamicPartitionsDefinition):
            continue
        if all(states.get(parent, "done") == "done" for parent in node.parent_keys):
            requests.append(dg.RunRequest(run_key=f"first-sync-{key.to_user_string()}", asset_selection=[key],
                                          partition_key=partition_to_sync(node.partitions_def), run_config=first_sync_run_config(),
                                          tags=BACKGROUND))
    return requests, frozenset(key.to_user_string() for key, state in states.items() if state == "done")


@dg.sensor(
    name=SENSOR_NAME,
    description="Syncs each never-synced asset once, in dependency order, on a new installation.",
    job_name="__ASSET_JOB",  # the implicit job of every asset: one job, whatever the partitions
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def first_sync(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    """Requests the first sync of every asset that is due and whose upstream assets are done."""
    # The cursor: the assets seen done. Once all are, a tick asks the instance nothing (with many
    # organisations on one daemon, every tick's queries add up: bench/README.md).
    known_done = frozenset(json.loads(context.cursor)["done"]) if context.cursor else frozenset()
    requests, done = due_requests(context.instance, context.repository_def.asset_graph, known_done)
    cursor = json.dumps({"done": sorted(done)})
    if not requests:
        skip = "every asset has been synced, or is waiting for an upstream asset's first sync"
        return dg.SensorResult(skip_reason=skip, cursor=cursor) if cursor != context.cursor else dg.SkipReason(skip)
    context.log.info("first sync of " + ", ".join(r.asset_selection[0].to_user_string() for r in requests))
    return dg.SensorResult(run_requests=requests, cursor=cursor)


sensors = [first_sync]
