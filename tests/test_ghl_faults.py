"""Provider faults in the middle of a GoHighLevel sync end in a correct warehouse: nothing lost,
nothing duplicated, and a clear message when the run cannot finish. Each transient fault against
each provider is in test_fault_matrix.py."""

import pytest
from conftest import ghl_resources
from helpers import assert_warehouse_matches_provider, failure_message, reconcile, run_metadata, warehouse_contacts

from emulator.server import SlidingWindow
from sync_assets.ghl import ghl_contacts_reconciliation

pytestmark = pytest.mark.openapi  # every GoHighLevel and Xero exchange is checked against the published descriptions


def test_retry_after_is_honoured(emulator, sqlite_warehouse_url):
    emulator.inject("gohighlevel", "429", retry_after=2, after=1)

    assert reconcile(ghl_resources(emulator, sqlite_warehouse_url)).success

    served = emulator.requests("gohighlevel")
    throttled = next(i for i, s in enumerate(served) if s.fault == "429")
    assert served[throttled + 1].at - served[throttled].at >= 2.0


def test_expired_token_mid_run_fails_clearly_and_the_rerun_is_exact(emulator, warehouse_url):
    resources = ghl_resources(emulator, warehouse_url)
    assert reconcile(resources).success
    gone = sorted(emulator.ghl.truth())[-1]
    emulator.ghl.delete(gone)
    emulator.inject("gohighlevel", "expired_token", after=3)

    failed = reconcile(resources)

    assert not failed.success
    message = failure_message(failed)
    assert "HTTP 401" in message and "GHL_TOKEN" in message
    # A pass that stopped early must not take unseen contacts for deleted ones.
    assert len(warehouse_contacts(warehouse_url)) == 300
    assert reconcile(resources).success
    assert_warehouse_matches_provider(emulator, warehouse_url)


def test_provider_down_for_good_fails_with_the_attempts_made(emulator, sqlite_warehouse_url):
    emulator.inject("gohighlevel", "503", times=100, after=2)

    result = reconcile(ghl_resources(emulator, sqlite_warehouse_url, max_attempts=3))

    assert not result.success
    assert "HTTP 503 (gave up after 3 attempts)" in failure_message(result)
    assert len(warehouse_contacts(sqlite_warehouse_url)) == 100  # the two pages before the outage


def test_a_healthy_run_stays_under_the_rate_limit_without_a_429(emulator, sqlite_warehouse_url):
    emulator.limits["gohighlevel"] = SlidingWindow(20, 10.0)  # a tighter limit than GoHighLevel's, same rule

    result = reconcile(ghl_resources(emulator, sqlite_warehouse_url, page_size=10, requests_per_10s=20))

    assert result.success
    statuses = [s.status for s in emulator.requests("gohighlevel")]
    assert len(statuses) == 31 and 429 not in statuses
    assert run_metadata(result, ghl_contacts_reconciliation)["throttled_s"] > 5
