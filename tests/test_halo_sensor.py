"""The new-fiscal-year sensor on stepped time, with keys added by the calendar and by hand."""

from datetime import UTC, datetime

import dagster as dg
import pytest
from dagster._core.test_utils import freeze_time

from definitions import defs as load_definitions
from sensors.halo import halo_new_fiscal_year
from sync_assets.fiscal_years import FISCAL_YEARS

defs = load_definitions()

@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        # Past the first start: the sensor waits for agent_mappings' first sync (test_first_sync).
        instance.report_runless_asset_event(dg.AssetMaterialization("agent_mappings"))
        yield instance


class Daemon:
    """Ticks the sensor the way the daemon does: applies its partition requests, keeps its cursor."""

    def __init__(self, instance):
        self.instance = instance
        self.cursor = None

    def tick(self, moment: datetime):
        with freeze_time(moment):
            context = dg.build_sensor_context(instance=self.instance, instance_ref=self.instance.get_ref(), cursor=self.cursor,
                                             definitions=defs)
            result = halo_new_fiscal_year.evaluate_tick(context)
        for request in result.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        self.cursor = result.cursor or self.cursor
        return result, [r.partition_key for r in result.run_requests or []]

    def partitions(self) -> list[str]:
        return self.instance.get_dynamic_partitions(FISCAL_YEARS.name)


def test_year_boundary_adds_and_syncs_the_new_year_once(instance):
    daemon = Daemon(instance)

    _, before = daemon.tick(datetime(2026, 12, 31, 23, 0, tzinfo=UTC))
    _, again = daemon.tick(datetime(2026, 12, 31, 23, 30, tzinfo=UTC))
    _, at = daemon.tick(datetime(2027, 1, 1, 0, 0, tzinfo=UTC))
    after, later = daemon.tick(datetime(2027, 1, 1, 1, 0, tzinfo=UTC))

    assert (before, again, at, later) == (["FY2026"], [], ["FY2027"], [])
    assert daemon.partitions() == ["FY2026", "FY2027"]
    assert after.skip_message == "no new fiscal year"


def test_fiscal_year_start_moves_the_boundary(instance, monkeypatch):
    monkeypatch.setenv("FISCAL_YEAR_START", "07-01")
    daemon = Daemon(instance)

    _, june = daemon.tick(datetime(2026, 6, 30, 12, 0, tzinfo=UTC))
    _, july = daemon.tick(datetime(2026, 7, 1, 0, 5, tzinfo=UTC))

    assert (june, july) == (["FY2025"], ["FY2026"])


def test_year_added_by_hand_in_the_ui_is_synced_once(instance):
    daemon = Daemon(instance)
    daemon.tick(datetime(2026, 11, 23, 12, 0, tzinfo=UTC))
    instance.add_dynamic_partitions(FISCAL_YEARS.name, ["FY2019"])

    _, first = daemon.tick(datetime(2026, 11, 23, 12, 1, tzinfo=UTC))
    _, second = daemon.tick(datetime(2026, 11, 23, 12, 2, tzinfo=UTC))

    assert (first, second) == (["FY2019"], [])


def test_malformed_key_added_by_hand_is_reported_and_not_synced(instance):
    daemon = Daemon(instance)
    daemon.tick(datetime(2026, 11, 23, 12, 0, tzinfo=UTC))
    instance.add_dynamic_partitions(FISCAL_YEARS.name, ["FY26"])

    result, requested = daemon.tick(datetime(2026, 11, 23, 12, 1, tzinfo=UTC))

    assert requested == []
    assert "malformed fiscal-year key 'FY26'" in result.skip_message


def test_fiscal_year_first_adds_history_for_backfill(instance, monkeypatch):
    monkeypatch.setenv("FISCAL_YEAR_FIRST", "FY2024")
    daemon = Daemon(instance)

    _, requested = daemon.tick(datetime(2026, 11, 23, 12, 0, tzinfo=UTC))

    assert daemon.partitions() == requested == ["FY2024", "FY2025", "FY2026"]


def test_a_lost_cursor_repeats_the_same_run_keys_so_the_daemon_drops_the_repeats(instance):
    moment = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    first, _ = Daemon(instance).tick(moment)
    lost_cursor, _ = Daemon(instance).tick(moment)

    assert [r.run_key for r in first.run_requests] == [r.run_key for r in lost_cursor.run_requests] == ["new-fiscal-year-FY2026"]
