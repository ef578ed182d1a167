"""RecommenderNN's layers after fc1 over a [rows x products] grid, in cache-sized blocks (the softmax loss's hot spot).

The sampled-softmax loss asks every row of a batch about the same N products
(``RecommenderNN.shared_logits_for``): fc1 splits into a row part and a product part,
and the head runs on their sum, a [B, N, 64] tensor (341 x 129 x 64 floats, 11 MB, at
ml-100k's batch). Autograd's version walks that tensor, and its ReLU masks and fc2
output, through memory a dozen times a step: the ReLU and its backward were 45% of a
training step on one core, memory-bound, against 28% for every matrix product
(docs/model.md, "Training speed").

``grid_head`` computes the same numbers block by block, a few rows at a time, so each
block's [rows, N, 64] stays in the core's cache while it is added, rectified and
multiplied. It keeps fc2's rectified output for the backward pass and recomputes the
sum and its ReLU there: no matrix product is done twice, and every one is an ``mm`` or
``addmm`` (not ``addmm_`` or ``addmv``, which ``FlopCounterMode`` does not count), so the
training benchmark's FLOP count is the same as autograd's. Equal to the autograd version to float rounding, values and gradients
(tests/training/test_head.py).
"""

from __future__ import annotations

import torch
from torch import nn

# Floats per block of the [rows, N, hidden] sum: 1 MiB, within a core's L2 cache.
BLOCK_FLOATS = 1 << 18

_threshold_backward = torch.ops.aten.threshold_backward


def grid_head(head: nn.Module, rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """Return ``head._head(rows[:, None, :] + columns[None, :, :])``, shape [B, N].

    ``head`` is a RecommenderNN (its ``fc2`` and ``out`` layers are used); ``rows`` is
    [B, H] and ``columns`` [N, H], fc1's two parts with its bias in one of them. Runs
    blockwise on the CPU with dropout off; elsewhere (CUDA, dropout) it is the plain
    autograd expression.
    """
    if head.config.dropout > 0 or rows.device.type != "cpu":
        return head._head(rows[:, None, :] + columns[None, :, :])
    return _GridHead.apply(rows, columns, head.fc2.weight, head.fc2.bias, head.out.weight, head.out.bias)


def _block_rows(columns: torch.Tensor) -> int:
    return max(1, BLOCK_FLOATS // max(1, columns.shape[0] * columns.shape[1]))


def _rectified_sum(rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """relu(rows[:, None] + columns[None]) as a [len(rows) * N, H] matrix."""
    return (rows[:, None, :] + columns[None, :, :]).relu_().view(-1, columns.shape[1])


class _GridHead(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rows, columns, w2, b2, w3, b3):
        count, n = rows.shape[0], columns.shape[0]
        step = _block_rows(columns)
        h2 = rows.new_empty(count * n, w2.shape[0])
        logits = rows.new_empty(count * n, 1)
        for start in range(0, count, step):
            h1 = _rectified_sum(rows[start : start + step], columns)
            at = slice(start * n, start * n + h1.shape[0])
            torch.addmm(b2, h1, w2.t(), out=h2[at]).relu_()
            torch.addmm(b3, h2[at], w3.t(), out=logits[at])
        ctx.save_for_backward(rows, columns, w2, w3, h2)
        return logits.view(count, n)

    @staticmethod
    def backward(ctx, grad):
        rows, columns, w2, w3, h2 = ctx.saved_tensors
        count, n = rows.shape[0], columns.shape[0]
        grad = grad.reshape(-1, 1)
        d_rows = torch.empty_like(rows)
        d_columns = torch.zeros_like(columns)
        d_w2 = torch.zeros_like(w2)
        d_b2 = torch.zeros_like(w2[:, 0])
        d_w3 = torch.zeros_like(w3)
        step = _block_rows(columns)
        for start in range(0, count, step):
            h1 = _rectified_sum(rows[start : start + step], columns)
            at = slice(start * n, start * n + h1.shape[0])
            d_w3 += grad[at].t() @ h2[at]
            d_h2 = _threshold_backward(grad[at] @ w3, h2[at], 0)
            d_b2 += d_h2.sum(0)
            d_w2 += d_h2.t() @ h1
            d_h1 = _threshold_backward(d_h2 @ w2, h1, 0).view(-1, n, columns.shape[1])
            d_rows[start : start + step] = d_h1.sum(1)
            d_columns += d_h1.sum(0)
        return d_rows, d_columns, d_w2, d_b2, d_w3, grad.sum().reshape(1)
