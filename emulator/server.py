"""A local emulator of the four providers' APIs (and of the alert webhook): a real HTTP server on 127.0.0.1.

Built on the standard library's threading HTTP server rather than a web framework because the
fault injection needs the raw socket (half a body then a closed connection) and nothing else
here needs a framework. Each provider module adds its routes and state; this module owns what
they share: routing, per-provider rate limits with the providers' headers and 429s, injected
faults, and the log of served requests that tests read back.

Tests drive it in-process (`Emulator(...).start()`); `python -m emulator` runs it standalone.
"""

from __future__ import annotations

import collections
import importlib
import json
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from providers import PROVIDERS

FAULT_KINDS = ("429", "500", "502", "503", "slow", "drop", "malformed", "expired_token", "revoked_token")
# Faults that stay until clear_faults(): a revoked credential does not heal by itself.
PERSISTENT_FAULTS = ("revoked_token",)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body).encode()


@dataclass
class Fault:
    """Make the next `times` matching requests fail, after letting `after` of them through
    (a persistent kind fails every matching request from then on, until cleared)."""

    provider: str
    kind: str
    times: int = 1
    after: int = 0
    path: str = ""
    retry_after: float | None = None
    delay_s: float = 0.0
    method: str = ""  # only requests of this method, when set
    headers: dict[str, str] = field(default_factory=dict)  # added to an injected error's answer

    def __post_init__(self):
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; one of {FAULT_KINDS}")


@dataclass
class Served:
    provider: str
    method: str
    path: str
    query: dict[str, str]
    body: Any
    status: int
    fault: str | None
    at: float


@dataclass
class Exchange:
    """One request as the emulator received it and the answer as it went out (status, headers,
    body bytes), for observers that check both, such as the tests' OpenAPI checks. Handed to
    observers only, never kept: a page of contacts is large."""

    provider: str
    request: Request
    status: int
    headers: dict[str, str]
    body: bytes
    fault: str | None


class SlidingWindow:
    """The provider side of a rate limit: at most `limit` requests in any `period` seconds."""

    def __init__(self, limit: int, period: float):
        self.limit = limit
        self.period = period
        self.seen: collections.deque[float] = collections.deque()

    def admit(self, now: float) -> tuple[bool, int, float]:
        """(admitted, remaining, seconds until a slot frees)."""
        while self.seen and now - self.seen[0] >= self.period:
            self.seen.popleft()
        if len(self.seen) >= self.limit:
            return False, 0, self.period - (now - self.seen[0])
        self.seen.append(now)
        return True, self.limit - len(self.seen), 0.0


@dataclass(frozen=True)
class Options:
    """What the provider emulators are seeded with (each takes its own)."""

    seed: int = 7
    contacts: int = 300
    agents: int = 24
    employees: int = 40
    halo_ideal: bool = False


@dataclass
class Route:
    provider: str
    method: str
    pattern: re.Pattern
    handler: Callable[[Request], Response]


class Emulator:
    """The providers' APIs over one seeded, deterministic data set."""

    def __init__(self, *, seed: int = 7, anchor: datetime | None = None, rate_limits: bool = True, contacts: int = 300,
                 agents: int = 24, employees: int = 40, halo_ideal: bool = False, clock_skew_s: float = 0.0):
        from emulator import webhook  # the provider modules, and the webhook's, import this one

        self.lock = threading.RLock()
        self.rate_limits = rate_limits
        self.clock_skew_s = clock_skew_s  # added to the Date header: a server whose clock is off
        self.anchor = anchor or datetime.now(UTC)
        self.faults: list[Fault] = []
        self.served: list[Served] = []
        self.routes: list[Route] = []
        self.limits: dict[str, SlidingWindow] = {}
        self.limit_headers: dict[str, Callable[[int], dict[str, str]]] = {}
        self.limit_refusals: dict[str, Callable[[SlidingWindow], Response]] = {}
        self.observers: list[Callable[[Served], None]] = []
        self.exchange_observers: list[Callable[[Exchange], None]] = []
        # Each registered provider's API, as `self.<its module>` (self.ghl, self.halo, ...).
        options = Options(seed=seed, contacts=contacts, agents=agents, employees=employees, halo_ideal=halo_ideal)
        for provider in PROVIDERS:
            setattr(self, provider.module, importlib.import_module(provider.emulator).serve(self, options))
        self.webhook = webhook.Webhook(self)  # the alert sensors' Slack-compatible sink
        self._server: ThreadingHTTPServer | None = None

    # -- wiring used by provider modules ------------------------------------------------------
    def route(self, provider: str, method: str, pattern: str, handler: Callable[[Request], Response]) -> None:
        self.routes.append(Route(provider, method, re.compile(pattern + "$"), handler))

    def rate_limit(self, provider: str, limit: int, period: float, headers: Callable[[int], dict[str, str]] | None = None,
                   refusal: Callable[[SlidingWindow], Response] | None = None) -> None:
        """At most `limit` of the provider's requests in any `period` seconds while `rate_limits`
        is on. `headers(remaining)` go on every answer; `refusal(window)` is the provider's own
        429 (default: a JSON message with `Retry-After` and the headers)."""
        with self.lock:
            self.limits[provider] = SlidingWindow(limit, period)
            self.limit_headers[provider] = headers or (lambda remaining: {})
            if refusal:
                self.limit_refusals[provider] = refusal

    def no_rate_limit(self, provider: str) -> None:
        with self.lock:
            self.limits.pop(provider, None)

    # -- controls for tests ------------------------------------------------------------------
    def inject(self, provider: str, kind: str, **options) -> Fault:
        fault = Fault(provider, kind, **options)
        with self.lock:
            self.faults.append(fault)
        return fault

    def on_request(self, observer: Callable[[Served], None]) -> None:
        """Call `observer` with each served request after it is handled and before its answer is
        sent: tests change data between pages or kill a client at a chosen request."""
        with self.lock:
            self.observers.append(observer)

    def on_exchange(self, observer: Callable[[Exchange], None]) -> None:
        """Call `observer` with each request and its answer as sent (after faults are applied)."""
        with self.lock:
            self.exchange_observers.append(observer)

    def exchanged(self, exchange: Exchange) -> None:
        with self.lock:
            observers = list(self.exchange_observers)
        for observer in observers:
            observer(exchange)

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def requests(self, provider: str | None = None, path: str = "") -> list[Served]:
        with self.lock:
            return [s for s in self.served if (provider is None or s.provider == provider) and path in s.path]

    def reset_requests(self) -> None:
        with self.lock:
            self.served.clear()

    # -- serving ---------------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._server.emulator = self  # type: ignore[attr-defined]
        # A short poll interval: stop() waits for the next poll, and tests stop an emulator each.
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="emulator", daemon=True).start()
        return self.url

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None  # stopped: a second stop does nothing

    def dispatch(self, request: Request) -> tuple[Response, str, str | None]:
        """(response, provider, fault kind to apply on the wire)."""
        for route in self.routes:
            match = route.pattern.match(request.path)
            if match and route.method == request.method:
                request.params = match.groupdict()
                return (*self._serve(route, request),)
        return Response(404, {"message": f"no route {request.method} {request.path}"}), "unknown", None

    def _serve(self, route: Route, request: Request) -> tuple[Response, str, str | None]:
        provider = route.provider
        with self.lock:
            limited = self._limit(provider)
            if limited:
                return limited, provider, "rate_limit"
            fault = self._take_fault(provider, request.path, request.method)
        if fault and fault.kind == "slow":
            time.sleep(fault.delay_s)
        elif fault and fault.kind in ("429", "500", "502", "503"):
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            headers.update(fault.headers)
            return Response(int(fault.kind), {"message": f"injected {fault.kind}"}, headers), provider, fault.kind
        elif fault and fault.kind in ("expired_token", "revoked_token"):
            reason = "expired" if fault.kind == "expired_token" else "revoked"
            return Response(401, {"statusCode": 401, "message": f"Invalid token: token {reason}", "error": "Unauthorized"}), provider, fault.kind
        with self.lock:
            response = route.handler(request)
        if provider in self.limits and self.rate_limits:
            response.headers.update(self.limit_headers[provider](self._remaining(provider)))
        return response, provider, fault.kind if fault else None

    def _limit(self, provider: str) -> Response | None:
        window = self.limits.get(provider)
        if not (self.rate_limits and window):
            return None
        admitted, remaining, wait = window.admit(time.monotonic())
        if admitted:
            return None
        if provider in self.limit_refusals:
            return self.limit_refusals[provider](window)
        headers = {**self.limit_headers[provider](0), "Retry-After": str(max(1, math.ceil(wait)))}
        return Response(429, {"statusCode": 429, "message": "Too many requests"}, headers)

    def _remaining(self, provider: str) -> int:
        window = self.limits[provider]
        return max(window.limit - len(window.seen), 0)

    def _take_fault(self, provider: str, path: str, method: str) -> Fault | None:
        for fault in self.faults:
            if fault.provider == provider and fault.path in path and fault.method in ("", method):
                if fault.after > 0:
                    fault.after -= 1
                    return None
                if fault.kind in PERSISTENT_FAULTS:
                    return fault
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    def record(self, served: Served) -> None:
        with self.lock:
            self.served.append(served)
            observers = list(self.observers)
        for observer in observers:
            observer(served)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle's algorithm on, the body waits for
    # the client's delayed ACK of the headers (40 ms a request on Linux), which real APIs don't cost.
    disable_nagle_algorithm = True

    def date_time_string(self, timestamp: float | None = None) -> str:
        skew = self.server.emulator.clock_skew_s  # type: ignore[attr-defined]
        return super().date_time_string((time.time() if timestamp is None else timestamp) + skew)

    def log_message(self, *args) -> None:  # the request log is read through Emulator.requests
        pass

    def _handle(self) -> None:
        emulator: Emulator = self.server.emulator  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = Request(
            method=self.command,
            path=parts.path,
            query={k: v[-1] for k, v in parse_qs(parts.query).items()},
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        try:
            response, provider, fault = emulator.dispatch(request)
        except Exception as error:  # an emulator bug must show up as a 500 with its reason
            response, provider, fault = Response(500, {"message": f"emulator error: {error!r}"}), "unknown", None
        try:
            parsed_body = request.json()
        except ValueError:
            parsed_body = body.decode(errors="replace")
        emulator.record(Served(provider, request.method, request.path, request.query, parsed_body, response.status, fault, time.time()))
        payload = response.encoded()
        if fault == "malformed":
            payload = payload[: max(len(payload) // 2, 1)] + b"<html>"
        emulator.exchanged(Exchange(provider, request, response.status, dict(response.headers), payload, fault))
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if fault == "drop":
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle
