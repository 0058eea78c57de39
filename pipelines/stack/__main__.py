"""``python -m pipelines.stack up|down|status|demo|databases``: manage the local stack.

The profile comes from ``MLOPS_PROFILE`` (``embedded`` by default, ``production``: see docs/deployment.md).
``databases`` creates the production profile's PostgreSQL databases and exits (compose's ``db-init`` runs it).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from pipelines.core.logging_setup import configure
from pipelines.stack import services
from pipelines.stack.processes import StackError
from pipelines.stack.settings import StackSettings


def main(argv: list[str] | None = None) -> int:
    """Start, stop or show the stack's services, or run the demo."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.stack", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "demo", "databases"])
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


if __name__ == "__main__":
    sys.exit(main())
