"""``python -m pipelines.serving``: run the prediction service of every configured dataset on uvicorn."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import Any

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own variable (see pipelines.serving.metrics)


def main(argv: list[str] | None = None) -> int:
    """Serve the champion of every dataset on ``--host:--port``: one process, or ``--workers N`` processes on the
    one port (see docs/serving.md)."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.serving", description=__doc__)
    parser.add_argument(
        "--default-dataset",
        "--dataset",
        dest="default_dataset",
        help="The dataset of POST /predict and GET /model (every dataset is served at /predict/<name> and /v2).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="Worker processes on the one port (SERVING_WORKERS in the stack), each following the aliases and "
        "writing its own prediction-log rows; about one per core.",
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    # One thread for the trees: several OpenMP threads per prediction on 2 shared cores cost far more than they save.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    import uvicorn

    from pipelines.core.logging_setup import configure
    from pipelines.core.settings import get_settings
    from pipelines.serving.app import create_app, tune_switch_interval

    configure()
    tune_switch_interval()
    settings = get_settings()
    common: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "log_level": args.log_level,
        "access_log": False,
        "loop": "uvloop",
        "http": "httptools",
        "timeout_graceful_shutdown": 30,
        "log_config": None,
    }
    if args.workers == 1:
        uvicorn.run(create_app(settings, args.default_dataset), **common)
        return 0
    # Several workers: uvicorn starts each in a process of its own, which builds its app from the environment set
    # here (a folder the workers share, the default dataset, Prometheus' multiprocess folder).
    shared = settings.home / "serving-workers" / f"port-{args.port}"
    if shared.exists():
        shutil.rmtree(shared)
    (shared / "prometheus").mkdir(parents=True)
    os.environ.update(
        {
            "MLOPS_SERVING_WORKERS_DIR": str(shared / "board"),
            "MLOPS_SERVING_DEFAULT_DATASET": args.default_dataset or "",
            MULTIPROCESS_ENV: str(shared / "prometheus"),
        }
    )
    from pipelines.serving import reuse_port

    if not reuse_port.supported():  # uvicorn's workers, sharing one socket
        uvicorn.run("pipelines.serving.app:app_from_settings", factory=True, workers=args.workers, **common)
        return 0
    config = uvicorn.Config("pipelines.serving.app:app_from_settings", factory=True, workers=args.workers, **common)
    try:
        sockets = reuse_port.listening_sockets(args.host, args.port, args.workers)
    except OSError as exc:
        parser.exit(1, f"cannot listen on {args.host}:{args.port}: {exc}\n")
    reuse_port.ReusePortWorkers(config, sockets).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
