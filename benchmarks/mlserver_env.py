"""MLServer with its MLflow runtime (``mlserver-mlflow``): the second baseline of ``benchmarks.serving``.

MLServer is the usual way to serve MLflow models on the Open Inference Protocol (KServe v2). It does not fit the
project's lock (MLServer 1.7.1 wants ``fastapi<0.116``; the project runs 0.136), so it lives in a virtual environment
of its own, ``runtime/venvs/mlserver``: made with ``python -m venv`` and filled by pip from PyPI the first time, reused
afterwards while it holds the same requirements. It serves the very files of the registered model version (the
version's artifact folder in the benchmark's local MLflow store, found through the registry, never downloaded)
through ``mlserver start`` on a model repository of two files: ``settings.json`` (ports, ``parallel_workers``) and
``<model>/model-settings.json`` (``implementation: mlserver_mlflow.MLflowRuntime``, ``parameters.uri``).

This module holds what does not need a running server: the environment, the repository, the request bodies and the
reading of the answers; ``benchmarks.serving`` starts, loads and stops the server like the others.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

log = logging.getLogger("benchmarks.serving")

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_DIR = REPO_ROOT / "runtime" / "venvs" / "mlserver"
MARKER = "benchmark-requirements.json"  # in the venv: the requirements it was filled with

# The server's own pins, checked on this machine (Python 3.11.7, PyPI, 2026-11-28):
# - mlserver 1.7.1 and mlserver-mlflow 1.7.1: the latest releases of both; they need Python < 3.13 and
#   fastapi < 0.116 (hence a venv of their own) and mlserver-mlflow takes any mlflow >= 2.19, so the model's own
#   mlflow 3.17 fits.
# - uvloop 0.21.0: pip otherwise picks uvloop 0.23.0, with which every inference worker of MLServer 1.7.1 dies as it
#   starts (`asyncio.get_event_loop()` in mlserver/parallel/worker.py raises "There is no current event loop in thread
#   'MainThread'" under uvloop's new event-loop policy) and the model never loads; 0.21.0, the uvloop of MLServer
#   1.7.1's time, works.
# The model version's own requirements.txt comes on top (scikit-learn, pandas, numpy, scipy, skops, cloudpickle and
# mlflow pinned by training to the project's versions): MLServer then loads the model with the libraries that trained
# it, as `mlflow models serve` would build its environment, and its numbers can be compared with ours (left alone,
# pip picks pandas 3.x and MLflow warns that the model's dependencies do not match).
SERVER_PINS = ("mlserver==1.7.1", "mlserver-mlflow==1.7.1", "uvloop==0.21.0")
VERSION_PACKAGES = ("mlserver", "mlserver-mlflow", "mlflow", "scikit-learn", "pandas", "numpy", "uvloop", "fastapi")
PIP_TIMEOUT_S = 1200.0

# MLflow column types (signature) -> Open Inference Protocol datatypes, as mlserver_mlflow.metadata maps them.
_DATATYPES = {
    "string": "BYTES",
    "double": "FP64",
    "float": "FP32",
    "long": "INT64",
    "integer": "INT32",
    "boolean": "BOOL",
}


# The model version as stored.


@dataclass(frozen=True)
class ModelFiles:
    """A registered model version's artifact folder (from the registry) and what its MLmodel file says."""

    folder: Path
    inputs: tuple[tuple[str, str], ...]  # (column, MLflow type) in the signature's order
    outputs: tuple[str, ...]  # the output columns: a classifier's classes as text, or the one regression column
    requirements: tuple[str, ...]  # requirements.txt: the training environment's pins

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "folder": str(self.folder)}


def model_files(tracking_uri: str, name: str, version: str) -> ModelFiles:
    """Where the registry keeps ``name`` version ``version`` in a local store, and its signature and pins."""
    from mlflow import MlflowClient
    from mlflow.models import Model

    uri = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri).get_model_version_download_uri(
        name, version
    )
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        raise ValueError(f"{name} v{version} is stored at {uri}, not in a local folder")
    folder = Path(unquote(parsed.path))
    model = Model.load(str(folder / "MLmodel"))
    if model.signature is None or model.signature.outputs is None:
        raise ValueError(f"{name} v{version} has no signature ({folder / 'MLmodel'})")
    inputs = tuple((str(col.name), str(col.type.name)) for col in model.signature.inputs.inputs)
    outputs = tuple(str(col.name) for col in model.signature.outputs.inputs)
    req_path = folder / "requirements.txt"
    requirements = tuple(
        line.strip()
        for line in (req_path.read_text().splitlines() if req_path.is_file() else [])
        if line.strip() and not line.strip().startswith(("#", "-"))
    )
    return ModelFiles(folder, inputs, outputs, requirements)


# The virtual environment.


@dataclass
class Install:
    """MLServer's virtual environment: ready or why not, with what it holds and how long it took."""

    ok: bool
    venv: str
    requirements: list[str]
    reused: bool = False
    seconds: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    log: str | None = None

    @property
    def bin(self) -> Path:
        return Path(self.venv) / "bin"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def requirements_for(model: ModelFiles) -> list[str]:
    """The server's pins, then the model's own (a model pin of a package the server pins too is left out)."""
    pinned = {_req_name(r) for r in SERVER_PINS}
    return [*SERVER_PINS, *(r for r in model.requirements if _req_name(r) not in pinned)]


def _req_name(requirement: str) -> str:
    for sep in ("==", ">=", "<=", "~=", "!=", ">", "<", "[", ";", " "):
        requirement = requirement.split(sep, 1)[0]
    return requirement.strip().lower().replace("_", "-")


def ensure_venv(requirements: list[str], logs: Path, venv: Path = VENV_DIR) -> Install:
    """The venv at ``venv`` holding ``requirements``: reused when its marker says so, else made/filled by pip.

    Never raises for a failed install: the result says why (pip's error lines), for the benchmark's report.
    """
    started = time.monotonic()
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / "mlserver-install.log"
    install = Install(ok=False, venv=str(venv), requirements=list(requirements), log=str(log_path))
    python = venv / "bin" / "python"
    marker = venv / MARKER
    try:
        recorded = json.loads(marker.read_text()) if marker.is_file() else None
    except (OSError, ValueError):
        recorded = None
    with log_path.open("w") as out:
        if recorded == list(requirements) and python.is_file() and (venv / "bin" / "mlserver").is_file():
            install.reused = True
            log.info("MLServer: reusing %s", venv)
        else:
            if not python.is_file():
                log.info("MLServer: creating %s (python -m venv)", venv)
                venv.parent.mkdir(parents=True, exist_ok=True)
                code = run_in_group([sys.executable, "-m", "venv", str(venv)], out, timeout=300.0)
                if code != 0:
                    install.error = f"`python -m venv {venv}` failed (exit {code}):\n{_tail(log_path)}"
                    install.seconds = round(time.monotonic() - started, 1)
                    return install
            marker.unlink(missing_ok=True)
            log.info("MLServer: pip install %s (minutes the first time; log %s)", " ".join(requirements), log_path)
            cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input", *requirements]
            code = run_in_group(cmd, out, timeout=PIP_TIMEOUT_S)
            if code != 0:
                install.error = f"`pip install {' '.join(requirements)}` failed (exit {code}):\n{pip_error(log_path)}"
                install.seconds = round(time.monotonic() - started, 1)
                return install
        probe = [
            str(python),
            "-c",
            "import json, importlib.metadata as m, mlserver, mlserver_mlflow\n"
            f"print(json.dumps({{n: m.version(n) for n in {list(VERSION_PACKAGES)!r}}}))",
        ]
        done = subprocess.run(probe, capture_output=True, text=True, check=False, timeout=120)
        out.write(done.stdout + done.stderr)
    if done.returncode != 0:
        install.error = f"MLServer does not import in {venv}:\n{done.stderr.strip()[-2000:]}"
        marker.unlink(missing_ok=True)
    else:
        install.ok = True
        install.versions = json.loads(done.stdout.strip().splitlines()[-1])
        marker.write_text(json.dumps(list(requirements)))
    install.seconds = round(time.monotonic() - started, 1)
    return install


def run_in_group(cmd: list[str], out: Any, timeout: float) -> int:
    """Run ``cmd`` in its own process group, output to ``out``; the whole group is killed on timeout or error."""
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO_ROOT)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        out.write(f"\n[benchmarks.serving] killed after {timeout:.0f} s\n")
        return -9
    finally:
        if proc.poll() is None or _group_alive(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def pip_error(log_path: Path, limit: int = 3000) -> str:
    """pip's own account of a failure: from its first ``ERROR`` line (with the conflict explanation before it)."""
    lines = [
        line
        for line in log_path.read_text(errors="replace").splitlines()
        if line.strip() and not line.startswith("WARNING: Location")
    ]
    first = next((i for i, line in enumerate(lines) if line.startswith("ERROR")), None)
    if first is None:
        return _tail(log_path)
    begin = next(
        (i for i in range(first, max(first - 30, -1), -1) if "conflict is caused by" in lines[i]),
        first,
    )
    return "\n".join(lines[begin:])[-limit:]


_ERROR_LINE = re.compile(r"^\s*[\w.]*(Error|Exception)\b.*|.*\b(ERROR|CRITICAL)\b.*")


def error_lines(text: str, limit: int = 12) -> str:
    """The lines of a server's log that say what went wrong (exceptions and ERROR records, each once), without the
    tracebacks' frames and the shutdown chatter that follows a failure."""
    seen: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and _ERROR_LINE.match(line) and stripped not in seen:
            seen.append(stripped)
    return "\n".join(seen[:limit])


def _tail(path: Path, lines: int = 20) -> str:
    text = path.read_text(errors="replace").splitlines() if path.is_file() else []
    kept = [line for line in text if not line.startswith("WARNING: Location")]
    return "\n".join(kept[-lines:])


# The model repository.


def write_repository(
    folder: Path,
    model_name: str,
    version: str,
    model: ModelFiles,
    ports: tuple[int, int, int],
    workers: int,
) -> dict[str, Any]:
    """``settings.json`` and ``<model_name>/model-settings.json`` under ``folder`` (made anew); both, as written."""
    http_port, grpc_port, metrics_port = ports
    settings = {
        "host": "127.0.0.1",
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
        "parallel_workers": workers,
        # Production logging: no access-log line per request (MLServer's default `debug: true` logs every request
        # at DEBUG level); our service runs without an access log too.
        "debug": False,
        "metrics_dir": str(folder / "metrics"),
        "environments_dir": str(folder / "envs"),
    }
    model_settings = {
        "name": model_name,
        "implementation": "mlserver_mlflow.MLflowRuntime",
        "parameters": {"uri": str(model.folder), "version": version},
    }
    (folder / model_name).mkdir(parents=True, exist_ok=True)
    (folder / "metrics").mkdir(exist_ok=True)
    (folder / "settings.json").write_text(json.dumps(settings, indent=2))
    (folder / model_name / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
    return {"settings.json": settings, "model-settings.json": model_settings}


# Request bodies and answers.


def v2_body(records: list[dict[str, Any]], inputs: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """An Open Inference Protocol request for ``records``: one input per column (``[n, 1]``, as MLServer's model
    metadata declares them), decoded by MLServer's pandas codec (``content_type: pd``) into one DataFrame; a missing
    value is ``null`` (a NaN once decoded, as in MLflow's own scoring server)."""
    n = len(records)
    return {
        "parameters": {"content_type": "pd"},
        "inputs": [
            {
                "name": name,
                "shape": [n, 1],
                "datatype": _DATATYPES.get(kind, "BYTES"),
                "data": [record.get(name) for record in records],
            }
            for name, kind in inputs
        ],
    }


def v2_rows(body: dict[str, Any]) -> list[list[float]]:
    """The rows of the first output of an inference response: ``[n, k]`` as n rows of k, ``[n]``/``[n, 1]`` as n
    rows of one. MLServer's MLflow runtime answers a pyfunc's array as one output ``output-1``, data row-major."""
    outputs = body.get("outputs") or []
    if not outputs:
        raise ValueError(f"no outputs in {str(body)[:300]}")
    out = outputs[0]
    shape, data = list(out["shape"]), [float(v) for v in out["data"]]
    width = 1 if len(shape) < 2 else int(shape[1])
    if len(shape) > 2 or len(data) != int(shape[0]) * width:
        raise ValueError(f"output {out.get('name')} of shape {shape} holds {len(data)} values")
    return [data[i * width : (i + 1) * width] for i in range(int(shape[0]))]
