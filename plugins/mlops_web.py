"""The plugin's web app, mounted by the Airflow API server under ``/mlops``.

- ``GET /mlops/health``: ``{"status": "ok"}``, no authentication (for checks).
- ``GET /mlops/data-docs/<path>``: the Great Expectations Data Docs site (static HTML), for signed-in users.
- ``GET /mlops/models``: the "Models" page (``mlops_console``): every dataset's champion, live performance, drift
  calendar, the retraining policy's decisions, the audit trail and the approvals waiting; ``/mlops/models/dag/<dag>``
  the same for the dataset of one DAG (the DAG's "Model" tab). For signed-in users.

Airflow mounts a plugin's FastAPI app without any authentication, so this app checks the caller itself with
Airflow's own machinery: the JWT of the UI session (cookie ``_token``) or of an API client
(``Authorization: Bearer``), validated by the configured auth manager (signature, expiry, revocation), then
the auth manager must allow the user to read DAG XComs (Data Docs show data values, as XComs do).
No token or an invalid one: 401, or a redirect to the login page for a browser. Not allowed: 403.

This module is imported by every Airflow component that loads plugins: FastAPI and Airflow's API modules are
imported inside functions only. No ``from __future__ import annotations`` here: FastAPI reads the route
handlers' annotations, which name classes imported inside ``create_app``.
"""

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit
from urllib.request import url2pathname

if TYPE_CHECKING:
    from fastapi import FastAPI, Request, Response

URL_PREFIX = "/mlops"
DATA_DOCS_ROUTE = "/data-docs"
MODELS_ROUTE = "/models"
COOKIE_NAME_JWT_TOKEN = "_token"  # airflow.api_fastapi.auth.managers.base_auth_manager.COOKIE_NAME_JWT_TOKEN


def data_docs_site_dir() -> Path:
    """The folder of the Data Docs site: ``pipelines.data.validation.run.data_docs_site_dir`` when it exists."""
    from pipelines.core.settings import get_settings

    settings = get_settings()
    try:
        from pipelines.data.validation.run import data_docs_site_dir as site_dir
    except ImportError:
        return settings.gx_dir / "uncommitted" / "data_docs" / "local_site"
    return Path(site_dir(settings))


def base_path() -> str:
    """The path part of the API server's public URL (``[api] base_url``), "" when served at the root."""
    from airflow.configuration import conf

    return urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


def data_docs_href(url: str) -> str:
    """Where the browser finds a Data Docs page.

    A web URL is returned as is. A ``file://`` URL, an absolute path or a path relative to the site, inside
    the Data Docs site, becomes its ``/mlops/data-docs/...`` URL. Anything else gives "".
    """
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        return url
    if parts.scheme == "file":
        path = Path(url2pathname(parts.path))
    elif not parts.scheme:
        path = Path(url)
    else:
        return ""
    site = data_docs_site_dir().resolve()
    try:
        relative = (site / path).resolve().relative_to(site)
    except (ValueError, OSError):
        return ""
    return f"{base_path()}{URL_PREFIX}{DATA_DOCS_ROUTE}/{quote(relative.as_posix())}"


def resolve_site_file(site: Path, requested: str) -> Path | None:
    """The file of the site that ``requested`` names (a folder gives its index.html), None if outside or absent."""
    root = site.resolve()
    try:
        target = (root / requested).resolve()
    except (ValueError, OSError):  # e.g. an embedded NUL byte
        return None
    if not target.is_relative_to(root):
        return None
    if target.is_dir():
        target = target / "index.html"
    return target if target.is_file() else None


def _wants_html(request: "Request") -> bool:
    return "text/html" in request.headers.get("accept", "")


async def check_access(request: "Request") -> "Response | None":
    """None when the caller may read Data Docs, else the response to send (401, login redirect or 403)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from fastapi.responses import JSONResponse, RedirectResponse
    from jwt import InvalidTokenError

    auth_manager = get_auth_manager()
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    bearer = credentials.strip() if scheme.lower() == "bearer" else ""
    # As in Airflow's core API: an explicit bearer token wins over the session cookie.
    token = bearer or request.cookies.get(COOKIE_NAME_JWT_TOKEN, "")
    user = None
    if token:
        try:
            user = await auth_manager.get_user_from_token(token)
        except InvalidTokenError:  # bad signature, expired, revoked, unknown user
            user = None
    if user is None:
        if not bearer and _wants_html(request):
            return RedirectResponse(auth_manager.get_url_login(next_url=str(request.url)), status_code=303)
        return JSONResponse({"detail": "Not authenticated"}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
    if not auth_manager.is_authorized_dag(method="GET", access_entity=DagAccessEntity.XCOM, user=user):
        return JSONResponse({"detail": "Forbidden"}, status_code=403)
    return None


def create_app() -> "FastAPI":
    """The FastAPI app the plugin registers (created on first use, in the API server only)."""
    from fastapi import FastAPI, HTTPException, Request, Response
    from fastapi.responses import FileResponse, RedirectResponse

    app = FastAPI(title="MLOps plugin", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(DATA_DOCS_ROUTE, include_in_schema=False)
    def data_docs_root() -> RedirectResponse:
        return RedirectResponse(f"{DATA_DOCS_ROUTE.lstrip('/')}/", status_code=307)

    @app.get(DATA_DOCS_ROUTE + "/{path:path}", response_model=None)
    async def data_docs(path: str, request: Request) -> Response:
        # Authenticate before looking at the path, so strangers learn nothing about the files.
        denied = await check_access(request)
        if denied is not None:
            return denied
        target = resolve_site_file(data_docs_site_dir(), path)
        if target is None:
            raise HTTPException(status_code=404, detail="Not found")
        return FileResponse(target, headers={"Cache-Control": "private, no-cache", "X-Content-Type-Options": "nosniff"})

    @app.get(MODELS_ROUTE, response_model=None)
    async def models(request: Request) -> Response:
        return await _models(request, None)

    @app.get(MODELS_ROUTE + "/dag/{dag_id}", response_model=None)
    async def models_of_dag(dag_id: str, request: Request) -> Response:
        return await _models(request, dag_id)

    return app


async def _models(request: "Request", dag_id: str | None) -> "Response":
    from fastapi.responses import HTMLResponse
    from starlette.concurrency import run_in_threadpool

    denied = await check_access(request)
    if denied is not None:
        return denied
    from mlops_console import models_page

    page = await run_in_threadpool(models_page, base_path(), dag_id)
    return HTMLResponse(page, headers={"Cache-Control": "private, no-cache", "X-Content-Type-Options": "nosniff"})
