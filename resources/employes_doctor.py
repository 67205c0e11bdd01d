"""The doctor's Employes checks (see resources/doctor.py): the token and company, the list
envelope the snapshot pages through, and the employment answers the history step reads."""

from __future__ import annotations

from datetime import datetime

from resources.doctor import FAIL, PASS, WARN, Checks, Finding, first_answer, run_provider


def check_employes(resources: dict, production: bool, now: datetime) -> list[Finding]:
    resource = resources["employes"]
    company = resource.company_id

    def body(checks: Checks, client) -> None:
        page = first_answer(checks, lambda: client.http.request_json("GET", f"/{company}/employees", params={"page": 1, "per_page": 2}),
                            "company", "listing employees of EMPLOYES_COMPANY_ID",
                            "check EMPLOYES_COMPANY_ID and that the token belongs to that company",
                            "token accepted; the company's employees listed")
        if not (isinstance(page, dict) and isinstance(page.get("data"), list) and isinstance(page.get("pages"), int)):
            shape = sorted(page) if isinstance(page, dict) else type(page).__name__
            raise checks.stop("list_envelope", FAIL, f"the employee list came as {shape}, not {{data, pages}}",
                              "the snapshot cannot page this answer; report it with the provider's API version")
        checks.add("list_envelope", PASS, f"{{data, pages}} as expected ({page['pages']} pages of 2"
                   + (f", total {page['total']}" if "total" in page else "") + ")")
        if not page["data"]:
            # Ends the checks as they always have: the clock and limits are then not reported.
            raise checks.stop("employments", WARN, "the company has no employees to read employments of")
        employee = page["data"][0].get("id")
        client.http.request_json("GET", f"/{company}/employees/{employee}")
        answer = client.http.request_json("GET", f"/{company}/employees/{employee}/employments")
        form = "{data: [...]}" if isinstance(answer, dict) and isinstance(answer.get("data"), list) else \
            "a bare array" if isinstance(answer, list) else None
        if form:
            checks.add("employments", PASS, f"one employee's record and employments read (employments as {form})")
        else:
            checks.add("employments", FAIL, "employments came as neither {data: [...]} nor an array",
                       "the history step cannot read this answer; report it with the provider's API version")

    return run_provider("employes", "EMPLOYES_BASE_URL", resource.base_url, production, resource.client, body)
