"""``python -m pipelines.stack up|down|status|demo|databases|accounts|mlflow-users``: the stack.

The profile comes from ``MLOPS_PROFILE`` (``embedded`` by default, ``production``: see docs/deployment.md).
``databases`` creates the production profile's PostgreSQL databases and exits (compose's ``db-init`` runs it).
``accounts`` gives every person of the people file an Airflow password (kept 0600 in ``--passwords-file``, new
ones printed once) and, when Airflow's auth manager is FAB (production), their accounts in its user store
(compose's ``airflow-init`` runs it);
``mlflow-users`` creates MLflow's ``pipeline`` and ``serving`` accounts as its admin (compose's ``mlflow-init``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pipelines.core.logging_setup import configure
from pipelines.stack import services
from pipelines.stack.processes import StackError
from pipelines.stack.settings import StackSettings


def main(argv: list[str] | None = None) -> int:
    """Start, stop or show the stack's services, or run the demo."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.stack", description=__doc__)
    parser.add_argument(
        "command",
        choices=["up", "down", "status", "demo", "databases", "accounts", "mlflow-users"],
    )
    parser.add_argument("--passwords-file", type=Path, help="accounts: the file (default: the runtime folder's)")
    parser.add_argument("--mlflow-url", help="mlflow-users: the MLflow server (default: the stack's)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from pipelines.stack.demo import main as demo

        return demo()
    configure(fmt="%(asctime)s %(message)s")
    stack = StackSettings()
    try:
        if args.command == "databases":
            from pipelines.stack.databases import ensure_databases

            ensure_databases(stack.model_copy(update={"profile": "production"}))
            return 0
        if args.command == "accounts":
            return _accounts(stack, args.passwords_file)
        if args.command == "mlflow-users":
            from pipelines.stack import mlflow_auth

            mlflow_auth.ensure_users(stack, args.mlflow_url)
            return 0
        if args.command == "up":
            services.up(stack)
        elif args.command == "down":
            stopped = services.down(stack)
            logging.getLogger(__name__).info("stopped: %s", ", ".join(stopped) or "nothing was running")
            return 0
    except StackError as exc:
        logging.getLogger(__name__).error("%s", exc)
        return 1
    sys.stdout.write(json.dumps(services.status(stack), indent=2) + "\n")
    return 0


def _accounts(stack: StackSettings, passwords_file: Path | None) -> int:
    """A password for every person (new ones printed once); with the FAB auth manager, their accounts too."""
    from pipelines.stack.fab_accounts import sync_users, uses_fab

    made = services.ensure_passwords(stack, passwords_file)
    if uses_fab():
        kept = services.read_passwords(stack, passwords_file)
        sync_users(services.people(stack), kept, stack.airflow_admin_user, stack.airflow_admin_password)
    sys.stdout.write(services.accounts_text(stack, made, passwords_file) if made else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
