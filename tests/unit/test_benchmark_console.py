"""benchmarks.console's pure logic: the year's story, the rows it writes, and its section of docs/benchmarks.md.
Nothing is built or timed here."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from benchmarks.console import (
    SECTION,
    START,
    Story,
    audit_rows,
    decision_rows,
    live_figure_problems,
    monitoring_rows,
    replace_section,
)
from pipelines.core.config import DatasetConfig, load_dataset_config
from pipelines.monitoring.monitor import LIVE_PERIODS
from pipelines.trace import console
from pipelines.trace.console_page import render


def test_the_year_has_one_window_and_one_decision_a_day_and_retrains_inside_its_drift_streaks() -> None:
    # given the shipped flights config and a year's story
    config, story = load_dataset_config("flights"), Story.of(365)
    # when its monitoring results and decisions are made
    results = monitoring_rows(config, story, np.random.default_rng(1))
    decisions = decision_rows(config, story)
    # then every day is one window, contiguous, with the story's champion and a known status
    assert [r["window_start"] for r in results] == [START + timedelta(days=d) for d in range(365)]
    assert all(r["window_end"] - r["window_start"] == timedelta(days=1) for r in results)
    assert {r["status"] for r in results} == {"ok", "drift", "insufficient_data"}
    assert results[0]["champion_version"] == "1" and results[-1]["champion_version"] == "3"
    # and retraining is decided only on drifted days, a few times
    retrained = [d for d in decisions if d["retrain"]]
    assert len(decisions) == 365 and 1 <= len(retrained) <= 5
    by_end = {r["window_end"]: r for r in results}
    assert all(by_end[d["window_end"]]["status"] == "drift" for d in retrained)


def test_every_window_stores_the_champions_live_periods_in_the_shape_the_monitor_stores_them() -> None:
    # given the year of the three shipped configs
    for name in ("flights", "wine", "flights_minutes"):
        config = load_dataset_config(name)
        results = monitoring_rows(config, Story.of(365), np.random.default_rng(1), per_day=200)
        # then each summary holds live_periods keyed by the days as text, with counts and the task's metrics
        for row in (results[0], results[-1]):
            periods = row["summary"]["live_periods"]
            assert sorted(periods, key=int) == [str(days) for days in LIVE_PERIODS]
            for figures in periods.values():
                assert set(figures) == {"predictions", "labelled", "metrics"}
                assert 0 < figures["labelled"] <= figures["predictions"]
                assert all(isinstance(v, float) for v in figures["metrics"].values())
        # and the last window's periods cover their days of traffic
        assert results[-1]["summary"]["live_periods"]["30"]["predictions"] == 30 * 200


def _view(config: DatasetConfig, live: list[console.LivePerformance]) -> console.DatasetView:
    champion = console.Champion(
        version="3", since=None, approved_by=None, approved_at=None, approval_mode=None, approval_comment="",
        holdout={}, previous_version="2", version_url="", run_url=None,
    )  # fmt: skip
    return console.DatasetView(
        name=config.name, task=config.task, description="", model_name=config.model.registered_name,
        headline_metric=console.headline_metric(config), lower_is_better=False, champion=champion, live=live,
        trend=[], calendar=[], decisions=[], audit=[], rollback_command="", training_dag_url="",
    )  # fmt: skip


def test_the_run_fails_unless_the_page_shows_every_datasets_live_figures() -> None:
    configs = [load_dataset_config(name) for name in ("flights", "wine", "flights_minutes")]
    rows = {c.name: monitoring_rows(c, Story.of(30), np.random.default_rng(2)) for c in configs}
    # given the page as the console builds it from the stored windows, for the last window's champion v3
    views = [_view(c, console._live(rows[c.name], "3")) for c in configs]
    html = render(views, [], datetime.now(UTC))
    last = {
        c.name: {"end": str(rows[c.name][-1]["window_end"]), "periods": rows[c.name][-1]["summary"]["live_periods"]}
        for c in configs
    }
    # then it shows each dataset's figures, those stored for the last window: nothing to complain about
    assert live_figure_problems(views, html, last) == []
    # and the figures of an older window (v2's last) are not the last window's
    views = [_view(c, console._live(rows[c.name], "2")) for c in configs]
    problems = live_figure_problems(views, render(views, [], datetime.now(UTC)), last)
    assert len(problems) == 3 * len(LIVE_PERIODS) and all("the page shows" in p for p in problems)
    # and a champion never monitored (no figures on the page) is reported, per dataset and period
    views = [_view(c, console._live(rows[c.name], "4")) for c in configs]
    problems = live_figure_problems(views, render(views, [], datetime.now(UTC)))
    assert len([p for p in problems if "live figures for [] days" in p]) == 3
    assert any("last 30 days of 0 of 3 datasets" in p for p in problems)


def test_the_audit_trail_has_no_event_twice() -> None:
    # the audit table's unique key is (model_name, model_version, event, run_key)
    for name in ("flights", "wine", "flights_minutes"):
        rows = audit_rows(load_dataset_config(name), Story.of(365))
        keys = [(r["model_name"], r["model_version"], r["event"], r["run_key"]) for r in rows]
        assert len(keys) == len(set(keys))
        assert [r["event_at"] for r in rows] == sorted(r["event_at"] for r in rows)


def test_the_section_is_replaced_in_place_or_appended() -> None:
    section = f"{SECTION}\n\nnew figures\n"
    # given a document with the section between two others, when it is written again, then only it changes
    document = (
        f"# Benchmarks\n\n## Before\n\nkept\n\n{SECTION}\n\nold figures\n\n### Reading\n\nold\n\n## After\n\nkept too\n"
    )
    replaced = replace_section(document, section)
    assert replaced == f"# Benchmarks\n\n## Before\n\nkept\n\n{SECTION}\n\nnew figures\n\n## After\n\nkept too\n"
    # and a document without it gets it at the end, once, even when written twice
    appended = replace_section("# Benchmarks\n\n## Before\n\nkept\n", section)
    assert appended == f"# Benchmarks\n\n## Before\n\nkept\n\n{SECTION}\n\nnew figures\n"
    assert replace_section(appended, section) == appended
