"""The shipped examples of every task type, trained and deployed through the real Airflow scheduler.

``flights_minutes`` (regression on the demo's staged flights), ``wine`` (multiclass, a Parquet file written once by
``seed``, no time column) and ``breast_cancer`` (binary with string labels, staged, no time and no key column) each
run validate -> train -> evaluate -> gate -> approve (policy) -> deploy as ``train_<name>`` on the shared stack, and
their MLflow runs show their task's metrics and plots. The three runs are triggered together and followed to the end.
A training run on a user's own table (SQLite file, and a schema-qualified PostgreSQL table) leaves it byte for byte.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from mlflow import MlflowClient

from pipelines import steps
from pipelines.core.config import load_dataset_config
from pipelines.core.errors import ConfigError
from pipelines.core.runs import RunContext
from pipelines.stack.settings import StackSettings
from tests.conftest import throwaway_postgres
from tests.integration.conftest import AT, EXAMPLES, SHARED, SHIPPED_DATASETS
from tests.stack import pointed_at, train_champion

pytestmark = [pytest.mark.integration, SHARED]

# What each example's run must show: its metrics (on the holdout) and its plots (under plots/).
EXPECTED: dict[str, dict[str, Any]] = {
    "flights_minutes": {
        "model": "flights-delay-minutes",
        "metrics": {"holdout_rmse", "holdout_mae", "holdout_r2", "holdout_mean_error", "train_rmse"},
        "plots": {"predicted_vs_actual.png", "residuals.png", "error_by_slice.png"},
        "params": {"task": "regression"},
    },
    "wine": {
        "model": "wine-cultivar",
        "metrics": {
            "holdout_accuracy",
            "holdout_f1_macro",
            "holdout_log_loss",
            "holdout_roc_auc_ovr",
            "holdout_min_class_recall",
            "holdout_recall.class_0",
        },
        "plots": {"confusion_matrix.png"},
        "params": {"task": "multiclass", "classes": "class_0,class_1,class_2", "split": "random"},
    },
    "breast_cancer": {
        "model": "breast-cancer-diagnosis",
        "metrics": {"holdout_roc_auc", "holdout_pr_auc", "holdout_recall", "holdout_accuracy"},
        "plots": {"confusion_matrix.png", "roc.png", "precision_recall.png", "calibration.png"},
        "params": {"task": "binary", "positive_class": "malignant", "split": "random"},
    },
}


@pytest.fixture(scope="module")
def runs(example_runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The examples' ``train_<name>`` runs (triggered once for the session: the serving modules read their
    champions too)."""
    return example_runs


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs_through_airflow_and_shows_its_task(
    name: str, runs: dict[str, dict[str, Any]], shared_stack: StackSettings
) -> None:
    expected = EXPECTED[name]
    run = runs[name]
    # then every step of train_<name> succeeded, approved by policy, and nothing was refused
    assert run["state"] == "success", run["tasks"]
    for task in ("extract", "validate", "train", "evaluate", "gate", "approve_by_policy", "deploy"):
        assert run["tasks"][task] == "success", (task, run["tasks"])
    assert run["tasks"]["refuse"] == "skipped" and run["tasks"]["approve"] == "skipped"

    # and its version is the champion, approved by the policy
    mlf = MlflowClient(tracking_uri=shared_stack.mlflow_url, registry_uri=shared_stack.mlflow_url)
    champion = mlf.get_model_version_by_alias(expected["model"], "champion")
    assert champion.version == run["train"]["model_version"]
    assert champion.tags["approval.by"] == "policy" and champion.tags["deploy.status"] == "champion"
    assert champion.tags["task"] == expected["params"]["task"]

    # and its MLflow run shows the task's metrics, params and plots
    data = mlf.get_run(run["train"]["run_id"]).data
    assert expected["metrics"] <= set(data.metrics), sorted(data.metrics)
    assert expected["params"].items() <= data.params.items(), data.params
    plots = {f.path.rsplit("/", 1)[-1] for f in mlf.list_artifacts(run["train"]["run_id"], "plots")}
    assert expected["plots"] <= plots, plots
    # and no metric of another task leaks in (a regression run has no ROC AUC, a classifier no RMSE)
    foreign = {"holdout_roc_auc", "holdout_accuracy"} if name == "flights_minutes" else {"holdout_rmse"}
    assert not foreign & set(data.metrics)


@dataclass(frozen=True)
class ClinicTable:
    """A user's table of biopsies (scikit-learn's breast cancer rows): its URL, its name, how to fingerprint it."""

    url: str
    table: str
    file: Path | None = None

    def dump(self) -> tuple[list[tuple[Any, ...]], str | None]:
        """Every row in a stable order (PostgreSQL: with xmin, which a rewritten row changes) and the file's hash."""
        xmin = ", xmin::text AS row_version" if self.url.startswith("postgresql") else ""
        engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                rows = conn.execute(sa.text(f"SELECT *{xmin} FROM {self.table} ORDER BY mean_radius, mean_texture"))
                dumped = [tuple(row) for row in rows]
        finally:
            engine.dispose()
        return dumped, hashlib.sha256(self.file.read_bytes()).hexdigest() if self.file else None


def _biopsies() -> pd.DataFrame:
    from pipelines.data.sources import load_sklearn

    return load_sklearn(load_dataset_config("breast_cancer", SHIPPED_DATASETS))


@pytest.fixture(params=["sqlite", "postgresql"])
def clinic_table(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ClinicTable]:
    """The biopsies in a user's own database: a SQLite file, or schema ``clinic`` of a throwaway PostgreSQL db."""
    frame = _biopsies()
    if request.param == "sqlite":
        path = tmp_path / "clinic.db"
        engine = sa.create_engine(f"sqlite:///{path}", poolclass=sa.pool.NullPool)
        frame.to_sql("biopsies", engine, index=False)
        engine.dispose()
        yield ClinicTable(f"sqlite:///{path}", "biopsies", path)
        return
    with throwaway_postgres("mlops_clinic") as url:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE SCHEMA clinic"))
        frame.to_sql("biopsies", engine, schema="clinic", index=False)
        engine.dispose()
        yield ClinicTable(url, "clinic.biopsies")


def test_a_training_run_on_a_user_table_leaves_it_byte_for_byte(
    clinic_table: ClinicTable,
    shared_stack: StackSettings,
    shared_datasets: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given the user's biopsies table, named in a config by an environment variable (no URL in the YAML)
    dialect = clinic_table.url.split(":", 1)[0].split("+", 1)[0]
    name = f"biopsies_{dialect}"
    config = yaml.safe_load((SHIPPED_DATASETS / "breast_cancer.yaml").read_text())
    config["name"] = name
    config["source"] = {"kind": "table", "table": clinic_table.table, "url_env": "CLINIC_DB_URL"}
    config["model"].update(registered_name=f"biopsies-{dialect}", experiment=name)
    (shared_datasets / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    monkeypatch.setenv("CLINIC_DB_URL", clinic_table.url)
    before = clinic_table.dump()
    assert len(before[0]) == 569

    with pointed_at(shared_stack):
        # when the demo's seed is asked to fill it, then it refuses: seed never writes to a user's table
        with pytest.raises(ConfigError, match="never writes to a table or query source"):
            steps.seed(name)
        # and when a whole training run reads it (extract, validate, train, evaluate, gate, approval, deploy)
        run = RunContext(dag_id="tests", run_id=f"clinic_{dialect}", reason="test")
        chain = train_champion(name, run, None, None, AT)

    # then the run went through on the user's rows, all 569 of them
    assert chain["snapshot"]["rows"] == 569 and chain["gate"]["passed"], chain["gate"]["summary"]
    assert chain["deploy"]["champion_version"] == "1"
    # and the table is byte for byte what it was (rows, row versions and, for SQLite, the file itself)
    assert clinic_table.dump() == before
