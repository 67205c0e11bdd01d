"""Benchmark: the Employes employee snapshot and employment history at Employes' real 5 requests/s.

    .venv/bin/python bench/employes_snapshot.py [--employees 1000] [--runs 3]

Each run: the in-process emulator with `--employees` employees enforcing its 5-per-second limit
(429 over it), a fresh PostgreSQL warehouse (created on 127.0.0.1:5432, dropped after), and one
`dg.materialize` of today's partition of `employes_employee_snapshots` and
`employes_employment_history`. Printed per run: requests the emulator served, 429s, wall time of
the materialize, the rate limit's bound (requests / 5 per second) and the ratio wall / bound
(goal <= 1.10). Medians over `--runs`.
"""

import argparse
import statistics
import time
from datetime import UTC, datetime

import dagster as dg
from common import QUIET, fresh_postgres

from emulator import Emulator
from emulator import employes as employes_emulator
from resources.employes import EmployesResource
from resources.warehouse import WarehouseResource
from sync_assets.employes import assets as build_employes_assets
from sync_assets.runs import today

RATE = employes_emulator.RATE_LIMIT[0] / employes_emulator.RATE_LIMIT[1]


def one_run(employees: int, seed: int) -> dict:
    emulator = Emulator(seed=seed, anchor=datetime.now(UTC), employees=employees, contacts=10)
    emulator.start()
    try:
        with fresh_postgres() as url, dg.instance_for_test() as instance:
            resources = {"employes": EmployesResource(base_url=emulator.url, token=employes_emulator.TOKEN,
                                                      company_id=employes_emulator.COMPANY_ID),
                         "warehouse": WarehouseResource(url=url)}
            began = time.monotonic()
            result = dg.materialize(build_employes_assets(), selection=["employes_employee_snapshots", "employes_employment_history"],
                                    resources=resources, instance=instance, partition_key=today().isoformat(), run_config=QUIET)
            wall = time.monotonic() - began
            assert result.success
        served = emulator.requests("employes")
    finally:
        emulator.stop()
    requests = len(served)
    bound = requests / RATE
    return {"requests": requests, "throttled_429": sum(s.status == 429 for s in served), "wall_s": wall,
            "requests_span_s": served[-1].at - served[0].at, "bound_s": bound, "ratio": wall / bound}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--employees", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results = []
    for run in range(1, args.runs + 1):
        results.append(one_run(args.employees, seed=run))
        print(f"run {run}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in results[-1].items()), flush=True)
    median = {k: statistics.median(r[k] for r in results) for k in results[0]}
    print(f"median over {args.runs} runs ({args.employees} employees, {RATE:g} requests/s): {median['requests']:g} requests, "
          f"429s {max(r['throttled_429'] for r in results)}, wall {median['wall_s']:.1f} s, bound {median['bound_s']:.1f} s, "
          f"wall/bound {median['ratio']:.3f} (goal <= 1.10)")


if __name__ == "__main__":
    main()
