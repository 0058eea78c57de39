"""Command line: every step runs from a shell, without Airflow (``python -m pipelines --help``).

Steps of one run share a run id (``--run-id``): each reads the results the earlier ones saved in the run's
partition. ``run`` chains them all, as the training DAG does, with the approval given on the command line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines import steps
from pipelines.core.errors import PipelineError
from pipelines.core.logging_setup import configure
from pipelines.core.runs import RunContext
from pipelines.core.settings import REPO_ROOT

log = logging.getLogger("pipelines")


class NotReproducedError(PipelineError):
    """A rebuilt model's predictions differ from the recorded ones."""


def _run(args: argparse.Namespace) -> RunContext:
    return RunContext(dag_id="cli", run_id=args.run_id, reason=args.reason)


def _print(result: Any) -> None:
    sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")


def _cmd_seed(args: argparse.Namespace) -> Any:
    return steps.seed(args.dataset, args.start, args.end)


def _cmd_extract(args: argparse.Namespace) -> Any:
    return steps.extract(args.dataset, _run(args), args.start, args.end)


def _cmd_validate(args: argparse.Namespace) -> Any:
    run = _run(args)
    return steps.validate(args.dataset, run, steps.load_result(args.dataset, run, "extract"))


def _cmd_train(args: argparse.Namespace) -> Any:
    run = _run(args)
    return steps.train(
        args.dataset,
        run,
        steps.load_result(args.dataset, run, "extract"),
        steps.load_result(args.dataset, run, "validate"),
    )


def _cmd_evaluate(args: argparse.Namespace) -> Any:
    run = _run(args)
    return steps.evaluate(
        args.dataset,
        run,
        steps.load_result(args.dataset, run, "extract"),
        steps.load_result(args.dataset, run, "train"),
    )


def _cmd_gate(args: argparse.Namespace) -> Any:
    run = _run(args)
    result = steps.gate(
        args.dataset,
        run,
        steps.load_result(args.dataset, run, "train"),
        steps.load_result(args.dataset, run, "evaluate"),
        steps.load_result(args.dataset, run, "validate"),
        datetime.now(UTC),
    )
    return {k: v for k, v in result.items() if k != "approval_body"}


def _cmd_approve(args: argparse.Namespace) -> Any:
    run = _run(args)
    gate = steps.load_result(args.dataset, run, "gate")
    if not gate["passed"]:
        raise PipelineError(f"the gate refused this candidate, it cannot be approved: {gate['summary']}")
    return steps.record_approval(
        args.dataset,
        run,
        steps.load_result(args.dataset, run, "train"),
        status="rejected" if args.reject else "approved",
        decided_by=args.by,
        decided_at=datetime.now(UTC),
        mode="manual",
        comment=args.comment,
    )


def _cmd_deploy(args: argparse.Namespace) -> Any:
    run = _run(args)
    return steps.deploy(
        args.dataset,
        run,
        steps.load_result(args.dataset, run, "train"),
        steps.load_result(args.dataset, run, "extract"),
        datetime.now(UTC),
    )


def _cmd_run(args: argparse.Namespace) -> Any:
    """All steps in order; approval by policy (``--approve`` stands for a person's approval)."""
    run = _run(args)
    snapshot = steps.extract(args.dataset, run, args.start, args.end)
    validation = steps.validate(args.dataset, run, snapshot)
    trained = steps.train(args.dataset, run, snapshot, validation)
    evaluation = steps.evaluate(args.dataset, run, snapshot, trained)
    decision = steps.gate(args.dataset, run, trained, evaluation, validation, datetime.now(UTC))
    if not decision["passed"]:
        return {"deployed": False, "gate": decision["summary"], "model_version": trained["model_version"]}
    mode = "manual" if args.approve else "auto"
    steps.record_approval(
        args.dataset,
        run,
        trained,
        status="approved",
        decided_by=args.by if args.approve else "policy",
        decided_at=datetime.now(UTC),
        mode=mode,
        comment=args.comment,
    )
    return {"deployed": True, **steps.deploy(args.dataset, run, trained, snapshot, datetime.now(UTC))}


def _cmd_rollback(args: argparse.Namespace) -> Any:
    return steps.rollback(args.dataset, _run(args), datetime.now(UTC), args.to_version, args.comment)


def _cmd_propose_suite(args: argparse.Namespace) -> Any:
    from pipelines.core.settings import get_settings
    from pipelines.data.validation.profile import propose_suite

    config = steps.dataset_config(args.dataset)
    out = Path(args.out) if args.out else get_settings().home / "proposed" / f"{config.expectation_suite}.json"
    path = propose_suite(config, get_settings(), steps.resolve_window(config, args.start, args.end), out)
    return {"proposed_suite": str(path), "review_then_copy_to": str(get_settings().expectations_dir)}


def _cmd_champion(args: argparse.Namespace) -> Any:
    from pipelines.core import registry
    from pipelines.core.settings import get_settings

    config = steps.dataset_config(args.dataset)
    version = registry.alias_version(get_settings(), config.model.registered_name, registry.CHAMPION)
    if version is None:
        return {"model": config.model.registered_name, "champion": None}
    return {"model": config.model.registered_name, "champion": version.version, "tags": version.tags}


def _cmd_lineage(args: argparse.Namespace) -> Any:
    from pipelines.trace.lineage import render

    record = steps.lineage(args.dataset, args.version)
    if args.json:
        return record
    sys.stdout.write(render(record) + "\n")
    return None


def _cmd_reproduce(args: argparse.Namespace) -> Any:
    from pipelines.trace.reproduce import Reproduction

    outcome = Reproduction(**steps.reproduce(args.dataset, args.version))
    if args.json:
        _print(outcome.to_dict())
    else:
        sys.stdout.write(outcome.summary() + "\n")
    if not outcome.bit_equal:
        raise NotReproducedError(f"{outcome.model_name} v{outcome.model_version} was not reproduced bit for bit")
    return None


def _cmd_retention(args: argparse.Namespace) -> Any:
    at = datetime.fromisoformat(args.at) if args.at else datetime.now(UTC)
    return steps.apply_retention(args.dataset, at if at.tzinfo else at.replace(tzinfo=UTC))


def _cmd_replay(args: argparse.Namespace) -> Any:
    return steps.replay(args.dataset, _run(args), args.start, args.end, args.batch_size, args.concurrency)


def _cmd_outcomes(args: argparse.Namespace) -> Any:
    return steps.record_outcomes(args.dataset, args.start, args.end, datetime.now(UTC))


def _cmd_live_performance(args: argparse.Namespace) -> Any:
    return steps.live_performance(args.dataset, args.start, args.end)


def _cmd_monitor(args: argparse.Namespace) -> Any:
    return steps.monitor(args.dataset, _run(args), args.start, args.end, datetime.now(UTC), args.step_days)


def _cmd_decide(args: argparse.Namespace) -> Any:
    return steps.decide_retraining(args.dataset, _run(args), args.window_end, args.active_runs, datetime.now(UTC))


def _cmd_reference(args: argparse.Namespace) -> Any:
    return steps.prepare_reference(args.dataset, args.version)


def _configured_datasets() -> list[str]:
    from pipelines.core.config import dataset_config_paths
    from pipelines.core.settings import get_settings

    return [path.stem for path in dataset_config_paths(get_settings().datasets_dir)]


def _cmd_check_config(args: argparse.Namespace) -> None:
    """Load each config (or the one named) with its estimator checked; one line per file, a ConfigError if any fails."""
    from pipelines.core.config import check_estimator, dataset_config_paths, load_config_file
    from pipelines.core.errors import ConfigError
    from pipelines.core.settings import get_settings

    datasets_dir = get_settings().datasets_dir
    paths = [datasets_dir / f"{args.dataset}.yaml"] if args.dataset else dataset_config_paths(datasets_dir)
    if not paths:
        raise ConfigError(f"no dataset config in {datasets_dir}")
    if not paths[0].is_file():
        known = ", ".join(_configured_datasets()) or "none"
        raise ConfigError(f"no dataset {args.dataset!r}: {paths[0]} does not exist (datasets: {known})")
    failed = []
    for path in paths:
        try:
            check_estimator(load_config_file(path), path)
        except Exception as exc:  # any failure is this file's, reported with the others
            failed.append(path.stem)
            message = str(exc) if isinstance(exc, ConfigError) else f"{path}: {type(exc).__name__}: {exc}"
            sys.stdout.write(f"error {path.stem}: {message}\n")
        else:
            sys.stdout.write(f"ok    {path.stem}: {path}\n")
    checked = len(paths)
    if not args.dataset:  # the whole set-up: the people and notifications files too
        checked += 2
        failed += _check_people_and_notifications()
    if failed:
        raise ConfigError(f"{len(failed)} of {checked} config file(s) fail: {', '.join(failed)}")


def _check_people_and_notifications() -> list[str]:
    """Load the people and notifications files as the stack does: one line each (and a warning per channel whose
    secret is not set in this environment); the names of those that fail."""
    from pipelines.core.errors import ConfigError
    from pipelines.core.notifications.config import NotificationsConfig, load_notifications
    from pipelines.core.people import load_people
    from pipelines.core.settings import get_settings

    settings = get_settings()
    checks: list[tuple[str, Path, Callable[[Path], Any], Callable[[Any], str]]] = [
        ("people", settings.people_file, load_people, lambda p: f"{len(p.users)} people"),
        ("notifications", settings.notifications_file, load_notifications,
         lambda n: "channels: " + (", ".join(c.name for c in n.channels) or "none")),
    ]  # fmt: skip
    failed, loaded = [], {}
    for name, path, load, summary in checks:
        try:
            loaded[name] = load(path)
        except ConfigError as exc:
            failed.append(name)
            sys.stdout.write(f"error {name}: {exc}\n")
        else:
            sys.stdout.write(f"ok    {name}: {path} ({summary(loaded[name])})\n")
    notifications: NotificationsConfig | None = loaded.get("notifications")
    missing = set(notifications.missing_env()) if notifications else set()
    for channel in notifications.channels if notifications else ():
        conn_id = channel.connection_id()
        if conn_id:
            sys.stdout.write(
                f"note  notifications: channel {channel.name!r} reads Airflow connection {conn_id!r} when it sends "
                f"(in Airflow's tasks: connections, secrets backend; in a shell: AIRFLOW_CONN_{conn_id.upper()})\n"
            )
        for variable in (v for v in channel.env_names() if v in missing):
            sys.stdout.write(
                f"warn  notifications: {variable} is not set here: channel {channel.name!r} cannot send from this "
                "environment (the stack's processes log each failed send and go on)\n"
            )
    return failed


def _cmd_config_reference(args: argparse.Namespace) -> Any:
    """Rewrite (or, with --check, only compare) the config reference section of docs/datasets.md."""
    from pipelines.core import config_docs
    from pipelines.core.errors import ConfigError

    path = Path(args.path)
    if args.check:
        if not config_docs.reference_is_current(path):
            raise ConfigError(f"the config reference in {path} is out of date: run {config_docs.REGENERATE}")
        return {"reference": str(path), "current": True}
    return {"reference": str(path), "changed": config_docs.write_reference(path)}


def build_parser() -> argparse.ArgumentParser:
    """The ``mlops`` / ``python -m pipelines`` argument parser."""
    parser = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Any, help_: str, window: bool = False, run: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--dataset", help="the dataset config's name (required; see check-config for the list)")
        if run:
            p.add_argument("--run-id", default="manual", help="names the run's partition (default: manual)")
            p.add_argument("--reason", default="manual")
        if window:
            p.add_argument("--start", help="first day (ISO date); default: the config's window")
            p.add_argument("--end", help="day after the last (ISO date); default: the config's window")
        p.set_defaults(func=func, command_parser=p)
        return p

    add(
        "seed",
        _cmd_seed,
        "stage the demo rows of [start, end) (all rows without a time column) for a staged or file source",
        window=True,
        run=False,
    )
    add("extract", _cmd_extract, "snapshot a window of the warehouse", window=True)
    add("validate", _cmd_validate, "run the expectation suite on the run's snapshot")
    add("train", _cmd_train, "train and register a candidate")
    add("evaluate", _cmd_evaluate, "score candidate and champion on the holdout")
    add("gate", _cmd_gate, "apply the promotion policy")
    approve = add("approve", _cmd_approve, "record a person's approval (or --reject)")
    approve.add_argument("--reject", action="store_true")
    approve.add_argument("--by", default="cli-user")
    approve.add_argument("--comment", default="")
    add("deploy", _cmd_deploy, "move champion to the approved candidate and smoke-test it")
    run = add("run", _cmd_run, "all steps in order (approval by policy unless --approve)", window=True)
    run.add_argument("--approve", action="store_true", help="record the approval as yours (--by)")
    run.add_argument("--by", default="cli-user")
    run.add_argument("--comment", default="")
    rollback = add("rollback", _cmd_rollback, "move champion back to the previous champion")
    rollback.add_argument("--to-version")
    rollback.add_argument("--comment", default="")
    propose = add(
        "propose-suite", _cmd_propose_suite, "profile a window and write a suite to review", window=True, run=False
    )
    propose.add_argument("--out")
    add("champion", _cmd_champion, "show the current champion", run=False)
    replay = add("replay", _cmd_replay, "play [start, end) day by day through the prediction service")
    replay.add_argument("--start", required=True)
    replay.add_argument("--end", required=True)
    replay.add_argument("--batch-size", type=int, default=50, help="records per request at most (default 50)")
    replay.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    outcomes = add(
        "outcomes",
        _cmd_outcomes,
        "record the known outcomes of [start, end) (the whole source without a time column) as ground truth",
        run=False,
    )
    outcomes.add_argument("--start")
    outcomes.add_argument("--end")
    add("live-performance", _cmd_live_performance, "live performance per model version", window=True, run=False)
    _add_monitoring_commands(add)
    _add_trace_commands(add)
    _add_config_commands(sub)
    return parser


def _add_trace_commands(add: Any) -> None:
    lineage = add("lineage", _cmd_lineage, "the whole record of a model version (default: the champion)", run=False)
    lineage.add_argument("--version", help="default: the champion")
    lineage.add_argument("--json", action="store_true", help="the record as JSON instead of text")
    reproduce = add(
        "reproduce",
        _cmd_reproduce,
        "refit a version from its MLflow record alone and compare holdout predictions (exit 1 unless bit-equal)",
        run=False,
    )
    reproduce.add_argument("--version", help="default: the champion")
    reproduce.add_argument("--json", action="store_true", help="the comparison as JSON instead of text")


def _add_config_commands(sub: Any) -> None:
    """Commands about the configs themselves: no ``--dataset`` needed."""
    check = sub.add_parser(
        "check-config",
        help="load the dataset configs (estimator included), the people and notifications files: ok or the error",
    )
    check.add_argument("--dataset", help="only this dataset (default: all)")
    check.set_defaults(func=_cmd_check_config, dataset_optional=True)
    reference = sub.add_parser("config-reference", help="regenerate the config reference in docs/datasets.md")
    reference.add_argument("--path", default=str(REPO_ROOT / "docs" / "datasets.md"))
    reference.add_argument("--check", action="store_true", help="exit 1 when it is out of date, write nothing")
    reference.set_defaults(func=_cmd_config_reference, dataset_optional=True)


def _require_dataset(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A step needs ``--dataset``: there is no default dataset, so the error lists the configured ones."""
    if getattr(args, "dataset_optional", False) or getattr(args, "dataset", None) is not None:
        return
    names = _configured_datasets()
    command_parser = getattr(args, "command_parser", parser)
    command_parser.error(f"--dataset NAME is required; configured datasets: {', '.join(names) or 'none'}")


def _add_monitoring_commands(add: Any) -> None:
    monitor = add("monitor", _cmd_monitor, "check [start, end) of the prediction log for drift against the champion")
    monitor.add_argument("--start", required=True)
    monitor.add_argument("--end", required=True)
    monitor.add_argument(
        "--step-days", type=int, default=None, help="check the range as consecutive windows of this many days"
    )
    decide = add("decide", _cmd_decide, "apply the retraining policy to the monitoring history (records it)")
    decide.add_argument("--window-end", required=True, help="end of the latest monitored window (ISO date)")
    decide.add_argument("--active-runs", type=int, default=0, help="training runs in progress (default 0)")
    reference = add("reference", _cmd_reference, "prepare the monitoring reference of a version", run=False)
    reference.add_argument("--version", help="default: the champion")
    retention = add(
        "retention",
        _cmd_retention,
        "remove the run partitions and reports the retention policy does not keep",
        run=False,
    )
    retention.add_argument("--at", help="ISO time the policy's age limit counts from (default: now)")


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit 1 with a one-line error for expected failures."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _require_dataset(parser, args)
    configure(args.verbose)
    # Before any thread starts: MLflow's telemetry thread mutates the environment (see stack.services).
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # stdout is the command's answer
    try:
        result = args.func(args)
        if result is not None:
            _print(result)
    except PipelineError as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        return 1
    return 0
