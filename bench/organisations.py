"""Benchmark: the cost of an installation as its organisations grow, under the real daemon.

    PYTHONPATH=. .venv/bin/python bench/organisations.py --orgs 10 [--window 600] [--json out.json]

One emulator per organisation in this process (anchored now; small data: 40 contacts, 3 agents,
5 employees, so the first syncs are quick; each organisation a different seed), an
ORGANISATIONS_FILE declaring `o01`..`oNN` (each its EMULATOR_URL and XERO_PUSH_ENABLED=true as
settings, its own SQLite WAREHOUSE_URL and XERO_TOKEN_KEY as secrets), the instance on a fresh
PostgreSQL database `bench_orgs_<n>_<hex>` (dagster-postgres storage plus the settings
`ensure_dagster_home` writes; `--sqlite` for the instance's default SQLite storage), one
`workforce-sync orgs serve NAME` code server per organisation on its Unix socket, and
`dagster-daemon run -w` over the generated workspace, as tests/test_organisations.py runs them.
Every other setting is its default: the default schedules and sensors, the run queue's defaults.

Measured:
- the first syncs: from the daemon's start until every organisation's assets are materialized
  and no run is left queued or running (each organisation's own time, first and last);
- then over a steady window of `--window` seconds:
  - RSS (/proc/<pid>/status VmRSS, sampled every second) of each process kind: the daemon, each
    code server (the `dagster code-server start` proxy and its `dagster api grpc` child
    together: median and max over the organisations), the run workers (max, and how many ran);
  - CPU seconds (utime + stime of /proc/<pid>/stat, plus cutime + cstime, which holds the
    children that ended and were waited for; this process is the child subreaper of the tree, so
    an orphan's time lands in its cutime) per organisation per day, extrapolated from the window;
  - the daemon's ticks (instance.get_ticks per instigator state: end_timestamp - timestamp),
    median / p95 per sensor, and the median interval between a sensor's ticks against its
    minimum_interval_seconds;
  - the run queue's wait: create -> start of the window's runs, median / p95;
  - approval -> Xero: `--approve-at` seconds into the window one unapproved agent-day per
    organisation is approved in its emulator, all in the same second, each timed until that
    organisation's Xero holds the day's work entries: p50 / p95 / max, first and last organisation;
  - the machine's load average (os.getloadavg) at the start, every 30 s, and at the end;
- at the end, with the daemon and code servers stopped: every organisation's lights
  (`workforce-sync --org NAME status --json`): how many organisations are all green.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import secrets as token
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from approval_latency import candidates, halo_entries, in_xero
from cryptography.fernet import Fernet

from emulator import Emulator

PROJECT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TICK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
ADMIN = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
# The assets every organisation's first sync materializes (the four providers), as in
# tests/test_organisations.py; `xero_time_entries` is the push's.
ASSETS = ("ghl_contacts", "ghl_contacts_reconciliation", "halo_agents", "agent_mappings", "halo_timesheets",
          "employes_employee_snapshots", "employes_employment_history", "employes_employee_changes", "xero_time_entries")


def quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))] if values else float("nan")


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- processes ----------------------------------------------------------------------------------
def proc_table() -> dict[int, dict]:
    """Every process: ppid, cmdline, own and children's CPU ticks, RSS kB."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        table[int(entry)] = {"ppid": int(fields[1]), "cmd": cmd, "own": int(fields[11]) + int(fields[12]),
                             "children": int(fields[13]) + int(fields[14]), "rss_kb": int(fields[21]) * PAGE_KB}
    return table


def descendants(table: dict[int, dict], root: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for pid, p in table.items():
        kids.setdefault(p["ppid"], []).append(pid)
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        for child in kids.get(pid, []):
            out.append(child)
            stack.append(child)
    return out


def kind(cmd: str, parent: str = "") -> str:
    """The process kind by its command line (and its parent's: a code server's `api grpc` starts
    each run as a multiprocessing child, `spawn_main`, and keeps a `resource_tracker`)."""
    if "resource_tracker" in cmd:
        return "code_server"
    if "spawn_main" in cmd and "api grpc" in parent:
        return "run"
    if "dagster-daemon" in cmd:
        return "daemon"
    if "execute_run" in cmd or "execute_step" in cmd:
        return "run"
    if "code-server" in cmd or "api grpc" in cmd or "orgs serve" in cmd:
        return "code_server"
    return "other"


def cpu_by_kind(table: dict[int, dict], me: int) -> dict[str, float]:
    """CPU seconds so far of this process's descendants by kind. A process's own time goes to its
    kind; its cutime (children that ended) to its children's kind: a code server's grpc child
    launches the runs, so what it reaped is runs; this process's is orphans and helpers."""
    out = {"daemon": 0.0, "code_server": 0.0, "run": 0.0, "other": 0.0}
    for pid in descendants(table, me):
        p = table[pid]
        k = kind(p["cmd"], table.get(p["ppid"], {}).get("cmd", ""))
        out[k] += p["own"] / TICK
        out["run" if "api grpc" in p["cmd"] else k] += p["children"] / TICK
    out["other"] += table[me]["children"] / TICK
    return out


class Sampler(threading.Thread):
    """Every second: the RSS of each process of the tree by kind; every 30 s the load average."""

    def __init__(self, me: int, servers: dict[str, int]):
        super().__init__(daemon=True)
        self.me, self.servers, self.stop_event = me, servers, threading.Event()
        self.daemon_rss: list[int] = []
        self.server_rss: dict[str, list[int]] = {name: [] for name in servers}
        self.run_rss: dict[int, int] = {}
        self.loads: list[list[float]] = []

    @staticmethod
    def cmds(table: dict, pid: int) -> tuple[str, str]:
        return table[pid]["cmd"], table.get(table[pid]["ppid"], {}).get("cmd", "")

    def run(self) -> None:
        last_load = 0.0
        while not self.stop_event.is_set():
            table = proc_table()
            for name, pid in self.servers.items():
                if pid in table:
                    tree = [pid, *descendants(table, pid)]
                    self.server_rss[name].append(sum(table[p]["rss_kb"] for p in tree if kind(*self.cmds(table, p)) == "code_server"))
            for pid in descendants(table, self.me):
                p = table[pid]
                if kind(*self.cmds(table, pid)) == "daemon" and p["ppid"] == self.me:
                    self.daemon_rss.append(sum(table[q]["rss_kb"] for q in [pid, *descendants(table, pid)]))
                elif kind(*self.cmds(table, pid)) == "run":
                    self.run_rss[pid] = max(self.run_rss.get(pid, 0), p["rss_kb"])
            if time.monotonic() - last_load >= 30:
                self.loads.append(load())
                last_load = time.monotonic()
            self.stop_event.wait(1.0)


def set_subreaper() -> None:
    """Orphans of the tree become this process's children (so their CPU reaches a cutime)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def reap_orphans(known: set[int]) -> None:
    """Wait for ended children that are not ours by Popen (orphans handed to us)."""
    for pid, p in proc_table().items():
        if p["ppid"] == os.getpid() and pid not in known:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def start(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=PROJECT, env=env, stdout=log.open("a"), stderr=subprocess.STDOUT, start_new_session=True)


def stop_all(processes: list[subprocess.Popen]) -> None:
    """SIGTERM to every group, SIGKILL after 20 s to what is left (code servers ignore SIGTERM);
    then any orphan of the tree."""
    for p in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for p in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
    for p in processes:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    table = proc_table()
    for pid in descendants(table, os.getpid()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    reap_orphans(set())


# -- the installation ---------------------------------------------------------------------------
def organisations_yaml(names: list[str], emulators: dict[str, Emulator]) -> str:
    lines = ["organisations:"]
    for name in names:
        up = name.upper()
        lines += [f"  - name: {name}",
                  f"    settings: {{EMULATOR_URL: \"{emulators[name].url}\", XERO_PUSH_ENABLED: \"true\"}}",
                  f"    secrets: {{WAREHOUSE_URL: {up}_WAREHOUSE_URL, XERO_TOKEN_KEY: {up}_XERO_TOKEN_KEY}}"]
    return "\n".join(lines) + "\n"


def create_database(name: str) -> None:
    import psycopg2

    conn = psycopg2.connect(dbname="postgres", **ADMIN)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()


def drop_database(name: str) -> None:
    import psycopg2

    conn = psycopg2.connect(dbname="postgres", **ADMIN)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


def daemon_threads(config: str, workers: int) -> str:
    """The instance's dagster.yaml with its sensors and schedules in `workers` threads instead of
    its default (resources/settings.py DAEMON_THREADS); 0: on the daemon's one thread."""
    from resources.settings import DAEMON_THREADS

    return config.replace(DAEMON_THREADS, DAEMON_THREADS.replace("num_workers: 4", f"num_workers: {workers}") if workers else "")


def postgres_storage(db: str) -> str:
    # psycopg2 named in the URL: dagster-postgres' default driver is psycopg 3, not installed here.
    return f"storage:\n  postgres:\n    postgres_url: postgresql+psycopg2://postgres@127.0.0.1:5432/{db}\n"


# -- the measures -------------------------------------------------------------------------------
def first_syncs(instance, names: list[str], t0: float, timeout: float, log: Path) -> dict[str, float]:
    """Wait until each organisation's assets are materialized, then until no run is queued or
    running; each organisation's seconds from t0 (its last asset's materialization)."""
    import dagster as dg

    done: dict[str, float] = {}
    last_print = 0.0
    while len(done) < len(names):
        for name in names:
            if name not in done and all(instance.get_latest_materialization_event(dg.AssetKey([name, a])) for a in ASSETS):
                done[name] = time.time() - t0
        if time.time() - last_print > 30:
            runs = instance.get_runs_count(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING,
                                                                             dg.DagsterRunStatus.STARTED]))
            print(f"  {time.time() - t0:5.0f} s: {len(done)}/{len(names)} organisations synced, {runs} runs queued or running, "
                  f"load {load()}", flush=True)
            last_print = time.time()
        if time.time() - t0 > timeout:
            missing = {n: [a for a in ASSETS if not instance.get_latest_materialization_event(dg.AssetKey([n, a]))]
                       for n in names if n not in done}
            print(f"first syncs not done within {timeout:.0f} s: {dict(list(missing.items())[:5])}; log tail:\n"
                  f"{log.read_text()[-3000:]}", flush=True)
            return done  # the window then starts with the first syncs still going: reported as such
        time.sleep(3)
    active = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.NOT_STARTED]
    while instance.get_runs_count(filters=dg.RunsFilter(statuses=active)) and time.time() - t0 < timeout:
        time.sleep(3)
    return done


def approvals(emulators: dict[str, Emulator], timeout: float) -> dict[str, float | None]:
    """One unapproved agent-day per organisation, approved in the same second; seconds until
    each organisation's Xero holds its day's work entries (None: not within timeout)."""
    from sync_assets.xero import open_period

    first, last = open_period()
    picked = {}
    for name, emulator in emulators.items():
        found = candidates(emulator, first, last, 1)
        if found:
            picked[name] = found[0]
    t0 = time.monotonic()
    for name, (agent, day) in picked.items():
        emulators[name].halo.approve(agent, day)
    latency: dict[str, float | None] = {name: None for name in emulators}
    pending = dict(picked)
    while pending and time.monotonic() - t0 < timeout:
        for name, (agent, day) in list(pending.items()):
            if in_xero(emulators[name], agent, day) >= halo_entries(emulators[name], agent, day):
                latency[name] = time.monotonic() - t0
                del pending[name]
        time.sleep(0.25)
    print(f"  approvals: {sum(v is not None for v in latency.values())}/{len(picked)} in Xero "
          f"({len(emulators) - len(picked)} organisations had no unapproved day)", flush=True)
    return latency


def tick_figures(instance, since: float, until: float, intervals: dict[str, int]) -> dict[str, dict]:
    """Per sensor (and schedule) name over all organisations: ticks, their durations, the
    median interval between one organisation's consecutive ticks."""
    from dagster._core.scheduler.instigation import InstigatorType

    by_name: dict[str, dict] = {}
    for state in instance.all_instigator_state():
        ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, after=since, before=until, limit=100000)
        ticks = sorted((t for t in ticks if t.tick_data.end_timestamp), key=lambda t: t.timestamp)
        entry = by_name.setdefault(state.instigator_name, {"type": "sensor" if state.instigator_type == InstigatorType.SENSOR
                                                           else "schedule", "durations": [], "gaps": [], "ticks": 0, "orgs": 0})
        entry["orgs"] += 1
        entry["ticks"] += len(ticks)
        entry["durations"] += [t.tick_data.end_timestamp - t.timestamp for t in ticks]
        entry["gaps"] += [b.timestamp - a.timestamp for a, b in zip(ticks, ticks[1:], strict=False)]
    out = {}
    for name, e in sorted(by_name.items()):
        if not e["ticks"]:
            continue
        out[name] = {"type": e["type"], "organisations": e["orgs"], "ticks": e["ticks"],
                     "ticks_per_org_per_min": round(e["ticks"] / e["orgs"] / ((until - since) / 60), 2),
                     "duration_p50_s": round(statistics.median(e["durations"]), 3), "duration_p95_s": round(quantile(e["durations"], 0.95), 3),
                     "interval_p50_s": round(statistics.median(e["gaps"]), 1) if e["gaps"] else None,
                     "min_interval_s": intervals.get(name)}
    return out


def queue_waits(instance, since: float) -> list[float]:
    import dagster as dg

    records = instance.get_run_records(filters=dg.RunsFilter(created_after=datetime.fromtimestamp(since, UTC)), limit=100000)
    return [r.start_time - r.create_timestamp.timestamp() for r in records if r.start_time]


def lights(names: list[str], env: dict) -> dict[str, dict]:
    def one(name: str) -> tuple[str, dict]:
        done = subprocess.run([str(BIN / "workforce-sync"), "--org", name, "status", "--json"], cwd=PROJECT, env=env,
                              capture_output=True, text=True, timeout=600)
        try:
            return name, {row["asset"]: row["light"] for row in json.loads(done.stdout)}
        except json.JSONDecodeError:
            return name, {"(status failed)": done.stderr[-300:]}

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(one, names))


def mb(kb: float) -> float:
    return round(kb / 1024, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orgs", type=int, default=1)
    parser.add_argument("--window", type=float, default=600.0, help="seconds of the steady window")
    parser.add_argument("--approve-at", type=float, default=None, help="seconds into the window to approve (default: a third in)")
    parser.add_argument("--first-sync-timeout", type=float, default=1800.0)
    parser.add_argument("--sqlite", action="store_true", help="the instance on SQLite (its default) instead of PostgreSQL")
    parser.add_argument("--json", type=Path, help="write the figures as JSON here")
    parser.add_argument("--no-lights", action="store_true", help="skip the lights at the end (a status command per organisation)")
    parser.add_argument("--keep", action="store_true", help="keep the instance database (bench_orgs_*) for a look")
    parser.add_argument("--daemon-threads", type=int, default=None,
                        help="evaluate sensors and schedules in this many threads instead of the instance's default 4 (0: the daemon's one thread)")
    args = parser.parse_args()
    n = args.orgs
    figures: dict = {"organisations": n, "window_s": args.window, "instance": "sqlite" if args.sqlite else "postgresql",
                     "started_utc": datetime.now(UTC).isoformat(timespec="seconds"), "load_start": load()}
    print(f"{n} organisations, load {figures['load_start']}", flush=True)
    set_subreaper()
    tmp = Path(tempfile.mkdtemp(prefix=f"orgs-bench-{n}-"))
    home = tmp / "dagster_home"
    home.mkdir()
    names = [f"o{i:02d}" for i in range(1, n + 1)]
    rss_before = int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0])
    emulators = {name: Emulator(seed=100 + i, anchor=datetime.now(UTC), contacts=40, agents=3, employees=5) for i, name in enumerate(names)}
    for emulator in emulators.values():
        emulator.start()
    rss_after = int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0])
    figures["bench_process_rss_mb"] = {"before_emulators": mb(rss_before), "with_emulators": mb(rss_after)}
    print(f"emulators up: this process {mb(rss_before)} -> {mb(rss_after)} MB", flush=True)
    (tmp / "organisations.yaml").write_text(organisations_yaml(names, emulators))
    env = {k: v for k, v in os.environ.items() if k not in ("XERO_PUSH_ENABLED", "WAREHOUSE_URL", "EMULATOR_URL", "XERO_TOKEN_KEY")}
    env.update({"DAGSTER_HOME": str(home), "SYNC_ENV": "local", "ORGANISATIONS_FILE": str(tmp / "organisations.yaml"),
                "PYTHONPATH": str(PROJECT)})
    for name in names:
        env[f"{name.upper()}_WAREHOUSE_URL"] = f"sqlite:///{tmp / name}.db"
        env[f"{name.upper()}_XERO_TOKEN_KEY"] = Fernet.generate_key().decode()
    db = None if args.sqlite else f"bench_orgs_{n}_{token.token_hex(3)}"
    os.environ.update(env)
    from providers import READS
    from resources import organisations
    from resources.settings import ensure_dagster_home

    ensure_dagster_home()  # its settings (pools, run queue, retention), then the storage above them
    if db:
        create_database(db)
        figures["database"] = db
        (home / "dagster.yaml").write_text(postgres_storage(db) + (home / "dagster.yaml").read_text())
    if args.daemon_threads is not None:
        (home / "dagster.yaml").write_text(daemon_threads((home / "dagster.yaml").read_text(), args.daemon_threads))
    figures["dagster_yaml"] = (home / "dagster.yaml").read_text()
    workspace = home / "workspace.yaml"
    workspace.write_text(organisations.workspace(organisations.load(READS), home))
    # The sensors' minimum intervals, from one organisation's definitions.
    org_env = organisations.environment(organisations.find(names[0], READS), env, organisations.load(READS))
    saved = dict(os.environ)
    os.environ.update(org_env)
    from definitions import defs as load_definitions

    repo = load_definitions().get_repository_def()
    intervals = {s.name: s.minimum_interval_seconds for s in repo.sensor_defs}
    os.environ.clear()
    os.environ.update(saved)

    log = tmp / "processes.log"
    servers: dict[str, subprocess.Popen] = {}
    daemon = None
    import dagster as dg

    try:
        t_servers = time.time()
        for name in names:
            servers[name] = start([str(BIN / "workforce-sync"), "orgs", "serve", name], env, log)
        while not all(organisations.socket_path(name, home).exists() for name in names):
            dead = [name for name, p in servers.items() if p.poll() is not None]
            assert not dead, f"code servers exited: {dead}; {log.read_text()[-3000:]}"
            assert time.time() - t_servers < 900, "code servers not up within 15 minutes"
            available = int(Path("/proc/meminfo").read_text().split("MemAvailable:")[1].split()[0])
            assert available > 2 * 1024 * 1024, f"the machine is down to {mb(available)} MB available: stopping"
            time.sleep(1)
        figures["code_servers_up_s"] = round(time.time() - t_servers, 1)
        table = proc_table()
        startup_rss = [sum(table[p]["rss_kb"] for p in [s.pid, *descendants(table, s.pid)] if p in table) for s in servers.values()]
        figures["code_server_rss_at_start_mb"] = {"median": mb(statistics.median(startup_rss)), "max": mb(max(startup_rss)),
                                                   "sum": mb(sum(startup_rss))}
        print(f"{n} code servers up in {figures['code_servers_up_s']} s; RSS each {figures['code_server_rss_at_start_mb']}, "
              f"load {load()}", flush=True)
        t_daemon = time.time()
        daemon = start([str(BIN / "dagster-daemon"), "run", "-w", str(workspace)], env, log)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            done = first_syncs(instance, names, t_daemon, args.first_sync_timeout, log)
            w = queue_waits(instance, t_daemon - 1)
            figures["first_sync"] = {"organisations_done": len(done), "first_s": round(min(done.values()), 1) if done else None,
                                     "last_s": round(max(done.values()), 1) if done else None,
                                     "all_runs_finished_s": round(time.time() - t_daemon, 1),
                                     "runs": instance.get_runs_count(),
                                     "queue_wait_p50_s": round(statistics.median(w), 1) if w else None,
                                     "queue_wait_p95_s": round(quantile(w, 0.95), 1) if w else None,
                                     "load": load(),
                                     "runs_unfinished_at_window_start": instance.get_runs_count(filters=dg.RunsFilter(statuses=[
                                         dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                                         dg.DagsterRunStatus.STARTED]))}
            print(f"first syncs: {figures['first_sync']}", flush=True)

            # The steady window.
            reap_orphans({p.pid for p in [*servers.values(), daemon]})
            me = os.getpid()
            sampler = Sampler(me, {name: p.pid for name, p in servers.items()})
            w0, cpu0, self0 = time.time(), cpu_by_kind(proc_table(), me), os.times()
            load0 = load()
            sampler.start()
            approve_at = args.approve_at if args.approve_at is not None else args.window / 3
            latency: dict = {}
            while time.time() - w0 < args.window:
                if not latency and time.time() - w0 >= approve_at:
                    latency = approvals(emulators, timeout=max(120.0, args.window - (time.time() - w0)))
                reap_orphans({p.pid for p in [*servers.values(), daemon]})
                time.sleep(1)
            w1, cpu1, self1 = time.time(), cpu_by_kind(proc_table(), me), os.times()
            sampler.stop_event.set()
            sampler.join()
            window = w1 - w0
            cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
            total = sum(cpu.values())
            figures["window"] = {"seconds": round(window, 1), "load_start": load0, "load_end": load(), "load_samples": sampler.loads}
            server_medians = [statistics.median(v) for v in sampler.server_rss.values() if v]
            server_maxes = [max(v) for v in sampler.server_rss.values() if v]
            figures["rss_mb"] = {"daemon_median": mb(statistics.median(sampler.daemon_rss)) if sampler.daemon_rss else None,
                                 "daemon_max": mb(max(sampler.daemon_rss)) if sampler.daemon_rss else None,
                                 "code_server_median": mb(statistics.median(server_medians)), "code_server_max": mb(max(server_maxes)),
                                 "code_servers_sum": mb(sum(server_medians)),
                                 "run_worker_max": mb(max(sampler.run_rss.values())) if sampler.run_rss else None,
                                 "run_worker_median": mb(statistics.median(sampler.run_rss.values())) if sampler.run_rss else None,
                                 "run_workers_seen": len(sampler.run_rss)}
            figures["cpu_s_window"] = {k: round(v, 1) for k, v in cpu.items()}
            figures["cpu_s_per_org_per_day"] = {k: round(v / n / window * 86400) for k, v in {**cpu, "total": total}.items()}
            figures["cpu_cores_busy"] = round(total / window, 2)
            figures["emulators_cpu_s_window"] = round((self1.user + self1.system) - (self0.user + self0.system), 1)
            figures["ticks"] = tick_figures(instance, w0, w1, intervals)
            waits = queue_waits(instance, w0)
            runs_in_window = instance.get_run_records(filters=dg.RunsFilter(created_after=datetime.fromtimestamp(w0, UTC)), limit=100000)
            figures["runs_window"] = {"runs": len(runs_in_window),
                                      "by_status": {s: sum(r.dagster_run.status.value == s for r in runs_in_window)
                                                    for s in {r.dagster_run.status.value for r in runs_in_window}},
                                      "queue_wait_p50_s": round(statistics.median(waits), 2) if waits else None,
                                      "queue_wait_p95_s": round(quantile(waits, 0.95), 2) if waits else None,
                                      "queue_wait_max_s": round(max(waits), 2) if waits else None}
            values = [v for v in latency.values() if v is not None]
            figures["approvals"] = {"approved": len(latency), "in_xero": len(values),
                                    "p50_s": round(statistics.median(values), 1) if values else None,
                                    "p95_s": round(quantile(values, 0.95), 1) if values else None,
                                    "max_s": round(max(values), 1) if values else None,
                                    "first_org_s": round(min(values), 1) if values else None,
                                    "last_org_s": round(max(values), 1) if values else None,
                                    "per_org": {k: (round(v, 1) if v is not None else None) for k, v in latency.items()}}
            # The first and the last organisation of the file, too (is the 50th as prompt as the first?).
            figures["approvals"]["o_first_in_file_s"] = figures["approvals"]["per_org"].get(names[0])
            figures["approvals"]["o_last_in_file_s"] = figures["approvals"]["per_org"].get(names[-1])
        stop_all([daemon, *servers.values()])
        daemon, servers = None, {}
        light = {} if args.no_lights else lights(names, env)
        green = [name for name, ls in light.items() if set(ls.values()) <= {"green", None} and "green" in ls.values()]
        figures["lights"] = {"all_green": len(green) if light else None, "organisations": n,
                             "not_green": {name: {a: v for a, v in ls.items() if v not in ("green", None)} for name, ls in light.items()
                                           if name not in green}}
        figures["load_end"] = load()
        figures["ended_utc"] = datetime.now(UTC).isoformat(timespec="seconds")
    finally:
        stop_all([p for p in [daemon, *servers.values()] if p is not None])
        for emulator in emulators.values():
            emulator.stop()
        if db and not args.keep:
            drop_database(db)
        print(f"(logs and warehouses: {tmp})", flush=True)
    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))


def report(f: dict) -> None:
    rss, cpu, fs, ap, rw = f["rss_mb"], f["cpu_s_per_org_per_day"], f["first_sync"], f["approvals"], f["runs_window"]
    rows = [
        ("organisations", f["organisations"]), ("instance storage", f["instance"]),
        ("load average start / window start / window end / end", f"{f['load_start']} / {f['window']['load_start']} / {f['window']['load_end']} / {f['load_end']}"),
        ("code servers up", f"{f['code_servers_up_s']} s"),
        ("first syncs done (first org / last org / all runs finished)", f"{fs['first_s']} / {fs['last_s']} / {fs['all_runs_finished_s']} s ({fs['organisations_done']} orgs done, {fs['runs']} runs, "
                                                                         f"{fs['runs_unfinished_at_window_start']} unfinished)"),
        ("window", f"{f['window']['seconds']} s"),
        ("RSS daemon median / max", f"{rss['daemon_median']} / {rss['daemon_max']} MB"),
        ("RSS code server median / max (sum)", f"{rss['code_server_median']} / {rss['code_server_max']} MB ({rss['code_servers_sum']} MB)"),
        ("RSS run worker median / max (seen)", f"{rss['run_worker_median']} / {rss['run_worker_max']} MB ({rss['run_workers_seen']})"),
        ("CPU s per org per day: total (daemon / code servers / runs / other)", f"{cpu['total']} ({cpu['daemon']} / {cpu['code_server']} / {cpu['run']} / {cpu['other']})"),
        ("cores busy in the window (of 2)", f["cpu_cores_busy"]),
        ("runs in the window; queue wait p50 / p95 / max", f"{rw['runs']} {rw['by_status']}; {rw['queue_wait_p50_s']} / {rw['queue_wait_p95_s']} / {rw['queue_wait_max_s']} s"),
        ("approval -> Xero p50 / p95 / max", f"{ap['p50_s']} / {ap['p95_s']} / {ap['max_s']} s ({ap['in_xero']}/{ap['approved']})"),
        ("approval: first / last org in file", f"{ap['o_first_in_file_s']} / {ap['o_last_in_file_s']} s"),
        ("all lights green", f"{f['lights']['all_green']} of {f['lights']['organisations']}"),
    ]
    width = max(len(r[0]) for r in rows)
    print()
    for label, value in rows:
        print(f"{label.ljust(width)}  {value}")
    print("\nticks in the window (all organisations): name, type, ticks/org/min, duration p50 / p95, interval p50 vs minimum")
    for name, t in f["ticks"].items():
        print(f"  {name:34s} {t['type']:8s} {t['ticks_per_org_per_min']:6} {t['duration_p50_s']:7.3f} / {t['duration_p95_s']:7.3f} s"
              f"  {t['interval_p50_s']} s vs {t['min_interval_s']} s")
    if f["lights"]["not_green"]:
        print("not green:", json.dumps(f["lights"]["not_green"])[:2000])
    sys.stdout.flush()


if __name__ == "__main__":
    main()
