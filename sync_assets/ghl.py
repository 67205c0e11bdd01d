"""GoHighLevel contacts: the hourly incremental sync and the nightly full reconciliation.

Both write the warehouse table `ghl_contacts` page by page: each page is parsed into a polars
frame, compared with the stored versions, and only new or changed contacts are written, in
one transaction per page. A stored contact is only overwritten by a version with an equal or
newer `dateUpdated`, so hourly partitions can run in any order and re-runs are harmless.
"""


import time
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl
import sqlalchemy as sa
from dagster._time import get_current_datetime  # honours dagster's freeze_time in tests

from resources.ghl import DailyBudgetSpent, GoHighLevelResource, parse_contacts
from resources.http import ProviderError
from resources.settings import setting
from resources.warehouse import WarehouseResource, bulk_upsert, ghl_contacts as contacts_table, record_rejects, utcnow
from sync_assets.runs import trigger_of

GROUP = "gohighlevel"
KINDS = {"gohighlevel", "python", "sql"}
# GoHighLevel: "updates may take a few seconds to appear in search results". Each hour
# re-reads the end of the previous one; unchanged contacts cost nothing to re-read.
WINDOW_OVERLAP = timedelta(minutes=5)
HOURLY = dg.HourlyPartitionsDefinition(start_date="2026-01-01-00:00", timezone=setting("SYNC_TIMEZONE"))
LOGGED_REJECTS = 50
# A full pass of a million contacts is 2,000 pages: a log line each would bury the run's log
# (and cost an event-log write each).
LOG_EVERY_PAGES = 20
FUTURE_TOLERANCE = timedelta(minutes=5)


class ReconciliationConfig(dg.Config):
    max_delete_share: float = 0.5
    """Refuse to soft-delete more than this share of the live contacts in one pass (a provider
    outage returning an empty list must not wipe the table). Raise it in the launchpad to
    accept a genuine mass deletion."""


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def classify(fetched: pl.DataFrame, stored: pl.DataFrame) -> pl.DataFrame:
    """Each fetched contact with a `change`: inserted, updated, restored, unchanged or stale
    (the warehouse already holds a newer version)."""
    stored = stored.rename({c: f"{c}_stored" for c in stored.columns if c != "id"})
    joined = fetched.join(stored, on="id", how="left")
    return joined.with_columns(
        pl.when(pl.col("content_hash_stored").is_null())
        .then(pl.lit("inserted"))
        .when(pl.col("date_updated") < pl.col("date_updated_stored"))
        .then(pl.lit("stale"))
        .when(pl.col("deleted_at_stored").is_not_null())
        .then(pl.lit("restored"))
        .when(pl.col("content_hash") != pl.col("content_hash_stored"))
        .then(pl.lit("updated"))
        .otherwise(pl.lit("unchanged"))
        .alias("change")
    )


def _stored_versions(conn: sa.Connection, ids: list[str]) -> pl.DataFrame:
    t = contacts_table
    rows = conn.execute(sa.select(t.c.id, t.c.content_hash, t.c.date_updated, t.c.deleted_at).where(t.c.id.in_(ids))).all()
    schema = {"id": pl.String, "content_hash": pl.String, "date_updated": pl.Datetime("us"), "deleted_at": pl.Datetime("us")}
    return pl.DataFrame(rows, schema=schema, orient="row")


def write_page(conn: sa.Connection, page: list[dict], *, run_id: str, where: str, seen_at: datetime | None = None) -> tuple[Counter, list[dict]]:
    """Write one page of provider records in the caller's transaction; returns (counts, rejects)."""
    fetched, rejects = parse_contacts(page, where)
    # A page can repeat a contact edited while we paged; keep its newest version. (Rare: the
    # check spares every other page a sort.)
    if fetched["id"].n_unique() < fetched.height:
        fetched = fetched.sort("date_updated").unique(subset="id", keep="last", maintain_order=True)
    changes = classify(fetched, _stored_versions(conn, fetched["id"].to_list()))
    to_write = changes.filter(pl.col("change").is_in(["inserted", "updated", "restored"]))
    now = utcnow()
    rows = to_write.select(fetched.columns).with_columns(
        synced_at=pl.lit(now), deleted_at=pl.lit(None, dtype=pl.Datetime("us"))
    )
    if seen_at is not None:
        rows = rows.with_columns(seen_at=pl.lit(seen_at))
        kept = changes.filter(pl.col("change").is_in(["unchanged", "stale"]))["id"].to_list()
        if kept:
            conn.execute(contacts_table.update().where(contacts_table.c.id.in_(kept)).values(seen_at=seen_at))
    bulk_upsert(conn, contacts_table, rows, newer_or_equal="date_updated")
    record_rejects(conn, "gohighlevel", "contact", rejects, run_id)
    counts = Counter(changes["change"].to_list())
    counts["fetched"] = len(page)
    counts["written"] = len(rows)
    counts["rejected"] = len(rejects)
    return counts, rejects


def sync_pages(context: dg.AssetExecutionContext, warehouse: WarehouseResource, pages: Iterable[list[dict]], *, seen_at: datetime | None = None) -> Counter:
    """Write every page, one transaction each, logging progress and naming rejected records."""
    totals: Counter = Counter()
    for number, page in enumerate(pages, start=1):
        with warehouse.engine.begin() as conn:
            counts, rejects = write_page(conn, page, run_id=context.run.run_id, where=f"page {number} ", seen_at=seen_at)
        for reject in rejects:
            if totals["rejected"] < LOGGED_REJECTS:
                context.log.warning(f"skipped contact {reject['record_id']}: {reject['reason']}")
            totals["rejected"] += 1
        totals.update({k: v for k, v in counts.items() if k != "rejected"})
        if number % LOG_EVERY_PAGES == 0:
            context.log.info(f"page {number}: {totals['fetched']} fetched, {totals['written']} written so far")
    if totals["rejected"] > LOGGED_REJECTS:
        context.log.warning(f"... and {totals['rejected'] - LOGGED_REJECTS} more rejected contacts (table sync_rejects)")
    return totals


@dg.asset(
    partitions_def=HOURLY,
    group_name=GROUP,
    kinds=KINDS,
    pool=GROUP,
    tags={"sync/cadence": "hourly"},
)
def ghl_contacts(context: dg.AssetExecutionContext, gohighlevel: GoHighLevelResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """GoHighLevel contacts changed in the partition's hour (table `ghl_contacts`).

    Fetches every contact whose `dateUpdated` falls in the hour, starting five minutes early to
    cover the search index's delay, and upserts new and changed ones. An hour with no change
    costs one request. Malformed records are skipped, named in the log and kept in `sync_rejects`.
    """
    window = context.partition_time_window
    start, end = _naive_utc(window.start) - WINDOW_OVERLAP, _naive_utc(window.end)
    began = time.monotonic()
    with gohighlevel.client(log=context.log.info) as client:
        try:
            totals = sync_pages(context, warehouse, client.search_contacts(start, end, trust_total=True))
        except DailyBudgetSpent as error:
            raise _budget_failure(error, client.stats(), "the partition stays unsynced; re-run it once the day's budget resets") from None
        except ProviderError as error:
            raise dg.Failure(
                description=f"{error}. Pages written before the failure are complete; re-run the partition to finish it.",
                metadata=client.stats(),
            ) from None
        stats = client.stats()
    context.log.info(f"{context.partition_key}: {totals['fetched']} fetched, {totals['written']} written, {stats['requests']} requests")
    return dg.MaterializeResult(
        metadata={
            "window_start_utc": start.isoformat(),
            "window_end_utc": end.isoformat(),
            **_counts(totals, "inserted", "updated", "restored", "unchanged", "stale", "fetched", "written", "rejected"),
            **stats,
            "duration_s": round(time.monotonic() - began, 3),
            "triggered_by": trigger_of(context),
        }
    )


@dg.asset(group_name=GROUP, kinds=KINDS, pool=GROUP, tags={"sync/cadence": "daily"})
def ghl_contacts_reconciliation(
    context: dg.AssetExecutionContext,
    config: ReconciliationConfig,
    gohighlevel: GoHighLevelResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    """Full pass over every GoHighLevel contact (table `ghl_contacts`), nightly.

    Inserts what the hourly syncs missed, corrects drift, soft-deletes (`deleted_at`) contacts
    the provider no longer has, and restores any that come back. Deletions happen only after a
    complete pass, and never for more than `max_delete_share` of the live contacts at once.
    """
    pass_started = utcnow()
    began = time.monotonic()
    with gohighlevel.client(log=context.log.info) as client:
        try:
            totals = sync_pages(context, warehouse, client.search_contacts(), seen_at=pass_started)
        except DailyBudgetSpent as error:
            raise _budget_failure(error, client.stats(), "nothing was soft-deleted; run the pass again once the day's budget resets") from None
        except ProviderError as error:
            raise dg.Failure(
                description=f"{error}. The pass stopped early, so nothing was soft-deleted; re-run it.",
                metadata=client.stats(),
            ) from None
        stats = client.stats()
    deleted, live = _soft_delete_unseen(warehouse, pass_started, config.max_delete_share)
    totals["deleted"] = deleted
    totals["seen"] = totals["fetched"] - totals["rejected"]
    context.log.info(
        f"reconciliation: {totals['seen']} seen, {totals['inserted']} inserted, {totals['updated']} updated, "
        f"{deleted} deleted, {totals['restored']} restored, {stats['requests']} requests"
    )
    return dg.MaterializeResult(
        metadata={
            **_counts(totals, "seen", "inserted", "updated", "deleted", "restored", "unchanged", "fetched", "written", "rejected"),
            "live_contacts": live,
            **stats,
            "duration_s": round(time.monotonic() - began, 3),
            "triggered_by": trigger_of(context),
        }
    )


def _budget_failure(error: DailyBudgetSpent, stats: dict, outcome: str) -> dg.Failure:
    """Stopping at the day's budget: retrying now cannot help, so Dagster must not retry."""
    return dg.Failure(
        description=f"{error}: stopped early so the location keeps calls for the rest of the day. "
                    f"Pages written before it are complete; {outcome}.",
        metadata=stats,
        allow_retries=False,
    )


def _soft_delete_unseen(warehouse: WarehouseResource, pass_started: datetime, max_share: float) -> tuple[int, int]:
    """Mark live contacts this pass did not see as deleted; returns (deleted, live after)."""
    t = contacts_table
    live = t.c.deleted_at.is_(None)
    # A contact written after the pass began (an hourly run alongside) was not missed.
    unseen = live & (t.c.seen_at.is_(None) | (t.c.seen_at < pass_started)) & (t.c.synced_at < pass_started)
    with warehouse.engine.begin() as conn:
        live_count = conn.execute(sa.select(sa.func.count()).where(live)).scalar_one()
        unseen_count = conn.execute(sa.select(sa.func.count()).where(unseen)).scalar_one()
        if unseen_count and unseen_count > max_share * live_count:
            raise dg.Failure(
                description=(
                    f"the pass would soft-delete {unseen_count} of {live_count} live contacts, more than "
                    f"max_delete_share={max_share:g}; nothing was deleted. If the deletions are real, re-run "
                    "with a higher max_delete_share in the launchpad config."
                )
            )
        conn.execute(t.update().where(unseen).values(deleted_at=utcnow()))
    return unseen_count, live_count - unseen_count


def _counts(totals: Counter, *names: str) -> dict[str, int]:
    return {name: int(totals[name]) for name in names}


def _future_contacts(conn: sa.Connection) -> list[str]:
    t = contacts_table
    # Dagster's clock, not the machine's: the check agrees with the run's clock, frozen in tests.
    limit = get_current_datetime().replace(tzinfo=None) + FUTURE_TOLERANCE
    return conn.execute(sa.select(t.c.id).where(t.c.date_updated > limit, t.c.deleted_at.is_(None)).order_by(t.c.id)).scalars().all()


def _duplicate_ids(conn: sa.Connection) -> list[str]:
    t = contacts_table
    query = sa.select(t.c.id).group_by(t.c.id).having(sa.func.count() > 1).order_by(t.c.id)
    return conn.execute(query).scalars().all()


def contact_checks(asset: dg.AssetsDefinition) -> list[dg.AssetChecksDefinition]:
    """The checks a user wants after any write to `ghl_contacts`."""

    @dg.asset_check(asset=asset, name="unique_ids", blocking=True)
    def unique_ids(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        """No contact id appears twice in `ghl_contacts` (guards against a table restored without its key)."""
        with warehouse.engine.connect() as conn:
            duplicates = _duplicate_ids(conn)
        return dg.AssetCheckResult(passed=not duplicates, metadata={"duplicate_ids": len(duplicates), "ids": ", ".join(duplicates[:50])})

    @dg.asset_check(asset=asset, name="no_future_date_updated")
    def no_future_date_updated(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        """No live contact has a `dateUpdated` in the future: a clock or import error at the provider,
        which would also hide the contact's later edits from the hourly windows."""
        with warehouse.engine.connect() as conn:
            future = _future_contacts(conn)
        return dg.AssetCheckResult(
            passed=not future,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"future_contacts": len(future), "ids": ", ".join(future[:50])},
        )

    return [unique_ids, no_future_date_updated]


assets = [ghl_contacts, ghl_contacts_reconciliation]
asset_checks = [*contact_checks(ghl_contacts), *contact_checks(ghl_contacts_reconciliation)]
