"""Employes (payroll), declared once: the nightly employee snapshot, employment history, changes."""

import dagster as dg

from resources import employes_tables
from resources.employes import EmployesResource
from resources.employes_doctor import check_employes
from resources.provider import Provider
from resources.settings import setting


def definitions() -> dg.Definitions:
    # Imported and built when the code location loads, not with the registry: what settings shape
    # (partitions, crons, time zones) is read by the factories called here.
    import schedules.employes, sync_assets.employes  # noqa: E401

    return dg.Definitions(assets=sync_assets.employes.assets(), jobs=sync_assets.employes.jobs, schedules=schedules.employes.schedules())


# The embedded default's credentials: the emulator (emulator/employes.py) accepts these.
LOCAL_TOKEN, LOCAL_COMPANY_ID = "local-employes-token", "c0ffee00-0000-4000-8000-000000000001"


def local() -> EmployesResource:
    return EmployesResource(base_url=setting("EMULATOR_URL"), token=LOCAL_TOKEN, company_id=LOCAL_COMPANY_ID)


def production() -> EmployesResource:
    return EmployesResource(base_url=setting("EMPLOYES_BASE_URL"), token=dg.EnvVar("EMPLOYES_TOKEN"),
                            company_id=dg.EnvVar("EMPLOYES_COMPANY_ID"))


PROVIDER = Provider(
    name="employes", title="Employes payroll", module="employes", definitions=definitions,
    resource_defs={"local": local, "production": production}, tables=employes_tables.tables, doctor=check_employes,
    emulator="emulator.employes",
)
