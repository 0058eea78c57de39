"""The prediction service as the release stage sees it: switch to a new champion, or check the alias now."""

from __future__ import annotations

import logging

from pipelines.core.settings import Settings
from pipelines.serving.client import ServingClient, ServingError

log = logging.getLogger(__name__)


class ServiceSwitch:
    """``release.deploy.PredictionService`` over HTTP, for the service at ``MLOPS_SERVING_URL``."""

    def __init__(self, url: str, admin_token: str = "") -> None:
        self.url = url
        self.admin_token = admin_token

    @classmethod
    def from_settings(cls, settings: Settings) -> ServiceSwitch | None:
        """The configured service, or None when no service runs (``MLOPS_SERVING_URL`` unset)."""
        if not settings.serving_url:
            log.info("no prediction service configured (MLOPS_SERVING_URL): nothing to switch")
            return None
        return cls(settings.serving_url, settings.serving_admin_token)

    def switch_to(self, model_name: str, version: str, timeout: float) -> list[str]:
        """Make the service load the new champion and wait until it answers with it (problems, if any)."""
        with ServingClient(self.url, self.admin_token) as service:
            try:
                status = service.model()
            except Exception as exc:
                return [f"prediction service at {self.url} unreachable: {type(exc).__name__}: {exc}"]
            if status.get("name") != model_name:
                log.info(
                    "the service at %s serves %s, not %s: nothing to switch", self.url, status.get("name"), model_name
                )
                return []
            try:
                answered = service.wait_for_version(model_name, version, timeout)
            except ServingError as exc:
                return [str(exc)]
        log.info(
            "the prediction service at %s answers with %s v%s since %s",
            self.url,
            model_name,
            version,
            answered.get("since"),
        )
        return []

    def reload(self) -> None:
        """Ask the service to check the alias now (best effort: it also polls the alias)."""
        try:
            with ServingClient(self.url, self.admin_token, timeout=10) as service:
                service.reload()
        except Exception as exc:
            log.warning(
                "could not reach the prediction service at %s (%s): it will notice the alias when it next polls",
                self.url,
                exc,
            )
