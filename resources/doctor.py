"""`workforce-sync doctor`: read-only checks, at first contact with a real tenant, of every
assumption the syncs make about a provider.

Each check sends a few GET requests (Xero also refreshes its token, which the push does on
every run), compares what came back with what the sync relies on, and says `PASS`, `WARN` (a
quirk the sync copes with, and how) or `FAIL` (the sync would fail or write wrong data: what
to do). Nothing is written to a provider. Messages name settings, never their values when
secret.

This module holds what every provider shares (the findings, the base URL, clock and rate-limit
checks, the run of one provider and of all); each provider's own checks sit next to its client,
in `resources/<provider>_doctor.py`.

The latest outcome per provider is kept in the warehouse (`doctor_results`): in production the
Xero push stays a dry run until the Halo and Xero checks have passed (see `push_gate`).
"""

from __future__ import annotations

import collections
import email.utils
import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import sqlalchemy as sa
from dagster._time import get_current_datetime

from resources.http import ProviderAuthError, ProviderClient, ProviderError, RequestRejected
from resources.settings import setting
from resources.tables import doctor_results
from resources.warehouse import utcnow

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
SKEW_WARN = timedelta(seconds=30)
SKEW_FAIL = timedelta(minutes=5)  # OAuth servers and signed requests start refusing around here
LOW_BUDGET = 0.10  # a day budget under 10 % left is worth a warning
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


class Stopped(Exception):
    """A finding that leaves nothing further worth checking for its provider (see `Checks.stop`)."""


@dataclass
class Checks:
    """The findings of one provider, and the response headers its checks look at."""

    provider: str
    findings: list[Finding] = field(default_factory=list)
    headers: list[httpx.Headers] = field(default_factory=list)

    def add(self, check: str, severity: str, seen: str, action: str = "") -> None:
        self.findings.append(Finding(self.provider, check, severity, seen, action))

    def pass_or_warn(self, check: str, ok: bool, passed: str, warned: str, action: str) -> None:
        """A PASS saying `passed` when `ok`, else a WARN saying `warned` and what to do."""
        if ok:
            self.add(check, PASS, passed)
        else:
            self.add(check, WARN, warned, action)

    def stop(self, check: str, severity: str, seen: str, action: str = "") -> Stopped:
        """Add the finding and return what to raise to end this provider's checks (the clock and
        limit checks included): `raise checks.stop(...)`."""
        self.add(check, severity, seen, action)
        return Stopped(check)

    def watch(self, http: ProviderClient) -> None:
        """Keep the headers of every response `http` receives, for the clock and limit checks."""
        http.on_response(lambda response: self.headers.append(response.headers))


@dataclass(frozen=True)
class Limits:
    """The rate-limit headers a provider documents, the one counting down the day's budget, and
    that budget where it is one size for all (else `low_remaining`, the remainder worth a warning)."""

    documented: tuple[str, ...] = ()
    day_remaining: str | None = None
    day_limit: int | None = None
    low_remaining: int | None = None


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


def check_limits(checks: Checks, limits: Limits) -> None:
    """Rate-limit headers the provider documents, and the day's budget left."""
    if not limits.documented:
        checks.add("rate_limit_headers", PASS, "none documented; the client stays under its own limit and backs off on 429")
        return
    last = checks.headers[-1] if checks.headers else httpx.Headers()
    missing = [name for name in limits.documented if name not in last]
    if missing:
        checks.add("rate_limit_headers", WARN, f"missing {', '.join(missing)}",
                   "the client keeps to the published limits on its own and backs off on 429; budgets are not reported")
    else:
        checks.add("rate_limit_headers", PASS, ", ".join(f"{name}: {last[name]}" for name in limits.documented))
    if limits.day_remaining is None:
        return
    value, day_limit = last.get(limits.day_remaining, ""), limits.day_limit
    seen = f"{value} of {day_limit} requests left today" if day_limit else f"{value} requests left today ({limits.day_remaining})"
    low = day_limit * LOW_BUDGET if day_limit else limits.low_remaining
    if not value.isdigit():
        checks.add("day_budget", WARN, f"unknown ({limits.day_remaining} not sent)")
    elif low is not None and int(value) < low:
        checks.add("day_budget", WARN, seen + ("" if day_limit else f", under {low}"), "syncs stop early today; they resume tomorrow")
    else:
        checks.add("day_budget", PASS, seen)


def first_answer(checks: Checks, request: Callable[[], Any], check: str, refused: str, action: str, accepted: str) -> Any:
    """The answer to a provider's first request for the configured account: a refusal is a FAIL of
    the account setting (`check`) that ends the checks; an answer shows the credentials work."""
    try:
        answer = request()
    except RequestRejected as error:
        raise checks.stop(check, FAIL, f"{refused} refused: HTTP {error.status}", action)
    checks.add("credentials", PASS, accepted)
    return answer


# -- one provider, and all of them ---------------------------------------------------------
def run_provider(provider: str, url_setting: str, url: str, production: bool, open_client: Callable[[], AbstractContextManager],
                 body: Callable[[Checks, Any], None], limits: Limits = Limits()) -> list[Finding]:
    """One provider's checks: its base URL; its own (`body`), with a client open whose answers are
    watched; then the clock and rate limits those answers showed. An error that stops them becomes
    a FAIL naming what to do."""
    checks = Checks(provider)
    try:
        check_base_url(checks, url_setting, url, production)
        with open_client() as client:
            checks.watch(client.http)
            body(checks, client)
        check_clock(checks)
        check_limits(checks, limits)
    except Stopped:
        pass  # its finding is added already
    except ProviderAuthError as error:
        checks.add("credentials", FAIL, str(error).split(". ")[0], "check the provider's credentials (see the message)"
                   if "Check" not in str(error) else str(error).split(". ", 1)[-1])
    except RequestRejected as error:
        checks.add("reachable", FAIL, str(error)[:300], "check the base URL and the account settings named above")
    except ProviderError as error:
        checks.add("reachable", FAIL, str(error)[:300], "check the base URL, the network and the provider's status page")
    return checks.findings


ProviderChecks = Callable[[dict, bool, datetime], list[Finding]]


def run_doctor(checks: dict[str, ProviderChecks], resources: dict, production: bool, now: datetime | None = None) -> list[Finding]:
    """The findings of each provider in `checks` (name: its checks, the registry's `doctor`), in
    that order."""
    now = now or get_current_datetime()
    findings = [f for check in checks.values() for f in check(resources, production, now)]
    record(resources["warehouse"].engine, findings)
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
