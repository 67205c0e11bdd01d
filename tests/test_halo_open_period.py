"""The hourly Halo timesheet sync's open period is Halo's own setting, HALO_OPEN_PERIOD_DAYS; an
installation that set only XERO_OPEN_PERIOD_DAYS (which governed it before) keeps its window,
and the schedule's tick log says the setting is deprecated for Halo."""

from datetime import timedelta

import dagster as dg
import pytest
from conftest import NOW
from dagster._core.test_utils import freeze_time
from helpers import YEAR

from definitions import defs as load_definitions
from sync_assets.fiscal_years import FISCAL_YEARS

defs = load_definitions()
HOURLY = NOW.replace(minute=15)  # a tick of halo_timesheets_hourly on conftest's day
DEPRECATED = "Deprecated: the hourly Halo sync covers XERO_OPEN_PERIOD_DAYS"


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(FISCAL_YEARS.name, [YEAR])
        yield instance


def hourly_days(instance: dg.DagsterInstance) -> tuple[str, str]:
    """The first and last day of the run the hourly schedule asks for at HOURLY."""
    with freeze_time(HOURLY):
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=HOURLY,
                                            repository_def=defs.get_repository_def())
        (request,) = defs.resolve_schedule_def("halo_timesheets_hourly").evaluate_tick(context).run_requests
    days = request.run_config["ops"]["halo_timesheets"]["config"]
    return days["start"], days["end"]


def days_back(n: int) -> tuple[str, str]:
    return (NOW.date() - timedelta(days=n)).isoformat(), NOW.date().isoformat()


@pytest.mark.parametrize("halo, xero, covered", [(None, None, 31), ("5", None, 5), ("5", "20", 5)])
def test_the_hourly_sync_covers_halo_open_period_days(instance, monkeypatch, capfd, halo, xero, covered):
    for name, value in {"HALO_OPEN_PERIOD_DAYS": halo, "XERO_OPEN_PERIOD_DAYS": xero}.items():
        monkeypatch.delenv(name, raising=False) if value is None else monkeypatch.setenv(name, value)
    capfd.readouterr()

    assert hourly_days(instance) == days_back(covered)
    assert DEPRECATED not in capfd.readouterr().err


def test_xero_open_period_days_alone_still_sets_it_with_a_deprecation_line(instance, monkeypatch, capfd):
    monkeypatch.delenv("HALO_OPEN_PERIOD_DAYS", raising=False)
    monkeypatch.setenv("XERO_OPEN_PERIOD_DAYS", "7")
    capfd.readouterr()

    assert hourly_days(instance) == days_back(7)
    logged = capfd.readouterr().err  # the schedule tick's log (the UI shows it on the tick)
    assert f"WARNING - {DEPRECATED} (7) days because HALO_OPEN_PERIOD_DAYS is not set" in logged
