"""Notifications delivered to real receivers started here: an HTTP webhook receiver and an SMTP server (aiosmtpd).

Every kind arrives with its content (subject, links, metrics, deadline, evidence) by webhook and by mail; a
receiver that is down, hangs or answers an error fails nothing: the others still get the message, and the failure
is logged (naming the channel, never the secret) and counted in the warehouse's ``notification_log``.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.core.notifications import Notification, deliver, delivery_counts, message
from pipelines.core.settings import get_settings
from tests.receivers import MailReceiver, WebhookReceiver, closed_port, silent_port

pytestmark = pytest.mark.integration

DEADLINE = datetime(2026, 1, 2, 9, 30, tzinfo=UTC)
REQUEST = "http://airflow.example/dags/train_flights/runs/manual__1/tasks/approve/required_actions"
EVIDENCE = "http://mlflow.example/#/experiments/7/runs/abc"


def every_kind() -> dict[str, tuple[Notification, list[str]]]:
    """One message of each kind, and what its text must show."""
    return {
        "approval_requested": (
            message.approval_requested(
                "flights",
                "flights-delay",
                "3",
                request_url=REQUEST,
                deadline=DEADLINE,
                candidate_metrics={"roc_auc": 0.72, "pr_auc": 0.41},
                champion_metrics={"roc_auc": 0.70},
                champion_version="2",
                reasons=["PASS roc_auc 0.7200 >= floor 0.6500"],
            ),
            [REQUEST, "roc_auc: 0.7200 (champion 0.7000)", "deadline: 2026-01-02T09:30:00+00:00", "PASS roc_auc"],
        ),
        "approval_timed_out": (
            message.approval_timed_out(
                "flights", "flights-delay", "3", request_url=REQUEST, timeout_minutes=60.0, model_version_url=None
            ),
            [REQUEST, "within 60 minutes", "not deployed"],
        ),
        "candidate_refused": (
            message.candidate_refused(
                "flights",
                "flights-delay",
                "4",
                summary="gate failed: FAIL roc_auc 0.5000 < floor 0.6500",
                reasons=["FAIL roc_auc 0.5000 < floor 0.6500"],
                candidate_metrics={"roc_auc": 0.5},
                champion_metrics={"roc_auc": 0.7},
                champion_version="2",
            ),
            ["FAIL roc_auc 0.5000 < floor 0.6500", "roc_auc: 0.5000 (champion 0.7000)", "champion stays v2"],
        ),
        "drift_detected": (
            message.drift_detected(
                "flights",
                window="[2013-07-01, 2013-07-02)",
                champion_version="2",
                drift_share=0.4,
                drifted_features=["temp", "dewp"],
                message="drift: 2 of 5 counted features drifted",
                evidence_url=EVIDENCE,
            ),
            [EVIDENCE, "drifted features: temp, dewp", "drift share: 0.4000"],
        ),
        "retraining_decided": (
            message.retraining_decided(
                "flights",
                window_end="2013-07-04",
                trigger="drift",
                summary="retrain: drift in 3 of 3 consecutive windows",
                reasons=["TRIGGER drift in 3 of 3 consecutive windows"],
                training_dag_id="train_flights",
                training_run_id="retrain__flights__2013-07-04",
                training_window="[2013-04-05, 2013-07-04)",
                evidence_url=EVIDENCE,
            ),
            [EVIDENCE, "retrain__flights__2013-07-04", "TRIGGER drift in 3 of 3"],
        ),
        "deployed": (
            message.deployed(
                "flights", "flights-delay", "3", previous_version="2", actor="train_flights", smoke_single_p50_ms=1.5
            ),
            ["champion: v3", "replaced: v2", "smoke test p50: 1.50 ms"],
        ),
        "deploy_failed": (
            message.deploy_failed(
                "flights", "flights-delay", "3", error="SmokeTestError: probabilities outside [0, 1]", actor="cli"
            ),
            ["SmokeTestError: probabilities outside [0, 1]"],
        ),
        "rolled_back": (
            message.rolled_back(
                "flights", "flights-delay", from_version="3", to_version="2", actor="cli", reason="bad in prod"
            ),
            ["from v3 to v2: bad in prod"],
        ),
        "task_failed": (
            message.task_failed(
                "flights",
                dag_id="train_flights",
                run_id="manual__1",
                task_id="extract",
                try_number=3,
                error="ConnectionError: warehouse unreachable",
                log_url="http://airflow.example/dags/train_flights/runs/manual__1/tasks/extract?try_number=3",
            ),
            ["ConnectionError: warehouse unreachable", "tasks/extract?try_number=3", "try: 3"],
        ),
    }


def write_config(path: Path, channels: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"channels": channels}))
    return path


def test_every_kind_arrives_by_webhook_and_by_mail_with_its_content(
    isolated_settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with WebhookReceiver() as hook, WebhookReceiver() as teams, MailReceiver() as mail:
        # given channels configured once: a log, a Slack-style webhook, a Teams webhook for approvals, a mail server
        monkeypatch.setenv("TEST_SLACK_WEBHOOK_URL", hook.url)
        monkeypatch.setenv("TEST_TEAMS_WEBHOOK_URL", teams.url)
        channels = [
            {"name": "log", "type": "log"},
            {"name": "slack", "type": "webhook", "url_env": "TEST_SLACK_WEBHOOK_URL"},
            {
                "name": "teams",
                "type": "webhook",
                "format": "teams",
                "url_env": "TEST_TEAMS_WEBHOOK_URL",
                "kinds": ["approval_requested"],
            },
            {"name": "mail", "type": "smtp", "host": "127.0.0.1", "port": mail.port, "sender": "mlops@example.com",
             "to": ["ops@example.com", "ann@example.com"]},
        ]  # fmt: skip
        monkeypatch.setenv("MLOPS_NOTIFICATIONS_FILE", str(write_config(tmp_path / "notifications.yaml", channels)))
        get_settings.cache_clear()

        # when one message of every kind is delivered through the settings' file
        reports = {kind: deliver(note) for kind, (note, _) in every_kind().items()}

        # then each reached every channel that wants it
        for kind, report in reports.items():
            wanted = ["log", "slack", "teams", "mail"] if kind == "approval_requested" else ["log", "slack", "mail"]
            assert report.delivered == wanted and report.failed == [], (kind, report)
        for kind, (note, shown) in every_kind().items():
            # and the webhook got the text (Slack's field) and the structured message
            posted = hook.wait_for(lambda body, kind=kind: body["kind"] == kind)
            assert posted["dataset"] == "flights" and posted["title"] == note.title
            for expected in shown:
                assert expected in posted["text"], (kind, expected, posted["text"])
            # and the mail has the subject, the recipients and the same content
            got = mail.wait_for(lambda m, kind=kind: m["X-MLOps-Kind"] == kind)
            assert got["Subject"].strip() == note.subject and got["To"] == "ops@example.com, ann@example.com"
            for expected in shown:
                assert expected in MailReceiver.body(got), (kind, expected)
        assert len(mail.envelopes) == 9 and mail.envelopes[0][1] == ["ops@example.com", "ann@example.com"]
        # and Teams got only the approval request, as an Adaptive Card with the deadline and the request's link
        assert len(teams.items) == 1
        card = teams.items[0]["attachments"][0]["content"]
        facts = {f["title"]: f["value"] for f in card["body"][2]["facts"]}
        assert facts["deadline"] == DEADLINE.isoformat() and facts["roc_auc"] == "0.7200 (champion 0.7000)"
        assert card["actions"][0]["url"] == REQUEST

    # and every attempt is counted in the warehouse
    counts = delivery_counts(isolated_settings.warehouse_url)
    assert counts == {("log", "delivered"): 9, ("slack", "delivered"): 9, ("teams", "delivered"): 1,
                      ("mail", "delivered"): 9}  # fmt: skip


def test_a_receiver_that_is_down_hangs_or_refuses_fails_nothing_and_is_logged_and_counted(
    isolated_settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with WebhookReceiver() as alive, WebhookReceiver(status=500) as failing, silent_port() as hanging:
        # given a live webhook beside a dead one, a hanging one, one answering 500 and a mail server that is down
        dead_url = f"http://127.0.0.1:{closed_port()}/hooks/secret-token-dead"
        hanging_url = f"http://127.0.0.1:{hanging}/hooks/secret-token-hanging"
        for name, url in {"ALIVE": alive.url, "DEAD": dead_url, "HANGING": hanging_url, "FAILING": failing.url}.items():
            monkeypatch.setenv(f"TEST_{name}_URL", url)
        config = write_config(
            tmp_path / "notifications.yaml",
            [
                {"name": "dead", "type": "webhook", "url_env": "TEST_DEAD_URL"},
                {"name": "hanging", "type": "webhook", "url_env": "TEST_HANGING_URL", "timeout_seconds": 1},
                {"name": "failing", "type": "webhook", "url_env": "TEST_FAILING_URL"},
                {"name": "mail", "type": "smtp", "host": "127.0.0.1", "port": closed_port(), "sender": "a@b.c",
                 "to": ["ops@example.com"], "timeout_seconds": 1},
                {"name": "alive", "type": "webhook", "url_env": "TEST_ALIVE_URL"},
            ],
        )  # fmt: skip
        monkeypatch.setenv("MLOPS_NOTIFICATIONS_FILE", str(config))
        get_settings.cache_clear()
        note, _ = every_kind()["deploy_failed"]

        # when a message is delivered
        caplog.set_level(logging.WARNING, logger="pipelines.notifications")
        started = time.monotonic()
        report = deliver(note)
        elapsed = time.monotonic() - started

        # then it returns (no exception), within seconds, and the live receiver got the message
        assert report.delivered == ["alive"] and report.failed == ["dead", "hanging", "failing", "mail"]
        assert elapsed < 8, f"dead receivers cost {elapsed:.1f} s"
        assert alive.wait_for(lambda body: body["kind"] == "deploy_failed")
        assert failing.items, "the failing receiver was reached (and answered 500)"

    # and each failure is logged as a warning naming the channel and the error, never the URL's token
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for channel in ("dead", "hanging", "failing", "mail"):
        assert any(f"not delivered to channel {channel}:" in w for w in warnings), (channel, warnings)
    assert any("HTTP 500" in w for w in warnings)
    assert any("$TEST_DEAD_URL" in w and "ConnectError" in w for w in warnings), warnings
    assert not any("secret-token" in w for w in warnings), warnings
    # and counted in the warehouse, where an operator sees it
    counts = delivery_counts(isolated_settings.warehouse_url)
    assert counts == {("dead", "failed"): 1, ("hanging", "failed"): 1, ("failing", "failed"): 1,
                      ("mail", "failed"): 1, ("alive", "delivered"): 1}  # fmt: skip


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # the loopback, in a test
def test_mail_with_login_reads_its_password_from_the_environment_and_a_missing_one_is_named(
    isolated_settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with MailReceiver(login=("mlops", "s3cret-pw")) as mail, WebhookReceiver() as hook:
        # given a mail server that requires a login, its password in an environment variable, and a webhook whose
        # variable is not set
        monkeypatch.setenv("TEST_SMTP_PASSWORD", "s3cret-pw")
        monkeypatch.delenv("TEST_UNSET_WEBHOOK_URL", raising=False)
        config = write_config(
            tmp_path / "notifications.yaml",
            [
                {"name": "mail", "type": "smtp", "host": "127.0.0.1", "port": mail.port, "username": "mlops",
                 "password_env": "TEST_SMTP_PASSWORD", "sender": "mlops@example.com", "to": ["ops@example.com"]},
                {"name": "hook", "type": "webhook", "url_env": "TEST_UNSET_WEBHOOK_URL"},
            ],
        )  # fmt: skip
        note, _ = every_kind()["rolled_back"]
        caplog.set_level(logging.WARNING, logger="pipelines.notifications")

        # when a message is delivered
        report = deliver(note, config_path=config, warehouse_url=isolated_settings.warehouse_url)

        # then the mail went through the login, and the webhook failed naming the missing variable
        assert report.delivered == ["mail"] and report.failed == ["hook"]
        assert "from v3 to v2: bad in prod" in MailReceiver.body(mail.wait_for(lambda m: True))
        assert any("environment variable TEST_UNSET_WEBHOOK_URL is not set" in r.getMessage() for r in caplog.records)
        assert not hook.items

        # and a wrong password is a failed channel, without the password in the log
        monkeypatch.setenv("TEST_SMTP_PASSWORD", "wrong-pw")
        caplog.clear()
        report = deliver(note, config_path=config, warehouse_url=isolated_settings.warehouse_url)
        assert report.failed == ["mail", "hook"]
        assert any("SMTPAuthenticationError" in r.getMessage() for r in caplog.records)
        assert not any("wrong-pw" in r.getMessage() for r in caplog.records)


def test_a_keyed_message_sent_again_reaches_only_the_channels_that_did_not_get_it(
    isolated_settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    import sqlalchemy as sa

    from pipelines.core.warehouse import get_engine

    # given a notification_log made before messages had keys (no dedup_key column), with one old row
    engine = get_engine(isolated_settings.warehouse_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE notification_log (id INTEGER PRIMARY KEY, sent_at TIMESTAMP NOT NULL, kind VARCHAR(32) "
            "NOT NULL, dataset VARCHAR(64) NOT NULL, title VARCHAR(300) NOT NULL, channel VARCHAR(40) NOT NULL, "
            "status VARCHAR(16) NOT NULL, error TEXT NOT NULL, seconds FLOAT NOT NULL)"
        )
        conn.exec_driver_sql(
            "INSERT INTO notification_log (sent_at, kind, dataset, title, channel, status, error, seconds) "
            "VALUES ('2026-01-01 00:00:00', 'deployed', 'flights', 'old', 'hook', 'delivered', '', 0.1)"
        )
    with WebhookReceiver() as hook:
        # and a live webhook beside a dead one
        monkeypatch.setenv("TEST_LIVE_URL", hook.url)
        monkeypatch.setenv("TEST_DOWN_URL", f"http://127.0.0.1:{closed_port()}/hooks/down")
        config = write_config(
            tmp_path / "notifications.yaml",
            [
                {"name": "hook", "type": "webhook", "url_env": "TEST_LIVE_URL"},
                {"name": "down", "type": "webhook", "url_env": "TEST_DOWN_URL", "timeout_seconds": 1},
            ],
        )
        note, _ = every_kind()["approval_requested"]
        keyed = dataclasses.replace(note, key="train_flights/manual__1/approval_requested")
        url = isolated_settings.warehouse_url

        # when the approval request of one run is sent, then sent again (its task retried)
        first = deliver(keyed, config_path=config, warehouse_url=url)
        again = deliver(keyed, config_path=config, warehouse_url=url)

        # then the live webhook got it once, and only the channel that failed was tried again
        assert (first.delivered, first.failed) == (["hook"], ["down"])
        assert (again.delivered, again.failed) == ([], ["down"])
        assert len(hook.matching(lambda body: body["kind"] == "approval_requested")) == 1
        # and a message without a key (another run's request: another key) is sent as usual
        other = dataclasses.replace(note, key="train_flights/manual__2/approval_requested")
        assert deliver(other, config_path=config, warehouse_url=url).delivered == ["hook"]
        assert deliver(note, config_path=config, warehouse_url=url).delivered == ["hook"]
        assert len(hook.matching(lambda body: body["kind"] == "approval_requested")) == 3

    # and the old table got the column, its row kept, every attempt counted with its key
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT channel, status, dedup_key FROM notification_log ORDER BY id")).all()
    assert [tuple(r) for r in rows] == [
        ("hook", "delivered", None),
        ("hook", "delivered", "train_flights/manual__1/approval_requested"),
        ("down", "failed", "train_flights/manual__1/approval_requested"),
        ("down", "failed", "train_flights/manual__1/approval_requested"),
        ("hook", "delivered", "train_flights/manual__2/approval_requested"),
        ("down", "failed", "train_flights/manual__2/approval_requested"),
        ("hook", "delivered", None),
        ("down", "failed", None),
    ]


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # the loopback, in a test
def test_channels_can_take_their_address_and_secret_from_airflow_connections(
    isolated_settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    from urllib.parse import urlsplit

    with WebhookReceiver() as hook, MailReceiver(login=("mlops", "s3cret-pw")) as mail:
        # given Airflow connections (here from Airflow's environment-variable backend, as AIRFLOW_CONN_<ID>): a Slack
        # webhook connection (base URL in its host, the token as its password), one whose password is the whole URL,
        # an SMTP server with its login; and a channel naming a connection that does not exist
        monkeypatch.setenv(
            "AIRFLOW_CONN_OPS_SLACK",
            json.dumps({"conn_type": "slackwebhook", "host": hook.url.rsplit("/", 1)[0], "password": "T0/B0/tok3n"}),
        )
        monkeypatch.setenv("AIRFLOW_CONN_OPS_HOOK", json.dumps({"conn_type": "http", "password": hook.url}))
        monkeypatch.setenv("AIRFLOW_CONN_OPS_MAIL", f"smtp://mlops:s3cret-pw@127.0.0.1:{mail.port}")
        monkeypatch.delenv("AIRFLOW_CONN_NOT_THERE", raising=False)
        config = write_config(
            tmp_path / "notifications.yaml",
            [
                {"name": "slack", "type": "webhook", "connection": "ops_slack"},
                {"name": "hook", "type": "webhook", "connection": "ops_hook"},
                {"name": "mail", "type": "smtp", "connection": "ops_mail", "sender": "mlops@example.com",
                 "to": ["ops@example.com"]},
                {"name": "missing", "type": "webhook", "connection": "not_there"},
            ],
        )  # fmt: skip
        note, _ = every_kind()["drift_detected"]

        # when a message is delivered
        report = deliver(note, config_path=config, warehouse_url=isolated_settings.warehouse_url)

        # then each connection's channel got it: the Slack one at host + token, the other at its URL, the mail
        # through the connection's login
        assert report.delivered == ["slack", "hook", "mail"] and report.failed == ["missing"]
        base = urlsplit(hook.url).path.rsplit("/", 1)[0]
        assert sorted(hook.paths) == sorted([f"{base}/T0/B0/tok3n", urlsplit(hook.url).path]), hook.paths
        assert all(EVIDENCE in body["text"] for body in hook.items)
        assert EVIDENCE in MailReceiver.body(mail.wait_for(lambda m: m["X-MLOps-Kind"] == "drift_detected"))
        # and the missing one failed naming the connection and how to give it outside Airflow's tasks (the error is
        # what the log and notification_log show)
        error = next(a.error for a in report.attempts if a.channel == "missing")
        assert "Airflow connection 'not_there' (channel 'missing'" in error and "AIRFLOW_CONN_NOT_THERE" in error
        assert not any("tok3n" in a.error or "s3cret" in a.error for a in report.attempts)
