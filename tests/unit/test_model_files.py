"""A registered model is loaded with skops and the types the dataset config trusts, never as its own files ask:
pickle, cloudpickle, pyfunc code, files outside the folder and untrusted types are refused without running them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from pipelines.core.model_files import (
    PREPROCESSING_TRUSTED_TYPES,
    UntrustedModelError,
    checked_model_file,
    load_sklearn_model,
    trusted_types,
)

X = np.random.default_rng(0).normal(size=(200, 3))
Y = (X[:, 0] > 0).astype(int)


class _Planted:
    """An object whose unpickling writes a file: what an attacker's model would do, harmlessly."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path(self.marker).write_text, ("ran",))


def _save(path: Path, model: Any, fmt: str = "skops", trusted: list[str] | None = None) -> Path:
    import mlflow.sklearn

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
        mlflow.sklearn.save_model(
            model, str(path), serialization_format=fmt, skops_trusted_types=trusted, pip_requirements=[]
        )
    return path


def _edit_mlmodel(path: Path, change: Any) -> None:
    meta = yaml.safe_load((path / "MLmodel").read_text())
    change(meta)
    (path / "MLmodel").write_text(yaml.safe_dump(meta))


def test_a_skops_model_of_trusted_types_loads_and_predicts(tmp_path: Path) -> None:
    saved = _save(tmp_path / "m", LogisticRegression().fit(X, Y))
    model = load_sklearn_model(saved, PREPROCESSING_TRUSTED_TYPES)
    np.testing.assert_array_equal(model.predict(X), LogisticRegression().fit(X, Y).predict(X))


def test_types_the_config_does_not_trust_are_refused_naming_them(tmp_path: Path, flights_config) -> None:
    # given a gradient-boosting model saved with every type it needs trusted by the artifact itself
    model = HistGradientBoostingClassifier(max_iter=3).fit(X, Y)
    saved = _save(tmp_path / "m", model, trusted=trusted_types(flights_config))
    # when it is loaded with only the preprocessing's types (a config that does not list the estimator's)
    with pytest.raises(UntrustedModelError, match=r"does not trust: .*TreePredictor"):
        load_sklearn_model(saved, PREPROCESSING_TRUSTED_TYPES)
    # then with the config's list it loads
    assert load_sklearn_model(saved, trusted_types(flights_config)).predict(X).shape == (200,)


@pytest.mark.parametrize("fmt", ["pickle", "cloudpickle"])
def test_pickled_models_are_refused_without_being_run(tmp_path: Path, fmt: str) -> None:
    marker = tmp_path / "ran.txt"
    # given a "model" whose loading would run code, saved in a pickle format
    saved = _save(tmp_path / "m", LogisticRegression().fit(X, Y), fmt=fmt)
    import cloudpickle

    (saved / "model.pkl").write_bytes(cloudpickle.dumps(_Planted(str(marker))))
    # when it is loaded, then it is refused for its format, and the planted code never ran
    with pytest.raises(UntrustedModelError, match=f"serialised with '{fmt}'"):
        load_sklearn_model(saved, PREPROCESSING_TRUSTED_TYPES)
    assert not marker.exists()


def test_a_pyfunc_only_model_is_refused(tmp_path: Path) -> None:
    saved = _save(tmp_path / "m", LogisticRegression().fit(X, Y))
    _edit_mlmodel(saved, lambda m: m["flavors"].pop("sklearn"))
    with pytest.raises(UntrustedModelError, match="only scikit-learn models saved with skops"):
        checked_model_file(saved, PREPROCESSING_TRUSTED_TYPES)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["flavors"]["python_function"].update(code="code"), "with code 'code'"),
        (lambda m: m["flavors"]["python_function"].update(loader_module="evil"), "loads through 'evil'"),
        (lambda m: m["flavors"]["sklearn"].update(pickled_model="../outside.skops"), "is not in its folder"),
    ],
)
def test_an_mlmodel_pointing_elsewhere_is_refused(tmp_path: Path, change: Any, message: str) -> None:
    saved = _save(tmp_path / "m", LogisticRegression().fit(X, Y))
    os.link(saved / "model.skops", tmp_path / "outside.skops")
    _edit_mlmodel(saved, change)
    with pytest.raises(UntrustedModelError, match=message):
        checked_model_file(saved, PREPROCESSING_TRUSTED_TYPES)
