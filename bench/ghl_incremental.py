"""Benchmark: the hourly GoHighLevel sync of one hour with 0, 5 and 500 changed contacts.

    .venv/bin/python bench/ghl_incremental.py [--contacts 20000] [--page-sizes 500,100] [--runs 5]

Each run: a fresh PostgreSQL warehouse (created on 127.0.0.1:5432, dropped after) filled by
one reconciliation pass over `--contacts` contacts of the in-process emulator (rate limits off),
then, per page size and per count, `ghl_contacts` materialized for an hour in which that many
contacts were edited. Printed per case: requests served by the emulator against the goal
(one request per page of changed contacts, at least one), contacts written, the asset's own
`duration_s` metadata and the wall time of the whole `dg.materialize`. Medians over `--runs`.
"""

import argparse
import math
import random
import statistics
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
from common import QUIET, fresh_postgres

from emulator import Emulator
from emulator.ghl import LOCATION_ID, TOKEN
from resources.ghl import GoHighLevelResource
from resources.warehouse import WarehouseResource
from sync_assets.ghl import ghl_contacts_reconciliation, hourly_contacts

ghl_contacts = hourly_contacts()  # built as the code location builds it: its partitions read SYNC_TIMEZONE
ANCHOR = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
CHANGED = (0, 5, 500)


def metadata_of(result: dg.ExecuteInProcessResult, node: str) -> dict:
    (materialization,) = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in materialization.metadata.items()}


def one_run(contacts: int, page_sizes: list[int], seed: int) -> dict[tuple[int, int], dict]:
    emulator = Emulator(seed=seed, anchor=ANCHOR, contacts=contacts, rate_limits=False)
    emulator.start()
    rng = random.Random(seed)
    results = {}
    try:
        with fresh_postgres() as url, dg.instance_for_test() as instance:
            def resources(page_size: int) -> dict:
                return {"gohighlevel": GoHighLevelResource(base_url=emulator.url, token=TOKEN, location_id=LOCATION_ID, page_size=page_size),
                        "warehouse": WarehouseResource(url=url)}

            assert dg.materialize([ghl_contacts_reconciliation], resources=resources(500), instance=instance,
                                  run_config=QUIET).success
            ids = sorted(emulator.ghl.truth())
            # Hours two apart, so no hour's five-minute look-back reaches the edits of the one before.
            hour = ANCHOR
            for page_size in page_sizes:
                for changed in CHANGED:
                    hour += timedelta(hours=2)
                    for contact_id in rng.sample(ids, changed):
                        emulator.ghl.update(contact_id, at=hour + timedelta(seconds=rng.uniform(0, 3599)), phone=f"+316{rng.randrange(10**8)}")
                    emulator.reset_requests()
                    began = time.monotonic()
                    result = dg.materialize([ghl_contacts], resources=resources(page_size), instance=instance,
                                            partition_key=hour.strftime("%Y-%m-%d-%H:%M"), run_config=QUIET)
                    wall = time.monotonic() - began
                    assert result.success
                    meta = metadata_of(result, "ghl_contacts")
                    results[(page_size, changed)] = {
                        "requests": len(emulator.requests("gohighlevel")), "requests_metadata": meta["requests"],
                        "goal": max(1, math.ceil(changed / page_size)), "written": meta["written"],
                        "duration_s": meta["duration_s"], "materialize_s": wall,
                    }
    finally:
        emulator.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--page-sizes", default="500,100", help="comma separated, each 1..500")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    page_sizes = [int(p) for p in args.page_sizes.split(",")]
    runs = []
    for run in range(1, args.runs + 1):
        runs.append(one_run(args.contacts, page_sizes, seed=run))
        print(f"run {run}: " + "; ".join(f"page {p}, {c} changed: {r['requests']} requests, {r['written']} written, "
                                         f"duration_s {r['duration_s']:.3f}, materialize {r['materialize_s']:.2f} s"
                                         for (p, c), r in runs[-1].items()), flush=True)
    print(f"\nmedians over {args.runs} runs, warehouse PostgreSQL holding {args.contacts} contacts:")
    print(f"{'page size':>9} {'changed':>7} {'requests':>8} {'goal':>4} {'written':>7} {'duration_s':>10} {'materialize_s':>13}")
    for key in runs[0]:
        cases = [r[key] for r in runs]
        assert all(c["requests"] == c["requests_metadata"] for c in cases), "the asset's requests metadata disagrees with the emulator"
        print(f"{key[0]:>9} {key[1]:>7} {statistics.median(c['requests'] for c in cases):>8g} {cases[0]['goal']:>4} "
              f"{statistics.median(c['written'] for c in cases):>7g} {statistics.median(c['duration_s'] for c in cases):>10.3f} "
              f"{statistics.median(c['materialize_s'] for c in cases):>13.2f}")


if __name__ == "__main__":
    main()
