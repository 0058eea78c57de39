"""The compiled tree walker gives scikit-learn's probabilities to the last bit, missing values included."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from pipelines.serving.trees import CompiledTrees, UnsupportedTreesError


def _data(rng: np.random.Generator, rows: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(rows, 6))
    x[rng.random(x.shape) < 0.1] = np.nan  # missing values the trees learned a direction for
    y = ((np.nan_to_num(x[:, 0]) + np.nan_to_num(x[:, 1]) ** 2 + np.isnan(x[:, 2])) > 1.0).astype(int)
    return x, y


def test_compiled_trees_match_scikit_learn_exactly() -> None:
    rng = np.random.default_rng(0)
    x, y = _data(rng, 4000)
    # given a fitted ensemble of deep trees
    model = HistGradientBoostingClassifier(max_iter=120, max_leaf_nodes=63, random_state=0).fit(x, y)
    trees = CompiledTrees(model)
    fresh, _ = _data(rng, 2000)
    # then batch by batch and record by record the probabilities are identical
    np.testing.assert_array_equal(trees.predict_proba(fresh), model.predict_proba(fresh))
    for row in fresh[:50]:
        np.testing.assert_array_equal(trees.predict_proba(row[None, :]), model.predict_proba(row[None, :]))


def test_ensembles_it_does_not_reproduce_are_refused() -> None:
    rng = np.random.default_rng(1)
    x, y = _data(rng, 600)
    # given a multiclass ensemble, and one with native categorical splits
    multiclass = HistGradientBoostingClassifier(max_iter=5).fit(x, y + (x[:, 3] > 0))
    cats = np.column_stack([rng.integers(0, 4, 600), x[:, 1:]])
    categorical = HistGradientBoostingClassifier(max_iter=5, categorical_features=[0]).fit(cats, cats[:, 0] % 2)
    # then the walker refuses them (the estimator's own predict_proba serves)
    with pytest.raises(UnsupportedTreesError):
        CompiledTrees(multiclass)
    with pytest.raises(UnsupportedTreesError):
        CompiledTrees(categorical)
