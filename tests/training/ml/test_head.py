"""grid_head: the blockwise head equals autograd's version, values and gradients."""

from __future__ import annotations

import pytest
import torch

from training.ml import head as head_module
from training.ml.head import grid_head
from training.ml.model import RecommenderConfig, RecommenderNN


def _leaves(model: RecommenderNN, count: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    rows = torch.randn(count, 64, generator=generator, requires_grad=True)
    columns = torch.randn(n, 64, generator=generator, requires_grad=True)
    return rows, columns


def _value_and_grads(model, rows, columns, fn, upstream):
    params = [rows, columns, model.fc2.weight, model.fc2.bias, model.out.weight, model.out.bias]
    for p in params:
        p.grad = None
    value = fn(rows, columns)
    (value * upstream).sum().backward()
    return [value.detach().clone()] + [p.grad.clone() for p in params]


@pytest.mark.parametrize(("count", "n", "block_floats"), [(37, 129, 1 << 18), (37, 129, 64 * 129 * 5), (5, 3, 1)])
def test_grid_head_equals_autograd_in_values_and_gradients(monkeypatch, count, n, block_floats):
    # block_floats: one block for all, blocks of 5 rows with a ragged last one, one row a block.
    monkeypatch.setattr(head_module, "BLOCK_FLOATS", block_floats)
    torch.manual_seed(0)
    model = RecommenderNN(RecommenderConfig(num_customers=4, num_products=6, dot_branch=True))
    rows, columns = _leaves(model, count, n)
    upstream = torch.randn(count, n, generator=torch.Generator().manual_seed(5))

    plain = _value_and_grads(model, rows, columns, lambda r, c: model._head(r[:, None, :] + c[None, :, :]), upstream)
    blockwise = _value_and_grads(model, rows, columns, lambda r, c: grid_head(model, r, c), upstream)

    names = ["value", "rows", "columns", "fc2.weight", "fc2.bias", "out.weight", "out.bias"]
    for name, expected, got in zip(names, plain, blockwise):
        assert got.shape == expected.shape, name
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4, msg=name)
    # Not vacuous: the blockwise path ran, and the gradients have signal.
    assert "GridHead" in type(grid_head(model, rows, columns).grad_fn).__name__
    assert (plain[1] != 0).any() and (plain[3] != 0).any()


def test_grid_head_keeps_dropout_on_the_autograd_path():
    model = RecommenderNN(RecommenderConfig(num_customers=4, num_products=6, dropout=0.5))
    model.train()
    rows, columns = _leaves(model, 8, 10)
    value = grid_head(model, rows, columns)
    assert value.grad_fn is not None and "GridHead" not in type(value.grad_fn).__name__


def test_grid_head_does_the_same_matrix_products_as_autograd():
    # The training benchmark's FLOP count (FlopCounterMode) must not change with the blockwise head.
    from torch.utils.flop_counter import FlopCounterMode

    model = RecommenderNN(RecommenderConfig(num_customers=4, num_products=6))
    rows, columns = _leaves(model, 41, 129)
    counted = []
    for fn in (lambda: model._head(rows[:, None, :] + columns[None, :, :]), lambda: grid_head(model, rows, columns)):
        with FlopCounterMode(display=False) as counter:
            fn().sum().backward()
        counted.append(counter.get_total_flops())
    assert counted[0] == counted[1] > 0
