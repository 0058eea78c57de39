"""The compiled predictor gives exactly what the fitted pipeline gives, or it is not used; every task's predictor,
load check and answers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipelines.core.config import DatasetConfig, load_config_file
from pipelines.data.validation.suite import load_suite
from pipelines.serving.answers import answer, response_schema
from pipelines.serving.model_store import (
    LoadedModel,
    ModelLoadError,
    model_classes,
    model_task,
    output_problem,
    smoke_test,
)
from pipelines.serving.parsing import Batch, parse_batch
from pipelines.serving.predictors import (
    CompiledPredictor,
    FramePredictor,
    PyfuncPredictor,
    batch_frame,
    best_predictor,
    known_categories,
    probe_batch,
    split_batch,
)
from pipelines.training.contract import FieldSpec, InputContract, contract_from_config
from pipelines.training.modeling import build_model
from tests.conftest import REPO_ROOT


def _training_frame(rng: np.random.Generator, contract: InputContract, rows: int = 3000) -> pd.DataFrame:
    """Synthetic flights-shaped data: frequent and rare categories, missing weather, a target tied to both."""
    cats = {
        "carrier": ["UA", "DL", "AA", "B6", "OO"],
        "origin": ["EWR", "JFK", "LGA"],
        "dest": [f"D{i:02d}" for i in range(40)],
    }
    data: dict[str, object] = {}
    for spec in contract.fields:
        if spec.kind == "categorical":
            pool = cats[spec.name]
            weights = np.array([50.0 if i < 3 else 1.0 for i in range(len(pool))])
            data[spec.name] = rng.choice(pool, rows, p=weights / weights.sum())
        else:
            lo = spec.minimum if spec.minimum is not None else 0.0
            hi = spec.maximum if spec.maximum is not None else 1.0
            values = rng.uniform(lo, hi, rows)
            if spec.nullable:
                values[rng.random(rows) < 0.05] = np.nan
            data[spec.name] = values
    frame = pd.DataFrame(data)
    frame["carrier"] = frame["carrier"].astype(object)
    return frame


@pytest.mark.parametrize(
    "overrides",
    [
        {"model": {"one_hot_min_frequency": 20}},
        {"model": {"one_hot_min_frequency": 20, "scale_numeric": True}},
        {
            "model": {
                "one_hot_min_frequency": 20,
                "estimator": "sklearn.linear_model.LogisticRegression",
                "params": {"max_iter": 300},
                "scale_numeric": True,
            }
        },
    ],
    ids=["hist-gradient-boosting", "scaled", "logistic-regression"],
)
def test_compiled_predictor_reproduces_the_pipeline_exactly(flights_config, overrides: dict) -> None:
    # given a pipeline built as training builds it, fitted on data with nulls and rare categories
    config = flights_config.with_overrides(overrides)
    contract = contract_from_config(config, load_suite(REPO_ROOT / "expectations", "flights"))
    rng = np.random.default_rng(1)
    frame = _training_frame(rng, contract)
    target = (frame["carrier"].isin(["UA", "OO"]) ^ (frame["temp"].fillna(50) > 60)).astype(int)
    model = build_model(config).fit(frame, target)
    # when the best predictor is chosen
    predictor = best_predictor(model, contract)
    # then it is the compiled one, and on fresh records (unseen categories and nulls included) it matches exactly
    assert isinstance(predictor, CompiledPredictor)
    probe = probe_batch(contract, known_categories(model), 500, seed=7)
    expected = model.predict_proba(batch_frame(probe, contract))[:, 1]
    np.testing.assert_array_equal(predictor.predict(probe), expected)
    # and record by record
    # (compared record by record: a linear model's matrix product may differ in the last bit from one batch size
    # to another, in scikit-learn as in here)
    reference = FramePredictor(model, contract)
    for part in split_batch(probe, 1)[:80]:
        np.testing.assert_array_equal(predictor.predict(part), reference.predict(part))
    # and gradient-boosted trees are walked by the compiled walker
    assert (predictor.trees is not None) == ("HistGradientBoosting" in config.model.estimator)


def test_preprocessing_the_compiler_does_not_know_is_served_as_fitted(flights_config) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import KBinsDiscretizer

    contract = InputContract(
        (
            FieldSpec("temp", "numeric", nullable=False, minimum=-20, maximum=120),
            FieldSpec("humid", "numeric", nullable=False, minimum=0, maximum=100),
        )
    )
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"temp": rng.uniform(-20, 120, 500), "humid": rng.uniform(0, 100, 500)})
    model = Pipeline(
        [
            (
                "pre",
                ColumnTransformer(
                    [
                        (
                            "bins",
                            KBinsDiscretizer(n_bins=4, encode="ordinal", quantile_method="averaged_inverted_cdf"),
                            ["temp", "humid"],
                        )
                    ]
                ),
            ),
            ("model", LogisticRegression()),
        ]
    ).fit(frame, (frame.temp > 50).astype(int))
    # then the fitted pipeline serves, unchanged
    predictor = best_predictor(model, contract)
    assert isinstance(predictor, FramePredictor)


def test_a_compiled_predictor_that_disagrees_is_not_used(flights_config, monkeypatch: pytest.MonkeyPatch) -> None:
    contract = contract_from_config(flights_config, load_suite(REPO_ROOT / "expectations", "flights"))
    rng = np.random.default_rng(3)
    frame = _training_frame(rng, contract, rows=1500)
    model = build_model(flights_config.with_overrides({"model": {"one_hot_min_frequency": 20}})).fit(
        frame, (frame["temp"].fillna(50) > 60).astype(int)
    )
    # given a compiler that gets one numeric column wrong
    original = CompiledPredictor.matrix

    def off_by_a_bit(self: CompiledPredictor, batch) -> np.ndarray:  # type: ignore[no-untyped-def]
        x = original(self, batch)
        x[:, next(n.out_column for n in self.numeric if n.name == "temp")] += 10.0
        return x

    monkeypatch.setattr(CompiledPredictor, "matrix", off_by_a_bit)
    # then the verification catches it and the fitted pipeline serves
    assert isinstance(best_predictor(model, contract), FramePredictor)


# Every task: the predictor's output, the load checks and the answers of POST /predict.


def _shipped(name: str) -> DatasetConfig:
    return load_config_file(REPO_ROOT / "pipelines" / "conf" / "datasets" / f"{name}.yaml")


@pytest.fixture(scope="module")
def wine() -> tuple[Any, InputContract, pd.DataFrame]:
    """The shipped wine config's pipeline fitted on scikit-learn's wine data (string classes), and its contract."""
    from sklearn.datasets import load_wine

    config = _shipped("wine")
    bunch = load_wine(as_frame=True)
    frame = bunch.frame.rename(columns={"od280/od315_of_diluted_wines": "od280_od315_of_diluted_wines"})
    labels = np.array(["class_0", "class_1", "class_2"], dtype=object)[bunch.target.to_numpy()]
    features = frame[config.feature_names]
    model = build_model(config).fit(features, labels)
    return model, contract_from_config(config, load_suite(REPO_ROOT / "expectations", "wine")), features


@pytest.fixture(scope="module")
def minutes() -> tuple[Any, InputContract]:
    """The shipped flights_minutes pipeline (gradient-boosted regression) fitted on flights-shaped data."""
    config = _shipped("flights_minutes")
    contract = contract_from_config(config, load_suite(REPO_ROOT / "expectations", "flights_minutes"))
    frame = _training_frame(np.random.default_rng(5), contract, rows=1500)
    delay = 30 * frame["carrier"].isin(["UA", "OO"]) + frame["temp"].fillna(50) / 3 - 10
    model = build_model(config).set_params(model__max_iter=30).fit(frame, delay)
    return model, contract


def _records_batch(features: pd.DataFrame, contract: InputContract) -> Batch:
    records = features.astype(object).where(features.notna(), None).to_dict(orient="records")
    return parse_batch({"records": records, "ids": [f"w{i}" for i in range(len(records))]}, contract, len(records))


def test_a_multiclass_model_is_served_by_its_pipeline_with_a_probability_per_class(wine) -> None:
    model, contract, features = wine
    # when the best predictor is chosen for a multiclass model
    predictor = best_predictor(model, contract, task="multiclass")
    # then it is the fitted pipeline, and it returns every class's probability in the model's class order
    assert isinstance(predictor, FramePredictor) and predictor.kind == "pipeline"
    batch = _records_batch(features.iloc[::20], contract)
    out = predictor.predict(batch)
    np.testing.assert_array_equal(out, model.predict_proba(features.iloc[::20]))
    assert out.shape == (batch.size, 3) and output_problem(out, batch.size, "multiclass", 3) is None


def test_a_regression_model_is_served_by_its_pipeline_with_its_values(minutes) -> None:
    model, contract = minutes
    predictor = best_predictor(model, contract, task="regression")
    probe = probe_batch(contract, known_categories(model), 200, seed=3)
    out = predictor.predict(probe)
    assert isinstance(predictor, FramePredictor)
    np.testing.assert_array_equal(out, model.predict(batch_frame(probe, contract)))
    assert out.shape == (200,) and output_problem(out, 200, "regression") is None
    # and a regression output is not held to [0, 1]
    assert (out < 0).any() or (out > 1).any()


def test_pyfunc_outputs_are_shaped_per_task() -> None:
    contract = InputContract((FieldSpec("x", "numeric", nullable=False, minimum=0, maximum=1),))
    batch = probe_batch(contract, {}, 4)

    class Fixed:
        def __init__(self, out: np.ndarray) -> None:
            self.out = out

        def predict(self, _frame: pd.DataFrame) -> np.ndarray:
            return self.out

    two = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.0, 1.0]])
    three = np.full((4, 3), 1 / 3)
    assert PyfuncPredictor(Fixed(two), contract).predict(batch).tolist() == [0.1, 0.8, 0.5, 1.0]
    assert PyfuncPredictor(Fixed(three), contract, "multiclass").predict(batch).shape == (4, 3)
    column = np.array([[1.5], [2.5], [-1.0], [0.0]])
    assert PyfuncPredictor(Fixed(column), contract, "regression").predict(batch).tolist() == [1.5, 2.5, -1.0, 0.0]


@pytest.mark.parametrize(
    ("task", "out", "classes", "problem"),
    [
        ("binary", np.array([0.2, 0.9]), 0, None),
        ("binary", np.array([0.2, 1.2]), 0, "not all in [0, 1]"),
        ("binary", np.array([[0.8, 0.2], [0.1, 0.9]]), 0, "shape (2, 2)"),
        ("multiclass", np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]]), 3, None),
        ("multiclass", np.array([[0.2, 0.3, 0.4], [1.0, 0.0, 0.0]]), 3, "sum to 1"),
        ("multiclass", np.array([[0.5, 0.5], [1.0, 0.0]]), 3, "expected (2, 3)"),
        ("multiclass", np.array([[np.nan, 0.5, 0.5], [1.0, 0.0, 0.0]]), 3, "NaN"),
        ("regression", np.array([-40.0, 350.0]), 0, None),
        ("regression", np.array([1.0, np.inf]), 0, "NaN or infinite"),
        ("regression", np.array([1.0]), 0, "expected (2,)"),
    ],
)
def test_the_load_check_refuses_outputs_wrong_for_the_task(task, out, classes, problem) -> None:
    found = output_problem(out, 2, task, classes)
    assert found is None if problem is None else problem in (found or "")


def test_a_version_whose_output_is_wrong_for_its_task_is_refused(wine) -> None:
    model, contract, features = wine
    example = _records_batch(features.head(5), contract)
    # given the wine pipeline served as if it were a regression model (n x 3 where n values are expected)
    wrong = FramePredictor(model, contract, "multiclass")
    # then the smoke test refuses it, naming the task and the shape; as multiclass with 3 classes it passes
    with pytest.raises(ModelLoadError, match=r"smoke test \(regression\).*shape \(5, 3\)"):
        smoke_test(wrong, contract, example, "models:/wine/1", "regression")
    smoke_test(wrong, contract, example, "models:/wine/1", "multiclass", 3)


def test_the_task_and_classes_come_from_the_metadata_else_the_estimator(wine) -> None:
    model, _, _ = wine
    uri = "models:/wine-cultivar/1"
    # a model from before tasks existed is binary; an unknown task is refused
    assert model_task({}, uri) == "binary"
    assert model_task({"mlops.task": "multiclass"}, uri) == "multiclass"
    with pytest.raises(ModelLoadError, match="unknown task 'ranking'"):
        model_task({"mlops.task": "ranking"}, uri)
    # multiclass classes: the metadata's when it agrees with the estimator, the estimator's without metadata
    expected = ("class_0", "class_1", "class_2")
    assert model_classes({"mlops.classes": list(expected)}, model, "multiclass", uri) == expected
    assert model_classes({}, model, "multiclass", uri) == expected
    assert model_classes({"mlops.classes": list(expected)}, None, "multiclass", uri) == expected
    assert model_classes({}, model, "binary", uri) == ()
    with pytest.raises(ModelLoadError, match="are not the fitted"):
        model_classes({"mlops.classes": ["class_2", "class_1", "class_0"]}, model, "multiclass", uri)
    with pytest.raises(ModelLoadError, match="names no classes"):
        model_classes({}, None, "multiclass", uri)


def test_binary_answers_are_unchanged() -> None:
    answered = answer("binary", np.array([0.25, 0.3, 0.9]), ["a", None, "c"], 0.3)
    assert answered.predictions == [
        {"id": "a", "probability": 0.25, "decision": 0},
        {"id": None, "probability": 0.3, "decision": 1},
        {"id": "c", "probability": 0.9, "decision": 1},
    ]
    assert np.frombuffer(answered.outputs).tolist() == [0.25, 0.3, 0.9]
    assert np.frombuffer(answered.decisions, dtype=np.int8).tolist() == [0, 1, 1]


def test_multiclass_answers_name_the_class_and_every_probability(wine) -> None:
    model, contract, features = wine
    classes = ("class_0", "class_1", "class_2")
    out = FramePredictor(model, contract, "multiclass").predict(_records_batch(features.iloc[[0, 80, 170]], contract))
    # when the answers are built
    answered = answer("multiclass", out, ["w0", "w80", "w170"], 0.5, classes)
    # then each names the model's own prediction and gives every class's probability by name
    assert [a["class"] for a in answered.predictions] == list(model.predict(features.iloc[[0, 80, 170]]))
    assert [a["id"] for a in answered.predictions] == ["w0", "w80", "w170"]
    first = answered.predictions[0]["probabilities"]
    assert list(first) == list(classes) and first == dict(zip(classes, out[0].tolist(), strict=True))
    assert np.frombuffer(answered.outputs).reshape(3, 3).tolist() == out.tolist() and answered.decisions == b""
    # and a tie goes to the first class, as scikit-learn's predict
    tie = answer("multiclass", np.array([[0.4, 0.4, 0.2]]), [None], 0.5, classes)
    assert tie.predictions[0]["class"] == "class_0"
    with pytest.raises(ValueError, match="do not match the 2 classes"):
        answer("multiclass", out, ["a", "b", "c"], 0.5, classes[:2])


def test_regression_answers_give_the_value() -> None:
    answered = answer("regression", np.array([-3.25, 17.0]), ["x", "y"], 0.5)
    assert answered.predictions == [{"id": "x", "value": -3.25}, {"id": "y", "value": 17.0}]
    assert np.frombuffer(answered.outputs).tolist() == [-3.25, 17.0] and answered.decisions == b""
    with pytest.raises(ValueError, match="unknown task"):
        answer("ranking", np.array([1.0]), ["x"], 0.5)


def test_loaded_models_describe_their_task(wine) -> None:
    model, contract, _ = wine
    common = {
        "name": "m",
        "version": "1",
        "run_id": None,
        "since": datetime(2026, 1, 1, tzinfo=UTC),
        "contract": contract,
        "threshold": 0.3,
        "load_seconds": 1.0,
    }
    multiclass = LoadedModel(
        predictor=FramePredictor(model, contract, "multiclass"),
        task="multiclass",
        classes=("class_0", "class_1", "class_2"),
        **common,
    ).describe()
    binary = LoadedModel(predictor=FramePredictor(model, contract), **common).describe()
    regression = LoadedModel(predictor=FramePredictor(model, contract, "regression"), task="regression", **common)
    assert multiclass["task"] == "multiclass" and multiclass["classes"] == ["class_0", "class_1", "class_2"]
    assert "threshold" not in multiclass
    assert binary["task"] == "binary" and binary["threshold"] == 0.3 and "classes" not in binary
    assert set(regression.describe()) >= {"task", "version"} and "threshold" not in regression.describe()


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_the_openapi_page_shows_the_answer_of_the_task(task: str) -> None:
    schema = response_schema(task)
    expected = {"binary": "probability", "multiclass": "class", "regression": "value"}[task]
    assert expected in schema["required"] and "id" in schema["required"]
