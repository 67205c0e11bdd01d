"""The emulator's Xero over real HTTP: token rotation and its grace, Idempotency-Key, locked
entries, paging by date, and the minute and day limits with Xero's headers."""

import base64
import math
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from emulator import xero

pytestmark = pytest.mark.openapi  # every GoHighLevel and Xero exchange is checked against the published descriptions

BASIC = "Basic " + base64.b64encode(f"{xero.CLIENT_ID}:{xero.CLIENT_SECRET}".encode()).decode()
PROJECT = xero.project_id(12)
TIME = f"/projects.xro/2.0/Projects/{PROJECT}/Time"


@pytest.fixture
def http(emulator):
    with httpx.Client(base_url=emulator.url, timeout=10) as client:
        yield client


def refresh(http, refresh_token, authorization=BASIC) -> httpx.Response:
    return http.post("/connect/token", headers={"Authorization": authorization},
                     data={"grant_type": "refresh_token", "refresh_token": refresh_token})


@pytest.fixture
def api(http):
    """Headers for API calls: a fresh access token and the tenant."""
    token = refresh(http, xero.INITIAL_REFRESH_TOKEN).json()["access_token"]
    return {"Authorization": f"Bearer {token}", "Xero-Tenant-Id": xero.TENANT_ID}


def body(n=1, duration=30, day="2026-11-18", description="work"):
    return {"userId": xero.user_id(n), "taskId": xero.task_id(12, "support"), "dateUtc": f"{day}T09:00:00Z",
            "duration": duration, "description": description}


def test_refresh_rotates_the_token_the_old_one_works_within_the_grace_and_revoked_ones_are_refused(emulator, http):
    first = refresh(http, xero.INITIAL_REFRESH_TOKEN)
    assert first.status_code == 200
    pair = first.json()
    assert pair["token_type"] == "Bearer" and pair["expires_in"] == 1800
    assert pair["refresh_token"] != xero.INITIAL_REFRESH_TOKEN
    assert emulator.xero.current_refresh_token == pair["refresh_token"]

    again = refresh(http, xero.INITIAL_REFRESH_TOKEN)  # the answer was "lost": the old token still works
    assert again.status_code == 200
    assert again.json()["refresh_token"] not in (pair["refresh_token"], xero.INITIAL_REFRESH_TOKEN)
    assert emulator.xero.refreshes == 2
    emulator.xero.grace_s = 0
    assert refresh(http, xero.INITIAL_REFRESH_TOKEN).json() == {"error": "invalid_grant"}  # past the grace

    wrong_client = "Basic " + base64.b64encode(b"someone:else").decode()
    assert refresh(http, pair["refresh_token"], authorization=wrong_client).json() == {"error": "invalid_client"}
    connections = http.get("/connections", headers={"Authorization": f"Bearer {pair['access_token']}"})
    assert [c["tenantId"] for c in connections.json()] == [xero.TENANT_ID]

    emulator.xero.revoke_refresh_tokens()
    assert refresh(http, pair["refresh_token"]).status_code == 400
    assert refresh(http, pair["refresh_token"]).json() == {"error": "invalid_grant"}
    emulator.xero.accept_unknown_refresh_tokens = True  # as a restarted standalone emulator
    assert refresh(http, xero.REFRESH_PREFIX + "kept-from-last-run").status_code == 200
    assert refresh(http, pair["refresh_token"]).json() == {"error": "invalid_grant"}  # revoked stays revoked
    emulator.xero.expire_access_tokens()
    expired = http.get("/connections", headers={"Authorization": f"Bearer {pair['access_token']}"})
    assert expired.status_code == 401 and expired.json()["Detail"] == "AuthenticationUnsuccessful"


def test_the_same_idempotency_key_twice_creates_one_entry_and_a_different_body_is_refused(emulator, http, api):
    headers = {**api, "Idempotency-Key": "push-1"}
    first = http.post(TIME, json=body(), headers=headers)
    assert first.status_code == 200 and first.json()["status"] == "ACTIVE"
    assert http.post(TIME, json=body(), headers=headers).json() == first.json()
    assert list(emulator.xero.entries()) == [first.json()["timeEntryId"]]

    different = http.post(TIME, json=body(duration=45), headers=headers)
    assert different.status_code == 400 and "different request" in different.json()["message"]
    assert http.post(TIME, json=body(), headers={**api, "Idempotency-Key": "k" * 129}).status_code == 400
    invalid = http.post(TIME, json=body(duration=0) | {"taskId": xero.task_id(13, "support")}, headers=api)
    assert invalid.status_code == 400 and set(invalid.json()["modelState"]) == {"duration", "taskId"}
    assert len(emulator.xero.entries()) == 1


def test_put_and_delete_on_a_locked_entry_are_refused_and_leave_it(emulator, http, api):
    entry_id = emulator.xero.add_entry_by_hand(PROJECT, xero.user_id(1), xero.task_id(12, "support"),
                                               "2026-11-18T09:00:00Z", 30, "x")
    emulator.xero.set_status(entry_id, "LOCKED")
    before = emulator.xero.entries()[entry_id]

    put = http.put(f"{TIME}/{entry_id}", json=body(duration=60), headers=api)
    assert put.status_code == 400 and put.json()["message"] == f"Time entry {entry_id} cannot be changed"
    assert http.delete(f"{TIME}/{entry_id}", headers=api).status_code == 400
    assert emulator.xero.entries()[entry_id] == before

    emulator.xero.set_status(entry_id, "ACTIVE")
    without_description = {k: v for k, v in body(duration=60).items() if k != "description"}
    assert http.put(f"{TIME}/{entry_id}", json=without_description, headers=api).status_code == 204
    cleared = {k: v for k, v in before.items() if k != "description"}  # the description is cleared: left out
    assert http.get(f"{TIME}/{entry_id}", headers=api).json() | {"dateEnteredUtc": None} == {
        **cleared, "duration": 60, "status": "ACTIVE", "dateEnteredUtc": None}
    assert http.delete(f"{TIME}/{entry_id}", headers=api).status_code == 204
    assert http.get(f"{TIME}/{entry_id}", headers=api).status_code == 404


def test_a_date_range_lists_in_date_order_over_pages(emulator, http, api):
    days = [f"2026-11-{d:02d}" for d in range(10, 20)]
    made = {day: emulator.xero.add_entry_by_hand(PROJECT, xero.user_id(1), xero.task_id(12, "support"),
                                                 f"{day}T08:00:00Z", 15, day) for day in reversed(days)}
    params = {"dateAfterUtc": "2026-11-12T00:00:00Z", "dateBeforeUtc": "2026-11-18T08:00:00Z", "pageSize": 3}
    pages = [http.get(TIME, params={**params, "page": page}, headers=api).json() for page in (1, 2, 3, 4)]
    assert pages[0]["pagination"] == {"page": 1, "pageSize": 3, "pageCount": 3, "itemCount": 7}
    listed = [e["timeEntryId"] for page in pages for e in page["items"]]
    assert listed == [made[day] for day in days[2:9]]  # both bounds inclusive
    assert pages[3]["items"] == []
    assert http.get(TIME, params={"userId": xero.user_id(2)}, headers=api).json()["items"] == []


def test_the_minute_limit_answers_429_with_retry_after_and_problem_minute(emulator, http, api):
    emulator.xero.set_limits(per_minute=3, window_s=2)
    answers = [http.get("/projects.xro/2.0/Projects", headers=api) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["X-MinLimit-Remaining"] for a in answers[:3]] == ["2", "1", "0"]
    assert answers[0].headers["X-AppMinLimit-Remaining"] == "9999"
    limited = answers[3]
    assert limited.headers["X-Rate-Limit-Problem"] == "minute"
    assert 1 <= int(limited.headers["Retry-After"]) <= 2
    assert emulator.xero.day_used == 3  # the rejected call is not counted
    time.sleep(int(limited.headers["Retry-After"]))
    assert http.get("/projects.xro/2.0/Projects", headers=api).status_code == 200


def test_a_spent_day_budget_answers_429_with_problem_day_until_midnight(emulator, http, api):
    emulator.xero.set_limits(per_day=2)
    answers = [http.get("/projects.xro/2.0/ProjectsUsers", headers=api) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert [a.headers["X-DayLimit-Remaining"] for a in answers[:2]] == ["1", "0"]
    assert answers[0].json()["pagination"]["itemCount"] == 30
    limited = answers[2]
    assert limited.headers["X-Rate-Limit-Problem"] == "day"
    now = datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    assert abs(int(limited.headers["Retry-After"]) - math.ceil((midnight - now).total_seconds())) <= 5
    assert emulator.xero.day_used == 2

    emulator.xero.set_limits()  # the default day again
    assert http.get("/projects.xro/2.0/ProjectsUsers", headers=api).status_code == 200
