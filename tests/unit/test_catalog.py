"""The service's catalog of datasets: which configs of the folder are served, which are reported as broken."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipelines.serving.catalog import Catalog
from tests.conftest import REPO_ROOT

SHIPPED = REPO_ROOT / "pipelines" / "conf" / "datasets"


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_settings):  # type: ignore[no-untyped-def]
    from pipelines.core.settings import get_settings

    datasets = tmp_path / "datasets"
    datasets.mkdir()
    monkeypatch.setenv("MLOPS_DATASETS_DIR", str(datasets))
    get_settings.cache_clear()
    return datasets


def _catalog() -> Catalog:
    from pipelines.core.settings import get_settings

    return Catalog(get_settings(), poll_seconds=10)  # not started: its stores do not talk to MLflow


def test_every_config_of_the_folder_is_served_and_a_broken_one_is_reported_not_fatal(folder: Path) -> None:
    # given the shipped wine and flights configs, and a config whose YAML does not parse
    for name in ("wine", "flights"):
        shutil.copy(SHIPPED / f"{name}.yaml", folder / f"{name}.yaml")
    (folder / "beer.yaml").write_text("name: beer\nsource: [unclosed\n")
    catalog = _catalog()
    # when the catalog scans the folder
    catalog.scan()
    # then both good datasets are served with their own model, task and contract
    assert [d.name for d in catalog.datasets()] == ["flights", "wine"]
    wine = catalog.get("wine")
    assert wine is not None and wine.config.task == "multiclass" and "proline" in wine.contract.names
    assert wine.store.model_name == "wine-cultivar" and wine.status()["dataset"] == "wine"
    # and the broken one is reported with its file's problem, not served
    assert catalog.get("beer") is None and "beer" in catalog.config_errors()


def test_a_dataset_added_later_is_served_and_a_removed_one_dropped_at_the_next_scan(folder: Path) -> None:
    shutil.copy(SHIPPED / "wine.yaml", folder / "wine.yaml")
    catalog = _catalog()
    catalog.scan()
    first = catalog.get("wine")
    # given a second config dropped into the folder, when the catalog scans again
    shutil.copy(SHIPPED / "breast_cancer.yaml", folder / "breast_cancer.yaml")
    catalog.scan()
    # then it is served too, and the first dataset keeps its store (no reload of what did not change)
    assert [d.name for d in catalog.datasets()] == ["breast_cancer", "wine"]
    assert catalog.get("wine") is first
    # when the wine config is removed, then wine is no longer served
    (folder / "wine.yaml").unlink()
    catalog.scan()
    assert [d.name for d in catalog.datasets()] == ["breast_cancer"] and catalog.get("wine") is None


def test_a_config_that_now_names_another_model_gets_a_new_store(folder: Path) -> None:
    text = (SHIPPED / "wine.yaml").read_text()
    (folder / "wine.yaml").write_text(text)
    catalog = _catalog()
    catalog.scan()
    before = catalog.get("wine")
    # when the config's registered model changes
    (folder / "wine.yaml").write_text(text.replace("registered_name: wine-cultivar", "registered_name: wine-v2"))
    catalog.scan()
    # then the dataset is served from a store of the new model
    after = catalog.get("wine")
    assert before is not None and after is not None and after is not before
    assert after.store.model_name == "wine-v2"
