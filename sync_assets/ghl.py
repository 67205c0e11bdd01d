"""GoHighLevel contacts: the hourly incremental sync and the nightly full reconciliation.

Both write the warehouse table `ghl_contacts` page by page: each page is parsed into a polars
frame, compared with the stored versions, and only new or changed contacts are written, in
one transaction per page. A stored contact is only overwritten by a version with an equal or
newer `dateUpdated`, so hourly partitions can run in any order and re-runs are harmless.
"""


from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl
import sqlalchemy as sa
from dagster._time import get_current_datetime  # honours dagster's freeze_time in tests

from resources import events
from resources.ghl import DailyBudgetSpent, GoHighLevelResource, parse_contacts, search_shaped
from resources.ghl_tables import ghl_contacts as contacts_table
from resources.organisations import asset_key, key_prefix, scoped
from resources.tables import inbound_events
from resources.records import WRITES, Books, classify
from resources.settings import history_start, setting
from resources.warehouse import WarehouseResource, bulk_upsert, utcnow
from sync_assets.runs import WAITED_ON
from sync_assets.step import SyncStep, listed, nothing_lost, sync_step, table_metadata

GROUP = "gohighlevel"
KINDS = {"gohighlevel", "python", "sql"}
# GoHighLevel: "updates may take a few seconds to appear in search results". Each hour
# re-reads the end of the previous one; unchanged contacts cost nothing to re-read.
WINDOW_OVERLAP = timedelta(minutes=5)
# A full pass of a million contacts is 2,000 pages: a log line each would bury the run's log
# (and cost an event-log write each).
LOG_EVERY_PAGES = 20
FUTURE_TOLERANCE = timedelta(minutes=5)
# Why a contact's record was read but not stored (the books' reasons): another version of the
# contact read in this run stands (GoHighLevel moves an edited contact behind the cursor, so a
# pass reads it again), or the very version this run stored came again.
SUPERSEDED = "superseded by a newer version in this run"
READ_TWICE = "the same version read twice in this run"


class ReconciliationConfig(dg.Config):
    max_delete_share: float = 0.5
    """Refuse to soft-delete more than this share of the live contacts in one pass (a provider
    outage returning an empty list must not wipe the table). Raise it in the launchpad to
    accept a genuine mass deletion."""


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def _stored_versions(conn: sa.Connection, ids: list[str]) -> pl.DataFrame:
    t = contacts_table
    rows = conn.execute(sa.select(t.c.id, t.c.content_hash, t.c.date_updated, t.c.deleted_at).where(t.c.id.in_(ids))).all()
    schema = {"id": pl.String, "content_hash": pl.String, "date_updated": pl.Datetime("us"), "deleted_at": pl.Datetime("us")}
    return pl.DataFrame(rows, schema=schema, orient="row")


def write_page(conn: sa.Connection, page: list[dict], *, where: str, seen_at: datetime | None = None,
               books: Books | None = None, earlier: set[str] | None = None) -> tuple[Counter, list[dict]]:
    """Write one page of provider records in the caller's transaction; returns (counts, rejects).
    With `books`, account there for each record of the page; `earlier` holds the ids this run
    has already stored (a contact edited while we paged comes again on a later page), and
    takes this page's."""
    fetched, rejects = parse_contacts(page, where)
    repeats: Counter = Counter()
    # A page can repeat a contact edited while we paged; keep its newest version (the later one
    # served, when two carry one dateUpdated). Rare: the check spares every other page a sort.
    if fetched["id"].n_unique() < fetched.height:
        versions = fetched.select("id", "content_hash").n_unique()
        repeats.update({READ_TWICE: fetched.height - versions, SUPERSEDED: versions - fetched["id"].n_unique()})
        fetched = fetched.sort("date_updated", maintain_order=True).unique(subset="id", keep="last", maintain_order=True)
    changes = classify(fetched, _stored_versions(conn, fetched["id"].to_list()), "id", newer="date_updated")
    rows = changes.filter(pl.col("change").is_in(WRITES)).select(fetched.columns).with_columns(
        synced_at=pl.lit(utcnow()), deleted_at=pl.lit(None, dtype=pl.Datetime("us"))
    )
    if seen_at is not None:
        rows = rows.with_columns(seen_at=pl.lit(seen_at))
        kept = changes.filter(pl.col("change").is_in(["unchanged", "stale"]))["id"].to_list()
        # A contact GoHighLevel still has but sent unreadable this time is not gone: its stored
        # version stays live (the reject is kept in sync_rejects), as Employes keeps a rejected
        # employee's previous row.
        kept += [r["payload"]["id"] for r in rejects if isinstance(r["payload"], dict) and isinstance(r["payload"].get("id"), str)]
        if kept:
            conn.execute(contacts_table.update().where(contacts_table.c.id.in_(kept)).values(seen_at=seen_at))
    bulk_upsert(conn, contacts_table, rows, newer_or_equal="date_updated")
    counts = Counter(changes["change"].to_list())
    counts["fetched"] = len(page)
    counts["written"] = len(rows)
    if books is not None:
        _account(books, changes, repeats, earlier if earlier is not None else set())
    return counts, rejects


def _account(books: Books, changes: pl.DataFrame, repeats: Counter, earlier: set[str]) -> None:
    """The books of one page: each contact read is stored once (its id is GoHighLevel's identity,
    so a second version is no collision: the newer one stands), and the other versions of it
    this run read are excluded: `repeats` within the page, and those of contacts in `earlier`
    (stored from an earlier page). Rejects are counted where they are kept."""
    again = pl.Series([contact_id in earlier for contact_id in changes["id"]], dtype=pl.Boolean)
    first, repeated = changes.filter(~again), changes.filter(again)
    books.store(Counter(first["change"].to_list()))
    # Read again as this run stored it, or in another version (a newer one, or an older one: stale).
    same = int((repeated["change"] == "unchanged").sum())
    repeats.update({READ_TWICE: same, SUPERSEDED: repeated.height - same})
    for reason, count in repeats.items():
        books.exclude(reason, count)
    earlier.update(first["id"].to_list())


def sync_pages(step: SyncStep, warehouse: WarehouseResource, pages: Iterable[list[dict]], *, seen_at: datetime | None = None) -> Counter:
    """Write every page, one transaction each, logging progress and naming rejected records; the
    step's books account for every record of every page."""
    totals: Counter = Counter()
    earlier: set[str] = set()  # every id of the run: a million contacts' ids are some 100 MB
    for number, page in enumerate(pages, start=1):
        step.books.receive(len(page))
        with warehouse.engine.begin() as conn:
            counts, rejects = write_page(conn, page, where=f"page {number} ", seen_at=seen_at, books=step.books, earlier=earlier)
            step.keep_rejects(conn, "contact", rejects)
        totals.update(counts)
        totals["rejected"] += len(rejects)
        if number % LOG_EVERY_PAGES == 0:
            step.context.log.info(f"page {number}: {totals['fetched']} fetched, {totals['written']} written so far")
    return totals


def hourly() -> dg.HourlyPartitionsDefinition:
    """The hours in SYNC_TIMEZONE, read when the code location is built (never at import), from
    where the history starts (`history_start`: SYNC_HISTORY_START, else the hour before the
    installation's first start), so a new installation is not thousands of empty hours."""
    return dg.HourlyPartitionsDefinition(start_date=history_start().strftime("%Y-%m-%d-%H:%M"), timezone=setting("SYNC_TIMEZONE"))


def sync_hour(context: dg.AssetExecutionContext, gohighlevel: GoHighLevelResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """The sync of the partition's hour: the asset `ghl_contacts` (`hourly_contacts`)."""
    window = context.partition_time_window
    start, end = _naive_utc(window.start) - WINDOW_OVERLAP, _naive_utc(window.end)
    with (sync_step(context, GROUP) as step, step.open(gohighlevel) as client,
          step.phase("Pages written before the failure are complete; re-run the partition to finish it.")):
        try:
            totals = sync_pages(step, warehouse, client.search_contacts(start, end, trust_total=True))
        except DailyBudgetSpent as error:
            raise _budget_failure(step, error, "the partition stays unsynced; re-run it once the day's budget resets") from None
    context.log.info(f"{context.partition_key}: {totals['fetched']} fetched, {totals['written']} written, {step.stats()['requests']} requests")
    return step.result(
        totals,
        window_start_utc=start.isoformat(),
        window_end_utc=end.isoformat(),
        **_counts(totals, "inserted", "updated", "restored", "unchanged", "stale"),
    )


def hourly_contacts() -> dg.AssetsDefinition:
    """The asset `ghl_contacts`, built when the code location is: its partitions read SYNC_TIMEZONE."""

    @dg.asset(
        key_prefix=key_prefix(),
        partitions_def=hourly(),
        group_name=GROUP,
        kinds=KINDS,
        pool=scoped(GROUP),
        tags={"sync/cadence": "hourly"},
        metadata=table_metadata(contacts_table),
        check_specs=[nothing_lost("ghl_contacts")],
    )
    def ghl_contacts(
        context: dg.AssetExecutionContext, gohighlevel: GoHighLevelResource, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        """GoHighLevel contacts changed in the partition's hour (table `ghl_contacts`).

        Fetches every contact whose `dateUpdated` falls in the hour, starting five minutes early to
        cover the search index's delay, and upserts new and changed ones. An hour with no change
        costs one request. Malformed records are skipped, named in the log and kept in `sync_rejects`.
        """
        return sync_hour(context, gohighlevel, warehouse)

    return ghl_contacts


@dg.asset(key_prefix=key_prefix(), group_name=GROUP, kinds=KINDS, pool=scoped(GROUP), tags={"sync/cadence": "daily"}, metadata=table_metadata(contacts_table),
          check_specs=[nothing_lost("ghl_contacts_reconciliation")])
def ghl_contacts_reconciliation(
    context: dg.AssetExecutionContext,
    config: ReconciliationConfig,
    gohighlevel: GoHighLevelResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    """Full pass over every GoHighLevel contact (table `ghl_contacts`), nightly.

    Inserts what the hourly syncs missed, corrects drift, soft-deletes (`deleted_at`) contacts
    the provider no longer has (not one it sends unreadable: that is rejected and stays live),
    and restores any that come back. Deletions happen only after a
    complete pass, and never for more than `max_delete_share` of the live contacts at once.
    """
    pass_started = utcnow()
    with (sync_step(context, GROUP) as step, step.open(gohighlevel) as client,
          step.phase("The pass stopped early, so nothing was soft-deleted; re-run it.")):
        try:
            totals = sync_pages(step, warehouse, client.search_contacts(), seen_at=pass_started)
        except DailyBudgetSpent as error:
            raise _budget_failure(step, error, "nothing was soft-deleted; run the pass again once the day's budget resets") from None
    deleted, live = _soft_delete_unseen(step, warehouse, pass_started, config.max_delete_share)
    totals["deleted"] = deleted
    totals["seen"] = totals["fetched"] - totals["rejected"]
    context.log.info(
        f"reconciliation: {totals['seen']} seen, {totals['inserted']} inserted, {totals['updated']} updated, "
        f"{deleted} deleted, {totals['restored']} restored, {step.stats()['requests']} requests"
    )
    return step.result(totals, **_counts(totals, "seen", "inserted", "updated", "deleted", "restored", "unchanged"), live_contacts=live,
                       **{"dagster/row_count": live})


# -- contacts named by GoHighLevel's contact events ----------------------------------------------
EVENT_BATCH = 100  # contacts written per transaction (a GET each: the page of the event run)
NOT_FOUND = "not found at GoHighLevel (deleted there): soft-deleted in the warehouse"
OTHER_LOCATION = "an event of another location than GHL_LOCATION_ID"


class ContactEventsConfig(dg.Config):
    event_ids: list[int] = []
    """The `inbound_events` (source gohighlevel.contacts) to take up, as the sensor
    `ghl_contact_events` names them; empty: the pending ones (at most 500), e.g. from the UI."""


def _events(warehouse: WarehouseResource, ids: list[int]) -> list[sa.Row]:
    if not ids:
        return events.pending(warehouse.engine, events.GHL_CONTACTS)
    t = inbound_events
    with warehouse.engine.connect() as conn:
        return conn.execute(sa.select(t).where(t.c.id.in_(ids), t.c.source == events.GHL_CONTACTS).order_by(t.c.id)).all()


def _stored_raw(conn: sa.Connection, ids: list[str]) -> dict[str, dict]:
    t = contacts_table
    return {i: raw for i, raw in conn.execute(sa.select(t.c.id, t.c.raw).where(t.c.id.in_(ids))) if isinstance(raw, dict)}


@dg.asset(key_prefix=key_prefix(), group_name=GROUP, kinds=KINDS, pool=scoped(GROUP), metadata=table_metadata(contacts_table),
          check_specs=[nothing_lost("ghl_contacts_from_events")])
def ghl_contacts_from_events(
    context: dg.AssetExecutionContext, config: ContactEventsConfig, gohighlevel: GoHighLevelResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """The GoHighLevel contacts that contact events (ContactCreate / ContactUpdate / ContactDelete)
    name, read again and written to `ghl_contacts` as the hourly sync writes them.

    Each contact is read with `GET /contacts/{id}` (one request each: its answer is current at
    once, where search's index lags), put in the table's shape (search's; fields that answer does
    not carry are kept from the stored version, see `resources.ghl.search_shaped`) and written in
    batches through the hourly sync's `write_page` (content hash, newer-or-equal dateUpdated, the
    books). A contact GoHighLevel no longer has is soft-deleted (`deleted_at`); the nightly
    reconciliation restores one that comes back. The events are then marked handled by the run.
    The event is only a hint: the hourly sync and the reconciliation still read every change.
    """
    taken = _events(warehouse, config.event_ids)
    wanted: dict[str, None] = {}  # the contact ids, once each, in the events' order
    skipped: Counter = Counter()
    for event in taken:
        payload = event.payload if isinstance(event.payload, dict) else {}
        contact_id = payload.get("id") or payload.get("contactId")
        if not isinstance(contact_id, str) or not contact_id.strip():
            skipped["no contact id"] += 1
        elif payload.get("locationId") not in (None, gohighlevel.location_id):
            skipped[OTHER_LOCATION] += 1
        else:
            wanted[contact_id] = None
    for reason, count in skipped.items():
        context.log.warning(f"{count} contact events not acted on: {reason}")
    ids = list(wanted)
    totals: Counter = Counter()
    gone: list[str] = []
    with (sync_step(context, GROUP) as step, step.open(gohighlevel) as client,
          step.phase(lambda: f"{totals['written']} contacts written before the failure; the events stay pending "
                             "(the hourly sync reads the changes too)")):
        earlier: set[str] = set()
        for start in range(0, len(ids), EVENT_BATCH):
            batch = ids[start:start + EVENT_BATCH]
            try:
                answers = {i: client.contact(i) for i in batch}
            except DailyBudgetSpent as error:
                raise _budget_failure(step, error, "the rest of the events stay pending for the hourly sync") from None
            found = [i for i in batch if answers[i] is not None]
            step.books.receive(len(batch))
            with warehouse.engine.begin() as conn:
                stored = _stored_raw(conn, found)
                page = [search_shaped(answers[i], stored.get(i)) for i in found]
                counts, rejects = write_page(conn, page, where="event ", books=step.books, earlier=earlier)
                step.keep_rejects(conn, "contact", rejects)
                missing = [i for i in batch if answers[i] is None]
                if missing:
                    t = contacts_table
                    conn.execute(t.update().where(t.c.id.in_(missing), t.c.deleted_at.is_(None)).values(deleted_at=utcnow()))
                    step.books.exclude(NOT_FOUND, len(missing))
            totals.update(counts)
            totals["rejected"] += len(rejects)
            gone += missing
    events.mark_handled(warehouse.engine, [e.id for e in taken], context.run.run_id)
    context.log.info(f"{len(taken)} contact events: {len(ids)} contacts read, {totals['written']} written, "
                     f"{len(gone)} not found (soft-deleted), {step.stats()['requests']} requests")
    return step.result(totals, events=len(taken), contacts=len(ids), not_found=len(gone),
                       **_counts(totals, "inserted", "updated", "restored", "unchanged", "stale"),
                       events_not_acted_on=dg.MetadataValue.json(dict(skipped)))


def _budget_failure(step: SyncStep, error: DailyBudgetSpent, outcome: str) -> dg.Failure:
    """Stopping at the day's budget: retrying before GoHighLevel's day ends cannot help."""
    return step.refuse(f"{error}: stopped early so the location keeps calls for the rest of the day. "
                       f"Pages written before it are complete; {outcome}.")


def _soft_delete_unseen(step: SyncStep, warehouse: WarehouseResource, pass_started: datetime, max_share: float) -> tuple[int, int]:
    """Mark live contacts this pass did not see as deleted; returns (deleted, live after)."""
    t = contacts_table
    live = t.c.deleted_at.is_(None)
    # A contact written after the pass began (an hourly run alongside) was not missed.
    unseen = live & (t.c.seen_at.is_(None) | (t.c.seen_at < pass_started)) & (t.c.synced_at < pass_started)
    with warehouse.engine.begin() as conn:
        live_count = conn.execute(sa.select(sa.func.count()).where(live)).scalar_one()
        unseen_count = conn.execute(sa.select(sa.func.count()).where(unseen)).scalar_one()
        if unseen_count and unseen_count > max_share * live_count:
            raise step.refuse(
                f"the pass would soft-delete {unseen_count} of {live_count} live contacts, more than "
                f"max_delete_share={max_share:g}; nothing was deleted. If the deletions are real, re-run "
                "with a higher max_delete_share in the launchpad config."
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


def contact_checks(asset: str | dg.AssetsDefinition) -> list[dg.AssetChecksDefinition]:
    """The checks a user wants after any write to `ghl_contacts`, on `asset` (a key is enough: a
    check reads the table, whatever the asset's partitions)."""

    @dg.asset_check(asset=asset, name="unique_ids", blocking=True)
    def unique_ids(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        """No contact id appears twice in `ghl_contacts` (guards against a table restored without its key)."""
        with warehouse.engine.connect() as conn:
            duplicates = _duplicate_ids(conn)
        return dg.AssetCheckResult(passed=not duplicates, metadata={"duplicate_ids": len(duplicates), "ids": listed(duplicates, 50)})

    @dg.asset_check(asset=asset, name="no_future_date_updated")
    def no_future_date_updated(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        """No live contact has a `dateUpdated` in the future: a clock or import error at the provider,
        which would also hide the contact's later edits from the hourly windows."""
        with warehouse.engine.connect() as conn:
            future = _future_contacts(conn)
        return dg.AssetCheckResult(
            passed=not future,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"future_contacts": len(future), "ids": listed(future, 50)},
        )

    return [unique_ids, no_future_date_updated]


# By key: the job takes the asset's partitions when the code location resolves it.
ghl_contacts_hourly_job = dg.define_asset_job("ghl_contacts_hourly_job", selection=[asset_key("ghl_contacts")])


# Started by the sensor `ghl_contact_events` (sensors/ghl.py), named: the code location resolves it.
# Its steps run in the run's own process, as the Xero push's: a process per step (the asset and
# its checks) would load the code location again each, seconds an event should not wait.
ghl_contact_events_job = dg.define_asset_job("ghl_contact_events_job", selection=[asset_key("ghl_contacts_from_events")], tags=WAITED_ON,
                                             executor_def=dg.in_process_executor)


def assets() -> list[dg.AssetsDefinition]:
    return [hourly_contacts(), ghl_contacts_reconciliation, ghl_contacts_from_events]


asset_checks = [*contact_checks("ghl_contacts"), *contact_checks(ghl_contacts_reconciliation),
                *contact_checks(ghl_contacts_from_events)]
jobs = [ghl_contacts_hourly_job, ghl_contact_events_job]
