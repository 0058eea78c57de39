"""The compiled tree walker gives scikit-learn's predictions to the last bit, missing values included: binary and
multiclass probabilities, regression values."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression

from pipelines.serving.trees import LOCKSTEP_RECORDS, CompiledTrees, UnsupportedTreesError


def _data(rng: np.random.Generator, rows: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(rows, 6))
    x[rng.random(x.shape) < 0.1] = np.nan  # missing values the trees learned a direction for
    y = ((np.nan_to_num(x[:, 0]) + np.nan_to_num(x[:, 1]) ** 2 + np.isnan(x[:, 2])) > 1.0).astype(int)
    return x, y


def _four_classes(x: np.ndarray) -> np.ndarray:
    """Four classes tied to several features and to missingness; named by strings, as a dataset's would be."""
    score = np.nan_to_num(x[:, 0]) + np.isnan(x[:, 2]) + (np.nan_to_num(x[:, 3]) > 0.5)
    return np.array(["low", "mid", "high", "top"], dtype=object)[np.digitize(score, [-0.5, 0.5, 1.5])]


def _delay(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """A skewed positive target with noise (minutes of delay, say)."""
    return np.exp(1 + np.nan_to_num(x[:, 0]) / 2 + np.isnan(x[:, 4])) + rng.exponential(3.0, x.shape[0])


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


@pytest.mark.parametrize("size", [LOCKSTEP_RECORDS - 1, LOCKSTEP_RECORDS, LOCKSTEP_RECORDS + 1, 100])
def test_both_walks_give_the_same_scores_on_either_side_of_the_lockstep_size(size: int) -> None:
    rng = np.random.default_rng(3)
    x, y = _data(rng, 3000)
    model = HistGradientBoostingClassifier(max_iter=60, max_leaf_nodes=31, random_state=0).fit(x, y)
    trees = CompiledTrees(model)
    # given records with missing values in every column, and a tree of depth > 1
    fresh, _ = _data(rng, size)
    fresh[0, :] = np.nan
    assert (~trees.is_leaf).sum() > trees.roots.size  # more splits than trees: some tree is deeper than 1
    # when a batch of that size is scored at once and record by record
    batch = trees.raw(fresh)
    one_by_one = np.vstack([trees.raw(row[None, :]) for row in fresh])
    # then both are scikit-learn's raw scores to the last bit
    np.testing.assert_array_equal(batch, one_by_one)
    np.testing.assert_array_equal(batch.ravel(), model._raw_predict(fresh).ravel())


def test_multiclass_trees_match_scikit_learn_exactly() -> None:
    rng = np.random.default_rng(2)
    x, _ = _data(rng, 3000)
    # given a four-class ensemble: one tree per class per iteration, a baseline per class
    model = HistGradientBoostingClassifier(max_iter=60, max_leaf_nodes=31, random_state=0).fit(x, _four_classes(x))
    assert model.n_trees_per_iteration_ == 4
    trees = CompiledTrees(model)
    fresh, _ = _data(rng, 1500)
    # then the raw scores per class, and the softmax of them, are scikit-learn's to the last bit
    np.testing.assert_array_equal(trees.raw(fresh), model.decision_function(fresh))
    proba = trees.predict_proba(fresh)
    np.testing.assert_array_equal(proba, model.predict_proba(fresh))
    assert proba.shape == (1500, 4) and list(trees.classes_) == list(model.classes_)
    for row in fresh[:50]:
        np.testing.assert_array_equal(trees.predict_proba(row[None, :]), model.predict_proba(row[None, :]))


@pytest.mark.parametrize("loss", ["squared_error", "poisson", "absolute_error"])
def test_regression_trees_match_scikit_learn_exactly(loss: str) -> None:
    rng = np.random.default_rng(3)
    x, _ = _data(rng, 3000)
    # given a regressor (identity link for squared and absolute error, log link for Poisson)
    model = HistGradientBoostingRegressor(loss=loss, max_iter=80, random_state=0).fit(x, _delay(rng, x))
    trees = CompiledTrees(model)
    fresh, _ = _data(rng, 1500)
    # then its values are scikit-learn's to the last bit, batch by batch and record by record
    values = trees.predict(fresh)
    np.testing.assert_array_equal(values, model.predict(fresh))
    assert values.shape == (1500,)
    for row in fresh[:50]:
        np.testing.assert_array_equal(trees.predict(row[None, :]), model.predict(row[None, :]))
    # and a regressor has no probabilities
    with pytest.raises(AttributeError):
        trees.predict_proba(fresh)


def test_ensembles_it_does_not_reproduce_are_refused() -> None:
    rng = np.random.default_rng(1)
    x, y = _data(rng, 600)
    # given an ensemble with native categorical splits, and an estimator that is no such ensemble
    cats = np.column_stack([rng.integers(0, 4, 600), x[:, 1:]])
    categorical = HistGradientBoostingClassifier(max_iter=5, categorical_features=[0]).fit(cats, cats[:, 0] % 2)
    linear = LogisticRegression().fit(np.nan_to_num(x), y)
    # then the walker refuses them (the estimator's own predict_proba serves)
    with pytest.raises(UnsupportedTreesError, match="categorical"):
        CompiledTrees(categorical)
    with pytest.raises(UnsupportedTreesError, match="LogisticRegression"):
        CompiledTrees(linear)


def test_a_matrix_of_the_wrong_width_is_refused() -> None:
    rng = np.random.default_rng(4)
    x, y = _data(rng, 500)
    trees = CompiledTrees(HistGradientBoostingClassifier(max_iter=5).fit(x, y))
    # a narrower matrix would read past its rows in compiled code: refused before the walk
    with pytest.raises(ValueError, match="6 columns"):
        trees.predict_proba(x[:, :4])
