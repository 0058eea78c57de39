"""Routes documented by FastAPI but called as plain Starlette endpoints, for the prediction hot paths.

The scoring handlers read and check their bodies themselves (:mod:`pipelines.serving.parsing`), so FastAPI's
per-request machinery around them (resolving dependencies from the signature, its exit stacks) does nothing for
them, yet cost ~20-35 µs a request: a tenth of a single-record prediction. A plain route keeps FastAPI's OpenAPI
entry (built from the endpoint's signature as for any route) and calls the endpoint with the request and the path's
parameters only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.responses import Response
from starlette.routing import request_response


class PlainRoute(APIRoute):
    """An :class:`APIRoute` whose endpoint is awaited as ``endpoint(request, **path_params)``."""

    def __init__(self, path: str, endpoint: Callable[..., Awaitable[Response]], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)

        async def handler(request: Request) -> Response:
            return await endpoint(request, **request.path_params)

        self.app = request_response(handler)


def add_plain_route(app: FastAPI, path: str, endpoint: Callable[..., Awaitable[Response]], **kwargs: Any) -> None:
    """Add a :class:`PlainRoute` to ``app`` (``kwargs`` as for ``add_api_route``: methods, summary, responses)."""
    app.router.routes.append(PlainRoute(path, endpoint, **kwargs))
