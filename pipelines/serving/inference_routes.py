"""The Open Inference Protocol (KServe v2) REST routes of the prediction service, so that existing clients (KServe,
Triton's and MLServer's clients) can call every dataset's champion. A model's name is its dataset's name.

``GET /v2`` (server metadata), ``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2/models/{name}`` and
``/versions/{version}`` (inputs with datatypes and shapes, outputs, the version served),
``GET /v2/models/{name}/ready`` (and versioned), ``POST /v2/models/{name}/infer`` (and versioned). A request is
turned into the ``/predict`` payload (:mod:`pipelines.serving.inference_protocol`) and then checked, scored and logged
exactly as ``POST /predict/{dataset}`` does; errors are 4xx ``{"error": ..., "detail": [...]}`` naming the input.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import Response

from pipelines.serving.catalog import ServedDataset
from pipelines.serving.inference_protocol import (
    check_outputs,
    error_body,
    model_metadata,
    oip_error,
    to_payload,
    to_response,
)
from pipelines.serving.model_store import LoadedModel
from pipelines.serving.parsing import InputError
from pipelines.serving.plain_routes import add_plain_route
from pipelines.serving.responses import JSONResponse


class ScoredRequest(Protocol):
    """What the service gives back for a scored request."""

    @property
    def model(self) -> LoadedModel: ...

    @property
    def request_id(self) -> str: ...

    @property
    def output(self) -> Any: ...


class Service(Protocol):
    """What these routes need of the prediction service (:class:`pipelines.serving.app.PredictionService`)."""

    def served(self, dataset: str) -> ServedDataset: ...

    def readiness(self) -> tuple[bool, dict[str, Any]]: ...

    async def measured(
        self,
        dataset: str,
        handler: Callable[[], Awaitable[Response]],
        error_body: Callable[[InputError], dict[str, Any]],
    ) -> Response: ...

    async def score(
        self,
        request: Request,
        dataset: str,
        to_payload: Callable[[Any, LoadedModel], Any],
        version: str | None = None,
    ) -> ScoredRequest: ...


SERVER_NAME = "mlops-prediction-service"
PROTOCOL_VERSION = "2"


def add_inference_routes(app: FastAPI, service: Service) -> None:
    """Add the ``/v2`` routes of the protocol to ``app``, answering through ``service``."""

    def _served(name: str) -> ServedDataset | Response:
        """The served dataset, or the protocol's 404 naming the ones served."""
        try:
            return service.served(name)
        except InputError as exc:
            return JSONResponse(error_body(exc), exc.status)

    async def server_metadata() -> Response:
        return JSONResponse({"name": SERVER_NAME, "version": PROTOCOL_VERSION, "extensions": []})

    async def live() -> Response:
        return JSONResponse({"live": True})

    async def ready() -> Response:
        is_ready, _ = service.readiness()
        return JSONResponse({"ready": is_ready}, 200 if is_ready else 503)

    async def metadata(name: str, version: str | None = None) -> Response:
        served = _served(name)
        if isinstance(served, Response):
            return served
        current = served.store.current
        if version is not None and (current is None or current.version != version):
            return _version_missing(name, version, current.version if current else None)
        if current is None:
            body = model_metadata(name, None, served.contract, served.config.task, ())
        else:
            body = model_metadata(name, current.version, current.contract, current.task, current.classes)
        return JSONResponse(body)

    async def model_ready(name: str, version: str | None = None) -> Response:
        served = _served(name)
        if isinstance(served, Response):
            return served
        current = served.store.current
        ok = current is not None and (version is None or current.version == version)
        return JSONResponse({"name": name, "ready": ok}, 200 if ok else 503)

    async def infer(request: Request, name: str, version: str | None = None) -> Response:
        return await service.measured(name, lambda: _infer(request, name, version), lambda e: error_body(oip_error(e)))

    async def _infer(request: Request, name: str, version: str | None) -> Response:
        requested: list[list[str] | None] = []
        max_records = service.served(name).config.serving.max_records

        def convert(body: Any, model: LoadedModel) -> dict[str, Any]:
            payload, wanted = to_payload(body, model.contract, max_records=max_records)
            check_outputs(model.task, wanted)  # an unknown output is refused before anything is scored or logged
            requested.append(wanted)
            return dict(payload)

        scored = await service.score(request, name, convert, version)
        model = scored.model
        return JSONResponse(
            to_response(
                name,
                model.version,
                scored.request_id,
                model.task,
                scored.output,
                model.threshold,
                model.classes,
                requested[0] if requested else None,
            )
        )

    def _version_missing(name: str, version: str, serving: str | None) -> Response:
        msg = f"model {name} version {version} is not served (serving {'v' + serving if serving else 'nothing yet'})"
        return JSONResponse({"error": msg}, 404)

    app.add_api_route("/v2", server_metadata, methods=["GET"], summary="Open Inference Protocol: server metadata")
    app.add_api_route("/v2/health/live", live, methods=["GET"], summary="Open Inference Protocol: server live")
    app.add_api_route("/v2/health/ready", ready, methods=["GET"], summary="Open Inference Protocol: server ready")
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.add_api_route(prefix, metadata, methods=["GET"], summary="Open Inference Protocol: model metadata")
        app.add_api_route(f"{prefix}/ready", model_ready, methods=["GET"], summary="Open Inference Protocol: ready")
        add_plain_route(
            app, f"{prefix}/infer", infer, methods=["POST"], summary="Open Inference Protocol: score a batch of tensors"
        )
