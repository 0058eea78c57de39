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
    # and gradient-boosted trees are walked by the compiled walker, which the kind says
    trees = "HistGradientBoosting" in config.model.estimator
    assert (predictor.trees is not None) == trees
    assert predictor.kind == ("compiled" if trees else "compiled-preprocessing")


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


# Every task compiled: multiclass (scikit-learn's wine data) and regression (its diabetes data), each with nulls and a
# categorical column whose probe records include an unseen category.


def _contract_of(frame: pd.DataFrame) -> InputContract:
    """Every column nullable; a number's bounds a tenth of its range beyond what the data holds."""
    fields = []
    for name in frame.columns:
        if frame[name].dtype == object:
            fields.append(FieldSpec(name, "categorical"))
        else:
            lo, hi = float(frame[name].min()), float(frame[name].max())
            fields.append(FieldSpec(name, "numeric", minimum=lo - (hi - lo) / 10, maximum=hi + (hi - lo) / 10))
    return InputContract(tuple(fields))


def _with_features(config: DatasetConfig, frame: pd.DataFrame, overrides: dict[str, Any]) -> DatasetConfig:
    features = [{"name": c, "type": "categorical" if frame[c].dtype == object else "numeric"} for c in frame.columns]
    return config.with_overrides({"features": features, **overrides})


Fitted = tuple[DatasetConfig, pd.DataFrame, np.ndarray, InputContract]


@pytest.fixture(scope="module")
def banded_wine() -> Fitted:
    """scikit-learn's wine data with a categorical column binned from proline (its top band, 6 wines, rarer than
    the encoder's minimum frequency), a tenth of alcohol, hue and bands missing; the shipped wine config with it."""
    from sklearn.datasets import load_wine

    bunch = load_wine(as_frame=True)
    frame = bunch.frame.drop(columns="target").rename(
        columns={"od280/od315_of_diluted_wines": "od280_od315_of_diluted_wines"}
    )
    bands = pd.cut(frame["proline"], [0, 500, 800, 1200, 1400, 2000], labels=["low", "mid", "high", "higher", "top"])
    frame["proline_band"] = bands.astype(object)
    rng = np.random.default_rng(11)
    for column in ("alcohol", "hue", "proline_band"):
        frame.loc[rng.random(len(frame)) < 0.1, column] = None
    labels = np.array(["class_0", "class_1", "class_2"], dtype=object)[bunch.target.to_numpy()]
    config = _with_features(_shipped("wine"), frame, {"model": {"one_hot_min_frequency": 10}})
    return config, frame, labels, _contract_of(frame)


@pytest.fixture(scope="module")
def diabetes() -> Fitted:
    """scikit-learn's diabetes data (disease progression, 25-346) with sex as a category, a tenth of bmi, bp and
    sex missing; the shipped flights_minutes config (regression) with these features, numbers scaled."""
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes(as_frame=True)
    frame = bunch.frame.drop(columns="target")
    frame["sex"] = np.where(frame["sex"] > 0, "male", "female").astype(object)
    rng = np.random.default_rng(12)
    for column in ("bmi", "bp", "sex"):
        frame.loc[rng.random(len(frame)) < 0.1, column] = None
    overrides = {
        "slices": [],
        "monitoring": {"drift": {"ignore": []}},
        "model": {"one_hot_min_frequency": 10, "scale_numeric": True},
    }
    config = _with_features(_shipped("flights_minutes"), frame, overrides)
    return config, frame, bunch.target.to_numpy(dtype=float), _contract_of(frame)


def _fit(fitted: Fitted, estimator: str, params: dict[str, Any]) -> Any:
    config, frame, target, _ = fitted
    return build_model(config.with_overrides({"model": {"estimator": estimator, "params": params}})).fit(frame, target)


def _pipeline_output(model: Any, batch: Batch, contract: InputContract, task: str) -> np.ndarray:
    """What the fitted pipeline itself gives for ``batch``, in the task's shape."""
    frame = batch_frame(batch, contract)
    return np.asarray(model.predict(frame) if task == "regression" else model.predict_proba(frame), dtype=float)


@pytest.mark.parametrize(
    ("data", "estimator", "params", "kind"),
    [
        ("banded_wine", "sklearn.ensemble.HistGradientBoostingClassifier", {"max_iter": 40}, "compiled"),
        ("banded_wine", "sklearn.linear_model.LogisticRegression", {"max_iter": 2000}, "compiled-preprocessing"),
        ("diabetes", "sklearn.ensemble.HistGradientBoostingRegressor", {"max_iter": 60}, "compiled"),
        ("diabetes", "sklearn.linear_model.LinearRegression", {}, "compiled-preprocessing"),
        ("diabetes", "sklearn.linear_model.Ridge", {"alpha": 1.0}, "compiled-preprocessing"),
        ("diabetes", "sklearn.linear_model.Lasso", {"alpha": 0.1}, "compiled-preprocessing"),
        ("diabetes", "sklearn.linear_model.ElasticNet", {"alpha": 0.01}, "compiled-preprocessing"),
        ("diabetes", "sklearn.linear_model.SGDRegressor", {"max_iter": 2000}, "compiled-preprocessing"),
    ],
    ids=lambda v: v.rpartition(".")[2] if isinstance(v, str) and "." in v else None,
)
def test_every_task_is_compiled_and_gives_what_the_fitted_pipeline_gives(
    request: pytest.FixtureRequest, data: str, estimator: str, params: dict[str, Any], kind: str
) -> None:
    # given a pipeline built as training builds it, fitted on real data with nulls and a categorical column
    fitted: Fitted = request.getfixturevalue(data)
    config, _, _, contract = fitted
    task = config.target.task
    model = _fit(fitted, estimator, params)
    # when the best predictor is chosen
    predictor = best_predictor(model, contract, task=task)
    # then the compiled path serves, and its kind says whether the trees are walked by numba
    assert isinstance(predictor, CompiledPredictor) and predictor.kind == kind
    assert (predictor.trees is not None) == (kind == "compiled")
    # and on fresh records (unseen and missing categories, missing numbers, values across the bounds) it gives
    # exactly what the fitted pipeline gives, in the task's shape
    probe = probe_batch(contract, known_categories(model), 400, seed=7)
    category = next(f.name for f in contract.fields if f.kind == "categorical")
    assert {"unseen-value", None} <= set(probe.categorical[category])
    out = predictor.predict(probe)
    expected = _pipeline_output(model, probe, contract, task)
    assert out.shape == ((400, 3) if task == "multiclass" else (400,))
    np.testing.assert_array_equal(out, expected)
    # and record by record, as single-record requests come
    reference = FramePredictor(model, contract, task)
    for part in split_batch(probe, 1)[:40]:
        np.testing.assert_array_equal(predictor.predict(part), reference.predict(part))


def test_trees_the_walker_does_not_reproduce_are_walked_by_scikit_learn_on_the_compiled_matrix(banded_wine) -> None:
    # given a gradient-boosted classifier told to split natively on the band's one-hot columns (the first block)
    model = _fit(
        banded_wine, "sklearn.ensemble.HistGradientBoostingClassifier", {"max_iter": 20, "categorical_features": [0, 1]}
    )
    nodes = [tree.nodes for trees in model[-1]._predictors for tree in trees]
    assert any(n["is_categorical"].any() for n in nodes)
    contract = banded_wine[3]
    # when the best predictor is chosen
    predictor = best_predictor(model, contract, task="multiclass")
    # then the preprocessing is compiled and the estimator's own predict_proba walks the trees, which the kind says
    assert isinstance(predictor, CompiledPredictor) and predictor.trees is None
    assert predictor.kind == "compiled-preprocessing"
    probe = probe_batch(contract, known_categories(model), 300, seed=8)
    np.testing.assert_array_equal(predictor.predict(probe), _pipeline_output(model, probe, contract, "multiclass"))


@pytest.mark.parametrize(
    ("data", "estimator"),
    [
        ("banded_wine", "sklearn.ensemble.HistGradientBoostingClassifier"),
        ("banded_wine", "sklearn.linear_model.LogisticRegression"),
        ("diabetes", "sklearn.ensemble.HistGradientBoostingRegressor"),
        ("diabetes", "sklearn.linear_model.Ridge"),
    ],
)
def test_a_compiled_predictor_of_any_task_that_disagrees_is_not_used(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, data: str, estimator: str
) -> None:
    fitted: Fitted = request.getfixturevalue(data)
    config, _, _, contract = fitted
    model = _fit(fitted, estimator, {"max_iter": 20} if "HistGradient" in estimator else {})
    # given a compiler that gets every number wrong by a little (a tenth of a standard deviation, once scaled)
    original = CompiledPredictor.matrix

    def off_by_a_bit(self: CompiledPredictor, batch: Batch) -> np.ndarray:
        x = original(self, batch)
        x[:, [n.out_column for n in self.numeric]] += 0.1
        return x

    monkeypatch.setattr(CompiledPredictor, "matrix", off_by_a_bit)
    # then the verification catches it and the fitted pipeline serves, which its kind says
    predictor = best_predictor(model, contract, task=config.target.task)
    assert isinstance(predictor, FramePredictor) and predictor.kind == "pipeline"


def test_pipelines_the_compiler_cannot_take_are_served_as_fitted(diabetes) -> None:
    from sklearn.feature_selection import SelectKBest, f_regression
    from sklearn.pipeline import Pipeline

    _, frame, target, contract = diabetes
    ridge = _fit(diabetes, "sklearn.linear_model.Ridge", {})
    # given a feature selector between the preprocessing and the estimator, and preprocessing that hands the
    # estimator a DataFrame (the estimator then knows its input's column names)
    selected = Pipeline([ridge.steps[0], ("select", SelectKBest(f_regression, k=5)), ridge.steps[1]])
    selected.fit(frame, target)
    named = _fit(diabetes, "sklearn.linear_model.Ridge", {})
    named.steps[0][1].set_output(transform="pandas")
    named.fit(frame, target)
    assert hasattr(named[-1], "feature_names_in_")
    # then the fitted pipeline serves each of them, and says so
    for model in (selected, named):
        predictor = best_predictor(model, contract, task="regression")
        assert isinstance(predictor, FramePredictor) and predictor.kind == "pipeline"
        probe = probe_batch(contract, known_categories(model), 50, seed=9)
        np.testing.assert_array_equal(predictor.predict(probe), model.predict(batch_frame(probe, contract)))


def test_an_estimator_that_refuses_the_compiled_matrix_is_served_as_fitted(
    diabetes, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, _, _, contract = diabetes
    model = _fit(diabetes, "sklearn.linear_model.Ridge", {})
    # given a compiled matrix one column short of what the estimator was fitted on
    original = CompiledPredictor.matrix
    monkeypatch.setattr(CompiledPredictor, "matrix", lambda self, batch: original(self, batch)[:, 1:])
    # then the estimator's refusal is not an error of the load: the fitted pipeline serves
    predictor = best_predictor(model, contract, task=config.target.task)
    assert isinstance(predictor, FramePredictor) and predictor.kind == "pipeline"


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


def test_the_shipped_multiclass_model_gives_a_probability_per_class_in_class_order(wine) -> None:
    model, contract, features = wine
    # when the best predictor is chosen for the shipped wine model (scaled numbers, logistic regression)
    predictor = best_predictor(model, contract, task="multiclass")
    # then the compiled preprocessing feeds the estimator's own predict_proba, and every class's probability comes
    # back in the model's class order, as the fitted pipeline gives it
    assert isinstance(predictor, CompiledPredictor) and predictor.kind == "compiled-preprocessing"
    batch = _records_batch(features.iloc[::20], contract)
    out = predictor.predict(batch)
    np.testing.assert_array_equal(out, model.predict_proba(features.iloc[::20]))
    assert out.shape == (batch.size, 3) and output_problem(out, batch.size, "multiclass", 3) is None


def test_the_shipped_regression_model_gives_its_values_from_compiled_trees(minutes) -> None:
    model, contract = minutes
    # when the best predictor is chosen for the shipped flights_minutes model (gradient-boosted regression)
    predictor = best_predictor(model, contract, task="regression")
    # then its trees are walked by numba and its values are the fitted pipeline's
    assert isinstance(predictor, CompiledPredictor) and predictor.kind == "compiled"
    probe = probe_batch(contract, known_categories(model), 200, seed=3)
    out = predictor.predict(probe)
    np.testing.assert_array_equal(out, model.predict(batch_frame(probe, contract)))
    assert out.shape == (200,) and output_problem(out, 200, "regression") is None
    # and a regression output is not held to [0, 1]
    assert (out < 0).any() or (out > 1).any()


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
