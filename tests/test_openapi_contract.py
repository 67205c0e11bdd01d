"""The OpenAPI check itself: it reads the published descriptions, and it catches what breaks them
(so a quiet pass of the GoHighLevel and Xero tests means something)."""

import httpx
import pytest
from conftest import ANCHOR
from openapi_contract import Contract, specs_missing, violations_of

from emulator import xero
from emulator.ghl import LOCATION_ID
from emulator.server import Exchange, Request

pytestmark = [pytest.mark.skipif(bool(specs_missing()), reason=specs_missing() or ""), pytest.mark.usefixtures("frozen_clock")]


def search(emulator) -> httpx.Response:
    headers = {"Authorization": f"Bearer {emulator.ghl.token}", "Version": "2021-07-28"}
    return httpx.post(f"{emulator.url}/contacts/search", json={"locationId": LOCATION_ID, "pageLimit": 5}, headers=headers)


def test_the_emulators_search_answer_holds_and_a_broken_one_is_caught(emulator):
    contract = Contract().watch(emulator)
    assert search(emulator).status_code == 200
    assert contract.checked() == 1 and contract.violations() == []

    oldest = emulator.ghl.index[0][1]
    emulator.ghl.update(oldest, at=ANCHOR.replace(year=2020), dnd="sometimes", additionalEmails="not a list")
    assert search(emulator).status_code == 200

    (broken,) = contract.violations()
    assert "answer 200 to POST /contacts/search" in broken and "sometimes" in broken


def test_a_request_the_description_refuses_is_caught():
    body = b'{"userId": "not-a-uuid", "taskId": "x", "dateUtc": "yesterday", "duration": "sixty"}'
    project = xero.project_id(12)
    request = Request("POST", f"/projects.xro/2.0/Projects/{project}/Time", {},
                      {"authorization": "Bearer token", "xero-tenant-id": xero.TENANT_ID, "content-type": "application/json"}, body)

    found = violations_of(Exchange("xero", request, 200, {"Content-Type": "application/json"}, b"{}", None))

    assert any(v.startswith(f"request POST /projects.xro/2.0/Projects/{project}/Time") and "'sixty' is not of type 'integer'" in v for v in found)
