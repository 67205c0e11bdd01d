"""What every sync does to a provider's records before they are written, in one place: parse
each record into a row or a reject (the record kept with its reason, never dropped), hash the
content that makes a change, and classify each row against the stored one.

Pure: polars and the standard library only, so parsers and their tests need no database.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

# What a parser raises for a record it cannot read: the record becomes a reject, the batch goes on.
UNREADABLE = (ValueError, TypeError, KeyError)
WRITES = ("inserted", "updated", "restored")
# What classify calls a received row that is in the warehouse afterwards: the books count each as stored.
STORED = (*WRITES, "unchanged", "stale")


def content_hash(value: Any) -> str:
    """The digest stored as `content_hash`: equal exactly when the content is equal."""
    return hashlib.blake2b(json.dumps(value, sort_keys=True, default=str).encode(), digest_size=16).hexdigest()


def text_value(value: Any) -> str | None:
    """A provider's field for a text column: strings as sent, anything else as JSON (a list where
    a name was expected must not break the batch's write)."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def reject(record: Any, reason: str, where: str) -> dict[str, Any]:
    """A record that failed validation, named by its id, or by `where` when it has none."""
    record_id = record.get("id") if isinstance(record, dict) else None
    return {"record_id": str(record_id) if record_id not in (None, "") else where, "reason": reason, "payload": record}


def parse_each(records: Iterable[Any], parse: Callable[..., dict], where: str, *args: Any) -> tuple[list[dict], list[dict]]:
    """`parse(record, *args)` for each record: the rows, and the rejects with their reasons."""
    rows, rejects = [], []
    for position, record in enumerate(records):
        try:
            rows.append(parse(record, *args))
        except UNREADABLE as error:
            rejects.append(reject(record, str(error), f"{where}item {position}"))
    return rows, rejects


def classify(fetched: pl.DataFrame, stored: pl.DataFrame, key: str, *, newer: str | None = None) -> pl.DataFrame:
    """Every row of `fetched` and of `stored` (its key, `content_hash`, `deleted_at` and the
    `newer` column; renamed `<name>_stored` in the result) with its `change`:
    inserted, stale (the stored version is newer by `newer`), restored (stored as deleted),
    updated, unchanged, or gone (stored, not fetched)."""
    stored = stored.rename({c: f"{c}_stored" for c in stored.columns if c != key})
    change = pl.when(pl.col("content_hash_stored").is_null()).then(pl.lit("inserted"))
    change = change.when(pl.col("content_hash").is_null()).then(pl.lit("gone"))
    if newer:
        change = change.when(pl.col(newer) < pl.col(f"{newer}_stored")).then(pl.lit("stale"))
    change = (change.when(pl.col("deleted_at_stored").is_not_null()).then(pl.lit("restored"))
              .when(pl.col("content_hash") != pl.col("content_hash_stored")).then(pl.lit("updated"))
              .otherwise(pl.lit("unchanged")))
    return fetched.join(stored, on=key, how="full", coalesce=True).with_columns(change=change)


@dataclass
class Books:
    """Where every record a run received went: stored (inserted, updated, restored, unchanged or
    stale), rejected (kept in `sync_rejects` with the reason) or excluded (with a reason, counted
    by reason). The books balance when nothing is left over and no two different records claimed
    one key; a run whose books do not balance has lost something, and must fail loudly."""

    received: int = 0
    stored: Counter = field(default_factory=Counter)
    rejected: int = 0
    excluded: Counter = field(default_factory=Counter)
    collisions: list[str] = field(default_factory=list)
    _claims: dict[str, str] = field(default_factory=dict, repr=False)

    def receive(self, count: int) -> None:
        self.received += count

    def store(self, changes: Counter | dict[str, int]) -> None:
        """Rows classified by `classify` (only the STORED kinds count; `gone` rows were not received)."""
        self.stored.update({kind: changes.get(kind, 0) for kind in STORED})

    def reject(self, count: int) -> None:
        self.rejected += count

    def exclude(self, reason: str, count: int = 1) -> None:
        if count:
            self.excluded[reason] += count

    def claim(self, key: str, content: str, what: str = "") -> bool:
        """Note that a record with `content` (its hash) lands on `key`; False, and a collision
        noted, when another record of this run already landed there with other content."""
        held = self._claims.setdefault(key, content)
        if held != content:
            self.collisions.append(f"{what}{key}")
            return False
        return True

    @property
    def unaccounted(self) -> int:
        return self.received - sum(self.stored.values()) - self.rejected - sum(self.excluded.values())

    @property
    def balanced(self) -> bool:
        return self.unaccounted == 0 and not self.collisions

    def metadata(self) -> dict[str, Any]:
        return {"received": self.received, "stored": sum(self.stored.values()), "rejected": self.rejected,
                "excluded": sum(self.excluded.values()), "unaccounted": self.unaccounted, "collisions": len(self.collisions)}

    def summary(self) -> str:
        """One line for the log and the check: the books, and what does not add up."""
        excluded = ", ".join(f"{n} {reason}" for reason, n in sorted(self.excluded.items()))
        text = (f"received {self.received} = stored {sum(self.stored.values())} + rejected {self.rejected} "
                f"+ excluded {sum(self.excluded.values())}" + (f" ({excluded})" if excluded else ""))
        if self.unaccounted:
            text += f"; {self.unaccounted} records unaccounted for"
        if self.collisions:
            text += f"; {len(self.collisions)} keys claimed by two different records: " + ", ".join(self.collisions[:20])
        return text
