"""Pipedrive's API, emulated: `GET /v1/persons` with the local token."""

from emulator.server import Emulator, Options, Request, Response
from providers.pipedrive import LOCAL_TOKEN


class Pipedrive:
    def __init__(self, emulator: Emulator, *, seed: int):
        self.persons = [{"id": seed * 100 + n, "name": f"Person {n}"} for n in range(1, 6)]
        emulator.route("pipedrive", "GET", r"/v1/persons", self.list)

    def list(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {LOCAL_TOKEN}":
            return Response(401, {"success": False, "error": "unauthorized"})
        return Response(200, {"success": True, "data": self.persons})


def serve(emulator: Emulator, options: Options) -> Pipedrive:
    return Pipedrive(emulator, seed=options.seed)
