"""HaloPSA's rate limit as Halo states it (300 requests per rolling 5 minutes, a 429 with its own
text and no Retry-After), scaled down to windows of seconds: the emulator enforces it, the
client paces under it across processes through the warehouse, and a 429 is waited out."""

import subprocess
import sys
import textwrap
from datetime import date

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa
from conftest import ANCHOR, halo_resources
from helpers import halo_entries, meta, stored_entries, sync_reference, sync_year

from emulator import Emulator
from resources.http import ProviderError, SharedRateLimiter
from resources.tables import provider_pauses, provider_requests
from resources.warehouse import engine_for
from sync_assets.fiscal_years import FISCAL_YEARS
from sync_assets.halo import halo_agents

pytestmark = pytest.mark.usefixtures("frozen_clock")

YEARS = ["FY2024", "FY2025", "FY2026"]  # the emulator's data runs from 2025-10 to 2026-11; FY2024 is empty
HALO_TEXT = "Rate Limit Reached - {} Requests per rolling {} window"


@pytest.fixture
def emulator(request):
    """A small tenant with the providers' limits on (Halo's at its default, 300 per 5 minutes)."""
    emulator = Emulator(seed=7, anchor=ANCHOR, contacts=10, agents=3, employees=2)
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(FISCAL_YEARS.name, YEARS)
        yield instance


def halo_served(emulator, status: int | None = None) -> list:
    return [s for s in emulator.requests("halopsa") if status is None or s.status == status]


def most_in_any_window(times: list[float], window_s: float) -> int:
    times, most, first = sorted(times), 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= window_s:
            first += 1
        most = max(most, last - first + 1)
    return most


def logged(instance, result) -> list[str]:
    return [entry.user_message for entry in instance.all_logs(result.run_id)]


def test_the_emulator_refuses_the_301st_request_in_5_minutes_with_halos_text_and_no_retry_after(emulator):
    halo = emulator.halo
    with httpx.Client(base_url=emulator.url) as http:
        assert {http.get("/api/authinfo").status_code for _ in range(300)} == {200}
        refused = http.get("/api/authinfo")
        assert refused.status_code == 429
        assert "Retry-After" not in refused.headers
        assert refused.json() == HALO_TEXT.format(300, "5 minute")
        halo.set_rate_limit(None)
        assert http.get("/api/authinfo").status_code == 200
        halo.set_rate_limit(2, 60)
        assert [http.get("/api/authinfo").status_code for _ in range(3)] == [200, 200, 429]
        assert http.get("/api/authinfo").json() == HALO_TEXT.format(2, "1 minute")


def test_a_three_year_backfill_paced_to_the_window_gets_no_429_and_equals_halo(emulator, sqlite_warehouse_url, instance):
    emulator.halo.set_rate_limit(10, 2.0)
    resources = halo_resources(emulator, sqlite_warehouse_url, rate_limit=10, rate_window_s=2.0, chunk_days=92)
    assert sync_reference(resources, instance).success
    runs = [sync_year(resources, instance, key) for key in YEARS]
    assert all(run.success for run in runs)
    assert not halo_served(emulator, 429)
    assert most_in_any_window([s.at for s in halo_served(emulator)], 2.0) <= 10
    assert sum(meta(run)["throttled_s"] for run in runs) > 0  # the pacing did hold the runs back
    assert stored_entries(sqlite_warehouse_url, date(2024, 1, 1)) == halo_entries(emulator, date(2024, 1, 1))


def test_a_year_sync_unaware_of_a_tighter_budget_waits_out_the_429s_and_completes(emulator, sqlite_warehouse_url, instance):
    # Other integrations share the tenant's budget: the emulator allows 10 per 2 s, the client
    # believes 1,000. Each 429 (Halo's text, no Retry-After) is waited out for a whole window.
    emulator.halo.set_rate_limit(10, 2.0)
    resources = halo_resources(emulator, sqlite_warehouse_url, rate_limit=1000, rate_window_s=2.0)
    result = sync_year(resources, instance, "FY2026")
    assert result.success
    refused = halo_served(emulator, 429)
    assert refused and all(s.fault == "rate_limit" for s in refused)
    metadata = meta(result)
    assert metadata["retries"] == len(refused)
    assert metadata["throttled_s"] >= 1.9 * len(refused)  # a whole window each, less the time to note the pause
    waits = [m for m in logged(instance, result) if "waiting 2s, a whole rate-limit window" in m]
    assert len(waits) == len(refused) and HALO_TEXT.format(10, "2 second") in waits[0]
    assert stored_entries(sqlite_warehouse_url) == halo_entries(emulator)


def test_three_consecutive_429s_on_one_request_are_waited_out_without_spending_its_attempts(emulator, sqlite_warehouse_url,
                                                                                               instance):
    emulator.inject("halopsa", "429", times=3, path="/api/TimesheetEvent")  # no Retry-After
    resources = halo_resources(emulator, sqlite_warehouse_url, rate_window_s=0.5, max_attempts=2)
    result = sync_year(resources, instance, "FY2026", days={"start": "2026-11-01", "end": "2026-11-19"})
    assert result.success
    assert meta(result)["retries"] == 3 and meta(result)["throttled_s"] >= 1.4
    assert len([m for m in logged(instance, result) if "waiting 0s, a whole rate-limit window" in m]) == 3


def test_a_429_holds_back_every_client_of_the_tenant_through_the_warehouse(emulator, sqlite_warehouse_url):
    emulator.inject("halopsa", "429", path="/api/Agent")
    resource = halo_resources(emulator, sqlite_warehouse_url, rate_window_s=0.5)["halopsa"]
    engine = engine_for(sqlite_warehouse_url)
    with resource.client(engine) as client:
        assert client.agents()
        assert client.stats()["throttled_s"] >= 0.4
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(provider_pauses)).scalar_one() == 1
        sent = conn.execute(sa.select(sa.func.count()).select_from(provider_requests)).scalar_one()
    assert sent == len(halo_served(emulator)) == 3  # the token, the refused request and its retry: all in the shared log
    # A pause set by another process (its own limiter on the same warehouse) holds this one back;
    # a client that must not wait long (the sensor's tick) gives up at once, sending nothing.
    SharedRateLimiter(engine, f"halopsa {resource.base_url}", 300, 300.0).pause(30)
    with resource.client(engine, max_wait_s=1.0) as client, pytest.raises(ProviderError, match="budget shared by every process is spent"):
        client.agents()
    assert len(halo_served(emulator)) == 3


CHILD = textwrap.dedent("""
    import sys
    import providers  # the registry: its tables join the warehouse's before the warehouse opens
    from resources.halo import HaloPSAResource
    from resources.warehouse import engine_for
    url, halo_url, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    resource = HaloPSAResource(base_url=halo_url, auth_url=halo_url + "/auth", client_id="local-halo-client",
                               client_secret="local-halo-secret", rate_limit=10, rate_window_s=2.0)
    engine = engine_for(url)
    print("ready", flush=True)
    sys.stdin.readline()
    with resource.client(engine) as client:
        for _ in range(count):
            client.agents()
    print("done", flush=True)
""")


def test_two_processes_on_one_warehouse_together_stay_within_the_window(emulator, warehouse_url):
    emulator.halo.set_rate_limit(10, 2.0)
    resource = halo_resources(emulator, warehouse_url, rate_limit=10, rate_window_s=2.0)["halopsa"]
    engine = engine_for(warehouse_url)
    child = subprocess.Popen([sys.executable, "-c", CHILD, warehouse_url, emulator.url, "14"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        child.stdin.write("go\n")
        child.stdin.flush()
        with resource.client(engine) as client:
            for _ in range(14):
                client.agents()
        assert child.stdout.readline().strip() == "done"
    finally:
        child.wait(timeout=120)
    assert child.returncode == 0
    served = halo_served(emulator)
    assert len(served) == 2 * 15  # each: a token and 14 lists
    assert not halo_served(emulator, 429)
    assert most_in_any_window([s.at for s in served], 2.0) <= 10
    with engine.connect() as conn:  # pruned as it goes: no more than a window's worth is kept
        assert conn.execute(sa.select(sa.func.count()).select_from(provider_requests)).scalar_one() <= 10


def test_the_budget_left_in_the_window_is_in_the_metadata_and_counts_every_run(emulator, sqlite_warehouse_url, instance):
    resources = halo_resources(emulator, sqlite_warehouse_url)
    first = sync_year(resources, instance, "FY2026", days={"start": "2026-09-01", "end": "2026-11-30"})
    assert meta(first)["rate_limit_remaining"] == 300 - len(halo_served(emulator)) == 300 - meta(first)["requests"]
    agents = dg.materialize([halo_agents], resources=resources, instance=instance)
    assert meta(agents, "halo_agents")["rate_limit_remaining"] == 300 - len(halo_served(emulator))
