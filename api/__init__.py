"""The HTTP API for host applications (`python -m api`): a service of its own beside the Dagster
webserver and daemon, behind the same proxy. FastAPI writes its OpenAPI document from the code
(`/api/v1/openapi.json`, docs at `/api/v1/docs`).

    app.py       the application: its state (the instance, the definitions, the warehouse),
                 the routers, the request-size limit
    problems.py  every error as application/problem+json (RFC 9457), naming what was wrong
    keys.py      API keys per client application: hashed at rest, scopes read / trigger / events
    status.py    GET /api/v1/status (the JSON of `workforce-sync status --json`)
    runs.py      POST /api/v1/syncs/{sync}/runs, GET /api/v1/runs/{id}: launched through the
                 Dagster webserver's GraphQL client, read from the instance
    events.py    POST /api/v1/events/...: provider webhooks in, stored before the 2xx
"""
