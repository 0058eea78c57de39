"""Data validation with Great Expectations: suite files, running a suite, reporting failures, proposing suites."""

import logging

# GX logs its API registration at INFO on import: keep it to warnings unless configured otherwise.
if logging.getLogger("great_expectations").level == logging.NOTSET:
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
