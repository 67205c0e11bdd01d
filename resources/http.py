"""The HTTP core every provider client is built on.

One `ProviderClient` per run: httpx with timeouts; tenacity retries with exponential backoff and
jitter on 429, 5xx, timeouts, dropped connections and unreadable bodies, honouring
`Retry-After` (a 429 without it, from a provider whose budget is a rolling window others share,
waits out a whole window instead: `window_s`); a client-side limiter set to the provider's
published limit, kept in this process (`RateLimiter`) or in the warehouse for every process of
an account (`SharedRateLimiter`); bearer or
refreshing auth (an httpx auth flow, so a 401 fetches a new token once); and counters that
the assets report as run metadata. Error messages never carry a secret: every message is passed
through `redact` with the client's secrets first.
"""

from __future__ import annotations

import collections
import email.utils
import hashlib
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import dagster as dg
import httpx
import sqlalchemy as sa
import tenacity

from resources.tables import provider_pauses, provider_requests

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 300.0


class ProviderError(Exception):
    """A provider call failed for good; the message is safe to show (no secrets)."""

    retry_helps = True  # whether running the sync again, unchanged, may succeed


class ProviderAuthError(ProviderError):
    """The provider rejected our credentials: retrying will not help, an operator must act."""

    retry_helps = False


class RequestRejected(ProviderError):
    """The provider refused this one request (4xx): `status` and its safe `detail` say why."""

    def __init__(self, message: str, status: int, detail: str):
        super().__init__(message)
        self.status = status
        self.detail = detail


class RetryableError(ProviderError):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class BudgetSpent(ProviderError):
    """A 429 that names no wait from a provider whose budget is a rolling window others may share
    (`ProviderClient(window_s=...)`): only a whole window is sure to free room."""


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class RateLimiter:
    """At most `calls` requests in any `period` seconds (a sliding log, thread-safe).

    A sliding log rather than a token bucket: a bucket lets a full burst plus the refill
    through within one window, which is exactly what a provider's fixed or sliding window
    counts as over the limit. The margin absorbs the jitter between our send and their count:
    5 % of the period, at most a quarter second (jitter does not grow with the window, and 5 % of
    Xero's minute would waste 3 s a minute).
    """

    MAX_MARGIN_S = 0.25

    def __init__(self, calls: int, period: float, margin: float = 0.05):
        self.calls = calls
        self.provider_period = period
        self.period = period + min(period * margin, self.MAX_MARGIN_S)
        self._sent: collections.deque[float] = collections.deque()
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Block until a request may be sent; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = time.monotonic()
                while self._sent and now - self._sent[0] >= self.period:
                    self._sent.popleft()
                delay = max(self._paused_until - now, 0.0)
                if not delay and len(self._sent) < self.calls:
                    self._sent.append(now)
                    return waited
                if not delay:
                    delay = self.period - (now - self._sent[0])
            time.sleep(delay)
            waited += delay

    def pause(self, seconds: float) -> None:
        """Hold every caller back, e.g. after a 429 told us to wait."""
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def remaining(self) -> int:
        """Requests that may still be sent in the current window."""
        with self._lock:
            now = time.monotonic()
            return max(self.calls - sum(1 for sent in self._sent if now - sent < self.period), 0)


class SharedRateLimiter:
    """`RateLimiter`'s rule (at most `calls` requests in any `period` seconds, the same margin)
    over every process that talks to one provider account, not just this one: the sliding log
    and the pause are rows in the warehouse (`provider_requests`, `provider_pauses`), read and
    written under a lock (PostgreSQL: an advisory transaction lock per account; SQLite: the
    database's write lock, `BEGIN IMMEDIATE`) and pruned as requests are made. For a budget the
    provider counts per tenant while the sensor, runs and the doctor each run in a process of
    their own. Times are wall-clock epoch seconds: monotonic clocks are not shared between
    processes.

    `max_wait_s`: a caller that must not block for long (a sensor tick) gets a ProviderError
    instead of a wait longer than this."""

    def __init__(self, engine: sa.Engine, account: str, calls: int, period: float, margin: float = 0.05,
                 max_wait_s: float | None = None):
        self.engine = engine
        self.account = account
        self.calls = calls
        self.provider_period = period
        self.period = period + min(period * margin, RateLimiter.MAX_MARGIN_S)
        self.max_wait_s = max_wait_s
        # PostgreSQL advisory lock keys are signed 64-bit numbers; one per account.
        self._lock_key = int.from_bytes(hashlib.blake2b(account.encode(), digest_size=8).digest(), "big", signed=True)

    def _locked(self, conn: sa.Connection) -> None:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": self._lock_key})

    def acquire(self) -> float:
        """Block until a request may be sent (and log it as sent); returns the seconds waited. A
        warehouse too busy to answer (SQLite's write lock held past its busy timeout) is an error
        worth retrying, like a provider's."""
        try:
            return self._acquire()
        except sa.exc.OperationalError as error:
            raise RetryableError(f"{self.account.split()[0]}: the shared request log in the warehouse is busy "
                                 f"({type(error.orig).__name__})") from None

    def _acquire(self) -> float:
        log, pauses = provider_requests, provider_pauses
        waited = 0.0
        while True:
            with self.engine.connect() as conn:
                self._locked(conn)
                now = time.time()
                conn.execute(log.delete().where(log.c.account == self.account, log.c.sent_at <= now - self.period))
                paused_until = conn.execute(sa.select(pauses.c.paused_until).where(pauses.c.account == self.account)).scalar()
                delay = max((paused_until or 0.0) - now, 0.0)
                if not delay:
                    count, oldest = conn.execute(sa.select(sa.func.count(), sa.func.min(log.c.sent_at))
                                                 .where(log.c.account == self.account)).one()
                    if count < self.calls:
                        conn.execute(log.insert().values(account=self.account, sent_at=now))
                        conn.commit()
                        return waited
                    delay = max(oldest + self.period - now, 0.001)
                conn.commit()
            if self.max_wait_s is not None and waited + delay > self.max_wait_s:
                raise ProviderError(f"{self.account.split()[0]}: the request budget shared by every process is spent "
                                    f"for the next {delay:.0f}s; not waiting that long here")
            time.sleep(delay)
            waited += delay

    def pause(self, seconds: float) -> None:
        """Hold every caller of the account back, in every process, e.g. after a 429."""
        pauses = provider_pauses
        with self.engine.connect() as conn:
            self._locked(conn)
            until = time.time() + seconds
            current = conn.execute(sa.select(pauses.c.paused_until).where(pauses.c.account == self.account)).scalar()
            if current is None:
                conn.execute(pauses.insert().values(account=self.account, paused_until=until))
            elif current < until:
                conn.execute(pauses.update().where(pauses.c.account == self.account).values(paused_until=until))
            conn.commit()

    def remaining(self) -> int:
        """Requests that may still be sent in the current window, as the shared log counts them."""
        log = provider_requests
        with self.engine.connect() as conn:
            count = conn.execute(sa.select(sa.func.count()).where(log.c.account == self.account,
                                                                  log.c.sent_at > time.time() - self.period)).scalar_one()
        return max(self.calls - count, 0)


_limiters: dict[str, RateLimiter] = {}
_limiters_lock = threading.Lock()


def shared_limiter(account: str, calls: int, period: float) -> RateLimiter:
    """The one limiter of a provider account in this process. Steps of a run that follow each
    other (snapshot, then history) share it; a fresh limiter per step would let the second step
    burst while the provider still counts the first step's requests."""
    with _limiters_lock:
        limiter = _limiters.get(account)
        if limiter is None or (limiter.calls, limiter.provider_period) != (calls, period):
            limiter = _limiters[account] = RateLimiter(calls, period)
        return limiter


class BearerAuth(httpx.Auth):
    """A static token (GoHighLevel Private Integration Token, Employes JWT)."""

    def __init__(self, token: str):
        self.token = token

    def auth_flow(self, request):
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


class RefreshingAuth(httpx.Auth):
    """A token from `fetch_token() -> (token, lifetime in seconds or None)`, fetched again a
    minute before it expires, and once more when a request gets a 401 anyway."""

    def __init__(self, fetch_token: Callable[[], tuple[str, float | None]], early_s: float = 60.0):
        self._fetch_token = fetch_token
        self._early_s = early_s
        self._token: str | None = None
        self._expires_at: float | None = None
        self._lock = threading.Lock()

    def _current(self, stale: str | None = None) -> str:
        with self._lock:
            expired = self._expires_at is not None and time.monotonic() >= self._expires_at
            if self._token is None or self._token == stale or expired:
                self._token, lifetime = self._fetch_token()
                self._expires_at = time.monotonic() + max(lifetime - self._early_s, 0.0) if lifetime else None
            return self._token

    def token(self) -> str:
        """The current token, fetched now if there is none yet."""
        return self._current()

    def fetching_with(self, fetch_token: Callable[[], tuple[str, float | None]]) -> "RefreshingAuth":
        """This auth, its token kept, fetching the next one with `fetch_token` (a new client's)."""
        with self._lock:
            self._fetch_token = fetch_token
        return self

    def auth_flow(self, request):
        token = self._current()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = f"Bearer {self._current(stale=token)}"
            yield request


@dataclass
class RequestStats:
    """What one run asked of a provider; reported as run metadata."""

    requests: int = 0
    retries: int = 0
    throttled_s: float = 0.0
    statuses: collections.Counter = field(default_factory=collections.Counter)

    def as_metadata(self) -> dict[str, Any]:
        return {"requests": self.requests, "retries": self.retries, "throttled_s": round(self.throttled_s, 2)}


class ProviderClient:
    """httpx plus the retry, limit, auth and counting rules shared by every provider."""

    def __init__(
        self,
        provider: str,
        base_url: str,
        *,
        auth: httpx.Auth,
        limiter: RateLimiter,
        secrets: Iterable[str] = (),
        credential_hint: str = "",
        headers: dict[str, str] | None = None,
        timeout_s: float = 30.0,
        max_attempts: int = 6,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        log: Callable[[str], None] | None = None,
        on_response: Callable[[httpx.Response], None] | None = None,
        window_s: float | None = None,
        max_window_waits: int = 12,
    ):
        self.provider = provider
        self.stats = RequestStats()
        self.limiter = limiter
        # A 429 without Retry-After: with `window_s`, every caller waits out that whole window
        # (up to `max_window_waits` times a request, not counted as attempts); without, backoff.
        self.window_s = window_s
        self.max_window_waits = max_window_waits
        self._secrets = [s for s in secrets if s]
        self._credential_hint = credential_hint
        self._log = log or (lambda message: None)
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            auth=auth,
            headers=headers or {},
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            event_hooks={"request": [self._count], "response": [on_response] if on_response else []},
        )
        self._retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(RetryableError),
            stop=tenacity.stop_after_attempt(max_attempts),
            wait=self._wait_strategy(backoff_initial_s, backoff_max_s),
            before_sleep=self._before_retry,
            reraise=True,
        )

    def __enter__(self) -> ProviderClient:
        return self

    def __exit__(self, *exc) -> None:
        self._http.close()

    def on_response(self, hook: Callable[[httpx.Response], None]) -> None:
        """Also call `hook` with every response (the doctor reads their dates and limit headers)."""
        self._http.event_hooks["response"].append(hook)

    def _count(self, request: httpx.Request) -> None:
        # Counted per request on the wire, so auth-flow retries and token calls count too.
        self.stats.requests += 1

    @staticmethod
    def _wait_strategy(initial: float, maximum: float):
        backoff = tenacity.wait_random_exponential(multiplier=initial, max=maximum)

        def wait(state: tenacity.RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            if isinstance(error, RetryableError) and error.retry_after is not None:
                return error.retry_after
            return backoff(state)

        return wait

    def _before_retry(self, state: tenacity.RetryCallState) -> None:
        self.stats.retries += 1
        error = state.outcome.exception()
        wait = state.next_action.sleep if state.next_action else 0.0
        if isinstance(error, RetryableError) and error.retry_after is not None:
            self.limiter.pause(error.retry_after)
        self._log(f"{self.provider}: {error}; retry {state.attempt_number} in {wait:.1f}s")

    def request_json_or_none(self, method: str, path: str, **kwargs: Any) -> Any:
        """`request_json`, or None when the provider answers 404: the record is gone."""
        try:
            return self.request_json(method, path, **kwargs)
        except RequestRejected as error:
            if error.status == 404:
                return None
            raise

    def request_json(self, method: str, path: str, **kwargs) -> Any:
        """Send a request and return its JSON body, retrying what is worth retrying. A spent
        window (`BudgetSpent`) is waited out, every caller of the limiter held back meanwhile,
        and the request's attempts start afresh: a backfill outlasts a budget others spend too."""
        windows = 0
        while True:
            try:
                return self._retrying(self._attempt, method, path, **kwargs)
            except RetryableError as error:
                raise ProviderError(f"{error} (gave up after {self._retrying.stop.max_attempt_number} attempts)") from None
            except BudgetSpent as error:
                windows += 1
                if windows > self.max_window_waits:
                    raise ProviderError(f"{error} (gave up after waiting out {self.max_window_waits} windows)") from None
                self.stats.retries += 1
                self.limiter.pause(self.window_s)
                self._log(f"{self.provider}: {error}; the request budget is spent: waiting {self.window_s:.0f}s, "
                          f"a whole rate-limit window, before going on (wait {windows} of at most {self.max_window_waits})")

    def _attempt(self, method: str, path: str, **kwargs) -> Any:
        self.stats.throttled_s += self.limiter.acquire()
        where = f"{self.provider} {method} {path}"
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as error:
            raise RetryableError(f"{where}: timed out ({type(error).__name__})") from None
        except httpx.TransportError as error:
            raise RetryableError(f"{where}: connection failed ({type(error).__name__}: {self._safe(error)})") from None
        self.stats.statuses[response.status_code] += 1
        if response.status_code in RETRYABLE_STATUS:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if retry_after is not None and retry_after > MAX_RETRY_AFTER_S:
                raise ProviderError(f"{where}: HTTP {response.status_code}, asked to wait {retry_after:.0f}s; giving up")
            if response.status_code == 429 and retry_after is None and self.window_s is not None:
                raise BudgetSpent(f"{where}: HTTP 429 {self._safe(response.text[:200])}".rstrip())
            raise RetryableError(f"{where}: HTTP {response.status_code}", retry_after)
        if response.status_code in (401, 403):
            raise ProviderAuthError(
                f"{where}: HTTP {response.status_code} {self._safe(response.text[:200])}. "
                f"The provider rejected the credentials{': ' + self._credential_hint if self._credential_hint else ''}"
            )
        if response.status_code >= 400:
            detail = self._safe(response.text[:500])
            raise RequestRejected(f"{where}: HTTP {response.status_code} {detail}", response.status_code, detail)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise RetryableError(f"{where}: response body is not valid JSON ({len(response.content)} bytes)") from None

    def _safe(self, value: object) -> str:
        return redact(str(value), self._secrets)


class NamedProvider(Protocol):
    """The HTTP core as a sync step sees it: the provider it talks to (`ProviderClient.provider`)."""

    @property
    def provider(self) -> str: ...


class CountedClient(Protocol):
    """What a sync step needs of a provider's client (HaloClient, XeroClient, ...): the provider
    its requests go to, to count them under, and those counts as run metadata."""

    @property
    def http(self) -> NamedProvider: ...

    def stats(self) -> dict[str, Any]: ...


ClientT = TypeVar("ClientT", bound=CountedClient, covariant=True)


class OpensClient(Protocol[ClientT]):
    """A provider's resource as a sync step opens it (sync_assets/step.py `SyncStep.open`): its
    `client(...)` is a context manager of the provider's client. The step always passes `log=`;
    the other arguments are the resource's own (`HaloPSAResource.client(engine, ...)`), hence the
    gradual signature."""

    def client(self, *args: Any, **options: Any) -> AbstractContextManager[ClientT]: ...


class ProviderResource(dg.ConfigurableResource):
    """What every provider's resource shares: the settings of the retry rules, and the HTTP
    client built from them (each resource adds its credentials, limit and headers). Each one's
    `client(..., log=...)` makes it an `OpensClient` of its provider's client."""

    timeout_s: float = 30.0
    max_attempts: int = 6
    backoff_initial_s: float = 1.0

    def provider_client(self, provider: str, base_url: str, *, limiter: RateLimiter, secrets: Iterable[str],
                        log: Callable[[str], None] | None, **options: Any) -> ProviderClient:
        return ProviderClient(provider, base_url, limiter=limiter, secrets=secrets, log=log, timeout_s=self.timeout_s,
                              max_attempts=self.max_attempts, backoff_initial_s=self.backoff_initial_s, **options)
