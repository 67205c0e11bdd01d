"""A Slack-compatible incoming webhook: the sink for the alert sensors in tests and locally.

Serves `POST /hooks/alerts` (provider `webhook`) and records each JSON body. Like Slack it
answers 200 with the plain body `ok`, and 400 `invalid_payload` for a body that is not a JSON
object or `no_text` for one with neither `text` nor `blocks`. Faults can be injected as for
any provider (`emulator.inject("webhook", "500")`).
"""

from __future__ import annotations

import copy
from typing import Any

from emulator.server import Emulator, Request, Response

PATH = "/hooks/alerts"


class Webhook:
    """The messages posted to the alert webhook, in the order they arrived."""

    def __init__(self, emulator: Emulator):
        self.emulator = emulator
        self._messages: list[dict[str, Any]] = []
        emulator.route("webhook", "POST", PATH, self.post)

    @property
    def url(self) -> str:
        return self.emulator.url + PATH

    def post(self, request: Request) -> Response:
        try:
            body = request.json()
        except ValueError:
            return Response(400, b"invalid_payload")
        if not isinstance(body, dict):
            return Response(400, b"invalid_payload")
        if not (body.get("text") or body.get("blocks")):
            return Response(400, b"no_text")
        self._messages.append(body)
        return Response(200, b"ok")

    def messages(self) -> list[dict[str, Any]]:
        with self.emulator.lock:
            return copy.deepcopy(self._messages)
