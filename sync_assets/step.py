"""One sync step, written once for every provider: open the provider's client, time the step,
turn a provider's error into a `dg.Failure` that carries what the run asked of the provider, log
and count rejected records, and report the same metadata keys from every asset.

    with sync_step(context, "halopsa") as step, step.open(halopsa, warehouse.engine) as client:
        with step.phase("Nothing was written; re-run the partition."):
            ...
    return step.result(counts, fiscal_year=key)

Each phase names what a provider's error inside it leaves done (`step.phase`); outside a phase
the failure says that nothing was written (`sync_step`). `step.open` is typed by the resource's
client (resources/http.py `OpensClient`): `step.open(halopsa, ...)` gives a HaloClient.

Every step keeps books (`step.books`, resources/records.py `Books`): each record received is
stored, rejected or excluded with a reason, and no two different records may land on one key.
`step.result` reports them (`received`, `stored`, `rejected`, `excluded`, `unaccounted`,
`collisions`) and, where the asset declares it (`check_specs=[nothing_lost(...)]`), answers the
blocking check `nothing_lost`, which fails the run when the books do not balance.

Retries happen at two levels, neither of them a step retry policy: the provider's client retries
each request (backoff and jitter, `Retry-After`), and Dagster's run retries retry a failed run
where its job asks for it (the Xero push). No sync asset has a `dg.RetryPolicy`: on top of the
client's attempts it would multiply the requests of an outage against the providers' rate and
day budgets while holding the provider's pool (README "Bad records, failures and retries").
A failure that retrying cannot fix (configuration, credentials, a mapping file, a spent day
budget) is raised with `step.refuse`: it tags the run so that Dagster's run retries skip it,
and is `allow_retries=False`, so a step retry policy given to a job (`op_retry_policy`) skips
it too.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import dagster as dg
import sqlalchemy as sa

from resources.http import CountedClient, OpensClient, ProviderError
from resources.organisations import asset_key
from resources.records import Books
from resources.warehouse import record_rejects
from sync_assets.runs import trigger_of

# Dagster's own run tag: a run failed by a step with this tag "false" is not retried by the
# daemon's run retries (dagster._core.execution.retries.auto_reexecution_should_retry_run).
NO_RUN_RETRY = {"dagster/retry_on_asset_or_op_failure": "false"}
COUNTED = ("fetched", "written", "rejected")
LOGGED_REJECTS = 50  # per run: a million bad records must not bury the log
NOTHING_LOST = "nothing_lost"
# What a provider's error outside any phase (`SyncStep.phase`) leaves done.
NOTHING_WRITTEN = "Nothing was written; re-run it."
# The client a resource opens, so that `step.open(halopsa, ...)` is typed as a HaloClient.
Client = TypeVar("Client", bound=CountedClient)


def nothing_lost(asset: str) -> dg.AssetCheckSpec:
    """The blocking check every sync asset declares: its run's books balance."""
    return dg.AssetCheckSpec(NOTHING_LOST, asset=asset_key(asset), blocking=True,
                             description="Fails the run unless every record received was stored, rejected (with the reason, "
                                         "table sync_rejects) or excluded with a reason, and no two different records landed on one key.")


class SyncStep:
    """One asset's run against its providers: their clients, the clock, the rejected records."""

    def __init__(self, context: dg.AssetExecutionContext, provider: str):
        self.context = context
        self.provider = provider
        self.began = time.monotonic()
        self.clients: dict[str, CountedClient] = {}
        self.rejected = 0
        self.books = Books()

    @contextlib.contextmanager
    def open(self, resource: OpensClient[Client], *args: Any, **options: Any) -> Iterator[Client]:
        """`resource.client(...)`, logging to the run, its requests counted in the step's metadata."""
        with resource.client(*args, log=self.context.log.info, **options) as client:
            self.clients[client.http.provider] = client
            yield client

    @contextlib.contextmanager
    def phase(self, if_failed: str | Callable[[], str]) -> Iterator[None]:
        """A part of the step whose provider errors fail the step saying what it leaves done:
        `if_failed`, or what it returns when the error comes (a loop's progress)."""
        try:
            yield
        except ProviderError as error:
            raise self.provider_failure(error, if_failed() if callable(if_failed) else if_failed) from None

    def stats(self) -> dict[str, Any]:
        """Requests, retries and seconds throttled over every provider the step used, and what each
        client adds (a day budget's remainder); per provider too when there were several."""
        per_provider = {name: client.stats() for name, client in self.clients.items()}
        totals = {"requests": 0, "retries": 0, "throttled_s": 0.0}
        extras: dict[str, Any] = {}
        for name, stats in per_provider.items():
            for key, value in stats.items():
                if key in totals:
                    totals[key] += value
                else:
                    extras[key] = value
            if len(per_provider) > 1:
                extras[f"{name}_requests"] = stats["requests"]
        return {**totals, "throttled_s": round(totals["throttled_s"], 2), **extras}

    def keep_rejects(self, conn: sa.Connection, entity: str, rejects: Sequence[dict]) -> None:
        """Store rejected records in `sync_rejects` (in the caller's transaction) and name them in
        the log, the first LOGGED_REJECTS of the run."""
        record_rejects(conn, self.provider, entity, rejects, self.context.run.run_id)
        self.books.reject(len(rejects))
        for reject in rejects:
            if self.rejected < LOGGED_REJECTS:
                self.context.log.warning(f"skipped {entity} {reject['record_id']}: {reject['reason']}")
            self.rejected += 1

    def failure(self, description: str, *, retry: bool = True) -> dg.Failure:
        """A failed step, with the run's requests so far in its metadata."""
        if not retry:
            self.context.instance.add_run_tags(self.context.run.run_id, NO_RUN_RETRY)
        return dg.Failure(description=description, metadata=self.stats(), allow_retries=retry)

    def provider_failure(self, error: ProviderError, done: str) -> dg.Failure:
        """A provider's error as the step's failure: what went wrong, then what is left done."""
        return self.failure(f"{error}. {done}", retry=error.retry_helps)

    def refuse(self, description: str) -> dg.Failure:
        """A failure no retry can fix: the operator must change something first."""
        return self.failure(description, retry=False)

    def result(self, counts: Mapping[str, int] | None = None, *, check_results: Sequence[dg.AssetCheckResult] = (),
               **metadata: Any) -> dg.MaterializeResult:
        """The step's materialization: the asset's own `metadata` first, then the keys every sync
        reports (fetched, written, rejected, requests, retries, throttled_s, duration_s, triggered_by)."""
        counts = Counter(counts or {})
        counts["rejected"] = max(counts["rejected"], self.rejected)
        if self.rejected > LOGGED_REJECTS:
            self.context.log.warning(f"... and {self.rejected - LOGGED_REJECTS} more rejected records (table sync_rejects)")
        return dg.MaterializeResult(
            metadata={
                **metadata,
                **{name: int(counts[name]) for name in COUNTED},
                **self.books.metadata(),
                **self.stats(),
                "duration_s": round(time.monotonic() - self.began, 3),
                "triggered_by": trigger_of(self.context),
            },
            check_results=[*check_results, *self._books_check()],
        )

    def _books_check(self) -> list[dg.AssetCheckResult]:
        """The `nothing_lost` check's result, when the asset declares it (and the run selected it)."""
        books, line = self.books, self.books.summary()
        if books.balanced:
            self.context.log.info(f"books: {line}")
        else:
            self.context.log.error(f"books do not balance: {line}")
        key = dg.AssetCheckKey(self.context.asset_key, NOTHING_LOST)
        if key not in self.context.selected_asset_check_keys:
            return []
        return [dg.AssetCheckResult(
            check_name=NOTHING_LOST, passed=books.balanced, severity=dg.AssetCheckSeverity.ERROR,
            metadata={**books.metadata(), "books": line,
                      "excluded_by_reason": dg.MetadataValue.json(dict(sorted(books.excluded.items())))})]


@contextlib.contextmanager
def sync_step(context: dg.AssetExecutionContext, provider: str) -> Iterator[SyncStep]:
    """A `SyncStep` whose provider errors become failures naming what was done: by the phase
    they came from (`SyncStep.phase`), else NOTHING_WRITTEN."""
    step = SyncStep(context, provider)
    try:
        yield step
    except ProviderError as error:
        raise step.provider_failure(error, NOTHING_WRITTEN) from None


def table_metadata(table: sa.Table) -> dict[str, Any]:
    """Definition metadata naming the warehouse table an asset writes, and its columns, in Dagster's
    own keys (`dagster/table_name`, `dagster/column_schema`) so the UI shows them."""
    # The UI renders a column's description as Markdown, where a bare `<id>` is an HTML tag and
    # vanishes: a comment writes such placeholders in backticks (`t<ticket_id>`).
    columns = [dg.TableColumn(c.name, str(c.type), description=c.comment) for c in table.columns]
    return {"dagster/table_name": table.name, "dagster/column_schema": dg.TableSchema(columns=columns)}


def listed(lines: Sequence[str], most: int = 200) -> dg.MetadataValue:
    """A check's examples as a markdown list (the UI renders it), at most `most` of them."""
    shown = [f"- {line}" for line in lines[:most]]
    if len(lines) > most:
        shown.append(f"- ... and {len(lines) - most} more")
    return dg.MetadataValue.md("\n".join(shown) or "none")
