"""The one rule for picking the best products: the k highest scores, best first, ties to the lower index.

Serving, the precomputed lists, the dashboard and the product neighbours all rank with
it, so the same scores always give the same list in every place (a precomputed list
equals the one computed on the fly).
"""

from __future__ import annotations

import numpy as np


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Return the indices of the ``k`` highest scores along the last axis, best first.

    Equal scores go to the lower index, also at the k-th place (where argpartition
    alone would pick among them arbitrarily). ``scores`` is 1-D (one list) or 2-D (a
    list per row); masked entries are -inf, and the caller asks for no more than are
    allowed. Cost: one partition and a few passes over ``scores``, never a full sort.
    """
    n = scores.shape[-1]
    take = min(int(k), n)
    if take <= 0:
        return np.zeros((*scores.shape[:-1], 0), dtype=np.int64)
    rows = np.atleast_2d(scores)
    top = np.argpartition(-rows, take - 1, axis=-1)[:, :take]
    kth = np.take_along_axis(rows, top, axis=-1).min(axis=-1, keepdims=True)  # the k-th highest score
    # Where more scores equal the k-th than argpartition kept, it chose among them
    # arbitrarily: those rows (rare with float scores) choose again, lowest index first.
    unsure = np.flatnonzero((rows == kth).sum(axis=-1) != (np.take_along_axis(rows, top, axis=-1) == kth).sum(axis=-1))
    for r in unsure:
        above = np.flatnonzero(rows[r] > kth[r])
        tied = np.flatnonzero(rows[r] == kth[r])[: take - len(above)]
        top[r] = np.concatenate([above, tied])
    top_scores = np.take_along_axis(rows, top, axis=-1)
    top = np.take_along_axis(top, np.lexsort((top, -top_scores), axis=-1), axis=-1)
    return top[0] if scores.ndim == 1 else top
