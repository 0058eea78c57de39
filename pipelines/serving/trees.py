"""Gradient-boosted trees walked in compiled code: exact, and without scikit-learn's per-tree overhead.

scikit-learn's ``HistGradientBoostingClassifier.predict_proba`` calls each of its trees in turn; for one record
the ~150 calls' overhead is nearly all of the ~2 ms a prediction takes, and for 100 records most of it. Here the
fitted nodes of every tree are copied once into flat arrays, and one numba-compiled loop walks every tree for
every record, taking the same branches by the same comparisons (``x <= threshold``, missing values by the learned
direction) and adding the leaf values in the same order, so the raw scores, then the probabilities from the
estimator's own link function, are identical to the last bit; :mod:`pipelines.serving.predictors` checks that on
probe records before using it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit


class UnsupportedTreesError(ValueError):
    """The ensemble has a feature this walker does not reproduce (multiclass, native categorical splits)."""


@njit(cache=True, nogil=True)
def _walk(
    x: np.ndarray,
    roots: np.ndarray,
    feature: np.ndarray,
    threshold: np.ndarray,
    missing_left: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    is_leaf: np.ndarray,
    value: np.ndarray,
    baseline: float,
    out: np.ndarray,
) -> np.ndarray:  # pragma: no cover - compiled
    for i in range(x.shape[0]):
        acc = baseline
        for t in range(roots.shape[0]):
            node = roots[t]
            while not is_leaf[node]:
                v = x[i, feature[node]]
                if np.isnan(v):
                    node = left[node] if missing_left[node] else right[node]
                elif v <= threshold[node]:
                    node = left[node]
                else:
                    node = right[node]
            acc += value[node]
        out[i] = acc
    return out


class CompiledTrees:
    """A fitted binary ``HistGradientBoostingClassifier`` as flat node arrays and one compiled walk."""

    def __init__(self, estimator: Any) -> None:
        predictors = estimator._predictors
        if estimator.n_trees_per_iteration_ != 1 or not predictors:
            raise UnsupportedTreesError("not a binary gradient boosting ensemble")
        nodes = [trees[0].nodes for trees in predictors]
        if any(n["is_categorical"].any() for n in nodes):
            raise UnsupportedTreesError("native categorical splits")
        sizes = np.array([len(n) for n in nodes])
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        flat = np.concatenate(nodes)
        shift = np.repeat(offsets, sizes)
        self.roots = offsets.astype(np.int64)
        self.feature = flat["feature_idx"].astype(np.int64)
        self.threshold = flat["num_threshold"].astype(np.float64)
        self.missing_left = flat["missing_go_to_left"].astype(np.bool_)
        self.left = (flat["left"] + shift).astype(np.int64)
        self.right = (flat["right"] + shift).astype(np.int64)
        self.is_leaf = flat["is_leaf"].astype(np.bool_)
        self.value = flat["value"].astype(np.float64)
        self.baseline = float(np.asarray(estimator._baseline_prediction).ravel()[0])
        self.loss = estimator._loss
        self.classes_ = estimator.classes_
        self.predict_proba(np.zeros((1, int(self.feature.max()) + 1)))  # compile now, not on the first request

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities, as the estimator's ``predict_proba`` gives them."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        raw = _walk(
            x,
            self.roots,
            self.feature,
            self.threshold,
            self.missing_left,
            self.left,
            self.right,
            self.is_leaf,
            self.value,
            self.baseline,
            np.empty(x.shape[0]),
        )
        return np.asarray(self.loss.predict_proba(raw[:, None]))
