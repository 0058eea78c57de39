"""Dataset config validation: the shipped config loads; broken files fail naming the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipelines.core.config import DatasetConfig, load_config_file, load_dataset_config
from pipelines.core.errors import ConfigError
from tests.conftest import REPO_ROOT

SHIPPED = REPO_ROOT / "pipelines" / "conf" / "datasets" / "flights.yaml"


def _write(tmp_path: Path, data: dict, name: str = "flights") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _shipped() -> dict:
    return yaml.safe_load(SHIPPED.read_text())


def test_shipped_config_is_valid(flights_config: DatasetConfig) -> None:
    # given the shipped file, when loaded, then it describes the flights problem
    assert flights_config.model.registered_name == "flights-delay"
    assert flights_config.target.column == "arr_delay"
    assert {"carrier", "origin", "day_of_week"} <= set(flights_config.feature_names)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.pop("target"), "target: Field required"),
        (lambda d: d["model"].update(estimator="xgboost.XGBClassifier"), "model.estimator"),
        (lambda d: d["features"].append({"name": "dep_delay", "type": "numeric"}), "dep_delay"),
        (lambda d: d["features"].append({"name": "arr_delay", "type": "numeric"}), "arr_delay"),
        (lambda d: d["features"][0].update(type="text"), "features.0.type"),
        (lambda d: d["gate"]["floors"].update(auc=0.9), "unknown metric"),
        (
            lambda d: d["gate"]["floors"].update(rmse=3.0),
            "gate.floors: metric(s) ['rmse'] do not belong to a binary task; allowed: roc_auc, pr_auc",
        ),
        (lambda d: d["target"].update(positive="Yes"), "exactly one of target.positive or target.rule"),
        (lambda d: d["target"].pop("rule"), "exactly one of target.positive or target.rule"),
        (lambda d: d["target"].update(task="multiclass"), "target.rule only apply to a binary target"),
        (lambda d: d["target"].update(task="ordinal"), "target.task"),
        (lambda d: d["source"].update(kind="ftp"), "source.kind"),
        (lambda d: d["source"].pop("table"), "a staged source needs source.table"),
        (lambda d: d["source"].update(table="sales.flights"), "staged source is the warehouse's own table"),
        (lambda d: d["source"].update(kind="table", seed=None, url_env="db_url"), "source.url_env"),
        (lambda d: d["source"].update(kind="query", table=None, seed=None, query="DELETE FROM x"), "one SELECT"),
        (lambda d: d["source"].update(time_column=None), "derived from the time column"),
        (lambda d: d["gate"]["slice_floor"].update(metric="log_loss"), "takes max, not min"),
        (lambda d: d.update(unexpected_key=1), "unexpected_key: Extra inputs are not permitted"),
        (lambda d: d["window"].update(end="2012-01-01"), "must be after start"),
        (lambda d: d["split"].update(holdout_fraction=1.5), "split.holdout_fraction"),
        (lambda d: d.update(slices=["tailnum"]), "slices ['tailnum'] are not features"),
        (lambda d: d["approval"].update(mode="sometimes"), "approval.mode"),
        (lambda d: d["monitoring"]["drift"].update(ignore=["tailnum"]), "monitoring.drift features ['tailnum']"),
        (lambda d: d["monitoring"]["drift"].update(num_method="ks"), "monitoring.drift.num_method"),
        (lambda d: d["retraining"]["performance_floor"].update(auc=0.6), "unknown metric(s) ['auc']"),
        (lambda d: d["retraining"].update(approval="never"), "retraining.approval"),
        (lambda d: d["retraining"].update(drift_windows=0), "retraining.drift_windows"),
    ],
)
def test_invalid_config_is_refused_with_file_and_field(tmp_path: Path, mutate, expected: str) -> None:
    # given a copy of the shipped config with one mistake
    data = _shipped()
    mutate(data)
    path = _write(tmp_path, data)
    # when loaded, then the error names the file and the field
    with pytest.raises(ConfigError) as err:
        load_config_file(path)
    assert str(path) in str(err.value)
    assert expected in str(err.value)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: d["model"].update(estimator="sklearn.ensemble.HistGradientBoostingRegressor"),
            "is not a scikit-learn classifier with predict_proba, but target.task is binary",
        ),
        (
            lambda d: d["model"].update(estimator="sklearn.svm.LinearSVC", params={}, skops_trusted_types=[]),
            "is not a scikit-learn classifier with predict_proba",
        ),
        (
            lambda d: (
                (d["target"].update(task="regression", rule=None), d.update(gate={}, retraining={}))
                and d["model"].pop("threshold")
            ),
            "is not a regressor, but target.task is regression",
        ),
        (lambda d: d["model"].update(estimator="sklearn.ensemble.NoSuchForest"), "cannot be imported"),
    ],
)
def test_estimator_is_checked_against_the_task_at_load(tmp_path: Path, mutate, expected: str) -> None:
    # given a config whose estimator does not fit its task
    data = _shipped()
    mutate(data)
    path = _write(tmp_path, data)
    # when loaded as the steps load it, then the error names the file, the field and the task
    with pytest.raises(ConfigError) as err:
        load_dataset_config("flights", tmp_path)
    assert str(path) in str(err.value) and "model.estimator" in str(err.value)
    assert expected in str(err.value)


def test_every_shipped_example_loads_with_its_task() -> None:
    # given the shipped dataset configs, when loaded with their estimators checked
    shipped = {path.stem: load_dataset_config(path.stem, SHIPPED.parent) for path in SHIPPED.parent.glob("*.yaml")}
    # then each example declares the task it demonstrates
    assert {name: c.task for name, c in shipped.items()}.items() >= {
        "flights": "binary",
        "flights_minutes": "regression",
        "wine": "multiclass",
        "breast_cancer": "binary",
    }.items()
    # and the examples without a time column split at random and derive their row key
    assert shipped["wine"].split_method == "random" and shipped["wine"].key_name == "_row_key"
    assert shipped["breast_cancer"].target.positive == "malignant"
    assert shipped["flights"].split_method == "time" and shipped["flights"].key_name == "flight_id"


def test_unknown_dataset_lists_the_configured_ones() -> None:
    with pytest.raises(ConfigError, match=r"no dataset 'flight'.*datasets: .*flights"):
        load_dataset_config("flight", SHIPPED.parent)


def test_name_must_match_file_name(tmp_path: Path) -> None:
    path = _write(tmp_path, _shipped(), name="other")
    with pytest.raises(ConfigError, match="must match the file name"):
        load_config_file(path)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(tmp_path / "nope.yaml")
    bad = tmp_path / "flights.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config_file(bad)


def test_overrides_are_merged_and_validated(flights_config: DatasetConfig) -> None:
    # given overrides as a DAG run would pass them
    crippled = flights_config.with_overrides(
        {"model": {"estimator": "sklearn.dummy.DummyClassifier", "params": {"strategy": "prior"}}}
    )
    # then the untouched fields survive and the new ones apply
    assert crippled.model.estimator == "sklearn.dummy.DummyClassifier"
    assert crippled.model.params == {"strategy": "prior"}
    assert crippled.model.registered_name == "flights-delay"
    # and invalid overrides are refused with the field named
    with pytest.raises(ConfigError, match=r"approval\.mode"):
        flights_config.with_overrides({"approval": {"mode": "never"}})
    with pytest.raises(ConfigError, match="forbidden"):
        flights_config.with_overrides({"features": [{"name": "arr_time", "type": "numeric"}]})


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"approval": {"mode": "auto"}}, "approval.mode"),
        ({"gate": {"min_improvement": -1.0}}, "gate.min_improvement"),
        ({"deploy": {}}, "deploy"),
        ({"serving": {"max_records": 10}}, "serving.max_records"),
        ({"monitoring": {"drift": {"share": 1.0}}}, "monitoring.drift"),
        ({"retraining": {"approval": "auto"}}, "retraining.approval"),
        ({"features": []}, "features"),
        ({"model": {"registered_name": "wine-quality"}}, "model.registered_name"),
        ({"model": {"skops_trusted_types": ["builtins.eval"]}}, "model.skops_trusted_types"),
        ({"model": "sklearn.dummy.DummyClassifier"}, "model"),
        ({"split": {"holdout_fraction": 0.01}}, "split.holdout_fraction"),
        ({"model": {"threshold": 0.01}}, "model.threshold"),
    ],
)
def test_a_run_cannot_override_policy_data_or_names(flights_config: DatasetConfig, overrides: dict, named: str) -> None:
    # when a run's overrides touch anything but what is tuned per run
    with pytest.raises(ConfigError) as caught:
        flights_config.with_run_overrides(overrides)
    # then the run is refused, naming the key and what may be overridden
    assert f"may not change {named}" in str(caught.value)
    assert "model.params" in str(caught.value) and "window.*" in str(caught.value)


def test_a_run_may_tune_the_estimator_the_split_and_the_window(flights_config: DatasetConfig) -> None:
    # given the overrides a data scientist uses
    tuned = flights_config.with_run_overrides(
        {
            "model": {"params": {"max_iter": 20}, "seed": 7, "scale_numeric": True},
            "window": {"start": "2013-02-01", "end": "2013-04-01"},
        }
    )
    # then they apply, and the policies are those of the file
    assert tuned.model.params == {"max_iter": 20} and tuned.model.seed == 7 and tuned.model.scale_numeric
    assert tuned.window is not None and str(tuned.window.start) == "2013-02-01"
    assert tuned.approval == flights_config.approval and tuned.gate == flights_config.gate
    # and no overrides is the file's config itself
    assert flights_config.with_run_overrides({}) is flights_config
    assert flights_config.with_run_overrides(None) is flights_config


def test_monitoring_settings_of_the_shipped_config(flights_config: DatasetConfig) -> None:
    # given the shipped file, then calendar features are reported but not counted for dataset drift
    assert "day_of_week" not in flights_config.drift_features and "month" not in flights_config.drift_features
    assert len(flights_config.drift_features) == 13
    # and the monitoring reports go to their own MLflow experiment
    assert flights_config.monitoring_experiment == "flights-monitoring"
    assert flights_config.monitoring.schedule == "@daily"


def test_overrides_of_a_regression_config_keep_it_valid() -> None:
    # given the shipped regression example, when a run overrides a model param
    config = load_dataset_config("flights_minutes", SHIPPED.parent)
    tuned = config.with_overrides({"model": {"params": {"max_iter": 20}}})
    # then the binary-only fields stay unset and the override applies
    assert tuned.model.params == {"max_iter": 20} and tuned.task == "regression"
    assert "threshold" not in tuned.model.model_fields_set
