"""Pipedrive's client: the persons of the company account, one page."""

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from resources.http import BearerAuth, ProviderClient, ProviderResource, shared_limiter


class PipedriveClient:
    def __init__(self, http: ProviderClient):
        self.http = http

    def stats(self) -> dict[str, Any]:
        return self.http.stats.as_metadata()

    def persons(self) -> list[dict]:
        return self.http.request_json("GET", "/v1/persons")["data"]


class PipedriveResource(ProviderResource):
    """Pipedrive's API with the company's API token."""

    base_url: str
    token: str

    @contextlib.contextmanager
    def client(self, log: Callable[[str], None] | None = None) -> Iterator[PipedriveClient]:
        http = self.provider_client("pipedrive", self.base_url, auth=BearerAuth(self.token),
                                    limiter=shared_limiter(f"pipedrive {self.base_url}", 10, 1.0), secrets=[self.token], log=log,
                                    credential_hint="check PIPEDRIVE_TOKEN")
        with http:
            yield PipedriveClient(http)
