"""The compiled predictor gives exactly what the fitted pipeline gives, or it is not used."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.data.validation.suite import load_suite
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
