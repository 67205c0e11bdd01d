"""Benchmark: a Xero push of many entries at Xero's rate limit scaled up for the run.

    .venv/bin/python bench/xero_push.py [--entries 2000] [--calls 200] [--window 10] [--runs 3]

Adds `--entries` approved entries to one work date in the emulator, sets the emulator's Xero
limit to `--calls` per `--window` seconds (and the client's to the same; the default, 200 per
10 s, is 20 times Xero's 60 a minute, so 2,000 entries take minutes, not an hour), pushes the day and
prints, per run: requests, 429s, wall time of the run, and the achieved share of the limit's
throughput: the least time the limit allows for those requests (a sliding window lets `calls`
through at once, then `calls` more each `window`: (ceil(requests ÷ calls) − 1) × window) divided
by the time from the first Xero request to the last. A second push of the unchanged
day must make zero Xero requests. Medians over `--runs` runs, each on a fresh emulator and
warehouse.
"""

import argparse
import math
import statistics
import tempfile
import time
from datetime import UTC, date, datetime

import dagster as dg
from common import QUIET
from cryptography.fernet import Fernet

from emulator import Emulator, halo as halo_emulator, xero as xero_emulator
from resources.halo import HaloPSAResource
from resources.mappings import MappingFilesResource
from resources.warehouse import WarehouseResource
from resources.xero import XeroResource
from sync_assets.halo import agent_mappings, halo_agents
from sync_assets.xero import time_entries

xero_time_entries = time_entries()  # built as the code location builds it (its partitions are settings)

DAY = date(2026, 11, 18)
AGENTS = range(1, 21)


def one_run(entries: int, calls: int, window: float) -> dict:
    emulator = Emulator(seed=7, anchor=datetime(2026, 11, 20, 12, tzinfo=UTC), contacts=10)
    emulator.start()
    try:
        for n in range(entries):
            emulator.halo.add_entry(AGENTS[n % len(AGENTS)], DAY, 15, client_id=12, subject=f"bench {n}")
        for agent in AGENTS:
            emulator.halo.approve(agent, DAY)
        emulator.xero.set_limits(per_minute=calls, window_s=window, per_day=10**6)
        with tempfile.TemporaryDirectory() as folder, dg.instance_for_test() as instance:
            resources = {
                "halopsa": HaloPSAResource(base_url=emulator.url, auth_url=f"{emulator.url}/auth",
                                           client_id=halo_emulator.CLIENT_ID, client_secret=halo_emulator.CLIENT_SECRET),
                "xero": XeroResource(api_url=emulator.url, identity_url=emulator.url, client_id=xero_emulator.CLIENT_ID,
                                     client_secret=xero_emulator.CLIENT_SECRET, tenant_id=xero_emulator.TENANT_ID,
                                     token_key=Fernet.generate_key().decode(), initial_refresh_token=xero_emulator.INITIAL_REFRESH_TOKEN,
                                     calls_per_window=calls, window_s=window),
                "mapping_files": MappingFilesResource(agent_mappings_file="config/agent_mappings.csv"),
                "warehouse": WarehouseResource(url=f"sqlite:///{folder}/warehouse.db"),
            }
            assert dg.materialize([halo_agents, agent_mappings], resources=resources, instance=instance,
                                  run_config=QUIET).success
            config = {**QUIET, "ops": {"xero_time_entries": {"config": {"dry_run": False}}}}
            emulator.reset_requests()
            began = time.monotonic()
            assert dg.materialize([xero_time_entries], resources=resources, instance=instance,
                                  partition_key=DAY.isoformat(), run_config=config).success
            elapsed = time.monotonic() - began
            served = emulator.requests("xero")
            emulator.reset_requests()
            assert dg.materialize([xero_time_entries], resources=resources, instance=instance,
                                  partition_key=DAY.isoformat(), run_config=config).success
            second = len(emulator.requests("xero"))
        pushed = sum(1 for e in emulator.xero.entries().values() if "bench" in (e.get("description") or ""))
        requests = len(served)
        span = served[-1].at - served[0].at
        bound = (math.ceil(requests / calls) - 1) * window
        return {"requests": requests, "throttled_429": sum(1 for s in served if s.status == 429), "pushed": pushed,
                "wall_s": elapsed, "xero_span_s": span, "limit_bound_s": bound, "share": bound / span,
                "second_run_requests": second}
    finally:
        emulator.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=2000)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results = []
    for run in range(1, args.runs + 1):
        result = one_run(args.entries, args.calls, args.window)
        results.append(result)
        print(f"run {run}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()), flush=True)
    print(f"median over {args.runs} runs ({args.entries} entries, limit {args.calls} per {args.window:g} s): "
          f"wall {statistics.median(r['wall_s'] for r in results):.1f} s, "
          f"share of the limit's throughput {statistics.median(r['share'] for r in results):.1%}, "
          f"429s {max(r['throttled_429'] for r in results)}, "
          f"second-run requests {max(r['second_run_requests'] for r in results)}")


if __name__ == "__main__":
    main()
