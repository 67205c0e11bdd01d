"""Property-based: schemathesis generates requests from the API's own OpenAPI document and sends
them to a live server (`python -m api`, a real process over HTTP) with a key of every scope; no
answer may be a server error or stray from the document. The launch endpoint's webserver is a port
nobody listens on, so a generated request that reaches a launch is answered 503 "launch failed",
which the document declares; every other 5xx fails."""

import os
import subprocess
import sys

import httpx
import pytest
import schemathesis
from helpers import free_port, stop_group, wait_until
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from resources.settings import PROJECT_ROOT

pytestmark = pytest.mark.slow  # about a minute: a few hundred generated requests


@pytest.fixture(scope="module")
def live_api(tmp_path_factory):
    home = tmp_path_factory.mktemp("api_home")
    env = {**os.environ, "DAGSTER_HOME": str(home), "WAREHOUSE_URL": f"sqlite:///{home}/warehouse.db",
           "API_LAUNCH_URL": f"http://127.0.0.1:{free_port()}", "SYNC_ENV": "local"}
    key = subprocess.run([sys.executable, "-m", "cli", "apikey", "create", "schemathesis", "--scope=read", "--scope=trigger",
                          "--scope=events"], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, check=True).stdout.strip()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "api", "--port", str(port)], env=env, cwd=PROJECT_ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def up():
        try:
            return httpx.get(f"{url}/api/v1/openapi.json", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until("the API", up, 120, every_s=0.2)
        yield url, key
    finally:
        stop_group(server)


def test_every_generated_request_gets_an_answer_the_document_describes(live_api):
    url, key = live_api
    headers = {"Authorization": f"Bearer {key}"}
    operations = [result.ok() for result in schemathesis.openapi.from_url(f"{url}/api/v1/openapi.json").get_all_operations()]
    assert len(operations) >= 6

    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def answered_as_documented(case):
            response = case.call(base_url=url, headers=headers)
            launch_refused = response.status_code == 503 and response.json().get("title") == "launch failed"
            case.validate_response(response, excluded_checks=[not_a_server_error] if launch_refused else [])

        answered_as_documented()
