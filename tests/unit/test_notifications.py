"""Notifications without a receiver: the messages' content, the config's checks, and delivery that never raises."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pipelines.core.errors import ConfigError
from pipelines.core.notifications import KINDS, deliver, load_notifications, mark_notified, message, notified
from pipelines.core.notifications.channels import payload, scrub
from pipelines.core.notifications.config import WebhookChannel
from tests.conftest import REPO_ROOT


def test_the_shipped_file_has_a_log_channel_only() -> None:
    # given the file shipped with the demo, when it is loaded, then only the log receives (every kind)
    config = load_notifications(REPO_ROOT / "pipelines" / "conf" / "notifications.yaml")
    assert [(c.name, c.type, c.kinds) for c in config.channels] == [("log", "log", None)]
    assert config.env_names() == []


def test_an_approval_request_shows_the_link_the_metrics_against_the_champion_and_the_deadline() -> None:
    # when an approval request is built
    note = message.approval_requested(
        "flights",
        "flights-delay",
        "3",
        request_url="http://af/dags/train_flights/runs/r1/tasks/approve/required_actions",
        deadline="2026-01-02T09:30:00+00:00",
        candidate_metrics={"roc_auc": 0.7234, "rows": 10, "note": "not a metric"},
        champion_metrics={"roc_auc": 0.7},
        champion_version="2",
        reasons=["PASS roc_auc"],
    )
    # then its text holds every fact a person decides on
    text = note.text()
    assert text.startswith("[mlops flights] Approval requested: promote flights-delay v3 to champion?")
    assert "until 2026-01-02T09:30:00+00:00" in text and "deadline: 2026-01-02T09:30:00+00:00" in text
    assert "roc_auc: 0.7234 (champion 0.7000)" in text and "rows: 10" in text and "note" not in note.facts
    assert "champion: v2" in text and "- PASS roc_auc" in text
    assert "approval request: http://af/dags/train_flights/runs/r1/tasks/approve/required_actions" in text
    # and its structured form says which kind it is
    assert note.fields()["kind"] == "approval_requested" and note.fields()["links"]["approval request"].endswith(
        "required_actions"
    )


def test_airflow_links_quote_the_run_id() -> None:
    link = message.airflow_link(
        "http://af/", "train_x", "manual__2026-01-01T00:00:00+00:00", "approve", "required_actions"
    )
    assert (
        link == "http://af/dags/train_x/runs/manual__2026-01-01T00%3A00%3A00%2B00%3A00/tasks/approve/required_actions"
    )


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown notification kind 'coffee'"):
        message.Notification(kind="coffee", dataset="d", title="t", summary="s")  # type: ignore[arg-type]
    assert len(KINDS) == 9


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("channels:\n  - {name: slack, type: webhook, url: 'https://hooks.slack.com/x'}\n", "url: Extra inputs"),
        ("channels:\n  - {name: slack, type: webhook}\n", "either as url_env or as connection"),
        ("channels:\n  - {name: s, type: webhook, url_env: X, connection: c}\n", "either as url_env or as connection"),
        ("channels:\n  - {name: m, type: smtp, sender: a@b, to: [x@y]}\n", "either as host"),
        ("channels:\n  - {name: m, type: smtp, host: h, connection: c, sender: a@b, to: [x@y]}\n", "either as host"),
        (
            "channels:\n  - {name: m, type: smtp, connection: c, username: u, sender: a@b, to: [x@y]}\n",
            "come from the connection",
        ),
        ("channels:\n  - {name: s, type: webhook, connection: 'no spaces'}\n", "connection: String should match"),
        ("channels:\n  - {name: slack, type: webhook, url_env: X, url: 'https://x'}\n", "url: Extra inputs"),
        ("channels:\n  - {name: log, type: log, kinds: [coffee]}\n", "channels.0.log.kinds.0"),
        ("channels:\n  - {name: log, type: pager}\n", "channels.0: Input tag 'pager'"),
        ("channels:\n  - {name: a, type: log}\n  - {name: a, type: log}\n", "a named more than once"),
        (
            "channels:\n  - {name: m, type: smtp, host: h, sender: a@b, to: [x@y], password_env: P}\n",
            "needs a username",
        ),
        ("channels:\n  - {name: s, type: webhook, url_env: lower-case}\n", "url_env: String should match"),
        ("chanels: []\n", "chanels: Extra inputs"),
        ("channels: [\n", "not valid YAML"),
    ],
)
def test_a_bad_notifications_file_is_refused_naming_the_file_and_the_field(
    tmp_path: Path, text: str, named: str
) -> None:
    # given a notifications file with one mistake, when it is loaded
    path = tmp_path / "notifications.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as refused:
        load_notifications(path)
    # then the error names the file and what is wrong
    assert str(refused.value).startswith(f"{path}:") and named in str(refused.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"notifications file .*nope\.yaml does not exist"):
        load_notifications(tmp_path / "nope.yaml")


def test_the_variables_a_config_needs_are_listed_and_the_missing_ones_named(tmp_path: Path) -> None:
    path = tmp_path / "n.yaml"
    path.write_text(
        "channels:\n  - {name: s, type: webhook, url_env: SLACK_URL}\n"
        "  - {name: m, type: smtp, host: h, sender: a@b, to: [x@y], username: u, password_env: SMTP_PW}\n"
    )
    config = load_notifications(path)
    assert config.env_names() == ["SLACK_URL", "SMTP_PW"]
    assert config.missing_env({"SLACK_URL": "https://x"}) == ["SMTP_PW"]


def test_a_broken_file_never_raises_the_message_goes_to_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # given a notifications file that does not load
    path = tmp_path / "n.yaml"
    path.write_text("channels: [{name: x, type: pager}]\n")
    caplog.set_level(logging.INFO, logger="pipelines.notifications")
    # when a message is delivered, then nothing is raised: the file's error is a failed attempt, and the log has it
    report = deliver(message.deployed("d", "m", "2", previous_version="1", actor="t"), config_path=path,
                     warehouse_url="")  # fmt: skip
    assert report.failed == ["config"] and report.delivered == ["log"]
    assert any("Deployed: m v2 is the champion" in r.getMessage() for r in caplog.records)
    assert any(str(path) in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_a_failure_the_step_announced_is_known_through_the_exception_chain() -> None:
    # given a step's error, announced, then wrapped by the task that ran it
    try:
        try:
            raise RuntimeError("smoke test failed")
        except RuntimeError as inner:
            mark_notified(inner, "deploy_failed")
            raise ValueError("task failed") from inner
    except ValueError as outer:
        wrapped = outer
    # then the wrapper knows it was announced, and an unrelated error does not
    assert notified(wrapped) == "deploy_failed"
    assert notified(ValueError("other")) is None and notified(None) is None


def test_webhook_payloads_for_slack_and_teams() -> None:
    note = message.task_failed("d", dag_id="train_d", run_id="r", task_id="t", try_number=1, error="E: boom",
                               log_url="http://af/log")  # fmt: skip
    slack = payload(WebhookChannel(name="s", type="webhook", url_env="U"), note)
    assert slack["text"] == note.text() and slack["kind"] == "task_failed" and slack["details"] == ["E: boom"]
    teams = payload(WebhookChannel(name="t", type="webhook", url_env="U", format="teams"), note)
    card = teams["attachments"][0]["content"]
    assert card["type"] == "AdaptiveCard" and card["actions"] == [
        {"type": "Action.OpenUrl", "title": "task log", "url": "http://af/log"}
    ]


def test_secrets_are_scrubbed_from_errors() -> None:
    assert scrub("POST https://hooks.slack.com/T/B/tok failed", ["https://hooks.slack.com/T/B/tok", None]) == (
        "POST *** failed"
    )
