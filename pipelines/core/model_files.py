"""Loading a registered scikit-learn model without trusting its own files.

MLflow takes the serialization format and skops's trusted types from the artifact's ``MLmodel`` file, so whoever can
write to the registry decides what a load may execute. Here the files are only read: the ``sklearn`` flavor must be
saved with skops (pickle and cloudpickle run any code when loaded: refused), the model file must lie inside the
artifact folder, and every type skops does not trust by default must be in the list the dataset's reviewed config
allows (:func:`trusted_types`); the file is then loaded by skops with that list, never the artifact's. Before that,
the downloaded files are checked against the digest the warehouse recorded for the version
(:mod:`pipelines.core.artifact_digests`).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelines.core.artifact_digests import ArtifactDigest, UntrustedModelError, recorded, verify
from pipelines.core.config import DatasetConfig

log = logging.getLogger(__name__)

# Types the preprocessing stores that skops must be told to trust; the estimator's own types come from
# ``model.skops_trusted_types`` in the dataset config.
PREPROCESSING_TRUSTED_TYPES = ("numpy.dtype",)


def trusted_types(config: DatasetConfig) -> list[str]:
    """Every non-default type a saved pipeline of ``config`` may contain, for skops."""
    return sorted({*PREPROCESSING_TRUSTED_TYPES, *config.model.skops_trusted_types})


def checked_model_file(local_dir: str | Path, trusted: Sequence[str]) -> Path:
    """The skops file of the scikit-learn model in ``local_dir``, after checking it may be loaded with ``trusted``;
    raise :class:`UntrustedModelError` saying why not. Reads the files, never deserialises them."""
    import skops.io
    from mlflow.models import Model

    folder = Path(local_dir).resolve()
    meta = Model.load(str(folder))
    flavor = meta.flavors.get("sklearn")
    if flavor is None:
        raise UntrustedModelError(
            f"{folder.name}: a model with flavors {sorted(meta.flavors)} is not loaded: only scikit-learn models "
            "saved with skops are (a pyfunc model is cloudpickled Python)"
        )
    pyfunc = meta.flavors.get("python_function") or {}
    if pyfunc and (pyfunc.get("loader_module") != "mlflow.sklearn" or pyfunc.get("code")):
        raise UntrustedModelError(
            f"{folder.name}: its python_function flavor loads through {pyfunc.get('loader_module')!r}"
            f"{' with code ' + repr(pyfunc.get('code')) if pyfunc.get('code') else ''}: only mlflow.sklearn without "
            "code of its own is loaded"
        )
    fmt = flavor.get("serialization_format")
    if fmt != "skops":
        raise UntrustedModelError(
            f"{folder.name}: a scikit-learn model serialised with {fmt!r} is not loaded: only skops is (pickle and "
            "cloudpickle run any code they hold when loaded)"
        )
    path = (folder / str(flavor.get("pickled_model", ""))).resolve()
    if folder not in path.parents or not path.is_file():
        raise UntrustedModelError(f"{folder.name}: the model file {flavor.get('pickled_model')!r} is not in its folder")
    untrusted = sorted(set(skops.io.get_untrusted_types(file=path)) - set(trusted))
    if untrusted:
        raise UntrustedModelError(
            f"{folder.name}: the model holds types the dataset config does not trust: {', '.join(untrusted)} "
            "(add them to model.skops_trusted_types only if you know what they are)"
        )
    return path


def load_sklearn_model(local_dir: str | Path, trusted: Sequence[str]) -> Any:
    """The scikit-learn model saved in ``local_dir``, loaded by skops with ``trusted`` once its files are checked."""
    import skops.io

    path = checked_model_file(local_dir, trusted)
    return skops.io.load(path, trusted=list(trusted))


def expected_digest(warehouse_url: str, name: str, version: str, stage: str) -> ArtifactDigest:
    """The version's ``stage`` digest from the warehouse; raise :class:`UntrustedModelError` when there is none."""
    found = recorded(warehouse_url, name, version, stage)
    if found is None:
        raise UntrustedModelError(
            f"{name} v{version} has no {stage} artifact digest in the warehouse: "
            + (
                "only approved versions are deployed, served or monitored"
                if stage == "approved"
                else "only versions registered by the training step are evaluated"
            )
        )
    return found


def download_verified(name: str, version: str, expected: ArtifactDigest, dst: str | Path) -> Path:
    """Download ``models:/<name>/<version>`` into ``dst`` and check its files against ``expected``."""
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(dst)))
    verify(local, expected, f"{name} v{version}")
    return local


def load_registered_model(
    warehouse_url: str, name: str, version: str, trusted: Sequence[str], stage: str = "approved"
) -> Any:
    """The version's scikit-learn model, once its files match its ``stage`` digest and pass
    :func:`checked_model_file`; raise :class:`UntrustedModelError` otherwise."""
    expected = expected_digest(warehouse_url, name, version, stage)
    with tempfile.TemporaryDirectory(prefix="model-") as tmp:
        return load_sklearn_model(download_verified(name, version, expected, tmp), trusted)
