"""benchmarks.serving's pure logic: answers read per task and per server, MLServer's bodies and environment, the
training plan per dataset, old setup files, the report when MLServer is missing. No server is started here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks import mlserver_env
from benchmarks.serving import (
    BASELINE,
    MLSERVER,
    OURS,
    SERVERS,
    ServerResult,
    Setup,
    TaskOutputs,
    agreement,
    parse_options,
    render_markdown,
    training_plan,
)
from pipelines.core.config import load_config_file
from tests.conftest import REPO_ROOT

DATASETS = REPO_ROOT / "pipelines" / "conf" / "datasets"


def _v2(shape: list[int], data: list[float]) -> dict[str, Any]:
    return {"model_name": "m", "outputs": [{"name": "output-1", "shape": shape, "datatype": "FP64", "data": data}]}


def test_binary_answers_read_as_the_positive_class_probability() -> None:
    # given a binary model whose signature names its classes "0" and "1"
    outputs = TaskOutputs("binary", ("0", "1"))
    # when each server's answer for two records is read, then each gives P(class 1) per record
    assert outputs.baseline({"predictions": [[0.7, 0.3], [0.4, 0.6]]}) == [0.3, 0.6]
    assert outputs.ours({"predictions": [{"id": "a", "probability": 0.3, "decision": 1}, {"probability": 0.6}]}) == [
        0.3,
        0.6,
    ]
    assert outputs.mlserver(_v2([2, 2], [0.7, 0.3, 0.4, 0.6])) == [0.3, 0.6]
    assert outputs.width == 1


def test_regression_answers_read_as_values_from_every_shape() -> None:
    # given a regression model, when MLflow answers a list, ours "value" and MLServer [n] or [n, 1]
    outputs = TaskOutputs("regression", ("prediction",))
    assert outputs.baseline({"predictions": [12.5, -3.0]}) == [12.5, -3.0]
    assert outputs.ours({"predictions": [{"id": "a", "value": 12.5}, {"id": "b", "value": -3.0}]}) == [12.5, -3.0]
    assert outputs.mlserver(_v2([2], [12.5, -3.0])) == [12.5, -3.0]
    assert outputs.mlserver(_v2([2, 1], [12.5, -3.0])) == [12.5, -3.0]
    assert "values" in outputs.noun


def test_multiclass_answers_follow_the_model_class_order() -> None:
    # given three classes in the model's order, when ours names them in another order, then all are read alike
    outputs = TaskOutputs("multiclass", ("class_0", "class_1", "class_2"))
    ours = {"predictions": [{"class": "class_2", "probabilities": {"class_2": 0.7, "class_0": 0.1, "class_1": 0.2}}]}
    assert outputs.ours(ours) == [0.1, 0.2, 0.7]
    assert outputs.baseline({"predictions": [[0.1, 0.2, 0.7]]}) == [0.1, 0.2, 0.7]
    assert outputs.mlserver(_v2([1, 3], [0.1, 0.2, 0.7])) == [0.1, 0.2, 0.7]
    assert outputs.width == 3


def test_agreement_counts_records_not_values() -> None:
    # given two servers' multiclass numbers for 2 records of 3 classes, differing once by 0.25
    outputs = TaskOutputs("multiclass", ("a", "b", "c"))

    def result(server: str, values: list[float]) -> ServerResult:
        return ServerResult(server, [], 0.0, [], {}, {}, None, None, {1: values})

    # when compared, then the largest difference is reported over 2 records (6 values)
    agreed = agreement(
        result(MLSERVER, [0.1, 0.2, 0.7, 0.5, 0.25, 0.25]), result(OURS, [0.1, 0.2, 0.7, 0.5, 0.5, 0.0]), outputs
    )
    assert agreed["records"] == 2 and agreed["values"] == 6 and agreed["max_abs_diff"] == 0.25
    assert agreed["with"] == MLSERVER


def test_v2_body_has_one_typed_input_per_column_and_keeps_nulls() -> None:
    # given two records, one with a missing number, and the signature's column types
    records: list[dict[str, Any]] = [{"carrier": "EV", "distance": 445.0}, {"carrier": "AA", "distance": None}]
    # when turned into an Open Inference Protocol body
    body = mlserver_env.v2_body(records, (("carrier", "string"), ("distance", "double")))
    # then each column is one [n, 1] input of its datatype, decoded as a DataFrame, null kept
    assert body["parameters"] == {"content_type": "pd"}
    assert body["inputs"] == [
        {"name": "carrier", "shape": [2, 1], "datatype": "BYTES", "data": ["EV", "AA"]},
        {"name": "distance", "shape": [2, 1], "datatype": "FP64", "data": [445.0, None]},
    ]


def test_v2_rows_refuses_an_output_that_does_not_match_its_shape() -> None:
    with pytest.raises(ValueError, match="holds 3 values"):
        mlserver_env.v2_rows(_v2([2, 2], [0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="no outputs"):
        mlserver_env.v2_rows({"outputs": []})


def test_requirements_put_the_server_pins_first_and_keep_the_model_pins() -> None:
    # given a model pinned by training (uvloop included, to see the server's pin win)
    model = mlserver_env.ModelFiles(Path("/m"), (), (), ("scikit-learn==1.9.1", "pandas==2.3.3", "uvloop==0.23.0"))
    # when MLServer's requirements are made
    reqs = mlserver_env.requirements_for(model)
    # then the server's pins come first, the model's follow, and a package is pinned once
    assert reqs[: len(mlserver_env.SERVER_PINS)] == list(mlserver_env.SERVER_PINS)
    assert "scikit-learn==1.9.1" in reqs and "pandas==2.3.3" in reqs
    assert [r for r in reqs if r.startswith("uvloop")] == ["uvloop==0.21.0"]


def test_pip_error_quotes_the_conflict_without_the_index_noise(tmp_path: Path) -> None:
    # given a pip log with index warnings, progress and a resolution conflict
    log = tmp_path / "pip.log"
    log.write_text(
        "WARNING: Location 'file:///opt/x/simple/a/' is ignored: it is neither a file nor a directory.\n"
        "Collecting mlserver==1.7.1\n"
        "The conflict is caused by:\n"
        "    mlserver 1.7.1 depends on fastapi<0.116\n"
        "    the user requested fastapi==0.136.3\n"
        "WARNING: Location 'file:///opt/x/simple/b/' is ignored: it is neither a file nor a directory.\n"
        "ERROR: ResolutionImpossible: for help visit https://pip.pypa.io\n"
    )
    # when the error is extracted, then it starts at the conflict and ends with pip's ERROR line, noise left out
    error = mlserver_env.pip_error(log)
    assert error.startswith("The conflict is caused by:")
    assert error.endswith("ERROR: ResolutionImpossible: for help visit https://pip.pypa.io")
    assert "Location" not in error and "Collecting" not in error


def test_training_plan_follows_the_dataset_window() -> None:
    # given the shipped flights_minutes config (window January-March 2013) and wine (no time column)
    minutes = training_plan(load_config_file(DATASETS / "flights_minutes.yaml"))
    wine = training_plan(load_config_file(DATASETS / "wine.yaml"))
    # then version 1 trains on the window, version 2 on it two weeks later; wine on its whole source
    assert minutes.seed == minutes.champion == ("2013-01-01", "2013-04-01")
    assert minutes.candidate == ("2013-01-15", "2013-04-01")
    assert minutes.described == "[2013-01-01, 2013-04-01)"
    assert wine.champion is None and wine.candidate is None and wine.described == "the whole source"


def test_a_setup_file_written_before_datasets_is_a_flights_one() -> None:
    # given a setup.json of an earlier benchmark (no dataset or task) with a key this version does not know
    old = {
        "home": "/tmp/bench",
        "tracking_uri": "sqlite:///m.db",
        "warehouse_url": "sqlite:///w.db",
        "model_name": "flights-delay",
        "champion_version": "1",
        "candidate_version": "2",
        "snapshot_path": "/tmp/s.parquet",
        "estimator": "sklearn.ensemble.HistGradientBoostingClassifier",
        "params": {},
        "window": "[2013-01-01, 2013-04-01)",
        "seconds": 40.0,
        "something_later": True,
    }
    setup = Setup.from_dict(old)
    assert (setup.dataset, setup.task, setup.home) == ("flights", "binary", Path("/tmp/bench"))


def test_servers_run_in_a_fixed_order_and_unknown_ones_are_refused() -> None:
    opts, _ = parse_options(["--servers", f"{OURS},{MLSERVER}"])
    assert opts.servers == (MLSERVER, OURS) and opts.dataset is None
    assert parse_options([])[0].servers == SERVERS
    with pytest.raises(SystemExit, match="unknown server"):
        parse_options(["--servers", "ours,triton"])


def test_the_report_says_why_mlserver_was_not_measured() -> None:
    # given a run in which pip could not install MLServer and no server was measured
    reason = "`pip install mlserver==1.7.1` failed (exit 1):\nERROR: ResolutionImpossible"
    results = {
        "finished_at": "2026-11-28T06:00:00+00:00",
        "options": {
            "duration": 3,
            "connections": 8,
            "threads": 1,
            "warmup": 1,
            "singles": 50,
            "batches": 10,
            "batch_size": 100,
            "baseline_workers": 2,
            "ours_workers": 1,
            "mlserver_workers": 2,
            "max_other": 0.3,
            "attempts": 1,
        },
        "setup": {
            "model_name": "flights-delay-minutes",
            "champion_version": "1",
            "candidate_version": "2",
            "estimator": "sklearn.ensemble.HistGradientBoostingRegressor",
            "params": {"max_iter": 150},
            "window": "[2013-01-01, 2013-04-01)",
            "dataset": "flights_minutes",
            "task": "regression",
        },
        "servers": {},
        "machine": {"nproc": 2, "cpu_model": "cpu", "memory_gb": 24, "kernel": "6", "python": "3.11.7"},
        "versions": {"mlflow": "3.17.2", "scikit-learn": "1.9.1", "wrk": "4.1.0"},
        "code": {"commit": "abc", "serving_code_modified": False},
        "unavailable": {MLSERVER: {"stage": "install", "reason": reason, "log": "/tmp/mlserver-install.log"}},
        "mlserver_install": {"ok": False, "venv": "/v", "requirements": ["mlserver==1.7.1"], "seconds": 3.0},
    }
    # when the Markdown is rendered, then it names the dataset, the task and pip's error, and does not fail
    markdown = render_markdown(results)
    assert "(flights_minutes, regression)" in markdown
    assert "--dataset flights_minutes" in markdown
    assert "**Not measured**: MLServer failed at the install stage" in markdown
    assert "ERROR: ResolutionImpossible" in markdown
    assert "MLServer was not measured" in markdown
    assert BASELINE not in results["servers"]


def test_error_lines_keep_what_went_wrong_and_drop_the_shutdown_chatter() -> None:
    # given the log of an MLServer whose inference workers died at start (uvloop 0.23)
    log = (
        "INFO:     Started server process [1]\n"
        "Traceback (most recent call last):\n"
        '  File "worker.py", line 81, in _ignore_signals\n'
        "    loop = asyncio.get_event_loop()\n"
        "RuntimeError: There is no current event loop in thread 'MainThread'.\n"
        "RuntimeError: There is no current event loop in thread 'MainThread'.\n"
        "2026-11-28 05:47:04,364 [mlserver] ERROR - Some of the models failed to load during startup!\n"
        "INFO:     Shutting down\n"
    )
    # then the exception (once) and the ERROR record are kept, the frames and INFO lines are not
    assert mlserver_env.error_lines(log).splitlines() == [
        "RuntimeError: There is no current event loop in thread 'MainThread'.",
        "2026-11-28 05:47:04,364 [mlserver] ERROR - Some of the models failed to load during startup!",
    ]
