"""Model artifacts: one self-describing file per model version (STYLE 18).

The file holds only tensors and plain Python values, so ``torch.load(weights_only=True)``
can read it without running pickled code. Writes are atomic (temp file, fsync, rename),
and a load checks the sha256 recorded on the ``ModelVersion`` row before unpickling.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.ml.model import RecommenderConfig, RecommenderNN
from training.ml.scoring import CatalogScorer

FORMAT = "recsite.recommender/1"
KEYS = frozenset(
    {"format", "config", "state_dict", "prior", "customer_ids", "product_ids", "channel_weights", "metrics", "extra"}
)
_READ_CHUNK = 1024 * 1024


class ArtifactError(Exception):
    """The artifact cannot be used: missing, altered, truncated or not in our format."""


@dataclass
class LoadedModel:
    """A model version ready to serve: model, scorer and id maps."""

    model: RecommenderNN
    config: RecommenderConfig
    scorer: CatalogScorer
    customer_index: dict[str, int]
    product_ids: list[str]
    product_index: dict[str, int]
    prior: np.ndarray
    channel_weights: list[float]
    metrics: dict[str, Any]
    extra: dict[str, Any]
    sha256: str


def save_artifact(
    path: Path,
    *,
    model: RecommenderNN,
    config: RecommenderConfig,
    prior: np.ndarray,
    customer_ids: list[str],
    product_ids: list[str],
    channel_weights: Sequence[float],
    metrics: dict,
    extra: dict | None = None,
) -> str:
    """Write the artifact atomically to ``path`` and return the sha256 hex of its bytes.

    ``metrics`` and ``extra`` must hold plain values (dict, list, str, int, float, bool,
    None; numpy scalars are converted), else TypeError: nothing else can be read back safely.
    """
    path = Path(path)
    prior = np.asarray(prior, dtype=np.float32)
    if len(customer_ids) != config.num_customers or len(product_ids) != config.num_products:
        raise ValueError(
            f"id lists ({len(customer_ids)} customers, {len(product_ids)} products) do not match the config "
            f"({config.num_customers}, {config.num_products})."
        )
    if prior.shape != (config.num_products,):
        raise ValueError(f"prior must have shape ({config.num_products},), got {prior.shape}.")
    payload = {
        "format": FORMAT,
        "config": config.to_dict(),
        "state_dict": {
            name: value.detach().to("cpu").contiguous().clone() for name, value in model.state_dict().items()
        },
        "prior": torch.from_numpy(prior.copy()),
        "customer_ids": [str(i) for i in customer_ids],
        "product_ids": [str(i) for i in product_ids],
        "channel_weights": [float(w) for w in channel_weights],
        "metrics": _plain(metrics, "metrics"),
        "extra": _plain(extra or {}, "extra"),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()

    path.parent.mkdir(parents=True, exist_ok=True)
    # Same directory as the target, so os.replace is a rename on one file system: readers
    # see the old file or the whole new one, never a half-written one.
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)  # makes the rename itself survive a crash
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    """Return the sha256 hex of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def load_artifact(path: Path, *, sha256: str) -> LoadedModel:
    """Check the file against ``sha256``, then load it without executing pickled code.

    Raises ArtifactError for a missing, altered, truncated or foreign file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()  # read once: the bytes checked are the bytes loaded
    except OSError as exc:
        raise ArtifactError(f"cannot read artifact {path}: {exc}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256.strip().lower():
        raise ArtifactError(f"checksum mismatch for {path}: expected {sha256}, file has {actual}.")
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        raise ArtifactError(f"{path} is not a loadable model artifact: {exc}") from exc
    try:
        return _build(payload, sha256=actual)
    except ArtifactError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
        raise ArtifactError(f"{path} is not a valid {FORMAT} artifact: {exc}") from exc


def _build(payload: Any, *, sha256: str) -> LoadedModel:
    """Validate an unpickled payload and turn it into a LoadedModel."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ArtifactError(f"not a {FORMAT} artifact (format: {found!r}).")
    if set(payload) != KEYS:
        raise ArtifactError(f"artifact keys {sorted(payload)} differ from {sorted(KEYS)}.")
    config = RecommenderConfig.from_dict(payload["config"])
    model = RecommenderNN(config)
    model.load_state_dict(payload["state_dict"], strict=True)
    model.eval()
    prior_tensor = payload["prior"]
    if not isinstance(prior_tensor, torch.Tensor):
        raise ArtifactError("prior is not a tensor.")
    prior = prior_tensor.to(torch.float32).numpy()
    customer_ids, product_ids = payload["customer_ids"], payload["product_ids"]
    for name, ids, size in (
        ("customer_ids", customer_ids, config.num_customers),
        ("product_ids", product_ids, config.num_products),
    ):
        if not isinstance(ids, list) or len(ids) != size or not all(isinstance(i, str) for i in ids):
            raise ArtifactError(f"{name} must be a list of {size} strings.")
    channel_weights = payload["channel_weights"]
    if not isinstance(channel_weights, list) or not all(
        isinstance(w, (int, float)) and math.isfinite(w) for w in channel_weights
    ):
        raise ArtifactError("channel_weights must be a list of numbers.")
    metrics, extra = payload["metrics"], payload["extra"]
    if not isinstance(metrics, dict) or not isinstance(extra, dict):
        raise ArtifactError("metrics and extra must be dicts.")
    scorer = CatalogScorer(model, prior, channel_weights)
    return LoadedModel(
        model=model,
        config=config,
        scorer=scorer,
        customer_index={customer: i for i, customer in enumerate(customer_ids)},
        product_ids=product_ids,
        product_index={product: i for i, product in enumerate(product_ids)},
        prior=prior,
        channel_weights=[float(w) for w in channel_weights],
        metrics=metrics,
        extra=extra,
        sha256=sha256,
    )


def _plain(value: Any, where: str) -> Any:
    """Return ``value`` as plain Python data that ``weights_only`` loading accepts, or raise."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.generic):
        return _plain(value.item(), where)
    if isinstance(value, int):
        return int(value)  # also turns IntEnum and friends into plain ints
    if isinstance(value, float):
        return float(value)
    if isinstance(value, dict):
        plain = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: keys must be strings, got {key!r}.")
            plain[key] = _plain(item, f"{where}.{key}")
        return plain
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise TypeError(f"{where}: {type(value).__name__} is not a plain value (dict, list, str, int, float, bool, None).")


def _fsync_directory(directory: Path) -> None:
    """Flush a directory entry to disk (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
