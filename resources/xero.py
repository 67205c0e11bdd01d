"""Xero: OAuth2 with rotating refresh tokens kept in the warehouse, and the Projects time-entry API.

Xero returns a new refresh token on every refresh and the old one dies 30 minutes later, so the
token lives in the warehouse (table `xero_tokens`, Fernet-encrypted with `XERO_TOKEN_KEY`), not in
the environment. A refresh locks the token's row, exchanges the token, stores the new one and
commits, and only then hands out the access token: a second process waits on the lock and
refreshes with the token the first one stored, so concurrent runs never burn each other's token.
If the process dies after Xero answered but before the commit, the old token is still inside its
grace period for the next run.
"""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy.dialects import postgresql, sqlite

from resources.http import (
    MAX_RETRY_AFTER_S,
    ProviderAuthError,
    ProviderClient,
    ProviderError,
    ProviderResource,
    RefreshingAuth,
    RequestRejected,
    parse_retry_after,
    shared_limiter,
)
from resources.settings import ConfigError, local_data_dir, setting
from resources.warehouse import utcnow
from resources.xero_tables import xero_tokens

PROJECTS = "/projects.xro/2.0/Projects"
MAX_DURATION_MIN = 59940
MAX_PAGE_SIZE = 500
RECONNECT = (
    "Reconnect Xero: authorise the app again (authorization-code flow with scope offline_access), "
    "then store the new refresh token with `workforce-sync xero-connect` (it reads the token from stdin)."
)


class XeroDisconnected(ProviderAuthError):
    """The stored refresh token was refused: only an operator reconnecting can fix it."""


class Postpone(ProviderError):
    """Xero asks us to stop for longer than a run should wait: stop clean, the next run goes on."""


class DayBudgetSpent(Postpone):
    """The tenant's daily call budget is used up (or down to the reserve): stop, resume tomorrow."""


class EntryLocked(RequestRejected):
    """Xero refused to change a time entry that it lists as LOCKED or INVOICED."""


LOCKED_STATUSES = ("LOCKED", "INVOICED")


def local_token_key() -> str:
    """The local installation's token key: made once, kept readable by its owner only."""
    path = local_data_dir() / "xero_token.key"
    if not path.exists():
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(Fernet.generate_key())
    return path.read_text().strip()


class TokenStore:
    """The tenant's refresh token in the warehouse, encrypted, rotated under a row lock."""

    def __init__(self, engine: sa.Engine, tenant_id: str, key: str):
        self.engine = engine
        self.tenant_id = tenant_id
        try:
            self._fernet = Fernet(key.encode())
        except (ValueError, TypeError):
            raise ConfigError("XERO_TOKEN_KEY must be a Fernet key (32 url-safe base64-encoded bytes)") from None

    def store(self, refresh_token: str, *, replace: bool) -> bool:
        """Keep `refresh_token`; without `replace`, only when none is stored yet. True if stored."""
        row = {"tenant_id": self.tenant_id, "refresh_token": self._fernet.encrypt(refresh_token.encode()).decode(),
               "rotated_at": utcnow(), "refused_at": None, "refusal": None}
        with self.engine.begin() as conn:
            # One statement, so two runs storing the first token at once cannot both insert it.
            insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(xero_tokens).values(**row)
            if replace:
                insert = insert.on_conflict_do_update(index_elements=[xero_tokens.c.tenant_id], set_=row)
            else:
                insert = insert.on_conflict_do_nothing(index_elements=[xero_tokens.c.tenant_id])
            return conn.execute(insert).rowcount == 1

    @property
    def _row(self) -> sa.ColumnElement[bool]:
        return xero_tokens.c.tenant_id == self.tenant_id

    def age(self) -> timedelta | None:
        """How long ago Xero issued the stored token (it expires after 60 days unused)."""
        with self.engine.connect() as conn:
            rotated_at = conn.execute(sa.select(xero_tokens.c.rotated_at).where(self._row)).scalar()
        return utcnow() - rotated_at if rotated_at else None

    def rotate(self, exchange: Callable[[str], dict]) -> dict:
        """Exchange the stored token for a new pair, store the new refresh token, return the pair."""
        try:
            with self.engine.begin() as conn:
                # Writing first takes the row's lock (PostgreSQL) or the database's (SQLite).
                if not conn.execute(xero_tokens.update().where(self._row).values(locked_at=utcnow())).rowcount:
                    raise XeroDisconnected(f"xero: no refresh token is stored for tenant {self.tenant_id}. {RECONNECT}")
                encrypted = conn.execute(sa.select(xero_tokens.c.refresh_token).where(self._row)).scalar_one()
                try:
                    current = self._fernet.decrypt(encrypted.encode()).decode()
                except InvalidToken:
                    raise XeroDisconnected(f"xero: the stored refresh token cannot be decrypted with XERO_TOKEN_KEY. {RECONNECT}") from None
                pair = exchange(current)
                conn.execute(xero_tokens.update().where(self._row).values(
                    refresh_token=self._fernet.encrypt(pair["refresh_token"].encode()).decode(),
                    rotated_at=utcnow(), refused_at=None, refusal=None))
        except XeroDisconnected as error:
            with self.engine.begin() as conn:
                conn.execute(xero_tokens.update().where(self._row).values(refused_at=utcnow(), refusal=str(error)[:500]))
            raise
        return pair


def utc_stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def work_date_of(date_utc: Any) -> date | None:
    """The work date of a Xero `dateUtc` (a UTC instant): its day in SYNC_TIMEZONE; None when unreadable."""
    try:
        moment = datetime.fromisoformat(str(date_utc).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(ZoneInfo(setting("SYNC_TIMEZONE"))).date()


def day_bounds(first: date, last: date) -> tuple[str, str]:
    """The local days [first, last] (SYNC_TIMEZONE) in UTC: the first's midnight and the midnight after the last."""
    zone = ZoneInfo(setting("SYNC_TIMEZONE"))
    return tuple(utc_stamp(datetime.combine(day, time(), zone).astimezone(UTC)) for day in (first, last + timedelta(days=1)))


@dataclass
class Budget:
    """What Xero's rate-limit headers last said."""

    minute_remaining: int | None = None
    day_remaining: int | None = None


class XeroClient:
    def __init__(self, http: ProviderClient, token_http: ProviderClient, auth: RefreshingAuth, budget: Budget, day_reserve: int):
        self.http = http
        self.token_http = token_http
        self.auth = auth
        self.budget = budget
        self.day_reserve = day_reserve

    def stats(self) -> dict[str, Any]:
        api, token = self.http.stats.as_metadata(), self.token_http.stats.as_metadata()
        return {**{k: api[k] + token[k] for k in api}, "day_limit_remaining": self.budget.day_remaining,
                "minute_limit_remaining": self.budget.minute_remaining}

    def connect(self) -> None:
        """Refresh now, before anything is written: a refused token then stops the run clean."""
        self.auth.token()

    def day_budget_low(self) -> bool:
        return self.budget.day_remaining is not None and self.budget.day_remaining <= self.day_reserve

    def time_entries(self, project_id: str, first: date, last: date) -> list[dict]:
        """Every time entry of the project whose work date (`work_date_of`) is in [first, last], all pages.

        Asks from the first day's local midnight up to the next local midnight after the last, in
        UTC, inclusive (the description says "on or before"), and keeps only the days asked for:
        a bound of 23:59:59 would miss an entry in the day's last second. An entry whose date
        cannot be read is kept: Xero found it inside the bounds."""
        after, before = day_bounds(first, last)
        params = {"dateAfterUtc": after, "dateBeforeUtc": before, "pageSize": MAX_PAGE_SIZE}
        entries, page = [], 1
        while True:
            body = self.http.request_json("GET", f"{PROJECTS}/{project_id}/Time", params={**params, "page": page})
            if not isinstance(body, dict) or not isinstance(body.get("items"), list):
                raise ProviderError(f"xero GET time entries of project {project_id}: no 'items' list in the answer")
            entries += [e for e in body["items"] if (day := work_date_of(e.get("dateUtc"))) is None or first <= day <= last]
            if page >= int((body.get("pagination") or {}).get("pageCount") or 1):
                return entries
            page += 1

    def create(self, project_id: str, payload: dict, idempotency_key: str) -> dict:
        entry = self.http.request_json("POST", f"{PROJECTS}/{project_id}/Time", json=payload,
                                       headers={"Idempotency-Key": idempotency_key})
        if not isinstance(entry, dict) or not entry.get("timeEntryId"):
            raise ProviderError(f"xero POST time entry in project {project_id}: the answer has no timeEntryId")
        return entry

    def update(self, project_id: str, entry_id: str, payload: dict, idempotency_key: str, day: date | None = None) -> None:
        try:
            self.http.request_json("PUT", f"{PROJECTS}/{project_id}/Time/{entry_id}", json=payload,
                                   headers={"Idempotency-Key": idempotency_key})
        except RequestRejected as error:
            raise self._refusal(error, project_id, entry_id, day) from None

    def delete(self, project_id: str, entry_id: str, day: date | None = None) -> None:
        """Delete the entry; one already gone is what we wanted. Xero's answer for a gone entry is
        not published (404 or 400), so a refusal is confirmed by looking the entry up."""
        try:
            self.http.request_json("DELETE", f"{PROJECTS}/{project_id}/Time/{entry_id}")
        except RequestRejected as error:
            if error.status not in (400, 404) or self.status_of(project_id, entry_id, day) is not None:
                raise self._refusal(error, project_id, entry_id, day) from None

    def status_of(self, project_id: str, entry_id: str, day: date | None = None) -> str | None:
        """The entry's listed status (ACTIVE, LOCKED, INVOICED), or None when Xero no longer has it.
        With `day` (the entry's work date, as the push lists it), read from the day's listing, which
        answers for a gone entry without an error; else from the entry's own GET (404: gone)."""
        if day is not None:
            found = [e for e in self.time_entries(project_id, day, day) if str(e.get("timeEntryId")).lower() == entry_id.lower()]
            return str(found[0].get("status")) if found else None
        entry = self.http.request_json_or_none("GET", f"{PROJECTS}/{project_id}/Time/{entry_id}")
        return str(entry.get("status")) if isinstance(entry, dict) else None

    def _refusal(self, error: RequestRejected, project_id: str, entry_id: str, day: date | None) -> RequestRejected:
        """A 400 to a change is a lock when Xero lists the entry as LOCKED or INVOICED: its message's
        wording is not published, its status is."""
        if error.status == 400:
            status = self.status_of(project_id, entry_id, day)
            if status in LOCKED_STATUSES:
                return EntryLocked(f"{error} (Xero lists the entry as {status})", error.status, f"Xero has it {status}: {error.detail}")
        return error


class XeroResource(ProviderResource):
    """Xero Projects API for one organisation (tenant), through an OAuth2 app's refresh token."""

    api_url: str
    identity_url: str
    client_id: str
    client_secret: str
    tenant_id: str
    token_key: str
    initial_refresh_token: str | None = None
    # Published limits per tenant: 60 calls a minute, 5 concurrent, and a day's calls by the
    # app's tier (since 2 March 2026: Starter 1,000, the others 5,000), read from
    # X-DayLimit-Remaining. Calls are sequential and the `xero` pool lets one push step run at a
    # time, so 5 concurrent holds.
    calls_per_window: int = 60
    window_s: float = 60.0
    day_reserve: int = 100

    def token_store(self, engine: sa.Engine) -> TokenStore:
        store = TokenStore(engine, self.tenant_id, self.token_key)
        if self.initial_refresh_token:
            store.store(self.initial_refresh_token, replace=False)
        return store

    @contextlib.contextmanager
    def client(self, engine: sa.Engine, log: Callable[[str], None] | None = None) -> Iterator[XeroClient]:
        budget = Budget()
        store = self.token_store(engine)
        common = dict(limiter=shared_limiter(f"xero {self.api_url} {self.tenant_id}", self.calls_per_window, self.window_s),
                      secrets=[self.client_secret, self.token_key], log=log)
        token_http = self.provider_client("xero", self.identity_url, auth=httpx.Auth(),
                                    credential_hint="check XERO_CLIENT_ID and XERO_CLIENT_SECRET", **common)
        auth = RefreshingAuth(lambda: self._access_token(store, token_http))
        http = self.provider_client(
            "xero", self.api_url,
            auth=auth,
            credential_hint="the access token was refused right after a refresh; check the app's scopes (projects)",
            headers={"Xero-Tenant-Id": self.tenant_id, "Accept": "application/json"},
            on_response=lambda response: _read_budget(response, budget),
            **common,
        )
        with token_http, http:
            yield XeroClient(http, token_http, auth, budget, self.day_reserve)

    def _access_token(self, store: TokenStore, token_http: ProviderClient) -> tuple[str, float | None]:
        basic = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()

        def exchange(refresh_token: str) -> dict:
            try:
                pair = token_http.request_json(
                    "POST", "/connect/token", headers={"Authorization": f"Basic {basic}"},
                    data={"grant_type": "refresh_token", "refresh_token": refresh_token})
            except RequestRejected as error:
                if "invalid_grant" in error.detail:
                    raise XeroDisconnected(f"xero: the stored refresh token was refused (revoked, or unused for 60 days). {RECONNECT}") from None
                raise ProviderAuthError(f"{error}. Check XERO_CLIENT_ID and XERO_CLIENT_SECRET") from None
            if not isinstance(pair, dict) or not pair.get("access_token") or not pair.get("refresh_token"):
                raise ProviderError("xero POST /connect/token: the answer lacks access_token or refresh_token")
            return pair

        pair = store.rotate(exchange)
        lifetime = pair.get("expires_in")
        return pair["access_token"], float(lifetime) if isinstance(lifetime, int | float) else None


def _read_budget(response: httpx.Response, budget: Budget) -> None:
    """Note the remaining calls; stop on a 429 that no retry within the run can outlast: the day's
    limit (`X-Rate-Limit-Problem: day` in any case, or `X-DayLimit-Remaining: 0`), or any
    `Retry-After` longer than a run should wait."""
    for header, name in (("X-MinLimit-Remaining", "minute_remaining"), ("X-DayLimit-Remaining", "day_remaining")):
        value = response.headers.get(header)  # httpx reads header names in any case
        if value is not None and value.strip().isdigit():
            setattr(budget, name, int(value))
    if response.status_code != 429:
        return
    where = f"xero {response.request.method} {response.request.url.path}"
    problem = response.headers.get("X-Rate-Limit-Problem", "").strip().lower()
    if problem == "day" or response.headers.get("X-DayLimit-Remaining", "").strip() == "0":
        budget.day_remaining = 0
        raise DayBudgetSpent(f"{where}: the tenant's daily call limit is used up")
    wait = parse_retry_after(response.headers.get("Retry-After"))
    if wait is not None and wait > MAX_RETRY_AFTER_S:
        raise Postpone(f"{where}: Xero asks to wait {wait:.0f}s ({problem or 'limit'}), longer than a run waits")
