"""The prediction service: a FastAPI app that answers with the registry's ``champion``.

``POST /predict`` takes ``{"records": [{feature: value}], "ids": [...], "event_times": [...], "request_id": ...}``
and answers each record with the version that answered: its probability and decision (binary), its class and the
probability of every class (multiclass) or its value (regression); see :mod:`pipelines.serving.answers`.
``GET /health`` (alive), ``GET /ready`` (a model is loaded), ``GET /model`` (what is served, its task, since when,
what is loading, the last refusal), ``GET /metrics`` (Prometheus), ``POST /admin/reload`` (check the alias now),
and the OpenAPI page at ``/docs``.

The request path stays lean: the body is read with a size limit, decoded with orjson, checked against the model's
contract by hand, scored by the compiled predictor and answered with orjson; the prediction log gets the records
through a bounded in-memory queue that a background thread writes in batches.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pipelines.core.config import DatasetConfig
from pipelines.core.settings import Settings
from pipelines.data.validation.suite import load_suite, suite_path
from pipelines.serving.answers import answer, response_schema
from pipelines.serving.log_process import LoggedRequest, ProcessLogWriter
from pipelines.serving.metrics import ServingMetrics
from pipelines.serving.model_store import LoadedModel, ModelStore
from pipelines.serving.parsing import InputError, parse_batch
from pipelines.training.contract import InputContract, contract_from_config

log = logging.getLogger(__name__)


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def _error(status: int, msg: str, kind: str, loc: list[Any] | None = None) -> InputError:
    return InputError(status, [{"loc": loc or ["body"], "msg": msg, "type": kind}])


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 beyond ``limit`` bytes (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise _error(400, "invalid Content-Length header", "bad_header")
        if int(declared) > limit:
            raise _error(413, f"request body of {declared} bytes exceeds the limit of {limit}", "too_large")
        return await request.body()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _error(413, f"request body exceeds the limit of {limit} bytes", "too_large")
        chunks.append(chunk)
    return b"".join(chunks)


class PredictionService:
    """The handlers of the service, around one model store, one prediction-log writer and its metrics."""

    def __init__(self, config: DatasetConfig, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.policy = config.serving
        # the fallback contract, for a champion without one in its metadata: bounds from the suite when there is one
        has_suite = suite_path(settings.expectations_dir, config.expectation_suite).is_file()
        suite = load_suite(settings.expectations_dir, config.expectation_suite) if has_suite else None
        self.contract = contract_from_config(config, suite)
        self.metrics = ServingMetrics.create()
        self.store = ModelStore(
            config.model.registered_name,
            settings.mlflow_tracking_uri,
            self.contract,
            config.model.threshold,
            self.policy.alias_poll_seconds,
            on_change=self._on_change,
            on_failure=lambda _v, _e: self.metrics.loads.labels("failure").inc(),
        )
        self.writer = ProcessLogWriter(settings.warehouse_url, max_queue=self.policy.log_queue_records)
        self.log_high_water = max(1, self.policy.log_queue_records // 10)

    def _on_change(self, old: LoadedModel | None, new: LoadedModel) -> None:
        if old is not None:
            self.metrics.model_info.remove(old.name, old.version)
        self.metrics.model_info.labels(new.name, new.version).set(1)
        self.metrics.loads.labels("success").inc()

    @asynccontextmanager
    async def lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        """Start the prediction-log writer and the alias watcher; on shutdown, flush the log."""
        self.writer.start()
        self.store.start()
        log.info(
            "serving %s (dataset %s); prediction log in %s",
            self.config.model.registered_name,
            self.config.name,
            self.settings.warehouse_url.split("@")[-1],
        )
        yield
        self.store.stop()
        stats = self.writer.close(timeout=30.0)
        log.info(
            "prediction log closed: %d written, %d dropped, %d still queued", stats.written, stats.dropped, stats.queued
        )

    async def health(self) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(self) -> Response:
        current = self.store.current
        if current is None:
            status = self.store.status()
            return JSONResponse(
                {
                    "ready": False,
                    "reason": "no champion loaded yet",
                    "loading": status["loading"],
                    "last_error": status["last_error"],
                },
                503,
            )
        return JSONResponse({"ready": True, "model_name": current.name, "model_version": current.version})

    async def model(self) -> Response:
        stats = self.writer.stats()
        return JSONResponse(
            {
                **self.store.status(),
                "prediction_log": {
                    "written": stats.written,
                    "dropped": stats.dropped,
                    "queued": stats.queued,
                    "write_errors": stats.write_errors,
                    "last_error": stats.last_error,
                },
            }
        )

    async def prometheus(self) -> Response:
        stats = self.writer.stats()
        self.metrics.log_written.set(stats.written)
        self.metrics.log_dropped.set(stats.dropped)
        self.metrics.log_queued.set(stats.queued)
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def reload(self, request: Request) -> Response:
        token = self.settings.serving_admin_token
        if token:
            given = request.headers.get("authorization", "").removeprefix("Bearer ")
            if not hmac.compare_digest(given, token):
                return JSONResponse({"detail": "a valid bearer token is required"}, 401)
        return JSONResponse(self.store.request_reload(), 202)

    async def predict(self, request: Request) -> Response:
        started = time.perf_counter()
        status = 200
        try:
            response = await self._predict(request)
        except InputError as exc:
            status = exc.status
            response = JSONResponse(exc.body(), status)
        except Exception:
            log.exception("prediction failed")
            status = 500
            response = JSONResponse({"detail": "internal error while scoring; see the service log"}, 500)
        self.metrics.requests.labels(str(status)).inc()
        self.metrics.latency.observe(time.perf_counter() - started)
        return response

    async def _wait_for_log(self) -> None:
        """Backpressure: while a healthy prediction-log writer is behind, let it write before answering more.

        Under sustained load the event loop holds the GIL nearly all the time and the writer thread falls behind;
        pausing here (at most ``serving.log_backpressure_ms``) gives it the turns it needs, so that records are
        logged rather than dropped. A failing database gets no wait: its records are dropped and counted instead.
        """
        queued, healthy = self.writer.backlog()
        if queued < self.log_high_water or not healthy:
            return
        self.metrics.log_backpressure.inc()
        deadline = time.monotonic() + self.policy.log_backpressure_ms / 1000
        while time.monotonic() < deadline:
            await asyncio.sleep(0.002)
            queued, healthy = self.writer.backlog()
            if queued < self.log_high_water or not healthy:
                return

    async def _predict(self, request: Request) -> Response:
        await self._wait_for_log()
        body = await _read_body(request, self.policy.max_body_bytes)
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise _error(400, f"malformed JSON: {exc}", "json_invalid") from None
        current = self.store.current  # one read: the whole batch is answered by one version
        if current is None:
            raise _error(
                503, "no model is loaded yet: the registry has no champion or it is still loading", "not_ready", []
            )
        batch = parse_batch(payload, current.contract, self.policy.max_records)
        output = current.predictor.predict(batch)
        answered = answer(current.task, output, batch.ids, current.threshold, current.classes)
        request_id = batch.request_id or _new_request_id()
        self.writer.submit_request(
            LoggedRequest(
                dataset=self.config.name,
                request_id=request_id,
                served_at=datetime.now(UTC),
                model_name=current.name,
                model_version=current.version,
                body=body,
                outputs=answered.outputs,
                decisions=answered.decisions,
                size=batch.size,
                task=current.task,
                classes=current.classes,
            )
        )
        self.metrics.records.labels(current.version).inc(batch.size)
        return JSONResponse(
            {
                "request_id": request_id,
                "model_name": current.name,
                "model_version": current.version,
                "predictions": answered.predictions,
            }
        )


def create_app(config: DatasetConfig, settings: Settings) -> FastAPI:
    """The service for ``config``'s registered model, logging predictions to ``settings.warehouse_url``."""
    service = PredictionService(config, settings)
    app = FastAPI(
        title=f"{config.model.registered_name} prediction service",
        description=f"Answers with the registry version behind the alias `champion` of "
        f"`{config.model.registered_name}` (task: {config.task}; `GET /model` names the version, its task and, for "
        f"multiclass, its classes). {config.description}",
        version="1",
        lifespan=service.lifespan,
        default_response_class=JSONResponse,
    )
    app.state.service = service
    app.add_api_route("/health", service.health, methods=["GET"], summary="The process is alive")
    app.add_api_route(
        "/ready",
        service.ready,
        methods=["GET"],
        summary="A model is loaded and answering",
        responses={503: {"description": "no model loaded yet"}},
    )
    app.add_api_route(
        "/model",
        service.model,
        methods=["GET"],
        summary="The version served, since when, what is loading, the last refused version",
    )
    app.add_api_route("/metrics", service.prometheus, methods=["GET"], summary="Prometheus metrics")
    app.add_api_route(
        "/admin/reload",
        service.reload,
        methods=["POST"],
        status_code=202,
        summary="Check the champion alias now and load a new version in the background",
    )
    app.add_api_route(
        "/predict",
        service.predict,
        methods=["POST"],
        summary="Score a batch of records",
        openapi_extra=_openapi_body(service.contract, config.serving.max_records),
        responses={
            200: {
                "description": f"One answer per record, in order ({config.task} task)",
                "content": {"application/json": {"schema": _answer_schema(config.task)}},
            },
            400: {"description": "malformed JSON"},
            413: {"description": "payload too large"},
            422: {"description": "a record breaks the model's contract (the field is named)"},
            503: {"description": "no model loaded yet"},
        },
    )
    return app


def _new_request_id() -> str:
    """A time-ordered id (nanoseconds, then 64 random bits): the log's unique index grows at its end, not at random
    places, which keeps inserts into a large prediction log fast."""
    return f"{time.time_ns():016x}{secrets.token_hex(8)}"


def _answer_schema(task: str) -> dict[str, Any]:
    """The response body schema of ``POST /predict`` for ``task``."""
    return {
        "type": "object",
        "properties": {
            "request_id": {"type": "string"},
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "predictions": {"type": "array", "items": response_schema(task)},
        },
    }


def _openapi_body(contract: InputContract, max_records: int) -> dict[str, Any]:
    """The request body schema for the OpenAPI page (the handler parses the body itself, faster)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["records"],
                        "additionalProperties": False,
                        "properties": {
                            "records": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": max_records,
                                "items": contract.json_schema(),
                            },
                            "ids": {
                                "type": "array",
                                "items": {"type": ["string", "null"]},
                                "description": "Your id of each record (e.g. the flight key), to join outcomes later",
                            },
                            "event_times": {
                                "type": "array",
                                "items": {"type": ["string", "null"], "format": "date-time"},
                                "description": "When each event happens (e.g. scheduled departure)",
                            },
                            "request_id": {
                                "type": "string",
                                "maxLength": 128,
                                "description": "Idempotency key; generated when absent",
                            },
                        },
                    }
                }
            },
        }
    }
