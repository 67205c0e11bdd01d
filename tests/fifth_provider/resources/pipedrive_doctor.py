"""The doctor's Pipedrive checks: the token lists persons."""

from datetime import datetime

from resources.doctor import Checks, Finding, first_answer, run_provider


def check_pipedrive(resources: dict, production: bool, now: datetime) -> list[Finding]:
    resource = resources["pipedrive"]

    def body(checks: Checks, client) -> None:
        first_answer(checks, client.persons, "token", "listing persons", "check PIPEDRIVE_TOKEN", "token accepted; persons listed")

    return run_provider("pipedrive", "PIPEDRIVE_BASE_URL", resource.base_url, production, resource.client, body)
