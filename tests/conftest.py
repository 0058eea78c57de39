"""Shared test helpers: the repository root, and settings isolated in a temporary folder."""

from __future__ import annotations

import getpass
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:
    from pipelines.core.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    """No MLflow telemetry from the test process (no network; its thread mutates the environment), and one OpenMP
    thread per test process, as the stack's own processes have: ``make test`` runs two pytest workers beside the
    stacks' processes on two cores, where scikit-learn's OpenMP threads (gradient boosting's fit and predict) only
    wait for each other and spin; a flights training took 84 s there instead of 56 s. Set before any test module
    imports numpy or scikit-learn (their thread pools read it once)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def missing(what: str, require_env: str = "MLOPS_REQUIRE_SERVICES") -> NoReturn:
    """Skip a test whose outside service (PostgreSQL, Redis, a compose binary) is missing here; fail instead when
    ``require_env`` is ``1`` (CI sets it: there a skipped check must never count as a pass)."""
    if os.environ.get(require_env) == "1":
        pytest.fail(f"{what}, and {require_env}=1 requires it")
    pytest.skip(what)


POSTGRES_SERVER = "127.0.0.1:5432"


@contextmanager
def throwaway_postgres(prefix: str) -> Iterator[str]:
    """The URL of a new, uniquely named PostgreSQL database (trust auth, as user postgres or the current user),
    dropped afterwards with every connection to it; :func:`missing` when no server answers."""
    import sqlalchemy as sa

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    problems = []
    for user in dict.fromkeys(("postgres", getpass.getuser())):
        server = f"postgresql+psycopg2://{user}@{POSTGRES_SERVER}"
        admin = sa.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
            break
        except sa.exc.OperationalError as exc:
            admin.dispose()
            problems.append(f"as {user}: {str(exc.orig).strip().splitlines()[0]}")
    else:
        missing(f"PostgreSQL is not reachable at {POSTGRES_SERVER}: {'; '.join(problems)}")
    try:
        yield f"{server}/{name}"
    finally:
        from pipelines.core.warehouse import get_engine

        get_engine(f"{server}/{name}").dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def flights_config():
    """The shipped flights dataset config, as loaded by the pipeline."""
    from pipelines.core.config import load_config_file

    return load_config_file(REPO_ROOT / "pipelines" / "conf" / "datasets" / "flights.yaml")


@contextmanager
def settings_in(home: Path) -> Iterator[Settings]:
    """Settings whose state (warehouse, MLflow store, snapshots, Data Docs) lives in ``home``, for the block."""
    from pipelines.core.settings import get_settings

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLOPS_HOME", str(home))
        patch.setenv("MLOPS_MLFLOW_TRACKING_URI", f"sqlite:///{home}/mlflow.db")
        patch.setenv("MLOPS_AIRFLOW_UI_URL", "http://127.0.0.1:1")
        patch.delenv("MLOPS_WAREHOUSE_URL", raising=False)
        get_settings.cache_clear()
        try:
            yield get_settings()
        finally:
            get_settings.cache_clear()


@pytest.fixture
def isolated_settings(tmp_path: Path) -> Iterator[Settings]:
    """Settings whose state (warehouse, MLflow store, snapshots, Data Docs) lives in a temporary folder."""
    with settings_in(tmp_path / "runtime") as settings:
        yield settings


# The order in which the two workers of `make test` (pytest-xdist, --dist loadgroup) take the work: the longest
# single piece first (the demo, end to end), then the modules of the shared stack (one group, one worker), then
# the production topology, then everything else.
_FIRST = ("tests/e2e/", "@shared-stack", "tests/integration/test_production_topology.py")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep each module that starts services (integration, end to end, deploy) on one worker, and order the work.

    A module's services are module-scoped fixtures: split over two workers, they would start twice. Modules of the
    shared stack say so themselves (``xdist_group("shared-stack")``).
    """
    for item in items:
        path = item.nodeid.split("::")[0]
        if path.startswith(("tests/integration/", "tests/e2e/", "tests/deploy/")) and not item.get_closest_marker(
            "xdist_group"
        ):
            item.add_marker(pytest.mark.xdist_group(path.rsplit("/", 1)[-1].removesuffix(".py")))

    def rank(item: pytest.Item) -> int:
        shared = any(m.args and m.args[0] == "shared-stack" for m in item.iter_markers("xdist_group"))
        key = item.nodeid + ("@shared-stack" if shared else "")
        return next((i for i, prefix in enumerate(_FIRST) if prefix in key), len(_FIRST))

    items.sort(key=rank)
