"""Fiscal years: the partitions of the HaloPSA timesheets.

Key scheme: `FY` and the four-digit calendar year in which the fiscal year *starts*. With the
default start `01-01`, `FY2026` is the calendar year 2026; with `FISCAL_YEAR_START=07-01`,
`FY2026` runs from 2026-07-01 to 2027-06-30; with `04-06`, from 2026-04-06 to 2027-04-05.
"""

import re
from dataclasses import dataclass
from datetime import date, timedelta

import dagster as dg

from resources.organisations import scoped
from resources.settings import ConfigError, setting

FISCAL_YEARS = dg.DynamicPartitionsDefinition(name=scoped("fiscal_years"))  # per organisation: the instance is shared
KEY_PATTERN = re.compile(r"FY(\d{4})")
KEY_HELP = "expected FY and the four-digit year the fiscal year starts in, e.g. FY2026"


class MalformedKey(ValueError):
    pass


def year_of(key: str) -> int:
    match = KEY_PATTERN.fullmatch(key)
    if not match:
        raise MalformedKey(f"malformed fiscal-year key {key!r}: {KEY_HELP}")
    return int(match.group(1))


@dataclass(frozen=True)
class FiscalCalendar:
    month: int
    day: int

    @classmethod
    def parse(cls, text: str, setting_name: str = "FISCAL_YEAR_START") -> "FiscalCalendar":
        match = re.fullmatch(r"(\d{2})-(\d{2})", text.strip())
        try:
            if not match:
                raise ValueError
            calendar = cls(int(match.group(1)), int(match.group(2)))
            calendar.start_of(2001)  # a non-leap year: rejects 02-29 and impossible dates
        except ValueError:
            raise ConfigError(f"{setting_name} must be a month and day that exist every year, as MM-DD (e.g. 07-01), not {text!r}") from None
        return calendar

    @classmethod
    def from_settings(cls) -> "FiscalCalendar":
        return cls.parse(setting("FISCAL_YEAR_START"))

    def start_of(self, year: int) -> date:
        return date(year, self.month, self.day)

    def key_for(self, day: date) -> str:
        year = day.year if day >= self.start_of(day.year) else day.year - 1
        return f"FY{year}"

    def range_for(self, key: str) -> tuple[date, date]:
        """First and last day (inclusive) of the fiscal year."""
        year = year_of(key)
        return self.start_of(year), self.start_of(year + 1) - timedelta(days=1)

    def keys_through(self, first: str, day: date) -> list[str]:
        """Every key from `first` to the fiscal year containing `day`."""
        last = year_of(self.key_for(day))
        return [f"FY{year}" for year in range(year_of(first), last + 1)]

    def wanted_keys(self, day: date) -> list[str]:
        """The keys that should exist on `day`: from FISCAL_YEAR_FIRST (default the current year)."""
        first = setting("FISCAL_YEAR_FIRST") or self.key_for(day)
        try:
            year_of(first)
        except MalformedKey as error:
            raise ConfigError(f"FISCAL_YEAR_FIRST: {error}") from None
        return self.keys_through(first, day)
