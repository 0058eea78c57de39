"""What a model version's files were when it was trained and when it was approved, kept in the warehouse.

A digest is the sha256 of every file of the version's artifact folder (``MLmodel``, the skops file, the input
example, the environment files) and one sha256 over that list. The training step records the ``trained`` digest
right after registering the version; approving it records the ``approved`` digest, after checking the files are
still the ones trained. Every load then checks the files it downloaded against the digest it needs (evaluation:
``trained``; deploy, the service, monitoring: ``approved``) before anything is deserialised: whoever can write to
MLflow's artifact store cannot change what was approved, and an MLflow tag (which anyone with MLflow access can set)
proves nothing. The digests live in the warehouse, beside the audit trail, not in MLflow.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from pipelines.core.errors import PipelineError
from pipelines.core.warehouse import get_engine

log = logging.getLogger(__name__)

STAGES = ("trained", "approved")
_CHUNK = 1 << 20

_metadata = sa.MetaData()
digest_table = sa.Table(
    "model_artifact_digests",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("stage", sa.String(16), nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("files", sa.Text, nullable=False),  # JSON: relative path -> sha256
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("run_key", sa.String(250), nullable=False),
    sa.UniqueConstraint("model_name", "model_version", "stage", name="uq_model_artifact_digest"),
)


class UntrustedModelError(PipelineError):
    """A model artifact that may not be deserialised: changed since it was trained or approved, without a recorded
    digest, not skops, outside its folder, or holding types the dataset's config does not trust."""


@dataclass(frozen=True)
class ArtifactDigest:
    """The sha256 of each file of an artifact folder (relative POSIX paths) and one sha256 over them all."""

    digest: str
    files: dict[str, str]

    @classmethod
    def of_files(cls, files: dict[str, str]) -> ArtifactDigest:
        listing = "".join(f"{path}\0{sha}\n" for path, sha in sorted(files.items()))
        return cls(hashlib.sha256(listing.encode()).hexdigest(), dict(sorted(files.items())))

    def differences(self, other: ArtifactDigest) -> list[str]:
        """What differs from ``other`` (the expected digest), file by file."""
        changed = sorted(p for p in self.files.keys() & other.files.keys() if self.files[p] != other.files[p])
        added = sorted(self.files.keys() - other.files.keys())
        removed = sorted(other.files.keys() - self.files.keys())
        return [f"changed: {p}" for p in changed] + [f"added: {p}" for p in added] + [f"missing: {p}" for p in removed]


def folder_digest(folder: str | Path) -> ArtifactDigest:
    """The digest of every regular file under ``folder``; a link or any other kind of entry is refused."""
    root = Path(folder)
    files: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise UntrustedModelError(f"{root.name}: {path.relative_to(root)} is not a regular file")
        if path.is_file():
            sha = hashlib.sha256()
            with path.open("rb") as handle:
                while chunk := handle.read(_CHUNK):
                    sha.update(chunk)
            files[path.relative_to(root).as_posix()] = sha.hexdigest()
    if not files:
        raise UntrustedModelError(f"{root.name}: the artifact folder is empty")
    return ArtifactDigest.of_files(files)


def verify(folder: str | Path, expected: ArtifactDigest, what: str) -> ArtifactDigest:
    """Check the files under ``folder`` are ``expected``'s; raise :class:`UntrustedModelError` naming what differs."""
    found = folder_digest(folder)
    if found.digest != expected.digest:
        raise UntrustedModelError(
            f"{what}: its files are not the ones recorded (sha256 {found.digest[:12]} instead of "
            f"{expected.digest[:12]}; {', '.join(found.differences(expected)) or 'same files, other listing'})"
        )
    return found


def _table(url: str) -> sa.Engine:
    engine = get_engine(url)
    _metadata.create_all(engine, tables=[digest_table])
    return engine


def recorded(warehouse_url: str, model_name: str, model_version: str, stage: str) -> ArtifactDigest | None:
    """The ``stage`` digest recorded for the version, or None."""
    _check_stage(stage)
    with _table(warehouse_url).connect() as conn:
        row = conn.execute(
            sa.select(digest_table.c.digest, digest_table.c.files).where(
                digest_table.c.model_name == model_name,
                digest_table.c.model_version == str(model_version),
                digest_table.c.stage == stage,
            )
        ).first()
    if row is None:
        return None
    found = ArtifactDigest.of_files(json.loads(row.files))
    if found.digest != row.digest:  # the row was edited by hand: it proves nothing
        raise UntrustedModelError(f"{model_name} v{model_version}: the recorded {stage} digest does not add up")
    return found


def record(
    warehouse_url: str,
    model_name: str,
    model_version: str,
    stage: str,
    digest: ArtifactDigest,
    *,
    at: datetime,
    actor: str,
    run_key: str,
) -> bool:
    """Record the version's ``stage`` digest; whether a row was written. Recording the same digest again is a no-op;
    a different one is refused (the files changed since): a recorded digest is never replaced."""
    _check_stage(stage)
    engine = _table(warehouse_url)
    existing = recorded(warehouse_url, model_name, model_version, stage)
    if existing is not None:
        if existing.digest == digest.digest:
            return False
        raise UntrustedModelError(
            f"{model_name} v{model_version}: its {stage} digest is already recorded as {existing.digest[:12]} and its "
            f"files now give {digest.digest[:12]} ({', '.join(digest.differences(existing))})"
        )
    row: dict[str, Any] = {
        "model_name": model_name,
        "model_version": str(model_version),
        "stage": stage,
        "digest": digest.digest,
        "files": json.dumps(digest.files, sort_keys=True),
        "recorded_at": at,
        "actor": actor,
        "run_key": run_key,
    }
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(digest_table).values(**row))
    except sa.exc.IntegrityError:  # recorded by another process meanwhile: the same digest, or a refusal
        return record(warehouse_url, model_name, model_version, stage, digest, at=at, actor=actor, run_key=run_key)
    log.info(
        "%s v%s: %s artifact sha256 %s (%d files)", model_name, model_version, stage, digest.digest, len(digest.files)
    )
    return True


def history(warehouse_url: str, model_name: str) -> list[dict[str, Any]]:
    """Every recorded digest of ``model_name``, oldest first."""
    with _table(warehouse_url).connect() as conn:
        rows = (
            conn.execute(
                sa.select(digest_table).where(digest_table.c.model_name == model_name).order_by(digest_table.c.id)
            )
            .mappings()
            .all()
        )
    return [dict(r) for r in rows]


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"unknown digest stage {stage!r}; known: {STAGES}")
