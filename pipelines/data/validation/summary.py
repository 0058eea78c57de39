"""The outcome of one validation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ValidationSummary:
    """The outcome of one validation: counts, failures and where its Data Docs page is."""

    success: bool
    suite: str
    run_key: str
    snapshot: str
    evaluated: int
    failed: int
    data_docs_url: str
    data_docs_path: str
    failures: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "suite": self.suite,
            "run_key": self.run_key,
            "snapshot": self.snapshot,
            "evaluated": self.evaluated,
            "failed": self.failed,
            "data_docs_url": self.data_docs_url,
            "data_docs_path": self.data_docs_path,
            "failures": [dict(f) for f in self.failures],
        }
