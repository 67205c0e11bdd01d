"""`python -m api [--host 127.0.0.1] [--port $API_PORT | --uds PATH]`: the API service (uvicorn), as
scripts/start, deploy/start and deploy/systemd/workforce-sync-api.service run it; on a Unix socket
for one organisation of several (`workforce-sync orgs serve-all --api`)."""

import argparse

import uvicorn

from api.app import create_app
from resources.settings import setting


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m api", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(setting("API_PORT")))
    parser.add_argument("--uds", help="listen on this Unix socket instead of host and port")
    args = parser.parse_args()
    # No access log of its own: the proxy keeps one, and uvicorn's would show query strings.
    uvicorn.run(create_app(), host=args.host, port=args.port, uds=args.uds, access_log=False, proxy_headers=True,
                forwarded_allow_ips="127.0.0.1" if args.uds is None else "*")  # a socket's peer is the proxy on this host


if __name__ == "__main__":
    main()
