"""What every sync knows about the run it is part of: who started it, and what day it is."""

from datetime import date

import dagster as dg
from dagster._time import get_current_datetime  # honours dagster's freeze_time in tests

from resources.settings import setting

TRIGGER_TAG = "sync/trigger"

# The run queue's order (Dagster's `dagster/priority` tag: higher starts first; untagged runs are
# 0): what a person waits on goes first, a new organisation's first sync last. With many
# organisations on one machine, the runs started per minute are the bound (bench/README.md), and
# without an order an approval's push waits behind every first sync of every organisation queued
# before it, and a new organisation's first sync delays the others' hourly syncs.
PRIORITY_TAG = "dagster/priority"
WAITED_ON = {PRIORITY_TAG: "10"}  # a push after an approval, a contact event
BACKGROUND = {PRIORITY_TAG: "-10"}  # a first sync


def trigger_of(context: dg.AssetExecutionContext) -> str:
    """Who or what started the run: a schedule, a sensor, a backfill, the CLI, or a person in the UI."""
    return trigger_from_tags(context.run.tags)


def trigger_from_tags(tags: dict[str, str]) -> str:
    """`trigger_of` for a run read back from the instance (the alerts name who started a failed run)."""
    if "dagster/schedule_name" in tags:
        return f"schedule {tags['dagster/schedule_name']}"
    if "dagster/sensor_name" in tags:
        return f"sensor {tags['dagster/sensor_name']}"
    if "dagster/backfill" in tags:
        return f"backfill {tags['dagster/backfill']}"
    return tags.get(TRIGGER_TAG) or f"manual ({tags.get('user', 'UI')})"


def today() -> date:
    """Today in SYNC_TIMEZONE."""
    return get_current_datetime(setting("SYNC_TIMEZONE")).date()
