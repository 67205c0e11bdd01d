"""Xero's OAuth2 identity server and Projects time-entry API, as Xero's developer docs describe them.

Held to Xero's published descriptions (`XeroAPI/Xero-OpenAPI`, `xero-projects.yaml`,
`xero-identity.yaml`) and to its official SDK (`xero-python`), which the tests use to drive it.

Serves `POST /connect/token` (refresh-token grant, client in HTTP Basic auth or, as the SDK
sends it, in the form; the answer carries `id_token` as Xero's does): every refresh
rotates the refresh token, the previous one stays usable for a grace period (30 minutes) in case
the answer was lost, a token unused for 60 days expires, and revoked ones answer `invalid_grant`;
access tokens live 30 minutes. Behind a bearer token, `GET /connections` (any letter case), and behind a bearer
token plus `Xero-Tenant-Id` the Projects API under `/projects.xro/2.0`: `Projects`,
`ProjectsUsers`, a project's `Tasks`, and its `Time` entries (list with user, task and
inclusive date filters in pages of up to 500, get, create, replace, delete; LOCKED and INVOICED
entries refuse changes), lists in Xero's `{pagination, items}` envelope. POST and PUT honour an
`Idempotency-Key`: the same request again within `idempotency_ttl_s` gets the first (2xx)
answer back and changes nothing. Per-tenant limits (60 calls in a sliding minute, 1,000 a day
as on the Starter tier, 10,000 a minute for the app) answer 429 with `Retry-After` and `X-Rate-Limit-Problem`, and
every admitted API answer carries the `X-*Limit-Remaining` headers; they apply only while
`emulator.rate_limits` is on, and rejected calls are not counted. One organisation: a project
per Halo client and two tasks each (ids derived from the Halo client ids, so
`config/xero_projects.csv` can name them), 30 users, and no time entries until someone makes them.
"""

from __future__ import annotations

import base64
import collections
import copy
import hashlib
import json
import math
import random
import secrets
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from emulator.halo import CLIENTS
from providers.xero import (  # the local resource's credentials
    LOCAL_CLIENT_ID as CLIENT_ID, LOCAL_CLIENT_SECRET as CLIENT_SECRET, LOCAL_REFRESH_TOKEN as INITIAL_REFRESH_TOKEN, LOCAL_TENANT_ID as TENANT_ID,
)
from emulator.server import Emulator, Options, Request, Response

REFRESH_PREFIX = "local-xero-refresh-"
TENANT_NAME = "Workforce Sync Local"
SCOPE = "offline_access projects"
USERS = 30
TASKS = ("support", "project")
TASK_NAMES = {"support": "Support", "project": "Project work"}
STATUSES = ("ACTIVE", "LOCKED", "INVOICED")
MAX_DURATION_MIN = 59940
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_IDEMPOTENCY_KEY = 128
APP_PER_MINUTE = 10_000
# The Starter tier's day since 2 March 2026 (developer.xero.com/faq/pricing-and-policy-updates); the other tiers have 5,000.
STARTER_DAY_LIMIT = 1000
BASE = r"/projects\.xro/2\.0"
UNAUTHORIZED = {"Type": None, "Title": "Unauthorized", "Status": 401, "Detail": "AuthenticationUnsuccessful"}


def _uuid5(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def user_id(n: int) -> str:
    return _uuid5(f"xero-user-{n}")


def project_id(client_id: int) -> str:
    """The Xero project of a Halo client (ids of `emulator.halo.CLIENTS`)."""
    return _uuid5(f"xero-project-{client_id}")


def task_id(client_id: int, task: str) -> str:
    """The task `task` (one of TASKS) of a Halo client's project."""
    return _uuid5(f"xero-task-{client_id}-{task}")


def utc_stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def precise_stamp(moment: datetime) -> str:
    """Like `utc_stamp`, with milliseconds when there are any (an entry made in Xero's UI late in a day)."""
    stamp = utc_stamp(moment)
    return stamp[:-1] + f".{moment.microsecond // 1000:03d}Z" if moment.microsecond else stamp


def parse_utc(value: Any) -> datetime | None:
    """An ISO 8601 date-time as an aware UTC datetime (zone-less means UTC); None if it is not one."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _message(status: int, message: str) -> Response:
    return Response(status, {"message": message})


def _not_found(project: str) -> Response:
    return _message(404, f"Project {project} not found")


def _invalid(errors: dict[str, list[str]]) -> Response:
    return Response(400, {"message": " ".join(m for messages in errors.values() for m in messages), "modelState": errors})


def _page(items: list[dict[str, Any]], query: dict[str, str]) -> Response:
    """One page of `items` in Xero's envelope; page is 1-based, pageSize 1..500."""
    try:
        page = int(query.get("page") or 1)
        size = int(query.get("pageSize") or DEFAULT_PAGE_SIZE)
    except ValueError:
        return _message(400, "page and pageSize must be whole numbers")
    if page < 1 or not 1 <= size <= MAX_PAGE_SIZE:
        return _message(400, f"page must be 1 or more and pageSize between 1 and {MAX_PAGE_SIZE}")
    chosen = items[(page - 1) * size: page * size]
    return Response(200, {"pagination": {"page": page, "pageSize": size, "pageCount": math.ceil(len(items) / size),
                                         "itemCount": len(items)}, "items": copy.deepcopy(chosen)})


def _fingerprint(request: Request) -> str:
    """A hash of (method, path, body), the body's JSON read so key order and spacing do not count."""
    try:
        body = json.dumps(request.json(), sort_keys=True).encode()
    except ValueError:
        body = request.body
    return hashlib.sha256(b"\0".join([request.method.encode(), request.path.encode(), body])).hexdigest()


def _basic(header: str) -> tuple[str, str] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        client_id, _, secret = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return client_id, secret


def _id_token(client_id: str) -> str:
    """An OpenID Connect id_token's shape (header.payload.signature, base64url); unsigned: nothing here reads it."""
    part = lambda value: base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()  # noqa: E731
    return ".".join([part({"alg": "none", "typ": "JWT"}), part({"aud": client_id, "iss": "https://identity.xero.com"}), "local"])


class _Window:
    """Calls admitted in the last `period` seconds; only admitted calls are recorded."""

    def __init__(self, limit: int, period: float):
        self.limit = limit
        self.period = period
        self.seen: collections.deque[float] = collections.deque()

    def wait(self, now: float) -> float | None:
        """None if a call may go now, else the seconds until a slot frees."""
        while self.seen and now - self.seen[0] >= self.period:
            self.seen.popleft()
        if len(self.seen) < self.limit:
            return None
        return self.period - (now - self.seen[0]) if self.seen else self.period

    def remaining(self) -> int:
        return max(self.limit - len(self.seen), 0)


class Xero:
    """One Xero organisation's projects, users, tasks and time entries, its OAuth2 tokens and
    limits, and the controls tests use to change them."""

    def __init__(self, emulator: Emulator, *, seed: int):
        self.emulator = emulator
        self.random = random.Random(f"xero-{seed}")
        self.client_id = CLIENT_ID
        self.client_secret = CLIENT_SECRET
        self.grace_s = 1800.0
        self.access_ttl_s = 1800.0
        self.idle_expiry_s = 60 * 86400.0
        self.idempotency_ttl_s = 360.0
        self.accept_unknown_refresh_tokens = False  # a restarted standalone emulator takes its own old tokens
        self.refreshes = 0
        self.token_extras: dict[str, Any] = {}  # fields a test adds to the token answer
        # The answer to a PUT or DELETE of an entry that is gone: unpublished, 404 or 400.
        self.gone_status = 404
        self.current_refresh_token = INITIAL_REFRESH_TOKEN
        self.day_used = 0
        self._day = datetime.now(UTC).date()
        now = time.monotonic()
        self._refresh: dict[str, dict[str, float | None]] = {INITIAL_REFRESH_TOKEN: {"issued": now, "used": None}}
        self._revoked: set[str] = set()
        self._access: dict[str, float] = {}  # access token -> time.monotonic() it expires at
        self._idempotency: dict[str, tuple[str, float, Response]] = {}  # key -> (fingerprint, expiry, answer)
        self._entries: dict[str, dict[str, Any]] = {}
        self._minute = _Window(60, 60.0)
        self._app = _Window(APP_PER_MINUTE, 60.0)
        self.set_limits()
        created = utc_stamp(emulator.anchor - timedelta(days=400))
        self.connection = {"id": _uuid5("xero-connection-local"), "tenantId": TENANT_ID, "tenantType": "ORGANISATION",
                           "tenantName": TENANT_NAME, "createdDateUtc": created, "updatedDateUtc": created}
        self.users = {user_id(n): {"userId": user_id(n), "name": f"User {n}", "email": f"user{n}@example.test"}
                      for n in range(1, USERS + 1)}
        self.projects: dict[str, dict[str, Any]] = {}
        self.tasks: dict[str, dict[str, dict[str, Any]]] = {}  # project id -> task id -> task
        for client, name, rate, _contract in CLIENTS:
            pid = project_id(client)
            self.projects[pid] = {"projectId": pid, "contactId": _uuid5(f"xero-contact-{client}"), "name": name,
                                  "currencyCode": "EUR", "status": "INPROGRESS"}
            self.tasks[pid] = {task_id(client, t): {"taskId": task_id(client, t), "name": TASK_NAMES[t],
                                                    "rate": {"currency": "EUR", "value": rate}, "chargeType": "TIME",
                                                    "status": "ACTIVE"} for t in TASKS}
        route = lambda method, pattern, handler: emulator.route("xero", method, pattern, handler)  # noqa: E731
        time_path = BASE + r"/Projects/(?P<project>[^/]+)/Time"
        route("POST", r"/connect/token", self.token)
        # /connections in Xero's docs, /Connections in its OpenAPI description and SDK.
        route("GET", r"/(?i:connections)", self._guarded(lambda r: Response(200, [dict(self.connection)]), tenant=False))
        route("GET", BASE + r"/Projects", self._guarded(lambda r: _page(list(self.projects.values()), r.query)))
        route("GET", BASE + r"/ProjectsUsers", self._guarded(lambda r: _page(list(self.users.values()), r.query)))
        route("GET", BASE + r"/Projects/(?P<project>[^/]+)/Tasks", self._guarded(self.list_tasks))
        route("GET", time_path, self._guarded(self.list_time))
        route("POST", time_path, self._guarded(self.create_time))
        route("GET", time_path + r"/(?P<entry>[^/]+)", self._guarded(self.get_time))
        route("PUT", time_path + r"/(?P<entry>[^/]+)", self._guarded(self.replace_time))
        route("DELETE", time_path + r"/(?P<entry>[^/]+)", self._guarded(self.delete_time))

    # -- controls ---------------------------------------------------------------------------
    def entries(self) -> dict[str, dict[str, Any]]:
        """The time entries Xero holds now, by timeEntryId, as served."""
        with self.emulator.lock:
            return {entry_id: dict(entry) for entry_id, entry in self._entries.items()}

    def set_status(self, time_entry_id: str, status: str) -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        with self.emulator.lock:
            self._entries[time_entry_id]["status"] = status

    def add_entry_by_hand(self, project_id: str, user_id: str, task_id: str, date_utc: str, duration: int,
                          description: str) -> str:
        """An entry made in Xero's own UI: no validation beyond a readable date."""
        moment = parse_utc(date_utc)
        if moment is None:
            raise ValueError(f"not an ISO date-time: {date_utc!r}")
        with self.emulator.lock:
            return self._add(project_id, {"userId": user_id, "taskId": task_id, "dateUtc": precise_stamp(moment),
                                          "duration": duration, "description": description})

    def delete_entry_by_hand(self, time_entry_id: str) -> None:
        with self.emulator.lock:
            del self._entries[time_entry_id]

    def revoke_refresh_tokens(self) -> None:
        """Every refresh token issued so far, the initial one included, answers invalid_grant from now on."""
        with self.emulator.lock:
            self._revoked.update(self._refresh)
            self._revoked.add(INITIAL_REFRESH_TOKEN)

    def expire_access_tokens(self) -> None:
        with self.emulator.lock:
            self._access.clear()

    def set_limits(self, per_minute: int = 60, window_s: float = 60.0, per_day: int = STARTER_DAY_LIMIT) -> None:
        """The tenant's limits; calls already counted stay counted."""
        with self.emulator.lock:
            self._minute.limit, self._minute.period = per_minute, window_s
            self.per_day = per_day

    # -- tokens -----------------------------------------------------------------------------
    def token(self, request: Request) -> Response:
        form = {k: v[-1] for k, v in parse_qs(request.body.decode(errors="replace")).items()}
        # The client authenticates in HTTP Basic (Xero's docs) or in the form (Xero's own SDK,
        # xero-python's TokenApi, sends client_id and client_secret there).
        client = _basic(request.headers.get("authorization", "")) or (form.get("client_id"), form.get("client_secret"))
        if client != (self.client_id, self.client_secret):
            return Response(400, {"error": "invalid_client"})
        if form.get("grant_type") != "refresh_token":
            return Response(400, {"error": "unsupported_grant_type"})
        presented = form.get("refresh_token", "")
        now = time.monotonic()
        state = self._refresh.get(presented)
        if (state is None and self.accept_unknown_refresh_tokens and presented.startswith(REFRESH_PREFIX)
                and presented not in self._revoked):
            state = self._refresh[presented] = {"issued": now, "used": None}
        if (state is None or presented in self._revoked or now - state["issued"] >= self.idle_expiry_s
                or (state["used"] is not None and now - state["used"] >= self.grace_s)):
            return Response(400, {"error": "invalid_grant"})
        if state["used"] is None:
            state["used"] = now  # the grace runs from the first use
        refresh_token = REFRESH_PREFIX + secrets.token_hex(16)
        self._refresh[refresh_token] = {"issued": now, "used": None}
        access_token = secrets.token_urlsafe(32)
        self._access = {t: expiry for t, expiry in self._access.items() if expiry > now}
        self._access[access_token] = now + self.access_ttl_s
        self.refreshes += 1
        self.current_refresh_token = refresh_token
        # The fields of Xero's answer as the SDK's recorded refresh_token cassette shows them.
        return Response(200, {"id_token": _id_token(self.client_id), "access_token": access_token,
                              "expires_in": int(self.access_ttl_s), "token_type": "Bearer", "refresh_token": refresh_token,
                              "scope": SCOPE, **self.token_extras})

    # -- what every API call goes through -------------------------------------------------------
    def _guarded(self, handler: Callable[[Request], Response], *, tenant: bool = True) -> Callable[[Request], Response]:
        """Bearer token, then tenant header, then the limits, then Idempotency-Key (POST, PUT)."""

        def serve(request: Request) -> Response:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            expiry = self._access.get(token.strip()) if scheme.lower() == "bearer" else None
            if expiry is None or expiry <= time.monotonic():
                return Response(401, dict(UNAUTHORIZED), {"WWW-Authenticate": 'Bearer error="invalid_token"'})
            if tenant and request.headers.get("xero-tenant-id", "").strip().lower() != TENANT_ID:
                return Response(403, {"Type": None, "Title": "Forbidden", "Status": 403,
                                      "Detail": "Xero-Tenant-Id is missing or not a tenant this token is connected to"})
            limited, headers = self._count()
            if limited:
                return limited
            response = self._idempotent(request, handler) if request.method in ("POST", "PUT") else handler(request)
            response.headers.update(headers)
            return response

        return serve

    def _count(self) -> tuple[Response | None, dict[str, str]]:
        """(429 if a limit is spent, else None; the remaining-calls headers). Counts admitted calls only."""
        if not self.emulator.rate_limits:
            return None, {}
        now, wall = time.monotonic(), datetime.now(UTC)
        if wall.date() != self._day:
            self._day, self.day_used = wall.date(), 0
        problem, wait = None, 0.0
        if self.day_used >= self.per_day:
            midnight = datetime.combine(wall.date() + timedelta(days=1), datetime.min.time(), UTC)
            problem, wait = "day", (midnight - wall).total_seconds()
        else:
            for name, window in (("minute", self._minute), ("appminute", self._app)):
                wait = window.wait(now)
                if wait is not None:
                    problem = name
                    break
        if problem:
            headers = {**self._remaining(), "Retry-After": str(max(1, math.ceil(wait))), "X-Rate-Limit-Problem": problem}
            return Response(429, {"Title": "Too Many Requests", "Status": 429, "Detail": f"The {problem} rate limit is spent"},
                            headers), {}
        self._minute.seen.append(now)
        self._app.seen.append(now)
        self.day_used += 1
        return None, self._remaining()

    def _remaining(self) -> dict[str, str]:
        return {"X-MinLimit-Remaining": str(self._minute.remaining()),
                "X-DayLimit-Remaining": str(max(self.per_day - self.day_used, 0)),
                "X-AppMinLimit-Remaining": str(self._app.remaining())}

    def _idempotent(self, request: Request, handler: Callable[[Request], Response]) -> Response:
        key = request.headers.get("idempotency-key")
        if not key:
            return handler(request)
        if len(key) > MAX_IDEMPOTENCY_KEY:
            return _message(400, f"Idempotency-Key must be at most {MAX_IDEMPOTENCY_KEY} characters")
        now = time.monotonic()
        self._idempotency = {k: kept for k, kept in self._idempotency.items() if kept[1] > now}
        fingerprint = _fingerprint(request)
        kept = self._idempotency.get(key)
        if kept is not None:
            if kept[0] != fingerprint:
                return _message(400, f"Idempotency-Key {key} was used with a different request")
            answer = kept[2]
            return Response(answer.status, copy.deepcopy(answer.body), dict(answer.headers))
        response = handler(request)
        if 200 <= response.status < 300:  # failures are not remembered: a retry tries again
            self._idempotency[key] = (fingerprint, now + self.idempotency_ttl_s, copy.deepcopy(response))
        return response

    # -- API --------------------------------------------------------------------------------
    def list_tasks(self, request: Request) -> Response:
        pid = request.params["project"].lower()
        return _page(list(self.tasks[pid].values()), request.query) if pid in self.projects else _not_found(pid)

    def list_time(self, request: Request) -> Response:
        pid = request.params["project"].lower()
        if pid not in self.projects:
            return _not_found(pid)
        query = request.query
        bounds = {}
        for name in ("dateAfterUtc", "dateBeforeUtc"):
            if query.get(name):
                moment = parse_utc(query[name])
                if moment is None:
                    return _message(400, f"{name} is not an ISO 8601 date-time: {query[name]!r}")
                bounds[name] = moment
        user, task = (query.get("userId") or "").lower(), (query.get("taskId") or "").lower()
        after, before = bounds.get("dateAfterUtc", datetime.min.replace(tzinfo=UTC)), bounds.get("dateBeforeUtc", datetime.max.replace(tzinfo=UTC))
        found = [e for e in self._entries.values() if e["projectId"] == pid
                 and (not user or e["userId"] == user) and (not task or e["taskId"] == task)
                 and after <= parse_utc(e["dateUtc"]) <= before]
        found.sort(key=lambda e: (e["dateUtc"], e["timeEntryId"]))
        return _page(found, query)

    def get_time(self, request: Request) -> Response:
        entry, missing = self._entry_of(request)
        return missing or Response(200, dict(entry))

    def create_time(self, request: Request) -> Response:
        pid = request.params["project"].lower()
        if pid not in self.projects:
            return _not_found(pid)
        fields, invalid = self._validated(pid, request)
        if invalid:
            return invalid
        return Response(200, dict(self._entries[self._add(pid, fields)]))

    def replace_time(self, request: Request) -> Response:
        entry, refused = self._entry_of(request, change=True)
        if refused:
            return refused
        fields, invalid = self._validated(entry["projectId"], request)
        if invalid:
            return invalid
        entry.update(fields)
        if entry["description"] is None:
            del entry["description"]  # omitted, it is cleared (and Xero leaves an absent value out)
        return Response(204)

    def delete_time(self, request: Request) -> Response:
        entry, refused = self._entry_of(request, change=True)
        if refused:
            return refused
        del self._entries[entry["timeEntryId"]]
        return Response(204)

    # -- helpers ----------------------------------------------------------------------------
    def _add(self, pid: str, fields: dict[str, Any]) -> str:
        entry_id = str(uuid.UUID(int=self.random.getrandbits(128), version=4))
        while entry_id in self._entries:
            entry_id = str(uuid.UUID(int=self.random.getrandbits(128), version=4))
        self._entries[entry_id] = {"timeEntryId": entry_id, "userId": fields["userId"], "projectId": pid,
                                   "taskId": fields["taskId"], "dateUtc": fields["dateUtc"],
                                   "dateEnteredUtc": utc_stamp(datetime.now(UTC)), "duration": fields["duration"],
                                   "description": fields["description"], "status": "ACTIVE"}
        if fields["description"] is None:
            del self._entries[entry_id]["description"]  # Xero leaves an absent value out
        return entry_id

    def _entry_of(self, request: Request, *, change: bool = False) -> tuple[dict[str, Any] | None, Response | None]:
        """(the entry the path names, None) or (None, 404, or `gone_status` when `change`; or 400 when
        `change` and it is LOCKED or INVOICED)."""
        pid, entry_id = request.params["project"].lower(), request.params["entry"].lower()
        if pid not in self.projects:
            return None, _not_found(pid)
        entry = self._entries.get(entry_id)
        if entry is None or entry["projectId"] != pid:
            return None, _message(self.gone_status if change else 404, f"Time entry {entry_id} not found")
        if change and entry["status"] != "ACTIVE":
            # Xero publishes no wording for this refusal; clients must read the entry's status.
            return None, _message(400, f"Time entry {entry_id} cannot be changed")
        return entry, None

    def _validated(self, pid: str, request: Request) -> tuple[dict[str, Any] | None, Response | None]:
        """The body's fields, normalised, or a 400 naming every field that is wrong."""
        try:
            body = request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return None, _invalid({"body": ["The request body must be a JSON object."]})
        errors: dict[str, list[str]] = {}
        user, task = body.get("userId"), body.get("taskId")
        if not isinstance(user, str) or user.lower() not in self.users:
            errors["userId"] = [f"User {user} does not exist."]
        if not isinstance(task, str) or task.lower() not in self.tasks[pid]:
            errors["taskId"] = [f"Task {task} is not a task of project {pid}."]
        moment = parse_utc(body.get("dateUtc"))
        if moment is None:
            errors["dateUtc"] = ["dateUtc must be an ISO 8601 date-time."]
        duration = body.get("duration")
        if isinstance(duration, bool) or not isinstance(duration, int) or not 1 <= duration <= MAX_DURATION_MIN:
            errors["duration"] = [f"duration must be a whole number of minutes from 1 to {MAX_DURATION_MIN}."]
        description = body.get("description")
        if description is not None and not isinstance(description, str):
            errors["description"] = ["description must be text."]
        if errors:
            return None, _invalid(errors)
        return {"userId": user.lower(), "taskId": task.lower(), "dateUtc": utc_stamp(moment), "duration": duration,
                "description": description}, None


def serve(emulator: Emulator, options: Options) -> Xero:
    """This provider's routes and state on `emulator` (emulator/server.py, from the registry)."""
    return Xero(emulator, seed=options.seed)
