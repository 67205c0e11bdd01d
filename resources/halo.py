"""HaloPSA: the client resource (client-credentials token, agents, timesheets, time entries)
and the parsers from Halo's JSON to warehouse rows.

Unverified in public material, so handled defensively: the meaning of `approvalstatus`
(we take 1 as approved, 0 as not yet, 2 as rejected, and store the raw value too), and
whether list endpoints answer with a bare array (documented) or an object carrying the list
and `record_count` (seen elsewhere in Halo's API): both are accepted.
"""

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import dagster as dg
import httpx

from resources.http import ProviderAuthError, ProviderClient, ProviderError, RefreshingAuth, shared_limiter
from resources.warehouse import text_value

APPROVED = 1
MAX_INT = 2**31 - 1


def _records(payload: Any, where: str) -> list[dict]:
    if isinstance(payload, list):
        return payload
    if isinstance(payload, dict):
        lists = [v for v in payload.values() if isinstance(v, list)]
        if len(lists) == 1:
            return lists[0]
    got = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
    raise ProviderError(f"halopsa {where}: expected a list of records, got {got}")


def minutes_of(hours: Any) -> int:
    """Halo's hours (a JSON number) as whole minutes, exactly: 0.1666666667 h is 10 min."""
    if isinstance(hours, bool) or hours is None:
        raise ValueError(f"hours must be a number, not {hours!r}")
    try:
        value = Decimal(str(hours)) * 60
    except InvalidOperation:
        raise ValueError(f"hours must be a number, not {hours!r}") from None
    if not value.is_finite() or value < 0 or value > 60 * 24 * 31:
        raise ValueError(f"hours out of range: {hours!r}")
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _day(value: Any) -> date:
    return datetime.fromisoformat(str(value)).date()


def _moment(value: Any) -> datetime | None:
    if value in (None, "", "0001-01-01T00:00:00"):
        return None
    return datetime.fromisoformat(str(value)).replace(tzinfo=None)


def _int_or_none(value: Any) -> int | None:
    """A whole number as Halo sends it (a JSON number or a numeric string), None when absent."""
    if value in (None, ""):
        return None
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number = int(value)
        if not -MAX_INT <= number <= MAX_INT:  # the warehouse's integer columns
            raise ValueError
        return number
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"not a whole number: {str(value)[:40]!r}") from None


def content_hash(record: dict) -> str:
    return hashlib.blake2b(json.dumps(record, sort_keys=True, default=str).encode(), digest_size=16).hexdigest()


def agent_row(record: dict) -> dict:
    """One Agent as a `halo_agents` row."""
    if not isinstance(record, dict) or _int_or_none(record.get("id")) is None or isinstance(record.get("id"), str):
        raise ValueError("no integer id")
    row = {
        "id": int(record["id"]),
        "name": text_value(record.get("name")),
        "first_name": text_value(record.get("firstname")),
        "last_name": text_value(record.get("surname")),
        "email": text_value(record.get("email")),
        "initials": text_value(record.get("initials")),
        "team": text_value(record.get("team")),
        "job_title": text_value(record.get("jobtitle")),
        "is_disabled": bool(record.get("isdisabled")),
    }
    row["content_hash"] = content_hash(row)
    return row


def entry_row(record: dict, fiscal_year: str) -> dict:
    """One TimesheetEvent as a `halo_time_entries` row; raises ValueError naming the problem."""
    if not isinstance(record, dict) or _int_or_none(record.get("id")) is None or isinstance(record.get("id"), str):
        raise ValueError("no integer id")
    try:
        start = _moment(record.get("start_date"))
        end = _moment(record.get("end_date"))
    except (TypeError, ValueError) as error:
        raise ValueError(f"unparsable date ({error})") from None
    if start is None:
        raise ValueError("no start_date")
    agent_id = _int_or_none(record.get("agent_id"))
    if agent_id is None:
        raise ValueError("no agent_id")
    row = {
        "id": int(record["id"]),
        "fiscal_year": fiscal_year,
        "agent_id": agent_id,
        "work_date": start.date(),
        "start_at": start,
        "end_at": end,
        "minutes": minutes_of(record.get("timetaken")),
        "hours_raw": str(record.get("timetaken")),
        "ticket_id": _int_or_none(record.get("ticket_id")),
        "action_number": _int_or_none(record.get("action_number")),
        "client_id": _int_or_none(record.get("client_id")),
        "client_name": text_value(record.get("customer")),
        "contract_id": _int_or_none(record.get("contract_id")),
        "site_id": _int_or_none(record.get("site_id")),
        "event_type": _int_or_none(record.get("event_type")),
        "subject": text_value(record.get("subject")),
        "note": text_value(record.get("note")),
        "charge_rate": text_value(record.get("charge_rate")),
    }
    row["content_hash"] = content_hash(row)
    return row


def timesheet_row(record: dict, fiscal_year: str) -> dict:
    """One agent-day Timesheet as a `halo_timesheets` row; raises ValueError naming the problem."""
    if not isinstance(record, dict) or _int_or_none(record.get("id")) is None or isinstance(record.get("id"), str):
        raise ValueError("no integer id")
    try:
        work_date = _day(record["date"])
        agent_id = _int_or_none(record["agent_id"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"no usable date or agent_id ({error})") from None
    if agent_id is None:
        raise ValueError("no agent_id")
    approval = record.get("approval") or {}
    if not isinstance(approval, dict):
        raise ValueError(f"approval is not an object but {type(approval).__name__}")
    status = _int_or_none(approval.get("approvalstatus"))
    row = {
        "id": int(record["id"]),
        "fiscal_year": fiscal_year,
        "agent_id": agent_id,
        "work_date": work_date,
        "target_minutes": minutes_of(record.get("target_hours") or 0),
        "actual_minutes": minutes_of(record.get("actual_hours") or 0),
        "approval_status": status,
        "approved": status == APPROVED,
        "approved_by": _int_or_none(approval.get("approvedby")),
        "approver": text_value(approval.get("approver")),
        "submitted_at": _moment(approval.get("submissiondate")),
    }
    row["content_hash"] = content_hash(row)
    return row


class HaloClient:
    def __init__(self, http: ProviderClient, token_http: ProviderClient):
        self.http = http
        self.token_http = token_http

    def stats(self) -> dict[str, Any]:
        api, token = self.http.stats.as_metadata(), self.token_http.stats.as_metadata()
        return {k: api[k] + token[k] for k in api}

    def agents(self) -> list[dict]:
        params = {"includeenabled": "true", "includedisabled": "true", "includeapiagents": "false"}
        return _records(self.http.request_json("GET", "/api/Agent", params=params), "GET /api/Agent")

    def _dated(self, path: str, start: date, end: date, agent_ids: list[int]) -> list[dict]:
        params = {"start_date": start.isoformat(), "end_date": end.isoformat(), "agents": ",".join(map(str, agent_ids))}
        return _records(self.http.request_json("GET", path, params=params), f"GET {path}")

    def time_entries(self, start: date, end: date, agent_ids: list[int]) -> list[dict]:
        """TimesheetEvents whose start falls on a day in [start, end]."""
        return self._dated("/api/TimesheetEvent", start, end, agent_ids)

    def timesheets(self, start: date, end: date, agent_ids: list[int]) -> list[dict]:
        """Per-agent, per-day timesheets with their approval, for days in [start, end]."""
        return self._dated("/api/Timesheet", start, end, agent_ids)


class HaloPSAResource(dg.ConfigurableResource):
    """HaloPSA API with an application's client credentials (client_credentials grant, scope all)."""

    base_url: str
    auth_url: str
    client_id: str
    client_secret: str
    tenant: str | None = None
    # Halo publishes no limit; public clients meet 429s under bursts, so stay well below.
    requests_per_minute: int = 300
    chunk_days: int = 31
    timeout_s: float = 60.0
    max_attempts: int = 6
    backoff_initial_s: float = 1.0

    @contextlib.contextmanager
    def client(self, log: Callable[[str], None] | None = None) -> Iterator[HaloClient]:
        common = dict(
            limiter=shared_limiter(f"halopsa {self.base_url}", self.requests_per_minute, 60.0),
            secrets=[self.client_secret],
            timeout_s=self.timeout_s,
            max_attempts=self.max_attempts,
            backoff_initial_s=self.backoff_initial_s,
            log=log,
        )
        token_http = ProviderClient(
            "halopsa", self.auth_url, auth=httpx.Auth(),
            credential_hint="check HALO_CLIENT_ID and HALO_CLIENT_SECRET (and HALO_AUTH_URL, HALO_TENANT)", **common
        )
        http = ProviderClient(
            "halopsa", self.base_url, auth=RefreshingAuth(lambda: self._fetch_token(token_http)),
            credential_hint="the token was refused right after it was issued; check the API application's permissions",
            headers={"Accept": "application/json"}, **common,
        )
        with token_http, http:
            yield HaloClient(http, token_http)

    def _fetch_token(self, token_http: ProviderClient) -> tuple[str, float | None]:
        form = {"grant_type": "client_credentials", "client_id": self.client_id, "client_secret": self.client_secret, "scope": "all"}
        params = {"tenant": self.tenant} if self.tenant else None
        try:
            payload = token_http.request_json("POST", "/token", params=params, data=form)
        except ProviderError as error:
            if "HTTP 400" in str(error):  # OAuth servers answer bad client credentials with 400 invalid_client too
                raise ProviderAuthError(f"{error}. Check HALO_CLIENT_ID and HALO_CLIENT_SECRET") from None
            raise
        if not isinstance(payload, dict) or not payload.get("access_token"):
            raise ProviderAuthError("halopsa POST /token: the answer has no access_token")
        lifetime = payload.get("expires_in")
        return payload["access_token"], float(lifetime) if isinstance(lifetime, int | float) else None
