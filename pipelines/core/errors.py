"""Errors the steps raise on purpose, each with a message that says what to fix."""


class PipelineError(Exception):
    """Base class for expected, user-facing pipeline failures."""


class ConfigError(PipelineError):
    """A dataset config file is missing or invalid (names the file and the field)."""


class DataValidationError(PipelineError):
    """A dataset snapshot failed its expectation suite."""

    def __init__(self, message: str, failures: list[dict[str, object]], data_docs_url: str) -> None:
        super().__init__(message)
        self.failures = failures
        self.data_docs_url = data_docs_url


class SmokeTestError(PipelineError):
    """The deployed model failed its smoke test; the alias was put back."""


class NotFoundError(PipelineError):
    """A run, model version or snapshot the step needs does not exist."""
