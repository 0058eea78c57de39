"""Sending one message to one channel: the log, an SMTP server (stdlib ``smtplib``), a webhook (``httpx``).

Each sender raises :class:`ChannelError` with a message that names no secret (a webhook's URL, a password): the
caller logs and counts it. Timeouts are the channel's ``timeout_seconds``, so a dead receiver costs seconds.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipelines.core.notifications.config import LogChannel, SmtpChannel, WebhookChannel, airflow_connection, secret
from pipelines.core.notifications.message import Notification

log = logging.getLogger("pipelines.notifications")

_LOG_LEVEL = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class ChannelError(Exception):
    """A channel could not deliver; the message names no secret."""


def scrub(text: str, secrets: list[str | None]) -> str:
    """``text`` with every secret value replaced by ``***``."""
    for value in secrets:
        if value:
            text = text.replace(value, "***")
    return text


def send(channel: LogChannel | SmtpChannel | WebhookChannel, notification: Notification, path: Path | str) -> None:
    """Deliver ``notification`` on ``channel``; :class:`ChannelError` when it cannot."""
    if isinstance(channel, LogChannel):
        log.log(_LOG_LEVEL[notification.severity], "notification %s:\n%s", notification.kind, notification.text())
    elif isinstance(channel, SmtpChannel):
        _send_mail(channel, notification, path)
    else:
        _post(channel, notification, path)


def _send_mail(channel: SmtpChannel, notification: Notification, path: Path | str) -> None:
    import smtplib
    import ssl
    from email.message import EmailMessage

    host, port, username, password = _server(channel, path)
    mail = EmailMessage()
    mail["Subject"] = notification.subject
    mail["From"] = channel.sender
    mail["To"] = ", ".join(channel.to)
    mail["X-MLOps-Kind"] = notification.kind
    mail["X-MLOps-Dataset"] = notification.dataset
    mail.set_content(notification.text())
    smtp_class = smtplib.SMTP_SSL if channel.security == "tls" else smtplib.SMTP
    try:
        with smtp_class(host, port, timeout=channel.timeout_seconds) as server:
            if channel.security == "starttls":
                server.starttls(context=ssl.create_default_context())
            if username:
                server.login(username, password or "")
            refused = server.send_message(mail)
    except (OSError, smtplib.SMTPException) as exc:
        message = f"SMTP {host}:{port}: {type(exc).__name__}: {exc}"
        raise ChannelError(scrub(message, [password])) from None
    if refused:
        raise ChannelError(f"SMTP {host}:{port} refused recipient(s) {', '.join(sorted(refused))}")


def _server(channel: SmtpChannel, path: Path | str) -> tuple[str, int, str | None, str | None]:
    """Host, port, login and password: from the file and ``password_env``, or from the Airflow connection."""
    if channel.connection is None:
        return str(channel.host), channel.port, channel.username, secret(channel, channel.password_env, path)
    conn = airflow_connection(channel, path)
    if not conn.host:
        raise ChannelError(f"Airflow connection {channel.connection} has no host")
    return str(conn.host), int(conn.port or channel.port), conn.login or None, conn.password or None


def payload(channel: WebhookChannel, notification: Notification) -> dict[str, Any]:
    """The JSON body a webhook channel posts."""
    if channel.format == "teams":
        facts = [{"title": k, "value": v} for k, v in notification.facts.items()]
        body: list[dict[str, Any]] = [
            {"type": "TextBlock", "text": notification.subject, "weight": "Bolder", "wrap": True},
            {"type": "TextBlock", "text": notification.summary, "wrap": True},
            {"type": "FactSet", "facts": facts},
        ]
        body += [{"type": "TextBlock", "text": f"- {line}", "wrap": True} for line in notification.details]
        card = {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": body,
            "actions": [{"type": "Action.OpenUrl", "title": k, "url": v} for k, v in notification.links.items()],
        }
        return {
            "type": "message",
            "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "content": card}],
        }
    return {"text": notification.text(), **notification.fields()}


def _post(channel: WebhookChannel, notification: Notification, path: Path | str) -> None:
    import httpx

    url = _url(channel, path)
    where = channel.source()
    try:
        response = httpx.post(url, json=payload(channel, notification), timeout=channel.timeout_seconds)
    except httpx.HTTPError as exc:  # the exception's text may hold the URL: scrubbed
        raise ChannelError(scrub(f"webhook ({where}): {type(exc).__name__}: {exc}", [url])) from None
    if response.status_code >= 300:
        raise ChannelError(
            scrub(f"webhook ({where}) answered HTTP {response.status_code}: {response.text[:200]}", [url])
        )


def _url(channel: WebhookChannel, path: Path | str) -> str:
    """The webhook's URL: from ``url_env``, or from the Airflow connection (its password when that is a URL, Slack's
    webhook connections' way; else its host as a URL, the password appended as the last segment when set)."""
    if channel.connection is None:
        url = secret(channel, channel.url_env, path)
        assert url is not None
        return url
    conn = airflow_connection(channel, path)
    password, host = conn.password or "", conn.host or ""
    if password.startswith(("https://", "http://")):
        return str(password)
    if host.startswith(("https://", "http://")):
        return f"{host.rstrip('/')}/{password.lstrip('/')}" if password else str(host)
    raise ChannelError(
        f"Airflow connection {channel.connection}: no webhook URL (expected a full http(s) URL in its password, "
        "or in its host)"
    )
