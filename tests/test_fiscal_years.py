"""Fiscal-year arithmetic at the edges: start days, leap years, malformed keys and settings."""

from datetime import date

import pytest

from resources.settings import ConfigError
from sync_assets.fiscal_years import FiscalCalendar, MalformedKey, year_of

CASES = [
    # start, day, key of that day, that key's first and last day
    ("01-01", date(2026, 1, 1), "FY2026", date(2026, 1, 1), date(2026, 12, 31)),
    ("01-01", date(2025, 12, 31), "FY2025", date(2025, 1, 1), date(2025, 12, 31)),
    ("07-01", date(2026, 6, 30), "FY2025", date(2025, 7, 1), date(2026, 6, 30)),
    ("07-01", date(2026, 7, 1), "FY2026", date(2026, 7, 1), date(2027, 6, 30)),
    ("04-06", date(2026, 4, 5), "FY2025", date(2025, 4, 6), date(2026, 4, 5)),
    ("04-06", date(2026, 4, 6), "FY2026", date(2026, 4, 6), date(2027, 4, 5)),
    # A year running through February 29 of a leap year ends on it.
    ("03-01", date(2028, 2, 29), "FY2027", date(2027, 3, 1), date(2028, 2, 29)),
    ("03-01", date(2028, 3, 1), "FY2028", date(2028, 3, 1), date(2029, 2, 28)),
]


@pytest.mark.parametrize(("start", "day", "key", "first", "last"), CASES)
def test_day_falls_in_the_fiscal_year_whose_range_contains_it(start, day, key, first, last):
    calendar = FiscalCalendar.parse(start)

    assert calendar.key_for(day) == key
    assert calendar.range_for(key) == (first, last)
    assert calendar.key_for(first) == calendar.key_for(last) == key


def test_leap_years_have_366_days():
    calendar = FiscalCalendar.parse("01-01")
    first, last = calendar.range_for("FY2028")

    assert (last - first).days + 1 == 366
    assert [(b - a).days + 1 for a, b in map(calendar.range_for, ["FY2027", "FY2029"])] == [365, 365]


@pytest.mark.parametrize("text", ["02-29", "13-01", "7-1", "07/01", "", "00-10", "04-31"])
def test_impossible_start_is_a_clear_error_naming_the_setting(text):
    with pytest.raises(ConfigError, match=r"FISCAL_YEAR_START must be a month and day that exist every year"):
        FiscalCalendar.parse(text)


@pytest.mark.parametrize("key", ["FY26", "2026", "fy2026", "FY2026-27", "FY 2026", "FY20266"])
def test_malformed_key_is_named_with_the_expected_shape(key):
    with pytest.raises(MalformedKey, match=rf"malformed fiscal-year key '{key}': expected FY and the four-digit year"):
        year_of(key)


def test_wanted_keys_run_from_fiscal_year_first_to_today(monkeypatch):
    monkeypatch.setenv("FISCAL_YEAR_FIRST", "FY2023")

    assert FiscalCalendar.parse("07-01").wanted_keys(date(2026, 7, 1)) == ["FY2023", "FY2024", "FY2025", "FY2026"]


def test_malformed_fiscal_year_first_names_the_setting(monkeypatch):
    monkeypatch.setenv("FISCAL_YEAR_FIRST", "2023")

    with pytest.raises(ConfigError, match="FISCAL_YEAR_FIRST: malformed fiscal-year key '2023'"):
        FiscalCalendar.parse("01-01").wanted_keys(date(2026, 7, 1))
