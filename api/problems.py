"""Errors as `application/problem+json` (RFC 9457): a status, a title, and a detail that names the
field, sync, run or header that was wrong, so a host application's developer can act on it. A
detail never holds a key, a secret or a request body."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    """Raised anywhere in a request; answered as problem+json with `status`."""

    def __init__(self, status: int, title: str, detail: str, headers: dict[str, str] | None = None, **extra):
        super().__init__(detail)
        self.status, self.title, self.detail, self.headers, self.extra = status, title, detail, headers or {}, extra


def problem_response(status: int, title: str, detail: str, instance: str, headers: dict | None = None, **extra) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, "instance": instance, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


# The schema of every error answer, for the OpenAPI document (`responses=` of each route).
PROBLEM_SCHEMA = {
    "description": "a problem (RFC 9457)",
    "content": {PROBLEM_JSON: {"schema": {
        "type": "object",
        "required": ["type", "title", "status", "detail"],
        "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                       "detail": {"type": "string"}, "instance": {"type": "string"},
                       "errors": {"type": "array", "items": {"type": "object"}}},
    }}},
}


def _where(location: tuple) -> str:
    return ".".join(str(part) for part in location)


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def on_problem(request: Request, error: Problem):
        return problem_response(error.status, error.title, error.detail, request.url.path, error.headers, **error.extra)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, error: RequestValidationError):
        # Each error names its place (body.triggered_by, query.limit, ...); the input itself is left
        # out, since a body may hold anything.
        errors = [{"where": _where(e["loc"]), "problem": e["msg"]} for e in error.errors()]
        detail = "; ".join(f"{e['where']}: {e['problem']}" for e in errors) or "the request is malformed"
        return problem_response(422, "invalid request", detail, request.url.path, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, error: StarletteHTTPException):
        title = {404: "not found", 405: "method not allowed"}.get(error.status_code, "error")
        detail = error.detail if isinstance(error.detail, str) else title
        if error.status_code == 404 and detail == "Not Found":
            detail = f"no such endpoint: {request.method} {request.url.path}"
        return problem_response(error.status_code, title, detail, request.url.path, getattr(error, "headers", None))
