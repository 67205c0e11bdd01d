"""Benchmark: a full GoHighLevel contacts reconciliation into PostgreSQL, ours beside a dlt peer.

    .venv/bin/python bench/contacts.py [--sizes 10000,100000,1000000] [--runs 3] [--profile 100000]

Needs the bench extra (`.venv/bin/pip install -e '.[dev,bench]'`) and PostgreSQL (`--postgres`,
default the machine's trust-auth server). Per size, the emulator runs in a process of its own
(`python -m emulator --contacts N --no-rate-limits --churn 0`) and serves one warm-up pass
(which fills its JSON cache and shows what it can serve). Then, per run, two child processes
each load every contact into a fresh database of their own, in alternating order:

- ours: the asset `ghl_contacts_reconciliation` with `dg.materialize` (page size 500, the
  client's rate limit out of the way, an on-disk Dagster instance as in production);
- dlt: the idiomatic peer, a `dlt.resource` paging the same endpoint with
  `write_disposition="merge"`, `primary_key="id"`, into dlt's postgres destination.

Per tool: wall time of the process, CPU seconds (user+sys, from `os.wait4`), peak RSS
(`ru_maxrss`), and contacts/s over the process's wall time. Medians over the runs, and the
ratios ours ÷ dlt taken within each run. Every load is checked (one row per contact) and every
database dropped. `--profile N` also runs ours once under pyinstrument at N contacts and
prints where the time went.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg2

ROOT = Path(__file__).resolve().parent.parent
PAGE_SIZE = 500
GOALS = "goals: CPU/contact ours <= 0.5 x dlt; peak RSS ours <= 0.5 x dlt and < 300 MB at 1M; >= 5,000 contacts/s"


# -- children: one load each, in a process of their own -----------------------------------
def load_ours(emulator_url: str, database_url: str, profile: str | None) -> int:
    import dagster as dg
    import sqlalchemy as sa

    from emulator.ghl import LOCATION_ID, TOKEN
    from resources.ghl import GoHighLevelResource
    from resources.warehouse import WarehouseResource
    from sync_assets.ghl import ghl_contacts_reconciliation

    resources = {
        "gohighlevel": GoHighLevelResource(base_url=emulator_url, token=TOKEN, location_id=LOCATION_ID,
                                           page_size=PAGE_SIZE, requests_per_10s=1_000_000),
        # SQLAlchemy's default PostgreSQL driver is psycopg 3; the project ships psycopg2.
        "warehouse": WarehouseResource(url=database_url.replace("postgresql://", "postgresql+psycopg2://", 1)),
    }
    profiler = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler()
        profiler.start()
    with dg.instance_for_test() as instance:
        assert dg.materialize([ghl_contacts_reconciliation], resources=resources, instance=instance).success
    if profiler:
        profiler.stop()
        Path(profile).write_text(profiler.output_text(unicode=True, show_all=False))
    with resources["warehouse"].engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM ghl_contacts WHERE deleted_at IS NULL")).scalar_one()


def load_dlt(emulator_url: str, database_url: str, pipelines_dir: str) -> int:
    import dlt
    from dlt.common.configuration.specs import ConnectionStringCredentials
    from dlt.sources.helpers import requests

    from emulator.ghl import LOCATION_ID, TOKEN

    @dlt.resource(name="ghl_contacts", write_disposition="merge", primary_key="id")
    def contacts():
        body = {"locationId": LOCATION_ID, "pageLimit": PAGE_SIZE, "sort": [{"field": "dateUpdated", "direction": "asc"}]}
        headers = {"Authorization": f"Bearer {TOKEN}", "Version": "2021-07-28"}
        while True:
            response = requests.post(f"{emulator_url}/contacts/search", json=body, headers=headers)
            response.raise_for_status()
            page = response.json()["contacts"]
            if page:
                yield page
            if len(page) < PAGE_SIZE:
                return
            body["searchAfter"] = page[-1]["searchAfter"]

    credentials = ConnectionStringCredentials(database_url)
    # dlt insists on a password; a trust-auth server ignores whatever is sent.
    credentials.password = credentials.password or "unused"
    pipeline = dlt.pipeline(pipeline_name="ghl_contacts_bench", pipelines_dir=pipelines_dir,
                            destination=dlt.destinations.postgres(credentials=credentials.to_native_representation()),
                            dataset_name="ghl")
    pipeline.run(contacts())
    with pipeline.sql_client() as client:
        return client.execute_sql("SELECT count(*) FROM ghl_contacts")[0][0]


def child(args: argparse.Namespace) -> None:
    if args.child == "ours":
        rows = load_ours(args.emulator, args.database, args.profile_to)
    else:
        with tempfile.TemporaryDirectory() as folder:
            rows = load_dlt(args.emulator, args.database, folder)
    print(json.dumps({"rows": rows}))


# -- the parent: emulator, databases, measurements ------------------------------------------
def start_emulator(contacts: int) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "emulator", "--contacts", str(contacts), "--no-rate-limits", "--churn", "0", "--port", "0"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    line = process.stdout.readline()
    if "serving on" not in line:
        process.kill()
        raise SystemExit(f"emulator did not start: {line!r}")
    return process, line.split("serving on ")[1].split()[0]


def warm_up(url: str) -> float:
    """One plain pass over every contact (the emulator caches each contact's JSON); contacts/s."""
    from emulator.ghl import LOCATION_ID, TOKEN

    body = {"locationId": LOCATION_ID, "pageLimit": PAGE_SIZE}
    began, served = time.perf_counter(), 0
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}", "Version": "2021-07-28"}, timeout=60) as http:
        while True:
            page = http.post("/contacts/search", json=body).raise_for_status().json()["contacts"]
            served += len(page)
            if len(page) < PAGE_SIZE:
                return served / (time.perf_counter() - began)
            body["searchAfter"] = page[-1]["searchAfter"]


class Databases:
    def __init__(self, server_url: str):
        self.server_url = server_url.rstrip("/")

    def _admin(self, statement: str) -> None:
        conn = psycopg2.connect(f"{self.server_url}/postgres")
        conn.autocommit = True
        try:
            conn.cursor().execute(statement)
        finally:
            conn.close()

    def create(self, name: str) -> str:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._admin(f'CREATE DATABASE "{name}"')
        return f"{self.server_url}/{name}"

    def drop(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def measure(tool: str, contacts: int, emulator_url: str, databases: Databases, profile_to: str | None = None) -> dict:
    name = f"bench_contacts_{tool}_{os.getpid()}"
    database_url = databases.create(name)
    env = {**os.environ, "RUNTIME__DLTHUB_TELEMETRY": "false"}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", tool, "--emulator", emulator_url, "--database", database_url]
    if profile_to:
        command += ["--profile-to", profile_to]
    try:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            began = time.perf_counter()
            process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=err, env=env)
            _, status, usage = os.wait4(process.pid, 0)
            wall = time.perf_counter() - began
            process.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0), err.seek(0)
            if process.returncode != 0:
                raise SystemExit(f"{tool} failed ({process.returncode}):\n{err.read().decode()[-3000:]}")
            rows = json.loads(out.read().decode().strip().splitlines()[-1])["rows"]
    finally:
        databases.drop(name)
    if rows != contacts:
        raise SystemExit(f"{tool} loaded {rows} contacts, not {contacts}")
    cpu = usage.ru_utime + usage.ru_stime
    return {"wall_s": wall, "cpu_s": cpu, "cpu_us_per_contact": cpu / contacts * 1e6,
            "peak_rss_mb": usage.ru_maxrss / 1024, "contacts_per_s": contacts / wall}


def bench_size(contacts: int, runs: int, databases: Databases, profile: bool) -> dict:
    began = time.perf_counter()
    emulator, url = start_emulator(contacts)
    try:
        print(f"\n== {contacts:,} contacts: emulator up in {time.perf_counter() - began:.1f} s; "
              f"warm-up pass {warm_up(url):,.0f} contacts/s (emulator plus a bare client)", flush=True)
        results: dict[str, list[dict]] = {"ours": [], "dlt": []}
        ratios: list[dict] = []
        for run in range(runs):
            order = ("ours", "dlt") if run % 2 == 0 else ("dlt", "ours")
            this_run = {tool: measure(tool, contacts, url, databases) for tool in order}
            for tool, figures in this_run.items():
                results[tool].append(figures)
                print(f"run {run + 1} {tool:4}: " + ", ".join(f"{k} {v:,.2f}" for k, v in figures.items()), flush=True)
            ratios.append({
                "cpu": this_run["ours"]["cpu_s"] / this_run["dlt"]["cpu_s"],
                "rss": this_run["ours"]["peak_rss_mb"] / this_run["dlt"]["peak_rss_mb"],
                "speed": this_run["ours"]["contacts_per_s"] / this_run["dlt"]["contacts_per_s"],
            })
        if profile:
            with tempfile.NamedTemporaryFile(suffix=".txt") as report:
                measure("ours", contacts, url, databases, profile_to=report.name)
                print(f"\n-- pyinstrument, ours at {contacts:,} contacts --\n{Path(report.name).read_text()}")
    finally:
        emulator.terminate()
        emulator.wait(timeout=30)
    medians = {tool: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for tool, rs in results.items()}
    return {"contacts": contacts, "runs": runs, "medians": medians,
            "ratios": {k: statistics.median(r[k] for r in ratios) for k in ratios[0]}}


def report(summaries: list[dict]) -> None:
    print(f"\nmedians; ratios are ours ÷ dlt within each run, then the median. {GOALS}")
    print(f"{'contacts':>10} {'runs':>4} {'tool':>4} {'wall s':>8} {'CPU s':>8} {'CPU µs/contact':>15} {'peak RSS MB':>12} {'contacts/s':>11}")
    for s in summaries:
        for tool in ("ours", "dlt"):
            m = s["medians"][tool]
            print(f"{s['contacts']:>10,} {s['runs']:>4} {tool:>4} {m['wall_s']:>8.1f} {m['cpu_s']:>8.1f} "
                  f"{m['cpu_us_per_contact']:>15.1f} {m['peak_rss_mb']:>12.0f} {m['contacts_per_s']:>11,.0f}")
        r = s["ratios"]
        print(f"{'':>10} {'':>4} {'':>4} ratios: CPU/contact {r['cpu']:.2f}, peak RSS {r['rss']:.2f}, speed {r['speed']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated contact counts")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--postgres", default=os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432"),
                        help="server URL without a database name")
    parser.add_argument("--profile", type=int, help="also profile ours once at this size (one of --sizes)")
    parser.add_argument("--child", choices=["ours", "dlt"], help=argparse.SUPPRESS)
    parser.add_argument("--emulator", help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    parser.add_argument("--profile-to", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    databases = Databases(args.postgres)
    summaries = []
    for contacts in (int(size) for size in args.sizes.split(",")):
        summaries.append(bench_size(contacts, args.runs, databases, profile=args.profile == contacts))
        report(summaries)


if __name__ == "__main__":
    main()
