"""One sync per provider, as the fault matrix and the concurrent-runs test drive them: run it
(in-process, `dg.materialize`), compare the warehouse (or Xero) with the emulator's truth, change
the provider's data while the run pages, refuse its credentials and restore them.

Lost: a record of the truth that the warehouse (or Xero) lacks or holds with other content.
Duplicated: a record held more than once, or held live while the truth no longer has it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta

import dagster as dg
import sqlalchemy as sa
from conftest import ANCHOR, employes_resources, ghl_resources, halo_resources, xero_resources
from cryptography.fernet import Fernet
from dagster._core.test_utils import freeze_time
from helpers import expected_task, halo_keys

from cli import xero_connect
from emulator import Emulator, employes as employes_emulator, halo as halo_emulator, xero as xero_emulator
from emulator.ghl import TOKEN as GHL_TOKEN
from resources.employes import employment_rows, snapshot_row
from resources.ghl import parse_contacts
from resources.halo import key_entries, timesheet_row
from resources.warehouse import engine_for
from sync_assets.employes import PERIOD_TABLES, assets as build_employes_assets
from sync_assets.ghl import ghl_contacts_reconciliation
from sync_assets.halo import agent_mappings, halo_agents, halo_timesheets
from sync_assets.xero import time_entries
from sync_assets.xero_plan import MARKER

xero_time_entries = time_entries()  # built as the code location builds it (its partitions are settings)

# Built as the code location builds them: their partitions read SYNC_TIMEZONE when built, not at import.
employes_assets = build_employes_assets()

TIMEOUT_S = 0.5  # the clients' read timeout: a "slow" fault of twice this is a read timeout
YEAR, YEAR_FIRST, YEAR_LAST = "FY2026", date(2026, 1, 1), date(2026, 12, 31)
TODAY = ANCHOR.date()  # the Employes emulator's today
NOW = ANCHOR + timedelta(hours=1)  # when the Employes runs happen
WORK_DATE, PUSHED_AGENT = date(2026, 11, 18), 1  # one Xero push: an agent's approved day


@dataclass
class Tally:
    compared: int = 0
    lost: int = 0
    duplicated: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.compared + other.compared, self.lost + other.lost, self.duplicated + other.duplicated)

    @property
    def exact(self) -> bool:
        return not (self.lost or self.duplicated)


def tally(truth: dict, held: list[tuple]) -> Tally:
    """Compare the truth (key -> content) with what is held ((key, content) pairs)."""
    counts = Counter(key for key, _ in held)
    contents = dict(held)
    return Tally(
        compared=len(truth.keys() | counts.keys()),
        lost=sum(1 for key, content in truth.items() if contents.get(key) != content),
        duplicated=sum(n - 1 for n in counts.values()) + sum(1 for key in counts if key not in truth),
    )


def rows(url: str, query, **params) -> list:
    with engine_for(url).connect() as conn:
        return conn.execute(query if isinstance(query, sa.Select) else sa.text(query), params).all()


def metadata(result, node: str) -> dict:
    found = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in found[0].metadata.items()} if found else {}


def once(predicate, action):
    """An emulator observer that runs `action` the first time a served request matches."""
    done = []

    def observe(served):
        if not done and predicate(served):
            done.append(served)
            action()

    return observe


class Sync:
    provider: str
    mid_run: dict = {"after": 2}
    # What a failure for refused credentials must say.
    refused_says: tuple[str, ...] = ()
    paging_note = ""

    def __init__(self, emulator: Emulator, url: str, instance: dg.DagsterInstance):
        self.emulator, self.url, self.instance = emulator, url, instance

    def prepare(self) -> None:
        pass

    def run(self) -> dg.ExecuteInProcessResult:
        raise NotImplementedError

    def run_now(self) -> dg.ExecuteInProcessResult:
        """`run` for a caller that has frozen the clock at NOW (mock patches do not nest across threads)."""
        return self.run()

    def retries(self, result) -> int | None:
        """Retries the run's metadata reports, where it reports them."""
        return None

    def compare(self) -> Tally:
        raise NotImplementedError

    def change_while_paging(self) -> None:
        raise NotImplementedError

    def revoke(self) -> None:
        self.emulator.inject(self.provider, "revoked_token", **self.mid_run)

    def restore(self) -> None:
        self.emulator.clear_faults()

    def secrets(self) -> list[str]:
        return []


class GoHighLevel(Sync):
    provider = "gohighlevel"
    refused_says = ("HTTP 401", "GHL_TOKEN")
    paging_note = "contacts edited behind and ahead of the searchAfter cursor, one deleted, one added"

    def __init__(self, *args):
        super().__init__(*args)
        self.resources = ghl_resources(self.emulator, self.url, requests_per_10s=1000, timeout_s=TIMEOUT_S)

    def run(self):
        return dg.materialize([ghl_contacts_reconciliation], resources=self.resources, instance=self.instance,
                              raise_on_error=False)

    def retries(self, result):
        return metadata(result, "ghl_contacts_reconciliation").get("retries")

    def compare(self):
        truth = {i: parse_contacts([c])[0]["content_hash"][0] for i, c in self.emulator.ghl.truth().items()}
        return tally(truth, [tuple(r) for r in rows(self.url, "SELECT id, content_hash FROM ghl_contacts WHERE deleted_at IS NULL")])

    def change_while_paging(self):
        ghl = self.emulator.ghl

        def change():  # pages 1 and 2 (50 each) are read
            ids = [key for _, key in ghl.index]
            ghl.update(ids[10], city="Edited after it was read")  # moves to the end: read again
            ghl.update(ids[200], city="Edited before it was read")  # moves to the end: read once, later
            ghl.delete(ids[250])
            ghl.add()

        self.emulator.on_request(once(lambda s: len(self.emulator.requests(self.provider, "/contacts/search")) == 2, change))

    def secrets(self):
        return [GHL_TOKEN]


class HaloPSA(Sync):
    provider = "halopsa"
    mid_run = {"after": 3}  # the token, the agents, the first chunk's entries
    refused_says = ("HTTP 401", "HALO_CLIENT_ID and HALO_CLIENT_SECRET")
    paging_note = "no paging; chunks of 31 days: entries moved into and out of a chunk already read, one added, one deleted"

    def __init__(self, *args):
        super().__init__(*args)
        # A 429 without Retry-After is waited out for a whole window: a second here, not Halo's 5 minutes.
        self.resources = halo_resources(self.emulator, self.url, timeout_s=TIMEOUT_S, rate_window_s=1.0)

    def run(self):
        return dg.materialize([halo_timesheets], resources=self.resources, instance=self.instance, partition_key=YEAR,
                              raise_on_error=False)

    def retries(self, result):
        return metadata(result, "halo_timesheets").get("retries")

    def compare(self):
        halo = self.emulator.halo
        in_year = lambda day: YEAR_FIRST <= day <= YEAR_LAST  # noqa: E731
        served = [e for e in halo.served_entries().values() if in_year(date.fromisoformat(e["start_date"][:10]))]
        entries = {r["entry_key"]: r["content_hash"] for r in key_entries(served, YEAR).rows}
        sheets = {s["id"]: timesheet_row(s, YEAR)["content_hash"] for (_, day), s in halo.timesheets().items() if in_year(day)}
        live = "SELECT {} , content_hash FROM {} WHERE deleted_at IS NULL AND fiscal_year = :year"
        return (tally(entries, [tuple(r) for r in rows(self.url, live.format("entry_key", "halo_time_entries"), year=YEAR)])
                + tally(sheets, [tuple(r) for r in rows(self.url, live.format("id", "halo_timesheets"), year=YEAR)]))

    def change_while_paging(self):
        halo = self.emulator.halo

        def change():  # the first chunk (January) is read; May is not
            by_month = {m: sorted(i for i, e in halo.entries().items() if e["start_date"].startswith(f"2026-{m}")) for m in ("01", "05")}
            halo.edit_entry(by_month["01"][0], day=date(2026, 5, 12))  # read in January, and again in May
            halo.edit_entry(by_month["05"][0], day=date(2026, 1, 13))  # read in neither chunk
            halo.delete_entry(by_month["05"][1])
            halo.add_entry(1, date(2026, 1, 14), 25)

        self.emulator.on_request(once(lambda s: s.path == "/api/Timesheet", change))

    def revoke(self):
        halo = self.emulator.halo

        def refuse_the_client():  # the application's secret was rotated in Halo
            halo.client_secret = "rotated-in-halo"
            halo.expire_tokens()

        self.emulator.on_request(once(lambda s: s.path == "/api/Timesheet", refuse_the_client))

    def restore(self):
        self.emulator.halo.client_secret = halo_emulator.CLIENT_SECRET

    def secrets(self):
        return [halo_emulator.CLIENT_SECRET]


class Employes(Sync):
    provider = "employes"
    refused_says = ("HTTP 401", "EMPLOYES_TOKEN")
    paging_note = "page numbers: a hire sorted first (a page repeats one), a removal on a page read (a page skips one)"

    def __init__(self, *args):
        super().__init__(*args)
        self.resources = employes_resources(self.emulator, self.url, requests_per_second=1000, per_page=4, timeout_s=TIMEOUT_S)

    def run(self):
        with freeze_time(NOW):
            return self.run_now()

    def run_now(self):
        return dg.materialize(employes_assets, resources=self.resources, instance=self.instance,
                              partition_key=TODAY.isoformat(), raise_on_error=False)

    def retries(self, result):
        return sum(metadata(result, node).get("retries", 0) for node in ("employes_employee_snapshots", "employes_employment_history"))

    def compare(self):
        company = self.emulator.employes
        employees = company.employees()
        snapshot = {i: snapshot_row(e, TODAY)["content_hash"] for i, e in employees.items()}
        result = tally(snapshot, [tuple(r) for r in rows(
            self.url, "SELECT employee_id, content_hash FROM employes_employee_snapshots WHERE snapshot_date = :day", day=TODAY)])
        for kind, table in PERIOD_TABLES.items():
            truth = [row for i in employees for row in employment_rows(i, company.employments(i))[kind]]
            columns = [table.c[name] for name in truth[0]] if truth else [table.c.employment_id]
            held = [dict(r._mapping) for r in rows(self.url, sa.select(*columns))]
            key = lambda row, kind=kind: (kind, row["employment_id"], str(row.get("start_date")))  # noqa: E731
            content = lambda row: json.dumps(row, sort_keys=True, default=str)  # noqa: E731
            result += tally({key(r): content(r) for r in truth}, [(key(r), content(r)) for r in held])
        return result

    def change_while_paging(self):
        company = self.emulator.employes
        listed = lambda page: lambda s: s.path.endswith("/employees") and s.query.get("page") == page  # noqa: E731
        by_number = lambda: sorted(company.people, key=lambda i: int(company.people[i]["employee_number"]))  # noqa: E731
        self.emulator.on_request(once(listed("1"), lambda: company.hire(start=TODAY - timedelta(days=30), employee_number="1000")))
        self.emulator.on_request(once(listed("2"), lambda: company.remove(by_number()[1])))

    def secrets(self):
        return [employes_emulator.TOKEN]


class Xero(Sync):
    provider = "xero"
    mid_run = {"after": 1, "path": "/Time"}  # after the first time entry is made
    refused_says = ("refused", "workforce-sync xero-connect")
    paging_note = "no paging (one Halo day, then one call per entry): an entry edited and one deleted in Halo mid-push"

    def __init__(self, *args):
        super().__init__(*args)
        self.resources = xero_resources(self.emulator, self.url, Fernet.generate_key().decode(), timeout_s=TIMEOUT_S)

    def prepare(self):
        assert dg.materialize([halo_agents, agent_mappings], resources=self.resources, instance=self.instance).success
        self.emulator.halo.approve(PUSHED_AGENT, WORK_DATE)

    def run(self):
        config = {"ops": {"xero_time_entries": {"config": {"dry_run": False}}}}
        return dg.materialize([xero_time_entries], resources=self.resources, instance=self.instance,
                              partition_key=WORK_DATE.isoformat(), run_config=config, raise_on_error=False)

    def compare(self):
        halo = self.emulator.halo
        approved = {agent for (agent, day), s in halo.timesheets().items()
                    if day == WORK_DATE and s["approval"]["approvalstatus"] == halo_emulator.APPROVED}
        keys = halo_keys(self.emulator)
        truth = {keys[i]: self._expected(i, e, keys[i]) for i, e in halo.entries().items()
                 if e["start_date"].startswith(WORK_DATE.isoformat()) and e["agent_id"] in approved}
        in_xero = [(MARKER.search(e["description"]).group(1), e) for e in self.emulator.xero.entries().values()
                   if MARKER.search(e.get("description") or "")]
        pushed = {r.entry_key: r.xero_time_entry_id for r in rows(self.url, "SELECT * FROM xero_ledger WHERE status = 'pushed'")}
        # An entry counts as held when Xero has it as Halo says and the ledger knows it by its Xero id.
        held = [(i, self._held(e) if pushed.get(i) == e["timeEntryId"] else None) for i, e in in_xero]
        return tally(truth, held)

    def _expected(self, entry_id: int, entry: dict, key: str) -> tuple:
        ticket = f"Ticket {entry['ticket_id']}: " if entry["ticket_id"] else ""
        return (xero_emulator.user_id(entry["agent_id"]), xero_emulator.project_id(entry["client_id"]), expected_task(entry),
                entry["start_date"][:19], self.emulator.halo.minutes(entry_id), f"{ticket}{entry['subject']} [halo {key}]")

    @staticmethod
    def _held(entry: dict) -> tuple:
        return (entry["userId"], entry["projectId"], entry["taskId"], entry["dateUtc"][:19], entry["duration"], entry["description"])

    def change_while_paging(self):
        halo = self.emulator.halo

        def change():
            first, *_, last = sorted(i for i, e in halo.entries().items()
                                     if e["agent_id"] == PUSHED_AGENT and e["start_date"].startswith(WORK_DATE.isoformat()))
            halo.edit_entry(first, minutes=halo.minutes(first) + 15)  # its POST was just answered
            halo.delete_entry(last)  # read, not pushed yet

        self.emulator.on_request(once(lambda s: s.method == "POST" and "/Time" in s.path, change))

    def revoke(self):
        xero = self.emulator.xero

        def revoke():  # the organisation disconnected the app
            xero.revoke_refresh_tokens()
            xero.expire_access_tokens()

        self.emulator.on_request(once(lambda s: s.method == "POST" and "/Time" in s.path, revoke))

    def restore(self):  # the operator reconnects: a new token from Xero's consent flow, stored with xero-connect
        self.emulator.xero.accept_unknown_refresh_tokens = True
        xero_connect(dg.Definitions(resources=self.resources), f"{xero_emulator.REFRESH_PREFIX}after-reconnect")

    def secrets(self):
        return [xero_emulator.CLIENT_SECRET]


SYNCS = {sync.provider: sync for sync in (GoHighLevel, HaloPSA, Employes, Xero)}
