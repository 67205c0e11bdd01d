"""One clock: Halo's zone-less times read in HALO_TIME_ZONE, work dates in SYNC_TIMEZONE, Xero's
`dateUtc` the UTC instant. Tenants an hour or two ahead of UTC (Europe/Amsterdam in winter and
summer) and five hours behind (America/Bogota), serving UTC instants or their own wall clock,
with entries half an hour either side of local midnight: through a real sync and real pushes
over HTTP to the emulator, and the doctor telling which reading fits.

SYNC_TIMEZONE is read when these functions run (the partitions built from it at import are
days, the same keys in any zone), so it is set per test."""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
import sqlalchemy as sa
from conftest import ANCHOR, serving, xero_resources
from cryptography.fernet import Fernet
from dagster._core.test_utils import freeze_time
from helpers import AGENT, YEAR, halo_day, load_mappings, meta, push, sync_year, xero_by_halo_id

from emulator import Emulator

from providers import doctor_checks
from resources.doctor import FAIL, PASS, WARN, run_doctor
from resources.halo import range_params
from resources.warehouse import engine_for
from sync_assets.fiscal_years import FISCAL_YEARS
from test_doctor import doctor_resources

pytestmark = pytest.mark.usefixtures("frozen_clock")

WINTER, SUMMER = date(2026, 11, 18), date(2026, 7, 15)  # weekdays the emulator has entries on
XERO_WRITES = ("POST", "PUT", "DELETE")

# (tenant zone, work date, whether the tenant serves UTC instants): HALO_TIME_ZONE is set to match.
TENANTS = {
    "utc+1-serving-utc": ("Europe/Amsterdam", WINTER, True),
    "utc+2-serving-local": ("Europe/Amsterdam", SUMMER, False),
    "utc-5-serving-utc": ("America/Bogota", WINTER, True),
    "utc-5-serving-local": ("America/New_York", WINTER, False),
}


@pytest.fixture
def emulator(request):
    """Five agents (AGENT among the three enabled) and no provider-side limits: few entries, quick runs
    (in place of conftest's emulator of 24 agents)."""
    yield from serving(request, Emulator(seed=7, anchor=ANCHOR, contacts=50, agents=5, employees=5, rate_limits=False))


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(FISCAL_YEARS.name, [YEAR])
        yield instance


def configure(emulator, monkeypatch, zone: str, serves_utc: bool, halo_time_zone: str | None = None) -> None:
    """A tenant in `zone`; the sync's days in that zone, and Halo's clock read as the tenant serves it
    (or as `halo_time_zone`)."""
    emulator.halo.set_clock(tenant_zone=zone, serves_utc=serves_utc)
    monkeypatch.setenv("SYNC_TIMEZONE", zone)
    monkeypatch.setenv("HALO_TIME_ZONE", halo_time_zone or ("UTC" if serves_utc else zone))


def add_near_midnight(emulator, day: date, **fields) -> list[int]:
    """Half an hour of work starting 00:30 and 23:30 local time on `day`, on a mapped client."""
    added = []
    for hour in (0, 23):
        start = datetime.combine(day, datetime.min.time()).replace(hour=hour, minute=30)
        added.append(emulator.halo.add_entry(AGENT, day, 30, client_id=12, customer="Acme Facilities", start_date=start.isoformat(),
                                             end_date=(start + timedelta(minutes=30)).isoformat(), **fields))
    return added


def instant(wall_clock: str, zone: str) -> datetime:
    """A tenant's wall-clock time as the naive UTC instant."""
    return datetime.fromisoformat(wall_clock).replace(tzinfo=ZoneInfo(zone)).astimezone(UTC).replace(tzinfo=None)


def stored(url: str) -> list[sa.Row]:
    query = sa.text("SELECT work_date, start_at, end_at, minutes FROM halo_time_entries WHERE agent_id = :agent AND deleted_at IS NULL")
    with engine_for(url).connect() as conn:
        return conn.execute(query, {"agent": AGENT}).all()


def xero_writes(emulator) -> list:
    return [r for r in emulator.requests() if r.method in XERO_WRITES and "/projects.xro/" in r.path]


def as_date(value) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def as_moment(value) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


@pytest.mark.openapi  # Xero's exchanges, the listings' UTC bounds included, checked against its description
@pytest.mark.parametrize("zone, day, serves_utc", list(TENANTS.values()), ids=list(TENANTS))
def test_entries_keep_their_local_day_and_reach_xero_at_their_utc_instant(emulator, sqlite_warehouse_url, instance, monkeypatch,
                                                                        zone, day, serves_utc):
    configure(emulator, monkeypatch, zone, serves_utc)
    near_midnight = add_near_midnight(emulator, day)
    for agent, sheet_day in emulator.halo.timesheets():  # the one agent's day approved: a quick push
        if sheet_day == day and agent != AGENT:
            emulator.halo.unapprove(agent, day)
    emulator.halo.approve(AGENT, day)
    resources = xero_resources(emulator, sqlite_warehouse_url, Fernet.generate_key().decode())
    load_mappings(resources, instance)
    truth = halo_day(emulator, AGENT, day)  # the tenant's wall-clock times, by its day: its work, what is billed
    everything = halo_day(emulator, AGENT, day, kinds=("work", "break", "leave"))  # what is stored
    assert set(near_midnight) <= set(truth)

    synced = sync_year(resources, instance, days={"start": day.isoformat(), "end": day.isoformat()})  # the day's edges are the range's
    assert synced.success and meta(synced)["outside_range"] == 0
    rows = stored(sqlite_warehouse_url)
    assert {as_date(r.work_date) for r in rows} == {day}
    assert sorted(as_moment(r.start_at) for r in rows) == sorted(instant(e["start_date"], zone) for e in everything.values())
    assert sorted(as_moment(r.end_at) for r in rows) == sorted(instant(e["end_date"], zone) for e in everything.values())

    pushed = push(resources, instance, day)
    assert pushed.success and meta(pushed, "xero_time_entries")["created"] == len(truth)
    in_xero = xero_by_halo_id(emulator)
    for entry_id, entry in truth.items():
        (xero_entry,) = in_xero[entry_id]
        assert xero_entry["dateUtc"].startswith(instant(entry["start_date"], zone).isoformat()), entry_id

    with resources["xero"].client(resources["warehouse"].engine) as client:
        listed = {e["timeEntryId"] for p in {e["projectId"] for e in emulator.xero.entries().values()}
                  for e in client.time_entries(p, day, day)}
    assert {in_xero[i][0]["timeEntryId"] for i in truth} <= listed  # the entries near midnight too

    emulator.reset_requests()
    again, forced = push(resources, instance, day), push(resources, instance, day, force=True)
    assert again.success and forced.success
    assert xero_writes(emulator) == []  # a second push, and one that lists the day, change nothing
    assert meta(forced, "xero_time_entries")["planned_unchanged"] == len(truth)


def test_an_entry_keeps_its_key_whatever_the_two_clocks_are_set_to(emulator, sqlite_warehouse_url, instance, monkeypatch):
    configure(emulator, monkeypatch, "Europe/Amsterdam", serves_utc=True)
    add_near_midnight(emulator, WINTER, ticket_id=None, action_number=None)  # known by their fingerprint
    resources = xero_resources(emulator, sqlite_warehouse_url, Fernet.generate_key().decode())
    load_mappings(resources, instance)
    days = {"start": (WINTER - timedelta(days=1)).isoformat(), "end": (WINTER + timedelta(days=1)).isoformat()}

    def keys() -> set[str]:
        with engine_for(sqlite_warehouse_url).connect() as conn:
            return set(conn.execute(sa.text("SELECT entry_key FROM halo_time_entries WHERE deleted_at IS NULL")).scalars())

    assert sync_year(resources, instance, days=days).success
    before = keys()
    monkeypatch.setenv("HALO_TIME_ZONE", "Europe/Amsterdam")
    monkeypatch.setenv("SYNC_TIMEZONE", "America/Bogota")
    resync = sync_year(resources, instance, days=days)
    assert resync.success
    assert keys() == before and sum(k.startswith("f") for k in before) >= 2
    assert meta(resync)["entries_inserted"] == 0 and meta(resync)["entries_updated"] == len(before)  # moved in time, not made anew


def test_ranges_are_the_local_days_on_halos_clock(monkeypatch):
    monkeypatch.setenv("SYNC_TIMEZONE", "Europe/Amsterdam")
    monkeypatch.setenv("HALO_TIME_ZONE", "UTC")
    assert range_params(WINTER, WINTER) == {"start_date": "2026-11-17T23:00:00", "end_date": "2026-11-18T22:59:59", "utcoffset": "0"}
    monkeypatch.setenv("HALO_TIME_ZONE", "Europe/Amsterdam")
    assert range_params(SUMMER, SUMMER) == {"start_date": "2026-07-15T00:00:00", "end_date": "2026-07-15T23:59:59", "utcoffset": "-120"}


def halo_clock(emulator, url) -> tuple[str, str, str]:
    with freeze_time(ANCHOR):
        findings = run_doctor(doctor_checks(("halopsa",)), doctor_resources(emulator, url), production=False)
    (finding,) = [f for f in findings if f.check == "halo_clock"]
    return finding.severity, finding.seen, finding.action


@pytest.mark.parametrize("serves_utc", [True, False], ids=["serving-utc", "serving-local"])
def test_the_doctor_fails_on_the_reading_that_would_shift_entries_and_passes_the_right_one(emulator, sqlite_warehouse_url,
                                                                                          monkeypatch, serves_utc):
    zone = "Europe/Amsterdam"
    right, wrong = ("UTC", zone) if serves_utc else (zone, "UTC")
    configure(emulator, monkeypatch, zone, serves_utc, halo_time_zone=wrong)
    severity, seen, action = halo_clock(emulator, sqlite_warehouse_url)
    assert severity == WARN and "cannot tell" in seen  # daytime work alone fits either reading
    readings = dict(part.split(": ", 1) for part in seen.split(": ", 1)[1].split("; "))
    assert "days run 08:30-" in readings[f"read as {right}"]  # the seeded days start at 08:30, tenant time
    assert "days run 08:30-" not in readings[f"read as {wrong}"]

    add_near_midnight(emulator, WINTER)
    severity, seen, action = halo_clock(emulator, sqlite_warehouse_url)
    assert severity == FAIL and f"HALO_TIME_ZONE={right}" in action
    assert f"read as {wrong}: 1 of" in seen and f"read as {right}: 0 of" in seen

    monkeypatch.setenv("HALO_TIME_ZONE", right)
    severity, seen, _ = halo_clock(emulator, sqlite_warehouse_url)
    assert severity == PASS and f"HALO_TIME_ZONE={right} fits" in seen
