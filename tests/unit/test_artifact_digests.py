"""A model version's files are bound to the digest recorded when it was trained and approved: any changed, added
or missing file is named and refused, and a recorded digest is never replaced by another."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from pipelines.core import artifact_digests
from pipelines.core.artifact_digests import ArtifactDigest, UntrustedModelError, folder_digest, verify

AT = datetime(2026, 1, 1, tzinfo=UTC)


def _artifact(folder: Path) -> Path:
    (folder / "MLmodel").write_text("flavors: {}\n")
    (folder / "model.skops").write_bytes(b"\x00model bytes")
    (folder / "sub").mkdir()
    (folder / "sub" / "input_example.json").write_text("{}")
    return folder


def test_the_digest_covers_every_file_by_relative_path(tmp_path: Path) -> None:
    digest = folder_digest(_artifact(tmp_path))
    assert sorted(digest.files) == ["MLmodel", "model.skops", "sub/input_example.json"]
    assert len(digest.digest) == 64
    # the same files elsewhere give the same digest
    other = tmp_path.parent / f"{tmp_path.name}-copy"
    other.mkdir()
    assert folder_digest(_artifact(other)) == digest


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda f: (f / "model.skops").write_bytes(b"\x00other bytes"), "changed: model.skops"),
        (lambda f: (f / "extra.pkl").write_bytes(b"x"), "added: extra.pkl"),
        (lambda f: (f / "sub" / "input_example.json").unlink(), "missing: sub/input_example.json"),
    ],
)
def test_a_changed_folder_is_refused_naming_the_file(tmp_path: Path, change, named: str) -> None:  # type: ignore[no-untyped-def]
    folder = _artifact(tmp_path)
    expected = folder_digest(folder)
    verify(folder, expected, "m v1")  # unchanged: passes
    change(folder)
    with pytest.raises(UntrustedModelError, match=named):
        verify(folder, expected, "m v1")


def test_a_link_in_the_folder_is_refused(tmp_path: Path) -> None:
    folder = _artifact(tmp_path)
    (folder / "link.skops").symlink_to(folder / "model.skops")
    with pytest.raises(UntrustedModelError, match=r"link\.skops is not a regular file"):
        folder_digest(folder)


def test_an_empty_folder_has_no_digest(tmp_path: Path) -> None:
    with pytest.raises(UntrustedModelError, match="empty"):
        folder_digest(tmp_path)


def test_recorded_digests_are_kept_once_and_never_replaced(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    (tmp_path / "a").mkdir()
    digest = folder_digest(_artifact(tmp_path / "a"))
    # given nothing recorded
    assert artifact_digests.recorded(url, "m", "1", "approved") is None
    # when the trained digest is recorded, twice (a retried task)
    assert artifact_digests.record(url, "m", "1", "trained", digest, at=AT, actor="train_x", run_key="k")
    assert not artifact_digests.record(url, "m", "1", "trained", digest, at=AT, actor="train_x", run_key="k")
    # then one row holds it, and it reads back equal
    assert artifact_digests.recorded(url, "m", "1", "trained") == digest
    assert len(artifact_digests.history(url, "m")) == 1
    # and another digest for the same version and stage is refused, naming the difference
    other = ArtifactDigest.of_files({**digest.files, "model.skops": "0" * 64})
    with pytest.raises(UntrustedModelError, match=r"changed: model\.skops"):
        artifact_digests.record(url, "m", "1", "trained", other, at=AT, actor="someone", run_key="k2")
    assert artifact_digests.recorded(url, "m", "1", "trained") == digest


def test_a_row_edited_by_hand_proves_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    (tmp_path / "a").mkdir()
    digest = folder_digest(_artifact(tmp_path / "a"))
    artifact_digests.record(url, "m", "1", "approved", digest, at=AT, actor="ann", run_key="k")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE model_artifact_digests SET digest = :d"), {"d": "f" * 64})
    with pytest.raises(UntrustedModelError, match="does not add up"):
        artifact_digests.recorded(url, "m", "1", "approved")


def test_unknown_stages_are_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown digest stage"):
        artifact_digests.recorded(f"sqlite:///{tmp_path / 'w.db'}", "m", "1", "deployed")
