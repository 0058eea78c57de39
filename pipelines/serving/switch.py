"""The prediction service as the release stage sees it: switch a dataset to its new champion, or check now."""

from __future__ import annotations

import logging

from pipelines.core.settings import Settings
from pipelines.serving.client import ServingClient, ServingError

log = logging.getLogger(__name__)


class ServiceSwitch:
    """``release.deploy.PredictionService`` over HTTP: one dataset of the service at ``MLOPS_SERVING_URL``."""

    def __init__(self, url: str, dataset: str, admin_token: str = "") -> None:
        self.url = url
        self.dataset = dataset
        self.admin_token = admin_token

    @classmethod
    def from_settings(cls, settings: Settings, dataset: str) -> ServiceSwitch | None:
        """The configured service, or None when no service runs (``MLOPS_SERVING_URL`` unset)."""
        if not settings.serving_url:
            log.info("no prediction service configured (MLOPS_SERVING_URL): nothing to switch")
            return None
        return cls(settings.serving_url, dataset, settings.serving_admin_token)

    def switch_to(self, model_name: str, version: str, timeout: float) -> list[str]:
        """Make the service load the dataset's new champion and wait until it answers with it (problems, if any)."""
        with ServingClient(self.url, self.admin_token) as service:
            try:
                answered = service.wait_for_version(self.dataset, model_name, version, timeout)
            except ServingError as exc:
                return [str(exc)]
        log.info(
            "the prediction service at %s answers %s with %s v%s since %s",
            self.url,
            self.dataset,
            model_name,
            version,
            answered.get("since"),
        )
        return []

    def reload(self) -> None:
        """Ask the service to check the dataset's alias now (best effort: it also polls the alias)."""
        try:
            with ServingClient(self.url, self.admin_token, timeout=10) as service:
                service.reload(self.dataset)
        except Exception as exc:
            log.warning(
                "could not reach the prediction service at %s (%s): it will notice the alias when it next polls",
                self.url,
                exc,
            )
