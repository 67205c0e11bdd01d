"""The doctor's Xero checks (see resources/doctor.py): the stored refresh token, the tenant's
connection, and that every project, task and user the mapping files name exists in Xero."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta

from resources.doctor import FAIL, PASS, Checks, Finding, Limits, run_provider
from resources.mappings import read_agent_mappings, read_project_mappings
from resources.xero import XeroDisconnected

# Xero's day limit depends on the app's tier (since 2 March 2026: Starter 1,000 calls a day, the
# others 5,000) and no header says which: the budget is what X-DayLimit-Remaining says, and under a
# quarter of the smallest tier's day is worth a warning (pushes stop at XeroResource.day_reserve).
XERO_LOW_DAY_BUDGET = 250
XERO_LIMITS = Limits(("X-MinLimit-Remaining", "X-DayLimit-Remaining"), "X-DayLimit-Remaining", low_remaining=XERO_LOW_DAY_BUDGET)
XERO_TOKEN_IDLE_WARN = timedelta(days=45)  # Xero drops a refresh token unused for 60 days
PROJECTS = "/projects.xro/2.0"


def check_xero(resources: dict, production: bool, now: datetime) -> list[Finding]:
    resource, engine = resources["xero"], resources["warehouse"].engine

    def body(checks: Checks, client) -> None:
        idle = resource.token_store(engine).age()  # before the refresh below renews it
        try:
            client.connect()
        except XeroDisconnected as error:
            raise checks.stop("refresh_token", FAIL, str(error).split(". ")[0], str(error).split(". ", 1)[-1]) from None
        works = f"works; idle {idle.days} days before this refresh" if idle is not None else "works; just stored"
        checks.pass_or_warn("refresh_token", idle is None or idle < XERO_TOKEN_IDLE_WARN, works, works,
                            "Xero drops a refresh token unused for 60 days: let a push or the doctor run weekly")
        connections = client.http.request_json("GET", "/connections") or []
        tenants = {c.get("tenantId"): c.get("tenantName") for c in connections if isinstance(c, dict)}
        if resource.tenant_id not in tenants:
            raise checks.stop("tenant", FAIL, f"XERO_TENANT_ID is not among the {len(tenants)} connected organisations ({', '.join(map(str, tenants.values())) or 'none'})",
                              "set XERO_TENANT_ID to a connected organisation, or connect it again")
        checks.add("tenant", PASS, f"XERO_TENANT_ID is connected ({tenants[resource.tenant_id]})")
        _check_mappings(checks, client, resources["mapping_files"])

    return run_provider("xero", "XERO_API_URL", resource.api_url, production, functools.partial(resource.client, engine), body, XERO_LIMITS)


def _all_items(client, path: str) -> list[dict]:
    items, page = [], 1
    while True:
        body = client.http.request_json("GET", path, params={"page": page, "pageSize": 500}) or {}
        items += [i for i in body.get("items") or [] if isinstance(i, dict)]
        if page >= int((body.get("pagination") or {}).get("pageCount") or 1):
            return items
        page += 1


def _check_mappings(checks: Checks, client, mapping_files) -> None:
    """Every project, task and user the mapping files name exists in Xero and is in use."""
    projects_file, project_problems = read_project_mappings(mapping_files.project_mappings_path())
    agents, agent_problems = read_agent_mappings(mapping_files.agent_mappings_path())
    for name, problems in (("XERO_PROJECT_MAPPINGS_FILE", project_problems), ("AGENT_MAPPINGS_FILE", agent_problems)):
        if problems:
            checks.add("mapping_files", FAIL, f"{name}: {'; '.join(problems[:3])}", "correct the file; the push uses no mapping while it has problems")
    projects = {p.get("projectId"): p for p in _all_items(client, f"{PROJECTS}/Projects")}
    problems = []
    for mapping in sorted(projects_file.lines.values(), key=lambda m: m.line):
        problems += _unusable(mapping.line, "project", mapping.xero_project_id, projects, "INPROGRESS", "does not exist")
    for project_id in sorted(projects_file.project_ids() & set(projects)):
        tasks = {t.get("taskId"): t for t in _all_items(client, f"{PROJECTS}/Projects/{project_id}/Tasks")}
        for mapping in (m for m in projects_file.lines.values() if m.xero_project_id == project_id):
            problems += _unusable(mapping.line, "task", mapping.xero_task_id, tasks, "ACTIVE",
                                  f"is not a task of project {projects[project_id].get('name')!r}")
    users = {u.get("userId") for u in _all_items(client, f"{PROJECTS}/ProjectsUsers")}
    problems += [f"agent mappings line {m.line}: Xero user {m.xero_user_id} is not a project user"
                 for m in agents if m.xero_user_id and m.xero_user_id not in users]
    if problems:
        checks.add("mappings_exist", FAIL, f"{len(problems)} mapping(s) name what Xero does not have: {'; '.join(problems[:5])}"
                   + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""),
                   "correct the mapping files (or the project, task or user in Xero); entries mapped there would fail to push")
    else:
        checks.add("mappings_exist", PASS, f"{len(projects_file.lines)} project and {len(agents)} agent mappings: every project, task and user exists and is active")


def _unusable(line: int, kind: str, wanted: str, found: dict[str, dict], active: str, absent: str) -> list[str]:
    """What is wrong with the project or task (`kind`) a mapping line names: not in Xero, or in a
    status other than `active`."""
    item = found.get(wanted)
    if item is None:
        return [f"line {line}: {kind} {wanted} {absent}"]
    if item.get("status") not in (None, active):
        return [f"line {line}: {kind} {item.get('name')!r} is {item.get('status')}"]
    return []
