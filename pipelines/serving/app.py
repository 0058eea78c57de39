"""The prediction service: a FastAPI app that answers with the registry's ``champion`` of every dataset.

One process serves every dataset configured in the datasets folder (see :mod:`pipelines.serving.catalog`), each
with its own contract, model store, metrics and prediction-log rows:

- ``POST /predict/{dataset}`` takes ``{"records": [{feature: value}], "ids": [...], "event_times": [...],
  "request_id": ...}`` and answers each record with the version that answered: its probability and decision
  (binary), its class and the probability of every class (multiclass) or its value (regression); see
  :mod:`pipelines.serving.answers`. ``POST /predict`` is the same for the default dataset.
- the Open Inference Protocol (KServe v2) REST API under ``/v2`` (:mod:`pipelines.serving.inference_routes`);
- ``GET /models`` (every dataset: its version, since when, what is loading, the last refusal),
  ``GET /models/{dataset}``, ``GET /model`` (the default dataset), ``GET /health`` (alive), ``GET /ready`` (every
  dataset with a champion is served), ``GET /metrics`` (Prometheus, labelled by dataset), ``POST /admin/reload``
  (rescan the datasets and check the aliases now) and the OpenAPI page at ``/docs``.

The request path stays lean: the body is read with a size limit, decoded with orjson, checked against the model's
contract by hand, scored by the compiled predictor and answered with orjson; the prediction log gets the request
through a bounded queue that a process of its own writes in batches.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import secrets
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import ClientDisconnect

from pipelines.core.config import ServingPolicy, load_dataset_config
from pipelines.core.settings import Settings
from pipelines.serving.answers import Answer, answer, response_schema
from pipelines.serving.catalog import Catalog, ServedDataset
from pipelines.serving.log_process import LoggedRequest, ProcessLogWriter
from pipelines.serving.metrics import ServingMetrics
from pipelines.serving.model_store import LoadedModel
from pipelines.serving.parsing import Batch, InputError, parse_batch
from pipelines.serving.responses import JSONResponse
from pipelines.serving.workers import WorkerBoard, log_totals, versions_of
from pipelines.training.contract import InputContract

log = logging.getLogger(__name__)


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


UNKNOWN = "_unknown"  # the metrics' dataset label of a request for a dataset that is not served
CLIENT_CLOSED = 499  # the status counted for a request whose client left before sending its body (nginx's code)
BOARD_POLL_SECONDS = 0.25  # how soon a worker of several takes a reload asked of another


@dataclass(frozen=True)
class Scored:
    """One answered request: the dataset and version that answered, the checked batch and the model's output."""

    served: ServedDataset
    model: LoadedModel
    batch: Batch
    output: np.ndarray
    request_id: str
    answer: Answer


class PredictionService:
    """The handlers of the service, around the catalog of datasets, one prediction-log writer and the metrics.

    ``default_dataset`` is the one ``POST /predict`` and ``GET /model`` refer to (and whose ``serving`` section sets
    the process-wide prediction-log queue and backpressure); without one, those routes answer 404.
    """

    def __init__(self, settings: Settings, default_dataset: str | None = None) -> None:
        self.settings = settings
        self.default_dataset = default_dataset
        self.policy = _process_policy(settings, default_dataset)
        self.metrics = ServingMetrics.create()
        self.catalog = Catalog(
            settings, self.policy.alias_poll_seconds, on_change=self._on_change, on_failure=self._on_failure
        )
        self.writer = ProcessLogWriter(settings.warehouse_url, max_queue=self.policy.log_queue_records)
        # Backpressure from half the queue on: the writer's pace is uneven (a checkpoint of SQLite's WAL waits on the
        # disk), and holding requests back from a tenth of it turned each such wait into a stall of the service:
        # batches of 100, 91,000 vs 94,000 records/s, p99 36-47 vs 17 ms, every record logged either way.
        self.log_high_water = max(1, self.policy.log_queue_records // 2)
        folder = settings.serving_workers_dir
        self.board = WorkerBoard(folder) if folder is not None else None
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None

    def _follow_board(self) -> None:
        """One worker of several: take the reloads asked of the others, publish what it serves and its log counts."""
        assert self.board is not None
        published: tuple[Any, ...] | None = None
        while not self._stop.wait(BOARD_POLL_SECONDS):
            try:
                for dataset in self.board.reload_requests():
                    self.catalog.reload(dataset)
                serving = {
                    d.name: d.store.current.version if d.store.current else None for d in self.catalog.datasets()
                }
                stats = self.writer.stats()
                counts = {
                    "written": stats.written,
                    "dropped": stats.dropped,
                    "queued": stats.queued,
                    "write_errors": stats.write_errors,
                }
                if (serving, counts) != published:
                    self.board.publish(serving, counts)
                    published = (serving, counts)
                self._update_log_gauges()
            except Exception as exc:  # the follower must outlive a folder or registry hiccup
                log.warning("worker %d: following the others failed: %s: %s", self.board.pid, type(exc).__name__, exc)

    def _update_log_gauges(self) -> None:
        stats = self.writer.stats()
        self.metrics.log_written.set(stats.written)
        self.metrics.log_dropped.set(stats.dropped)
        self.metrics.log_queued.set(stats.queued)

    def _on_change(self, dataset: str, old: LoadedModel | None, new: LoadedModel) -> None:
        if old is not None:
            self.metrics.retire(dataset, old.name, old.version)
        self.metrics.model_info.labels(dataset, new.name, new.version).set(1)
        self.metrics.loads.labels(dataset, "success").inc()

    def _on_failure(self, dataset: str, version: str, error: str, untrusted: bool) -> None:
        self.metrics.loads.labels(dataset, "refused" if untrusted else "failure").inc()
        if untrusted:
            self._audit_refusal(dataset, version, error)

    def _audit_refusal(self, dataset: str, version: str, error: str) -> None:
        """Write a refused artifact to the audit trail (once per version: every worker writes the same row)."""
        from pipelines.core import audit

        served = self.catalog.get(dataset)
        if served is None:
            return
        config = served.config
        try:
            audit.record(
                self.settings.warehouse_url,
                "artifact_refused",
                at=datetime.now(UTC),
                dataset=dataset,
                model_name=config.model.registered_name,
                model_version=version,
                actor="serving",
                mode="policy",
                comment=f"not loaded: {error}"[:2000],
                run_key=f"serving:{config.model.registered_name}:{version}",
                replace=False,  # the service's database role may insert into the trail, never delete from it
            )
        except Exception as exc:  # the audit trail being down must not stop the service from refusing
            log.error("could not write the refusal of %s v%s to the audit trail: %s", dataset, version, exc)

    @asynccontextmanager
    async def lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        """Start the prediction-log writer and the catalog's watchers; on shutdown, flush the log."""
        self.writer.start()
        self.catalog.start()
        if self.board is not None:
            self._follower = threading.Thread(target=self._follow_board, name="worker-board", daemon=True)
            self._follower.start()
        log.info(
            "serving %s (default %s); prediction log in %s",
            ", ".join(d.name for d in self.catalog.datasets()) or "no dataset yet",
            self.default_dataset or "none",
            self.settings.warehouse_url.split("@")[-1],
        )
        yield
        self._stop.set()
        if self._follower is not None:
            self._follower.join(timeout=5)
        self.catalog.stop()
        stats = self.writer.close(timeout=30.0)
        log.info(
            "prediction log closed: %d written, %d dropped, %d still queued", stats.written, stats.dropped, stats.queued
        )

    def served(self, dataset: str) -> ServedDataset:
        """The served dataset, or a 404 naming the ones served."""
        found = self.catalog.get(dataset)
        if found is None:
            error = self.catalog.config_errors().get(dataset)
            served = ", ".join(d.name for d in self.catalog.datasets()) or "none"
            msg = (
                f"dataset {dataset!r} is not served: its config does not load ({error})"
                if error
                else f"dataset {dataset!r} is not served (served: {served})"
            )
            raise InputError(404, [{"loc": ["path", "dataset"], "msg": msg, "type": "not_found"}])
        return found

    def _default(self) -> str:
        if self.default_dataset is None:
            raise InputError(
                404,
                [
                    {
                        "loc": ["path"],
                        "msg": "this service has no default dataset: use /predict/{dataset} (GET /models lists them)",
                        "type": "not_found",
                    }
                ],
            )
        return self.default_dataset

    async def health(self) -> Response:
        return JSONResponse({"status": "ok"})

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready when at least one model is served, every dataset with a champion is served (none is waiting
        for its first load, none has only a refused version) and the prediction log's writer process runs (an
        answer that cannot be logged cannot be monitored); the per-dataset state either way."""
        datasets = self.catalog.datasets()
        waiting = {d.name: _waiting_reason(d) for d in datasets if not d.store.settled}
        served = {d.name: d.store.current.version for d in datasets if d.store.current is not None}
        logging_ok = self.writer.alive()
        ready = bool(served) and not waiting and logging_ok
        body: dict[str, Any] = {"ready": ready, "served": served}
        if not ready:
            if not logging_ok:
                body["reason"] = "the prediction-log writer process is not running: answers could not be logged"
            elif not served and not waiting:
                body["reason"] = "no champion loaded yet"
            else:
                body["reason"] = "not every champion is served"
            body["waiting"] = waiting
        if self.default_dataset in served:  # the single-dataset fields, for clients of the default dataset
            current = self.catalog.get(self.default_dataset)
            assert current is not None and current.store.current is not None
            body.update(model_name=current.store.current.name, model_version=current.store.current.version)
        return ready, body

    async def ready(self) -> Response:
        ready, body = self.readiness()
        return JSONResponse(body, 200 if ready else 503)

    def log_status(self) -> dict[str, Any]:
        """The prediction log's counters: this process's, or every worker's summed in a service of several."""
        stats = self.writer.stats()
        if self.board is not None:
            return {**log_totals(self.board.workers()), "last_error": stats.last_error}
        return {
            "written": stats.written,
            "dropped": stats.dropped,
            "queued": stats.queued,
            "write_errors": stats.write_errors,
            "last_error": stats.last_error,
        }

    async def model(self) -> Response:
        """``GET /model``: the default dataset's model."""
        return await self.model_of("")

    async def model_of(self, dataset: str) -> Response:
        """``GET /models/{dataset}`` (the default dataset for ``""``)."""
        try:
            served = self.served(dataset) if dataset else self.served(self._default())
        except InputError as exc:
            return JSONResponse(exc.body(), exc.status)
        body = {**served.status(), "prediction_log": self.log_status()}
        if self.board is not None:  # several workers: this one, and what each serves (deploy waits for all)
            body.update(worker=self.board.pid, workers=versions_of(self.board.workers(), served.name))
        return JSONResponse(body)

    async def models(self) -> Response:
        return JSONResponse(
            {
                "default_dataset": self.default_dataset,
                "models": [d.status() for d in self.catalog.datasets()],
                "config_errors": self.catalog.config_errors(),
                "prediction_log": self.log_status(),
                **({} if self.board is None else {"worker": self.board.pid, "workers": self.board.workers()}),
            }
        )

    async def prometheus(self) -> Response:
        self._update_log_gauges()
        return Response(self.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def reload(self, request: Request) -> Response:
        token = self.settings.serving_admin_token
        if token:
            given = request.headers.get("authorization", "").removeprefix("Bearer ")
            if not hmac.compare_digest(given, token):
                return JSONResponse({"detail": "a valid bearer token is required"}, 401)
        dataset = request.query_params.get("dataset")
        if self.board is not None:
            self.board.broadcast_reload(dataset)
        await asyncio.to_thread(self.catalog.reload, dataset)
        if dataset:
            return await self.model_of(dataset)  # 404 naming the datasets served, for one that is not
        return JSONResponse({"reloading": [d.name for d in self.catalog.datasets()]}, 202)

    async def predict(self, request: Request) -> Response:
        """``POST /predict``: the default dataset."""
        try:
            dataset = self._default()
        except InputError as exc:
            return JSONResponse(exc.body(), exc.status)
        return await self.predict_dataset(request, dataset)

    async def predict_dataset(self, request: Request, dataset: str) -> Response:
        """``POST /predict/{dataset}``."""
        return await self.measured(dataset, lambda: self._predict(request, dataset), _predict_error)

    async def measured(
        self,
        dataset: str,
        handler: Callable[[], Awaitable[Response]],
        error_body: Callable[[InputError], dict[str, Any]],
    ) -> Response:
        """Run a prediction handler: 4xx for bad input, 500 (logged) for anything else; count and time it."""
        started = time.perf_counter()
        status = 200
        try:
            response = await handler()
        except InputError as exc:
            status = exc.status
            response = JSONResponse(error_body(exc), status)
        except ClientDisconnect:  # the client went away before sending its whole body: nothing to answer or log
            log.debug("a client of dataset %s closed its connection before sending its whole body", dataset)
            status = CLIENT_CLOSED
            response = Response(status_code=CLIENT_CLOSED)
        except Exception:
            log.exception("prediction for dataset %s failed", dataset)
            status = 500
            response = JSONResponse(
                error_body(_error(500, "internal error while scoring; see the service log", "internal")), 500
            )
        label = dataset if self.catalog.get(dataset) is not None else UNKNOWN
        self.metrics.requests.labels(label, str(status)).inc()
        self.metrics.latency.labels(label).observe(time.perf_counter() - started)
        return response

    async def _predict(self, request: Request, dataset: str) -> Response:
        scored = await self.score(request, dataset, lambda payload, _model: payload)
        return JSONResponse(
            {
                "request_id": scored.request_id,
                "model_name": scored.model.name,
                "model_version": scored.model.version,
                "predictions": scored.answer.predictions,
            }
        )

    async def score(
        self,
        request: Request,
        dataset: str,
        to_payload: Callable[[Any, LoadedModel], Any],
        version: str | None = None,
    ) -> Scored:
        """Read, check, score and log one request for ``dataset``: ``to_payload`` turns the decoded body into the
        ``/predict`` payload for the version serving (the identity for ``/predict``); ``version``, when given, must
        be the one served."""
        served = self.served(dataset)
        await self._wait_for_log()
        policy = served.config.serving
        body = await _read_body(request, policy.max_body_bytes)
        try:
            decoded = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise _error(400, f"malformed JSON: {exc}", "json_invalid") from None
        current = served.store.current  # one read: the whole batch is answered by one version
        if current is None:
            raise _error(
                503,
                f"no model of dataset {dataset!r} is loaded yet: the registry has no champion or it is still loading",
                "not_ready",
                [],
            )
        if version is not None and version != current.version:
            raise _error(
                404, f"{dataset} version {version} is not served (serving version {current.version})", "not_found", []
            )
        payload = to_payload(decoded, current)
        batch = parse_batch(payload, current.contract, policy.max_records)
        output = current.predictor.predict(batch)
        answered = answer(current.task, output, batch.ids, current.threshold, current.classes)
        request_id = batch.request_id or _new_request_id()
        self.writer.submit_request(
            LoggedRequest(
                dataset=dataset,
                request_id=request_id,
                served_at=datetime.now(UTC),
                model_name=current.name,
                model_version=current.version,
                body=body if payload is decoded else orjson.dumps(payload),
                outputs=answered.outputs,
                decisions=answered.decisions,
                size=batch.size,
                task=current.task,
                classes=current.classes,
            )
        )
        self.metrics.records.labels(dataset, current.version).inc(batch.size)
        return Scored(served, current, batch, output, request_id, answered)

    async def _wait_for_log(self) -> None:
        """Backpressure: while a healthy prediction-log writer is behind, let it write before answering more.

        Under sustained load the event loop holds the GIL nearly all the time and the writer falls behind;
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


def _predict_error(exc: InputError) -> dict[str, Any]:
    return exc.body()


def _waiting_reason(served: ServedDataset) -> str:
    status = served.store.status()
    if status["loading"]:
        return f"loading v{status['loading']['version']}"
    if status["last_error"]:
        return f"its champion v{status['last_error']['version']} was refused: {status['last_error']['error']}"
    return "checking its champion alias"


def _process_policy(settings: Settings, default_dataset: str | None) -> ServingPolicy:
    """The default dataset's serving section (prediction-log queue, backpressure, scan interval); else defaults."""
    if default_dataset is None:
        return ServingPolicy()
    return load_dataset_config(default_dataset, settings.datasets_dir).serving


def create_app(settings: Settings, default_dataset: str | None = None) -> FastAPI:
    """The service of every dataset in ``settings.datasets_dir``, logging to ``settings.warehouse_url``."""
    from pipelines.serving.inference_routes import add_inference_routes
    from pipelines.serving.plain_routes import add_plain_route

    service = PredictionService(settings, default_dataset)
    app = FastAPI(
        title="Prediction service",
        description="Answers with the registry version behind the alias `champion` of every configured dataset "
        "(`GET /models` lists them, their task, version and, for multiclass, classes). The per-dataset request "
        "schemas are under `POST /predict/{dataset}` once the dataset is served; the Open Inference Protocol "
        "(KServe v2) routes are under `/v2`.",
        version="2",
        lifespan=service.lifespan,
        default_response_class=JSONResponse,
    )
    app.state.service = service
    app.add_api_route("/health", service.health, methods=["GET"], summary="The process is alive")
    app.add_api_route(
        "/ready",
        service.ready,
        methods=["GET"],
        summary="Every dataset with a champion is served",
        responses={503: {"description": "a champion is not served yet (the datasets waiting and why)"}},
    )
    app.add_api_route("/models", service.models, methods=["GET"], summary="Every dataset served: version, since when")
    app.add_api_route(
        "/models/{dataset}", service.model_of, methods=["GET"], summary="One dataset: version, since when, refusals"
    )
    app.add_api_route("/model", service.model, methods=["GET"], summary="The default dataset's model")
    app.add_api_route("/metrics", service.prometheus, methods=["GET"], summary="Prometheus metrics")
    app.add_api_route(
        "/admin/reload",
        service.reload,
        methods=["POST"],
        status_code=202,
        summary="Rescan the datasets and check the champion aliases now (`?dataset=` for one)",
    )
    errors: dict[int | str, dict[str, Any]] = {
        400: {"description": "malformed JSON"},
        404: {"description": "the dataset is not served"},
        413: {"description": "payload too large"},
        422: {"description": "a record breaks the model's contract (the field is named)"},
        503: {"description": "no model loaded yet"},
    }
    add_plain_route(
        app,
        "/predict/{dataset}",
        service.predict_dataset,
        methods=["POST"],
        summary="Score a batch of records of a dataset",
        responses=errors,
    )
    add_plain_route(
        app,
        "/predict",
        service.predict,
        methods=["POST"],
        summary="Score a batch of the default dataset",
        responses=errors,
    )
    add_inference_routes(app, service)
    app.openapi = lambda: _openapi(app, service)  # type: ignore[method-assign]
    return app


def tune_switch_interval() -> None:
    """The event loop holds the GIL almost all the time under load; a 1 ms switch interval (default 5 ms) lets the
    prediction-log sender thread take its turns often enough to keep up with the requests."""
    sys.setswitchinterval(float(os.environ.get("MLOPS_SERVING_SWITCH_INTERVAL", "0.001")))


def app_from_settings() -> FastAPI:
    """The app of one worker of a multi-process service (uvicorn's factory): settings from the environment the
    service set for its workers."""
    from pipelines.core.logging_setup import configure
    from pipelines.core.settings import get_settings

    configure()
    tune_switch_interval()  # as the single process does
    settings = get_settings()
    return create_app(settings, settings.serving_default_dataset or None)


def _openapi(app: FastAPI, service: PredictionService) -> dict[str, Any]:
    """The OpenAPI document, with one ``POST /predict/<name>`` per dataset served now: its request schema is the
    dataset's contract, its answer the task's (datasets come and go, so it is built on every call)."""
    from fastapi.openapi.utils import get_openapi

    spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    generic = spec["paths"]["/predict/{dataset}"]["post"]
    for served in service.catalog.datasets():
        current = served.store.current
        contract = current.contract if current is not None else served.contract
        task = current.task if current is not None else served.config.task
        operation = {
            **{k: v for k, v in generic.items() if k != "parameters"},
            "summary": f"Score a batch of {served.name} ({task})",
            "operationId": f"predict_{served.name}",
            **_openapi_body(contract, served.config.serving.max_records),
            "responses": {
                **generic["responses"],
                "200": {
                    "description": f"One answer per record, in order ({task} task)",
                    "content": {"application/json": {"schema": _answer_schema(task)}},
                },
            },
        }
        spec["paths"][f"/predict/{served.name}"] = {"post": operation}
    return spec


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
