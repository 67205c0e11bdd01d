"""The providers' published OpenAPI descriptions as a check on the emulator and on our clients.

The descriptions are copies, kept beside the repository in `../shared/specs` (see its SOURCES.md):
GoHighLevel's contacts API (`GoHighLevel/highlevel-api-docs`, `apps/contacts.json` of 2025-08-26
and `common/common-schemas.json`) and Xero's Projects and Identity APIs (`XeroAPI/Xero-OpenAPI`,
`xero-projects.yaml`, `xero-identity.yaml`). The files are never changed; the quirks a validator
trips on are mended in the loaded copy (`_mend_*`). openapi-core does the validation.

`Contract.watch(emulator)` records every exchange the emulator serves for GoHighLevel and Xero;
`Contract.violations()` then checks each one: the answer against the operation's documented
response (when the status is documented), and the request our client sent against the
operation's parameters and body (when the emulator accepted it: requests a test sends to be
refused are refused on purpose). Exchanges with an injected fault are skipped, and so is the
token endpoint, which no description covers.
"""

from __future__ import annotations

import copy
import functools
import json
import threading
import warnings
from pathlib import Path
from typing import Any

import yaml
from openapi_core import OpenAPI
from openapi_core.templating.responses.exceptions import ResponseNotFound
from openapi_core.testing import MockRequest, MockResponse

from emulator.server import Emulator, Exchange

SPECS_DIR = Path(__file__).resolve().parents[2] / "shared" / "specs"
GHL_HOST = "https://services.leadconnectorhq.com"
XERO_HOST = "https://api.xero.com"
COMMON_REF = "../common/common-schemas.json#"


def specs_missing() -> str | None:
    """Why the descriptions cannot be used, or None."""
    if not SPECS_DIR.is_dir():
        return f"the published API descriptions are not at {SPECS_DIR} (a clone with shared/ beside it has them)"
    return None


def _walk(node: Any, visit) -> None:
    if isinstance(node, dict):
        visit(node)
        for value in node.values():
            _walk(value, visit)
    elif isinstance(node, list):
        for value in node:
            _walk(value, visit)


def _mend_ghl(spec: dict, common: dict) -> dict:
    """GoHighLevel's quirks (SOURCES.md): refs into ../common/common-schemas.json, `name`/`in` on
    bearer schemes (not allowed by OpenAPI 3.0), and Contact.searchAfter typed as strings while
    its own example, and the service, send [number, string]."""
    spec = copy.deepcopy(spec)
    schemas = spec["components"]["schemas"]
    for name, schema in common["components"]["schemas"].items():
        schemas.setdefault(f"common_{name}", copy.deepcopy(schema))

    def point_home(node: dict) -> None:
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(COMMON_REF):
            node["$ref"] = "#/components/schemas/common_" + ref.rsplit("/", 1)[-1]

    _walk(spec, point_home)
    for scheme in spec["components"].get("securitySchemes", {}).values():
        if scheme.get("type") == "http":
            scheme.pop("name", None)
            scheme.pop("in", None)
    schemas["Contact"]["properties"]["searchAfter"]["items"] = {"anyOf": [{"type": "number"}, {"type": "string"}]}
    return spec


def _mend_xero(spec: dict) -> dict:
    """Xero's quirk (SOURCES.md): `$ref`s with siblings (`rate: {$ref: Amount, type: number}`),
    which OpenAPI 3.0 says to ignore and some validators honour; drop the siblings."""
    spec = copy.deepcopy(spec)

    def drop_siblings(node: dict) -> None:
        if "$ref" in node and len(node) > 1:
            for key in [k for k in node if k != "$ref"]:
                del node[key]

    _walk(spec, drop_siblings)
    return spec


@functools.cache
def descriptions() -> dict[str, OpenAPI]:
    ghl = json.loads((SPECS_DIR / "ghl-contacts-2025-08-26.json").read_text())
    common = json.loads((SPECS_DIR / "ghl-common-schemas.json").read_text())
    projects = yaml.safe_load((SPECS_DIR / "xero-projects.yaml").read_text())
    identity = yaml.safe_load((SPECS_DIR / "xero-identity.yaml").read_text())
    return {
        "gohighlevel": OpenAPI.from_dict(_mend_ghl(ghl, common)),
        "xero-projects": OpenAPI.from_dict(_mend_xero(projects)),
        "xero-identity": OpenAPI.from_dict(_mend_xero(identity)),
    }


def _described(exchange: Exchange) -> tuple[OpenAPI, str, str] | None:
    """(description, host, path as the description spells it) for an exchange one covers."""
    path = exchange.request.path
    if exchange.provider == "gohighlevel":
        return descriptions()["gohighlevel"], GHL_HOST, path
    if exchange.provider == "xero":
        if path.startswith("/projects.xro/2.0/"):
            return descriptions()["xero-projects"], XERO_HOST, path
        if path.lower().startswith("/connections"):
            # The description (and the official SDK) spell it /Connections; Xero's docs /connections.
            return descriptions()["xero-identity"], XERO_HOST, "/Connections" + path[len("/connections"):]
    return None


def violations_of(exchange: Exchange) -> list[str]:
    described = _described(exchange)
    if described is None or exchange.fault is not None:
        return []
    spec, host, path = described
    request = exchange.request
    where = f"{request.method} {request.path}"
    mock_request = MockRequest(host, request.method, path, args=request.query, headers=request.headers,
                               data=request.body, content_type=request.headers.get("content-type", "application/json"))
    found = []
    with warnings.catch_warnings():
        # openapi-core checks bearer schemes, not oauth2 ones (Xero's); it says so once per request.
        warnings.filterwarnings("ignore", "Unsupported scheme type")
        if 200 <= exchange.status < 300:
            result = spec.unmarshal_request(mock_request)
            found += [f"request {where}: {_explain(e)}" for e in result.errors]
        response = MockResponse(exchange.body, exchange.status, exchange.headers,
                                content_type=exchange.headers.get("Content-Type", "application/json"))
        try:
            spec.validate_response(mock_request, response)
        except ResponseNotFound:
            pass  # a status the description does not document (429, 500): nothing to check against
        except Exception as error:  # openapi-core's validation errors
            found.append(f"answer {exchange.status} to {where}: {_explain(error)}")
    return found


def _explain(error: Exception) -> str:
    """The validator's finding in a line: the schema errors at the bottom of its chain, if any."""
    leaves, cause = [], error
    while cause is not None:
        leaves += [e.message for e in getattr(cause, "schema_errors", None) or []]
        cause = cause.__cause__
    return f"{type(error).__name__}: " + ("; ".join(dict.fromkeys(leaves)) or str(error))[:1500]


class Contract:
    """The exchanges one test's emulator served, checked against the descriptions at the end."""

    def __init__(self):
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()

    def watch(self, emulator: Emulator) -> Contract:
        emulator.on_exchange(self._keep)
        return self

    def _keep(self, exchange: Exchange) -> None:
        if exchange.provider in ("gohighlevel", "xero"):
            with self._lock:
                self.exchanges.append(exchange)

    def checked(self) -> int:
        return sum(_described(e) is not None and e.fault is None for e in self.exchanges)

    def violations(self) -> list[str]:
        return [v for exchange in self.exchanges for v in violations_of(exchange)]
