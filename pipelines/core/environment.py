"""What a model was trained with, besides data and config: the code's commit and the Python environment.

Recorded on every training run (tags ``code.*`` and ``env.*``) so ``lineage`` can show it and ``reproduce`` can say
what differs when a rebuilt model does not give the same predictions.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
from pathlib import Path

from pipelines.core.runs import git_commit
from pipelines.core.settings import REPO_ROOT

LOCK_FILE = REPO_ROOT / "requirements.lock"
# The libraries whose version can change a fitted model's numbers or how it is read back.
KEY_PACKAGES = ("scikit-learn", "numpy", "scipy", "pandas", "pyarrow", "skops", "mlflow", "threadpoolctl")


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def package_versions() -> dict[str, str]:
    """The installed version of each key package (``missing`` when not installed)."""
    versions = {}
    for name in KEY_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def environment() -> dict[str, str]:
    """The environment as tags: Python, platform, the lock file's hash and the key packages' versions."""
    return {
        "env.python": platform.python_version(),
        "env.platform": f"{platform.system()} {platform.machine()}",
        "env.lock_sha256": file_sha256(LOCK_FILE) if LOCK_FILE.is_file() else "unknown",
        "env.packages": json.dumps(package_versions(), sort_keys=True),
    }


def code_state() -> dict[str, str]:
    """The code as tags: the commit and whether tracked files had changed (``unknown`` outside git)."""
    commit = git_commit()
    return {
        "code.commit": commit.removesuffix("-dirty"),
        "code.dirty": "unknown" if commit == "unknown" else str(commit.endswith("-dirty")).lower(),
    }


def differences(recorded: dict[str, str], current: dict[str, str]) -> list[str]:
    """What differs between a recorded environment (tags) and ``current``, one line per difference."""
    lines = []
    for key in ("env.python", "env.platform", "env.lock_sha256"):
        if recorded.get(key, "unknown") != current.get(key):
            lines.append(f"{key}: recorded {recorded.get(key, 'unknown')}, here {current.get(key)}")
    then = json.loads(recorded.get("env.packages", "{}"))
    now = json.loads(current.get("env.packages", "{}"))
    for name in sorted(then.keys() | now.keys()):
        if then.get(name) != now.get(name):
            lines.append(f"{name}: recorded {then.get(name, 'unknown')}, here {now.get(name, 'unknown')}")
    return lines
