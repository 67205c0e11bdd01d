"""Run the provider emulator standalone: `python -m emulator [--port 8700] [--churn 5]`.

With `--churn N` it edits N random contacts every minute (and now and then adds or deletes
one), so the hourly syncs of a local install have something to do.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import threading
from datetime import UTC, datetime

from emulator.server import Emulator
from resources.settings import ConfigError, sync_env


def churn(emulator: Emulator, per_minute: int, stop: threading.Event) -> None:
    rng = random.Random(1)
    while not stop.wait(60):
        with emulator.lock:
            ghl = emulator.ghl
            ids = sorted(ghl.truth())
            for contact_id in rng.sample(ids, min(per_minute, len(ids))):
                ghl.update(contact_id, phone=f"+316{rng.randrange(10**7, 10**8)}")
            roll = rng.random()
            if roll < 0.2:
                ghl.add(at=datetime.now(UTC))
            elif roll < 0.3 and ids:
                ghl.delete(rng.choice(ids))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulator", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1 only)")
    parser.add_argument("--port", type=int, default=8700)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--contacts", type=int, default=300)
    parser.add_argument("--churn", type=int, default=5, help="contacts edited per minute (0: none)")
    parser.add_argument("--no-rate-limits", action="store_true", help="serve without the providers' limits")
    parser.add_argument("--halo-ideal", action="store_true", default=os.environ.get("EMULATOR_HALO_IDEAL", "").lower() == "true",
                        help="HaloPSA as documented (real entry ids, exact date filters) instead of as real tenants behave;"
                             " also EMULATOR_HALO_IDEAL=true")
    args = parser.parse_args(argv)
    try:
        if sync_env() == "production":
            raise ConfigError("the emulator does not run with SYNC_ENV=production")
    except ConfigError as error:
        print(f"emulator: {error}", file=sys.stderr)
        return 2
    emulator = Emulator(seed=args.seed, contacts=args.contacts, rate_limits=not args.no_rate_limits,
                        halo_ideal=args.halo_ideal)
    # A local warehouse keeps the Xero refresh token of the emulator's previous run.
    emulator.xero.accept_unknown_refresh_tokens = True
    try:
        url = emulator.start(args.host, args.port)
    except OSError as error:
        print(f"emulator: cannot listen on {args.host}:{args.port} ({error})", file=sys.stderr)
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.churn:
        threading.Thread(target=churn, args=(emulator, args.churn, stop), daemon=True).start()
    print(f"emulator: serving on {url} ({args.contacts} contacts, seed {args.seed})", flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
