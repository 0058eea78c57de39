"""Where notifications go: ``pipelines/conf/notifications.yaml`` (or the file ``MLOPS_NOTIFICATIONS_FILE`` names).

A list of channels, each with the kinds it receives (all by default): ``log`` (the process's log), ``smtp`` (a
mail server; optional STARTTLS or TLS and login) and ``webhook`` (an HTTP POST of JSON: Slack's, Teams' or any
receiver's). No secret is ever written in the file: a webhook's URL (Slack's and Teams' embed their token) and an
SMTP password are read from the environment variable the file names (``url_env``, ``password_env``), or from the
Airflow connection it names (``connection``: Airflow's connections and secrets backends, resolved where the message
is sent).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipelines.core.errors import ConfigError
from pipelines.core.notifications.message import Kind
from pipelines.core.yaml_files import read_yaml, validation_problems

ENV_NAME = r"^[A-Z_][A-Z0-9_]{0,99}$"
CONN_ID = r"^[A-Za-z0-9_.-]{1,200}$"


class _Channel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,39}$", description="Names the channel in logs and counts.")
    kinds: tuple[Kind, ...] | None = Field(None, description="The kinds it receives; none listed: every kind.")

    def wants(self, kind: str) -> bool:
        return self.kinds is None or kind in self.kinds

    def env_names(self) -> list[str]:
        """The environment variables this channel reads its secrets from."""
        return []

    def connection_id(self) -> str | None:
        """The Airflow connection this channel reads its address and secret from, if any."""
        return getattr(self, "connection", None)


class LogChannel(_Channel):
    """The process's own log (the Airflow task log, the command's stderr)."""

    type: Literal["log"]


class SmtpChannel(_Channel):
    """A mail through an SMTP server."""

    type: Literal["smtp"]
    host: str | None = Field(None, min_length=1, description="The server (or take it from `connection`).")
    port: int = Field(25, ge=1, le=65535)
    security: Literal["none", "starttls", "tls"] = Field("none", description="starttls: upgrade; tls: SMTPS.")
    username: str | None = None
    password_env: str | None = Field(None, pattern=ENV_NAME, description="Variable holding the SMTP password.")
    connection: str | None = Field(
        None, pattern=CONN_ID, description="An Airflow connection (type smtp) giving host, port, login and password."
    )
    sender: str = Field(min_length=3, description="The From address.")
    to: tuple[str, ...] = Field(min_length=1, description="The recipients.")
    timeout_seconds: float = Field(5.0, gt=0, le=60)

    @model_validator(mode="after")
    def _login(self) -> SmtpChannel:
        if self.password_env and not self.username:
            raise ValueError("password_env needs a username")
        if (self.host is None) == (self.connection is None):
            raise ValueError("give the server either as host (and port, username, password_env) or as connection")
        if self.connection and (self.username or self.password_env):
            raise ValueError("with connection, the login and password come from the connection")
        return self

    def env_names(self) -> list[str]:
        return [self.password_env] if self.password_env else []


class WebhookChannel(_Channel):
    """A JSON POST: ``format: slack`` sends ``text`` (Slack, Mattermost, Teams' legacy connectors) with the
    structured fields beside it; ``format: teams`` an Adaptive Card message (Teams' Workflows webhooks)."""

    type: Literal["webhook"]
    url_env: str | None = Field(
        None, pattern=ENV_NAME, description="Variable holding the URL (it embeds a token: not here)."
    )
    connection: str | None = Field(
        None,
        pattern=CONN_ID,
        description="An Airflow connection holding the URL: in its password (as Slack webhook connections keep "
        "it), or its host as a full URL (with the password, if any, appended as the last path segment).",
    )
    format: Literal["slack", "teams"] = "slack"
    timeout_seconds: float = Field(5.0, gt=0, le=60)

    @model_validator(mode="after")
    def _one_source(self) -> WebhookChannel:
        if (self.url_env is None) == (self.connection is None):
            raise ValueError("give the URL's source either as url_env or as connection")
        return self

    def env_names(self) -> list[str]:
        return [self.url_env] if self.url_env else []

    def source(self) -> str:
        """Where the URL comes from, for messages (never the URL)."""
        return f"${self.url_env}" if self.url_env else f"Airflow connection {self.connection}"


Channel = Annotated[LogChannel | SmtpChannel | WebhookChannel, Field(discriminator="type")]


class NotificationsConfig(BaseModel):
    """Every channel; names unique."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channels: tuple[Channel, ...] = Field(default_factory=tuple)

    @model_validator(mode="after")
    def _unique(self) -> NotificationsConfig:
        names = [c.name for c in self.channels]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"channels: {', '.join(duplicates)} named more than once")
        return self

    def env_names(self) -> list[str]:
        """Every environment variable the channels read."""
        return [name for channel in self.channels for name in channel.env_names()]

    def missing_env(self, environ: Mapping[str, str] | None = None) -> list[str]:
        """The variables the channels need that are not set (or empty)."""
        environ = os.environ if environ is None else environ
        return [name for name in self.env_names() if not environ.get(name)]


DEFAULT = NotificationsConfig(channels=(LogChannel(name="log", type="log"),))


def load_notifications(path: Path) -> NotificationsConfig:
    """Parse and validate the notifications file; errors name the file and the field."""
    raw = read_yaml(path, "notifications file")
    try:
        return NotificationsConfig.model_validate(raw or {})
    except ValidationError as exc:
        raise ConfigError(f"{path}: {validation_problems(exc)}") from exc


def airflow_connection(channel: _Channel, path: Path | str = "the notifications file") -> Any:
    """The Airflow connection the channel names, through Airflow's own lookup (its secrets backends, the metadata
    database from a task, ``AIRFLOW_CONN_<ID>`` anywhere); a ConfigError naming it when it cannot be had here."""
    conn_id = channel.connection_id()
    try:
        return _airflow_connection_class().get(str(conn_id))
    except Exception as exc:
        raise ConfigError(
            f"Airflow connection {conn_id!r} (channel {channel.name!r} of {path}) is not available here: "
            f"{type(exc).__name__}: {exc} (outside Airflow's tasks, set AIRFLOW_CONN_{str(conn_id).upper()})"
        ) from None


def _airflow_connection_class() -> Any:
    """Airflow's ``Connection``. Importing Airflow for the first time (a shell command, not a task) sets Airflow's
    own logging up: the process's root handlers are put back after, so the command keeps its log format."""
    if "airflow" in sys.modules:
        from airflow.sdk import Connection

        return Connection
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        from airflow.sdk import Connection
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return Connection


def secret(channel: _Channel, variable: str | None, path: Path | str = "the notifications file") -> str | None:
    """The value of ``variable`` (None when none is named); a ConfigError naming it when it is not set."""
    if variable is None:
        return None
    value = os.environ.get(variable)
    if not value:
        raise ConfigError(f"environment variable {variable} is not set (channel {channel.name!r} of {path})")
    return value
