"""The generated config reference in docs/datasets.md, and the command line's config commands."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from pipelines import cli
from pipelines.core import config as config_module
from pipelines.core import config_docs
from pipelines.core.settings import get_settings
from tests.conftest import REPO_ROOT

GUIDE = REPO_ROOT / "docs" / "datasets.md"
SHIPPED = REPO_ROOT / "pipelines" / "conf" / "datasets"


def test_the_committed_reference_is_up_to_date() -> None:
    # given the guide as committed, when the reference is generated from today's models, then nothing changes
    assert config_docs.reference_is_current(GUIDE), (
        f"the config reference in {GUIDE} is out of date: run `{config_docs.REGENERATE}` and commit docs/datasets.md"
    )


def test_every_config_model_has_a_section_and_every_field_a_description() -> None:
    # given every pydantic model defined in pipelines/core/config.py
    models = {
        obj
        for obj in vars(config_module).values()
        if inspect.isclass(obj) and issubclass(obj, BaseModel) and obj.__module__ == config_module.__name__
    }
    models.discard(config_module._Strict)

    # when the reference's sections are listed, then each model has one, found at its YAML path
    sections = config_docs.sections()
    assert {s.model for s in sections} == models
    assert {s.path: s.model.__name__ for s in sections}["source.seed"] == "SeedConfig"
    assert {s.path: s.model.__name__ for s in sections}["features[]"] == "FeatureConfig"
    # and every field says what it means (its description, or the docstring of the model it holds)
    assert config_docs.undocumented_fields() == []


def test_the_reference_gives_each_field_its_type_default_and_description() -> None:
    # when the reference is rendered
    reference = config_docs.render_reference()

    # then a field's row has its type with constraints, its default and its description
    rows = {line.split(" | ")[0].removeprefix("| "): line for line in reference.splitlines() if line.startswith("| `")}
    assert "number (> 0.0, < 0.9) | `0.2` | Share of the rows held out" in rows["`holdout_fraction`"]
    assert '`"binary"` \\| `"multiclass"` \\| `"regression"` | `"binary"` |' in rows["`task`"]
    assert "| required |" in rows["`expectation_suite`"]
    # and a nested model links to its section, and the metrics each task allows are listed
    assert "[SourceConfig](#source-sourceconfig)" in reference
    assert "### `source` (SourceConfig)" in reference
    assert "| `regression` | `rmse` (lower is better), `mae` (lower is better), `r2` |" in reference


def test_writing_the_reference_replaces_only_the_marked_section(tmp_path: Path) -> None:
    # given a document with text around a stale reference section
    doc = tmp_path / "guide.md"
    doc.write_text(f"intro\n\n{config_docs.START_MARKER}\nstale\n{config_docs.END_MARKER}\n\noutro\n")

    # when it is rewritten, twice
    assert config_docs.write_reference(doc) is True
    first = doc.read_text()
    assert config_docs.write_reference(doc) is False

    # then the text around it is kept, the stale part is gone, and the result is current
    assert first.startswith("intro\n\n") and first.endswith("\n\noutro\n")
    assert "stale" not in first and "### `target` (TargetConfig)" in first
    assert config_docs.reference_is_current(doc)


def test_a_document_without_markers_is_refused(tmp_path: Path) -> None:
    doc = tmp_path / "guide.md"
    doc.write_text("no markers here\n")
    with pytest.raises(ValueError, match="config-reference:start"):
        config_docs.write_reference(doc)


@pytest.fixture
def datasets_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A datasets folder with the shipped wine config and one whose gate names a binary metric."""
    folder = tmp_path / "datasets"
    folder.mkdir()
    wine = (SHIPPED / "wine.yaml").read_text()
    (folder / "wine.yaml").write_text(wine)
    wrong = wine.replace("name: wine", "name: wrong_metric").replace("floors: {accuracy: 0.85", "floors: {roc_auc: 0.9")
    assert wrong != wine.replace("name: wine", "name: wrong_metric"), "the wine example's gate changed"
    (folder / "wrong_metric.yaml").write_text(wrong)
    monkeypatch.setenv("MLOPS_DATASETS_DIR", str(folder))
    get_settings.cache_clear()
    yield folder
    get_settings.cache_clear()


def test_check_config_prints_ok_or_the_error_per_file_and_fails_if_any_fails(datasets_dir, capsys) -> None:
    # when every config is checked
    code = cli.main(["check-config"])

    # then the good one is ok, the bad one names its file and field, and the command fails
    out = capsys.readouterr().out
    assert code == 1
    assert f"ok    wine: {datasets_dir / 'wine.yaml'}" in out
    assert f"error wrong_metric: {datasets_dir / 'wrong_metric.yaml'}: gate.floors: metric(s) ['roc_auc']" in out


def test_check_config_of_one_dataset(datasets_dir, capsys) -> None:
    # when only the good dataset is checked, then it passes
    assert cli.main(["check-config", "--dataset", "wine"]) == 0
    assert capsys.readouterr().out.startswith("ok    wine:")
    # and an unknown one fails, listing the configured datasets
    assert cli.main(["check-config", "--dataset", "nope"]) == 1


def test_check_config_checks_the_people_and_notifications_files_too(
    datasets_dir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # given a good people file and a notifications file with a webhook whose URL variable is not set here
    (datasets_dir / "wrong_metric.yaml").unlink()
    people = tmp_path / "people.yaml"
    people.write_text("users:\n  - {name: ann, role: approver}\n  - {name: root, role: admin}\n")
    notifications = tmp_path / "notifications.yaml"
    notifications.write_text(
        "channels:\n  - {name: log, type: log}\n  - {name: ops, type: webhook, url_env: MLOPS_TEST_UNSET_HOOK}\n"
        "  - {name: chat, type: webhook, connection: chat_ops}\n"
    )
    monkeypatch.setenv("MLOPS_PEOPLE_FILE", str(people))
    monkeypatch.setenv("MLOPS_NOTIFICATIONS_FILE", str(notifications))
    monkeypatch.delenv("MLOPS_TEST_UNSET_HOOK", raising=False)
    get_settings.cache_clear()

    # when every config is checked, then both files are ok, the unset secret is a warning naming the channel
    assert cli.main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert f"ok    people: {people} (2 people)" in out
    assert f"ok    notifications: {notifications} (channels: log, ops, chat)" in out
    assert "warn  notifications: MLOPS_TEST_UNSET_HOOK is not set here: channel 'ops'" in out
    # and a channel reading an Airflow connection says which, and where it is looked up
    assert "note  notifications: channel 'chat' reads Airflow connection 'chat_ops'" in out
    assert "AIRFLOW_CONN_CHAT_OPS" in out

    # when the notifications file names an unknown channel type, then the command fails naming the file and field
    notifications.write_text("channels:\n  - {name: pager, type: pagerduty}\n")
    assert cli.main(["check-config"]) == 1
    out = capsys.readouterr().out
    assert out.count("error notifications: ") == 1 and str(notifications) in out and "channels.0" in out
    # and checking one dataset leaves the two files alone
    assert cli.main(["check-config", "--dataset", "wine"]) == 0


def test_a_step_without_dataset_is_refused_listing_the_configured_ones(datasets_dir, capsys) -> None:
    # when a step is called without --dataset, then argparse refuses it and lists the datasets
    with pytest.raises(SystemExit) as exited:
        cli.main(["run", "--run-id", "x"])
    assert exited.value.code == 2
    assert "--dataset NAME is required; configured datasets: wine, wrong_metric" in capsys.readouterr().err


def test_config_reference_check_fails_on_a_stale_document(tmp_path: Path) -> None:
    # given a stale reference section
    doc = tmp_path / "guide.md"
    doc.write_text(f"{config_docs.START_MARKER}\nstale\n{config_docs.END_MARKER}\n")

    # when checked, then the command fails and writes nothing; when regenerated, the check passes
    assert cli.main(["config-reference", "--path", str(doc), "--check"]) == 1
    assert "stale" in doc.read_text()
    assert cli.main(["config-reference", "--path", str(doc)]) == 0
    assert cli.main(["config-reference", "--path", str(doc), "--check"]) == 0
