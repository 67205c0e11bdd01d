"""Messages to the Slack-compatible webhook (`ALERT_WEBHOOK_URL`), shared by the alerts
(sensors/alerts.py) and the daily report (sync_assets/report.py): posting, mrkdwn escaping,
links into the UI, secrets blanked, and a failed run's reason as both say it.

Posting never raises: without `ALERT_WEBHOOK_URL` the message goes to the log as a warning; a
webhook that is down or refuses the message is logged as an error with the message's text.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from urllib.parse import quote, urlsplit

import dagster as dg
import httpx

from resources.http import redact
from resources.settings import SETTINGS, setting

WEBHOOK_SETTING = "ALERT_WEBHOOK_URL"
TIMEOUT_S = 5.0
MAX_REASON_CHARS = 1500  # a Slack section holds 3,000 characters


def webserver_url() -> str:
    return (setting("DAGSTER_WEBSERVER_URL") or "").rstrip("/")


def run_url(run_id: str) -> str:
    return f"{webserver_url()}/runs/{run_id}"


def asset_url(key: dg.AssetKey) -> str:
    return f"{webserver_url()}/assets/" + "/".join(quote(part, safe="") for part in key.path)


def redacted(text: str) -> str:
    """`text` with the value of every secret setting in the environment (and any password inside
    a URL-valued one, e.g. WAREHOUSE_URL's) replaced by `***`."""
    secrets = []
    for s in SETTINGS:
        value = os.environ.get(s.name, "").strip()
        if s.secret and value:
            secrets.append(value)
            try:
                secrets.append(urlsplit(value).password or "")
            except ValueError:
                pass
    return redact(text, sorted(secrets, key=len, reverse=True))


class _RedactSecrets(logging.Filter):
    """httpx logs every request's URL at INFO, and the webhook's URL is a secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redacted(record.getMessage()), None
        return True


logging.getLogger("httpx").addFilter(_RedactSecrets())


def escape(text: str) -> str:
    """Slack's mrkdwn treats &, < and > as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def post_alert(log, text: str, link: tuple[str, str] | None = None) -> bool:
    """Post `text` (mrkdwn, already escaped) and, as a button, `link` (label, url) to the webhook.
    True when the webhook took it; otherwise logs the message and why it was not posted."""
    url = os.environ.get(WEBHOOK_SETTING, "").strip()
    if not url:
        log.warning(f"{WEBHOOK_SETTING} is not set, so this alert is only logged:\n{text}")
        return False
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    if link:
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": link[0]}, "url": link[1]}]})
    try:
        with httpx.Client(timeout=TIMEOUT_S, transport=httpx.HTTPTransport(retries=1)) as client:
            response = client.post(url, json={"text": text, "blocks": blocks})
    except httpx.HTTPError as error:  # the message may name the URL, which is a secret
        log.error(f"the alert webhook could not be reached ({type(error).__name__}: {redacted(str(error))}); "
                  f"alert not posted:\n{text}")
        return False
    if response.status_code >= 300:
        log.error(f"the alert webhook answered HTTP {response.status_code} ({redacted(response.text[:200])}); "
                  f"alert not posted:\n{text}")
        return False
    log.info(f"alert posted:\n{text}")
    return True


def _innermost_message(error) -> str:
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def failure_reason(step_failures: Sequence[dg.DagsterEvent], run_failure: dg.DagsterEvent | None) -> str:
    """The step failures' messages (a `dg.Failure`'s description, else the exception's own
    message): no stack trace, secrets blanked, at most MAX_REASON_CHARS."""
    reasons = []
    for event in step_failures:
        data = event.step_failure_data
        described = data.user_failure_data.description if data.user_failure_data else None
        reason = described or (_innermost_message(data.error) if data.error else "failed")
        reasons.append(f"{event.step_key}: {reason}" if len(step_failures) > 1 else reason)
    if not reasons and run_failure is not None:
        error = getattr(run_failure.event_specific_data, "error", None)
        reasons.append(_innermost_message(error) if error else run_failure.message or "the run failed")
    text = redacted("\n".join(reasons).strip() or "the run failed")
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"
