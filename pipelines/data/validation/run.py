"""Data validation with Great Expectations: a dataset's reviewed suite run on a run's snapshot, and proposed suites.

The suite is a JSON file in ``expectations/`` in GX's own format, which a person reviews and commits. Each
validation runs in a GX file context under ``<home>/gx`` (runtime state, never in git), is keyed by the run
(a rerun replaces the run's earlier result) and updates the Data Docs site that the Airflow plugin serves under
``/mlops/data-docs/``. GX is imported lazily: it takes seconds, and the plugin only needs the site folder.
"""

from __future__ import annotations

import fcntl
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlparse

import pandas as pd

from pipelines.core.config import DatasetConfig
from pipelines.core.errors import DataValidationError
from pipelines.core.runs import RunContext
from pipelines.core.settings import Settings
from pipelines.data.validation.report import describe_failure, failure_message
from pipelines.data.validation.suite import add_type_checks, build_suite, load_suite, source_columns, suite_path
from pipelines.data.validation.summary import ValidationSummary

if TYPE_CHECKING:
    from great_expectations import ExpectationSuite
    from great_expectations.checkpoint.checkpoint import CheckpointResult
    from great_expectations.data_context.data_context.file_data_context import FileDataContext

log = logging.getLogger(__name__)


SITE_NAME = "local_site"
DATA_DOCS_ROUTE = "mlops/data-docs"
DATASOURCE = "snapshots"
BATCH_DEFINITION = "whole_snapshot"


# --- Data Docs location --------------------------------------------------------------------------------------


def gx_context_dir(settings: Settings) -> Path:
    """The GX context root (``great_expectations.yml``) of the project under ``settings.gx_dir``."""
    return settings.gx_dir / "gx"


def data_docs_site_dir(settings: Settings) -> Path:
    """The local folder GX builds the Data Docs site into (what the Airflow plugin serves)."""
    return gx_context_dir(settings) / "uncommitted" / "data_docs" / SITE_NAME


def data_docs_url(settings: Settings, relative_path: str = "index.html") -> str:
    """The public URL of a page of the Data Docs site, as served by the Airflow plugin."""
    return f"{settings.airflow_ui_url.rstrip('/')}/{DATA_DOCS_ROUTE}/{quote(relative_path.lstrip('/'))}"


# --- Running a suite -----------------------------------------------------------------------------------------


@contextmanager
def _gx_lock(settings: Settings) -> Iterator[None]:
    """One validation at a time per GX project: the context rewrites its config files."""
    settings.gx_dir.mkdir(parents=True, exist_ok=True)
    with (settings.gx_dir / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def get_context(settings: Settings) -> FileDataContext:
    """The file context rooted at ``settings.gx_dir`` (scaffolded on first use), without progress bars."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=settings.gx_dir)
    bars: Any = context.variables.progress_bars  # a ProgressBarsConfig, or a dict once read back from the file
    enabled = bars is None or (bars.get("globally", True) if isinstance(bars, dict) else bars.globally)
    if enabled:
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        context.variables.save()
    return context


def _forget_run(settings: Settings, suite: str, run_key: str) -> None:
    """Remove an earlier result (and its page) of the same run, so a rerun replaces rather than adds."""
    for folder in (
        gx_context_dir(settings) / "uncommitted" / "validations" / suite / run_key,
        data_docs_site_dir(settings) / "validations" / suite / run_key,
    ):
        if folder.is_dir():
            shutil.rmtree(folder)
            log.info("replacing the earlier validation of run %s (%s)", run_key, folder)


def validated_run_keys(settings: Settings, suite: str) -> list[str]:
    """The run keys with a stored validation result of ``suite``."""
    folder = gx_context_dir(settings) / "uncommitted" / "validations" / suite
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def forget_validations(settings: Settings, suite: str, run_keys: list[str]) -> int:
    """Remove the stored results and Data Docs pages of ``suite`` for ``run_keys`` and rebuild the site's index
    (so it links to no removed page); the bytes freed."""
    if not run_keys:
        return 0
    freed = 0
    with _gx_lock(settings):
        for run_key in run_keys:
            for folder in (
                gx_context_dir(settings) / "uncommitted" / "validations" / suite / run_key,
                data_docs_site_dir(settings) / "validations" / suite / run_key,
            ):
                if folder.is_dir():
                    freed += sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
                    shutil.rmtree(folder)
        get_context(settings).build_data_docs(site_names=[SITE_NAME])
    log.info("removed %d validation results of suite %s (%d bytes)", len(run_keys), suite, freed)
    return freed


def _run_checkpoint(
    context: FileDataContext, suite: ExpectationSuite, asset_name: str, frame: pd.DataFrame, run_key: str
) -> CheckpointResult:
    import great_expectations as gx
    from great_expectations.checkpoint.actions import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier

    suite = context.suites.add_or_update(suite)
    source = context.data_sources.add_or_update_pandas(DATASOURCE)
    asset = next((a for a in source.assets if a.name == asset_name), None) or source.add_dataframe_asset(asset_name)
    batch = next((b for b in asset.batch_definitions if b.name == BATCH_DEFINITION), None)
    batch = batch or asset.add_batch_definition_whole_dataframe(BATCH_DEFINITION)
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=f"{asset_name}-{suite.name}", data=batch, suite=suite)
    )
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=f"{asset_name}-{suite.name}",
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="update_data_docs", site_names=[SITE_NAME])],
            result_format={"result_format": "SUMMARY"},
        )
    )
    return checkpoint.run(
        batch_parameters={"dataframe": frame}, run_id=RunIdentifier(run_name=run_key, run_time=datetime.now(UTC))
    )


def _page_path(settings: Settings, context: FileDataContext, result: CheckpointResult) -> str:
    """The site-relative path of the validation result's page (``index.html`` if it cannot be found)."""
    site = data_docs_site_dir(settings).resolve()
    for key in result.run_results:
        for entry in context.get_docs_sites_urls(resource_identifier=key, site_name=SITE_NAME):
            page = Path(unquote(urlparse(str(entry.get("site_url") or "")).path)).resolve()
            if page.is_file() and page.is_relative_to(site):
                return page.relative_to(site).as_posix()
    return "index.html"


def validate_snapshot(
    config: DatasetConfig, settings: Settings, snapshot_path: str, run: RunContext
) -> ValidationSummary:
    """Run the dataset's reviewed suite on the snapshot; raise ``DataValidationError`` naming every failure."""
    from pipelines.data.extract import load_snapshot

    return validate_frame(config, settings, load_snapshot(snapshot_path), run, snapshot_path)


def run_suite(config: DatasetConfig, settings: Settings, frame: pd.DataFrame) -> ExpectationSuite:
    """The dataset's reviewed suite as GX runs it on ``frame``: plus a numeric check of every declared-numeric
    column that holds something else (``suite.add_type_checks``)."""
    data = add_type_checks(load_suite(settings.expectations_dir, config.expectation_suite), frame, config)
    return build_suite(data, str(suite_path(settings.expectations_dir, config.expectation_suite)))


def validate_frame(
    config: DatasetConfig, settings: Settings, frame: pd.DataFrame, run: RunContext, snapshot: str
) -> ValidationSummary:
    """Run the dataset's reviewed suite on ``frame`` (the rows of ``snapshot``) in the GX project, keyed by the
    run; raise ``DataValidationError`` naming every failure, its column, the rule and examples."""
    frame = source_columns(frame, config)
    suite = run_suite(config, settings, frame)
    with _gx_lock(settings):
        context = get_context(settings)
        _forget_run(settings, suite.name, run.key)
        result = _run_checkpoint(context, suite, config.name, frame, run.key)
        relative = _page_path(settings, context, result)
    results = [r.to_json_dict() for vr in result.run_results.values() for r in vr.results]
    failures = sorted(
        (describe_failure(r, list(frame.columns)) for r in results if not r.get("success")),
        key=lambda f: (f["column"] is not None, f["column"] or "", f["expectation"]),
    )
    summary = ValidationSummary(
        success=bool(result.success) and not failures,
        suite=suite.name,
        run_key=run.key,
        snapshot=snapshot,
        evaluated=len(results),
        failed=len(failures),
        data_docs_url=data_docs_url(settings, relative),
        data_docs_path=str(data_docs_site_dir(settings) / relative),
        failures=tuple(failures),
    )
    if not summary.success:
        raise DataValidationError(failure_message(summary), list(summary.failures), summary.data_docs_url)
    log.info(
        "%d expectations of suite %s passed on %s; Data Docs: %s",
        summary.evaluated,
        summary.suite,
        snapshot,
        summary.data_docs_url,
    )
    return summary
