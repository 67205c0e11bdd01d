"""`workforce-sync doctor`: read-only checks, at first contact with a real tenant, of every
assumption the syncs make about a provider.

Each check sends a few GET requests (Xero also refreshes its token, which the push does on
every run), compares what came back with what the sync relies on, and says `PASS`, `WARN` (a
quirk the sync copes with, and how) or `FAIL` (the sync would fail or write wrong data: what
to do). Nothing is written to a provider. Messages name settings, never their values when
secret.

The latest outcome per provider is kept in the warehouse (`doctor_results`): in production the
Xero push stays a dry run until the Halo and Xero checks have passed (see `push_gate`).
"""

from __future__ import annotations

import collections
import email.utils
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import httpx
import sqlalchemy as sa
from dagster._time import get_current_datetime

from resources.halo import approved_statuses, key_entries, range_params
from resources.http import ProviderAuthError, ProviderClient, ProviderError, RequestRejected
from resources.mappings import read_agent_mappings, read_project_mappings
from resources.settings import setting
from resources.warehouse import utcnow
from resources.tables import doctor_results

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
SKEW_WARN = timedelta(seconds=30)
SKEW_FAIL = timedelta(minutes=5)  # OAuth servers and signed requests start refusing around here
LOW_BUDGET = 0.10  # a day budget under 10 % left is worth a warning
XERO_TOKEN_IDLE_WARN = timedelta(days=45)  # Xero drops a refresh token unused for 60 days
HALO_WINDOW_DAYS = (7, 31)  # look for recent time entries here, widening once if none
GATED_PROVIDERS = ("halopsa", "xero")  # the push writes to Xero from Halo's data


@dataclass
class Finding:
    provider: str
    check: str
    severity: str
    seen: str
    action: str = ""

    def line(self) -> str:
        text = f"{self.severity:4}  {self.provider:11} {self.check:22} {self.seen}"
        return text + (f"\n{'':17}-> {self.action}" if self.action and self.severity != PASS else "")


@dataclass
class Checks:
    """The findings of one provider, and the response headers its checks look at."""

    provider: str
    findings: list[Finding] = field(default_factory=list)
    headers: list[httpx.Headers] = field(default_factory=list)

    def add(self, check: str, severity: str, seen: str, action: str = "") -> None:
        self.findings.append(Finding(self.provider, check, severity, seen, action))

    def watch(self, http: ProviderClient) -> None:
        """Keep the headers of every response `http` receives, for the clock and limit checks."""
        http.on_response(lambda response: self.headers.append(response.headers))


# -- checks every provider gets ------------------------------------------------------------
def check_base_url(checks: Checks, name: str, url: str, production: bool) -> None:
    host = urlsplit(url).hostname or ""
    emulator = (setting("EMULATOR_URL") or "").rstrip("/")
    local = host in ("127.0.0.1", "localhost", "::1") or url.rstrip("/").startswith(emulator)
    if production and local:
        checks.add("base_url", FAIL, f"{name} points at {url}, a local address (the emulator?) while SYNC_ENV=production",
                   f"set {name} to the provider's real address")
    elif production and urlsplit(url).scheme != "https":
        checks.add("base_url", WARN, f"{name} is {url}: not https", f"use the https address in {name}")
    else:
        checks.add("base_url", PASS, f"{url}" + ("" if production else " (SYNC_ENV=local)"))


def check_clock(checks: Checks) -> None:
    dates = [h.get("Date") for h in checks.headers if h.get("Date")]
    if not dates:
        checks.add("clock_skew", WARN, "no Date header in the answers; skew unknown")
        return
    try:
        server = email.utils.parsedate_to_datetime(dates[-1])
    except (TypeError, ValueError):
        checks.add("clock_skew", WARN, f"unreadable Date header {dates[-1][:40]!r}; skew unknown")
        return
    skew = datetime.now(UTC) - server  # the machine's real clock, whatever a test froze
    seen = f"this machine is {abs(skew.total_seconds()):.0f} s {'ahead of' if skew > timedelta(0) else 'behind'} the server"
    if abs(skew) >= SKEW_FAIL:
        checks.add("clock_skew", FAIL, seen, "synchronise this machine's clock (NTP): partitions, windows and tokens depend on it")
    elif abs(skew) >= SKEW_WARN:
        checks.add("clock_skew", WARN, seen, "synchronise this machine's clock (NTP)")
    else:
        checks.add("clock_skew", PASS, seen)


def check_limits(checks: Checks, documented: tuple[str, ...], day_remaining: str | None, day_limit: int | None) -> None:
    """Rate-limit headers the provider documents, and the day's budget left."""
    if not documented:
        checks.add("rate_limit_headers", PASS, "none documented; the client stays under its own limit and backs off on 429")
        return
    last = checks.headers[-1] if checks.headers else httpx.Headers()
    missing = [name for name in documented if name not in last]
    if missing:
        checks.add("rate_limit_headers", WARN, f"missing {', '.join(missing)}",
                   "the client keeps to the published limits on its own and backs off on 429; budgets are not reported")
    else:
        checks.add("rate_limit_headers", PASS, ", ".join(f"{name}: {last[name]}" for name in documented))
    if day_remaining is None:
        return
    value = last.get(day_remaining, "")
    if not value.isdigit():
        checks.add("day_budget", WARN, f"unknown ({day_remaining} not sent)")
    elif day_limit and int(value) < day_limit * LOW_BUDGET:
        checks.add("day_budget", WARN, f"{value} of {day_limit} requests left today", "syncs stop early today; they resume tomorrow")
    else:
        checks.add("day_budget", PASS, f"{value}" + (f" of {day_limit}" if day_limit else "") + " requests left today")


def run_provider(provider: str, body: Callable[[Checks], None]) -> list[Finding]:
    """Run one provider's checks; an error that stops them becomes a FAIL naming what to do."""
    checks = Checks(provider)
    try:
        body(checks)
    except ProviderAuthError as error:
        checks.add("credentials", FAIL, str(error).split(". ")[0], "check the provider's credentials (see the message)"
                   if "Check" not in str(error) else str(error).split(". ", 1)[-1])
    except RequestRejected as error:
        checks.add("reachable", FAIL, str(error)[:300], "check the base URL and the account settings named above")
    except ProviderError as error:
        checks.add("reachable", FAIL, str(error)[:300], "check the base URL, the network and the provider's status page")
    return checks.findings


# -- GoHighLevel ---------------------------------------------------------------------------
GHL_LIMIT_HEADERS = ("X-RateLimit-Remaining", "X-RateLimit-Daily-Remaining")
GHL_DAY_LIMIT = 200_000
# SearchContactSuccessResponseDto's Contact (GoHighLevel/highlevel-api-docs, apps/contacts.json, 2025-08-26).
GHL_SEARCH_FIELDS = (
    "id", "phoneLabel", "country", "address", "source", "type", "locationId", "dnd", "state", "businessName",
    "customFields", "tags", "dateAdded", "additionalEmails", "phone", "companyName", "additionalPhones",
    "dateUpdated", "city", "dateOfBirth", "firstName", "lastName", "firstNameLowerCase", "lastNameLowerCase",
    "email", "assignedTo", "followers", "validEmail", "dndSettings", "opportunities", "postalCode", "businessId",
    "searchAfter",
)


def check_gohighlevel(resource, production: bool, now: datetime) -> list[Finding]:
    def body(checks: Checks) -> None:
        check_base_url(checks, "GHL_BASE_URL", resource.base_url, production)
        with resource.client() as client:
            checks.watch(client.http)
            since = now - timedelta(days=3650)
            search = lambda after: client.http.request_json("POST", "/contacts/search", json={  # noqa: E731
                "locationId": resource.location_id, "pageLimit": 2,
                "filters": [{"field": "dateUpdated", "operator": "range",
                             "value": {"gte": since.strftime("%Y-%m-%dT%H:%M:%S.000Z"), "lt": now.strftime("%Y-%m-%dT%H:%M:%S.000Z")}}],
                "sort": [{"field": "dateUpdated", "direction": "asc"}], **({"searchAfter": after} if after else {})})
            try:
                first = search(None)
            except RequestRejected as error:
                checks.add("location", FAIL, f"search in location GHL_LOCATION_ID refused: HTTP {error.status}",
                           "check GHL_LOCATION_ID and that the token belongs to that sub-account (scope contacts.readonly)")
                return
            checks.add("credentials", PASS, "token accepted for the location (contacts search)")
            contacts = first.get("contacts") if isinstance(first, dict) else None
            if not isinstance(contacts, list):
                checks.add("search_shape", FAIL, f"answer has no 'contacts' list (keys {sorted(first) if isinstance(first, dict) else type(first).__name__})",
                           "the contacts sync cannot read this answer; report it with the provider's API version")
                return
            total = first.get("total")
            checks.add("total", PASS if isinstance(total, int) else WARN,
                       f"total = {total}" if isinstance(total, int) else "no 'total' in the answer",
                       "" if isinstance(total, int) else "the hourly sync then reads until an empty page (one request more)")
            _check_ghl_paging(checks, contacts, search)
            arrived = {name for contact in contacts for name in contact}
            documented = [name for name in GHL_SEARCH_FIELDS if name in arrived]
            extra = sorted(arrived - set(GHL_SEARCH_FIELDS))
            checks.add("search_fields", PASS if contacts else WARN,
                       f"{len(documented)} of {len(GHL_SEARCH_FIELDS)} documented fields arrived"
                       + (f"; undocumented: {', '.join(extra)}" if extra else "") if contacts else "no contacts to look at",
                       "" if contacts else "run the doctor again once the location has contacts")
        check_clock(checks)
        check_limits(checks, GHL_LIMIT_HEADERS, "X-RateLimit-Daily-Remaining", GHL_DAY_LIMIT)

    return run_provider("gohighlevel", body)


def _check_ghl_paging(checks: Checks, first: list[dict], search) -> None:
    """Two pages of two: ascending dateUpdated, and the second starting after the first."""
    if len(first) < 2:
        checks.add("search_paging", WARN, f"only {len(first)} contact(s); paging not tried", "run the doctor again once the location has contacts")
        return
    after = first[-1].get("searchAfter")
    built = after is None
    if built:  # the sync builds [dateUpdated ms, id] itself when the contact carries none
        stamp = datetime.fromisoformat(str(first[-1]["dateUpdated"]).replace("Z", "+00:00"))
        after = [int(stamp.timestamp() * 1000), first[-1]["id"]]
    second = (search(after) or {}).get("contacts") or []
    page = first + second
    ids = [c.get("id") for c in page]
    stamps = [str(c.get("dateUpdated")) for c in page]
    if len(set(ids)) < len(ids):
        checks.add("search_paging", FAIL, "the second page repeats contacts of the first",
                   "searchAfter paging does not work for this account: report it; the sync would loop")
    elif stamps != sorted(stamps):
        checks.add("search_paging", FAIL, "dateUpdated is not ascending across two pages",
                   "the incremental sync relies on the ascending sort: report it")
    else:
        checks.add("search_paging", PASS, "two pages, no overlap, ascending dateUpdated"
                   + (" (searchAfter built by the client: contacts carry none)" if built else ", searchAfter on each contact"))


# -- HaloPSA -------------------------------------------------------------------------------
def check_halopsa(resource, production: bool, now: datetime, approved: frozenset[int]) -> list[Finding]:
    def body(checks: Checks) -> None:
        check_base_url(checks, "HALO_BASE_URL", resource.base_url, production)
        with resource.client() as client:
            checks.watch(client.http)
            agents = client.agents()
            checks.add("credentials", PASS, f"token accepted; {len(agents)} agents listed")
            zone = ZoneInfo(setting("SYNC_TIMEZONE") or "UTC")
            today = now.astimezone(zone).date()
            entries, first = [], today
            for days in HALO_WINDOW_DAYS:
                first = today - timedelta(days=days)
                entries = _halo_list(client, "/api/TimesheetEvent", range_params(first, today))
                if entries:
                    break
            if not entries:
                checks.add("time_entries", WARN, f"no time entries in the last {HALO_WINDOW_DAYS[-1]} days; identity and filters not tried",
                           "run the doctor again once the tenant has recent time entries")
            else:
                _check_halo_identity(checks, entries)
                _check_halo_zone(checks, entries)
                _check_halo_day_filter(checks, client, entries, zone)
                _check_halo_agent_filter(checks, client, entries, first, today)
            everyone = ",".join(str(a.get("id")) for a in agents)  # as the sync asks: Timesheet documents no filter
            sheets = _halo_list(client, "/api/Timesheet", {**range_params(today - timedelta(days=HALO_WINDOW_DAYS[-1]), today),
                                                            "agents": everyone})
            _check_halo_approvals(checks, sheets, approved)
        check_clock(checks)
        check_limits(checks, (), None, None)

    return run_provider("halopsa", body)


def _halo_list(client, path: str, params: dict) -> list[dict]:
    body = client.http.request_json("GET", path, params=params)
    if isinstance(body, dict):  # some Halo lists come wrapped with record_count
        body = next((v for v in body.values() if isinstance(v, list)), [])
    return [r for r in body or [] if isinstance(r, dict)]


def _start(entry: dict) -> datetime | None:
    try:
        return datetime.fromisoformat(str(entry.get("start_date")).replace("Z", "+00:00"))
    except ValueError:
        return None


def _check_halo_identity(checks: Checks, entries: list[dict]) -> None:
    """Which key the sync gives these entries (resources/halo.py, `key_entries`)."""
    keyed = key_entries(entries, "")
    kinds = ", ".join(f"{count} by {kind}" for kind, count in sorted(keyed.kinds.items()))
    if keyed.identity == "id" and not keyed.repeated:
        checks.add("entry_identity", PASS, f"ids non-zero and unique on {len(entries)} entries: the sync keys entries on id")
    else:
        ids = [e.get("id") for e in entries]
        checks.add("entry_identity", WARN,
                   f"ids unusable on {len(ids)} entries ({sum(1 for i in ids if not i)} zero, {len(ids) - len(set(ids))} repeated)"
                   + (f"; {len(keyed.repeated)} keys repeat even so" if keyed.repeated else ""),
                   f"the sync keys them {kinds}: (ticket_id, action_number) for ticket time, a fingerprint of the "
                   "entry's own fields for time without a ticket (README, HaloPSA)")


def _check_halo_zone(checks: Checks, entries: list[dict]) -> None:
    """The sync reads start and end as wall-clock times in SYNC_TIMEZONE, as it sends its ranges."""
    zone_name = setting("SYNC_TIMEZONE") or "UTC"
    starts = [s for s in map(_start, entries) if s]
    zoned = [s for s in starts if s.tzinfo is not None]
    other = [s for s in zoned if s.utcoffset() != ZoneInfo(zone_name).utcoffset(s.replace(tzinfo=None))]
    if other:
        checks.add("date_time_zone", WARN, f"{len(other)} of {len(starts)} start dates carry an offset other than "
                   f"SYNC_TIMEZONE's ({zone_name}), e.g. {other[0].isoformat()}",
                   "set SYNC_TIMEZONE to the tenant's zone: the sync takes times as wall-clock times there")
    elif zoned and len(zoned) < len(starts):
        checks.add("date_time_zone", WARN, f"{len(zoned)} of {len(starts)} start dates carry a zone, the rest do not",
                   "mixed forms: compare a few entries' times in Halo with the warehouse")
    else:
        checks.add("date_time_zone", PASS, f"{len(starts)} start dates carry {'the offset of ' + zone_name if zoned else 'no zone'}: "
                   f"read as wall-clock times in SYNC_TIMEZONE ({zone_name})")


def _check_halo_day_filter(checks: Checks, client, entries: list[dict], zone: ZoneInfo) -> None:
    """A one-day date-time range returns nothing outside it; a date-only range is compared too."""
    starts = [s for s in map(_start, entries) if s]
    day = max(starts).astimezone(zone).date() if max(starts).tzinfo else max(starts).date()
    rows = _halo_list(client, "/api/TimesheetEvent", range_params(day, day))
    outside = [r for r in rows if (s := _start(r)) is None or (s.astimezone(zone).date() if s.tzinfo else s.date()) != day]
    if outside:
        checks.add("day_filter", WARN, f"a one-day date-time range for {day} returned {len(outside)} of {len(rows)} entries outside it",
                   "the sync drops them and counts them as outside_range")
    else:
        checks.add("day_filter", PASS, f"a one-day date-time range for {day} returned {len(rows)} entries, none outside it")
    bare = _halo_list(client, "/api/TimesheetEvent", {"start_date": day.isoformat(), "end_date": day.isoformat()})
    if len(bare) != len(rows) - len(outside):
        checks.add("date_only_filter", WARN, f"a date-only range for {day} returned {len(bare)} entries, the date-time range {len(rows) - len(outside)}",
                   "date-only ranges mis-filter on this tenant; the sync always sends date-times")
    else:
        checks.add("date_only_filter", PASS, f"a date-only range for {day} agrees with the date-time range")


def _check_halo_agent_filter(checks: Checks, client, entries: list[dict], first, last) -> None:
    """Ask each list for one agent's records and count other agents' (the sync filters on its side anyway)."""
    by_agent = collections.Counter(e.get("agent_id") for e in entries)
    if len(by_agent) < 2:
        checks.add("agent_filter", WARN, "entries of only one agent in range; the agent filter was not tried")
        return
    agent = by_agent.most_common()[-1][0]
    ignored = []
    for path in ("/api/TimesheetEvent", "/api/Timesheet"):
        rows = _halo_list(client, path, {**range_params(first, last), "agents": str(agent)})
        others = sum(1 for r in rows if r.get("agent_id") != agent)
        if others:
            ignored.append(f"{path} answered {others} of {len(rows)} records of other agents")
    if ignored:
        checks.add("agent_filter", WARN, f"asked for agent {agent} only: {'; '.join(ignored)}",
                   "the agent filter is not honoured there; the sync drops other agents' records and counts them as outside_range")
    else:
        checks.add("agent_filter", PASS, f"asked for agent {agent} only: TimesheetEvent and Timesheet answered theirs alone")


def _check_halo_approvals(checks: Checks, sheets: list[dict], approved: frozenset[int]) -> None:
    statuses = collections.Counter()
    malformed = 0
    for sheet in sheets:
        approval = sheet.get("approval")
        value = approval.get("approvalstatus") if isinstance(approval, dict) else None
        if value is None:
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            statuses[value] += 1
        else:
            malformed += 1
    seen = ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items())) or "none"
    unknown = sorted(set(statuses) - {0, 1, 2})
    wanted = ",".join(map(str, sorted(approved)))
    if malformed or unknown:
        checks.add("approval_status", WARN,
                   f"approvalstatus values seen {seen}" + (f"; unknown values {unknown}" if unknown else "")
                   + (f"; {malformed} not a whole number" if malformed else ""),
                   f"find out in Halo what the unknown values mean; HALO_APPROVED_STATUSES ({wanted}) decides what is pushed")
    elif statuses and not approved & set(statuses):
        checks.add("approval_status", WARN, f"approvalstatus values seen {seen}; none is in HALO_APPROVED_STATUSES ({wanted})",
                   "nothing would be pushed to Xero: approve a timesheet in Halo and see which value it gets")
    else:
        checks.add("approval_status", PASS if statuses else WARN, f"approvalstatus values seen {seen}; approved = {wanted}",
                   "" if statuses else "no timesheet approvals in the last 31 days to compare with")


# -- Employes ------------------------------------------------------------------------------
def check_employes(resource, production: bool) -> list[Finding]:
    def body(checks: Checks) -> None:
        check_base_url(checks, "EMPLOYES_BASE_URL", resource.base_url, production)
        with resource.client() as client:
            checks.watch(client.http)
            company = resource.company_id
            try:
                page = client.http.request_json("GET", f"/{company}/employees", params={"page": 1, "per_page": 2})
            except RequestRejected as error:
                checks.add("company", FAIL, f"listing employees of EMPLOYES_COMPANY_ID refused: HTTP {error.status}",
                           "check EMPLOYES_COMPANY_ID and that the token belongs to that company")
                return
            checks.add("credentials", PASS, "token accepted; the company's employees listed")
            if isinstance(page, dict) and isinstance(page.get("data"), list) and isinstance(page.get("pages"), int):
                checks.add("list_envelope", PASS, f"{{data, pages}} as expected ({page['pages']} pages of 2"
                           + (f", total {page['total']}" if "total" in page else "") + ")")
                employees = page["data"]
            else:
                shape = sorted(page) if isinstance(page, dict) else type(page).__name__
                checks.add("list_envelope", FAIL, f"the employee list came as {shape}, not {{data, pages}}",
                           "the snapshot cannot page this answer; report it with the provider's API version")
                return
            if not employees:
                checks.add("employments", WARN, "the company has no employees to read employments of")
                return
            employee = employees[0].get("id")
            client.http.request_json("GET", f"/{company}/employees/{employee}")
            body = client.http.request_json("GET", f"/{company}/employees/{employee}/employments")
            form = "{data: [...]}" if isinstance(body, dict) and isinstance(body.get("data"), list) else \
                "a bare array" if isinstance(body, list) else None
            if form:
                checks.add("employments", PASS, f"one employee's record and employments read (employments as {form})")
            else:
                checks.add("employments", FAIL, "employments came as neither {data: [...]} nor an array",
                           "the history step cannot read this answer; report it with the provider's API version")
        check_clock(checks)
        check_limits(checks, (), None, None)

    return run_provider("employes", body)


# -- Xero ----------------------------------------------------------------------------------
XERO_LIMIT_HEADERS = ("X-MinLimit-Remaining", "X-DayLimit-Remaining")
XERO_DAY_LIMIT = 5000
PROJECTS = "/projects.xro/2.0"


def check_xero(resource, mapping_files, engine: sa.Engine, production: bool) -> list[Finding]:
    def body(checks: Checks) -> None:
        from resources.xero import XeroDisconnected  # resources.xero imports the warehouse's token table

        check_base_url(checks, "XERO_API_URL", resource.api_url, production)
        store = resource.token_store(engine)
        idle = store.age()
        with resource.client(engine) as client:
            checks.watch(client.http)
            try:
                client.connect()
            except XeroDisconnected as error:
                checks.add("refresh_token", FAIL, str(error).split(". ")[0], str(error).split(". ", 1)[-1])
                return
            idle_text = f"idle {idle.days} days before this refresh" if idle is not None else "just stored"
            if idle is not None and idle >= XERO_TOKEN_IDLE_WARN:
                checks.add("refresh_token", WARN, f"works; {idle_text}", "Xero drops a refresh token unused for 60 days: let a push or the doctor run weekly")
            else:
                checks.add("refresh_token", PASS, f"works; {idle_text}")
            connections = client.http.request_json("GET", "/connections") or []
            tenants = {c.get("tenantId"): c.get("tenantName") for c in connections if isinstance(c, dict)}
            if resource.tenant_id in tenants:
                checks.add("tenant", PASS, f"XERO_TENANT_ID is connected ({tenants[resource.tenant_id]})")
            else:
                checks.add("tenant", FAIL, f"XERO_TENANT_ID is not among the {len(tenants)} connected organisations ({', '.join(map(str, tenants.values())) or 'none'})",
                           "set XERO_TENANT_ID to a connected organisation, or connect it again")
                return
            _check_xero_mappings(checks, client, mapping_files)
        check_clock(checks)
        check_limits(checks, XERO_LIMIT_HEADERS, "X-DayLimit-Remaining", XERO_DAY_LIMIT)

    return run_provider("xero", body)


def _all_items(client, path: str) -> list[dict]:
    items, page = [], 1
    while True:
        body = client.http.request_json("GET", path, params={"page": page, "pageSize": 500}) or {}
        items += [i for i in body.get("items") or [] if isinstance(i, dict)]
        if page >= int((body.get("pagination") or {}).get("pageCount") or 1):
            return items
        page += 1


def _check_xero_mappings(checks: Checks, client, mapping_files) -> None:
    """Every project, task and user the mapping files name exists in Xero and is in use."""
    projects_file, project_problems = read_project_mappings(mapping_files.project_mappings_path())
    agents, agent_problems = read_agent_mappings(mapping_files.agent_mappings_path())
    for name, problems in (("XERO_PROJECT_MAPPINGS_FILE", project_problems), ("AGENT_MAPPINGS_FILE", agent_problems)):
        if problems:
            checks.add("mapping_files", FAIL, f"{name}: {'; '.join(problems[:3])}", "correct the file; the push uses no mapping while it has problems")
    projects = {p.get("projectId"): p for p in _all_items(client, f"{PROJECTS}/Projects")}
    problems = []
    for mapping in sorted(projects_file.lines.values(), key=lambda m: m.line):
        project = projects.get(mapping.xero_project_id)
        if project is None:
            problems.append(f"line {mapping.line}: project {mapping.xero_project_id} does not exist")
        elif project.get("status") not in (None, "INPROGRESS"):
            problems.append(f"line {mapping.line}: project {project.get('name')!r} is {project.get('status')}")
    for project_id in sorted(projects_file.project_ids() & set(projects)):
        tasks = {t.get("taskId"): t for t in _all_items(client, f"{PROJECTS}/Projects/{project_id}/Tasks")}
        for mapping in (m for m in projects_file.lines.values() if m.xero_project_id == project_id):
            task = tasks.get(mapping.xero_task_id)
            if task is None:
                problems.append(f"line {mapping.line}: task {mapping.xero_task_id} is not a task of project {projects[project_id].get('name')!r}")
            elif task.get("status") not in (None, "ACTIVE"):
                problems.append(f"line {mapping.line}: task {task.get('name')!r} is {task.get('status')}")
    users = {u.get("userId") for u in _all_items(client, f"{PROJECTS}/ProjectsUsers")}
    problems += [f"agent mappings line {m.line}: Xero user {m.xero_user_id} is not a project user"
                 for m in agents if m.xero_user_id and m.xero_user_id not in users]
    if problems:
        checks.add("mappings_exist", FAIL, f"{len(problems)} mapping(s) name what Xero does not have: {'; '.join(problems[:5])}"
                   + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""),
                   "correct the mapping files (or the project, task or user in Xero); entries mapped there would fail to push")
    else:
        checks.add("mappings_exist", PASS, f"{len(projects_file.lines)} project and {len(agents)} agent mappings: every project, task and user exists and is active")


# -- the whole run -------------------------------------------------------------------------
def run_doctor(resources: dict, production: bool, providers: tuple[str, ...] | None = None,
               now: datetime | None = None) -> list[Finding]:
    """Every configured provider's findings, in the order the syncs run."""
    now = now or get_current_datetime()
    approved = approved_statuses()
    engine = resources["warehouse"].engine
    runs: dict[str, Callable[[], list[Finding]]] = {
        "gohighlevel": lambda: check_gohighlevel(resources["gohighlevel"], production, now),
        "halopsa": lambda: check_halopsa(resources["halopsa"], production, now, approved),
        "employes": lambda: check_employes(resources["employes"], production),
        "xero": lambda: check_xero(resources["xero"], resources["mapping_files"], engine, production),
    }
    findings = [f for name, run in runs.items() if providers is None or name in providers for f in run()]
    record(engine, findings)
    return findings


def exit_code(findings: list[Finding]) -> int:
    return 1 if any(f.severity == FAIL for f in findings) else 0


def as_json(findings: list[Finding]) -> str:
    return json.dumps({"ok": not exit_code(findings), "findings": [asdict(f) for f in findings]}, indent=2)


def summary(findings: list[Finding]) -> str:
    counts = collections.Counter(f.severity for f in findings)
    return f"{counts[PASS]} passed, {counts[WARN]} warnings, {counts[FAIL]} failed"


def record(engine: sa.Engine, findings: list[Finding]) -> None:
    """Keep each provider's latest outcome: the production push gate reads it."""
    by_provider: dict[str, list[Finding]] = collections.defaultdict(list)
    for f in findings:
        by_provider[f.provider].append(f)
    with engine.begin() as conn:
        for provider, found in by_provider.items():
            conn.execute(doctor_results.delete().where(doctor_results.c.provider == provider))
            conn.execute(doctor_results.insert().values(
                provider=provider, passed=not any(f.severity == FAIL for f in found), checked_at=utcnow(),
                findings=json.dumps([asdict(f) for f in found])))


def push_gate(engine: sa.Engine) -> str | None:
    """Why the production push must stay a dry run, or None when the doctor has passed for Halo and
    Xero (or `XERO_PUSH_WITHOUT_DOCTOR=true` overrides it)."""
    if (setting("XERO_PUSH_WITHOUT_DOCTOR") or "false").lower() == "true":
        return None
    with engine.connect() as conn:
        passed = {row.provider: row.passed for row in conn.execute(sa.select(doctor_results.c.provider, doctor_results.c.passed))}
    missing = [p for p in GATED_PROVIDERS if not passed.get(p)]
    if not missing:
        return None
    return (f"the doctor has not passed for {' and '.join(missing)} yet: run `workforce-sync doctor` (or the provider_doctor job), "
            "or set XERO_PUSH_WITHOUT_DOCTOR=true to push without it")


def iter_lines(findings: list[Finding]) -> Iterator[str]:
    yield from (f.line() for f in findings)
    yield summary(findings)
