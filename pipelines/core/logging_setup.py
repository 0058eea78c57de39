"""One logging set-up for the command lines (``python -m pipelines``, ``python -m pipelines.stack``)."""

from __future__ import annotations

import logging

_NOISY = ("httpx", "httpcore", "urllib3", "alembic", "git")


def configure(verbose: bool = False, fmt: str = "%(asctime)s %(levelname)s %(name)s: %(message)s") -> None:
    """Log to stderr at INFO (DEBUG when ``verbose``); quiet the chatty HTTP and migration libraries."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=fmt, datefmt="%H:%M:%S")
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
