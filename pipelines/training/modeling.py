"""The scikit-learn pipeline (preprocessing + estimator), built from a dataset config."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from pipelines.core.config import DatasetConfig, check_estimator
from pipelines.core.errors import ConfigError


def estimator_class(config: DatasetConfig) -> type[Any]:
    """The configured estimator's class, checked against the task (see :func:`check_estimator`)."""
    check_estimator(config)
    module_name, _, class_name = config.model.estimator.rpartition(".")
    cls: type[Any] = getattr(importlib.import_module(module_name), class_name)
    return cls


def build_model(config: DatasetConfig) -> Pipeline:
    """Preprocessing (one-hot categoricals, imputed numerics) followed by the configured estimator, seeded."""
    categorical = [f.name for f in config.features if f.type == "categorical"]
    numeric = [f.name for f in config.features if f.type == "numeric"]
    numeric_steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median", keep_empty_features=True))]
    if config.model.scale_numeric:
        numeric_steps.append(("scale", StandardScaler()))
    preprocess = ColumnTransformer(
        [
            (
                "categorical",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="constant", fill_value="__missing__")),
                        (
                            "onehot",
                            OneHotEncoder(
                                handle_unknown="infrequent_if_exist",
                                min_frequency=config.model.one_hot_min_frequency,
                                sparse_output=False,
                            ),
                        ),
                    ]
                ),
                categorical,
            ),
            ("numeric", Pipeline(numeric_steps), numeric),
        ],
        remainder="drop",
        verbose_feature_names_out=False,
    )
    cls = estimator_class(config)
    params = dict(config.model.params)
    if "random_state" in inspect.signature(cls).parameters:
        params.setdefault("random_state", config.model.seed)
    try:
        estimator = cls(**params)
    except TypeError as exc:
        raise ConfigError(f"model.params do not fit {config.model.estimator}: {exc}") from exc
    return Pipeline([("preprocess", preprocess), ("model", estimator)])


def predictions(model: Any, features: Any, task: str) -> np.ndarray:
    """The model's predictions in the task's shape: P(positive) (binary, ``n``), a probability per class in
    :func:`model_classes` order (multiclass, ``n x k``), or the predicted value (regression, ``n``)."""
    if task == "regression":
        return np.asarray(model.predict(features), dtype=float)
    proba = np.asarray(model.predict_proba(features), dtype=float)
    if task == "binary":
        return proba[:, list(model_classes(model)).index(1)]
    return proba


def model_classes(model: Any) -> list[Any]:
    """The classes a fitted classifier (or pipeline ending in one) predicts, in its probability columns' order."""
    return list(getattr(model, "classes_", []))
