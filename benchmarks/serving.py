"""Serving benchmark: MLflow's scoring server (and MLServer) against our prediction service, on the same model.

Run from the repository root (``--help`` lists every option)::

    .venv/bin/python -m benchmarks.serving [--dataset flights] [--duration 15] [--connections 8]

In a fresh folder ``runtime/benchmarks/serving-<time>-<random>/`` (its own ``MLOPS_HOME``, a local SQLite MLflow
store and a SQLite warehouse: a running demo is never touched) it

1. trains two real versions of the dataset's model (``--dataset``, default ``flights``; any shipped config of
   pipelines/conf/datasets, e.g. ``flights_minutes`` for regression) with the project's own steps (``seed``, ``run``
   for version 1, which becomes ``champion``; ``extract``/``validate``/``train`` on a later start of the config's
   window for version 2, only registered);
2. builds real request bodies from the snapshot (50 distinct single records, 10 distinct batches of 100), which
   the wrk script ``benchmarks/wrk/rotate.lua`` sends in turn, in each server's own request format;
3. starts each server in turn (never two at once): ``mlflow models serve``, MLServer with its MLflow runtime (in its
   own virtual environment ``runtime/venvs/mlserver``, installed from PyPI the first time; when it cannot be
   installed or started the report says why) and our service; loads each with wrk on loopback, after a warm-up,
   with 1 and 100 records per request, recording throughput, latency percentiles, errors, CPU and memory, and checks
   that all answer the same numbers (probabilities, values or class probabilities, as the task has it);
4. promotes version 2 while our service is under load and counts what each version answered.

All raw figures go to ``results.json`` in that folder; the Markdown section is printed on stdout and written to
``runtime/benchmarks/serving.md`` (``serving-<dataset>.md`` for another dataset than flights). Every process it
starts is stopped (its whole process group) before it exits.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx
import psutil

from benchmarks import mlserver_env
from benchmarks.machine import describe as describe_machine

log = logging.getLogger("benchmarks.serving")

REPO_ROOT = Path(__file__).resolve().parent.parent
RUNTIME_DIR = REPO_ROOT / "runtime" / "benchmarks"
MARKDOWN_OUT = RUNTIME_DIR / "serving.md"  # flights; another dataset's goes to serving-<dataset>.md beside it
LUA_SCRIPT = Path(__file__).resolve().parent / "wrk" / "rotate.lua"
OURS_MAIN = REPO_ROOT / "pipelines" / "serving" / "__main__.py"

DEFAULT_DATASET = "flights"
CHAMPION = "champion"
BASELINE = "baseline"
OURS = "ours"
MLSERVER = "mlserver"
SERVERS = (BASELINE, MLSERVER, OURS)  # the order they run and are reported in
BASELINES = (BASELINE, MLSERVER)  # what ours is compared with
SERVER_NAMES = {BASELINE: "MLflow scoring server", MLSERVER: "MLServer (MLflow runtime)", OURS: "our service"}
SHORT_NAMES = {BASELINE: "MLflow", MLSERVER: "MLServer", OURS: "ours"}
IN_A_SENTENCE = {BASELINE: "the MLflow scoring server", MLSERVER: "MLServer", OURS: "our service"}

# The runs' ids; their windows come from the dataset's config (``training_plan``): version 1 on the config's window
# (flights: January-March 2013), version 2 on the same window started two weeks later.
CHAMPION_RUN_ID = "bench1"
CANDIDATE_RUN_ID = "bench2"
CANDIDATE_LATER_BY = timedelta(days=14)

_TIME_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


class BenchmarkError(RuntimeError):
    """The benchmark cannot go on (a step failed, a server did not start, wrk is missing)."""


# Options and set-up.


@dataclass(frozen=True)
class Options:
    """What to run and how hard: see ``build_parser``."""

    duration: int
    connections: int
    threads: int
    warmup: int
    timeout: int
    baseline_workers: int
    ours_workers: int
    mlserver_workers: int
    singles: int
    batches: int
    batch_size: int
    promotion_duration: int
    promotion_at: float
    servers: tuple[str, ...]
    promotion: bool
    reuse: Path | None
    seed: int
    quiet_below: float
    quiet_wait: float
    max_other: float
    attempts: int
    dataset: str | None = None  # None: the --reuse folder's, else flights


@dataclass(frozen=True)
class Setup:
    """The benchmark's folder, services' addresses, the dataset and the two registered versions."""

    home: Path
    tracking_uri: str
    warehouse_url: str
    model_name: str
    champion_version: str
    candidate_version: str
    snapshot_path: str
    estimator: str
    params: dict[str, Any]
    window: str
    seconds: float
    dataset: str = DEFAULT_DATASET  # a setup.json written before --dataset is a flights one
    task: str = "binary"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Setup:
        known = {f.name for f in fields(cls)}
        return cls(**{**{k: v for k, v in data.items() if k in known}, "home": Path(data["home"])})


def service_env(home: Path) -> dict[str, str]:
    """The environment of every process the benchmark starts: the venv first on PATH, one OpenMP thread."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "MLFLOW_"))}
    tracking_uri = f"sqlite:///{home / 'mlflow.db'}"
    env.update(
        {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "MLOPS_HOME": str(home),
            "MLOPS_MLFLOW_TRACKING_URI": tracking_uri,
            "MLOPS_WAREHOUSE_URL": f"sqlite:///{home / 'warehouse.db'}",
            "MLFLOW_TRACKING_URI": tracking_uri,
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def run_step(args: list[str], env: dict[str, str], logs: Path, dataset: str) -> dict[str, Any]:
    """Run ``python -m pipelines <args> --dataset <dataset>`` and return the JSON result it prints; its log goes to
    ``logs/``."""
    log_path = logs / f"pipelines-{args[0]}-{'-'.join(a for a in args[1:] if not a.startswith('-'))}.log"
    log.info("$ python -m pipelines %s --dataset %s", " ".join(args), dataset)
    with log_path.open("w") as err:
        proc = subprocess.run(
            [sys.executable, "-m", "pipelines", args[0], "--dataset", dataset, *args[1:]],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        raise BenchmarkError(f"`python -m pipelines {' '.join(args)}` failed (exit {proc.returncode}); see {log_path}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


@dataclass(frozen=True)
class TrainingPlan:
    """The windows of the two versions, from the dataset's config (``None``: the whole source, no time column)."""

    seed: tuple[str, str] | None
    champion: tuple[str, str] | None
    candidate: tuple[str, str] | None

    @property
    def described(self) -> str:
        return "the whole source" if self.champion is None else f"[{self.champion[0]}, {self.champion[1]})"


def training_plan(config: Any) -> TrainingPlan:
    """Version 1 on the config's window, version 2 on the same window two weeks later (the flights benchmark's
    January-March 2013 and January 15-March 2013); a dataset without a time column trains both on all its rows."""
    if config.window is None:
        return TrainingPlan(None, None, None)
    start, end = config.window.start, config.window.end
    later: date = min(start + CANDIDATE_LATER_BY, end - timedelta(days=1))
    window = (start.isoformat(), end.isoformat())
    return TrainingPlan(window, window, (later.isoformat(), end.isoformat()))


def dataset_config(name: str) -> Any:
    """The dataset's config, or a ``BenchmarkError`` naming the configured datasets."""
    from pipelines.core.config import load_dataset_config
    from pipelines.core.errors import ConfigError

    try:
        return load_dataset_config(name)
    except (ConfigError, FileNotFoundError) as exc:
        raise BenchmarkError(f"--dataset {name}: {exc}") from exc


def _window_args(window: tuple[str, str] | None) -> list[str]:
    return [] if window is None else ["--start", window[0], "--end", window[1]]


def prepare_models(home: Path, env: dict[str, str], dataset: str) -> Setup:
    """Seed the warehouse and train two versions with the project's steps; version 1 becomes champion."""
    from pipelines.core.runs import RunContext

    config = dataset_config(dataset)
    plan = training_plan(config)
    started = time.monotonic()
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    run_step(["seed", *_window_args(plan.seed)], env, logs, dataset)
    first = run_step(["run", "--run-id", CHAMPION_RUN_ID, *_window_args(plan.champion)], env, logs, dataset)
    if not first.get("deployed"):
        raise BenchmarkError(f"the first run was not deployed: {first}")
    run_step(["extract", "--run-id", CANDIDATE_RUN_ID, *_window_args(plan.candidate)], env, logs, dataset)
    run_step(["validate", "--run-id", CANDIDATE_RUN_ID], env, logs, dataset)
    second = run_step(["train", "--run-id", CANDIDATE_RUN_ID], env, logs, dataset)
    if second["model_version"] == first["champion_version"]:
        raise BenchmarkError("the second training registered no new version")
    approve_candidate(env, dataset, second)

    key = RunContext("cli", CHAMPION_RUN_ID).key
    extract = json.loads((home / "data" / dataset / key / "extract.json").read_text())
    setup = Setup(
        home=home,
        tracking_uri=env["MLOPS_MLFLOW_TRACKING_URI"],
        warehouse_url=env["MLOPS_WAREHOUSE_URL"],
        model_name=str(first["model_name"]),
        champion_version=str(first["champion_version"]),
        candidate_version=str(second["model_version"]),
        snapshot_path=str(extract["path"]),
        estimator=config.model.estimator,
        params=dict(config.model.params),
        window=plan.described,
        seconds=round(time.monotonic() - started, 1),
        dataset=dataset,
        task=config.task,
    )
    (home / "setup.json").write_text(json.dumps(asdict(setup), indent=2, default=str))
    log.info(
        "set up in %.0f s: %s (%s) v%s is champion, v%s registered",
        setup.seconds,
        setup.model_name,
        setup.task,
        setup.champion_version,
        setup.candidate_version,
    )
    return setup


def approve_candidate(env: dict[str, str], dataset: str, trained: dict[str, Any]) -> None:
    """Approve the candidate as a person would (the service serves approved versions only: the approval records
    the digest of its files that every load checks), so that the promotion can move ``champion`` to it."""
    from pipelines import steps
    from pipelines.core.runs import RunContext
    from pipelines.core.settings import get_settings

    saved = dict(os.environ)
    os.environ.update(env)
    get_settings.cache_clear()
    try:
        steps.record_approval(
            dataset,
            RunContext("cli", CANDIDATE_RUN_ID),
            trained,
            status="approved",
            decided_by="benchmark",
            decided_at=datetime.now(UTC),
            mode="manual",
            comment="approved by the benchmark for its promotion under load",
        )
    finally:
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()


def reuse_setup(home: Path, dataset: str | None = None) -> Setup:
    """A folder prepared by an earlier run (``--reuse``), with ``champion`` put back on its first version; it keeps
    the dataset it was set up for (``dataset``, when given, must be that one)."""
    from mlflow import MlflowClient

    path = home / "setup.json"
    if not path.is_file():
        raise BenchmarkError(f"{path} does not exist: --reuse needs a folder set up by an earlier run")
    setup = Setup.from_dict(json.loads(path.read_text()))
    if dataset is not None and dataset != setup.dataset:
        raise BenchmarkError(
            f"--dataset {dataset}, but {home} was set up for dataset {setup.dataset} "
            "(leave --dataset out with --reuse, or set up a folder for it)"
        )
    MlflowClient(tracking_uri=setup.tracking_uri).set_registered_model_alias(
        setup.model_name, CHAMPION, setup.champion_version
    )
    log.info(
        "reusing %s: dataset %s, %s v%s is champion again",
        home,
        setup.dataset,
        setup.model_name,
        setup.champion_version,
    )
    return setup


# Request bodies.


@dataclass
class PayloadSet:
    """Distinct request bodies of one size, as each server takes them (one JSON document per line of a file)."""

    size: int
    count: int
    files: dict[str, Path]
    frames: list[Any] = field(repr=False)  # the typed feature frames, for the in-process timings

    def bodies(self, server: str) -> list[str]:
        return self.files[server].read_text().splitlines()

    def to_dict(self) -> dict[str, Any]:
        return {
            "records_per_request": self.size,
            "distinct_bodies": self.count,
            "files": {k: str(v) for k, v in self.files.items()},
            "bytes_per_body": {k: round(statistics.mean(len(b) for b in self.bodies(k))) for k in self.files},
        }


FRESH_ID = "@@"  # replaced in every request by a growing counter (benchmarks/wrk/rotate.lua)
FRESH_TIME = "1999-12-31T23:59:59"  # a valid time, replaced in every request by a growing one


def build_payloads(setup: Setup, out: Path, opts: Options, model: mlserver_env.ModelFiles) -> list[PayloadSet]:
    """Real feature records of distinct rows of the snapshot, built as training builds them (NaN -> null), in each
    server's request format (``model``: the columns and types of the version's signature, for MLServer's bodies).

    A snapshot with fewer rows than the bodies need (e.g. wine's 178) is sampled with replacement."""
    import numpy as np
    import pandas as pd

    from pipelines.data.features import build_features

    config = dataset_config(setup.dataset)
    frame = pd.read_parquet(setup.snapshot_path)
    needed = opts.singles + opts.batches * opts.batch_size
    replace = needed > len(frame)
    if replace:
        log.warning("the snapshot has %d rows for %d records: some records repeat", len(frame), needed)
    rows = np.random.default_rng(opts.seed).choice(len(frame), size=needed, replace=replace)
    picked = frame.iloc[rows].reset_index(drop=True)
    features = build_features(picked, config)
    records = features.astype(object).where(features.notna(), None).to_dict("records")
    key = config.key_name if config.key_name in picked.columns else None
    ids = picked[key].astype(str).tolist() if key else [f"row{int(r)}" for r in rows]
    times = (
        pd.to_datetime(picked[config.time_column]).dt.strftime("%Y-%m-%dT%H:%M:%S").tolist()
        if config.time_column
        else None
    )

    groups = [
        (1, [slice(i, i + 1) for i in range(opts.singles)]),
        (
            opts.batch_size,
            [
                slice(opts.singles + b * opts.batch_size, opts.singles + (b + 1) * opts.batch_size)
                for b in range(opts.batches)
            ],
        ),
    ]
    out.mkdir(parents=True, exist_ok=True)
    sets = []
    for size, slices in groups:
        lines = {
            BASELINE: [_dumps({"dataframe_records": records[s]}) for s in slices],
            # Ids and event times carry placeholders that rotate.lua fills per request (a growing counter, a
            # growing time): a real client sends fresh keys for events ahead in time, and a prediction log fed the
            # same 1,000 keys and times again and again is a worst case of its own (its indexes get random inserts).
            OURS: [
                _dumps(
                    {
                        "records": records[s],
                        "ids": [FRESH_ID + i for i in ids[s]],
                        **({"event_times": [FRESH_TIME] * len(times[s])} if times is not None else {}),
                    }
                )
                for s in slices
            ],
            MLSERVER: [_dumps(mlserver_env.v2_body(records[s], model.inputs)) for s in slices],
        }
        files = {}
        for server, bodies in lines.items():
            files[server] = out / f"{server}-{size}.jsonl"
            files[server].write_text("\n".join(bodies) + "\n")
        sets.append(PayloadSet(size, len(slices), files, [features.iloc[s] for s in slices]))
    nulls = int(features.isna().any(axis=1).sum())
    log.info(
        "request bodies: %d single records and %d batches of %d (%d of %d records have a null) in %s",
        opts.singles,
        opts.batches,
        opts.batch_size,
        nulls,
        needed,
        out,
    )
    return sets


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


# Servers.


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on the loopback interface right now (held together while picked)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(n):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


class Server:
    """A server started in its own process group; stopping it signals the whole group.

    ``shared_socket``: its worker processes accept connections on one listening socket (uvicorn's workers), so the
    kernel may hand wrk's few connections unevenly to them (``_balanced``); MLServer's inference workers get their
    requests from its one HTTP process instead."""

    def __init__(
        self,
        name: str,
        cmd: list[str],
        env: dict[str, str],
        port: int,
        ready_path: str,
        log_path: Path,
        workers: int,
        cwd: Path = REPO_ROOT,
        shared_socket: bool = True,
    ) -> None:
        self.name = name
        self.workers = workers
        self.cwd = cwd
        self.shared_socket = shared_socket
        self.cmd = cmd
        self.env = env
        self.port = port
        self.ready_path = ready_path
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{port}"
        self.exit_code: int | None = None
        self.stop_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def __enter__(self) -> Server:
        log.info("starting %s on port %d: %s", self.name, self.port, " ".join(self.cmd))
        self._log = self.log_path.open("wb")
        self._proc = subprocess.Popen(
            self.cmd, env=self.env, cwd=self.cwd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def wait_ready(self, timeout: float = 240.0) -> float:
        """Seconds until ``ready_path`` answers 200; raises if the process exits or the time runs out."""
        started = time.monotonic()
        with httpx.Client(timeout=5.0) as client:
            while time.monotonic() - started < timeout:
                if self._proc is None or self._proc.poll() is not None:
                    raise BenchmarkError(f"{self.name} exited before it was ready:\n{self.log_tail()}")
                try:
                    if client.get(self.url + self.ready_path).status_code == 200:
                        return time.monotonic() - started
                except httpx.TransportError:
                    pass
                time.sleep(0.25)
        raise BenchmarkError(f"{self.name} was not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def processes(self) -> list[psutil.Process]:
        if self._proc is None:
            return []
        try:
            root = psutil.Process(self._proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> dict[int, float]:
        """User + system CPU time so far of each process of the tree, by pid."""
        seconds = {}
        for proc in self.processes():
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            seconds[proc.pid] = times.user + times.system
        return seconds

    def memory(self) -> dict[str, Any]:
        """RSS and PSS (shared pages split between the processes sharing them) of the process tree, in MB."""
        rows = []
        for proc in self.processes():
            try:
                info = proc.memory_full_info()
                rows.append(
                    {
                        "pid": proc.pid,
                        "name": proc.name(),
                        "cmdline": " ".join(proc.cmdline())[:160],
                        "rss_mb": round(info.rss / 2**20, 1),
                        "pss_mb": round(info.pss / 2**20, 1),
                    }
                )
            except psutil.NoSuchProcess:
                continue
        return {
            "processes": len(rows),
            "rss_mb": round(sum(r["rss_mb"] for r in rows), 1),
            "pss_mb": round(sum(r["pss_mb"] for r in rows), 1),
            "per_process": rows,
        }

    def stop(self, timeout: float = 45.0) -> int | None:
        """SIGTERM to the process group, SIGKILL after ``timeout``; the exit code of the root process."""
        proc = self._proc
        if proc is None:
            return None
        try:
            if proc.poll() is None:
                log.info("stopping %s (SIGTERM to process group %d)", self.name, proc.pid)
                stopping = time.monotonic()
                _signal_group(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    log.warning("%s did not stop within %.0f s: SIGKILL", self.name, timeout)
                    _signal_group(proc.pid, signal.SIGKILL)
                    proc.wait()
                _reap_group(proc.pid)
                self.stop_seconds = round(time.monotonic() - stopping, 2)
            _reap_group(proc.pid)
            self.exit_code = proc.returncode
        finally:
            if self._log is not None:
                self._log.close()
            self._proc = None
        return self.exit_code


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _reap_group(pgid: int, grace: float = 10.0) -> None:
    """Wait for stragglers of the group (e.g. workers of an exited parent); SIGKILL them after ``grace``."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    log.warning("processes of group %d outlived their parent: SIGKILL", pgid)
    _signal_group(pgid, signal.SIGKILL)


def baseline_server(setup: Setup, env: dict[str, str], opts: Options) -> Server:
    port = free_port()
    cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "models",
        "serve",
        "-m",
        f"models:/{setup.model_name}/{setup.champion_version}",
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "-p",
        str(port),
        "-w",
        str(opts.baseline_workers),
    ]
    log_path = setup.home / "logs" / "baseline-server.log"
    return Server(BASELINE, cmd, env, port, "/ping", log_path, workers=opts.baseline_workers)


def ours_server(setup: Setup, env: dict[str, str], label: str = "ours", workers: int = 1) -> Server:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "pipelines.serving",
        "--default-dataset",
        setup.dataset,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    return Server(OURS, cmd, env, port, "/ready", setup.home / "logs" / f"{label}-server.log", workers=workers)


def mlserver_server(
    setup: Setup, env: dict[str, str], opts: Options, install: mlserver_env.Install, model: mlserver_env.ModelFiles
) -> tuple[Server, dict[str, Any]]:
    """``mlserver start`` on a model repository in the benchmark folder serving the champion version's artifact
    folder; the server and the repository's two files as written."""
    http_port, grpc_port, metrics_port = free_ports(3)
    folder = setup.home / "mlserver"
    if folder.exists():
        shutil.rmtree(folder)
    written = mlserver_env.write_repository(
        folder,
        setup.model_name,
        setup.champion_version,
        model,
        (http_port, grpc_port, metrics_port),
        opts.mlserver_workers,
    )
    menv = {**env, "PATH": f"{install.bin}{os.pathsep}{env.get('PATH', '')}"}
    menv.pop("PROMETHEUS_MULTIPROC_DIR", None)
    cmd = [str(install.bin / "mlserver"), "start", str(folder)]
    server = Server(
        MLSERVER,
        cmd,
        menv,
        http_port,
        f"/v2/models/{setup.model_name}/ready",
        setup.home / "logs" / "mlserver-server.log",
        workers=opts.mlserver_workers,
        cwd=folder,
        shared_socket=False,
    )
    return server, written


# wrk.


@dataclass
class WrkRun:
    """One wrk run: figures parsed from its output, the script's exact counts and the client's CPU time."""

    command: list[str]
    requests: int
    elapsed_s: float
    requests_per_s: float
    latency_ms: dict[str, float]
    non_2xx: int
    socket_errors: dict[str, int]
    exact: dict[str, Any]
    client_cpu_s: float
    output: str

    @property
    def socket_error_total(self) -> int:
        return sum(self.socket_errors.values())


@dataclass
class WrkProcess:
    """A wrk run in progress."""

    proc: subprocess.Popen[str]
    command: list[str]
    children_cpu_before: float


def start_wrk(
    url: str, path: str, bodies: Path, duration: float, opts: Options, count_versions: bool = False
) -> WrkProcess:
    """Start wrk in the background (``finish_wrk`` waits for it and parses its report)."""
    cmd = [
        "wrk",
        f"-t{opts.threads}",
        f"-c{opts.connections}",
        f"-d{duration:g}s",
        f"--timeout={opts.timeout}s",
        "--latency",
        "-s",
        str(LUA_SCRIPT),
        url,
        "--",
        path,
        str(bodies),
    ]
    if count_versions:
        cmd.append("count-versions")
    log.debug("$ %s", " ".join(cmd))
    cpu_before = _children_cpu()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return WrkProcess(proc, cmd, cpu_before)


def finish_wrk(wrk: WrkProcess) -> WrkRun:
    """Wait for wrk and parse its output; its CPU time is the growth of this process's reaped children's."""
    output, _ = wrk.proc.communicate()
    if wrk.proc.returncode != 0:
        raise BenchmarkError(f"wrk failed (exit {wrk.proc.returncode}):\n{output}")
    return parse_wrk(output, wrk.command, _children_cpu() - wrk.children_cpu_before)


def run_wrk(url: str, path: str, bodies: Path, duration: float, opts: Options) -> WrkRun:
    return finish_wrk(start_wrk(url, path, bodies, duration, opts))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _to_ms(value: str, unit: str) -> float:
    return float(value) * _TIME_UNITS_MS[unit]


def parse_wrk(output: str, command: list[str], client_cpu_s: float = 0.0) -> WrkRun:
    """Figures of wrk's ``--latency`` report (and of the ``BENCH_JSON`` line our script prints)."""
    latency = {
        f"p{m[1]}": _to_ms(m[2], m[3])
        for m in re.finditer(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE)
    }
    done = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),", output, re.MULTILINE)
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    if done is None or rate is None or len(latency) != 4:
        raise BenchmarkError(f"unexpected wrk output:\n{output}")
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    socket_errors = dict(
        zip(
            ("connect", "read", "write", "timeout"),
            (int(g) for g in sockets.groups()) if sockets else (0, 0, 0, 0),
            strict=True,
        )
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    exact = re.search(r"^BENCH_JSON (\{.*\})$", output, re.MULTILINE)
    return WrkRun(
        command=command,
        requests=int(done[1]),
        elapsed_s=_to_ms(done[2], done[3]) / 1e3,
        requests_per_s=float(rate[1]),
        latency_ms=latency,
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=socket_errors,
        exact=json.loads(exact[1]) if exact else {},
        client_cpu_s=round(client_cpu_s, 2),
        output=output,
    )


# Measurements.


@dataclass
class Measurement:
    """One server x request size: wrk's figures and where the CPU went during the run."""

    server: str
    records_per_request: int
    wrk: WrkRun
    records_per_s: float
    server_cpu_s: float
    server_cpu_ms_per_request: float
    cores_server: float
    cores_wrk: float
    cores_other: float
    cores_by_process: dict[str, float]
    loadavg_before: tuple[float, float, float]
    prediction_log: dict[str, Any] | None = None
    log_drained_before_s: float | None = None
    balanced: bool = True
    attempts: int = 1
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["wrk"]["socket_error_total"] = self.wrk.socket_error_total
        return data

    def summary(self) -> dict[str, Any]:
        """The headline figures of a run that was not kept."""
        return {
            "requests_per_s": self.wrk.requests_per_s,
            "latency_ms": self.wrk.latency_ms,
            "cores_server": self.cores_server,
            "cores_by_process": self.cores_by_process,
            "cores_other": self.cores_other,
            "balanced": self.balanced,
        }


def _busy_cpu_seconds() -> float:
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def wait_for_quiet(opts: Options, what: str, sample_s: float = 3.0) -> float:
    """Wait (up to ``opts.quiet_wait``) until the machine's busy CPU is below ``opts.quiet_below`` cores.

    On a shared machine other processes steal the cores the servers are measured on; each measured run also
    records the CPU used by everything else (``cores_other``). Returns the last sample, in cores.
    """
    deadline = time.monotonic() + opts.quiet_wait
    while True:
        before = _busy_cpu_seconds()
        time.sleep(sample_s)
        busy = round((_busy_cpu_seconds() - before) / sample_s, 2)
        if busy < opts.quiet_below:
            return busy
        if time.monotonic() >= deadline:
            log.warning("the machine is still busy (%.2f cores in use) before %s: measuring anyway", busy, what)
            return busy
        log.info("the machine is busy (%.2f cores in use by other processes) before %s: waiting", busy, what)


@dataclass(frozen=True)
class ServerSpec:
    """How to talk to one kind of server: where to post, how to read its answer and its state."""

    path: str
    outputs: Callable[[dict[str, Any]], list[float]]  # the numbers compared across servers, record by record
    describe: Callable[[Server], dict[str, Any]]
    log_stats: Callable[[Server], dict[str, Any]] | None = None  # our prediction log's counters


def measure(server: Server, spec: ServerSpec, payload: PayloadSet, opts: Options) -> Measurement:
    """Warm up, then measured wrk runs until one is not disturbed by other processes (``--max-other``).

    Each attempt waits for the machine to be quiet first (and for our prediction log to have written its
    backlog, so a cell does not pay for the previous one); the kept attempt is the least disturbed one.
    """
    bodies = payload.files[server.name]
    log.info(
        "%s, %d record(s) per request: %d s warm-up, then %d s measured",
        server.name,
        payload.size,
        opts.warmup,
        opts.duration,
    )
    if opts.warmup > 0:
        run_wrk(server.url, spec.path, bodies, opts.warmup, opts)
    attempts: list[Measurement] = []
    for attempt in range(1, opts.attempts + 1):
        if attempt > 1:
            wait_for_quiet(opts, f"attempt {attempt} of {server.name}, {payload.size} record(s)")
        drained = _drain_log(server, spec.log_stats) if spec.log_stats is not None else None
        result = _measure_once(server, spec, payload, opts)
        result.log_drained_before_s = drained
        result.balanced = _balanced(result, server.workers) if server.shared_socket else True
        attempts.append(result)
        problems = []
        if result.cores_other > opts.max_other:
            problems.append(f"other processes used {result.cores_other:.2f} cores (more than {opts.max_other:.2f})")
        if not result.balanced:
            problems.append(f"the load fell unevenly on its {server.workers} workers ({result.cores_by_process})")
        if not problems:
            break
        log.warning(
            "  %s: %s", "; ".join(problems), "measuring again" if attempt < opts.attempts else "keeping the best run"
        )
    # The server's best case: balanced over its workers first, then the least disturbed by other processes.
    best = min(attempts, key=lambda m: (not m.balanced, m.cores_other))
    best.attempts = len(attempts)
    best.rejected = [m.summary() for m in attempts if m is not best]
    return best


def _balanced(measurement: Measurement, workers: int) -> bool:
    """Whether every worker of a multi-process server did at least a quarter of the work.

    uvicorn's workers share one listening socket and the kernel hands each new connection to one of them: wrk's
    few keep-alive connections can all land on the same worker, leaving the other idle for the whole run.
    """
    if workers <= 1 or measurement.cores_server <= 0:
        return True
    shares = sorted(measurement.cores_by_process.values(), reverse=True)[:workers]
    return len(shares) == workers and min(shares) >= 0.25 * measurement.cores_server


def _measure_once(server: Server, spec: ServerSpec, payload: PayloadSet, opts: Options) -> Measurement:
    """One measured wrk run, with the CPU of the server, of wrk and of the rest of the machine over it."""
    loadavg = os.getloadavg()
    log_before = spec.log_stats(server) if spec.log_stats is not None else None
    server_before, busy_before = server.cpu_seconds(), _busy_cpu_seconds()
    run = run_wrk(server.url, spec.path, payload.files[server.name], opts.duration, opts)
    server_after = server.cpu_seconds()
    by_process = {pid: server_after[pid] - server_before.get(pid, 0.0) for pid in server_after}
    server_cpu = sum(by_process.values())
    busy = _busy_cpu_seconds() - busy_before
    log_after = spec.log_stats(server) if spec.log_stats is not None else None
    elapsed = run.elapsed_s
    result = Measurement(
        server=server.name,
        records_per_request=payload.size,
        wrk=run,
        records_per_s=round(run.requests_per_s * payload.size, 1),
        server_cpu_s=round(server_cpu, 2),
        server_cpu_ms_per_request=round(1e3 * server_cpu / max(run.requests, 1), 3),
        cores_server=round(server_cpu / elapsed, 2),
        cores_wrk=round(run.client_cpu_s / elapsed, 2),
        cores_other=round(max(busy - server_cpu - run.client_cpu_s, 0.0) / elapsed, 2),
        cores_by_process={
            str(pid): round(cpu / elapsed, 2) for pid, cpu in by_process.items() if cpu / elapsed >= 0.01
        },
        loadavg_before=(round(loadavg[0], 2), round(loadavg[1], 2), round(loadavg[2], 2)),
    )
    if log_before is not None and log_after is not None:
        written = log_after["written"] - log_before["written"]
        result.prediction_log = {
            "records_answered": run.requests * payload.size,
            "written": written,
            "written_per_s": round(written / elapsed, 1),
            "dropped": log_after["dropped"] - log_before["dropped"],
            "queued_at_end": log_after["queued"],
            "write_errors": log_after["write_errors"] - log_before["write_errors"],
        }
    log.info(
        "  %.1f req/s, %.0f records/s, p50 %.1f ms, p99 %.1f ms, %d non-2xx, %d socket errors; "
        "CPU cores: server %.2f, wrk %.2f, other %.2f%s",
        run.requests_per_s,
        result.records_per_s,
        run.latency_ms["p50"],
        run.latency_ms["p99"],
        run.non_2xx,
        run.socket_error_total,
        result.cores_server,
        result.cores_wrk,
        result.cores_other,
        f"; prediction log {result.prediction_log}" if result.prediction_log else "",
    )
    return result


def _drain_log(server: Server, log_stats: Callable[[Server], dict[str, Any]], timeout: float = 300.0) -> float:
    """Seconds until our service's prediction log has nothing queued (it writes off the request path)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        queued = log_stats(server)["queued"]
        if queued == 0:
            return round(time.monotonic() - started, 2)
        log.debug("waiting for %d queued prediction-log records", queued)
        time.sleep(0.5)
    log.warning("the prediction log still has records queued after %.0f s: measuring anyway", timeout)
    return round(timeout, 2)


@dataclass(frozen=True)
class TaskOutputs:
    """What every server's answer is compared on, per record, as the dataset's task has it.

    - binary: the probability of the positive class (1);
    - multiclass: every class's probability, in the model's class order (``classes``);
    - regression: the predicted value.

    ``classes``: the output columns of the version's signature (a classifier's classes as text, the order of
    ``predict_proba``'s columns)."""

    task: str
    classes: tuple[str, ...] = ()

    @property
    def width(self) -> int:
        """Numbers per record."""
        return len(self.classes) if self.task == "multiclass" else 1

    @property
    def positive(self) -> int:
        """The positive class's column of a binary model's probabilities (as the service picks it)."""
        for label in ("1", "True", "1.0"):
            if label in self.classes:
                return self.classes.index(label)
        return 1

    @property
    def noun(self) -> str:
        return {
            "binary": "probabilities of the positive class",
            "multiclass": "class probabilities",
            "regression": "predicted values",
        }.get(self.task, "outputs")

    def from_rows(self, rows: list[Any]) -> list[float]:
        """From per-record rows of class probabilities (``predict_proba``) or values (``predict``)."""
        if self.task == "regression":
            return [float(row[0] if isinstance(row, list) else row) for row in rows]
        if self.task == "binary":
            return [float(row[self.positive]) for row in rows]
        return [float(p) for row in rows for p in row]

    def baseline(self, body: dict[str, Any]) -> list[float]:
        """From MLflow's scoring server: ``{"predictions": rows}`` (``[p0, p1]`` per record for binary)."""
        return self.from_rows(body["predictions"])

    def ours(self, body: dict[str, Any]) -> list[float]:
        """From our ``/predict``: ``probability``, ``probabilities`` by class name, or ``value`` per record."""
        predictions = body["predictions"]
        if self.task == "regression":
            return [float(p["value"]) for p in predictions]
        if self.task == "binary":
            return [float(p["probability"]) for p in predictions]
        return [float(p["probabilities"][c]) for p in predictions for c in self.classes]

    def mlserver(self, body: dict[str, Any]) -> list[float]:
        """From MLServer's ``/v2/models/<name>/infer``: one output, the pyfunc's array (``[n, k]`` or ``[n]``)."""
        return self.from_rows(mlserver_env.v2_rows(body))


def collect_outputs(server: Server, spec: ServerSpec, payload: PayloadSet) -> list[float]:
    """Every body of ``payload`` once, sequentially: the numbers the server answers (``spec.outputs``)."""
    outputs: list[float] = []
    with httpx.Client(base_url=server.url, timeout=60.0) as client:
        for body in payload.bodies(server.name):
            response = client.post(spec.path, content=body, headers={"Content-Type": "application/json"})
            if response.status_code != 200:
                raise BenchmarkError(
                    f"{server.name} answered {response.status_code} to a benchmark body: {response.text[:500]}"
                )
            try:
                outputs.extend(spec.outputs(response.json()))
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                raise BenchmarkError(f"unexpected answer from {server.name} ({exc!r}): {response.text[:500]}") from exc
    return outputs


@dataclass
class ServerResult:
    """One server's whole phase."""

    server: str
    command: list[str]
    ready_after_s: float
    measurements: list[Measurement]
    memory: dict[str, Any]
    model: dict[str, Any]
    exit_code: int | None
    stop_seconds: float | None
    outputs: dict[int, list[float]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "command": self.command,
            "ready_after_s": round(self.ready_after_s, 1),
            "measurements": [m.to_dict() for m in self.measurements],
            "memory_after_run": self.memory,
            "model": self.model,
            "exit_code": self.exit_code,
            "stop_seconds": self.stop_seconds,
        }


def bench_server(server: Server, spec: ServerSpec, payloads: list[PayloadSet], opts: Options) -> ServerResult:
    """Start ``server``, check it answers every body, measure each request size, read its memory, stop it."""
    with server:
        ready = server.wait_ready()
        log.info("%s ready after %.1f s", server.name, ready)
        outputs = {p.size: collect_outputs(server, spec, p) for p in payloads}
        measurements = [measure(server, spec, p, opts) for p in payloads]
        memory = server.memory()
        model = spec.describe(server)
        log.info(
            "%s after the runs: %d processes, RSS %.0f MB, PSS %.0f MB",
            server.name,
            memory["processes"],
            memory["rss_mb"],
            memory["pss_mb"],
        )
    log.info("%s stopped in %.1f s (exit code %s)", server.name, server.stop_seconds or 0.0, server.exit_code)
    return ServerResult(
        server.name,
        server.cmd,
        ready,
        measurements,
        memory,
        model,
        server.exit_code,
        server.stop_seconds,
        outputs,
    )


def baseline_spec(outputs: TaskOutputs) -> ServerSpec:
    return ServerSpec(path="/invocations", outputs=outputs.baseline, describe=lambda s: {})


def _ours_describe(server: Server) -> dict[str, Any]:
    return _get_json(server.url + "/model")


def _ours_log_stats(server: Server) -> dict[str, Any]:
    stats: dict[str, Any] = _get_json(server.url + "/model")["prediction_log"]
    return stats


def ours_spec(outputs: TaskOutputs) -> ServerSpec:
    """``POST /predict``: the service's default dataset, the benchmark's (``--default-dataset``)."""
    return ServerSpec(path="/predict", outputs=outputs.ours, describe=_ours_describe, log_stats=_ours_log_stats)


def mlserver_spec(outputs: TaskOutputs, model_name: str) -> ServerSpec:
    """``POST /v2/models/<name>/infer`` (Open Inference Protocol); described by its model metadata."""

    def describe(server: Server) -> dict[str, Any]:
        return _get_json(f"{server.url}/v2/models/{model_name}")

    return ServerSpec(path=f"/v2/models/{model_name}/infer", outputs=outputs.mlserver, describe=describe)


def _get_json(url: str) -> dict[str, Any]:
    response = httpx.get(url, timeout=10.0)
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    return data


# In-process costs of the baseline's path.


def model_layer(task: str) -> str:
    """The in-process timing of the model itself: ``predict_proba`` for a classifier, ``predict`` for a regressor."""
    return "sklearn_predict" if task == "regression" else "sklearn_predict_proba"


def inprocess_costs(setup: Setup, payloads: list[PayloadSet], repeats: dict[int, int]) -> dict[str, dict[str, float]]:
    """Median CPU ms per call, one thread, of the layers of MLflow's scoring path: model, pyfunc, ``invocations()``."""
    import mlflow
    import mlflow.pyfunc
    from mlflow.pyfunc import scoring_server
    from threadpoolctl import threadpool_limits

    mlflow.set_tracking_uri(setup.tracking_uri)
    mlflow.set_registry_uri(setup.tracking_uri)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{setup.model_name}/{setup.champion_version}")
    sklearn_model = pyfunc.get_raw_model()
    schema = pyfunc.metadata.get_input_schema()

    def invoke(body: str) -> object:
        return scoring_server.invocations(body, "application/json", pyfunc, schema)  # type: ignore[no-untyped-call]

    costs: dict[str, dict[str, float]] = {}
    with threadpool_limits(limits=1):
        for payload in payloads:
            n = repeats.get(payload.size, 50)
            layers: dict[str, tuple[Callable[[Any], object], list[Any]]] = {
                model_layer(setup.task): (
                    sklearn_model.predict if setup.task == "regression" else sklearn_model.predict_proba,
                    payload.frames,
                ),
                "pyfunc_predict": (pyfunc.predict, payload.frames),
                "mlflow_invocations": (invoke, payload.bodies(BASELINE)),
            }
            n = repeats.get(payload.size, 50)
            costs[str(payload.size)] = {name: _median_ms(call, inputs, n) for name, (call, inputs) in layers.items()}
            log.info(
                "in-process, %d record(s): %s",
                payload.size,
                ", ".join(f"{k} {v:.2f} ms" for k, v in costs[str(payload.size)].items()),
            )
    return costs


def _median_ms(call: Callable[[Any], object], inputs: list[Any], repeats: int) -> float:
    """Median CPU time (this thread's, so other processes on the machine do not inflate it) of ``call`` in ms,
    over ``repeats`` calls on ``inputs`` in turn, after 10 warm-up calls."""
    for i in range(min(10, repeats)):
        call(inputs[i % len(inputs)])
    samples = []
    for i in range(repeats):
        arg = inputs[i % len(inputs)]
        started = time.thread_time_ns()
        call(arg)
        samples.append(time.thread_time_ns() - started)
    return round(statistics.median(samples) / 1e6, 3)


# Promotion under load.


def logged_by_version(warehouse_url: str, dataset: str) -> dict[str, int]:
    """Records in the warehouse's prediction log per model version (empty when there is none yet), once the
    requests still waiting in the log's intake are turned into records, as any reader of the log does."""
    from pipelines.serving.prediction_log import served_by_version

    return served_by_version(warehouse_url, dataset)


def promotion_under_load(setup: Setup, env: dict[str, str], single: PayloadSet, opts: Options) -> dict[str, Any]:
    """wrk with single records on a fresh instance of our service; ``champion`` moves to v2 part-way through."""
    from mlflow import MlflowClient

    target = setup.candidate_version
    before = logged_by_version(setup.warehouse_url, setup.dataset)
    server = ours_server(setup, env, label="ours-promotion")
    timeline: dict[str, Any] = {}
    with server:
        server.wait_ready()
        model_before = _get_json(server.url + "/model")
        log.info(
            "promotion: %s v%s served; wrk for %d s, champion -> v%s at %.0f s",
            setup.model_name,
            model_before.get("version"),
            opts.promotion_duration,
            target,
            opts.promotion_at,
        )
        wrk = start_wrk(server.url, "/predict", single.files[OURS], opts.promotion_duration, opts, count_versions=True)
        started = time.monotonic()
        try:
            time.sleep(opts.promotion_at)
            MlflowClient(tracking_uri=setup.tracking_uri).set_registered_model_alias(setup.model_name, CHAMPION, target)
            timeline["alias_moved_at_s"] = round(time.monotonic() - started, 3)
            reload = httpx.post(server.url + "/admin/reload", timeout=10.0)
            reload_at = time.monotonic()
            timeline["reload_requested_at_s"] = round(reload_at - started, 3)
            timeline["reload_status"] = reload.status_code
            switched = _wait_for_version(server.url, target, deadline=started + opts.promotion_duration + 60)
            timeline["switched_at_s"] = None if switched is None else round(switched - started, 3)
            timeline["switch_after_reload_s"] = None if switched is None else round(switched - reload_at, 3)
        except BaseException:
            wrk.proc.kill()
            wrk.proc.wait()
            raise
        run = finish_wrk(wrk)
        model_after = _get_json(server.url + "/model")
    after = logged_by_version(setup.warehouse_url, setup.dataset)
    logged = {v: after.get(v, 0) - before.get(v, 0) for v in sorted(set(after) | set(before))}
    logged = {v: n for v, n in logged.items() if n}
    result = {
        "duration_s": opts.promotion_duration,
        "wrk": asdict(run),
        "requests": run.requests,
        "non_2xx": run.non_2xx,
        "socket_errors": run.socket_errors,
        "socket_error_total": run.socket_error_total,
        "answered_by_version_client": run.exact.get("versions", {}),
        "statuses_client": run.exact.get("statuses", {}),
        "logged_by_version": logged,
        "exit_code": server.exit_code,
        "model_before": model_before,
        "model_after": model_after,
        **timeline,
    }
    if timeline.get("switched_at_s") is None:
        log.error("promotion: /model never reported v%s", target)
    log.info(
        "promotion: %d requests, %d non-2xx, %d socket errors; v%s reported %.2f s after the reload; "
        "answered per version %s, logged per version %s",
        run.requests,
        run.non_2xx,
        run.socket_error_total,
        target,
        timeline.get("switch_after_reload_s") or float("nan"),
        result["answered_by_version_client"],
        logged,
    )
    return result


def _wait_for_version(url: str, version: str, deadline: float) -> float | None:
    """The monotonic time at which ``GET /model`` first reports ``version`` (polled every 50 ms)."""
    with httpx.Client(timeout=5.0) as client:
        while time.monotonic() < deadline:
            try:
                if str(client.get(url + "/model").json().get("version")) == version:
                    return time.monotonic()
            except (httpx.TransportError, ValueError):
                pass
            time.sleep(0.05)
    return None


# Context of the run.


def code_version() -> dict[str, Any]:
    """The commit measured, whether the serving code differs from it, and a hash of that code as it was read."""
    import hashlib

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    digest = hashlib.sha256()
    for path in sorted((REPO_ROOT / "pipelines" / "serving").glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "serving_code_modified": bool(git("status", "--porcelain", "--", "pipelines/serving")),
        "serving_code_sha256": digest.hexdigest()[:12],
    }


def versions() -> dict[str, str]:
    found = {}
    for name in ("mlflow", "scikit-learn", "pandas", "numpy", "fastapi", "uvicorn", "orjson"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    first = (wrk.stdout or wrk.stderr).splitlines()
    found["wrk"] = first[0].split(" Copyright")[0].removeprefix("wrk ") if first else "unknown"
    return found


# Report.


def _ms(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _ratio(ours: float, baseline: float) -> str:
    return f"{ours / baseline:.2f}×" if baseline else "n/a"


_TASK_ANSWERS = {
    "binary": "the probability of the positive class (MLflow's and MLServer's `predict_proba` rows, our `probability`)",
    "multiclass": "every class's probability (MLflow's and MLServer's `predict_proba` rows, our `probabilities`)",
    "regression": "the predicted value (MLflow's and MLServer's `predict`, our `value`)",
}


def render_markdown(results: dict[str, Any]) -> str:
    """The section for docs/benchmarks.md: conditions, tables, a paragraph of reading."""
    opts, setup, servers = results["options"], results["setup"], results["servers"]
    mach, ver, code = results["machine"], results["versions"], results["code"]
    dataset, task = setup.get("dataset", DEFAULT_DATASET), setup.get("task", "binary")
    unavailable = results.get("unavailable", {})
    with_mlserver = MLSERVER in servers or MLSERVER in unavailable
    params = ", ".join(f"{k}={v}" for k, v in setup["params"].items())
    title = (
        "## Serving: MLflow scoring server" + (" and MLServer" if with_mlserver else "") + " vs our prediction service"
    )
    if dataset != DEFAULT_DATASET:
        title += f" ({dataset}, {task})"
    command = "python -m benchmarks.serving" + (f" --dataset {dataset}" if dataset != DEFAULT_DATASET else "")
    noun = TaskOutputs(task).noun
    lines = [
        title,
        "",
        f"Measured {results['finished_at'][:16].replace('T', ' ')} UTC by `{command} "
        f"--duration {opts['duration']} --connections {opts['connections']}` on {mach['nproc']} cores "
        f"({mach['cpu_model']}), {mach['memory_gb']} GB RAM, Linux {mach['kernel']}; Python {mach['python']}, "
        f"MLflow {ver['mlflow']}, scikit-learn {ver['scikit-learn']}, {ver['wrk']}; code at commit "
        f"`{code['commit']}`{' with uncommitted changes to pipelines/serving' if code['serving_code_modified'] else ''}"
        ".",
        "",
        f"Model: `{setup['model_name']}` v{setup['champion_version']}, `{setup['estimator']}` ({params}) in the "
        f"project's preprocessing pipeline, the {task} model of dataset `{dataset}`, trained by the project's own "
        f"steps on {setup['window']}; every server answers with {_TASK_ANSWERS.get(task, noun)}. Bodies: "
        f"{opts['singles']} distinct single records and {opts['batches']} distinct batches of {opts['batch_size']} "
        "from its snapshot (real feature records, NaN as null), each in the server's own request format, sent in turn "
        f"by `benchmarks/wrk/rotate.lua`. Load: `wrk -t{opts['threads']} -c{opts['connections']} "
        f"-d{opts['duration']}s --latency` on loopback after a {opts['warmup']} s warm-up, one server at a time, "
        "`OMP_NUM_THREADS=1` for all. Baseline: "
        f"`mlflow models serve -m models:/{setup['model_name']}/{setup['champion_version']} --env-manager local "
        f"-w {opts['baseline_workers']}` on `POST /invocations`; ours: `python -m pipelines.serving "
        f"--default-dataset {dataset} --workers {opts.get('ours_workers', 1)}` on `POST /predict`."
        + (_mlserver_sentence(results) if MLSERVER in servers else ""),
        "",
    ]
    if servers:
        lines += _throughput_table(servers, opts)
        lines += _memory_table(servers)
        if OURS in servers:
            lines += _prediction_log_table(servers[OURS])
    if results.get("inprocess"):
        lines += _anatomy_table(results["inprocess"], servers.get(BASELINE))
    if results.get("promotion"):
        lines += _promotion_table(results["promotion"], setup, opts)
    if with_mlserver:
        lines += _mlserver_section(results)
    lines += ["### Reading", "", reading(results), ""]
    return "\n".join(lines)


def _mlserver_sentence(results: dict[str, Any]) -> str:
    setup, opts = results["setup"], results["options"]
    versions = (results.get("mlserver_install") or {}).get("versions", {})
    return (
        f" Second baseline: MLServer {versions.get('mlserver', '?')} with its MLflow runtime (`mlserver-mlflow` "
        f"{versions.get('mlserver-mlflow', '?')}) in a virtual environment of its own, `mlserver start` on a model "
        "repository whose `model-settings.json` points at the version's artifact folder in the benchmark's MLflow "
        f"store, `parallel_workers` {opts.get('mlserver_workers', 2)} (inference processes behind its one HTTP "
        "process), `debug` off (no access log), on the Open Inference Protocol: "
        f"`POST /v2/models/{setup['model_name']}/infer` with one input per column, decoded by its pandas codec "
        "(`content_type: pd`)."
    )


def _present(servers: dict[str, Any]) -> list[str]:
    return [name for name in SERVERS if name in servers]


def _throughput_table(servers: dict[str, Any], opts: dict[str, Any]) -> list[str]:
    lines = [
        "### Throughput and latency",
        "",
        "| server | records / request | requests/s | records/s | p50 ms | p90 ms | p99 ms | non-2xx | socket errors "
        "| server CPU ms / request | CPU cores: server / wrk / other |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    by_size: dict[int, dict[str, dict[str, Any]]] = {}
    for name, server in servers.items():
        for m in server["measurements"]:
            by_size.setdefault(m["records_per_request"], {})[name] = m
    for size in sorted(by_size):
        cells = by_size[size]
        for name in _present(cells):
            m = cells[name]
            w = m["wrk"]
            lines.append(
                f"| {SERVER_NAMES[name]} | {size} | {w['requests_per_s']:.0f} | {m['records_per_s']:.0f} | "
                f"{_ms(w['latency_ms']['p50'])} | {_ms(w['latency_ms']['p90'])} | {_ms(w['latency_ms']['p99'])} | "
                f"{w['non_2xx']} | {w['socket_error_total']} | {m['server_cpu_ms_per_request']:.2f} | "
                f"{m['cores_server']:.2f}{_split(m)} / {m['cores_wrk']:.2f} / {m['cores_other']:.2f} |"
            )
        for other in BASELINES:
            if other in cells and OURS in cells:
                b, o = cells[other], cells[OURS]
                lines.append(
                    f"| **ours / {SHORT_NAMES[other]}** | {size} | "
                    f"**{_ratio(o['wrk']['requests_per_s'], b['wrk']['requests_per_s'])}** | | | | "
                    f"**{_ratio(o['wrk']['latency_ms']['p99'], b['wrk']['latency_ms']['p99'])}** | | | "
                    f"{_ratio(o['server_cpu_ms_per_request'], b['server_cpu_ms_per_request'])} | |"
                )
    lines += [
        "",
        "Ratio rows: throughput and p99 of ours divided by each baseline's (throughput above 1 and p99 below 1 "
        "favour ours). CPU cores: CPU time over the run's wall time, of the server's process tree, of wrk, and "
        "of everything else on the machine (in brackets: per server process, when several worked); a run in which "
        f"other processes used more than {opts['max_other']} cores, or in which one of the uvicorn workers sharing a "
        f"socket got (almost) no connections, is measured again (up to {opts['attempts']} runs) and the best run is "
        "kept: the baselines get their best case.",
        "",
    ]
    return lines


def _split(measurement: dict[str, Any]) -> str:
    """How a multi-process server's CPU was spread over its processes, e.g. `` (0.98 + 0.74)``."""
    shares = sorted(measurement.get("cores_by_process", {}).values(), reverse=True)
    busy = [share for share in shares if share >= 0.05]
    return f" ({' + '.join(f'{share:.2f}' for share in busy)})" if len(busy) > 1 else ""


def _memory_table(servers: dict[str, Any]) -> list[str]:
    lines = [
        "### Memory after the runs",
        "",
        "| server | processes | RSS MB (sum) | PSS MB (sum) | prediction-log records queued | SIGTERM to exit, s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in _present(servers):
        mem = servers[name]["memory_after_run"]
        stop = servers[name].get("stop_seconds")
        queued = (servers[name]["model"].get("prediction_log") or {}).get("queued", "n/a")
        lines.append(
            f"| {SERVER_NAMES[name]} | {mem['processes']} | {mem['rss_mb']:.0f} | {mem['pss_mb']:.0f} | {queued} | "
            f"{'n/a' if stop is None else f'{stop:.1f}'} |"
        )
    lines += [
        "",
        "Summed over the server's process tree (PSS splits shared pages between the processes sharing them; "
        "the MLflow baseline's tree includes the `mlflow` CLI process that waits for uvicorn"
        + (
            ", MLServer's its HTTP process, its inference workers and multiprocessing's helpers"
            if MLSERVER in servers
            else ""
        )
        + "). Our service holds its queued prediction records in memory and writes them before it exits.",
        "",
    ]
    return lines


def _prediction_log_table(ours: dict[str, Any]) -> list[str]:
    rows = [m for m in ours["measurements"] if m.get("prediction_log")]
    if not rows:
        return []
    lines = [
        "### Our prediction log during the measured runs",
        "",
        "| records / request | records answered | written to the warehouse | written/s | queued at the end | dropped |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for m in rows:
        pl = m["prediction_log"]
        lines.append(
            f"| {m['records_per_request']} | {pl['records_answered']} | {pl['written']} | {pl['written_per_s']:.0f} | "
            f"{pl['queued_at_end']} | {pl['dropped']} |"
        )
    lines += [
        "",
        "Each measured run starts with an empty queue (the harness waits for the backlog of the previous run). "
        "Records are queued in memory and written by the service's writer process (each request as one row of the "
        "log's intake, turned into per-record rows when the writer is idle or the log is read); beyond the queue's bound "
        "(`serving.log_queue_records`) they are dropped and counted, and the service keeps answering.",
        "",
    ]
    return lines


_LAYERS = {
    "sklearn_predict_proba": "scikit-learn `predict_proba` on a typed DataFrame",
    "sklearn_predict": "scikit-learn `predict` on a typed DataFrame",
    "pyfunc_predict": "MLflow pyfunc `predict` (adds schema enforcement)",
    "mlflow_invocations": "MLflow `scoring_server.invocations()` (adds JSON parsing, DataFrame, response)",
}


def _anatomy_table(inprocess: dict[str, dict[str, float]], baseline: dict[str, Any] | None) -> list[str]:
    sizes = sorted(inprocess, key=int)
    lines = [
        "### Where the MLflow baseline's time goes",
        "",
        "| ms per request | " + " | ".join(f"{s} record(s)" for s in sizes) + " |",
        "|---|" + "---:|" * len(sizes),
    ]
    for key, label in _LAYERS.items():
        if all(key in inprocess[s] for s in sizes):
            lines.append(
                f"| {label}: in-process, 1 thread, median CPU | "
                + " | ".join(f"{inprocess[s][key]:.2f}" for s in sizes)
                + " |"
            )
    if baseline is not None:
        cpu = {str(m["records_per_request"]): m["server_cpu_ms_per_request"] for m in baseline["measurements"]}
        lines.append(
            "| scoring server under load: CPU of its processes per request | "
            + " | ".join(f"{cpu.get(s, float('nan')):.2f}" for s in sizes)
            + " |"
        )
    lines.append("")
    return lines


def _promotion_table(promo: dict[str, Any], setup: dict[str, Any], opts: dict[str, Any]) -> list[str]:
    old, new = setup["champion_version"], setup["candidate_version"]
    client = promo["answered_by_version_client"]
    logged = promo["logged_by_version"]
    switch = promo.get("switch_after_reload_s")
    lat = promo["wrk"]["latency_ms"]
    return [
        "### Promotion under load (ours)",
        "",
        f"`wrk -t{opts['threads']} -c{opts['connections']} -d{promo['duration_s']}s` with single records on a "
        f"fresh instance serving v{old}; at {promo.get('alias_moved_at_s', 0):.1f} s the alias `champion` moves to "
        f"v{new} (`MlflowClient.set_registered_model_alias`) and `POST /admin/reload` is sent.",
        "",
        "| requests | req/s | p50 ms | p99 ms | non-2xx | socket errors | `/model` reports the new version after | "
        f"answered by v{old} / v{new} (wrk) | logged v{old} / v{new} (`prediction_log`) |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---|",
        f"| {promo['requests']} | {promo['wrk']['requests_per_s']:.0f} | {_ms(lat['p50'])} | {_ms(lat['p99'])} | "
        f"{promo['non_2xx']} | {promo['socket_error_total']} | "
        f"{'never' if switch is None else f'{switch:.2f} s'} | {client.get(old, 0)} / {client.get(new, 0)} | "
        f"{logged.get(old, 0)} / {logged.get(new, 0)} |",
        "",
    ]


def _mlserver_section(results: dict[str, Any]) -> list[str]:
    """How MLServer was installed and run, or exactly why it was not measured."""
    install = results.get("mlserver_install") or {}
    missing = results.get("unavailable", {}).get(MLSERVER)
    lines = ["### MLServer (second baseline)", ""]
    if install:
        how = (
            f"reused `{install['venv']}`"
            if install.get("reused")
            else f"installed into `{install['venv']}` by `python -m venv` and pip from PyPI"
        )
        lines.append(
            f"Environment: {how} ({install.get('seconds', 0):.0f} s), requirements "
            + ", ".join(f"`{r}`" for r in install.get("requirements", []))
            + ": the server's pins (`uvloop` 0.21: with 0.22+ MLServer 1.7.1's inference workers die at start) and "
            "the model version's own `requirements.txt` (the libraries that trained it). "
            + (
                "Installed: " + ", ".join(f"{k} {v}" for k, v in install["versions"].items()) + "."
                if install.get("versions")
                else ""
            )
        )
        lines.append("")
    if missing:
        lines += [
            f"**Not measured**: MLServer failed at the {missing['stage']} stage (log: `{missing.get('log')}`):",
            "",
            "```",
            str(missing["reason"]).strip(),
            "```",
            "",
        ]
        return lines
    repository = results.get("mlserver_repository") or {}
    if repository:
        settings = {
            k: v
            for k, v in repository["settings.json"].items()
            if k not in ("host", "http_port", "grpc_port", "metrics_port", "metrics_dir", "environments_dir")
        }
        lines += [
            "Model repository of `mlserver start <folder>` (besides loopback ports and folders of its own): "
            f"`settings.json` `{json.dumps(settings)}`, `<model>/model-settings.json` "
            f"`{json.dumps(repository['model-settings.json'])}`.",
            "",
        ]
    return lines


def reading(results: dict[str, Any]) -> str:
    """One paragraph: the ratios, the conditions, where the baseline's time goes, what went wrong if anything."""
    servers, mach = results["servers"], results["machine"]
    parts = []
    if OURS in servers:
        ours = {m["records_per_request"]: m for m in servers[OURS]["measurements"]}
        for other in BASELINES:
            if other not in servers:
                continue
            base = {m["records_per_request"]: m for m in servers[other]["measurements"]}
            whose = "MLServer's" if other == MLSERVER else "the MLflow scoring server's"
            for size in sorted(set(base) & set(ours)):
                b, o = base[size], ours[size]
                unit = "single-record requests" if size == 1 else f"batches of {size}"
                parts.append(
                    f"For {unit} our service served {_ratio(o['wrk']['requests_per_s'], b['wrk']['requests_per_s'])} "
                    f"{whose} throughput ({o['records_per_s']:.0f} vs {b['records_per_s']:.0f} records/s) with "
                    f"p99 at {_ratio(o['wrk']['latency_ms']['p99'], b['wrk']['latency_ms']['p99'])} of its "
                    f"({_ms(o['wrk']['latency_ms']['p99'])} vs {_ms(b['wrk']['latency_ms']['p99'])} ms), spending "
                    f"{o['server_cpu_ms_per_request']:.2f} vs {b['server_cpu_ms_per_request']:.2f} ms of CPU per "
                    "request."
                )
        parts += _log_reading(servers[OURS])
        parts += _intake_reading(results)
    for key in ("agreement", "agreement_mlserver"):
        agreed = results.get(key)
        if not agreed:
            continue
        name = IN_A_SENTENCE[agreed.get("with", BASELINE if key == "agreement" else MLSERVER)]
        compared = agreed.get("compared", "probabilities")
        if agreed.get("error"):
            parts.append(f"The {compared} of {name} could not be compared with ours: {agreed['error']}")
        elif agreed["max_abs_diff"] == 0:
            parts.append(
                f"Ours and {name} answered the same {compared}, to the last digit, on all {agreed['records']} "
                "benchmark records."
            )
        else:
            parts.append(
                f"The {compared} of ours and of {name} differ by at most {agreed['max_abs_diff']:.1e} over the "
                f"{agreed['records']} benchmark records."
            )
    parts += _uneven_reading(results)
    parts += _inprocess_reading(results)
    missing = results.get("unavailable", {}).get(MLSERVER)
    if missing:
        parts.append(f"MLServer was not measured: it failed at the {missing['stage']} stage (see its section).")
    promo = results.get("promotion")
    if promo:
        switch = promo.get("switch_after_reload_s")
        parts.append(
            f"Promoting v{results['setup']['candidate_version']} under load cost {promo['non_2xx']} non-2xx "
            f"responses and {promo['socket_error_total']} socket errors over {promo['requests']} requests; "
            + (
                "`/model` never reported the new version."
                if switch is None
                else f"`/model` reported the new version {switch:.1f} s after the reload request, the old version "
                "answering until then."
            )
        )
    others = [m["cores_other"] for s in servers.values() for m in s["measurements"]]
    busy = (
        f" Other processes used up to {max(others):.2f} cores during the runs." if others and max(others) > 0.2 else ""
    )
    parts.append(
        f"Conditions: {mach['nproc']} cores shared by the load generator (one wrk thread) and the server, loopback "
        f"only, {results['options']['duration']} s per cell, one run: read the ratios, not the absolute capacities. "
        "Our service does more per record than the baselines: it checks every record against the model's input "
        "contract and logs every prediction to the warehouse (SQLite here) from a process of its own." + busy
    )
    return " ".join(parts)


def settle_intake(warehouse_url: str) -> dict[str, Any]:
    """The records our stopped service left in the prediction log's intake (stored as requests, not yet turned into
    ``prediction_log`` rows: its writer does that whenever it is idle, so between runs too), and how long turning
    them into records took here, as any reader of the log would."""
    from pipelines.core.warehouse import get_engine
    from pipelines.serving.prediction_log import settle
    from pipelines.serving.request_log import waiting

    engine = get_engine(warehouse_url)
    left = waiting(engine)
    started = time.perf_counter()
    settled = settle(engine)
    seconds = time.perf_counter() - started
    log.info("prediction log intake: %d records left by our service, turned into records in %.1f s", left, seconds)
    return {
        "records_left": left,
        "records_settled": settled,
        "seconds": round(seconds, 2),
        "us_per_record": round(1e6 * seconds / settled, 1) if settled else None,
    }


def _intake_reading(results: dict[str, Any]) -> list[str]:
    intake = results.get("log_intake")
    if not intake:
        return []
    cost = f" ({intake['us_per_record']} µs a record)" if intake["us_per_record"] is not None else ""
    return [
        "Our service stores each answered request as one row of the log's intake and turns them into "
        "per-record rows of `prediction_log` when idle or when the log is read; when it stopped, "
        f"{intake['records_left']} records were still in the intake, and the benchmark turned them into records "
        f"in {intake['seconds']} s{cost}."
    ]


def _log_reading(ours: dict[str, Any]) -> list[str]:
    logged = [m for m in ours["measurements"] if m.get("prediction_log")]
    cells = "; ".join(
        f"{m['records_per_request']} per request: {m['records_per_s']:.0f} answered, "
        f"{m['prediction_log']['written_per_s']:.0f} written, {m['prediction_log']['queued_at_end']} queued "
        f"at the end, {m['prediction_log']['dropped']} dropped"
        for m in logged
    )
    if any(m["prediction_log"]["dropped"] for m in logged):
        return [
            f"Our prediction log did not keep up with these rates (records/s {cells}): beyond the queue's "
            "bound, records were dropped and counted (the answers are not affected)."
        ]
    if logged:
        return [
            f"Our prediction log kept pace, no record dropped (records/s {cells}): when a healthy writer falls "
            "behind by half its queue bound the service holds requests back a little, so the backlog "
            "stays bounded and is written out shortly after the load (the same wait can cap our "
            "throughput with batches of 100 when the writer is the slower side)."
        ]
    return []


def _uneven_reading(results: dict[str, Any]) -> list[str]:
    servers = results["servers"]
    if BASELINE not in servers:
        return []
    uneven = [
        (m["records_per_request"], r["requests_per_s"], m["wrk"]["requests_per_s"])
        for m in servers[BASELINE]["measurements"]
        for r in m.get("rejected", [])
        if not r.get("balanced", True)
    ]
    if not uneven:
        return []
    cases = "; ".join(f"{size} record(s): {bad:.0f} instead of {good:.0f} req/s" for size, bad, good in uneven)
    return [
        f"The MLflow baseline's {results['options']['baseline_workers']} uvicorn workers share one listening socket: "
        "in some runs wrk's keep-alive connections all landed on one worker while another idled, and "
        f"throughput fell ({cases}); those runs "
        "were measured again and are not in the table, but real clients with few pooled connections meet "
        "the same imbalance."
    ]


def _inprocess_reading(results: dict[str, Any]) -> list[str]:
    servers = results["servers"]
    if not results.get("inprocess") or BASELINE not in servers:
        return []
    one = results["inprocess"].get("1")
    cpu1 = next(
        (m["server_cpu_ms_per_request"] for m in servers[BASELINE]["measurements"] if m["records_per_request"] == 1),
        None,
    )
    if not one or not cpu1:
        return []
    model = one.get("sklearn_predict_proba", one.get("sklearn_predict", 0.0))
    rest = cpu1 - one["mlflow_invocations"]
    return [
        f"Of the MLflow baseline's {cpu1:.1f} ms of CPU per single-record request, the model itself "
        f"(preprocessing and estimator) takes {model:.1f} ms, MLflow's pyfunc layer "
        f"{max(one['pyfunc_predict'] - model, 0.0):.1f} ms more and its request "
        "handling (`invocations()`: JSON, DataFrame, response) "
        f"{max(one['mlflow_invocations'] - one['pyfunc_predict'], 0.0):.1f} ms more, in-process"
        + (
            f"; the remaining {rest:.1f} ms are the HTTP server (uvicorn, its access log) and the processes."
            if rest > 0
            else "."
        )
    ]


def agreement(other: ServerResult, ours: ServerResult, outputs: TaskOutputs) -> dict[str, Any]:
    """Largest difference between two servers' numbers (``outputs.noun``) on the same records."""
    diffs = []
    for size, expected in other.outputs.items():
        got = ours.outputs.get(size, [])
        if len(got) != len(expected):
            raise BenchmarkError(
                f"{len(got)} {outputs.noun} from ours vs {len(expected)} from the {SERVER_NAMES[other.server]}"
            )
        diffs += [abs(a - b) for a, b in zip(expected, got, strict=True)]
    return {
        "with": other.server,
        "compared": outputs.noun,
        "records": len(diffs) // outputs.width,
        "values": len(diffs),
        "max_abs_diff": max(diffs) if diffs else None,
    }


# Main.


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.serving", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dataset",
        help=f"the dataset config whose champion is served (default {DEFAULT_DATASET}; with --reuse: the folder's)",
    )
    parser.add_argument("--duration", type=int, default=15, help="seconds of each measured wrk run (default 15)")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections (default 8)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of wrk before each measured run (default 3)")
    parser.add_argument("--timeout", type=int, default=10, help="wrk's per-request timeout in seconds (default 10)")
    parser.add_argument("--baseline-workers", type=int, default=2, help="`mlflow models serve -w` (default 2)")
    parser.add_argument(
        "--ours-workers",
        type=int,
        default=2,
        help="`python -m pipelines.serving --workers` (default 2, as the baselines' 2 workers; 1 for one worker)",
    )
    parser.add_argument(
        "--mlserver-workers", type=int, default=2, help="MLServer's `parallel_workers` (default 2, as the baseline)"
    )
    parser.add_argument("--singles", type=int, default=50, help="distinct single-record bodies (default 50)")
    parser.add_argument("--batches", type=int, default=10, help="distinct batch bodies (default 10)")
    parser.add_argument("--batch-size", type=int, default=100, help="records per batch body (default 100)")
    parser.add_argument("--promotion-duration", type=int, default=20, help="seconds of the promotion run (20)")
    parser.add_argument("--promotion-at", type=float, default=7.0, help="when champion moves in it (7 s)")
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help=f"comma-separated among {', '.join(SERVERS)} (default all; MLServer is reported as unavailable, with the "
        "reason, when it cannot be installed or started)",
    )
    parser.add_argument("--no-promotion", action="store_true", help="skip the promotion under load")
    parser.add_argument("--reuse", type=Path, help="a folder set up by an earlier run: skip seeding and training")
    parser.add_argument("--seed", type=int, default=2013, help="random seed for picking the records")
    parser.add_argument(
        "--quiet-below",
        type=float,
        default=0.3,
        help="before each phase, wait until the machine uses fewer cores than this (default 0.3)",
    )
    parser.add_argument("--quiet-wait", type=float, default=300, help="longest wait for that, seconds (default 300)")
    parser.add_argument(
        "--max-other",
        type=float,
        default=0.3,
        help="measure a cell again when other processes used more cores than this during it (default 0.3)",
    )
    parser.add_argument("--attempts", type=int, default=3, help="most measured runs per cell (default 3)")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def parse_options(argv: list[str] | None) -> tuple[Options, bool]:
    args = build_parser().parse_args(argv)
    servers = tuple(s.strip() for s in args.servers.split(",") if s.strip())
    unknown = set(servers) - set(SERVERS)
    if unknown:
        raise SystemExit(f"unknown server(s) {sorted(unknown)}: choose among {', '.join(SERVERS)}")
    servers = tuple(name for name in SERVERS if name in servers)
    opts = Options(
        duration=args.duration,
        connections=args.connections,
        threads=args.threads,
        warmup=args.warmup,
        timeout=args.timeout,
        baseline_workers=args.baseline_workers,
        ours_workers=args.ours_workers,
        mlserver_workers=args.mlserver_workers,
        singles=args.singles,
        batches=args.batches,
        batch_size=args.batch_size,
        promotion_duration=args.promotion_duration,
        promotion_at=args.promotion_at,
        servers=servers,
        promotion=not args.no_promotion,
        reuse=args.reuse.resolve() if args.reuse else None,
        seed=args.seed,
        quiet_below=args.quiet_below,
        quiet_wait=args.quiet_wait,
        max_other=args.max_other,
        attempts=args.attempts,
        dataset=args.dataset,
    )
    return opts, bool(args.verbose)


def run(opts: Options) -> dict[str, Any]:
    """The whole benchmark; returns the results (also written to ``results.json`` in the benchmark folder)."""
    if shutil.which("wrk") is None:
        raise BenchmarkError("wrk is not on PATH (apt-get install wrk)")
    if not LUA_SCRIPT.is_file():
        raise BenchmarkError(f"missing wrk script {LUA_SCRIPT}")
    started_at = datetime.now(UTC)
    servers = list(opts.servers)
    if OURS in servers and not OURS_MAIN.is_file():
        log.warning("%s does not exist yet: measuring the baseline only", OURS_MAIN.relative_to(REPO_ROOT))
        servers.remove(OURS)

    setup, env = _set_up(opts, started_at)
    home = setup.home
    model = mlserver_env.model_files(setup.tracking_uri, setup.model_name, setup.champion_version)
    outputs = TaskOutputs(setup.task, model.outputs)
    payloads = build_payloads(setup, home / "payloads", opts, model)

    results: dict[str, Any] = {
        "started_at": started_at.isoformat(),
        "machine": describe_machine(),
        "versions": versions(),
        "code": code_version(),
        "options": {**asdict(opts), "reuse": str(opts.reuse) if opts.reuse else None},
        "setup": asdict(setup),
        "model_files": model.to_dict(),
        "payloads": [p.to_dict() for p in payloads],
        "servers": {},
        "unavailable": {},
    }
    results["setup"]["home"] = str(setup.home)
    install = _install_mlserver(results, model, home) if MLSERVER in servers else None
    if install is None and MLSERVER in servers:
        servers.remove(MLSERVER)
    quiet = results["busy_cores_before"] = {}
    quiet["inprocess"] = wait_for_quiet(opts, "the in-process timings")
    results["inprocess"] = inprocess_costs(setup, payloads, repeats={1: 300, opts.batch_size: 40})

    done: dict[str, ServerResult] = {}
    if BASELINE in servers:
        quiet[BASELINE] = wait_for_quiet(opts, "the baseline")
        done[BASELINE] = bench_server(baseline_server(setup, env, opts), baseline_spec(outputs), payloads, opts)
    if install is not None:
        quiet[MLSERVER] = wait_for_quiet(opts, "MLServer")
        measured = _bench_mlserver(results, setup, env, opts, install, model, outputs, payloads)
        if measured is not None:
            done[MLSERVER] = measured
    if OURS in servers:
        quiet[OURS] = wait_for_quiet(opts, "our service")
        ours = ours_server(setup, env, workers=opts.ours_workers)
        done[OURS] = bench_server(ours, ours_spec(outputs), payloads, opts)
        results["log_intake"] = settle_intake(env["MLOPS_WAREHOUSE_URL"])
    results["servers"] = {name: r.to_dict() for name, r in done.items()}
    _agreements(results, done, outputs)
    if OURS in servers and opts.promotion:
        quiet["promotion"] = wait_for_quiet(opts, "the promotion run")
        results["promotion"] = promotion_under_load(setup, env, payloads[0], opts)

    results["finished_at"] = datetime.now(UTC).isoformat()
    _write_outputs(results, home)
    return results


def _install_mlserver(
    results: dict[str, Any], model: mlserver_env.ModelFiles, home: Path
) -> mlserver_env.Install | None:
    """MLServer's venv, ready; or ``None`` with the reason in ``results["unavailable"]``."""
    install = mlserver_env.ensure_venv(mlserver_env.requirements_for(model), home / "logs")
    results["mlserver_install"] = install.to_dict()
    if install.ok:
        log.info("MLServer ready in %s (%.0f s): %s", install.venv, install.seconds, install.versions)
        return install
    log.error("MLServer cannot be measured: %s", install.error)
    results["unavailable"][MLSERVER] = {"stage": "install", "reason": install.error, "log": install.log}
    return None


def _bench_mlserver(
    results: dict[str, Any],
    setup: Setup,
    env: dict[str, str],
    opts: Options,
    install: mlserver_env.Install,
    model: mlserver_env.ModelFiles,
    outputs: TaskOutputs,
    payloads: list[PayloadSet],
) -> ServerResult | None:
    """MLServer's phase; ``None`` with the reason in ``results["unavailable"]`` when it does not start or answer:
    the benchmark goes on without it (the server is stopped either way)."""
    server, repository = mlserver_server(setup, env, opts, install, model)
    results["mlserver_repository"] = repository
    try:
        return bench_server(server, mlserver_spec(outputs, setup.model_name), payloads, opts)
    except (BenchmarkError, httpx.HTTPError) as exc:
        logged = server.log_path.read_text(errors="replace") if server.log_path.is_file() else ""
        errors = mlserver_env.error_lines(logged)
        reason = str(exc).splitlines()[0] + (f"\nIts log's errors:\n{errors}" if errors else f"\n{exc}")
        log.error("MLServer could not be measured: %s", reason)
        results["unavailable"][MLSERVER] = {
            "stage": "start, load or answers",
            "reason": reason,
            "log": str(server.log_path),
        }
        return None


def _agreements(results: dict[str, Any], done: dict[str, ServerResult], outputs: TaskOutputs) -> None:
    """``agreement`` (MLflow's scoring server vs ours) and ``agreement_mlserver`` (MLServer vs ours)."""
    for other, key in ((BASELINE, "agreement"), (MLSERVER, "agreement_mlserver")):
        if other not in done or OURS not in done:
            continue
        try:
            results[key] = agreement(done[other], done[OURS], outputs)
        except BenchmarkError as exc:
            if other == BASELINE:
                raise
            results[key] = {"with": other, "compared": outputs.noun, "error": str(exc)}
            log.error("%s", exc)
            continue
        log.info(
            "%s: %s agree with ours to %.1e over %d records",
            SERVER_NAMES[other],
            outputs.noun,
            results[key]["max_abs_diff"],
            results[key]["records"],
        )


def _set_up(opts: Options, started_at: datetime) -> tuple[Setup, dict[str, str]]:
    """A fresh benchmark folder with both versions trained, or the folder given to ``--reuse``."""
    if opts.reuse is not None:
        setup = reuse_setup(opts.reuse, opts.dataset)
        (setup.home / "logs").mkdir(exist_ok=True)
        return setup, service_env(setup.home)
    dataset = opts.dataset or DEFAULT_DATASET
    dataset_config(dataset)  # an unknown dataset fails here, before a folder is made
    RUNTIME_DIR.mkdir(parents=True, exist_ok=True)
    home = RUNTIME_DIR / f"serving-{started_at:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
    home.mkdir()
    log.info("benchmark folder: %s (dataset %s)", home, dataset)
    env = service_env(home)
    return prepare_models(home, env, dataset), env


def _write_outputs(results: dict[str, Any], home: Path) -> None:
    """``results.json`` and ``serving.md`` in the benchmark folder, the Markdown also in runtime/ and on stdout."""
    markdown = render_markdown(results)
    dataset = results["setup"].get("dataset", DEFAULT_DATASET)
    out = MARKDOWN_OUT if dataset == DEFAULT_DATASET else MARKDOWN_OUT.with_name(f"serving-{dataset}.md")
    results["markdown"] = str(out)
    (home / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (home / "serving.md").write_text(markdown)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown)
    log.info("raw figures: %s; Markdown: %s", home / "results.json", out)
    sys.stdout.write(markdown)


def main(argv: list[str] | None = None) -> int:
    opts, verbose = parse_options(argv)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("httpx", "httpcore", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # SIGTERM unwinds like Ctrl-C, so every server started is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(143))
    try:
        run(opts)
    except BenchmarkError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
