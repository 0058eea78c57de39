"""The ops console's pure parts: what a drift-calendar cell says, and the page built from a dataset's view."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

from pipelines.core.config import load_dataset_config
from pipelines.trace.console import (
    AuditEntry,
    Champion,
    DatasetView,
    LivePerformance,
    PolicyDecision,
    calendar,
    headline_metric,
    recent_decisions,
    report_url,
)
from pipelines.trace.console_page import PendingApproval, render

RUN = "http://mlflow/#/experiments/3/runs/abc"


def _window(day: date, status: str, champion: str, auc: float | None = None) -> dict:
    return {
        "window_start": day,
        "window_end": day + timedelta(days=1),
        "status": status,
        "champion_version": champion,
        "drift_share": 0.4 if status == "drift" else 0.1,
        "live_metrics": {"roc_auc": auc} if auc is not None else {},
        "evidence_url": RUN,
    }


def test_a_cell_shows_the_most_telling_thing_that_happened_in_its_window() -> None:
    # given four days: quiet, drifted, drifted with retraining decided, then served by a new champion
    days = [date(2013, 5, 20) + timedelta(days=i) for i in range(5)]
    results = [
        _window(days[0], "ok", "1", 0.7),
        _window(days[1], "drift", "1", 0.6),
        _window(days[2], "drift", "1"),
        _window(days[3], "insufficient_data", "1"),
        _window(days[4], "ok", "2", 0.72),
    ]
    decisions = [{"window_end": days[2] + timedelta(days=1), "retrain": True, "summary": "3 drifted windows"}]
    # when the calendar is built
    cells = calendar(results, decisions, "roc_auc")
    # then each cell's state says it, and its title explains it
    assert [c.state for c in cells] == ["ok", "drift", "retraining", "insufficient_data", "new_champion"]
    assert "retraining decided: 3 drifted windows" in cells[2].title
    assert "new champion v2 (was v1)" in cells[4].title and "live roc_auc 0.720" in cells[4].title
    assert [c.headline for c in cells] == [0.7, 0.6, None, None, 0.72]
    # and every cell links to its window's drift report in MLflow
    assert {c.report_url for c in cells} == {f"{RUN}/artifacts/report/drift.html"}


def test_a_window_without_a_champion_does_not_count_as_a_switch() -> None:
    results = [
        _window(date(2013, 5, 1), "ok", "1"),
        _window(date(2013, 5, 2), "ok", ""),
        _window(date(2013, 5, 3), "ok", "1"),
    ]
    assert [c.state for c in calendar(results, [], "roc_auc")] == ["ok", "ok", "ok"]


def test_a_window_checked_before_the_one_before_it_is_no_switch() -> None:
    # given May replayed and checked at 10:00 under v1, then v2 from the 3rd, and a window of December checked at
    # 09:00 (a scheduled check of that day, before the replay), when v1 was still the champion
    def checked(row: dict, hour: int) -> dict:
        return {**row, "checked_at": datetime(2026, 12, 7, hour, tzinfo=UTC)}

    results = [
        checked(_window(date(2013, 5, 1), "ok", "1"), 10),
        checked(_window(date(2013, 5, 2), "ok", "1"), 10),
        checked(_window(date(2013, 5, 3), "ok", "2"), 11),
        {**_window(date(2013, 12, 6), "insufficient_data", "1"), "checked_at": datetime(2026, 12, 7, 9)},  # naive
        checked(_window(date(2013, 12, 7), "ok", "2"), 12),
    ]
    # when the calendar is built, then v2's first window is the switch, and neither December window is one
    states = [c.state for c in calendar(results, [], "roc_auc")]
    assert states == ["ok", "ok", "new_champion", "insufficient_data", "ok"]


def test_the_latest_decision_and_the_retraining_ones_are_listed_newest_first() -> None:
    # given a policy that kept the champion every day but retrained on the 5th and the 9th of twelve windows
    decisions = [{"window_end": day, "retrain": day in (5, 9)} for day in range(1, 13)]
    # when the recent decisions are picked, then the last one comes first, then the retraining ones
    assert [d["window_end"] for d in recent_decisions(decisions, 10)] == [12, 9, 5]
    # and no more than asked, and nothing of nothing
    assert [d["window_end"] for d in recent_decisions(decisions, 2)] == [12, 9]
    assert recent_decisions([], 10) == [] and recent_decisions(decisions, 0) == []
    # and a latest decision that retrains is listed once
    assert [d["window_end"] for d in recent_decisions(decisions[:9], 10)] == [9, 5]


def test_the_headline_metric_is_the_one_the_retraining_policy_watches() -> None:
    assert headline_metric(load_dataset_config("flights")) == "roc_auc"
    assert headline_metric(load_dataset_config("flights_minutes")) == "mae"
    assert report_url("") == "" and report_url("/local/report") == "/local/report"


def _view() -> DatasetView:
    return DatasetView(
        name="flights",
        task="binary",
        description="Departure delays <script>alert(1)</script>",
        model_name="flights-delay",
        headline_metric="roc_auc",
        lower_is_better=False,
        champion=Champion(
            version="2",
            since="2013-06-01T00:00:00+00:00",
            approved_by="ann",
            approved_at="2013-05-31T12:00:00+00:00",
            approval_mode="manual",
            approval_comment="better on June",
            holdout={"roc_auc": 0.71, "log_loss": 0.5},
            previous_version="1",
            version_url="http://mlflow/#/models/flights-delay/versions/2",
            run_url=RUN,
        ),
        live=[LivePerformance(7, date(2013, 6, 23), date(2013, 6, 30), 7000, 6500, {"roc_auc": 0.69})],
        trend=[(date(2013, 6, 1) + timedelta(days=i), 0.6 + i / 100) for i in range(10)],
        calendar=calendar(
            [_window(date(2013, 4, 1), "ok", "1"), _window(date(2013, 5, 28), "drift", "1")], [], "roc_auc"
        ),
        decisions=[
            PolicyDecision(
                date(2013, 5, 30),
                True,
                "drift",
                "drift 3 windows in a row",
                ["dataset drift on 3 days"],
                "/dags/train_flights/runs/r%2B1",
            )
        ],
        audit=[
            AuditEntry(
                "2013-06-01T00:00:00",
                "deployed",
                "2",
                "train_flights",
                "policy",
                "replaced v1",
                "/dags/train_flights/runs",
                "http://v2",
            )
        ],
        rollback_command="python -m pipelines rollback --dataset flights",
        training_dag_url="/dags/train_flights",
    )


def test_the_page_shows_the_champion_the_calendar_the_decisions_and_who_is_waiting() -> None:
    # given a dataset's view and an approval asked 3 hours ago with a 24-hour deadline
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    asked = now - timedelta(hours=3)
    pending = [
        PendingApproval(
            "flights",
            "Promote flights-delay v3 to champion?",
            "train_flights",
            "r1",
            asked,
            asked + timedelta(hours=24),
            "/dags/train_flights/runs/r1/tasks/approve/required_actions",
        )
    ]
    # when the page is rendered
    page = render([_view()], pending, now)
    # then the champion, its approver and the rollback hint are on its card
    assert 'Champion <b class="version">v2</b>' in page and "approved by ann (manual)" in page
    assert "python -m pipelines rollback --dataset flights" in page and "(to v1)" in page
    assert "<b>roc_auc 0.710</b>" in page and "last 7 days (to 2013-06-30): <b>0.690</b>" in page
    # and the calendar has April and May 2013 with a drifted cell linking to its report
    assert "Apr 2013" in page and "May 2013" in page
    assert re.search(r'class="cell drift" href="[^"]+/artifacts/report/drift.html"', page)
    # and the decision, its reason and the training run it started
    assert "drift 3 windows in a row" in page and "dataset drift on 3 days" in page and "r%2B1" in page
    # and the waiting approval, how long it has waited and how long is left
    assert "Promote flights-delay v3 to champion?" in page and "3 h 0 min" in page and "21 h 0 min left" in page
    # and nothing from the data is interpreted as markup
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)" in page
    assert page.count("<script>") == 1  # the page's own, for links (see console_page)
    # and a trend line is drawn
    assert "<polyline" in page


def test_a_dataset_without_a_champion_says_so_and_links_to_its_training_dag() -> None:
    view = _view()
    view.champion, view.live, view.calendar, view.decisions, view.audit = None, [], [], [], []
    page = render([view], [], datetime(2026, 11, 28, tzinfo=UTC))
    assert "No champion yet." in page and 'href="/dags/train_flights" target="_top"' in page
    assert "Nothing is waiting." in page and "No monitored window yet." in page


def test_datasets_with_a_champion_come_first() -> None:
    # given a dataset without a champion listed before two with one
    idle, served, other = _view(), _view(), _view()
    idle.name, idle.champion, served.name, other.name = "aaa_idle", None, "zzz_served", "mmm_served"
    # when the page is rendered, then the served datasets come first, in the order given, then the idle one
    page = render([idle, served, other], [], datetime(2026, 11, 28, tzinfo=UTC))
    found = [page.index(f'id="dataset-{name}"') for name in ("zzz_served", "mmm_served", "aaa_idle")]
    assert found == sorted(found)
