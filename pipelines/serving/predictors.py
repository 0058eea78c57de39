"""Predictors: from a validated batch to the model's output for its task.

A predictor's ``predict`` returns what the task predicts: the probability of the positive class (binary, ``n``),
a probability per class in the model's class order (multiclass, ``n x k``) or the predicted value (regression,
``n``); its ``kind`` says what computes it (``GET /models`` shows it):

- ``compiled``: compiled preprocessing and the gradient-boosted trees walked by numba (:mod:`pipelines.serving.trees`;
  ``HistGradientBoostingClassifier``, binary or multiclass, and ``HistGradientBoostingRegressor``);
- ``compiled-preprocessing``: compiled preprocessing, then the fitted estimator's own ``predict_proba``
  (classification) or ``predict`` (regression) on the matrix it fills (linear models, and any other estimator);
- ``pipeline``: the fitted pipeline on a DataFrame, exactly as MLflow runs it (:class:`FramePredictor`).

Only scikit-learn models saved with skops are loaded (:mod:`pipelines.core.model_files`): a model MLflow could load
only as a pyfunc is cloudpickled Python, and is refused.

Profiling one single-record request through MLflow's pyfunc showed where the time goes: building a pandas
DataFrame and running it through the fitted ColumnTransformer costs about three times what the trees themselves
cost. :class:`CompiledPredictor` removes that: it turns the fitted preprocessing (imputers, one-hot encoders,
scalers) into dictionary lookups and numpy arithmetic that fill the estimator's input matrix directly, then calls
the fitted estimator itself; gradient-boosted trees are walked by compiled code, since scikit-learn's per-tree call
overhead is otherwise most of what remains. It is built only for preprocessing it fully understands and is checked,
before it serves anything, to give the same output as the fitted pipeline on a few hundred probe records (the
model's input example plus random in-contract records with nulls and unseen categories). Anything else, or any
difference, falls back to :class:`FramePredictor`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from pipelines.serving.parsing import Batch
from pipelines.training.contract import InputContract

log = logging.getLogger(__name__)

UNSEEN = "\x00unseen-category\x00"
VERIFY_ROWS = 300
VERIFY_TOLERANCE = 1e-12
TASKS = ("binary", "multiclass", "regression")
TREE_ENSEMBLES = ("HistGradientBoostingClassifier", "HistGradientBoostingRegressor")  # walked by numba


class Predictor(Protocol):
    """Anything that scores a validated batch."""

    kind: str

    def predict(self, batch: Batch) -> np.ndarray:
        """The task's output: P(positive) (binary, n), class probabilities (multiclass, n x k), values (n)."""
        ...


def batch_frame(batch: Batch, contract: InputContract) -> pd.DataFrame:
    """The batch as the DataFrame the model was trained on (columns in model order, None/NaN for nulls)."""
    columns: dict[str, Any] = {}
    for spec in contract.fields:
        if spec.kind == "categorical":
            columns[spec.name] = pd.Series(batch.categorical[spec.name], dtype=object)
        else:
            columns[spec.name] = batch.numeric[spec.name]
    return pd.DataFrame(columns)


def positive_column(classes: Sequence[Any]) -> int:
    """Index of the positive class (1 or True) among a classifier's classes."""
    values = list(classes)
    for positive in (1, True, "1"):
        if positive in values:
            return values.index(positive)
    if len(values) == 2:
        return 1
    raise ValueError(f"cannot tell the positive class among {values}")


@dataclass
class FramePredictor:
    """The fitted scikit-learn pipeline on a DataFrame: ``predict_proba`` (classification) or ``predict``."""

    model: Any
    contract: InputContract
    task: str = "binary"
    kind: str = "pipeline"

    def predict(self, batch: Batch) -> np.ndarray:
        frame = batch_frame(batch, self.contract)
        if self.task == "regression":
            return np.asarray(self.model.predict(frame), dtype=float).reshape(-1)
        proba = np.asarray(self.model.predict_proba(frame), dtype=float)
        return proba[:, positive_column(self.model.classes_)] if self.task == "binary" else proba


@dataclass
class _CategoricalColumn:
    name: str
    out_columns: np.ndarray  # positions in the estimator's input
    table: np.ndarray  # one row of output values per known value, then unseen, then null
    index: dict[str, int]
    unseen_row: int
    null_row: int


@dataclass
class _NumericColumn:
    name: str
    out_column: int
    fill: float
    mean: float | None
    scale: float | None


class CompiledPredictor:
    """The fitted preprocessing as lookups and arithmetic, feeding the fitted estimator (or its trees, compiled)
    directly; the output of ``task`` as :class:`FramePredictor` gives it."""

    def __init__(
        self,
        width: int,
        base_row: np.ndarray,
        categorical: list[_CategoricalColumn],
        numeric: list[_NumericColumn],
        estimator: Any,
        task: str = "binary",
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
        self.width = width
        self.base_row = base_row
        self.categorical = categorical
        self.numeric = numeric
        self.estimator = estimator
        self.task = task
        self.positive = positive_column(estimator.classes_) if task == "binary" else -1
        self.trees: Any = None
        if type(estimator).__name__ in TREE_ENSEMBLES:
            try:
                from pipelines.serving.trees import CompiledTrees

                self.trees = CompiledTrees(estimator)
            except Exception as exc:  # numba missing or an ensemble it does not reproduce: scikit-learn walks them
                log.info("trees walked by scikit-learn (%s: %s)", type(exc).__name__, exc)
        self.scorer: Any = self.trees if self.trees is not None else estimator
        self.kind = "compiled" if self.trees is not None else "compiled-preprocessing"
        # The numeric columns as one block: imputed, centred and scaled in a few array operations for the whole
        # batch (no mean: minus 0.0, no scale: divided by 1.0, both exact), instead of a few per column.
        self._numeric_names = [num.name for num in numeric]
        self._numeric_out = np.array([num.out_column for num in numeric], dtype=np.intp)
        self._numeric_fill = np.array([num.fill for num in numeric], dtype=np.float64)
        self._numeric_mean = np.array([0.0 if num.mean is None else num.mean for num in numeric], dtype=np.float64)
        self._numeric_scale = np.array([1.0 if num.scale is None else num.scale for num in numeric], dtype=np.float64)

    def matrix(self, batch: Batch) -> np.ndarray:
        """The estimator's input matrix for ``batch``."""
        x = np.tile(self.base_row, (batch.size, 1))
        for cat in self.categorical:
            index, unseen, null = cat.index, cat.unseen_row, cat.null_row
            rows = [null if v is None else index.get(v, unseen) for v in batch.categorical[cat.name]]
            x[:, cat.out_columns] = cat.table[rows]
        if self._numeric_names:
            block = np.column_stack([batch.numeric[name] for name in self._numeric_names])
            block = np.where(np.isnan(block), self._numeric_fill, block)
            block -= self._numeric_mean
            block /= self._numeric_scale
            x[:, self._numeric_out] = block
        return x

    def predict(self, batch: Batch) -> np.ndarray:
        x = self.matrix(batch)
        if self.task == "regression":
            return np.asarray(self.scorer.predict(x), dtype=float).reshape(-1)
        proba = np.asarray(self.scorer.predict_proba(x), dtype=float)
        return proba[:, self.positive] if self.task == "binary" else proba


class CompileError(ValueError):
    """The pipeline holds a step the compiler does not handle; the fitted pipeline serves instead."""


def compile_pipeline(model: Any, contract: InputContract, task: str = "binary") -> CompiledPredictor:
    """Compile a fitted ``Pipeline([ColumnTransformer, estimator])`` of imputers, one-hot encoders and scalers, for
    an estimator with ``predict_proba`` (binary, multiclass) or a regressor's ``predict`` (regression)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if not isinstance(model, Pipeline) or len(model.steps) != 2 or not isinstance(model.steps[0][1], ColumnTransformer):
        raise CompileError("not a Pipeline([ColumnTransformer, estimator])")
    pre, estimator = model.steps[0][1], model.steps[1][1]
    if hasattr(estimator, "feature_names_in_"):
        raise CompileError("the estimator was fitted on a DataFrame")
    if getattr(pre, "sparse_output_", False):
        raise CompileError("sparse preprocessing output")
    if task == "regression" and (hasattr(estimator, "classes_") or not hasattr(estimator, "predict")):
        raise CompileError(f"{type(estimator).__name__} is not a regressor")
    if task != "regression" and not (hasattr(estimator, "classes_") and hasattr(estimator, "predict_proba")):
        raise CompileError(f"{type(estimator).__name__} gives no class probabilities")
    width = sum(s.stop - s.start for s in pre.output_indices_.values())
    kinds = {f.name: f.kind for f in contract.fields}
    categorical: list[_CategoricalColumn] = []
    numeric: list[_NumericColumn] = []
    for name, transformer, columns in pre.transformers_:
        block = pre.output_indices_[name]
        if transformer == "drop" or block.stop == block.start:
            continue
        cols = list(columns)
        if any(c not in kinds for c in cols):
            raise CompileError(f"transformer {name!r} reads columns outside the contract: {cols}")
        steps = [s for _, s in transformer.steps] if isinstance(transformer, Pipeline) else [transformer]
        types = {type(s).__name__ for s in steps}
        if types <= {"SimpleImputer", "OneHotEncoder"} and type(steps[-1]).__name__ == "OneHotEncoder":
            categorical += _compile_categorical(transformer, steps[-1], cols, block.start)
        elif types <= {"SimpleImputer", "StandardScaler"}:
            numeric += _compile_numeric(steps, cols, block.start)
        else:
            raise CompileError(f"transformer {name!r} has steps {sorted(types)} the compiler does not handle")
    base_row = np.zeros(width)
    for cat_col in categorical:
        base_row[cat_col.out_columns] = cat_col.table[cat_col.unseen_row]
    return CompiledPredictor(width, base_row, categorical, numeric, estimator, task)


def _compile_categorical(transformer: Any, encoder: Any, cols: list[str], offset: int) -> list[_CategoricalColumn]:
    """Probe the fitted encoder one column at a time: each known value, an unseen one and null."""
    known = {c: [str(v) for v in cats] for c, cats in zip(cols, encoder.categories_, strict=True)}
    base = {c: known[c][0] for c in cols}
    out = []
    for c in cols:
        values: list[str | None] = [*known[c], UNSEEN, None]
        frame = pd.DataFrame({k: pd.Series([base[k]] * len(values), dtype=object) for k in cols})
        frame[c] = pd.Series(values, dtype=object)
        probe = np.asarray(transformer.transform(frame), dtype=float)
        varying = np.flatnonzero((probe != probe[0]).any(axis=0))
        out.append(
            _CategoricalColumn(
                name=c,
                out_columns=varying + offset,
                table=probe[:, varying],
                index={v: i for i, v in enumerate(known[c])},
                unseen_row=len(known[c]),
                null_row=len(known[c]) + 1,
            )
        )
    return out


def _compile_numeric(steps: list[Any], cols: list[str], offset: int) -> list[_NumericColumn]:
    """Median/constant imputation then optional standard scaling, column by column, as scikit-learn computes it."""
    fills = np.zeros(len(cols))
    means: np.ndarray | None = None
    scales: np.ndarray | None = None
    for step in steps:
        if type(step).__name__ == "SimpleImputer":
            if means is not None or scales is not None:
                raise CompileError("imputation after scaling")
            if len(step.statistics_) != len(cols):
                raise CompileError("the imputer drops empty columns")
            stats = np.asarray(step.statistics_, dtype=float)
            fills = np.where(np.isnan(stats), 0.0, stats)
        else:
            means = np.asarray(step.mean_, dtype=float) if step.with_mean else None
            scales = np.asarray(step.scale_, dtype=float) if step.with_std else None
    return [
        _NumericColumn(
            name=c,
            out_column=offset + i,
            fill=float(fills[i]),
            mean=None if means is None else float(means[i]),
            scale=None if scales is None else float(scales[i]),
        )
        for i, c in enumerate(cols)
    ]


def probe_batch(contract: InputContract, categories: dict[str, list[str]], rows: int, seed: int = 0) -> Batch:
    """Random records that fit ``contract``: known and unseen categories, values across the bounds, nulls."""
    rng = np.random.default_rng(seed)
    categorical: dict[str, list[str | None]] = {}
    numeric: dict[str, np.ndarray] = {}
    for spec in contract.fields:
        if spec.kind == "categorical":
            pool: list[str | None] = [*categories.get(spec.name, []), "unseen-value"]
            if spec.nullable:
                pool.append(None)
            categorical[spec.name] = [pool[i] for i in rng.integers(0, len(pool), rows)]
        else:
            lo = spec.minimum if spec.minimum is not None else -1000.0
            hi = spec.maximum if spec.maximum is not None else 1000.0
            values = rng.uniform(lo, hi, rows)
            values[: rows // 10] = np.round(values[: rows // 10])
            if spec.nullable:
                values[rng.random(rows) < 0.1] = np.nan
            numeric[spec.name] = values
    return Batch(
        size=rows,
        categorical=categorical,
        numeric=numeric,
        records=[],
        ids=[None] * rows,
        event_times=[None] * rows,
        request_id=None,
    )


def concat_batches(first: Batch, second: Batch) -> Batch:
    """Two batches as one (same contract)."""
    return Batch(
        size=first.size + second.size,
        categorical={k: v + second.categorical[k] for k, v in first.categorical.items()},
        numeric={k: np.concatenate([v, second.numeric[k]]) for k, v in first.numeric.items()},
        records=[],
        ids=first.ids + second.ids,
        event_times=first.event_times + second.event_times,
        request_id=None,
    )


def split_batch(batch: Batch, size: int) -> list[Batch]:
    """``batch`` in consecutive parts of at most ``size`` records."""
    parts = []
    for start in range(0, batch.size, size):
        stop = min(start + size, batch.size)
        parts.append(
            Batch(
                size=stop - start,
                categorical={k: v[start:stop] for k, v in batch.categorical.items()},
                numeric={k: v[start:stop] for k, v in batch.numeric.items()},
                records=batch.records[start:stop],
                ids=batch.ids[start:stop],
                event_times=batch.event_times[start:stop],
                request_id=None,
            )
        )
    return parts


def known_categories(model: Any) -> dict[str, list[str]]:
    """Categories each one-hot encoded column saw in training (empty when there is no such encoder)."""
    from sklearn.pipeline import Pipeline

    found: dict[str, list[str]] = {}
    pre = model.steps[0][1] if isinstance(model, Pipeline) else None
    for _, transformer, columns in getattr(pre, "transformers_", []):
        last = transformer.steps[-1][1] if isinstance(transformer, Pipeline) else transformer
        if hasattr(last, "categories_"):
            for c, cats in zip(columns, last.categories_, strict=True):
                found[c] = [str(v) for v in cats]
    return found


def best_predictor(
    model: Any, contract: InputContract, example: Batch | None = None, task: str = "binary"
) -> Predictor:
    """The compiled predictor when it reproduces the fitted pipeline on probe records (the input example and
    :data:`VERIFY_ROWS` random in-contract records, within :data:`VERIFY_TOLERANCE`), whatever the task; the fitted
    pipeline otherwise (correct before fast)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    reference = FramePredictor(model, contract, task)
    try:
        compiled = compile_pipeline(model, contract, task)
    except (CompileError, AttributeError, ValueError) as exc:
        log.info("serving the fitted %s pipeline as is (not compiled: %s)", task, exc)
        return reference
    probe = probe_batch(contract, known_categories(model), VERIFY_ROWS)
    if example is not None:
        probe = concat_batches(example, probe)
    expected = reference.predict(probe)
    try:
        got = compiled.predict(probe)
    except Exception as exc:  # the estimator refuses the compiled matrix: it is not what the pipeline feeds it
        log.warning(
            "compiled %s predictor failed on probe records (%s: %s): serving the fitted pipeline instead",
            task,
            type(exc).__name__,
            exc,
        )
        return reference
    if got.shape != expected.shape:
        log.warning(
            "compiled %s predictor gives shape %s where the fitted pipeline gives %s: serving the fitted pipeline "
            "instead",
            task,
            got.shape,
            expected.shape,
        )
        return reference
    diff = float(np.max(np.abs(got - expected))) if got.size else 0.0
    if not diff <= VERIFY_TOLERANCE:
        log.warning(
            "compiled %s predictor differs from the fitted pipeline by %.3g on probe records: serving the "
            "fitted pipeline instead",
            task,
            diff,
        )
        return reference
    log.info(
        "compiled %s predictor (%s: %s) matches the fitted pipeline on %d probe records (max difference %.1g)",
        task,
        compiled.kind,
        "trees walked by numba" if compiled.trees is not None else f"{type(compiled.estimator).__name__} itself",
        probe.size,
        diff,
    )
    return compiled
