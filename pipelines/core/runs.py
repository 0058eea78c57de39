"""Run identity: the key that names a run's partition, and the lineage written on everything it makes."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import lru_cache

from pipelines.core.settings import REPO_ROOT


@dataclass(frozen=True)
class Window:
    """A half-open time window ``[start, end)`` on the dataset's time column."""

    start: date
    end: date

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(f"window end {self.end} must be after its start {self.start}")

    @property
    def start_dt(self) -> datetime:
        return datetime.combine(self.start, time.min)

    @property
    def end_dt(self) -> datetime:
        return datetime.combine(self.end, time.min)

    def __str__(self) -> str:
        return f"[{self.start}, {self.end})"

    def split(self, days: int) -> list[Window]:
        """Consecutive windows of ``days`` days covering this one, in order (the last one may be shorter)."""
        if days < 1:
            raise ValueError(f"a window is split into windows of at least one day, not {days}")
        parts, start = [], self.start
        while start < self.end:
            end = min(start + timedelta(days=days), self.end)
            parts.append(Window(start, end))
            start = end
        return parts


@dataclass(frozen=True)
class RunContext:
    """Who runs a step: the Airflow DAG and run (or a shell), the reason, and the partition key."""

    dag_id: str = "cli"
    run_id: str = "manual"
    reason: str = "manual"
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """A file-system and tag safe key for this run's partitions."""
        return partition_key(self.dag_id, self.run_id)

    def lineage_tags(self) -> dict[str, str]:
        """Tags that tie an MLflow run or model version back to the orchestration run and the code."""
        return {
            "airflow.dag_id": self.dag_id,
            "airflow.run_id": self.run_id,
            "run.reason": self.reason,
            "run.key": self.key,
            "git.commit": git_commit(),
            **self.extra,
        }


def partition_key(dag_id: str, run_id: str) -> str:
    """``dag_id/run_id`` made safe for file names and tags."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{dag_id}__{run_id}").strip("_")


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The repository's commit (with ``-dirty`` when files changed); outside git the image's, or ``unknown``."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return _built_commit()
    return f"{sha}-dirty" if dirty else sha


def _built_commit() -> str:
    """Outside git (a container image): the commit the image was built from, written by the Dockerfile."""
    stamp = REPO_ROOT / "COMMIT"
    commit = stamp.read_text().strip() if stamp.is_file() else ""
    return commit if re.fullmatch(r"[0-9a-f]{7,40}", commit) else "unknown"
