"""API keys, one per client application (a host app's status light, its "sync now" button, a
runbook posting events): `workforce-sync apikey create NAME --scope read --scope trigger`,
`apikey list`, `apikey revoke NAME`.

A key is `wsk_<id>.<secret>`: the id finds the row, the secret is 32 random bytes. The
warehouse's `api_keys` table keeps only the SHA-256 of the secret (a random 256-bit secret needs
no slow hash: nothing can be guessed from its digest), compared in constant time. The key is
shown once, when it is created. A request sends it as `Authorization: Bearer <key>`.

Scopes: `read` (status and runs), `trigger` (launch a sync), `events` (post events, for a caller
that cannot sign as the provider does).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from fastapi import Depends, Request

from api.problems import Problem
from resources.tables import api_keys
from resources.warehouse import utcnow

SCOPES = ("read", "trigger", "events")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
KEY = re.compile(r"wsk_([a-z0-9]{12})\.([A-Za-z0-9_-]{43})")


class ApiKeyError(Exception):
    """A bad name or scope, a name in use, or no such key (for the CLI); never holds a key."""


@dataclass(frozen=True)
class Caller:
    name: str
    scopes: frozenset[str]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create(engine: sa.Engine, name: str, scopes: list[str]) -> str:
    """A new key for `name` with `scopes`; returns the key, which is not kept."""
    if not NAME.fullmatch(name or ""):
        raise ApiKeyError(f"invalid key name {name!r}: letters, digits and . _ @ -, up to 64")
    bad = sorted(set(scopes) - set(SCOPES))
    if bad or not scopes:
        raise ApiKeyError(f"invalid scope {', '.join(bad) or '(none given)'}: choose from {', '.join(SCOPES)}")
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    with engine.begin() as conn:
        if conn.execute(sa.select(api_keys.c.id).where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))).first():
            raise ApiKeyError(f"a key named {name!r} exists: revoke it first")
        conn.execute(api_keys.insert().values(id=key_id, name=name, secret_sha256=_digest(secret),
                                              scopes=" ".join(sorted(set(scopes))), created_at=utcnow()))
    return f"wsk_{key_id}.{secret}"


def revoke(engine: sa.Engine, name: str) -> None:
    with engine.begin() as conn:
        done = conn.execute(api_keys.update().where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
                            .values(revoked_at=utcnow())).rowcount
    if not done:
        raise ApiKeyError(f"no active key named {name!r}")


def listing(engine: sa.Engine) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(api_keys.c.name, api_keys.c.scopes, api_keys.c.created_at, api_keys.c.last_used_at)
                            .where(api_keys.c.revoked_at.is_(None)).order_by(api_keys.c.name)).mappings()
        return [dict(row) for row in rows]


def caller_of(engine: sa.Engine, header: str | None) -> Caller:
    """The caller a request's Authorization header names, or a 401 problem."""
    challenge = {"WWW-Authenticate": 'Bearer realm="workforce-sync"'}
    scheme, _, key = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not key:
        raise Problem(401, "unauthorized", "send an API key as 'Authorization: Bearer <key>' (workforce-sync apikey create)", challenge)
    match = KEY.fullmatch(key.strip())
    row = None
    if match:
        with engine.connect() as conn:
            row = conn.execute(sa.select(api_keys).where(api_keys.c.id == match[1], api_keys.c.revoked_at.is_(None))).first()
    # Compared even when no row matched, so an unknown id takes as long as a wrong secret.
    expected = row.secret_sha256 if row else "0" * 64
    matches = hmac.compare_digest(expected, _digest(match[2] if match else key))
    if row is None or not matches:
        raise Problem(401, "unauthorized", "the API key is unknown or revoked", challenge)
    with engine.begin() as conn:
        conn.execute(api_keys.update().where(api_keys.c.id == row.id).values(last_used_at=utcnow()))
    return Caller(row.name, frozenset(row.scopes.split()))


def require(scope: str):
    """A route dependency: the caller, who must hold `scope` (401 without a valid key, 403 without the scope)."""
    def dependency(request: Request) -> Caller:
        caller = caller_of(request.app.state.service.engine, request.headers.get("authorization"))
        if scope not in caller.scopes:
            raise Problem(403, "forbidden", f"the key {caller.name!r} lacks the scope {scope!r}")
        return caller

    return Depends(dependency)
