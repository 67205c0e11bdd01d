"""Pipedrive: the company's persons, upserted nightly."""

import dagster as dg

from resources.pipedrive import PipedriveResource
from resources.pipedrive_tables import pipedrive_persons as persons_table
from resources.records import content_hash
from resources.warehouse import WarehouseResource, upsert, utcnow
from sync_assets.step import nothing_lost, sync_step, table_metadata

GROUP = "pipedrive"


@dg.asset(group_name=GROUP, kinds={"pipedrive", "sql"}, pool=GROUP, tags={"sync/cadence": "daily"},
          metadata=table_metadata(persons_table), check_specs=[nothing_lost("pipedrive_persons")])
def pipedrive_persons(context: dg.AssetExecutionContext, pipedrive: PipedriveResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Every Pipedrive person (table `pipedrive_persons`)."""
    with sync_step(context, GROUP) as step, step.open(pipedrive) as client:
        persons = client.persons()
    step.books.receive(len(persons))
    rows = [{"id": str(p["id"]), "name": p.get("name"), "content_hash": content_hash(p), "synced_at": utcnow(), "deleted_at": None}
            for p in persons]
    with warehouse.engine.begin() as conn:
        upsert(conn, persons_table, rows)
    step.books.store({"inserted": len(rows)})
    return step.result({"fetched": len(persons), "written": len(rows)})


def assets() -> list[dg.AssetsDefinition]:
    return [pipedrive_persons]


jobs: list = []
