"""Pipedrive CRM, declared once: persons pulled nightly."""

import dagster as dg

from resources.pipedrive import PipedriveResource
from resources.pipedrive_doctor import check_pipedrive
from resources.pipedrive_tables import tables
from resources.provider import Provider
from resources.settings import setting

LOCAL_TOKEN = "local-pipedrive-token"  # the embedded default's credentials: the emulator accepts these


def definitions() -> dg.Definitions:
    import schedules.pipedrive, sync_assets.pipedrive  # noqa: E401  (imported when the code location loads)

    return dg.Definitions(assets=sync_assets.pipedrive.assets(), jobs=sync_assets.pipedrive.jobs,
                          schedules=schedules.pipedrive.schedules())


def local() -> PipedriveResource:
    return PipedriveResource(base_url=setting("EMULATOR_URL"), token=LOCAL_TOKEN)


def production() -> PipedriveResource:
    return PipedriveResource(base_url=setting("PIPEDRIVE_BASE_URL"), token=dg.EnvVar("PIPEDRIVE_TOKEN"))


PROVIDER = Provider(
    name="pipedrive", title="Pipedrive CRM", module="pipedrive", definitions=definitions,
    resource_defs={"local": local, "production": production}, tables=tables, doctor=check_pipedrive,
    emulator="emulator.pipedrive",
)
