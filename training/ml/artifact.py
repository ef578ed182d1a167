"""Model artifacts: one self-describing file per model version (STYLE 18).

The file holds only tensors and plain Python values, so ``torch.load(weights_only=True)``
can read it without running pickled code. Writes are atomic (temp file, fsync, rename),
and a load checks the sha256 recorded on the ``ModelVersion`` row before unpickling.

A load maps the tensors from the file rather than copying them (``mmap=True``): a
serving process holds only the pages it reads, and every process serving the version
shares them through the page cache. A million customers' embeddings are 128 MB, of
which a request reads one row (bench/serving_memory.py measures a worker).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from training.ml.model import RecommenderConfig, RecommenderNN
from training.ml.neighbours import Blend, Neighbours
from training.ml.scoring import CatalogScorer

# /2 keeps the customer ids as one tensor of UTF-8 bytes (a list of a million strings
# costs ~90 MB to unpickle, and the unpickler's memo as much again while it runs); /1,
# a list, is still read.
# /3 adds "blend": the neighbour blend the ranking is served with (training/ml/neighbours.py), or None.
FORMAT = "recsite.recommender/3"
READABLE_FORMATS = frozenset({"recsite.recommender/1", "recsite.recommender/2", FORMAT})
KEYS = frozenset(
    {"format", "config", "state_dict", "prior", "customer_ids", "product_ids", "channel_weights", "metrics", "extra"}
)
KEYS_BY_FORMAT = {"recsite.recommender/1": KEYS, "recsite.recommender/2": KEYS, FORMAT: KEYS | {"blend"}}
_READ_CHUNK = 1024 * 1024


class ArtifactError(Exception):
    """The artifact cannot be used: missing, altered, truncated or not in our format."""


@dataclass
class LoadedModel:
    """A model version ready to serve: model, scorer and id maps."""

    model: RecommenderNN
    config: RecommenderConfig
    scorer: CatalogScorer
    customer_index: IdIndex  # a read-only Mapping[str, int], compact for millions of customers
    product_ids: list[str]
    product_index: dict[str, int]
    prior: np.ndarray
    channel_weights: list[float]
    metrics: dict[str, Any]
    extra: dict[str, Any]
    sha256: str
    # The served ranking blends the model's scores with products engaged with together; None: the model alone.
    blend: Blend | None = None


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
    blend: Blend | None = None,
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
    joined_customer_ids = np.frombuffer(_joined([str(i) for i in customer_ids]), dtype=np.uint8)
    payload = {
        "format": FORMAT,
        "config": config.to_dict(),
        "state_dict": {
            name: value.detach().to("cpu").contiguous().clone() for name, value in model.state_dict().items()
        },
        "prior": torch.from_numpy(prior.copy()),
        "customer_ids": torch.from_numpy(joined_customer_ids.copy()),
        "product_ids": [str(i) for i in product_ids],
        "channel_weights": [float(w) for w in channel_weights],
        "metrics": _plain(metrics, "metrics"),
        "extra": _plain(extra or {}, "extra"),
        "blend": None if blend is None else {
            "indices": torch.from_numpy(np.ascontiguousarray(blend.neighbours.indices, dtype=np.int32)),
            "similarity": torch.from_numpy(np.ascontiguousarray(blend.neighbours.similarity, dtype=np.float32)),
            "weight": float(blend.weight),
            "decay": float(blend.decay),
        },
    }
    if blend is not None and blend.neighbours.num_products != config.num_products:
        raise ValueError(f"the blend's neighbours cover {blend.neighbours.num_products} products, not {config.num_products}.")
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
    with open(path, "rb") as handle:
        return _sha256_of(handle)


def load_artifact(path: Path, *, sha256: str) -> LoadedModel:
    """Check the file against ``sha256``, then load it without executing pickled code.

    Raises ArtifactError for a missing, altered, truncated or foreign file.
    """
    path = Path(path)
    try:
        handle = open(path, "rb")  # noqa: SIM115 (held open until the tensors are mapped)
    except OSError as exc:
        raise ArtifactError(f"cannot read artifact {path}: {exc}") from exc
    with handle:
        # Checked and mapped through the same open file: a file renamed over this path in
        # between is not the one loaded. An artifact is never rewritten in place (save_artifact
        # writes a new file and renames it), so the pages mapped are the bytes checked.
        actual = _sha256_of(handle)
        if actual != sha256.strip().lower():
            raise ArtifactError(f"checksum mismatch for {path}: expected {sha256}, file has {actual}.")
        same_file = f"/proc/self/fd/{handle.fileno()}" if sys.platform == "linux" else path
        try:
            payload = torch.load(same_file, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
            raise ArtifactError(f"{path} is not a loadable model artifact: {exc}") from exc
    try:
        return _build(payload, sha256=actual)
    except ArtifactError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
        raise ArtifactError(f"{path} is not a valid {FORMAT} artifact: {exc}") from exc


def _sha256_of(handle: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := handle.read(_READ_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _build(payload: Any, *, sha256: str) -> LoadedModel:
    """Validate an unpickled payload and turn it into a LoadedModel."""
    if not isinstance(payload, dict) or payload.get("format") not in READABLE_FORMATS:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ArtifactError(f"not a {FORMAT} artifact (format: {found!r}).")
    keys = KEYS_BY_FORMAT[payload["format"]]
    if set(payload) != keys:
        raise ArtifactError(f"artifact keys {sorted(payload)} differ from {sorted(keys)}.")
    config = RecommenderConfig.from_dict(payload["config"])
    with _WeightsLeftUninitialised():  # the loaded tensors become the parameters (assign): no copy
        model = RecommenderNN(config)
    model.load_state_dict(payload["state_dict"], strict=True, assign=True)
    model.eval()
    prior_tensor = payload["prior"]
    if not isinstance(prior_tensor, torch.Tensor):
        raise ArtifactError("prior is not a tensor.")
    prior = prior_tensor.to(torch.float32).numpy()
    product_ids = payload["product_ids"]
    if not isinstance(product_ids, list) or len(product_ids) != config.num_products or not all(
        isinstance(i, str) for i in product_ids
    ):
        raise ArtifactError(f"product_ids must be a list of {config.num_products} strings.")
    customer_index = _customer_index(payload["customer_ids"], config.num_customers)
    channel_weights = payload["channel_weights"]
    if not isinstance(channel_weights, list) or not all(
        isinstance(w, (int, float)) and math.isfinite(w) for w in channel_weights
    ):
        raise ArtifactError("channel_weights must be a list of numbers.")
    metrics, extra = payload["metrics"], payload["extra"]
    if not isinstance(metrics, dict) or not isinstance(extra, dict):
        raise ArtifactError("metrics and extra must be dicts.")
    # Nothing trains a loaded model: the scorer may use its (mapped) tensors without copying them.
    scorer = CatalogScorer(model, prior, channel_weights, copy=False)
    return LoadedModel(
        model=model,
        config=config,
        scorer=scorer,
        customer_index=customer_index,
        product_ids=product_ids,
        product_index={product: i for i, product in enumerate(product_ids)},
        prior=prior,
        channel_weights=[float(w) for w in channel_weights],
        metrics=metrics,
        extra=extra,
        sha256=sha256,
        blend=_blend(payload.get("blend"), config.num_products),
    )


def _blend(stored: Any, num_products: int) -> Blend | None:
    """The stored neighbour blend, checked: shapes, index range, finite weights."""
    if stored is None:
        return None
    if not isinstance(stored, dict) or set(stored) != {"indices", "similarity", "weight", "decay"}:
        raise ArtifactError("blend must be None or a dict of indices, similarity, weight and decay.")
    indices, similarity = stored["indices"], stored["similarity"]
    if not isinstance(indices, torch.Tensor) or not isinstance(similarity, torch.Tensor):
        raise ArtifactError("the blend's indices and similarity must be tensors.")
    if indices.dim() != 2 or indices.shape[0] != num_products or indices.shape != similarity.shape:
        raise ArtifactError(f"the blend's neighbours must be [{num_products}, k] indices and similarities.")
    indices_array = indices.to(torch.int32).numpy()
    if indices_array.size and (indices_array.min() < -1 or indices_array.max() >= num_products):
        raise ArtifactError("the blend names a product the model does not have.")
    weight, decay = stored["weight"], stored["decay"]
    if not all(isinstance(v, float) and math.isfinite(v) for v in (weight, decay)) or not (weight >= 0 and 0 < decay <= 1):
        raise ArtifactError("the blend's weight must be >= 0 and its decay in (0, 1].")
    return Blend(Neighbours(indices_array, similarity.to(torch.float32).numpy()), weight, decay)


_LOW_32 = 0xFFFF_FFFF


class IdIndex(Mapping[str, int]):
    """Map external ids to their index (a read-only ``Mapping[str, int]``), compactly.

    A dict of a million ids costs about 130 MB (a str and an int object per id, and the
    table); this keeps them as one UTF-8 buffer with offsets, in index order, and finds
    an id through the sorted array of their hashes: about 20 MB, and a lookup in a few
    microseconds. Iteration yields the ids in index order, like the list it was built from.
    """

    SEPARATOR = "\x00"  # ids never hold NUL: the API refuses it and PostgreSQL text cannot store it
    _CHUNK = 65_536  # ids hashed at a time: their bytes objects are freed chunk by chunk

    def __init__(self, ids: Sequence[str]) -> None:
        self._build(_joined(ids), len(ids))

    @classmethod
    def from_joined(cls, joined: bytes, count: int) -> IdIndex:
        """Build the index from ``count`` UTF-8 ids joined by NUL (as an artifact stores them)."""
        index = cls.__new__(cls)
        index._build(joined, count)
        return index

    def _build(self, joined: bytes, count: int) -> None:
        separators = np.flatnonzero(np.frombuffer(joined, dtype=np.uint8) == 0)
        if len(separators) != max(count - 1, 0) or (count == 0 and joined):
            raise ValueError(f"expected {count} ids separated by NUL, found {len(separators) + 1}.")
        self._blob = joined
        # Id i is blob[starts[i] : starts[i + 1] - 1].
        offset = np.int32 if len(joined) < 2**31 - 1 else np.int64
        self._starts = np.concatenate(([0], separators + 1, [len(joined) + 1])).astype(offset)
        # 32 bits of each hash: a million ids share a few values, told apart by comparing the ids.
        hashes = np.empty(count, dtype=np.uint32)
        for first in range(0, count, self._CHUNK):
            last = min(count, first + self._CHUNK)
            part = joined[self._starts[first] : self._starts[last] - 1].split(b"\x00")
            hashes[first:last] = np.fromiter((hash(i) & _LOW_32 for i in part), dtype=np.uint32, count=last - first)
        self._order = np.argsort(hashes, kind="stable").astype(np.int32 if count < 2**31 else np.int64)
        self._hashes = hashes[self._order]
        self._count = count

    def _id(self, i: int) -> bytes:
        return self._blob[self._starts[i] : self._starts[i + 1] - 1]

    def get(self, key: object, default: Any = None) -> Any:
        if not isinstance(key, str):
            return default
        encoded = key.encode("utf-8", "surrogatepass")
        wanted = hash(encoded) & _LOW_32
        at = int(np.searchsorted(self._hashes, wanted))
        while at < self._count and self._hashes[at] == wanted:  # equal hashes: compare the ids themselves
            i = int(self._order[at])
            if self._id(i) == encoded:
                return i
            at += 1
        return default

    def __getitem__(self, key: str) -> int:
        i = self.get(key)
        if i is None:
            raise KeyError(key)
        return i

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None

    def __iter__(self) -> Iterator[str]:
        for i in range(self._count):
            yield self._id(i).decode("utf-8", "surrogatepass")

    def __len__(self) -> int:
        return self._count

    def indices(self, ids: Iterable[str]) -> np.ndarray:
        """Return int64 indices of ``ids``, -1 for an id not in the index."""
        return np.fromiter((self.get(i, -1) for i in ids), dtype=np.int64)

    @property
    def nbytes(self) -> int:
        """Return the bytes held (the buffer and the arrays)."""
        return len(self._blob) + self._starts.nbytes + self._order.nbytes + self._hashes.nbytes


class _WeightsLeftUninitialised(TorchFunctionMode):
    """Skip torch.nn.init's fills while a model is built whose weights will be replaced.

    The parameters stay ``torch.empty``: pages never written take no memory. Filling a
    million customers' embeddings with random numbers first would cost 128 MB and a
    third of a second for nothing; building on the meta device instead imports torch's
    decompositions (sympy and all), 70 MB a process.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__module__", None) == "torch.nn.init":
            return kwargs["tensor"] if "tensor" in kwargs else args[0]
        return func(*args, **kwargs)


def _joined(ids: Sequence[str]) -> bytes:
    """Return the ids as UTF-8, each followed by NUL but the last; ValueError if an id holds NUL."""
    if any(IdIndex.SEPARATOR in i for i in ids):
        raise ValueError("ids must not contain NUL characters.")
    return IdIndex.SEPARATOR.join(ids).encode("utf-8", "surrogatepass")


def _customer_index(stored: Any, count: int) -> IdIndex:
    """Build the customer index from the artifact's ids: a byte tensor (format /2) or a list (/1)."""
    if isinstance(stored, torch.Tensor) and stored.dtype == torch.uint8 and stored.dim() == 1:
        index = IdIndex.from_joined(stored.numpy().tobytes(), count)
    elif isinstance(stored, list) and all(isinstance(i, str) for i in stored):
        index = IdIndex(stored)
    else:
        raise ArtifactError("customer_ids must be a byte tensor or a list of strings.")
    if len(index) != count:
        raise ArtifactError(f"customer_ids must hold {count} ids, not {len(index)}.")
    return index


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
