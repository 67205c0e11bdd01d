"""Two runs of the same partition at once (the UI allows it, and a pool set above 1 lets them
run together): the emulator holds each page one run asks for until the other asks for it too, so
both read and write the same pages at the same time. Both runs succeed and the warehouse equals
the provider's truth, nothing lost or duplicated. (Under the deployed instance the provider pools
make the second run wait: tests/test_deployment.py shows it; Xero pushes:
tests/test_xero_push.py.)"""

import multiprocessing
import multiprocessing.synchronize
import threading

import dagster as dg
import pytest
from dagster._core.test_utils import freeze_time
from helpers import Lockstep
from syncs import NOW, SYNCS, YEAR

from resources.warehouse import engine_for
from sync_assets.fiscal_years import FISCAL_YEARS

# The requests both runs make before writing what they read.
PAGES = {
    "gohighlevel": lambda s: s.path.endswith("/contacts/search"),
    "halopsa": lambda s: s.path in ("/api/Timesheet", "/api/TimesheetEvent"),
    "employes": lambda s: s.path.endswith(("/employees", "/employments")),
}


@pytest.mark.parametrize("provider", PAGES)
def test_two_runs_of_one_partition_at_once_leave_the_warehouse_exact(provider, small_emulator, warehouse_url):
    syncs = []
    for _ in range(2):
        instance = dg.DagsterInstance.ephemeral()
        instance.add_dynamic_partitions(FISCAL_YEARS.name, [YEAR])
        syncs.append(SYNCS[provider](small_emulator, warehouse_url, instance))
    lockstep = Lockstep(PAGES[provider])
    small_emulator.on_request(lockstep)
    results = [None, None]

    def run(n: int) -> None:
        try:
            results[n] = syncs[n].run_now()
        finally:
            lockstep.release()

    with freeze_time(NOW):
        threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(900)  # the runs end on their own (the barrier never waits for a finished run)

    assert not any(thread.is_alive() for thread in threads), f"a run has not finished; pages met: {lockstep.met}"
    assert all(result is not None and result.success for result in results), [r and r.success for r in results]
    assert lockstep.met >= 3, f"the runs overlapped on {lockstep.met} pages only"
    final = syncs[0].compare()
    assert final.compared and final.exact, final


def _open_warehouse(url: str, number: int, start: multiprocessing.synchronize.Barrier) -> None:
    engine_for(f"{url}.warm{number}")  # the code paths warm, so the openers reach the new file together
    start.wait(timeout=60)
    engine_for(url)


def test_processes_opening_a_new_sqlite_warehouse_together_all_succeed(tmp_path):
    # Runs launched together on a fresh install each open the new file and switch it to WAL at
    # the same moment, where SQLite answers "database is locked" without waiting: some opens
    # in a hundred failed before the switch was tried again.
    context = multiprocessing.get_context("fork")
    failed = []
    for attempt in range(60):
        url = f"sqlite:///{tmp_path / f'warehouse{attempt}.db'}"
        start = context.Barrier(4)
        openers = [context.Process(target=_open_warehouse, args=(url, n, start), daemon=True) for n in range(4)]
        for opener in openers:
            opener.start()
        for opener in openers:
            opener.join(timeout=120)
        failed += [attempt for opener in openers if opener.exitcode != 0]
    assert failed == []
