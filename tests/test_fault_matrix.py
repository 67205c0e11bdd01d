"""The fault matrix (issue 7): every provider's sync against every fault the emulator can make,
injected mid-run. Each run ends correct or failed with a message naming the status or setting;
after the fault clears, a re-run leaves the warehouse (and Xero) exactly equal to the emulator's
truth. The module prints a table of what was tried (and writes test-artifacts/fault-matrix.txt).

Lost: a record of the truth that the warehouse (or Xero) lacks or holds with other content.
Duplicated: a record held more than once, or held live while the truth no longer has it.
The syncs and their comparison with the truth are in syncs.py.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import dagster as dg
import pytest
from helpers import failure_message, wait_until
from syncs import SYNCS, TIMEOUT_S, YEAR

from sync_assets.fiscal_years import FISCAL_YEARS

pytestmark = pytest.mark.slow  # minutes: left out of the quick run (scripts/test -m "not slow")

RETRY_AFTER_S = 1.0
ARTIFACT = Path(__file__).resolve().parent.parent / "test-artifacts" / "fault-matrix.txt"

# Injected after the first requests of each run (see each Sync's `mid_run`).
FAULTS = {
    "429 with Retry-After": dict(kind="429", retry_after=RETRY_AFTER_S),
    "429 without Retry-After": dict(kind="429", times=2),
    "500": dict(kind="500", times=3),
    "502": dict(kind="502"),
    "503": dict(kind="503"),
    "read timeout": dict(kind="slow", delay_s=2 * TIMEOUT_S),
    "connection dropped mid-body": dict(kind="drop", times=2),
    "malformed JSON": dict(kind="malformed"),
    "expired token": dict(kind="expired_token"),
    "data changed while paging": None,
    "revoked token": None,
}
RESULTS: list[dict] = []


# Failing is the right end of these: the credentials are refused for good, or (static tokens)
# the provider says the token expired, which no retry can mend.
REFUSED = {(p, "revoked token") for p in SYNCS} | {("gohighlevel", "expired token"), ("employes", "expired token")}
# A sync reads a moment of the provider; changes behind its read position reach the next run.
CHANGES_REACH_THE_NEXT_RUN = {("halopsa", "data changed while paging"), ("xero", "data changed while paging")}
TOKEN_ENDPOINTS = {"halopsa": "/auth/token", "xero": "/connect/token"}


@pytest.fixture(scope="module")
def instance():
    # In memory: 88 runs' event logs in SQLite files would cost the budget seconds of fsync.
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(FISCAL_YEARS.name, [YEAR])
    yield instance


@pytest.fixture(scope="module", autouse=True)
def fault_table(request):
    yield
    if not RESULTS:
        return
    text = table(RESULTS)
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(text + "\n")
    plugins = request.config.pluginmanager
    reporter, capture = plugins.getplugin("terminalreporter"), plugins.getplugin("capturemanager")
    if reporter and capture:
        with capture.global_and_fixture_disabled():  # else the table lands in the captured output
            reporter.write("\n")
            reporter.section("fault matrix", sep="-")
            reporter.write_line(text)


def table(results: list[dict]) -> str:
    columns = ["provider", "fault", "runs", "first run", "records compared", "lost", "duplicated"]
    lines = [[str(r[c]) for c in columns] for r in results]
    totals = Counter()
    for r in results:
        totals.update({c: r[c] for c in ("runs", "records compared", "lost", "duplicated")})
    lines.append(["total", f"{len({r['fault'] for r in results})} faults, {len(results)} cases", str(totals["runs"]), "",
                  str(totals["records compared"]), str(totals["lost"]), str(totals["duplicated"])])
    widths = [max(len(c), *(len(line[i]) for line in lines)) for i, c in enumerate(columns)]
    render = lambda cells: "  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)).rstrip()  # noqa: E731
    notes = [f"data changed while paging, {r['provider']}: {SYNCS[r['provider']].paging_note}"
             for r in results if r["fault"] == "data changed while paging"]
    return "\n".join([render(columns), *(render(line) for line in lines), "", *notes])


def assert_retried(served: list, kind: str, retry_after: float | None) -> None:
    """The faulted request was served, and sent again (no sooner than Retry-After said)."""
    faulted = next((s for s in served if s.fault == kind), None)
    assert faulted is not None, f"the {kind} fault was never served"
    # A slow answer is logged when it is finally handled: after the retry that gave up on it.
    again = [s for s in served if s is not faulted and (s.method, s.path, s.query, s.body) ==
             (faulted.method, faulted.path, faulted.query, faulted.body)]
    assert again, f"the request that met {kind} was not sent again"
    if retry_after:
        assert again[0].at - faulted.at >= retry_after


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("provider", SYNCS)
def test_fault_mid_run_then_a_rerun_is_exact(provider, fault, small_emulator, tmp_path, instance):
    emulator = small_emulator
    sync = SYNCS[provider](emulator, f"sqlite:///{tmp_path / 'warehouse.db'}", instance)
    sync.prepare()
    spec = FAULTS[fault]
    if fault == "revoked token":
        sync.revoke()
    elif fault == "data changed while paging":
        sync.change_while_paging()
    else:
        emulator.inject(provider, **spec, **sync.mid_run)

    first = sync.run()
    if spec and spec["kind"] == "slow":  # the emulator logs a slow request once its sleep is over
        wait_until("the slow request to be logged", lambda: any(s.fault == "slow" for s in emulator.requests(provider)), 60,
                   seen=lambda: [(s.path, s.fault) for s in emulator.requests(provider)][-5:])
    after_first, served_first = sync.compare(), emulator.requests(provider)
    if first.success:
        outcome = "ok, exact" if after_first.exact else f"ok, {after_first.lost} lost {after_first.duplicated} dup until re-run"
    elif all(part in failure_message(first) for part in sync.refused_says):
        outcome = "failed, names " + " and ".join(sync.refused_says)
    else:
        outcome = f"failed: {failure_message(first).splitlines()[0][:60]}"
    emulator.clear_faults()
    if fault == "revoked token":
        sync.restore()
    second = sync.run()
    final = sync.compare()
    RESULTS.append({"provider": provider, "fault": fault, "runs": 2, "first run": outcome,
                    "records compared": final.compared, "lost": final.lost, "duplicated": final.duplicated})

    if (provider, fault) in REFUSED:
        assert not first.success, "a refused credential must fail the run"
        message = failure_message(first)
        assert all(part in message for part in sync.refused_says), message
        assert not any(secret in message for secret in sync.secrets()), "a secret in the failure message"
    else:
        assert first.success, failure_message(first)
        if (provider, fault) not in CHANGES_REACH_THE_NEXT_RUN:
            assert after_first.exact, f"the run succeeded but {after_first}"
        if spec and spec["kind"] == "expired_token":  # a fresh token was fetched, and the request went again
            assert len([s for s in served_first if s.path.endswith(TOKEN_ENDPOINTS[provider])]) == 2
        elif spec:
            assert_retried(served_first, spec["kind"], spec.get("retry_after"))
            retries = sync.retries(first)
            assert retries is None or retries >= 1
    assert second.success, failure_message(second)
    assert (final.lost, final.duplicated) == (0, 0), final
    assert final.compared > 0
