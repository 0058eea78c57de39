"""Attacks on the loop, tried as an attacker with access to MLflow would, against the real services: each fails.

The module's dataset is the wine example under a name of its own (``wine_security``, model ``wine-security``),
served by a prediction service of its own on the shared stack's MLflow and warehouse. Its v1 is trained, approved by
policy and deployed through the steps; then:

- a cloudpickled "model" whose loading would write a file is registered through MLflow, tagged ``approval.status =
  approved`` and aliased ``champion``: the service refuses it without running it and keeps serving v1; ``deploy``
  refuses it too; the refusals are in the audit trail and the metrics;
- an approved version whose model file is swapped in the artifact store after its approval is refused by ``deploy``
  and by the service (the old champion keeps serving), and cannot be approved again;
- a run that tries to loosen the approval policy by its overrides fails at its first step, naming the key.

(Elsewhere, on the same shared stack: the train DAG's test runs the override attack through Airflow and shows that a
viewer, an operator and the admin get 403 answering an approval while the approver's name lands on the tags; the
serving test kills the log writer and sees ``/ready`` turn 503.)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pipelines import steps
from pipelines.core import audit, registry
from pipelines.core.artifact_digests import UntrustedModelError
from pipelines.core.errors import ConfigError, SmokeTestError
from pipelines.core.runs import RunContext
from pipelines.core.settings import Settings, get_settings
from pipelines.stack.processes import Service, wait_until
from pipelines.stack.settings import StackSettings
from tests.integration.conftest import SHARED, SHIPPED_DATASETS
from tests.stack import pointed_at, service_env, start_service, train_champion

pytestmark = [pytest.mark.integration, SHARED]

DATASET = "wine_security"
MODEL = "wine-security"
AT = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Target:
    """What the attacks aim at: the stack's environment with the module's datasets, v1's chain, the service."""

    env: dict[str, str]
    settings: Settings
    v1: dict[str, Any]
    url: str

    def champion(self) -> str:
        return str(registry.alias_version(self.settings, MODEL, registry.CHAMPION).version)

    def alias_champion(self, version: str) -> None:
        """What anyone who can reach MLflow can do: move the alias by its API, and tell the service."""
        registry.client(self.settings).set_registered_model_alias(MODEL, registry.CHAMPION, version)
        httpx.post(f"{self.url}/admin/reload", timeout=10)

    def served(self) -> dict[str, Any]:
        status: dict[str, Any] = httpx.get(f"{self.url}/models/{DATASET}", timeout=5).json()
        return status

    def predict(self) -> dict[str, Any]:
        records = _wine_records(self.settings, 3)
        response = httpx.post(f"{self.url}/predict/{DATASET}", json={"records": records}, timeout=30)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def refusals(self) -> list[tuple[str, str]]:
        return [
            (str(e["model_version"]), str(e["actor"]))
            for e in audit.history(self.settings.warehouse_url, MODEL)
            if e["event"] == "artifact_refused"
        ]


def _wine_records(settings: Settings, n: int) -> list[dict[str, Any]]:
    """``n`` wines of the dataset's source as JSON records."""
    from pipelines.core.config import load_dataset_config
    from pipelines.data.features import build_features
    from pipelines.data.sources import read_source

    config = load_dataset_config(DATASET)
    features = build_features(read_source(config, settings), config).head(n)
    return [{k: float(v) for k, v in row.items()} for row in features.to_dict(orient="records")]


@pytest.fixture(scope="module")
def target(shared_stack: StackSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    folder = tmp_path_factory.mktemp("security-datasets")
    wine = yaml.safe_load((SHIPPED_DATASETS / "wine.yaml").read_text())
    wine["name"] = DATASET
    wine["source"]["path"] = "{home}/sources/wine_security.parquet"
    wine["model"].update(registered_name=MODEL, experiment=DATASET)
    wine["monitoring"].update(experiment=f"{DATASET}-monitoring", schedule=None)
    (folder / f"{DATASET}.yaml").write_text(yaml.safe_dump(wine, sort_keys=False))
    with pointed_at(shared_stack, serving_url=""):
        os.environ["MLOPS_DATASETS_DIR"] = str(folder)
        get_settings.cache_clear()
        steps.seed(DATASET, None, None)
        v1 = train_champion(DATASET, RunContext("test_security", "v1", "test"), None, None, AT)  # type: ignore[arg-type]
        assert v1["deploy"]["champion_version"] == "1", v1["gate"]
        env = {k: v for k, v in service_env(shared_stack).items() if k != "MLOPS_SERVING_URL"}
        env["MLOPS_DATASETS_DIR"] = str(folder)
        proc: Service
        proc, url = start_service(env, tmp_path_factory.mktemp("security-service"), DATASET)
        try:
            target = Target(env, get_settings(), v1, url)
            wait_until(lambda: target.served().get("version") == "1", "the service to serve v1", 120)
            yield target
        finally:
            proc.stop()


class _Planted:
    """What the attacker's model does when it is unpickled: here, harmlessly, write a file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path(self.marker).write_text, ("the attacker's code ran",))


def _register_pickled_model(marker: Path) -> str:
    """Log a cloudpickled pyfunc "model" carrying :class:`_Planted` and register it as a version of the model."""
    import mlflow.pyfunc

    class Attack(mlflow.pyfunc.PythonModel):
        def __init__(self) -> None:
            self.payload = _Planted(str(marker))

        def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
            return model_input

    with mlflow.start_run(run_name="not a training run"):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=Attack(), registered_model_name=MODEL, pip_requirements=[]
        )
    marker.unlink(missing_ok=True)  # whatever logging itself did: only what the loop does afterwards counts
    return str(info.registered_model_version)


def test_a_pickled_model_aliased_champion_is_never_loaded(target: Target, tmp_path: Path) -> None:
    # given a cloudpickled model registered through MLflow, tagged approved and aliased champion
    marker = tmp_path / "pwned"
    version = _register_pickled_model(marker)
    registry.set_version_tags(target.settings, MODEL, version, {"approval.status": "approved"})
    target.alias_champion(version)
    # when the service follows the alias
    wait_until(
        lambda: (target.served().get("last_error") or {}).get("version") == version, "the service to refuse it", 120
    )
    # then the model's code never ran, the refusal says why, and v1 keeps answering
    assert not marker.exists()
    status = target.served()
    assert status["version"] == "1" and "no approved artifact digest" in status["last_error"]["error"], status
    assert target.predict()["model_version"] == "1"
    metrics = httpx.get(f"{target.url}/metrics", timeout=5).text
    assert f'mlops_model_loads_total{{dataset="{DATASET}",outcome="refused"}}' in metrics
    assert (version, "serving") in target.refusals()

    # when deploy is asked to make it champion (the alias put back first)
    target.alias_champion("1")
    forged = {**target.v1["trained"], "model_version": version}
    with pytest.raises(SmokeTestError, match="no approved artifact digest"):
        steps.deploy(DATASET, RunContext("test_security", "pickled", "test"), forged, target.v1["snapshot"], AT)
    # then it refuses before loading anything: nothing ran, the champion did not move, the refusal is recorded
    assert not marker.exists()
    assert target.champion() == "1"
    assert (version, "deploy") in target.refusals()
    assert registry.client(target.settings).get_model_version(MODEL, version).tags["deploy.status"] == (
        "artifact_refused"
    )


def _model_file(settings: Settings, env: dict[str, str], version: str) -> Path:
    """The skops file of ``version`` in the MLflow server's artifact store (a folder on this machine)."""
    source = registry.client(settings).get_model_version(MODEL, version).source
    model_id = source.rstrip("/").split("/")[-1]
    store = Path(env["MLOPS_HOME"]) / "mlflow" / "artifacts"
    files = [p for p in store.rglob("model.skops") if model_id in str(p)]
    assert len(files) == 1, (model_id, files)
    return files[0]


def test_an_artifact_changed_after_approval_is_refused_at_deploy_and_at_load(target: Target) -> None:
    # given v3, trained and approved by a person, whose model file is then swapped for another valid model's
    run = RunContext("test_security", "swapped", "test")
    snapshot = steps.extract(DATASET, run, None, None, {"model": {"seed": 7}})
    validation = steps.validate(DATASET, run, snapshot, {"model": {"seed": 7}})
    trained = steps.train(DATASET, run, snapshot, validation, {"model": {"seed": 7}})
    version = str(trained["model_version"])
    steps.record_approval(
        DATASET, run, trained, status="approved", decided_by="ann", decided_at=AT, mode="manual", comment="ok"
    )
    swapped = _model_file(target.settings, target.env, version)
    swapped.write_bytes(_model_file(target.settings, target.env, "1").read_bytes())

    # when it is deployed, then deploy refuses it before loading, naming the file, and v1 stays champion
    with pytest.raises(SmokeTestError, match=r"changed: model\.skops"):
        steps.deploy(DATASET, run, trained, snapshot, AT)
    assert target.champion() == "1"
    assert (version, "deploy") in target.refusals()

    # when someone moves the alias to it anyway, then the service refuses it and v1 keeps answering
    target.alias_champion(version)
    wait_until(
        lambda: (target.served().get("last_error") or {}).get("version") == version, "the service to refuse it", 120
    )
    status = target.served()
    assert status["version"] == "1" and "changed: model.skops" in status["last_error"]["error"], status
    assert target.predict()["model_version"] == "1"
    assert (version, "serving") in target.refusals()
    target.alias_champion("1")

    # and approving it again does not bless the new files: they are not the ones trained
    with pytest.raises(UntrustedModelError, match=r"changed: model\.skops"):
        steps.record_approval(DATASET, run, trained, status="approved", decided_by="ann", decided_at=AT, mode="manual")


def test_a_run_cannot_loosen_the_approval_policy(target: Target) -> None:
    # given a run that asks for automatic approval by its overrides
    run = RunContext("test_security", "self-approval", "test")
    # when its first step runs, then it fails naming the key, before any data is read
    with pytest.raises(ConfigError, match=r"overrides may not change approval\.mode"):
        steps.extract(DATASET, run, None, None, {"approval": {"mode": "auto"}})
    assert target.champion() == "1"
