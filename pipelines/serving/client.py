"""A small HTTP client of the prediction service, used by ``deploy``, ``rollback`` and ``replay``."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

import httpx

log = logging.getLogger(__name__)


class ServingError(RuntimeError):
    """The prediction service is unreachable, or did not switch to the version asked for."""


class ServingClient:
    """Calls to one prediction service."""

    def __init__(self, base_url: str, admin_token: str = "", timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)

    def __enter__(self) -> ServingClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def model(self, dataset: str | None = None) -> dict[str, Any]:
        """``GET /models/{dataset}`` (``GET /model``: the default dataset): the version served, what is loading, the
        last refused version. A dataset the service does not serve raises ServingError."""
        response = self._http.get(f"/models/{dataset}" if dataset else "/model")
        if response.status_code == 404:
            raise ServingError(
                f"the service at {self.base_url} does not serve {dataset or 'a default dataset'}: {_detail(response)}"
            )
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def models(self) -> dict[str, Any]:
        """``GET /models``: every dataset served."""
        response = self._http.get("/models")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def reload(self, dataset: str | None = None) -> None:
        """``POST /admin/reload``: rescan the datasets and check the champion alias (of ``dataset``, or all) now."""
        response = self._http.post("/admin/reload", params={"dataset": dataset} if dataset else None)
        if response.status_code != 404:
            response.raise_for_status()

    def predict(
        self,
        dataset: str,
        records: list[dict[str, Any]],
        *,
        ids: list[str] | None = None,
        event_times: list[datetime | None] | None = None,
        request_id: str | None = None,
    ) -> httpx.Response:
        """``POST /predict/{dataset}``; returns the raw response (the caller decides what a 4xx means to it)."""
        body: dict[str, Any] = {"records": records}
        if ids is not None:
            body["ids"] = ids
        if event_times is not None:
            body["event_times"] = [t.isoformat() if t is not None else None for t in event_times]
        if request_id is not None:
            body["request_id"] = request_id
        return self._http.post(f"/predict/{dataset}", json=body)

    def wait_for_version(
        self, dataset: str, model_name: str, version: str, timeout: float, interval: float = 1.0
    ) -> dict[str, Any]:
        """Ask the service to check ``dataset`` now and wait until it answers it with ``version``; raise ServingError
        when it refuses the version, does not serve the dataset or serves another model for it, or on timeout."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        asked = False
        while time.monotonic() < deadline:
            try:
                if not asked:
                    self.reload(dataset)
                    asked = True
                last = self.model(dataset)
            except httpx.HTTPError as exc:
                last = {"error": f"{type(exc).__name__}: {exc}"}
                time.sleep(interval)
                continue
            if last.get("name") != model_name:
                raise ServingError(
                    f"the service at {self.base_url} serves {last.get('name')!r} for {dataset}, not {model_name!r}"
                )
            workers = last.get("workers")  # a service of several workers: every one must answer with it
            if str(last.get("version")) == version and (not workers or all(v == version for v in workers.values())):
                return last
            error = last.get("last_error") or {}
            if str(error.get("version")) == version and not last.get("loading"):
                raise ServingError(f"the service at {self.base_url} refused {dataset} v{version}: {error.get('error')}")
            time.sleep(interval)
        raise ServingError(
            f"the service at {self.base_url} did not answer {dataset} with v{version} within {timeout:.0f} s "
            f"(last seen: {last})"
        )


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        return response.text[:300]
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        return str(detail[0].get("msg", detail))
    return str(detail)
